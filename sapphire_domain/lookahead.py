"""The look-ahead check: a feature at time t must not change when the future is cut off.

For each sampled candle time t the computation runs again on the history known at the close of
the candle that opens at t: candles with ``ts <= t``, trades before ``t + timeframe`` and funding
printed at or before ``t + timeframe``. Its row at t must equal the row that the full history gave.
A feature that peeks at later data (a negative shift, a centred window, a join that takes the next
print) changes under truncation and is named with its symbol, time and both values.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import polars as pl

from sapphire_domain.errors import SapphireError
from sapphire_domain.timeframes import timeframe_ms

# Computes features from candles; called as ``compute(candles)``, or as
# ``compute(candles, trades=..., funding=...)`` when the check is given trades or funding.
FeatureComputation = Callable[..., pl.DataFrame]


class LookaheadCheckError(SapphireError):
    """The look-ahead check cannot run: no sample times, or a computation without ts/symbol."""


@dataclass(frozen=True)
class LookaheadViolation:
    """A feature value at (symbol, ts) that differs once data after ts's close is removed."""

    symbol: str
    ts: datetime
    column: str
    full_value: float | None
    truncated_value: float | None


def sample_times(candles: pl.DataFrame, count: int, seed: int = 0, skip: int = 0) -> list[datetime]:
    """``count`` distinct candle open times drawn with ``seed``, sorted; the first ``skip`` times
    (too early to have any history) are never drawn."""
    times = candles.get_column("ts").unique().sort().to_list()[skip:]
    return sorted(random.Random(seed).sample(times, min(count, len(times))))


def _same(full: float | None, truncated: float | None, tolerance: float) -> bool:
    if full is None or truncated is None:
        return full is None and truncated is None
    if math.isnan(full) or math.isnan(truncated):  # NaN equals only NaN
        return math.isnan(full) and math.isnan(truncated)
    return abs(full - truncated) <= tolerance * max(1.0, abs(full), abs(truncated))


def find_lookahead(
    compute: FeatureComputation,
    candles: pl.DataFrame,
    timeframe: str,
    times: Sequence[datetime],
    *,
    trades: pl.DataFrame | None = None,
    funding: pl.DataFrame | None = None,
    history_bars: int | None = None,
    tolerance: float = 1e-9,
    expected: pl.DataFrame | None = None,
) -> list[LookaheadViolation]:
    """Every feature value that changes when history is cut at one of ``times``; empty if none.

    ``history_bars`` keeps only that many candles per symbol before t in the truncated run
    (pass ``warmup_bars(params)`` for ``compute_features``): the check stays cheap and still
    exact, because a row needs no more history than its warm-up. None keeps all of it.
    Values agree when both are null, both NaN, or within ``tolerance`` relative to
    ``max(1, |value|)``. Booleans and integers are compared as floats.
    ``expected`` holds already computed features (for example what a warehouse stores) to compare
    with instead of a fresh full-history run, so the check covers what was actually written.
    """
    if not times:
        raise LookaheadCheckError("no sample times to check")
    step_ms = timeframe_ms(timeframe)
    full = (
        expected
        if expected is not None
        else compute(candles, **_side_inputs(trades, funding, None))
    )
    missing = {"ts", "symbol"} - set(full.columns)
    if missing:
        raise LookaheadCheckError(f"the computation's result lacks {sorted(missing)}")
    columns = [c for c in full.columns if c not in ("ts", "symbol")]

    violations: list[LookaheadViolation] = []
    for t in times:
        known = candles.filter(pl.col("ts") <= t)
        if history_bars is not None:
            known = (
                known.sort("symbol", "ts")
                .group_by("symbol", maintain_order=True)
                .tail(history_bars + 1)
            )
        close_ms = _epoch_ms(t) + step_ms
        truncated = compute(known, **_side_inputs(trades, funding, close_ms))
        pairs = (
            full.filter(pl.col("ts") == t)
            .join(
                truncated.filter(pl.col("ts") == t),
                on=["symbol", "ts"],
                how="left",
                suffix="__truncated",
            )
            .sort("symbol")
        )
        for row in pairs.iter_rows(named=True):
            for column in columns:
                full_value = _as_float(row[column])
                truncated_value = _as_float(row[f"{column}__truncated"])
                if not _same(full_value, truncated_value, tolerance):
                    violations.append(
                        LookaheadViolation(
                            symbol=row["symbol"],
                            ts=row["ts"],
                            column=column,
                            full_value=full_value,
                            truncated_value=truncated_value,
                        )
                    )
    return violations


def _epoch_ms(t: datetime) -> int:
    """Milliseconds since the epoch; a naive time is taken as UTC, as candle times are."""
    aware = t if t.tzinfo is not None else t.replace(tzinfo=UTC)
    return round(aware.timestamp() * 1000)


def _as_float(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool | int | float):
        return float(value)
    raise LookaheadCheckError(f"feature value {value!r} is not numeric")


def _side_inputs(
    trades: pl.DataFrame | None, funding: pl.DataFrame | None, close_ms: int | None
) -> dict[str, pl.DataFrame]:
    """Trades and funding as known at ``close_ms`` (all of them when None), only those given."""
    inputs = {}
    if trades is not None:
        inputs["trades"] = (
            trades if close_ms is None else trades.filter(pl.col("ts").dt.epoch("ms") < close_ms)
        )
    if funding is not None:
        inputs["funding"] = (
            funding if close_ms is None else funding.filter(pl.col("ts").dt.epoch("ms") <= close_ms)
        )
    return inputs


def violations_frame(violations: Sequence[LookaheadViolation]) -> pl.DataFrame:
    """The violations as a table, for asset-check metadata or a log line."""
    return pl.DataFrame(
        [asdict(v) for v in violations],
        schema={
            "symbol": pl.String,
            "ts": pl.Datetime("ms", "UTC"),
            "column": pl.String,
            "full_value": pl.Float64,
            "truncated_value": pl.Float64,
        },
    )
