"""The risk-events sensor: the execution service's trading state, recorded in Dagster.

Each tick reads the risk stream after its cursor (a stream id) and records every risk event as
an ``AssetObservation`` of the external asset ``execution_state``: the state (ACTIVE, REDUCING,
HALTED), the state before, the reason and the time. A HALT thus shows in the asset's history
with its reason. The gate itself is in ``target_portfolio``, which publishes nothing while the
latest risk event says HALTED, so a manual materialisation is gated as well as the live loop.
Malformed entries are reported and passed: the cursor never sticks on them.
"""

import dagster as dg
import redis

from resources.bus import BusResource
from sapphire_bus.reader import START, read_after
from sapphire_domain.messages import RISK_STREAM, RiskEvent, TradingState
from sapphire_domain.settings import LiveSettings

NAME = "risk_events"
EXECUTION_STATE = dg.AssetKey("execution_state")
PAGE = 1000

# An external asset: nothing in Dagster materialises it, the sensor observes it.
execution_state = dg.AssetsDefinition(
    specs=[
        dg.AssetSpec(
            EXECUTION_STATE,
            group_name="trades",
            kinds={"redis"},
            description="The execution service's trading state (ACTIVE, REDUCING or HALTED), "
            f"observed from its risk events on {RISK_STREAM} by the {NAME} sensor.",
        )
    ]
)


def observation(entry_id: str, event: RiskEvent) -> dg.AssetObservation:
    return dg.AssetObservation(
        asset_key=EXECUTION_STATE,
        description=f"{event.previous_state.value} -> {event.state.value}: {event.reason}",
        metadata={
            "state": event.state.value,
            "previous_state": event.previous_state.value,
            "reason": event.reason,
            "ts": event.ts.isoformat(),
            "stream_id": entry_id,
            "detail": dg.MetadataValue.json(event.detail),
        },
    )


def build_risk_events_sensor(live: LiveSettings) -> dg.SensorDefinition:
    @dg.sensor(
        name=NAME,
        minimum_interval_seconds=live.sensor_interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Records the risk events of {RISK_STREAM} on execution_state.",
    )
    def risk_events(
        context: dg.SensorEvaluationContext, bus: BusResource
    ) -> dg.SensorResult | dg.SkipReason:
        after = context.cursor or START
        client = bus.client()
        try:
            batch = read_after(client, after, stream=RISK_STREAM, count=PAGE)
        except redis.RedisError as error:
            return dg.SkipReason(f"the bus is unavailable ({error}); the cursor stays at {after}")
        finally:
            client.close()
        observed = []
        for entry_id, message in batch.messages:
            if not isinstance(message, RiskEvent):
                context.log.warning(f"{RISK_STREAM} {entry_id}: a {message.kind}, not a risk event")
                continue
            observed.append(observation(entry_id, message))
            log = context.log.warning if message.state is TradingState.HALTED else context.log.info
            log(f"execution service {message.state.value}: {message.reason}")
        for letter in batch.dead_letters:
            context.log.warning(f"{RISK_STREAM} {letter.entry_id}: {letter.reason}")
        if batch.cursor == after:
            return dg.SkipReason(f"no risk events after {after}")
        return dg.SensorResult(
            asset_events=observed,
            cursor=batch.cursor,
            skip_reason=None if observed else "only malformed entries; passed",
        )

    return risk_events
