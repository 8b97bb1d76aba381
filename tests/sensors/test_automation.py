"""Declarative automation and schedules of the live loop, evaluated on a real instance."""

import dagster as dg

from sensors.automation import AUTOMATION_SENSOR, DAILY_PERFORMANCE_REPORT

DAY = "2019-05-20"


def requested(platform, cursor=None):
    result = dg.evaluate_automation_conditions(
        defs=platform.defs, instance=platform.instance, cursor=cursor
    )
    return result, result.get_requested_partitions(dg.AssetKey("live_vs_backtest"))


def test_live_vs_backtest_follows_new_fills_and_not_every_new_candle(live_platform):
    platform = live_platform
    first, _ = requested(platform)
    platform.instance.report_runless_asset_event(dg.AssetMaterialization("candles", partition=DAY))
    after_candles, wanted = requested(platform, first.cursor)
    assert wanted == set()
    platform.instance.report_runless_asset_event(
        dg.AssetMaterialization("trade_fills", partition=DAY)
    )
    _, wanted = requested(platform, after_candles.cursor)
    assert wanted == {DAY}


def test_the_sensors_and_schedules_run_by_default(live_platform):
    defs = live_platform.defs
    names = ["new_candles", "new_fills", "retrain_trigger", "risk_events", AUTOMATION_SENSOR]
    for name in names:
        sensor = defs.resolve_sensor_def(name)
        assert sensor.default_status is dg.DefaultSensorStatus.RUNNING, name
    retrain = defs.resolve_schedule_def("retrain_agents_schedule")
    assert retrain.default_status is dg.DefaultScheduleStatus.RUNNING
    # The replay universe has a fixed end: no wall-clock "yesterday" to report on.
    report = defs.resolve_schedule_def(DAILY_PERFORMANCE_REPORT)
    assert report.default_status is dg.DefaultScheduleStatus.STOPPED
    for job in ["market_history", "live_loop", "fills_to_warehouse", "performance_report"]:
        assert defs.resolve_job_def(job).executor_def is dg.in_process_executor, job
