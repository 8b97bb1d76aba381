"""The same moving-average crossover through this engine and through vectorbt 1.0.

Conventions aligned for the comparison:
- timing: this engine trades a signal decided at bar t's close at bar t+1's open; vectorbt gets
  the entries and exits shifted one bar and ``price=open``;
- sizing with fees: vectorbt's all-in entry (``size=inf``) spends all cash *including* the fee,
  so it buys ``cash / (open * (1 + fee))``. A target weight of 1 here buys ``equity / open`` and
  pays the fee on top (cash goes slightly negative). The weight ``1 / (1 + fee)`` buys exactly
  what vectorbt buys;
- drift: vectorbt's from_signals holds between signals, while this engine re-targets every bar.
  A no-trade band of 1% of equity (far above the fee-sized drift of a fully invested single
  asset) keeps the engine from trading between signals;
- lot rounding and slippage are off here, since vectorbt applies neither.
With that, final equity agrees to 1e-9 and every order is the same.
"""

import numpy as np
import polars as pl
import pytest

from sapphire_domain.backtest import BacktestConfig, MarketData, run_backtest
from sapphire_domain.fill_model import CostModel
from sapphire_market.replay import ReplayExchange

FEE = 0.001
FAST, SLOW = 10, 50


@pytest.fixture(scope="module")
def btc() -> MarketData:
    candles = ReplayExchange().fetch_candles("BTC/USD", "30m", 0, 2**62)
    return MarketData.from_candles(candles, volatility_window=None)


def test_a_moving_average_crossover_matches_vectorbt(btc: MarketData):
    vbt = pytest.importorskip("vectorbt")
    close, open_ = btc.close[:, 0], btc.open[:, 0]
    assert np.isfinite(close).all()
    fast = pl.Series(close).rolling_mean(FAST).to_numpy()
    slow = pl.Series(close).rolling_mean(SLOW).to_numpy()
    long = np.nan_to_num(fast) > np.nan_to_num(slow)

    model = CostModel(taker_fee_bps=FEE * 1e4, slippage_bps=0, impact_coefficient=0, lot_size=0)
    config = BacktestConfig(cost_model=model, rebalance_band=0.01, initial_cash=10_000)
    ours = run_backtest((long / (1 + FEE))[:, None], btc, config)

    previous = np.concatenate(([False], long[:-1]))
    entries = np.zeros_like(long)
    exits = np.zeros_like(long)
    entries[1:] = (long & ~previous)[:-1]
    exits[1:] = (~long & previous)[:-1]
    theirs = vbt.Portfolio.from_signals(
        close, entries, exits, price=open_, fees=FEE, init_cash=10_000, freq="30min"
    )

    assert ours.fill_count > 100
    assert ours.fill_count == int(theirs.orders.count())
    assert ours.equity[-1] == pytest.approx(float(theirs.final_value()), rel=1e-9)
    assert ours.fees.sum() == pytest.approx(float(theirs.orders.records["fees"].sum()), rel=1e-9)
    assert np.allclose(ours.equity, theirs.value().to_numpy(), rtol=1e-9)
