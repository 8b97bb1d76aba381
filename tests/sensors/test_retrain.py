"""The retraining trigger on a real instance: feedback counts, skill decay, idempotence."""

import json
import uuid
from datetime import timedelta

import dagster as dg
import polars as pl

from sapphire_assets.metadata import table
from sapphire_domain.messages import FILLS_STREAM
from sapphire_domain.settings import LiveSettings
from sensors.jobs import FILLS_TO_WAREHOUSE, REASON_TAG, RETRAIN_AGENTS, range_tags
from sensors.retrain import NAME, build_retrain_sensor
from tests.sensors.conftest import live_settings
from tests.sensors.test_fills import T0, fill

RETRAIN_AFTER = 200  # live.retrain_after_fills of the test settings' defaults


def stored(platform, new_fills: int) -> None:
    """A trade_fills materialisation reported without a run (it counts alone)."""
    platform.instance.report_runless_asset_event(
        dg.AssetMaterialization(
            "trade_fills", partition="2019-05-20", metadata={"new_fills": new_fills}
        )
    )


def scorecard(platform, hit_rates: dict[str, float], n: int = 96) -> None:
    rows = pl.DataFrame([{"agent": a, "n": n, "hit_rate": h} for a, h in hit_rates.items()])
    event = dg.AssetMaterialization(
        "agent_scorecard",
        partition="2019-05-20",
        metadata={"out_of_sample_evaluation": table(rows)},
    )
    platform.instance.report_runless_asset_event(event)


def test_enough_new_fills_request_one_retrain_and_are_then_counted_afresh(live_platform):
    platform, loop = live_platform, live_platform.loop
    assert live_settings().live.retrain_after_fills == RETRAIN_AFTER
    stored(platform, 150)
    short = loop.tick(NAME)
    assert not short.run_requests and "150 of 200 fills" in short.skip_message
    stored(platform, 60)
    data = loop.tick(NAME)
    (request,) = data.run_requests
    assert request.job_name in (None, RETRAIN_AGENTS)
    assert request.tags[REASON_TAG] == "feedback: 210 new fills since the last retrain"
    assert request.run_key.startswith("retrain:feedback:")
    assert json.loads(data.cursor)["new_fills"] == 0
    after = loop.tick(NAME)  # the same events are not counted again
    assert not after.run_requests and "0 of 200 fills" in after.skip_message


def test_a_range_run_counts_its_fills_once_not_once_per_day(live_platform):
    platform = live_platform
    fills = [fill(n, T0 + timedelta(hours=12 * n)) for n in range(4)]  # over two days
    for f in fills:
        platform.publish(FILLS_STREAM, f)
    job = platform.defs.resolve_job_def(FILLS_TO_WAREHOUSE)
    result = job.execute_in_process(
        instance=platform.instance,
        tags=range_tags("2019-05-20", "2019-05-21"),
        asset_selection=[dg.AssetKey("trade_fills")],
    )
    assert len(result.asset_materializations_for_node("trade_fills")) == 2  # one per day
    sensor = build_retrain_sensor(LiveSettings(retrain_after_fills=5), job)
    with dg.build_sensor_context(instance=platform.instance) as context:
        data = sensor.evaluate_tick(context)
    assert not data.run_requests and "4 of 5 fills" in data.skip_message


def test_an_agent_whose_live_hit_rate_decays_triggers_a_retrain(live_platform):
    platform, loop = live_platform, live_platform.loop
    scorecard(platform, {"momentum": 0.55, "sentiment": 0.52})
    assert not loop.tick(NAME).run_requests
    scorecard(platform, {"momentum": 0.41, "sentiment": 0.52})
    (request,) = loop.tick(NAME).run_requests
    assert request.tags[REASON_TAG] == "decay: hit rate below 0.45 (momentum 0.410)"
    assert not loop.tick(NAME).run_requests  # that scorecard was handled


def test_too_few_scored_forecasts_do_not_count_as_decay(live_platform):
    platform, loop = live_platform, live_platform.loop
    scorecard(platform, {"momentum": 0.2}, n=10)
    assert not loop.tick(NAME).run_requests


def test_no_retrain_is_requested_while_one_is_running(live_platform):
    platform, loop = live_platform, live_platform.loop
    platform.instance.add_run(
        dg.DagsterRun(job_name=RETRAIN_AGENTS, run_id=str(uuid.uuid4()),
                      status=dg.DagsterRunStatus.STARTED)
    )  # fmt: skip
    stored(platform, 500)
    data = loop.tick(NAME)
    assert not data.run_requests and "has not finished" in data.skip_message
    assert NAME not in loop.cursors
