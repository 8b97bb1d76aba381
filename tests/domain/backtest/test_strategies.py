"""Strategies give walk-forward weights, and a strategy that peeks ahead is caught."""

from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest

from sapphire_domain.backtest import (
    BuyAndHold,
    LookaheadDetectedError,
    MarketData,
    MomentumBaseline,
    TargetPortfolioStrategy,
    find_strategy_lookahead,
)
from sapphire_domain.backtest.strategies import require_no_lookahead
from sapphire_domain.synthetic import generate_candles
from tests.domain.backtest.helpers import STEP_MS, market


@pytest.fixture(scope="module")
def synthetic() -> MarketData:
    return MarketData.from_candles(generate_candles(4, 10, "30m", seed=3))


class PeekOneBar:
    """Long the symbols whose next close is higher: one bar of look-ahead."""

    name = "peek"

    def target_weights(self, market: MarketData) -> np.ndarray:
        ahead = np.full_like(market.close, np.nan)
        ahead[:-1] = market.close[1:]
        return np.where(np.nan_to_num(ahead) > market.close, 0.25, 0.0)


def test_a_strategy_that_peeks_one_bar_into_the_future_is_detected(synthetic):
    assert find_strategy_lookahead(PeekOneBar(), synthetic)
    with pytest.raises(LookaheadDetectedError, match="peek"):
        require_no_lookahead(PeekOneBar(), synthetic)


@pytest.mark.parametrize(
    "strategy",
    [BuyAndHold(), MomentumBaseline(), MomentumBaseline(volatility_target=0.002, long_only=True)],
)
def test_the_built_in_strategies_use_only_the_past(synthetic, strategy):
    assert find_strategy_lookahead(strategy, synthetic, samples=30) == []


def test_momentum_follows_the_sign_of_the_lookback_return():
    prices = market(close=np.column_stack([np.linspace(100, 200, 60), np.linspace(200, 100, 60)]))
    weights = MomentumBaseline(lookback=10).target_weights(prices)
    assert (weights[:10] == 0).all()
    assert (weights[10:, 0] == 0.5).all() and (weights[10:, 1] == -0.5).all()


def test_buy_and_hold_weights_drift_with_prices_and_stay_fully_invested():
    prices = market(close=np.column_stack([np.full(5, 10.0), [10.0, 20, 30, 40, 50]]))
    weights = BuyAndHold().target_weights(prices)
    assert weights[0].tolist() == [0.5, 0.5]
    assert weights[-1].tolist() == pytest.approx([1 / 6, 5 / 6])
    assert weights.sum(axis=1) == pytest.approx(np.ones(5))


def test_a_target_is_used_from_the_bar_it_is_stamped_at_and_never_before():
    prices = market(close=np.full((6, 2), 10.0))
    stamp = [datetime.fromtimestamp(prices.ts[i] / 1000, UTC) for i in (2, 4)]
    targets = pl.DataFrame({"ts": stamp, "symbol": ["S0/USD", "S0/USD"], "weight": [0.3, -0.2]})
    weights = TargetPortfolioStrategy(targets).target_weights(prices)
    assert weights[:, 0].tolist() == [0, 0, 0.3, 0.3, -0.2, -0.2]
    assert (weights[:, 1] == 0).all()
    # A target stamped between bars waits for the next bar.
    late = targets.with_columns(pl.col("ts") + pl.duration(milliseconds=STEP_MS // 2))
    assert TargetPortfolioStrategy(late).target_weights(prices)[:, 0].tolist()[2:4] == [0, 0.3]
    aged = TargetPortfolioStrategy(targets, max_age_bars=0).target_weights(prices)
    assert aged[:, 0].tolist() == [0, 0, 0.3, 0, -0.2, 0]
