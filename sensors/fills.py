"""The new-fills sensor: the execution service's fills into ``trade_fills`` and ``trade_feedback``.

Each tick reads the fills stream after its cursor (a stream id, ``sapphire_bus.reader``). New
fills request one run of ``fills_to_warehouse`` over the days they fall on, configured to read
after the same stream id, with run key ``fills:<after>..<last id read>``; the cursor then moves
to the last id read. The run reads the stream to its end and merges by ``fill_id`` into what is
stored, so a fill is neither skipped nor stored twice, across restarts of the daemon too: the
cursor is Dagster's. Should that run fail, the next one reads again from where the failed one
began (with the next new fill, so under a new run key). Malformed entries are reported and
passed: the cursor never sticks on them.

Cursor (JSON): ``read`` the last id read, ``after`` where the last requested run began.
"""

import json
from datetime import date

import dagster as dg
import redis
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition
from dagster._core.storage.tags import RUN_KEY_TAG, SENSOR_NAME_TAG

from resources.bus import BusResource
from sapphire_bus.reader import START, read_after
from sapphire_domain.messages import FILLS_STREAM, Fill
from sapphire_domain.settings import LiveSettings, UniverseSettings
from sensors.jobs import load_cursor, range_tags, unfinished_run

NAME = "new_fills"
# Entries read per evaluation: a backlog is taken in bounded steps, each its own run.
MAX_ENTRIES = 5000
PAGE = 1000


def build_new_fills_sensor(
    universe: UniverseSettings, live: LiveSettings, job: UnresolvedAssetJobDefinition
) -> dg.SensorDefinition:
    first_day = universe.start
    last_day = universe.end.fromordinal(universe.end.toordinal() - 1) if universe.end else None

    def clamp(day: date) -> date:
        day = max(day, first_day)
        return min(day, last_day) if last_day else day

    @dg.sensor(
        name=NAME,
        job=job,
        minimum_interval_seconds=live.sensor_interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"trade_fills and trade_feedback for the new entries of {FILLS_STREAM}",
    )
    def new_fills(
        context: dg.SensorEvaluationContext, bus: BusResource
    ) -> dg.SensorResult | dg.SkipReason:
        busy = unfinished_run(context.instance, NAME)
        if busy:
            return dg.SkipReason(f"run {busy} has not finished; new fills wait for it")
        state = load_cursor(context)
        after = _resume_from(context.instance, state)
        client = bus.client()
        fills: list[Fill] = []
        cursor, read = after, 0
        try:
            while read < MAX_ENTRIES:
                batch = read_after(client, cursor, stream=FILLS_STREAM, count=PAGE)
                if batch.cursor == cursor:
                    break
                read += len(batch.messages) + len(batch.dead_letters)
                for entry_id, message in batch.messages:
                    if isinstance(message, Fill):
                        fills.append(message)
                    else:
                        context.log.warning(
                            f"{FILLS_STREAM} {entry_id}: a {message.kind}, not a fill"
                        )
                for letter in batch.dead_letters:
                    context.log.warning(f"{FILLS_STREAM} {letter.entry_id}: {letter.reason}")
                cursor = batch.cursor
        except redis.RedisError as error:
            return dg.SkipReason(f"the bus is unavailable ({error}); the cursor stays")
        finally:
            client.close()
        if not fills:
            reason = (
                f"no new fills after {after}"
                if cursor == after
                else f"{read} entries after {after}, none of them a valid fill"
            )
            # Nothing (more) to store up to here: the entries read are passed for good.
            return dg.SensorResult(
                skip_reason=reason, cursor=json.dumps({"read": cursor, "after": cursor})
            )
        days = sorted({clamp(f.ts.date()) for f in fills})
        request = dg.RunRequest(
            run_key=_run_key(after, cursor),
            run_config={"ops": {"trade_fills": {"config": {"after": after}}}},
            tags={
                **range_tags(days[0].isoformat(), days[-1].isoformat()),
                "sapphire/fills": str(len(fills)),
            },
        )
        return dg.SensorResult(
            run_requests=[request], cursor=json.dumps({"read": cursor, "after": after})
        )

    return new_fills


def _run_key(after: str, last: str) -> str:
    return f"fills:{after}..{last}"


def _resume_from(instance: dg.DagsterInstance, state: dict[str, str]) -> str:
    """Where the next read begins: after the last id read once the run that stores it has
    succeeded; where that run began if it failed or never ran."""
    read, began = state.get("read"), state.get("after", START)
    if read is None:
        return START
    if read == began:  # nothing was requested since the last success
        return read
    runs = instance.get_run_records(
        dg.RunsFilter(tags={RUN_KEY_TAG: _run_key(began, read), SENSOR_NAME_TAG: NAME}), limit=1
    )
    if runs and runs[0].dagster_run.status == dg.DagsterRunStatus.SUCCESS:
        return read
    return began
