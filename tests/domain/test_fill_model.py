"""The shared fill model: lot rounding, minimums, slippage, fees, and one answer for both paths."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sapphire_domain.errors import ConfigError
from sapphire_domain.fill_model import (
    CostModel,
    MarketState,
    fill,
    fill_arrays,
    round_to_lot,
)

NO_IMPACT = CostModel(impact_coefficient=0.0)


def test_quantities_round_toward_zero_to_the_lot_size():
    assert round_to_lot(0.37, 0.1) == pytest.approx(0.3)
    assert round_to_lot(-0.37, 0.1) == pytest.approx(-0.3)
    assert round_to_lot(0.3, 0.1) == pytest.approx(0.3)  # 0.3 / 0.1 is 2.999... in floating point
    assert round_to_lot(0.09, 0.1) == 0.0
    assert round_to_lot(0.123456, 0.0) == 0.123456


def test_a_taker_buy_pays_fixed_slippage_above_the_reference_and_the_fee_on_its_notional():
    result = fill(2.0, MarketState(price=100.0, volatility=math.nan, volume=0.0), NO_IMPACT)
    assert result is not None
    assert result.quantity == 2.0
    assert result.price == pytest.approx(100.0 * (1 + 1e-4))
    assert result.fee == pytest.approx(2.0 * result.price * 5e-4)
    assert result.slippage_cost == pytest.approx(2.0 * 100.0 * 1e-4)
    assert result.liquidity == "taker"


def test_a_taker_sell_executes_below_the_reference():
    result = fill(-2.0, MarketState(100.0, math.nan, 0.0), NO_IMPACT)
    assert result is not None
    assert result.quantity == -2.0
    assert result.price < 100.0


def test_impact_grows_with_the_square_root_of_the_order_share_of_bar_volume():
    model = CostModel(slippage_bps=0.0, impact_coefficient=1.0)
    market = MarketState(price=100.0, volatility=0.01, volume=1000.0)  # 100 bps per bar
    small = fill(10.0, market, model)  # 1% of the bar: 100 * sqrt(0.01) = 10 bps
    large = fill(40.0, market, model)  # 4%: 20 bps
    assert small is not None and large is not None
    assert small.price == pytest.approx(100.0 * (1 + 10e-4))
    assert large.price == pytest.approx(100.0 * (1 + 20e-4))


def test_unknown_volatility_or_volume_leaves_only_the_fixed_slippage():
    for market in (MarketState(100.0, math.nan, 1000.0), MarketState(100.0, 0.01, 0.0)):
        result = fill(10.0, market, CostModel(slippage_bps=3.0, impact_coefficient=1.0))
        assert result is not None
        assert result.price == pytest.approx(100.0 * (1 + 3e-4))


def test_a_maker_fill_has_no_slippage_and_a_rebate_is_a_negative_fee():
    model = CostModel(maker_fee_bps=-1.0)
    result = fill(1.0, MarketState(100.0, 0.02, 10.0), model, liquidity="maker")
    assert result is not None
    assert result.price == 100.0
    assert result.slippage_cost == 0.0
    assert result.fee == pytest.approx(-0.01)


def test_orders_below_the_minimums_or_a_lot_are_dropped():
    market = MarketState(100.0, math.nan, 0.0)
    assert fill(0.5, market, CostModel(lot_size=1.0)) is None
    assert fill(0.5, market, CostModel(min_quantity=1.0)) is None
    assert fill(0.5, market, CostModel(min_notional=60.0)) is None
    assert fill(0.5, market, CostModel(min_notional=40.0)) is not None


def test_a_cost_model_refuses_negative_or_non_finite_settings():
    with pytest.raises(ConfigError, match="lot_size"):
        CostModel(lot_size=-1.0)
    with pytest.raises(ConfigError, match="finite"):
        CostModel(slippage_bps=math.inf)


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(
    orders=st.lists(
        st.tuples(
            finite,
            st.floats(min_value=1e-4, max_value=1e5),
            st.one_of(st.just(math.nan), st.floats(min_value=0.0, max_value=0.2)),
            st.one_of(st.just(math.nan), st.floats(min_value=0.0, max_value=1e9)),
        ),
        min_size=1,
        max_size=20,
    ),
    lot_size=st.sampled_from([0.0, 1e-8, 0.001, 0.1, 1.0]),
    min_notional=st.sampled_from([0.0, 5.0, 100.0]),
    impact=st.floats(min_value=0.0, max_value=2.0),
    liquidity=st.sampled_from(["maker", "taker"]),
)
def test_the_paper_venue_path_and_the_vectorised_path_give_identical_fills(
    orders, lot_size, min_notional, impact, liquidity
):
    model = CostModel(lot_size=lot_size, min_notional=min_notional, impact_coefficient=impact)
    quantity, price, volatility, volume = (np.array(column) for column in zip(*orders, strict=True))
    many = fill_arrays(quantity, price, volatility, volume, model, liquidity)
    for i, (q, p, v, b) in enumerate(orders):
        one = fill(q, MarketState(p, v, b), model, liquidity)
        if one is None:
            assert not many.filled[i]
            continue
        assert many.filled[i]
        # Bit-identical, not merely close: the backtest must predict exactly what the venue does.
        assert (one.quantity, one.price, one.fee, one.slippage_cost) == (
            many.quantity[i],
            many.price[i],
            many.fee[i],
            many.slippage_cost[i],
        )
        assert abs(one.quantity) <= abs(q)
