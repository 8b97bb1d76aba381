"""Declarative automation and schedules of the live loop: where a condition or a clock says
better than a sensor when an asset is due.

- ``live_vs_backtest`` follows new fills: a day's comparison is refreshed when that day's
  ``trade_fills`` was updated (not on every new candle, which updates its other inputs).
- ``daily_performance_report`` materialises ``strategy_performance`` and ``live_vs_backtest``
  for the previous day (RUNNING for a live universe; see ``performance_schedule``);
  ``retrain_agents_schedule`` (with the agents, RUNNING) is the daily full retrain.
- The automation condition sensor is declared RUNNING, so the daemon evaluates the conditions
  without anyone switching it on.
"""

import dagster as dg
from dagster._core.definitions.partitions.partitioned_schedule import (
    UnresolvedPartitionedAssetScheduleDefinition,
)
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

AUTOMATION_SENSOR = "automation_conditions"
DAILY_PERFORMANCE_REPORT = "daily_performance_report"


def after_new_fills() -> dg.AutomationCondition:
    """True for a partition whose ``trade_fills`` was just updated, once nothing it reads is
    being materialised; other inputs (candles, targets) updating do not trigger it."""
    return (
        dg.AutomationCondition.any_deps_updated().ignore(
            dg.AssetSelection.assets("candles", "target_portfolio")
        )
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("after new fills")


def with_automation(
    asset: dg.AssetsDefinition, condition: dg.AutomationCondition
) -> dg.AssetsDefinition:
    return asset.map_asset_specs(
        lambda spec: spec.replace_attributes(automation_condition=condition)
    )


def automation_sensor(interval_s: int) -> dg.AutomationConditionSensorDefinition:
    return dg.AutomationConditionSensorDefinition(
        AUTOMATION_SENSOR,
        target=dg.AssetSelection.all(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=interval_s,
        description="Evaluates the assets' automation conditions (live_vs_backtest after fills).",
    )


def performance_schedule(
    job: UnresolvedAssetJobDefinition, open_ended: bool
) -> UnresolvedPartitionedAssetScheduleDefinition | dg.ScheduleDefinition:
    """The previous day's report, every day at 00:30 UTC. It runs by default for an open-ended
    (live) universe, whose partitions follow the wall clock; a fixed universe (the replay) has
    no wall-clock "yesterday", so there it is created stopped."""
    return dg.build_schedule_from_partitioned_job(
        job,
        name=DAILY_PERFORMANCE_REPORT,
        hour_of_day=0,
        minute_of_hour=30,
        default_status=dg.DefaultScheduleStatus.RUNNING
        if open_ended
        else dg.DefaultScheduleStatus.STOPPED,
        description="Strategy performance and live against backtest of the previous day.",
    )
