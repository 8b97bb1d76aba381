"""The forecast contract every agent backend honours, quantitative or LLM.

One row per (ts, symbol, agent): the forecast of the forward log return over ``horizon`` bars
from the close of the candle at ``ts`` (see ``labels``).

- ``p_up``: probability that the return is positive, in [0, 1].
- ``expected_return``: the forecast's mean (or median) log return.
- ``confidence``: in [0, 1]; ``|2 p_up - 1|`` for the quantitative models.
- ``q10``, ``q50``, ``q90``: quantiles of the forecast distribution where a backend has one (the
  timeseries agent); null otherwise.
- ``backend``: ``lightgbm``, ``lightgbm-quantile``, ``vllm``...; ``rationale``: an LLM's short
  reason, null for quantitative rows; ``fallback``: true when the configured backend failed and
  another answered (the row says so rather than hiding it).
"""

from __future__ import annotations

from typing import Protocol

import polars as pl

from sapphire_domain.agents.specs import AgentSpec
from sapphire_domain.candles import TS_TYPE
from sapphire_domain.errors import SapphireError

FORECAST_SCHEMA: dict[str, pl.DataType] = {
    "ts": TS_TYPE,
    "symbol": pl.String(),
    "agent": pl.String(),
    "model_version": pl.String(),
    "horizon": pl.Int64(),
    "p_up": pl.Float64(),
    "expected_return": pl.Float64(),
    "confidence": pl.Float64(),
    "q10": pl.Float64(),
    "q50": pl.Float64(),
    "q90": pl.Float64(),
    "backend": pl.String(),
    "rationale": pl.String(),
    "fallback": pl.Boolean(),
}
FORECAST_COLUMNS = list(FORECAST_SCHEMA)


class ForecastContractError(SapphireError):
    """A backend returned forecast rows that break the contract."""


class ForecastBackend(Protocol):
    """Anything that turns an agent's features into forecast rows.

    ``features`` holds ``ts``, ``symbol`` and at least ``agent.features``; the result has the
    columns of FORECAST_SCHEMA, one row per input row it could forecast. A backend that cannot
    answer raises; it never returns zeros in place of a forecast.
    """

    name: str

    def forecast(self, agent: AgentSpec, features: pl.DataFrame) -> pl.DataFrame: ...


def empty_forecasts() -> pl.DataFrame:
    return pl.DataFrame(schema=FORECAST_SCHEMA)


def conform(frame: pl.DataFrame) -> pl.DataFrame:
    """Missing optional columns (quantiles, rationale) as nulls, then ``validate_forecasts``."""
    optional = {"q10", "q50", "q90", "rationale"}
    for name in optional - set(frame.columns):
        frame = frame.with_columns(pl.lit(None, FORECAST_SCHEMA[name]).alias(name))
    return validate_forecasts(frame.select(FORECAST_COLUMNS))


def validate_forecasts(frame: pl.DataFrame) -> pl.DataFrame:
    """The frame in contract order and types, or ForecastContractError naming what is wrong."""
    missing = [c for c in FORECAST_COLUMNS if c not in frame.columns]
    if missing:
        raise ForecastContractError(f"forecast rows lack columns {missing}")
    try:
        frame = frame.select(
            pl.col(name).cast(dtype, strict=True) for name, dtype in FORECAST_SCHEMA.items()
        )
    except pl.exceptions.PolarsError as error:
        raise ForecastContractError(f"forecast columns have the wrong types: {error}") from None
    required = ["ts", "symbol", "agent", "model_version", "horizon", "p_up", "expected_return",
                "confidence", "backend", "fallback"]  # fmt: skip
    nulls = [c for c in required if frame[c].null_count()]
    if nulls:
        raise ForecastContractError(f"forecast rows have nulls in {nulls}")
    for column in ("p_up", "confidence"):
        bad = frame.filter(~pl.col(column).is_between(0.0, 1.0))
        if bad.height:
            raise ForecastContractError(f"{bad.height} forecast rows have {column} outside [0, 1]")
    if frame.filter(~pl.col("expected_return").is_finite()).height:
        raise ForecastContractError("forecast rows have a non-finite expected_return")
    return frame
