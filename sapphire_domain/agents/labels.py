"""Forward-return labels: what the agents learn to forecast.

Timing. A features row at ``ts`` describes the candle that closes at ``ts + step``; a decision
taken on it is made at that close. Its label is the log return from that close to the close
``horizon`` bars later, ``sum(ret_1)`` over the next ``horizon`` rows, which is known at
``label_end = ts + (horizon + 1) * step``. Walk-forward training keys on ``label_end``: a row may
train a model only if its label had ended before the model's cutoff.

Gaps. A label is null when any bar in its window is missing (the row ``horizon`` rows later is
not exactly ``horizon`` steps later) or when the data end first. Nothing is forward-filled, so a
label never spans a gap and never pretends a missing price was flat.
"""

from __future__ import annotations

import polars as pl

from sapphire_domain.errors import SapphireError

LABEL = "forward_return"
LABEL_END = "label_end"


class MissingFeaturesError(SapphireError):
    """A features frame lacks columns that a model or a label needs."""


def require_columns(frame: pl.DataFrame, columns: list[str] | tuple[str, ...], who: str) -> None:
    """Raise MissingFeaturesError naming every absent column (never fill them with zeros)."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise MissingFeaturesError(
            f"{who}: the features frame lacks {missing}; recompute features with a FeatureParams "
            f"that produces them (present: {sorted(frame.columns)})"
        )


def forward_returns(features: pl.DataFrame, horizon: int, step_ms: int) -> pl.DataFrame:
    """``ts``, ``symbol``, ``forward_return`` (null across gaps and at the end) and ``label_end``.

    ``features`` needs ``ts``, ``symbol`` and ``ret_1`` (a 1-bar log return per row).
    """
    if horizon < 1:
        raise ValueError(f"label horizon must be at least one bar, got {horizon}")
    require_columns(features, ["ts", "symbol", "ret_1"], "forward_returns")
    frame = features.select("ts", "symbol", "ret_1").sort("symbol", "ts")
    ahead = [pl.col("ret_1").shift(-k).over("symbol") for k in range(1, horizon + 1)]
    later_ts = pl.col("ts").shift(-horizon).over("symbol")
    # Sorted, duplicate-free bars: `horizon` rows ahead is exactly `horizon` steps ahead only if
    # no bar in between is missing.
    unbroken = (later_ts - pl.col("ts")).dt.total_milliseconds() == horizon * step_ms
    step = pl.duration(milliseconds=step_ms)
    return frame.select(
        "ts",
        "symbol",
        pl.when(unbroken).then(pl.sum_horizontal(ahead, ignore_nulls=False)).alias(LABEL),
        (pl.col("ts") + step * (horizon + 1)).alias(LABEL_END),
    )
