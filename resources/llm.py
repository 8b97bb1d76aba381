"""The LLM resource: where the agents' LLM backend gets its answers (``sapphire_llm``).

``LlmResource`` builds, per agent and run, an ``LlmForecastBackend`` around the agent's
quantitative backend (its fallback):

- ``llm_server``: a ``VllmServerClient`` for ``vllm serve`` at ``base_url``
  (``dg.EnvVar("VLLM_BASE_URL")`` in production, the GPU nodes' server);
- ``llm_offline``: the batched ``vllm.LLM`` engine, run by ``sapphire_llm.batch`` under
  ``offline_python`` (vLLM lives in ``var/llm-venv``, not in the code location's environment).

Answers are cached in ``cache_dir`` (SQLite, keyed by prompt, model and sampling), so
rematerialising a partition gives the same rows without asking the model again.
"""

from pathlib import Path
from typing import Any, Literal

import dagster as dg
from pydantic import Field, PrivateAttr

from sapphire_domain.agents.forecast import ForecastBackend
from sapphire_domain.settings import PROJECT_ROOT
from sapphire_llm.backend import AnswerSource, LlmForecastBackend
from sapphire_llm.batch import SubprocessEngine
from sapphire_llm.cache import AnswerCache
from sapphire_llm.server_client import VllmServerClient

LlmMode = Literal["llm_server", "llm_offline"]
CACHE_FILE = "answers.sqlite"


class LlmResource(dg.ConfigurableResource):
    """Attributes:
    base_url: root of the ``vllm serve`` server (``/v1`` is added).
    model: the served model name in server mode; the model folder or hub name offline.
    api: ``chat`` or ``completions`` endpoint in server mode.
    timeout_s: limit on one request (server mode).
    concurrency: requests in flight at once (server mode).
    cache_dir: folder of the answer cache; empty disables caching.
    offline_python: the LLM virtualenv's interpreter, relative to the project root or absolute.
    offline_load_format: ``auto`` reads weights; ``dummy`` fills them at random (tests).
    offline_timeout_s: limit on one offline batch, engine start included.
    offline_engine_options: further ``vllm.LLM`` arguments (``max_model_len``...); on a CPU
        without AVX-512 BF16, ``{"dtype": "float32"}`` doubles batched throughput
        (bench/RESULTS.md, LLM backend).
    """

    base_url: str = Field(default="http://127.0.0.1:8000", description="vllm serve's root URL")
    model: str = Field(default="", description="served model name, or model folder offline")
    api: Literal["chat", "completions"] = "chat"
    timeout_s: float = 30.0
    concurrency: int = 16
    cache_dir: str = Field(default="", description="answer cache folder; empty: no cache")
    offline_python: str = "var/llm-venv/bin/python"
    offline_load_format: str = "auto"
    offline_timeout_s: float = 1800.0
    offline_engine_options: dict[str, Any] = Field(default_factory=dict)
    _clients: list[VllmServerClient] = PrivateAttr(default_factory=list)

    def source(self, mode: LlmMode) -> AnswerSource:
        if not self.model:
            raise dg.Failure(f"the llm resource has no model configured for {mode}")
        if mode == "llm_server":
            client = VllmServerClient(
                self.base_url, self.model, api=self.api, timeout_s=self.timeout_s,
                concurrency=self.concurrency,
            )  # fmt: skip
            self._clients.append(client)
            return client
        python = Path(self.offline_python)
        return SubprocessEngine(
            python=python if python.is_absolute() else PROJECT_ROOT / python,
            model=self.model,
            load_format=self.offline_load_format,
            timeout_s=self.offline_timeout_s,
            engine_options=self.offline_engine_options,
        )

    def forecast_backend(
        self, mode: LlmMode, fallback: ForecastBackend, horizon: int
    ) -> LlmForecastBackend:
        cache = AnswerCache(Path(self.cache_dir) / CACHE_FILE) if self.cache_dir else None
        return LlmForecastBackend(self.source(mode), fallback, horizon=horizon, cache=cache)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        for client in self._clients:
            client.close()
        self._clients.clear()
