"""The new-candles sensor on a real instance: catch-up, bootstrap, live runs, coalescing."""

import json
import uuid
from datetime import UTC, datetime

import dagster as dg
from dagster._core.storage.tags import SENSOR_NAME_TAG

from sapphire_domain.messages import (
    RISK_STREAM,
    TARGETS_STREAM,
    RiskEvent,
    TargetPortfolio,
    TradingState,
    decode,
)
from sensors.candles import CANDLE_CLOSE_TAG, NAME
from sensors.jobs import LIVE_LOOP, MARKET_HISTORY, RETRAIN_AGENTS

DAY = "2019-05-20"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def requests(data):
    return list(data.run_requests or [])


def one_request(data) -> dg.RunRequest:
    runs = requests(data)
    assert len(runs) == 1, data.skip_message
    return runs[0]


def targets(platform) -> list[TargetPortfolio]:
    return [decode(fields) for _, fields in platform.redis.xrange(TARGETS_STREAM)]


def risk(state: TradingState, previous: TradingState, reason: str) -> RiskEvent:
    return RiskEvent(state=state, previous_state=previous, reason=reason, ts=at("2019-05-20T12:00"))


def test_catch_up_bootstrap_then_a_live_run_per_closed_candle_gated_by_a_halt(live_platform):
    platform, loop = live_platform, live_platform.loop
    platform.set_clock(at("2019-05-20T10:05"))

    history = one_request(loop.tick(NAME))
    assert history.job_name == MARKET_HISTORY
    assert history.run_key == "history:2019-05-08..2019-05-19"
    assert history.tags["dagster/asset_partition_range_start"] == "2019-05-08"
    assert history.tags["dagster/asset_partition_range_end"] == "2019-05-19"
    assert loop.launch(NAME, history).success
    materialised = platform.instance.get_materialized_partitions(dg.AssetKey("features"))
    assert len(materialised) == 12  # twelve days in one run
    assert len(platform.instance.get_run_records()) == 1

    bootstrap = one_request(loop.tick(NAME))
    assert bootstrap.job_name == RETRAIN_AGENTS and bootstrap.run_key == f"bootstrap:{DAY}"
    assert loop.launch(NAME, bootstrap).success

    live = one_request(loop.tick(NAME))
    assert live.job_name == LIVE_LOOP and live.partition_key == DAY
    assert live.run_key == "live:2019-05-20T09:30:00+00:00"  # the 09:30 candle closed at 10:00
    assert live.tags[CANDLE_CLOSE_TAG] == "2019-05-20T10:00:00+00:00"
    assert json.loads(loop.cursors[NAME])["open_day"] == DAY
    result = loop.launch(NAME, live)
    assert result.success
    first = targets(platform)
    assert len(first) == 1 and first[0].created_at == at("2019-05-20T10:00")

    # Same candle: nothing to do, and the cursor says why.
    idle = loop.tick(NAME)
    assert not requests(idle) and "no candle has closed since" in idle.skip_message

    # Two candles later: one run for the latest, the one in between coalesced into it.
    platform.set_clock(at("2019-05-20T11:01"))
    later = one_request(loop.tick(NAME))
    assert later.run_key == "live:2019-05-20T10:30:00+00:00"
    assert loop.launch(NAME, later).success
    assert [t.created_at for t in targets(platform)] == [
        at("2019-05-20T10:00"),
        at("2019-05-20T11:00"),
    ]

    # HALTED: live runs go on (data, forecasts, scorecards) but publish nothing, and say why.
    platform.publish(
        RISK_STREAM, risk(TradingState.HALTED, TradingState.ACTIVE, "MANUAL_HALT: drill")
    )
    platform.set_clock(at("2019-05-20T11:35"))
    (halted,) = loop.step(NAME)
    assert halted.success and len(targets(platform)) == 2
    metadata = halted.asset_materializations_for_node("target_portfolio")[0].metadata
    assert metadata["trading_state"].value == "HALTED"
    assert "HALTED (MANUAL_HALT: drill)" in metadata["published_entry"].value

    # Resumed: the next candle's target is published again.
    platform.publish(RISK_STREAM, risk(TradingState.ACTIVE, TradingState.HALTED, "RESET: operator"))
    platform.set_clock(at("2019-05-20T12:05"))
    (resumed,) = loop.step(NAME)
    assert resumed.success
    assert targets(platform)[-1].created_at == at("2019-05-20T12:00")
    # The stored targets keep every published version of the day, not only the latest.
    stored = set(platform.table("target_portfolio")["version"].to_list())
    assert {t.version for t in targets(platform)} <= stored


def test_runs_never_pile_up_while_one_of_its_runs_is_unfinished(live_platform):
    platform, loop = live_platform, live_platform.loop
    platform.set_clock(at("2019-05-20T10:05"))
    loop.cursors[NAME] = json.dumps({"live_ts": 0, "open_day": DAY})
    run = dg.DagsterRun(
        job_name=LIVE_LOOP,
        run_id=str(uuid.uuid4()),
        status=dg.DagsterRunStatus.STARTED,
        tags={SENSOR_NAME_TAG: NAME},
    )
    platform.instance.add_run(run)
    waiting = loop.tick(NAME)
    assert not requests(waiting) and run.run_id in waiting.skip_message
    assert json.loads(loop.cursors[NAME]) == {"live_ts": 0, "open_day": DAY}  # not advanced

    platform.instance.report_run_failed(run)
    assert requests(loop.tick(NAME))  # the run is over: requests resume


def test_a_day_the_live_loop_left_before_its_last_candle_is_finished_by_the_catch_up(live_platform):
    platform, loop = live_platform, live_platform.loop
    platform.set_clock(at("2019-05-20T10:05"))
    for day in range(8, 20):  # the history up to 05-19 is in the warehouse
        platform.instance.report_runless_asset_event(
            dg.AssetMaterialization("features", partition=f"2019-05-{day:02d}")
        )
    loop.cursors[NAME] = json.dumps({"live_ts": int(at("2019-05-19T20:00").timestamp() * 1000),
                                     "open_day": "2019-05-19"})  # fmt: skip
    finish = one_request(loop.tick(NAME))
    assert finish.job_name == MARKET_HISTORY and finish.run_key == "history:2019-05-19..2019-05-19"
    assert json.loads(loop.cursors[NAME])["open_day"] is None  # asked for once


def test_before_the_universe_has_a_closed_candle_nothing_is_requested(live_platform):
    live_platform.set_clock(at("2019-05-08T00:10"))
    data = live_platform.loop.tick(NAME)
    assert not requests(data) and "no candle of the universe has closed" in data.skip_message
