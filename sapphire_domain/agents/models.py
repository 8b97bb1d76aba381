"""The agents' quantitative models: small LightGBM models that train on CPU in seconds.

- Classifier agents (momentum, microstructure, sentiment): a LightGBM binary classifier of
  ``forward_return > 0``. ``p_up`` is its probability; the expected return is
  ``(2 p_up - 1) * E|r|``, with ``E|r|`` the mean absolute label in training (exact when up and
  down moves have the same size, a sane scale otherwise).
- The timeseries agent: one LightGBM quantile regression (pinball loss) per quantile, by default
  q10, q50 and q90. Crossing quantiles are sorted. ``expected_return`` is q50; ``p_up`` comes
  from a normal distribution fitted to the quantiles (mean q50, standard deviation
  ``(q90 - q10) / (2 z_0.9)``), so a wide distribution around a small median is rightly unsure.

Confidence is ``|2 p_up - 1|`` for both. Missing feature *columns* raise MissingFeaturesError;
missing *values* reach LightGBM as NaN, which it routes down its learned missing-value branch
(never as zeros).

Sample weights. A ``sample_weight`` column, when present, weights the training rows; this is the
hook through which realised trade outcomes reach the models (``feedback_sample_weights``).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import lightgbm as lgb
import numpy as np
import polars as pl

from sapphire_domain.agents.forecast import conform, empty_forecasts
from sapphire_domain.agents.labels import LABEL, forward_returns, require_columns
from sapphire_domain.agents.skill import skill
from sapphire_domain.agents.specs import AgentSpec, ModelKind
from sapphire_domain.agents.walk_forward import TrainingWindow, select_models, training_rows
from sapphire_domain.errors import SapphireError

SAMPLE_WEIGHT = "sample_weight"
Z_90 = 1.2815515655446004  # standard normal quantile at 0.9
_ERF = np.frompyfunc(math.erf, 1, 1)


class InsufficientDataError(SapphireError):
    """Too few labelled rows in a training window to fit a model."""


class NoModelError(SapphireError):
    """No model was trained early enough to forecast a row without looking ahead."""


@dataclass(frozen=True)
class ModelParams:
    """LightGBM settings, small on purpose (they train on CPU in seconds).

    Attributes:
        num_leaves, num_trees, learning_rate, min_data_in_leaf, feature_fraction: the usual
            LightGBM meanings.
        quantiles: the quantile levels of a quantile model; must include 0.1, 0.5 and 0.9.
        min_rows: fewest labelled rows a training window must hold.
        seed: all LightGBM seeds; with ``deterministic`` training the same rows give the same
            model, which the look-ahead tests rely on.
    """

    num_leaves: int = 15
    num_trees: int = 50
    learning_rate: float = 0.05
    min_data_in_leaf: int = 100
    feature_fraction: float = 0.9
    quantiles: tuple[float, ...] = (0.1, 0.5, 0.9)
    min_rows: int = 500
    seed: int = 7

    def lightgbm(self) -> dict[str, Any]:
        return {
            "num_leaves": self.num_leaves,
            "learning_rate": self.learning_rate,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": self.feature_fraction,
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": 1,
            "verbosity": -1,
        }

    def as_dict(self) -> dict[str, Any]:
        return {**self.lightgbm(), "num_trees": self.num_trees, "quantiles": list(self.quantiles)}


DEFAULT_MODEL_PARAMS = ModelParams()


@dataclass
class AgentModel:
    """A trained model of one agent, with everything the registry stores about it.

    ``boosters`` maps a part name to a LightGBM booster: ``p_up`` for a classifier, ``q10``,
    ``q50``, ``q90`` for a quantile model.

    ``available_from``: the earliest time the model may forecast, beyond ``cutoff + embargo``. A
    challenger promoted over a champion gets the time it was trained at: its promotion looked at
    outcomes up to then, so rematerialising an earlier day must keep the model that served it.
    None for walk-forward lineage models (and a first model), usable from ``cutoff + embargo``.
    """

    agent: str
    version: str
    kind: ModelKind
    features: tuple[str, ...]
    horizon: int
    window: TrainingWindow
    boosters: dict[str, lgb.Booster]
    return_scale: float
    params: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)
    available_from: datetime | None = None

    def usable_from(self, embargo: timedelta) -> datetime:
        earliest = self.window.usable_from(embargo)
        return max(earliest, self.available_from) if self.available_from else earliest

    def texts(self) -> dict[str, str]:
        return {part: b.model_to_string() for part, b in sorted(self.boosters.items())}


def labelled_features(features: pl.DataFrame, horizon: int, step_ms: int) -> pl.DataFrame:
    """Features with ``forward_return`` and ``label_end`` joined on (ts, symbol)."""
    labels = forward_returns(features, horizon, step_ms)
    return features.join(labels, on=["ts", "symbol"], how="left")


def _matrix(frame: pl.DataFrame, columns: Sequence[str]) -> np.ndarray:
    # nulls become NaN, which LightGBM treats as missing: never zero
    return frame.select(pl.col(c).cast(pl.Float64) for c in columns).to_numpy()


def train_model(
    spec: AgentSpec,
    labelled: pl.DataFrame,
    window: TrainingWindow,
    horizon: int,
    params: ModelParams = DEFAULT_MODEL_PARAMS,
) -> AgentModel:
    """Fit the agent's model on the rows the window allows (``label_end <= cutoff``)."""
    require_columns(labelled, [*spec.features, LABEL, "label_end"], f"{spec.name} training")
    rows = training_rows(labelled, window).drop_nulls(LABEL)
    if rows.height < params.min_rows:
        raise InsufficientDataError(
            f"{spec.name}: {rows.height} labelled rows between {window.start} and cutoff "
            f"{window.cutoff}, fewer than {params.min_rows}; widen the training window"
        )
    x = _matrix(rows, spec.features)
    y = rows[LABEL].to_numpy()
    weight = rows[SAMPLE_WEIGHT].to_numpy() if SAMPLE_WEIGHT in rows.columns else None
    base = params.lightgbm()
    boosters: dict[str, lgb.Booster] = {}
    if spec.kind == "classifier":
        target = (y > 0).astype(float)
        data = lgb.Dataset(x, target, weight=weight, feature_name=list(spec.features),
                           free_raw_data=False)  # fmt: skip
        boosters["p_up"] = lgb.train({**base, "objective": "binary"}, data, params.num_trees)
    else:
        for q in params.quantiles:
            data = lgb.Dataset(x, y, weight=weight, feature_name=list(spec.features),
                               free_raw_data=False)  # fmt: skip
            objective = {**base, "objective": "quantile", "alpha": q}
            boosters[quantile_name(q)] = lgb.train(objective, data, params.num_trees)
    model = AgentModel(
        agent=spec.name,
        version="",
        kind=spec.kind,
        features=spec.features,
        horizon=horizon,
        window=window,
        boosters=boosters,
        return_scale=float(np.mean(np.abs(y))),
        params=params.as_dict(),
    )
    digest = hashlib.sha256("".join(model.texts().values()).encode()).hexdigest()[:8]
    return replace(model, version=f"{spec.name}-{window.cutoff:%Y%m%dT%H%M}-{digest}")


