"""Bus messages round-trip exactly, and malformed entries are refused with their reason."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sapphire_domain.messages import (
    Fill,
    MalformedMessageError,
    OrderEvent,
    OrderStatus,
    RiskEvent,
    Side,
    TargetPortfolio,
    TargetPosition,
    TradingState,
    decode,
    encode,
)

NOW = datetime(2019, 6, 1, 12, tzinfo=UTC)


def target(**changes) -> TargetPortfolio:
    fields = {
        "version": 7,
        "created_at": NOW,
        "valid_until": NOW + timedelta(minutes=30),
        "positions": [TargetPosition(symbol="BTC/USD", weight=0.25)],
        "model_versions": {"momentum": "momentum-0003"},
        "partitions": {"features": "2019-06-01"},
    }
    return TargetPortfolio(**{**fields, **changes})


@given(
    version=st.integers(min_value=1, max_value=2**53),
    weights=st.dictionaries(
        st.sampled_from(["BTC/USD", "ETH/USD", "XRP/USD", "EOS/USD"]),
        st.floats(min_value=-3, max_value=3, allow_nan=False),
    ),
    minutes=st.integers(min_value=1, max_value=10_000),
)
def test_targets_round_trip_through_the_bus_encoding(version, weights, minutes):
    message = target(
        version=version,
        valid_until=NOW + timedelta(minutes=minutes),
        positions=[TargetPosition(symbol=s, weight=w) for s, w in weights.items()],
    )
    assert decode(encode(message)) == message


def test_every_kind_round_trips_also_from_the_bytes_redis_returns():
    messages = [
        target(),
        Fill(
            fill_id="f1", client_order_id="t7-BTC/USD", target_version=7, symbol="BTC/USD",
            side=Side.BUY, quantity=0.5, price=8000.0, fee=2.0, liquidity="taker",
            venue="paper", ts=NOW,
        ),
        OrderEvent(
            client_order_id="t7-BTC/USD", target_version=7, symbol="BTC/USD", side=Side.SELL,
            quantity=1.0, status=OrderStatus.DENIED, reason="MAX_NOTIONAL", ts=NOW,
        ),
        RiskEvent(
            state=TradingState.HALTED, previous_state=TradingState.ACTIVE,
            reason="MAX_DRAWDOWN", ts=NOW, detail={"drawdown": 0.21},
        ),
    ]  # fmt: skip
    for message in messages:
        raw = {k.encode(): v.encode() for k, v in encode(message).items()}
        assert decode(raw) == message


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"kind": "pizza", "schema_version": "1", "payload": "{}"}, "unknown message kind"),
        ({"kind": "fill", "schema_version": "99", "payload": "{}"}, "schema version"),
        ({"kind": "fill", "schema_version": "1"}, "no payload"),
        ({"kind": "fill", "schema_version": "1", "payload": "{not json"}, "not JSON"),
        ({"kind": "fill", "schema_version": "1", "payload": "[1, 2]"}, "does not describe"),
        ({"kind": "fill", "schema_version": "1", "payload": '{"price": -1}'}, "price"),
    ],
)
def test_malformed_entries_are_refused_with_their_reason(fields, reason):
    with pytest.raises(MalformedMessageError, match=reason):
        decode(fields)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"valid_until": NOW - timedelta(seconds=1)}, "valid_until"),
        ({"version": 0}, "version"),
        ({"positions": [TargetPosition(symbol="X/USD", weight=0.1)] * 2}, "more than once"),
        ({"created_at": datetime(2019, 6, 1)}, "created_at"),
    ],
)
def test_inconsistent_targets_cannot_be_built(changes, reason):
    with pytest.raises(ValueError, match=reason):
        target(**changes)


def test_weights_that_are_not_finite_are_refused():
    with pytest.raises(ValueError, match="finite"):
        TargetPosition(symbol="BTC/USD", weight=float("nan"))
