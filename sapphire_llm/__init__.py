"""The LLM backend of the agents, served by vLLM.

Two ways to reach a model, one answer contract:
- ``server_client``: an OpenAI-compatible HTTP client for ``vllm serve`` (production, GPU nodes);
- ``offline``: the in-process ``vllm.LLM`` engine, for large batched backfills.

``backend.LlmForecastBackend`` turns answers into forecast rows and falls back to the agent's
quantitative backend, marking the row, when the model times out, is unreachable or answers badly.
vLLM itself is optional: it lives in its own virtualenv (``scripts/install-llm.sh``) and only
``offline`` and ``tiny_model`` import it (or its tokenizer stack), lazily.
"""
