"""``RiskEngine.check_plan``, which the service's decision path uses, decides exactly as
``check`` called order by order on the projected positions, the old way (gross exposure near
its limit and symbols without a usable price included)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from sapphire_domain.messages import Side, TargetPortfolio, TargetPosition
from sapphire_domain.orders import OrderIntent
from sapphire_domain.risk import RiskConfig, RiskDecision, RiskEngine

NOW = 1_700_000_000_000
SYMBOLS = [f"S{i}/USDT" for i in range(8)]
TARGET = TargetPortfolio(
    version=3,
    created_at=datetime.fromtimestamp(NOW / 1000, tz=UTC),
    valid_until=datetime.fromtimestamp(NOW / 1000, tz=UTC) + timedelta(hours=1),
    positions=tuple(TargetPosition(symbol=s, weight=0.1) for s in SYMBOLS),
)
prices_st = st.one_of(
    st.floats(1.0, 1000.0),
    st.sampled_from([math.nan, 0.0, -1.0, math.inf]),  # unusable: fail closed
)


def _one_by_one(engine: RiskEngine, orders: list[OrderIntent], **kw) -> list[RiskDecision]:
    projected = dict(kw.pop("positions"))
    prices, times = kw.pop("prices"), kw.pop("price_times")
    decisions = []
    for order in orders:
        decision = engine.check(
            order, market_price=prices.get(order.symbol, math.nan),
            price_ts_ms=times.get(order.symbol, 0), positions=projected, prices=prices, **kw,
        )  # fmt: skip
        if decision.approved:
            projected[order.symbol] = projected.get(order.symbol, 0.0) + order.signed_quantity
        decisions.append(decision)
    return decisions


@settings(max_examples=400, deadline=None)
@given(
    held=st.dictionaries(st.sampled_from(SYMBOLS), st.floats(-50.0, 50.0), max_size=8),
    prices=st.dictionaries(st.sampled_from(SYMBOLS), prices_st, min_size=6, max_size=8),
    orders=st.lists(
        st.tuples(st.sampled_from(SYMBOLS), st.sampled_from(Side), st.floats(0.001, 40.0)),
        max_size=12,
    ),
    limit_at=st.integers(0, 12),
    nudge=st.sampled_from([-1e-12, -1e-15, 0.0, 1e-15, 1e-12, 0.3]),
)
def test_check_plan_decides_as_check_does_order_by_order(held, prices, orders, limit_at, nudge):
    equity = 10_000.0
    intents = [
        OrderIntent(f"t3-{i}", 3, symbol, side, quantity, prices.get(symbol, 1.0), False)
        for i, (symbol, side, quantity) in enumerate(orders)
    ]
    # Put the gross limit at (or a hair off) the exposure some prefix of the plan reaches, so
    # that the running sum must hand over to the exact one.
    projected = dict(held)
    for intent in intents[:limit_at]:
        projected[intent.symbol] = projected.get(intent.symbol, 0.0) + intent.signed_quantity
    reached = sum(abs(q) * p for s, q in projected.items() if 0 < (p := prices.get(s, 0)) < 1e300)
    limit = max(reached / equity * (1 + nudge), 1e-6)
    config = RiskConfig(
        max_order_notional=1e9, max_position_notional=1e9, max_gross_exposure=limit,
        max_orders_per_interval=1000, min_notional=0.0, price_collar_bps=1e9,
    )  # fmt: skip
    times = dict.fromkeys(SYMBOLS, NOW)
    common = {"target": TARGET, "now_ms": NOW, "equity": equity}
    planned = RiskEngine(config).check_plan(
        intents, price_times=times, positions=held, prices=prices, **common
    )
    expected = _one_by_one(
        RiskEngine(config), intents, positions=held, prices=prices, price_times=times, **common
    )
    assert planned == expected
