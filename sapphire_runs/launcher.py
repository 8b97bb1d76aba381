"""``PrewarmedRunLauncher``: Dagster's default launcher, with run workers forked from a warm
parent (``sapphire_runs.zygote``) instead of started from scratch by the code server.

A fresh run worker spends seconds importing Dagster and the definitions before its first step;
for the live loop that is most of the time from a candle's close to its target. The launcher
starts one warm parent per code location and asks it for a worker per run. A parent whose
project sources were edited since it imported them declines, and a new one imports the new
code, so runs see edits as they do when Dagster reloads a location. Until a parent is ready,
or if it fails, runs take Dagster's default path through the code server: a launch never fails
because of the warm parent.

Forked runs carry the worker's pid in the ``sapphire/run_worker_pid`` tag, which is how they
are cancelled (SIGINT, Dagster's own interrupt) and how run monitoring learns that a worker
died without finishing its run.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import threading
from typing import IO, Any

import psutil
from dagster import DefaultRunLauncher
from dagster._core.launcher import CheckRunHealthResult, LaunchRunContext, WorkerStatus
from dagster._core.storage.dagster_run import DagsterRun
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import serialize_value

PID_TAG = "sapphire/run_worker_pid"
FORK_REPLY_TIMEOUT_S = 10.0


class ZygoteError(RuntimeError):
    """The warm parent could not fork a worker (it died, or did not answer)."""


class Zygote:
    """One warm parent process and the line protocol to it."""

    def __init__(self, origin_json: str, python: str, cwd: str | None) -> None:
        self.process = subprocess.Popen(
            [python, "-m", "sapphire_runs.zygote", origin_json],
            cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.ready = False

    @property
    def _stdout(self) -> IO[str]:
        assert self.process.stdout is not None
        return self.process.stdout

    def _reply(self, timeout: float) -> dict[str, Any] | None:
        if not select.select([self._stdout], [], [], timeout)[0]:
            return None
        line = self._stdout.readline()
        if not line:
            raise ZygoteError(f"the warm parent exited with code {self.process.wait()}")
        try:
            reply: dict[str, Any] = json.loads(line)
        except ValueError as error:
            raise ZygoteError(f"the warm parent said {line[:200]!r}") from error
        return reply

    def poll_ready(self) -> bool:
        """True once the imports are done; never blocks. False for a parent that died while
        importing (a broken code location): the next launch starts another."""
        if not self.ready and self.process.poll() is None:
            try:
                self.ready = self._reply(0.0) is not None
            except ZygoteError:
                return False
        return self.ready and self.process.poll() is None

    def fork(self, argv: list[str]) -> int:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps({"argv": argv}) + "\n")
            self.process.stdin.flush()
        except OSError as error:
            raise ZygoteError(f"the warm parent is gone: {error}") from error
        reply = self._reply(FORK_REPLY_TIMEOUT_S)
        if reply is None:
            raise ZygoteError(f"the warm parent did not answer in {FORK_REPLY_TIMEOUT_S:.0f} s")
        if "stale" in reply:
            raise ZygoteError(f"edited since the warm parent imported it: {reply['stale']}")
        return int(reply["pid"])

    def close(self) -> None:
        """End the parent (its workers finish their runs)."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class PrewarmedRunLauncher(DefaultRunLauncher):
    """Launches each run in a worker forked from a warm parent of its code location."""

    def __init__(self, inst_data: Any = None) -> None:
        super().__init__(inst_data=inst_data)
        self._zygotes: dict[str, tuple[str, Zygote]] = {}  # location name -> (key, parent)
        self._lock = threading.Lock()  # the run queue launches from several threads

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        origin, remote = run.job_code_origin, run.remote_job_origin
        if origin is None or remote is None or context.workspace is None:
            super().launch_run(context)
            return
        location_name = remote.repository_origin.code_location_origin.location_name
        key = serialize_value(origin.repository_origin)
        with self._lock:
            zygote = self._zygote_for(location_name, key, origin)
            pid = None
            if zygote.poll_ready():
                args = ExecuteRunArgs(
                    job_origin=origin, run_id=run.run_id, instance_ref=self._instance.get_ref()
                )
                try:
                    pid = zygote.fork(["api", "execute_run", serialize_value(args)])
                except ZygoteError as error:
                    # On the run's own event log, where whoever wonders about its launch looks.
                    self._instance.report_engine_event(
                        f"The warm parent of {location_name} was replaced ({error}); this run "
                        "starts through the code server.",
                        run,
                        cls=self.__class__,
                    )
                    self._zygotes.pop(location_name, None)
                    zygote.close()
                    self._zygote_for(location_name, key, origin)  # warms for the next run
        if pid is None:
            super().launch_run(context)
            return
        self._instance.add_run_tags(run.run_id, {PID_TAG: str(pid)})
        self._instance.report_engine_event(
            f"Run worker forked from the warm parent of {location_name} (pid {pid}).",
            run,
            cls=self.__class__,
        )

    def _zygote_for(self, location_name: str, key: str, origin: Any) -> Zygote:
        """The ready-or-warming parent for ``key``; starts one (and ends an outdated one)."""
        current = self._zygotes.get(location_name)
        if current is not None and current[0] == key and current[1].process.poll() is None:
            return current[1]
        if current is not None:
            current[1].close()
        repository_origin = origin.repository_origin
        zygote = Zygote(
            serialize_value(repository_origin),
            repository_origin.executable_path,
            repository_origin.code_pointer.working_directory,
        )
        self._zygotes[location_name] = (key, zygote)
        return zygote

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id) if self.has_instance else None
        if run is None or PID_TAG not in run.tags:
            return super().terminate(run_id)
        if run.is_finished or not worker_alive(int(run.tags[PID_TAG])):
            return False
        self._instance.report_run_canceling(run)
        os.kill(int(run.tags[PID_TAG]), signal.SIGINT)
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        if PID_TAG not in run.tags:
            return CheckRunHealthResult(WorkerStatus.UNKNOWN, "launched through the code server")
        pid = int(run.tags[PID_TAG])
        if worker_alive(pid):
            return CheckRunHealthResult(WorkerStatus.RUNNING, run_worker_id=str(pid))
        return CheckRunHealthResult(
            WorkerStatus.FAILED, f"run worker (pid {pid}) exited", run_worker_id=str(pid)
        )

    def dispose(self) -> None:
        with self._lock:
            for _key, zygote in self._zygotes.values():
                zygote.close()
            self._zygotes.clear()
        super().dispose()


def worker_alive(pid: int) -> bool:
    """Whether ``pid`` is still one of our run workers (a reused pid is another program)."""
    try:
        worker = psutil.Process(pid)
        alive = worker.status() != psutil.STATUS_ZOMBIE
        return alive and "sapphire_runs.zygote" in worker.cmdline()
    except psutil.Error:
        return False
