"""``PrewarmedRunLauncher`` with a real instance, a real code server and real run processes."""

from __future__ import annotations

import os
import signal
import time

import dagster as dg

from sapphire_runs.launcher import PID_TAG, worker_alive
from tests.runs.conftest import Launcher

DONE = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def _op_metadata(launcher: Launcher, run_id: str) -> dict[str, int]:
    for record in launcher.instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_OUTPUT):
        data = record.get_dagster_event().step_output_data
        return {key: int(value.value) for key, value in data.metadata.items()}  # type: ignore[arg-type]
    raise AssertionError(f"no step output in run {run_id}")


def test_runs_are_forked_from_the_warm_parent_and_run_like_any_other(launcher: Launcher):
    first = launcher.launch("which_process")
    # The parent was still importing: the first run took the code server's path, and succeeded.
    assert PID_TAG not in launcher.run(first).tags
    assert launcher.wait(first, DONE).status == dg.DagsterRunStatus.SUCCESS

    forked = launcher.warm_run("which_process")
    run = launcher.wait(forked, DONE)
    assert run.status == dg.DagsterRunStatus.SUCCESS
    (parent,) = launcher.warm_parents()
    worker = _op_metadata(launcher, forked)
    assert worker["pid"] == int(run.tags[PID_TAG])
    assert worker["parent"] == parent.pid  # forked from the warm parent, not started afresh
    messages = [r.message for r in launcher.instance.all_logs(forked)]
    assert any(f"forked from the warm parent of tiny (pid {worker['pid']})" in m for m in messages)

    # every later run is a new process from the same parent
    again = launcher.launch("which_process")
    assert launcher.wait(again, DONE).status == dg.DagsterRunStatus.SUCCESS
    assert _op_metadata(launcher, again)["parent"] == parent.pid
    assert _op_metadata(launcher, again)["pid"] != worker["pid"]


def test_a_forked_run_is_cancelled_and_its_worker_ends(launcher: Launcher):
    run_id = launcher.warm_run("long_wait")
    launcher.wait(run_id, {dg.DagsterRunStatus.STARTED})
    pid = int(launcher.run(run_id).tags[PID_TAG])
    assert launcher.instance.run_launcher.terminate(run_id)
    assert launcher.wait(run_id, DONE, timeout=60).status == dg.DagsterRunStatus.CANCELED
    deadline = time.monotonic() + 30
    while worker_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not worker_alive(pid)
    assert not launcher.instance.run_launcher.terminate(run_id)  # nothing left to cancel


def test_run_monitoring_learns_that_a_killed_worker_is_gone(launcher: Launcher):
    run_id = launcher.warm_run("long_wait")
    launcher.wait(run_id, {dg.DagsterRunStatus.STARTED})
    run_launcher = launcher.instance.run_launcher
    health = run_launcher.check_run_worker_health(launcher.run(run_id))
    assert health.status.value == "RUNNING"
    pid = int(launcher.run(run_id).tags[PID_TAG])
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while worker_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)  # the warm parent reaps it
    health = run_launcher.check_run_worker_health(launcher.run(run_id))
    assert health.status.value == "FAILED"
    assert health.msg == f"run worker (pid {pid}) exited"


def test_a_dead_warm_parent_never_fails_a_launch(launcher: Launcher):
    launcher.wait(launcher.warm_run("which_process"), DONE)
    (parent,) = launcher.warm_parents()
    parent.kill()
    parent.wait(10)
    run_id = launcher.launch("which_process")
    assert PID_TAG not in launcher.run(run_id).tags  # the code server's path
    assert launcher.wait(run_id, DONE).status == dg.DagsterRunStatus.SUCCESS
    forked = launcher.warm_run("which_process")  # a new parent took over
    assert launcher.wait(forked, DONE).status == dg.DagsterRunStatus.SUCCESS
    (new_parent,) = launcher.warm_parents()
    assert new_parent.pid != parent.pid
    assert _op_metadata(launcher, forked)["parent"] == new_parent.pid


def test_a_run_after_an_edit_of_the_code_runs_the_new_code(launcher: Launcher):
    before = launcher.warm_run("which_process")
    assert _op_metadata(launcher, launcher.wait(before, DONE).run_id)["version"] == 1
    (parent,) = launcher.warm_parents()
    launcher.source.write_text(launcher.source.read_text().replace("VERSION = 1", "VERSION = 2"))

    after = launcher.launch("which_process")  # the parent declines; the code server's path
    assert PID_TAG not in launcher.run(after).tags
    messages = [r.message for r in launcher.instance.all_logs(after)]
    assert any("was replaced (edited since the warm parent imported it" in m for m in messages)
    launcher.wait(after, DONE)
    assert _op_metadata(launcher, after)["version"] == 2
    parent.wait(10)  # the outdated parent is gone

    forked = launcher.warm_run("which_process")
    launcher.wait(forked, DONE)
    assert _op_metadata(launcher, forked)["version"] == 2
    (new_parent,) = launcher.warm_parents()
    assert _op_metadata(launcher, forked)["parent"] == new_parent.pid != parent.pid
