"""The new-fills sensor on a real instance and a real Redis: runs, cursors, restarts, faults."""

import json
import uuid
from datetime import UTC, datetime, timedelta

import dagster as dg
from dagster._core.storage.tags import SENSOR_NAME_TAG

from sapphire_domain.messages import FILLS_STREAM, Fill, Side
from sensors.fills import NAME
from sensors.jobs import FILLS_TO_WAREHOUSE

T0 = datetime(2019, 5, 20, 10, 0, tzinfo=UTC)


def fill(n: int, at: datetime = T0) -> Fill:
    return Fill(
        fill_id=f"f-{n}", client_order_id=f"o-{n}", target_version=1, symbol="BTC/USD",
        side=Side.BUY, quantity=0.1, price=8000.0, fee=0.4, liquidity="taker", venue="paper",
        ts=at + timedelta(minutes=n),
    )  # fmt: skip


def store_fills(platform, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
    """The requested run's trade_fills step, for real (trade_feedback needs the whole chain
    upstream, which the end-to-end test has)."""
    job = platform.defs.resolve_job_def(FILLS_TO_WAREHOUSE)
    return job.execute_in_process(
        instance=platform.instance,
        run_config=request.run_config,
        tags={**request.tags, SENSOR_NAME_TAG: NAME, "dagster/run_key": request.run_key},
        asset_selection=[dg.AssetKey("trade_fills")],
    )


def stored_ids(platform) -> list[str]:
    table = platform.table("trade_fills")
    return sorted(table["fill_id"].to_list()) if table.height else []


def test_new_fills_are_stored_once_each_across_a_restart_of_the_daemon(live_platform):
    platform, loop = live_platform, live_platform.loop
    first = [platform.publish(FILLS_STREAM, fill(n)) for n in range(3)]

    data = loop.tick(NAME)
    (request,) = data.run_requests
    assert request.run_key == f"fills:0-0..{first[-1]}"
    assert request.run_config == {"ops": {"trade_fills": {"config": {"after": "0-0"}}}}
    assert request.tags["dagster/asset_partition_range_start"] == "2019-05-20"
    assert json.loads(data.cursor) == {"read": first[-1], "after": "0-0"}
    assert store_fills(platform, request).success

    # The daemon restarts: a fresh evaluation context with only the stored cursor.
    assert not loop.tick(NAME).run_requests  # nothing new, nothing read again
    later = [platform.publish(FILLS_STREAM, fill(n, T0 + timedelta(days=1))) for n in (3, 4)]
    restarted = loop.tick(NAME)
    (again,) = restarted.run_requests
    assert again.run_config["ops"]["trade_fills"]["config"]["after"] == first[-1]
    assert again.tags["dagster/asset_partition_range_start"] == "2019-05-21"
    assert json.loads(restarted.cursor)["read"] == later[-1]
    assert store_fills(platform, again).success
    assert stored_ids(platform) == ["f-0", "f-1", "f-2", "f-3", "f-4"]


def test_a_failed_run_is_read_again_from_where_it_began(live_platform):
    platform, loop = live_platform, live_platform.loop
    platform.publish(FILLS_STREAM, fill(0))
    (lost,) = loop.tick(NAME).run_requests
    failed = dg.DagsterRun(
        job_name=FILLS_TO_WAREHOUSE, run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.FAILURE,
        tags={SENSOR_NAME_TAG: NAME, "dagster/run_key": lost.run_key},
    )  # fmt: skip
    platform.instance.add_run(failed)
    newest = platform.publish(FILLS_STREAM, fill(1))
    (retry,) = loop.tick(NAME).run_requests
    assert retry.run_config["ops"]["trade_fills"]["config"]["after"] == "0-0"
    assert retry.run_key == f"fills:0-0..{newest}"
    assert store_fills(platform, retry).success
    assert stored_ids(platform) == ["f-0", "f-1"]


def test_while_its_run_is_unfinished_new_fills_wait(live_platform):
    platform, loop = live_platform, live_platform.loop
    platform.publish(FILLS_STREAM, fill(0))
    running = dg.DagsterRun(
        job_name=FILLS_TO_WAREHOUSE, run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.STARTED,
        tags={SENSOR_NAME_TAG: NAME},
    )  # fmt: skip
    platform.instance.add_run(running)
    data = loop.tick(NAME)
    assert not data.run_requests and running.run_id in data.skip_message
    assert NAME not in loop.cursors  # the cursor did not move


def test_malformed_entries_are_reported_and_passed_without_a_run(live_platform):
    platform, loop = live_platform, live_platform.loop
    platform.redis.xadd(FILLS_STREAM, {"kind": "fill", "schema_version": "1", "payload": "{oops"})
    last = platform.redis.xadd(FILLS_STREAM, {"kind": "gossip"})
    data = loop.tick(NAME)
    assert not data.run_requests
    assert "2 entries after 0-0, none of them a valid fill" in data.skip_message
    assert json.loads(data.cursor) == {"read": last, "after": last}
    good = platform.publish(FILLS_STREAM, fill(7))
    (request,) = loop.tick(NAME).run_requests
    assert request.run_config["ops"]["trade_fills"]["config"]["after"] == last
    assert request.run_key == f"fills:{last}..{good}"
