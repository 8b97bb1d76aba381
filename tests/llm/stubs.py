"""Test doubles shared by the in-process tests and the engine driver (which runs in var/llm-venv)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import polars as pl

from sapphire_domain.agents.forecast import conform
from sapphire_domain.agents.specs import AgentSpec
from sapphire_domain.candles import TS_TYPE
from sapphire_domain.features import feature_columns
from sapphire_llm.errors import LlmError
from sapphire_llm.schema import Sampling


class ConstantBackend:
    """A quantitative backend stand-in: p_up 0.5 for every row it is given, and a call log."""

    name = "quant-stub"

    def __init__(self) -> None:
        self.rows_asked: list[int] = []

    def forecast(self, agent: AgentSpec, features: pl.DataFrame) -> pl.DataFrame:
        self.rows_asked.append(features.height)
        return conform(
            features.select("ts", "symbol").with_columns(
                agent=pl.lit(agent.name),
                model_version=pl.lit("stub-1"),
                horizon=pl.lit(4, pl.Int64),
                p_up=pl.lit(0.5),
                expected_return=pl.lit(0.0),
                confidence=pl.lit(0.0),
                backend=pl.lit(self.name),
                fallback=pl.lit(False),
            )
        )


class CountingSource:
    """Wraps an answer source and records the size of every batch sent to the model."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.batches: list[int] = []

    @property
    def model_name(self) -> str:
        return str(self.inner.model_name)  # type: ignore[attr-defined]

    def answer_batch(self, prompts: Sequence[str], sampling: Sampling) -> list[str | LlmError]:
        self.batches.append(len(prompts))
        if not prompts:
            return []
        return list(self.inner.answer_batch(prompts, sampling))  # type: ignore[attr-defined]


def feature_frame(
    symbols: Sequence[str] = ("BTC/USDT", "ETH/USDT"), bars: int = 12, seed: int = 0
) -> pl.DataFrame:
    """Plausible feature rows (every feature column), 30-minute bars, sorted by ts then symbol."""
    rng = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = []
    for i in range(bars):
        for symbol in symbols:
            row: dict[str, object] = {"ts": start + timedelta(minutes=30 * i), "symbol": symbol}
            for name in feature_columns():
                row[name] = rng.uniform(-0.02, 0.02)
            row.update(rsi=rng.uniform(20, 80), gap_before=False, bars_since_gap=100 + i)
            rows.append(row)
    return pl.DataFrame(rows).with_columns(pl.col("ts").cast(TS_TYPE))
