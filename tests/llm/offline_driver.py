"""Drives the offline engine for test_offline_engine.py; runs with var/llm-venv's interpreter.

One engine start serves every scenario: the four agents in batches, the cache on a second pass,
a changed prompt, and answers cut short (invalid) falling back. Prints ``RESULT <json>``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import polars as pl
from prometheus_client import REGISTRY

from sapphire_domain.agents.specs import AGENTS
from sapphire_llm.backend import LlmForecastBackend
from sapphire_llm.cache import AnswerCache
from sapphire_llm.offline import OfflineEngine
from sapphire_llm.schema import Sampling
from tests.llm.stubs import ConstantBackend, CountingSource, feature_frame


def rows(frame: pl.DataFrame) -> list[dict[str, object]]:
    return json.loads(frame.with_columns(pl.col("ts").cast(pl.String)).write_json())


def fallbacks(agent: str, reason: str) -> float:
    labels = {"agent": agent, "reason": reason}
    return REGISTRY.get_sample_value("sapphire_llm_fallbacks_total", labels) or 0.0


def main(model: str, workdir: Path) -> None:
    engine = OfflineEngine(model, load_format="dummy", enforce_eager=True)
    try:
        scenarios(engine, workdir)
    finally:
        engine.close()  # else the interpreter waits on the engine core at exit


def scenarios(engine: OfflineEngine, workdir: Path) -> None:
    source = CountingSource(engine)
    quant = ConstantBackend()
    cache = AnswerCache(workdir / "answers.sqlite")
    backend = LlmForecastBackend(source=source, fallback=quant, horizon=4, cache=cache)
    features = feature_frame()
    result: dict[str, object] = {"feature_rows": features.height}

    first = {name: rows(backend.forecast(agent, features)) for name, agent in AGENTS.items()}
    result["first_pass"] = first
    result["first_batches"] = list(source.batches)
    # Raw texts straight from the engine, to check them against the schema in the test.
    prompts = [f"momentum probe {i}: ret_1=0.001 rsi=55" for i in range(8)]
    result["raw_texts"] = [
        t if isinstance(t, str) else repr(t) for t in engine.answer_batch(prompts, Sampling())
    ]

    source.batches.clear()
    result["second_pass"] = rows(backend.forecast(AGENTS["momentum"], features))
    result["second_batches"] = list(source.batches)

    changed = features.with_columns(
        pl.when(pl.int_range(pl.len()) == 0)
        .then(pl.col("rsi") + 1.0)
        .otherwise(pl.col("rsi"))
        .alias("rsi")
    )
    source.batches.clear()
    backend.forecast(AGENTS["momentum"], changed)
    result["changed_batches"] = list(source.batches)

    # Four tokens cannot hold a complete answer: every row must fall back as invalid.
    short = LlmForecastBackend(
        source=source, fallback=quant, horizon=4, sampling=Sampling(max_tokens=4)
    )
    before = fallbacks("microstructure", "invalid_answer")
    result["short_pass"] = rows(short.forecast(AGENTS["microstructure"], features))
    result["short_fallbacks_counted"] = fallbacks("microstructure", "invalid_answer") - before
    result["cache_entries"] = len(cache)
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
