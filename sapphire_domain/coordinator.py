"""The coordinator: combine the agents' forecasts with weights learned from measured skill.

Scorecard. ``score_forecasts`` scores every forecast once its label has ended, and files it
under the UTC day its label ended: the scorecard of day d uses only data known at the end of d.
Per (day, agent): rows, IC (Spearman), hit rate, log-loss, Brier score and calibration gap
(mean ``p_up`` minus the frequency of up moves; positive means over-optimistic).

Weights: Hedge (Freund and Schapire 1997, "A decision-theoretic generalization of on-line
learning"), the exponentially weighted average forecaster. Each scored forecast row is a round
and its loss is the Brier score of ``p_up``, which lies in [0, 1] as Hedge's regret bound needs.
After T rounds agent a has cumulative loss L_a and weight ``w_a ∝ exp(-eta * L_a)``. The default
learning rate is ``eta = sqrt(8 ln N / T)`` for N agents, which bounds the regret against the
best agent by ``sqrt(T ln N / 2)`` (Cesa-Bianchi and Lugosi 2006, Theorem 2.2); it can be fixed
in ``HedgeParams``.

Two changes to plain Hedge, both stated:
- it restarts over a trailing window of days (``window_days``), so the weights of day d are a
  pure function of the scorecards of days [d - window, d) (a partition never depends on its own
  history) and they follow changes of regime;
- a share ``mix`` of the weight is spread evenly (as in Herbster and Warmuth's fixed share), so
  an agent that has been poor for a while can earn weight back.

Stale models (a champion older than its maximum age) have their weight multiplied by
``stale_factor`` (0 excludes them) before the weights are renormalised.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import date, timedelta

import polars as pl

from sapphire_domain.agents.labels import LABEL, LABEL_END
from sapphire_domain.agents.skill import EPS

SCORECARD_SCHEMA: dict[str, pl.DataType] = {
    "day": pl.Date(),
    "agent": pl.String(),
    "n": pl.Int64(),
    "ic": pl.Float64(),
    "hit_rate": pl.Float64(),
    "log_loss": pl.Float64(),
    "brier": pl.Float64(),
    "brier_sum": pl.Float64(),
    "calibration_gap": pl.Float64(),
}


@dataclass(frozen=True)
class HedgeParams:
    """Attributes:
    window_days: days of scorecards the weights learn from (Hedge restarts at the window start).
    eta: learning rate per scored row; None for ``sqrt(8 ln N / T)``.
    mix: share of weight spread evenly over the agents (0 is plain Hedge).
    stale_factor: multiplier of a stale agent's weight (0 excludes it, 1 ignores staleness).
    """

    window_days: int = 30
    eta: float | None = None
    mix: float = 0.05
    stale_factor: float = 0.0


def score_forecasts(forecasts: pl.DataFrame, labels: pl.DataFrame) -> pl.DataFrame:
    """Scorecard rows (SCORECARD_SCHEMA) of forecasts whose labels are known.

    ``labels`` has ``ts``, ``symbol``, ``forward_return`` and ``label_end``; rows without a label
    (gaps, the end of the data) are not scored.
    """
    scored = forecasts.join(
        labels.select("ts", "symbol", LABEL, LABEL_END), on=["ts", "symbol"], how="inner"
    ).drop_nulls(LABEL)
    up = (pl.col(LABEL) > 0).cast(pl.Float64)
    p = pl.col("p_up").clip(EPS, 1 - EPS)
    brier = (pl.col("p_up") - up) ** 2
    card = (
        scored.with_columns(pl.col(LABEL_END).dt.date().alias("day"))
        .group_by("day", "agent")
        .agg(
            pl.len().cast(pl.Int64).alias("n"),
            pl.corr("expected_return", LABEL, method="spearman").alias("ic"),
            ((pl.col("p_up") > 0.5) == (pl.col(LABEL) > 0))
            .filter(pl.col(LABEL) != 0)
            .mean()
            .alias("hit_rate"),
            (-(up * p.log() + (1 - up) * (1 - p).log())).mean().alias("log_loss"),
            brier.mean().alias("brier"),
            brier.sum().alias("brier_sum"),
            (pl.col("p_up").mean() - up.mean()).alias("calibration_gap"),
        )
        .with_columns(pl.col("ic").fill_nan(None))
        .sort("day", "agent")
    )
    return card.select(pl.col(c).cast(t) for c, t in SCORECARD_SCHEMA.items())


def hedge_weights(
    scorecard: pl.DataFrame,
    agents: Collection[str],
    day: date,
    params: HedgeParams = HedgeParams(),
    stale: Collection[str] = (),
) -> dict[str, float]:
    """Weights for forecasts of ``day``, learned from scorecards of the window before it.

    An agent with no scored rows in the window is charged a coin flip's Brier score (0.25) per
    round, so missing history neither rewards nor punishes it much.
    """
    names = sorted(agents)
    if not names:
        return {}
    window = scorecard.filter(
        (pl.col("day") < day) & (pl.col("day") >= day - timedelta(days=params.window_days))
    )
    per_agent = {
        row["agent"]: (row["brier_sum"], row["n"])
        for row in window.group_by("agent")
        .agg(pl.col("brier_sum").sum(), pl.col("n").sum())
        .iter_rows(named=True)
    }
    rounds = max((n for _, n in per_agent.values()), default=0)
    losses = {}
    for agent in names:
        loss, n = per_agent.get(agent, (0.0, 0))
        losses[agent] = loss + 0.25 * (rounds - n)  # unscored rounds cost a coin flip
    eta = (
        params.eta
        if params.eta is not None
        else math.sqrt(8 * math.log(max(len(names), 2)) / max(rounds, 1))
    )
    best = min(losses.values())
    raw = {a: math.exp(-eta * (losses[a] - best)) for a in names}
    total = sum(raw.values())
    weights = {a: (1 - params.mix) * raw[a] / total + params.mix / len(names) for a in names}
    weights = {a: w * (params.stale_factor if a in stale else 1.0) for a, w in weights.items()}
    total = sum(weights.values())
    return {a: (w / total if total > 0 else 0.0) for a, w in weights.items()}


def combine(forecasts: pl.DataFrame, weights: Mapping[str, float]) -> pl.DataFrame:
    """The weighted combination per (ts, symbol): ``p_up``, ``expected_return``, ``confidence``
    (``|2 p_up - 1|``), the agents that took part and their model versions.

    Weights are renormalised over the agents present in each row; rows where every present agent
    has zero weight are dropped (nothing to act on), never filled with a neutral value.
    """
    table = pl.DataFrame(
        {"agent": list(weights), "weight": [float(w) for w in weights.values()]},
        schema={"agent": pl.String, "weight": pl.Float64},
    )
    weighted = forecasts.join(table, on="agent", how="inner").filter(pl.col("weight") > 0)
    w = pl.col("weight")
    combined = (
        weighted.group_by("ts", "symbol")
        .agg(
            ((w * pl.col("p_up")).sum() / w.sum()).alias("p_up"),
            ((w * pl.col("expected_return")).sum() / w.sum()).alias("expected_return"),
            pl.col("agent").sort().str.join(",").alias("agents"),
            pl.concat_str("agent", pl.lit("="), "model_version")
            .sort()
            .str.join(",")
            .alias("model_versions"),
        )
        .with_columns((2 * pl.col("p_up") - 1).abs().alias("confidence"))
        .sort("symbol", "ts")
    )
    return combined.select("ts", "symbol", "p_up", "expected_return", "confidence", "agents",
                           "model_versions")  # fmt: skip
