"""Properties of the performance metrics."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sapphire_domain.backtest.metrics import (
    bar_returns,
    cagr,
    max_drawdown,
    periods_per_year,
    sharpe,
    sortino,
    total_return,
)

curves = st.lists(st.floats(min_value=1.0, max_value=1e6), min_size=2, max_size=200).map(np.array)


@settings(max_examples=200, deadline=None)
@given(curves)
def test_max_drawdown_is_a_fraction_and_zero_for_a_curve_that_never_falls(equity):
    assert 0.0 <= max_drawdown(equity, equity[0]) <= 1.0
    assert max_drawdown(np.sort(equity), float(np.min(equity))) == 0.0


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=1.0, max_value=1e6), st.integers(min_value=2, max_value=300))
def test_a_constant_equity_curve_has_no_return_no_drawdown_and_no_risk_ratio(level, bars):
    equity = np.full(bars, level)
    assert total_return(equity, level) == 0.0
    assert cagr(equity, level, 17_520) == 0.0
    assert max_drawdown(equity, level) == 0.0
    returns = bar_returns(equity, level)
    assert sharpe(returns, 17_520) == 0.0 and sortino(returns, 17_520) == 0.0


def test_a_halving_is_a_fifty_percent_drawdown_and_returns_compound_to_the_total():
    equity = np.array([100.0, 200.0, 100.0, 150.0])
    assert max_drawdown(equity, 100.0) == pytest.approx(0.5)
    returns = bar_returns(equity, 100.0)
    assert np.prod(1 + returns) - 1 == pytest.approx(total_return(equity, 100.0))


def test_a_year_of_bars_doubling_equity_has_a_cagr_of_one():
    bars = int(periods_per_year("1d"))
    equity = 100.0 * 2.0 ** (np.arange(1, bars + 1) / bars)
    assert cagr(equity, 100.0, periods_per_year("1d")) == pytest.approx(1.0)
    assert periods_per_year("30m") == 17_520


def test_sortino_ignores_upside_volatility_that_sharpe_penalises():
    returns = np.array([0.01, 0.05, -0.01, 0.01, 0.08, -0.01])
    assert sortino(returns, 365) > sharpe(returns, 365) > 0
