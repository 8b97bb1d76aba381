"""Sensors and schedules of the live loop.

``build_live_loop(settings, retrain_job)`` returns what the code location registers: the jobs,
the sensors (``new_candles``, ``new_fills``, ``retrain_trigger``, ``risk_events``, and the
automation condition sensor), the schedules and the ``execution_state`` asset the risk events
are observed on. Every sensor is RUNNING by default, so the daemon drives the loop as soon as
it starts; so are the schedules, but for the performance report of a fixed (replay) universe.
"""

from dataclasses import dataclass

import dagster as dg
from dagster._core.definitions.partitions.partitioned_schedule import (
    UnresolvedPartitionedAssetScheduleDefinition,
)
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from sapphire_domain.settings import Settings
from sensors.automation import automation_sensor, performance_schedule
from sensors.candles import build_new_candles_sensor
from sensors.fills import build_new_fills_sensor
from sensors.jobs import (
    FILLS_TO_WAREHOUSE,
    LIVE_LOOP,
    MARKET_HISTORY,
    PERFORMANCE_REPORT,
    build_jobs,
)
from sensors.retrain import build_retrain_sensor
from sensors.risk import build_risk_events_sensor, execution_state


@dataclass(frozen=True)
class LiveLoop:
    jobs: list[UnresolvedAssetJobDefinition]
    sensors: list[dg.SensorDefinition]
    schedules: list[UnresolvedPartitionedAssetScheduleDefinition | dg.ScheduleDefinition]
    assets: list[dg.AssetsDefinition]


def build_live_loop(settings: Settings, retrain_job: UnresolvedAssetJobDefinition) -> LiveLoop:
    live = settings.live
    jobs = {job.name: job for job in build_jobs()}
    sensors = [
        build_new_candles_sensor(
            settings.universe, live, [jobs[MARKET_HISTORY], jobs[LIVE_LOOP], retrain_job]
        ),
        build_new_fills_sensor(settings.universe, live, jobs[FILLS_TO_WAREHOUSE]),
        build_retrain_sensor(live, retrain_job),
        build_risk_events_sensor(live),
        automation_sensor(max(live.sensor_interval_s, 5)),
    ]
    return LiveLoop(
        jobs=list(jobs.values()),
        sensors=sensors,
        schedules=[performance_schedule(jobs[PERFORMANCE_REPORT], settings.universe.end is None)],
        assets=[execution_state],
    )
