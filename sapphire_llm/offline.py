"""The in-process vLLM engine, for backfills: every prompt of a partition in one batched call.

vLLM starts worker processes, so a program that builds an ``OfflineEngine`` must do it under
``if __name__ == "__main__":`` (or in a process of its own). vLLM is imported only here, and only
when an engine is built, so the rest of the package works without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sapphire_llm.errors import EngineFailureError, LlmError
from sapphire_llm.schema import ANSWER_SCHEMA, Sampling

# Without disable_any_whitespace a weak model may fill max_tokens with the whitespace JSON allows
# between tokens; xgrammar is the backend measured on this CPU build.
STRUCTURED_OUTPUTS_CONFIG: dict[str, Any] = {"backend": "xgrammar", "disable_any_whitespace": True}


@dataclass
class OfflineEngine:
    """A ``vllm.LLM`` that answers prompts with schema-constrained JSON.

    Attributes:
        model: a model folder or hub name (resolved by vLLM).
        load_format: ``auto`` reads weights; ``dummy`` fills them at random (tests, benchmarks).
        gpu_memory_utilization: share of device memory for weights and KV cache; on the CPU
            build it is the share of RAM, and about 0.15 suits a small model on a 24 GB machine.
        max_model_len: longest prompt plus answer, in tokens.
        enforce_eager: skip graph compilation; it costs minutes at start on the CPU build, worth
            it only for a long-lived engine.
        engine_options: further ``vllm.LLM`` keyword arguments (``dtype``, ``enforce_eager``...).
    """

    model: str
    load_format: str = "auto"
    gpu_memory_utilization: float = 0.15
    max_model_len: int = 1024
    seed: int = 0
    enforce_eager: bool = False
    engine_options: dict[str, Any] = field(default_factory=dict)
    _llm: Any = field(default=None, init=False, repr=False)

    @property
    def model_name(self) -> str:
        return self.model

    def start(self) -> None:
        """Builds the engine now rather than on the first batch (it takes tens of seconds)."""
        if self._llm is not None:
            return
        try:
            from vllm import LLM
        except ImportError as error:
            raise ImportError(
                "the offline LLM engine needs vLLM: run scripts/install-llm.sh and use "
                "var/llm-venv/bin/python"
            ) from error
        self._llm = LLM(
            model=self.model,
            load_format=self.load_format,
            gpu_memory_utilization=self.gpu_memory_utilization,
            max_model_len=self.max_model_len,
            seed=self.seed,
            enforce_eager=self.enforce_eager,
            structured_outputs_config=STRUCTURED_OUTPUTS_CONFIG,
            **self.engine_options,
        )

    def answer_batch(self, prompts: Sequence[str], sampling: Sampling) -> list[str | LlmError]:
        """One answer text per prompt, from a single batched ``generate`` call."""
        if not prompts:
            return []
        self.start()
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        params = SamplingParams(
            temperature=sampling.temperature,
            max_tokens=sampling.max_tokens,
            seed=sampling.seed,
            structured_outputs=StructuredOutputsParams(json=ANSWER_SCHEMA),
        )
        try:
            outputs = self._llm.generate(list(prompts), params, use_tqdm=False)
        except Exception as error:  # the engine's failures have no common base class
            failure = EngineFailureError(f"vLLM generate failed: {type(error).__name__}: {error}")
            return [failure] * len(prompts)
        return [output.outputs[0].text for output in outputs]

    def close(self) -> None:
        """Shuts the engine core down and waits for its process; call it in a ``finally``.

        vLLM runs its engine core in a child process and otherwise leaves it to a finaliser at
        interpreter exit, where a program can hang waiting on it. A closed engine starts again on
        the next batch."""
        llm, self._llm = self._llm, None
        if llm is None:
            return
        engine_core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if engine_core is not None:
            engine_core.shutdown()

    def __enter__(self) -> OfflineEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` under the engine's tokenizer (for throughput reports)."""
        self.start()
        return len(self._llm.get_tokenizer().encode(text))
