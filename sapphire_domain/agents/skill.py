"""Skill measures of probabilistic return forecasts against realised returns.

- IC: Spearman rank correlation of ``expected_return`` with the realised return.
- hit rate: share of rows where the forecast's sign (``p_up > 0.5``) matches the return's sign
  (rows with a zero return are left out).
- log-loss: binary cross-entropy of ``p_up`` against ``return > 0``, probabilities clipped to
  [1e-6, 1 - 1e-6]; a coin flip scores ln 2 = 0.693.
- Brier score: mean squared error of ``p_up``; a coin flip scores 0.25. Bounded in [0, 1], so it
  is the loss the coordinator's Hedge weights use.
- calibration error: mean over deciles of ``p_up`` of ``|mean p_up - frequency of up|``,
  weighted by the rows in each decile (expected calibration error).
"""

from __future__ import annotations

import math

import polars as pl

EPS = 1e-6


def skill_exprs(prediction: str = "expected_return", p_up: str = "p_up",
                realised: str = "forward_return") -> list[pl.Expr]:  # fmt: skip
    """Aggregations (for ``select`` or ``group_by().agg``) of the measures above."""
    up = (pl.col(realised) > 0).cast(pl.Float64)
    p = pl.col(p_up).clip(EPS, 1 - EPS)
    decisive = pl.col(realised) != 0
    return [
        pl.len().alias("n"),
        pl.corr(pl.col(prediction), pl.col(realised), method="spearman").alias("ic"),
        ((pl.col(p_up) > 0.5) == (pl.col(realised) > 0)).filter(decisive).mean().alias("hit_rate"),
        (-(up * p.log() + (1 - up) * (1 - p).log())).mean().alias("log_loss"),
        ((pl.col(p_up) - up) ** 2).mean().alias("brier"),
    ]


def skill(frame: pl.DataFrame, **columns: str) -> dict[str, float]:
    """The measures over a whole frame with realised returns (null returns are dropped)."""
    realised = columns.get("realised", "forward_return")
    rows = frame.drop_nulls(realised)
    if rows.is_empty():
        return {"n": 0, "ic": math.nan, "hit_rate": math.nan, "log_loss": math.nan,
                "brier": math.nan, "calibration_error": math.nan}  # fmt: skip
    out = rows.select(skill_exprs(**columns)).row(0, named=True)
    out["calibration_error"] = calibration_error(rows, columns.get("p_up", "p_up"), realised)
    return {k: (math.nan if v is None else float(v)) for k, v in out.items()}


def calibration_error(frame: pl.DataFrame, p_up: str = "p_up",
                      realised: str = "forward_return", bins: int = 10) -> float:  # fmt: skip
    if frame.is_empty():
        return math.nan
    binned = frame.group_by((pl.col(p_up) * bins).floor().clip(0, bins - 1).alias("_bin")).agg(
        pl.len().alias("n"),
        pl.col(p_up).mean().alias("p"),
        (pl.col(realised) > 0).mean().alias("f"),
    )
    gaps = binned.select(
        (pl.col("n") * (pl.col("p") - pl.col("f")).abs()).sum() / pl.col("n").sum()
    )
    return float(gaps.item())
