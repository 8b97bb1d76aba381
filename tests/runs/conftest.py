"""A real Dagster instance whose run launcher is ``PrewarmedRunLauncher``, a real code server
for a copy of ``tests/runs/tiny_defs.py``, and a way to launch a job on it as the run queue
does."""

from __future__ import annotations

import importlib.util
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import dagster as dg
import psutil
import pytest
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import ModuleTarget

from sapphire_runs.launcher import PID_TAG, worker_alive

LOCATION = "tiny"
INSTANCE_YAML = """
telemetry: {enabled: false}
run_launcher:
  module: sapphire_runs.launcher
  class: PrewarmedRunLauncher
"""


class Launcher:
    def __init__(
        self, instance: dg.DagsterInstance, workspace: WorkspaceProcessContext, source: Path
    ) -> None:
        self.instance = instance
        self.workspace = workspace
        self.source = source  # the code location's file

    def _definitions(self) -> dg.Definitions:
        spec = importlib.util.spec_from_file_location(self.source.stem, self.source)
        assert spec is not None and spec.loader is not None
        module: ModuleType = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        definitions: dg.Definitions = module.defs
        return definitions

    def launch(self, job_name: str) -> str:
        request = self.workspace.create_request_context()
        repository = request.get_code_location(LOCATION).get_repository("__repository__")
        remote_job = repository.get_full_job(job_name)
        run = self.instance.create_run_for_job(
            job_def=self._definitions().resolve_job_def(job_name),
            remote_job_origin=remote_job.get_remote_origin(),
            job_code_origin=remote_job.get_python_origin(),
        )
        self.instance.launch_run(run.run_id, request)  # as the run queue does
        return run.run_id

    def run(self, run_id: str) -> dg.DagsterRun:
        run = self.instance.get_run_by_id(run_id)
        assert run is not None
        return run

    def wait(
        self, run_id: str, statuses: set[dg.DagsterRunStatus], timeout: float = 120
    ) -> dg.DagsterRun:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.run(run_id)
            if run.status in statuses:
                return run
            time.sleep(0.1)
        raise AssertionError(f"run {run_id} still {self.run(run_id).status} after {timeout} s")

    def warm_run(self, job_name: str, timeout: float = 180) -> str:
        """Launch ``job_name`` once the warm parent is ready (until then, runs of
        ``which_process`` take the code server's path while the parent imports)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run_id = self.launch("which_process")
            forked = PID_TAG in self.run(run_id).tags
            self.wait(run_id, {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE})
            if forked:
                run_id = self.launch(job_name)
                assert PID_TAG in self.run(run_id).tags
                return run_id
        raise AssertionError(f"no run was forked from the warm parent in {timeout} s")

    def warm_parents(self) -> list[psutil.Process]:
        """The live warm parents (children of this process, where the launcher runs)."""
        found = []
        for child in psutil.Process().children():
            try:
                if "sapphire_runs.zygote" in " ".join(child.cmdline()):
                    found.append(child)
            except psutil.ZombieProcess:  # a killed one the launcher has not reaped yet
                continue
        return found


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE_YAML)
    code = tmp_path / "code"
    code.mkdir()
    source = code / "tiny_location.py"
    shutil.copy(Path(__file__).with_name("tiny_defs.py"), source)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        target = ModuleTarget(
            module_name=source.stem, attribute=None, working_directory=str(code),
            location_name=LOCATION,
        )  # fmt: skip
        with WorkspaceProcessContext(instance, target) as workspace:
            yield Launcher(instance, workspace, source)
        for run in instance.get_runs():  # a failed test may leave a waiting worker behind
            if PID_TAG in run.tags and worker_alive(int(run.tags[PID_TAG])):
                psutil.Process(int(run.tags[PID_TAG])).kill()
