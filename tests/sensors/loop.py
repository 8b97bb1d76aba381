"""An in-process sensor loop: the code location's sensors evaluated against a real Dagster
instance, and their run requests executed for real, as the daemon would launch them.

What the daemon does and this loop does too: keep each sensor's cursor between ticks, skip a
request whose run key this sensor already used, tag runs with the sensor's name and run key,
and store the asset events a sensor reports. What it does differently: a run executes in this
process, to completion, before the next tick (so every run here is finished when a sensor
looks for unfinished ones).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import dagster as dg
from dagster._core.definitions.sensor_definition import SensorExecutionData
from dagster._core.storage.tags import RUN_KEY_TAG, SENSOR_NAME_TAG


@dataclass
class SensorLoop:
    defs: dg.Definitions
    instance: dg.DagsterInstance
    cursors: dict[str, str | None] = field(default_factory=dict)
    results: list[tuple[str, dg.RunRequest, dg.ExecuteInProcessResult]] = field(
        default_factory=list
    )

    def tick(self, name: str) -> SensorExecutionData:
        """One evaluation of sensor ``name`` with its stored cursor."""
        sensor = self.defs.resolve_sensor_def(name)
        with dg.build_sensor_context(
            instance=self.instance,
            cursor=self.cursors.get(name),
            definitions=self.defs,
            resources=self.defs.resources,
            sensor_name=name,
        ) as context:
            data = sensor.evaluate_tick(context)
        if data.cursor is not None:
            self.cursors[name] = data.cursor
        for event in data.asset_events or []:
            self.instance.report_runless_asset_event(event)
        return data

    def used(self, name: str, run_key: str) -> bool:
        runs = self.instance.get_run_records(
            dg.RunsFilter(tags={RUN_KEY_TAG: run_key, SENSOR_NAME_TAG: name}), limit=1
        )
        return bool(runs)

    def launch(self, name: str, request: dg.RunRequest) -> dg.ExecuteInProcessResult | None:
        """Execute one run request as sensor ``name``'s run; None for a run key already used."""
        if request.run_key and self.used(name, request.run_key):
            return None
        sensor = self.defs.resolve_sensor_def(name)
        job_name = request.job_name or sensor.job_name
        job = self.defs.resolve_job_def(job_name)
        tags = {**request.tags, SENSOR_NAME_TAG: name}
        if request.run_key:
            tags[RUN_KEY_TAG] = request.run_key
        result = job.execute_in_process(
            instance=self.instance,
            run_config=request.run_config,
            partition_key=request.partition_key,
            tags=tags,
            raise_on_error=False,
        )
        self.results.append((name, request, result))
        return result

    def step(self, name: str) -> list[dg.ExecuteInProcessResult]:
        """Tick sensor ``name`` and execute what it requests."""
        data = self.tick(name)
        launched = [self.launch(name, request) for request in data.run_requests or []]
        return [r for r in launched if r is not None]