def quantile_name(q: float) -> str:
    return f"q{round(q * 100):02d}"


def predict(model: AgentModel, features: pl.DataFrame) -> pl.DataFrame:
    """Forecast rows (FORECAST_SCHEMA) of every row of ``features``."""
    require_columns(features, ["ts", "symbol", *model.features], f"{model.agent} forecast")
    if features.is_empty():
        return empty_forecasts()
    x = _matrix(features, model.features)
    quantiles: dict[str, Any] = {}
    if model.kind == "classifier":
        p_up = np.asarray(model.boosters["p_up"].predict(x), dtype=float)
        expected = (2 * p_up - 1) * model.return_scale
        backend = "lightgbm"
    else:
        q10, q50, q90 = np.sort(
            np.column_stack([model.boosters[n].predict(x) for n in ("q10", "q50", "q90")]), axis=1
        ).T
        sigma = np.maximum((q90 - q10) / (2 * Z_90), 1e-12)
        p_up = 0.5 * (1 + _ERF(q50 / (sigma * math.sqrt(2))).astype(float))
        expected = q50
        quantiles = {"q10": q10, "q50": q50, "q90": q90}
        backend = "lightgbm-quantile"
    p_up = np.clip(p_up, 0.0, 1.0)
    rows = features.select("ts", "symbol").with_columns(
        pl.lit(model.agent).alias("agent"),
        pl.lit(model.version).alias("model_version"),
        pl.lit(model.horizon, pl.Int64).alias("horizon"),
        pl.Series("p_up", p_up),
        pl.Series("expected_return", expected, pl.Float64),
        pl.Series("confidence", np.abs(2 * p_up - 1)),
        *(pl.Series(k, v, pl.Float64) for k, v in quantiles.items()),
        pl.lit(backend).alias("backend"),
        pl.lit(None, pl.String).alias("rationale"),
        pl.lit(False).alias("fallback"),
    )
    return conform(rows)


