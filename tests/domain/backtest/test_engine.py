"""The engine's timing, accounting, costs, constraints and bad-input errors."""

import math

import numpy as np
import polars as pl
import pytest

from sapphire_domain.backtest import (
    BacktestConfig,
    LeverageExceededError,
    MarketData,
    MisalignedIndexError,
    MissingPriceError,
    NonFiniteWeightsError,
    engine,
    run_backtest,
)
from sapphire_domain.errors import ConfigError
from sapphire_domain.fill_model import CostModel, MarketState, fill
from sapphire_domain.synthetic import generate_candles
from tests.domain.backtest.helpers import market

FREE = CostModel(maker_fee_bps=0, taker_fee_bps=0, slippage_bps=0, impact_coefficient=0, lot_size=0)


def test_a_weight_decided_at_a_close_trades_at_the_next_open_and_not_before():
    prices = market(close=[100, 110, 120, 130], open_=[100, 105, 115, 125])
    weights = np.array([[1.0], [1.0], [1.0], [1.0]])
    result = run_backtest(weights, prices, BacktestConfig(cost_model=FREE, initial_cash=1000))
    assert result.equity[0] == 1000  # nothing held through bar 0
    assert result.fill_bar[0] == 1 and result.fill_price[0] == 105
    # Bought 1000/105 units at the open of bar 1 and held them to the close of bar 3.
    assert result.equity[-1] == pytest.approx(1000 / 105 * 130)


def test_a_longer_execution_delay_trades_later():
    prices = market(close=[100, 110, 120, 130])
    weights = np.ones((4, 1))
    config = BacktestConfig(cost_model=FREE, execution_delay=2, initial_cash=1000)
    result = run_backtest(weights, prices, config)
    assert list(result.fill_bar) == [2]
    assert result.equity[-1] == pytest.approx(1000 / 120 * 130)


def test_an_execution_delay_of_zero_is_refused():
    with pytest.raises(ConfigError, match="delay"):
        BacktestConfig(execution_delay=0)


def test_fees_and_slippage_come_out_of_equity():
    prices = market(close=[100, 100, 100])
    model = CostModel(taker_fee_bps=10, slippage_bps=5, impact_coefficient=0, lot_size=0)
    result = run_backtest(np.ones((3, 1)), prices, BacktestConfig(cost_model=model))
    traded = result.traded_notional[1]
    assert result.fees[1] == pytest.approx(traded * 10e-4)
    assert result.slippage[1] == pytest.approx(100 * 100.0 * 5e-4)  # 100 units, 5 bps
    # Marked at an unchanged close, equity lost exactly the fee and the slippage.
    assert result.equity[1] == pytest.approx(10_000 - result.fees[1] - result.slippage[1])


def test_every_engine_fill_equals_the_paper_venue_fill_for_the_same_order():
    candles = generate_candles(3, 3, "30m", seed=4)
    prices = MarketData.from_candles(candles)
    rng = np.random.default_rng(0)
    weights = rng.uniform(-0.3, 0.3, prices.close.shape)
    model = CostModel(lot_size=0.001, impact_coefficient=0.5, min_notional=10.0)
    result = run_backtest(weights, prices, BacktestConfig(cost_model=model))
    assert result.fill_count > 100
    position = np.zeros(3)
    cash = 10_000.0
    k = 0
    for t in range(1, prices.bars):
        at_open = cash
        for j in range(3):
            if position[j] != 0.0:
                at_open += position[j] * prices.open[t, j]
        for j in range(3):
            w, price = weights[t - 1, j], prices.open[t, j]
            order = -position[j] if w == 0 else w * at_open / price - position[j]
            state = MarketState(price, prices.volatility[t - 1, j], prices.volume[t - 1, j])
            venue = fill(order, state, model)
            if venue is None:
                continue
            assert (result.fill_bar[k], result.fill_symbol[k]) == (t, j)
            assert (venue.quantity, venue.price, venue.fee, venue.slippage_cost, price) == (
                result.fill_quantity[k],
                result.fill_price[k],
                result.fill_fee[k],
                result.fill_slippage[k],
                result.fill_reference_price[k],
            )
            position[j] += venue.quantity
            cash -= venue.quantity * venue.price + venue.fee
            k += 1
    assert k == result.fill_count


def test_a_long_pays_positive_funding_and_a_short_receives_it():
    funding = np.zeros((3, 2))
    funding[2] = 0.001
    prices = market(close=np.full((3, 2), 100.0), funding=funding)
    weights = np.tile([0.5, -0.5], (3, 1))
    result = run_backtest(weights, prices, BacktestConfig(cost_model=FREE, initial_cash=1000))
    # Long 5 units and short 5 units at 100: they pay and receive 0.5 each.
    assert result.funding[2] == pytest.approx(0.0)
    long_only = run_backtest(
        np.tile([0.5, 0.0], (3, 1)), prices, BacktestConfig(cost_model=FREE, initial_cash=1000)
    )
    assert long_only.funding[2] == pytest.approx(0.5)
    assert long_only.equity[2] == pytest.approx(999.5)


def test_orders_are_lot_rounded_and_tiny_ones_dropped():
    prices = market(close=[100.0, 100.0, 100.0])
    model = FREE.__class__(lot_size=1.0, min_notional=0, taker_fee_bps=0, slippage_bps=0)
    result = run_backtest(
        np.ones((3, 1)) * 0.555, prices, BacktestConfig(cost_model=model, initial_cash=1000)
    )
    assert list(result.fill_quantity) == [5.0]  # 5.55 units rounded down; the 0.55 left is < 1 lot


