"""The vectorised backtester: market matrices, the engine, strategies and performance metrics.

One fill model (``sapphire_domain.fill_model``) prices every fill, here and in the paper venue.
"""

from sapphire_domain.backtest.engine import BacktestConfig, BacktestResult, run_backtest
from sapphire_domain.backtest.errors import (
    BacktestInputError,
    LeverageExceededError,
    LookaheadDetectedError,
    MisalignedIndexError,
    MissingPriceError,
    NonFiniteWeightsError,
)
from sapphire_domain.backtest.market import MarketData
from sapphire_domain.backtest.metrics import PerformanceMetrics, performance_metrics
from sapphire_domain.backtest.strategies import (
    BuyAndHold,
    MomentumBaseline,
    Strategy,
    TargetPortfolioStrategy,
    find_strategy_lookahead,
)

__all__ = [
    "BacktestConfig",
    "BacktestInputError",
    "BacktestResult",
    "BuyAndHold",
    "LeverageExceededError",
    "LookaheadDetectedError",
    "MarketData",
    "MisalignedIndexError",
    "MissingPriceError",
    "MomentumBaseline",
    "NonFiniteWeightsError",
    "PerformanceMetrics",
    "Strategy",
    "TargetPortfolioStrategy",
    "find_strategy_lookahead",
    "performance_metrics",
    "run_backtest",
]
