"""The order manager's plan: from a target portfolio and positions to lot-rounded orders."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sapphire_domain.errors import SapphireError
from sapphire_domain.messages import Side, TargetPortfolio, TargetPosition
from sapphire_domain.orders import (
    OrderIntent,
    OrderPlanningError,
    client_order_id,
    plan_orders,
    target_version_of,
)

CREATED = datetime(2026, 11, 22, tzinfo=UTC)


def target(weights: dict[str, float], version: int = 7) -> TargetPortfolio:
    return TargetPortfolio(
        version=version,
        created_at=CREATED,
        valid_until=CREATED + timedelta(minutes=5),
        positions=tuple(TargetPosition(symbol=s, weight=w) for s, w in weights.items()),
    )


def plan(
    weights: dict[str, float],
    positions: dict[str, float] | None = None,
    prices: dict[str, float] | None = None,
    equity: float = 10_000.0,
    *,
    lot: float | dict[str, float] = 0.001,
    band: float = 0.0,
    min_notional: float = 0.0,
) -> list[OrderIntent]:
    return plan_orders(
        target(weights),
        positions or {},
        prices if prices is not None else {"BTC/USDT": 50_000.0, "ETH/USDT": 2_500.0},
        equity,
        lot_sizes=lot,
        no_trade_band=band,
        min_notional=min_notional,
    )


def by_symbol(orders: list[OrderIntent]) -> dict[str, OrderIntent]:
    return {o.symbol: o for o in orders}


def test_a_target_from_flat_buys_weight_times_equity_over_price():
    orders = by_symbol(plan({"BTC/USDT": 0.5, "ETH/USDT": -0.25}))
    assert orders["BTC/USDT"].side is Side.BUY
    assert orders["BTC/USDT"].quantity == pytest.approx(0.1)
    assert orders["ETH/USDT"].side is Side.SELL
    assert orders["ETH/USDT"].quantity == pytest.approx(1.0)
    assert not any(o.reduces_exposure for o in orders.values())


def test_only_the_difference_to_the_current_position_is_traded():
    (order,) = plan({"BTC/USDT": 0.5}, {"BTC/USDT": 0.06})
    assert order.side is Side.BUY
    assert order.quantity == pytest.approx(0.04)


def test_a_smaller_target_sells_down_and_the_order_reduces_exposure():
    (order,) = plan({"BTC/USDT": 0.1}, {"BTC/USDT": 0.1})
    assert order.side is Side.SELL
    assert order.quantity == pytest.approx(0.08)
    assert order.reduces_exposure


def test_a_difference_inside_the_no_trade_band_is_not_traded():
    # 0.002 BTC short of target is 100 USDT, 1% of equity: inside a 2% band, outside a 0.5% one.
    assert plan({"BTC/USDT": 0.5}, {"BTC/USDT": 0.098}, band=0.02) == []
    assert len(plan({"BTC/USDT": 0.5}, {"BTC/USDT": 0.098}, band=0.005)) == 1


def test_quantities_are_rounded_toward_zero_to_the_lot_size():
    # 0.3 * 10_000 / 2_500 = 1.2 ETH; lots of 0.5 give 1.0, never 1.5.
    (buy,) = plan({"ETH/USDT": 0.3}, lot=0.5)
    assert buy.quantity == pytest.approx(1.0)
    (sell,) = plan({"ETH/USDT": -0.3}, lot=0.5)
    assert sell.side is Side.SELL
    assert sell.quantity == pytest.approx(1.0)


def test_lot_sizes_can_differ_per_symbol():
    orders = by_symbol(
        plan({"BTC/USDT": 0.5, "ETH/USDT": 0.3}, lot={"BTC/USDT": 0.03, "ETH/USDT": 1.0})
    )
    assert orders["BTC/USDT"].quantity == pytest.approx(0.09)
    assert orders["ETH/USDT"].quantity == pytest.approx(1.0)


def test_a_difference_smaller_than_one_lot_gives_no_order():
    assert plan({"ETH/USDT": 0.1}, lot=1.0) == []  # 0.4 ETH wanted, lots of 1


def test_an_order_below_the_minimum_notional_is_dropped():
    assert plan({"ETH/USDT": 0.0004}, min_notional=5.0) == []  # 4 USDT
    assert len(plan({"ETH/USDT": 0.0006}, min_notional=5.0)) == 1  # 6 USDT


def test_a_symbol_held_but_absent_from_the_target_is_closed():
    (order,) = plan({}, {"ETH/USDT": 2.0})
    assert order.symbol == "ETH/USDT"
    assert order.side is Side.SELL
    assert order.quantity == pytest.approx(2.0)
    assert order.reduces_exposure


def test_closing_a_position_ignores_the_no_trade_band():
    # 0.01 ETH is 25 USDT, far inside a 5% band, but a target of zero means flat.
    (order,) = plan({"ETH/USDT": 0.0}, {"ETH/USDT": 0.01}, band=0.05)
    assert order.quantity == pytest.approx(0.01)


def test_a_short_position_is_bought_back_when_dropped_from_the_target():
    (order,) = plan({}, {"BTC/USDT": -0.2})
    assert order.side is Side.BUY
    assert order.quantity == pytest.approx(0.2)
    assert order.reduces_exposure


def test_an_order_that_crosses_zero_is_split_into_a_reducing_and_an_opening_leg():
    # long 1 ETH, target short 1.2 ETH: sell 1 to flat (reducing), then sell 1.2 (opening).
    orders = plan({"ETH/USDT": -0.3}, {"ETH/USDT": 1.0})
    assert [(o.side, o.reduces_exposure) for o in orders] == [
        (Side.SELL, True),
        (Side.SELL, False),
    ]
    assert orders[0].quantity == pytest.approx(1.0)
    assert orders[1].quantity == pytest.approx(1.2)
    assert orders[0].client_order_id != orders[1].client_order_id


def test_reducing_orders_come_first():
    orders = plan({"BTC/USDT": 0.5}, {"ETH/USDT": 1.0})
    assert [o.symbol for o in orders] == ["ETH/USDT", "BTC/USDT"]
    assert orders[0].reduces_exposure


def test_weights_summing_to_a_leverage_give_that_gross_notional():
    prices = {"BTC/USDT": 50_000.0, "ETH/USDT": 2_500.0, "SOL/USDT": 125.0}
    orders = plan({"BTC/USDT": 1.0, "ETH/USDT": 0.5, "SOL/USDT": -0.5}, prices=prices, lot=1e-6)
    notionals = {o.symbol: o.quantity * o.reference_price for o in orders}
    assert notionals == pytest.approx({"BTC/USDT": 10_000, "ETH/USDT": 5_000, "SOL/USDT": 5_000})
    assert sum(notionals.values()) == pytest.approx(2.0 * 10_000)


def test_client_order_ids_come_from_the_target_version_and_symbol():
    assert client_order_id(12, "BTC/USDT:USDT") == "t12-BTC_USDT.USDT"
    assert client_order_id(12, "BTC/USDT:USDT", opening_leg=True) == "t12o-BTC_USDT.USDT"
    (order,) = plan({"BTC/USDT": 0.5})
    assert order.client_order_id == "t7-BTC_USDT"
    assert order.target_version == 7


def test_the_target_version_is_read_back_from_a_client_order_id():
    assert target_version_of("t12-BTC_USDT.USDT") == 12
    assert target_version_of("t12o-BTC_USDT.USDT") == 12
    for foreign in ("x12-BTC", "t-BTC", "t012-BTC", "t12", "manual-order"):
        with pytest.raises(OrderPlanningError, match="not a Sapphire client order id"):
            target_version_of(foreign)


def test_a_symbol_that_cannot_make_a_client_order_id_is_refused():
    with pytest.raises(OrderPlanningError, match="client order id"):
        client_order_id(1, "BTC USDT")


def test_the_same_inputs_give_identical_orders():
    args = ({"BTC/USDT": 0.5, "ETH/USDT": -0.3}, {"ETH/USDT": 1.0, "SOL/USDT": 3.0})
    prices = {"BTC/USDT": 50_000.0, "ETH/USDT": 2_500.0, "SOL/USDT": 125.0}
    assert plan(*args, prices=prices) == plan(*args, prices=prices)


def test_no_price_is_needed_for_a_symbol_that_will_not_trade():
    assert plan({"DOGE/USDT": 0.0}, prices={}) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prices": {}}, "no price for BTC/USDT"),
        ({"prices": {"BTC/USDT": 0.0}}, "price of BTC/USDT must be positive"),
        ({"prices": {"BTC/USDT": float("nan")}}, "price of BTC/USDT must be positive"),
        ({"equity": 0.0}, "equity must be positive"),
        ({"equity": float("inf")}, "equity must be positive"),
        ({"positions": {"BTC/USDT": float("nan")}}, "position of BTC/USDT is not finite"),
        ({"lot": {"ETH/USDT": 0.1}}, "no lot size for BTC/USDT"),
        ({"lot": -1.0}, "lot size of every symbol"),
        ({"band": -0.1}, "no_trade_band"),
        ({"min_notional": float("nan")}, "min_notional"),
    ],
)
def test_bad_input_is_named_and_plans_nothing(kwargs, message):
    with pytest.raises(OrderPlanningError, match=message) as raised:
        plan({"BTC/USDT": 0.5}, **kwargs)
    assert isinstance(raised.value, SapphireError)


# -- properties ----------------------------------------------------------------------------

SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT:USDT", "DOGE/USDT")
weights_st = st.dictionaries(st.sampled_from(SYMBOLS), st.floats(-1.5, 1.5), max_size=4)
positions_st = st.dictionaries(st.sampled_from(SYMBOLS), st.floats(-50, 50), max_size=4)
prices_st = st.fixed_dictionaries({s: st.floats(0.05, 100_000) for s in SYMBOLS})


@settings(deadline=None)  # no timings in tests; a loaded CI box is slow
@given(
    weights_st,
    positions_st,
    prices_st,
    st.floats(100, 1e6),
    st.sampled_from([0.0, 1e-6, 0.001, 0.1, 1.0]),
    st.floats(0, 0.05),
    st.floats(0, 20),
)
def test_executing_the_plan_lands_within_one_lot_and_the_band_of_the_target(
    weights, positions, prices, equity, lot, band, min_notional
):
    orders = plan_orders(
        target(weights),
        positions,
        prices,
        equity,
        lot_sizes=lot,
        no_trade_band=band,
        min_notional=min_notional,
    )
    after = dict(positions)
    for order in orders:
        assert order.quantity > 0
        assert order.quantity * order.reference_price >= min_notional
        after[order.symbol] = after.get(order.symbol, 0.0) + order.signed_quantity
    for symbol in set(weights) | set(positions):
        price = prices[symbol]
        wanted = weights.get(symbol, 0.0) * equity / price
        miss = abs(after.get(symbol, 0.0) - wanted) * price
        # one lot from rounding the whole difference; each leg of a split may fall below the minimum
        tolerance = lot * price + 2 * min_notional + band * equity
        assert miss <= tolerance * (1 + 1e-9) + 1e-6


@settings(deadline=None)  # no timings in tests; a loaded CI box is slow
@given(weights_st, positions_st, prices_st)
def test_a_reducing_order_never_crosses_zero(weights, positions, prices):
    orders = plan_orders(
        target(weights), positions, prices, 10_000.0, lot_sizes=0.01, no_trade_band=0.0,
        min_notional=0.0,
    )  # fmt: skip
    for order in orders:
        if order.reduces_exposure:
            held = positions[order.symbol]
            assert (held > 0) == (order.side is Side.SELL)
            assert order.quantity <= abs(held) * (1 + 1e-9)


symbol_st = st.from_regex(
    r"[A-Za-z0-9]{1,6}(/[A-Za-z0-9]{1,6}(:[A-Za-z0-9]{1,6})?)?", fullmatch=True
)


@settings(deadline=None)  # no timings in tests; a loaded CI box is slow
@given(
    st.integers(1, 10**6), symbol_st, st.booleans(), st.integers(1, 10**6), symbol_st, st.booleans()
)
def test_client_order_ids_differ_whenever_version_symbol_or_leg_differ(v1, s1, leg1, v2, s2, leg2):
    assume((v1, s1, leg1) != (v2, s2, leg2))
    first = client_order_id(v1, s1, opening_leg=leg1)
    assert first != client_order_id(v2, s2, opening_leg=leg2)
    assert target_version_of(first) == v1