def test_the_no_trade_band_skips_small_rebalances_but_never_a_close():
    prices = market(close=[100, 100, 101, 102, 102])
    weights = np.array([[0.5], [0.51], [0.52], [0.0], [0.0]])
    config = BacktestConfig(cost_model=FREE, rebalance_band=0.05)
    result = run_backtest(weights, prices, config)
    assert list(result.fill_bar) == [1, 4]
    assert result.positions[-1, 0] == 0.0


def test_weights_as_a_frame_on_the_market_bars_trade_like_the_matrix():
    prices = market(close=np.full((4, 2), 50.0))
    frame = pl.DataFrame(
        {
            "ts": pl.Series(prices.ts[[0, 1]]).cast(pl.Datetime("ms", "UTC")),
            "symbol": ["S1/USD", "S0/USD"],
            "weight": [0.4, 0.2],
        }
    )
    matrix = np.zeros((4, 2))
    matrix[0, 1], matrix[1, 0] = 0.4, 0.2
    assert np.array_equal(run_backtest(frame, prices).equity, run_backtest(matrix, prices).equity)


def test_non_finite_weights_are_refused():
    with pytest.raises(NonFiniteWeightsError, match="S0/USD"):
        run_backtest(np.array([[0.5], [math.nan]]), market(close=[1.0, 1.0]))
    weights = np.array([[0.1, 0.1], [0.1, math.inf], [math.nan, 0.1]])
    with pytest.raises(NonFiniteWeightsError, match=r"^2 weight\(s\).* S1/USD at bar 1 .*: inf$"):
        run_backtest(weights, market(close=np.ones((3, 2))))


def test_weights_above_the_leverage_limit_are_refused():
    prices = market(close=np.ones((2, 2)))
    with pytest.raises(LeverageExceededError, match=r"1\.2"):
        run_backtest(np.array([[0.6, -0.6], [0, 0]]), prices)
    with pytest.raises(LeverageExceededError, match=r"1\.5 at bar 1 .*\(2 bar\(s\) over\)"):
        run_backtest(np.array([[0.5, 0.5], [1.0, -0.5], [1.0, 1.0]]), market(close=np.ones((3, 2))))
    run_backtest(np.array([[0.6, -0.6], [0, 0]]), prices, BacktestConfig(max_leverage=2.0))


def test_a_missing_price_for_a_traded_symbol_is_refused():
    prices = market(close=np.array([[1.0, 1.0], [1.0, math.nan], [1.0, 1.0]]))
    with pytest.raises(MissingPriceError, match="S1/USD"):
        run_backtest(np.array([[0.5, 0.5], [0.5, 0.5], [0, 0]]), prices)
    # Untraded, the hole does not matter.
    run_backtest(np.array([[0.5, 0.0], [0.5, 0.0], [0, 0]]), prices)


def test_a_position_being_closed_needs_an_open_but_no_close():
    # Bought at bar 1, closed at the open of bar 2: bar 2's close is never used.
    close = np.array([1.0, 1.0, math.nan, 1.0])
    run_backtest(np.array([[0.5], [0.0], [0.0], [0.0]]), market(close=close, open_=np.ones(4)))
    opens = np.array([1.0, 1.0, math.nan, 1.0])
    with pytest.raises(MissingPriceError, match=r"at bar 2 .* open price there is nan \(1 such"):
        run_backtest(np.array([[0.5], [0.0], [0.0], [0.0]]), market(close=np.ones(4), open_=opens))


def test_misaligned_weights_are_refused():
    prices = market(close=np.ones((3, 2)))
    with pytest.raises(MisalignedIndexError, match="shape"):
        run_backtest(np.zeros((4, 2)), prices)
    off_bar = pl.DataFrame(
        {
            "ts": pl.Series([prices.ts[0] + 1]).cast(pl.Datetime("ms", "UTC")),
            "symbol": ["S0/USD"],
            "weight": [0.1],
        }
    )
    with pytest.raises(MisalignedIndexError, match="not bars"):
        run_backtest(off_bar, prices)


def test_the_fill_buffers_grow_when_fills_outnumber_their_room():
    # run_backtest gives the kernel room for a fill in every traded or held cell, which the fills
    # do not outgrow; given less, the kernel stops, and resumes with bigger buffers.
    candles = generate_candles(3, 2, "30m", seed=5)
    prices = MarketData.from_candles(candles)
    weights = np.random.default_rng(1).uniform(-0.3, 0.3, prices.close.shape)
    config = BacktestConfig()
    full = run_backtest(weights, prices, config)
    assert full.fill_count > 10 * 3
    per_bar, positions, fills, count = engine._simulate_growing(weights, prices, config, room=1)
    assert count == full.fill_count and len(fills[0]) >= count
    names = ("bar", "symbol", "quantity", "price", "reference_price", "fee", "slippage")
    for name, values in zip(names, fills, strict=True):
        assert np.array_equal(values[:count], getattr(full, f"fill_{name}")), name
    assert np.array_equal(per_bar[0], full.equity) and np.array_equal(per_bar[1], full.cash)
    assert np.array_equal(positions, full.positions)
