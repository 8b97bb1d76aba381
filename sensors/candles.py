"""The new-candles sensor: what the clock has made due on the daily partitions.

Each tick reads "now" from the market data resource (the replay clock in the embedded default,
the exchange's clock for a live ccxt exchange) and requests at most one run, in this order:

1. **Catch-up.** Completed days whose ``features`` are not materialised, and the day the live
   loop left before its last candle, as ONE run over the whole range (single-run backfill).
2. **Bootstrap.** An agent without a champion: ``retrain_agents`` once (the run key names the
   day, so a failed bootstrap is retried the next simulated day, not every tick).
3. **Live.** The day of the latest closed candle, re-materialised from candles to the published
   target whenever a new candle has closed: run key ``live:<candle open time>``.

While a run of this sensor is queued or running it requests nothing and keeps its cursor, so
runs never pile up: a slow run coalesces the candles that closed meanwhile into the next one.
Cursor (JSON): ``live_ts`` the open time (epoch ms) of the last candle a live run was requested
for, ``open_day`` the partition of that run until it is known to be complete.
"""

import json
from datetime import UTC, datetime

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from resources.market_data import MarketDataResource
from resources.model_store import ModelStoreResource
from sapphire_domain.agents.specs import AGENTS
from sapphire_domain.settings import LiveSettings, UniverseSettings
from sapphire_domain.timeframes import timeframe_ms
from sensors.jobs import (
    LIVE_LOOP,
    MARKET_HISTORY,
    REASON_TAG,
    RETRAIN_AGENTS,
    day_key,
    day_start_ms,
    days_between,
    load_cursor,
    range_tags,
    unfinished_run,
)

NAME = "new_candles"
DAY_MS = 86_400_000
# The close time of the candle a live run was requested for: where latency is measured from.
CANDLE_CLOSE_TAG = "sapphire/candle_close"


def _iso(moment_ms: int) -> str:
    return datetime.fromtimestamp(moment_ms / 1000, tz=UTC).isoformat()


def build_new_candles_sensor(
    universe: UniverseSettings, live: LiveSettings, jobs: list[UnresolvedAssetJobDefinition]
) -> dg.SensorDefinition:
    """``jobs``: the market_history, live_loop and retrain_agents jobs it launches."""
    step = timeframe_ms(universe.timeframe)
    first_day = universe.start.isoformat()
    start_ms = day_start_ms(first_day)
    end_ms = day_start_ms(universe.end.isoformat()) if universe.end else None
    features = dg.AssetKey("features")

    @dg.sensor(
        name=NAME,
        jobs=jobs,
        minimum_interval_seconds=live.sensor_interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Requests the catch-up, the models' bootstrap and a live run per new candle.",
    )
    def new_candles(
        context: dg.SensorEvaluationContext,
        market_data: MarketDataResource,
        model_store: ModelStoreResource,
    ) -> dg.SensorResult | dg.SkipReason:
        busy = unfinished_run(context.instance, NAME)
        if busy:
            return dg.SkipReason(f"run {busy} has not finished; candles meanwhile coalesce")
        cursor = load_cursor(context)
        now = market_data.source().now_ms()
        last_open = now - now % step - step  # the latest candle that has closed by now
        if end_ms is not None:
            last_open = min(last_open, end_ms - step)
        if last_open < start_ms:
            return dg.SkipReason(f"no candle of the universe has closed yet (now {_iso(now)})")
        live_day = day_key(last_open)

        done = context.instance.get_materialized_partitions(features)
        behind = [day for day in days_between(first_day, live_day) if day not in done]
        open_day = cursor.get("open_day")
        if open_day and open_day < live_day:
            last_of_day = day_start_ms(open_day) + DAY_MS - step
            if cursor.get("live_ts", 0) < last_of_day:
                behind.append(open_day)  # left before its last candle: finish it
            cursor["open_day"] = None
        if behind:
            first, last = min(behind), max(behind)
            request = dg.RunRequest(
                job_name=MARKET_HISTORY,
                run_key=f"history:{first}..{last}",
                tags=range_tags(first, last),
            )
            return dg.SensorResult(run_requests=[request], cursor=json.dumps(cursor))

        store = model_store.store()
        untrained = [agent for agent in AGENTS if store.champion(agent) is None]
        if untrained:
            request = dg.RunRequest(
                job_name=RETRAIN_AGENTS,
                run_key=f"bootstrap:{live_day}",
                tags={REASON_TAG: f"bootstrap: no champion for {', '.join(untrained)}"},
            )
            return dg.SensorResult(run_requests=[request], cursor=json.dumps(cursor))

        if cursor.get("live_ts") is not None and last_open <= cursor["live_ts"]:
            return dg.SensorResult(
                skip_reason=f"no candle has closed since {_iso(cursor['live_ts'] + step)}",
                cursor=json.dumps(cursor),
            )
        request = dg.RunRequest(
            job_name=LIVE_LOOP,
            partition_key=live_day,
            run_key=f"live:{_iso(last_open)}",
            tags={CANDLE_CLOSE_TAG: _iso(last_open + step)},
        )
        return dg.SensorResult(
            run_requests=[request],
            cursor=json.dumps({"live_ts": last_open, "open_day": live_day}),
        )

    return new_candles
