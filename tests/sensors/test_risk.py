"""The risk-events sensor and the bus's view of the trading state, on a real Redis."""

from datetime import UTC, datetime

import dagster as dg

from resources.bus import BusResource
from sapphire_domain.messages import RISK_STREAM, RiskEvent, TradingState
from sensors.risk import EXECUTION_STATE, NAME

AT = datetime(2019, 5, 20, 12, 0, tzinfo=UTC)


def event(state: TradingState, previous: TradingState, reason: str) -> RiskEvent:
    return RiskEvent(state=state, previous_state=previous, reason=reason, ts=AT)


def test_a_halt_and_its_resume_are_observed_on_execution_state_with_their_reasons(live_platform):
    platform, loop = live_platform, live_platform.loop
    halt = platform.publish(
        RISK_STREAM, event(TradingState.HALTED, TradingState.ACTIVE, "MANUAL_HALT: operator")
    )
    platform.redis.xadd(RISK_STREAM, {"kind": "risk_event", "schema_version": "9", "payload": "{}"})
    resume = platform.publish(
        RISK_STREAM, event(TradingState.ACTIVE, TradingState.HALTED, "RESET: operator")
    )
    data = loop.tick(NAME)
    assert data.cursor == resume  # past the malformed entry too
    observed = [(e.metadata["state"].value, e.metadata["reason"].value) for e in data.asset_events]
    assert observed == [("HALTED", "MANUAL_HALT: operator"), ("ACTIVE", "RESET: operator")]
    assert data.asset_events[0].metadata["stream_id"].value == halt

    records = platform.instance.fetch_observations(EXECUTION_STATE, limit=10).records
    assert [r.asset_observation.metadata["state"].value for r in records] == ["ACTIVE", "HALTED"]
    again = loop.tick(NAME)  # read once: a later tick sees nothing new
    assert not again.asset_events and "no risk events after" in again.skip_message


def test_the_trading_state_is_the_latest_valid_risk_event(live_platform, redis_server):
    platform = live_platform
    bus = BusResource(url=redis_server.url)
    assert bus.latest_risk_event() is None  # the service starts ACTIVE
    platform.publish(RISK_STREAM, event(TradingState.HALTED, TradingState.ACTIVE, "DRAWDOWN: 6%"))
    platform.redis.xadd(RISK_STREAM, {"kind": "risk_event", "payload": "not json"})
    latest = bus.latest_risk_event()
    assert latest is not None and latest.state is TradingState.HALTED
    assert latest.reason == "DRAWDOWN: 6%"


def test_execution_state_is_an_asset_of_the_code_location(live_platform):
    specs = {s.key for s in live_platform.defs.resolve_all_asset_specs()}
    assert EXECUTION_STATE in specs
    assert isinstance(live_platform.defs.resolve_sensor_def(NAME), dg.SensorDefinition)