def validation_metrics(model: AgentModel, labelled: pl.DataFrame) -> dict[str, float]:
    """Out-of-sample skill (see ``skill``) of the model on labelled rows it did not train on."""
    forecasts = predict(model, labelled)
    scored = forecasts.with_columns(labelled[LABEL].alias(LABEL))
    return skill(scored)


class QuantBackend:
    """The quantitative ForecastBackend over a walk-forward lineage of models.

    Each row is forecast by the latest model usable at the row's time: ``cutoff + embargo`` and
    ``available_from`` at or before it (``select_models``); a stale flag is not its concern (the
    coordinator down-weights).
    """

    name = "lightgbm"

    def __init__(self, models: Sequence[AgentModel], embargo: timedelta) -> None:
        self.models = {m.version: m for m in models}
        self.embargo = embargo

    def forecast(self, agent: AgentSpec, features: pl.DataFrame) -> pl.DataFrame:
        require_columns(features, ["ts", "symbol", *agent.features], f"{agent.name} forecast")
        mine = [m for m in self.models.values() if m.agent == agent.name]
        if not mine:
            raise NoModelError(f"{agent.name}: no trained model; run the retrain_agents job")
        available = pl.DataFrame(
            {
                "version": [m.version for m in mine],
                "cutoff": [m.window.cutoff for m in mine],
                "available_from": [m.available_from for m in mine],
            },
            schema={"version": pl.String, "cutoff": pl.Datetime("us", "UTC"),
                    "available_from": pl.Datetime("us", "UTC")},
        )  # fmt: skip
        picked = select_models(features.select("ts"), available, self.embargo)
        orphans = picked.filter(pl.col("version").is_null())
        if orphans.height:
            first = min(m.usable_from(self.embargo) for m in mine)
            raise NoModelError(
                f"{agent.name}: {orphans.height} row(s) from {orphans['ts'].min()!s} precede every "
                f"model's availability ({first}); forecasting them would use a model trained on "
                "their future. Train a walk-forward lineage that starts earlier"
            )
        tagged = features.with_columns(picked["version"].alias("_version"))
        parts = [
            predict(self.models[version], group)
            for (version,), group in tagged.group_by("_version", maintain_order=True)
        ]
        return pl.concat(parts).sort("symbol", "ts") if parts else empty_forecasts()


def train_lineage(
    spec: AgentSpec,
    labelled: pl.DataFrame,
    cutoffs: Sequence[Any],
    train_window: timedelta,
    horizon: int,
    params: ModelParams = DEFAULT_MODEL_PARAMS,
) -> list[AgentModel]:
    """One model per cutoff (rolling window ``train_window``); cutoffs with too little history
    are skipped, as the first months of a universe would be."""
    models = []
    for cutoff in cutoffs:
        try:
            models.append(
                train_model(
                    spec, labelled, TrainingWindow(cutoff - train_window, cutoff), horizon, params
                )
            )
        except InsufficientDataError:
            continue
    return models


def feedback_sample_weights(
    labelled: pl.DataFrame, feedback: pl.DataFrame | None, boost: float = 1.0
) -> pl.DataFrame:
    """``labelled`` with a ``sample_weight`` column from realised trade outcomes.

    ``feedback`` (the trade_feedback asset, when it exists) has one row per decision that traded:
    ``ts``, ``symbol`` and ``realised_return`` (the return the position earned after costs). A
    row that traded weighs ``1 + boost * |realised_return| / mean |realised_return|``, so the
    model learns most from the decisions that moved the account; every other row weighs 1.
    Without feedback all weights are 1 and training is unchanged.
    """
    if feedback is None or feedback.is_empty():
        return labelled.with_columns(pl.lit(1.0).alias(SAMPLE_WEIGHT))
    require_columns(feedback, ["ts", "symbol", "realised_return"], "trade feedback")
    scale = feedback["realised_return"].abs().mean()
    size = pl.col("realised_return").abs() / float(scale or 1.0)  # type: ignore[arg-type]
    weights = feedback.group_by("ts", "symbol").agg((1.0 + boost * size).max().alias(SAMPLE_WEIGHT))
    return labelled.join(weights, on=["ts", "symbol"], how="left").with_columns(
        pl.col(SAMPLE_WEIGHT).fill_null(1.0)
    )
