"""The four agents: a role, a feature subset and a kind of quantitative model each.

A new agent is one more ``AgentSpec`` entry here; the pipeline (training, forecasts, scorecard,
assets) is shared. Roles follow the agent table in DESIGN.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ModelKind = Literal["classifier", "quantile"]


@dataclass(frozen=True)
class AgentSpec:
    """Attributes:
    name: the agent's name, also its asset's name prefix (``momentum_forecasts``).
    role: what the agent looks at, in words (shown in the UI).
    features: the feature columns its model reads; a frame without one of them is an error.
    kind: ``classifier`` (LightGBM binary on the sign of the forward return) or ``quantile``
        (LightGBM quantile regressions: a distribution, not a point).
    """

    name: str
    role: str
    features: tuple[str, ...]
    kind: ModelKind = "classifier"


MOMENTUM = AgentSpec(
    "momentum",
    "trend and momentum: returns over several horizons, RSI, MACD, Bollinger position",
    ("ret_1", "ret_4", "ret_16", "ret_48", "rsi", "macd", "macd_signal", "macd_hist", "bb_z"),
)
MICROSTRUCTURE = AgentSpec(
    "microstructure",
    "spread, order flow and volume anomalies (from trades when present, candles when not)",
    ("cs_spread", "trade_imbalance", "volume_z", "natr", "realized_vol", "ret_1"),
)
SENTIMENT = AgentSpec(
    "sentiment",
    "positioning proxies: funding, and volume-price divergence (volume against trend)",
    ("funding_rate", "volume_z", "ret_16", "ret_48", "rsi", "bb_z"),
)
TIMESERIES = AgentSpec(
    "timeseries",
    "probabilistic forecast of the next returns: quantiles q10/q50/q90 of the forward return",
    ("ret_1", "ret_4", "ret_16", "ret_48", "realized_vol", "natr"),
    kind="quantile",
)
AGENTS: dict[str, AgentSpec] = {
    a.name: a for a in (MOMENTUM, MICROSTRUCTURE, SENTIMENT, TIMESERIES)
}
