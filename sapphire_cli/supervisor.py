"""Start, watch, restart and stop a set of child processes, each in its own process group.

A child that exits while the supervisor is not stopping it has crashed: the crash is printed in
red with its exit code and the end of its log, written as a structured event, and the child is
restarted after a backoff that doubles with each crash. A child that crashes ``max_crashes``
times within ``window_s`` stops everything, and the supervisor exits non-zero saying why.

Stopping sends SIGTERM to each child's whole process group (children in lower ``stop_order``
first), waits, then SIGKILLs whatever is left of the group and of the descendants it had, so no
process outlives the supervisor.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import structlog
from rich.console import Console
from rich.markup import escape

from sapphire_domain.settings import PROJECT_ROOT

# Returns True once the child answers (HTTP, a ping...); called until it does.
ReadyProbe = Callable[[], bool]


@dataclass(frozen=True)
class ChildSpec:
    """name: short name in messages; command and env: how to start it; log: its stdout and
    stderr (appended); ready: a probe of its readiness, or None when running is enough;
    where: what to tell the user once it is ready; stop_order: lower stops first."""

    name: str
    command: list[str]
    env: Mapping[str, str]
    log: Path
    ready: ReadyProbe | None = None
    where: str = ""
    stop_order: int = 0


@dataclass(frozen=True)
class CrashPolicy:
    """max_crashes within window_s stop everything; a restart waits backoff_s doubled per recent
    crash, at most max_backoff_s; stopping waits stop_timeout_s before SIGKILL."""

    max_crashes: int = 5
    window_s: float = 300.0
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    stop_timeout_s: float = 15.0

    def delay(self, recent_crashes: int) -> float:
        return float(min(self.max_backoff_s, self.backoff_s * 2 ** max(0, recent_crashes - 1)))


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"code {code} (killed by {signal.Signals(-code).name})"
        except ValueError:
            return f"code {code} (killed by signal {-code})"
    return f"code {code}"


def log_tail(path: Path, lines: int = 6) -> list[str]:
    try:
        with path.open("rb") as log:
            log.seek(max(0, path.stat().st_size - 8192))
            text = log.read().decode(errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()][-lines:]


class Child:
    """One supervised process: its own session and process group, its log appended to."""

    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.process: subprocess.Popen[bytes] | None = None
        self.crashes: deque[float] = deque()
        self.restart_at: float | None = None
        self.ready = False
        self.starts = 0
        self.pgid: int | None = None  # the group of the latest start, leader gone or not

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        self.spec.log.parent.mkdir(parents=True, exist_ok=True)
        with self.spec.log.open("ab") as log:
            log.write(f"--- {self.spec.name} start {self.starts + 1} at {time.ctime()}\n".encode())
            self.process = subprocess.Popen(
                self.spec.command,
                env=dict(self.spec.env),
                cwd=PROJECT_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: Ctrl-C reaches the supervisor only
            )
        self.pgid = self.process.pid
        self.starts += 1
        self.ready = False
        self.restart_at = None

    def poll(self) -> int | None:
        return self.process.poll() if self.process is not None else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def descendants(self) -> list[psutil.Process]:
        if not self.running():
            return []
        assert self.process is not None
        try:
            return psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def signal_group(self, signum: int) -> None:
        if self.pgid is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, signum)

    def stop(
        self, timeout_s: float, tree: list[psutil.Process] | None = None
    ) -> tuple[int | None, list[int]]:
        """SIGTERM the group, wait up to ``timeout_s``, then SIGKILL the group and whatever is
        left of ``tree`` (its descendants, taken before the signal). Returns the exit code and
        the pids that had to be killed."""
        tree = self.descendants() if tree is None else tree
        deadline = time.monotonic() + timeout_s
        self.signal_group(signal.SIGTERM)
        code, killed = None, []
        if self.process is not None:
            try:
                code = self.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                killed.append(self.process.pid)
                self.signal_group(signal.SIGKILL)
                code = self.process.wait()
        rest = _alive([*tree, *group_members(self.pgid)])
        _, still = psutil.wait_procs(rest, timeout=max(0.0, deadline - time.monotonic()))
        for process in _alive(still):
            killed.append(process.pid)
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        self.signal_group(signal.SIGKILL)
        self.process, self.pgid = None, None
        return code, killed


def _alive(processes: Iterable[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            continue
    return alive


def group_members(pgid: int | None) -> list[psutil.Process]:
    """Live processes (not zombies) in this process group."""
    if pgid is None:
        return []
    members = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == pgid:
                members.append(process)
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return _alive(members)


class Supervisor:
    """Runs ``children`` until ``stop`` is set (exit 0) or one crashes too often (exit 1)."""

    def __init__(
        self,
        specs: list[ChildSpec],
        policy: CrashPolicy,
        console: Console,
        events: Path,
        on_all_ready: Callable[[], None] | None = None,
    ) -> None:
        self.children = [Child(spec) for spec in specs]
        self.policy = policy
        self.console = console
        self.on_all_ready = on_all_ready
        events.parent.mkdir(parents=True, exist_ok=True)
        self._events_file = events.open("a", buffering=1)
        self.log = structlog.wrap_logger(
            structlog.WriteLogger(self._events_file),
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.JSONRenderer(),
            ],
        )

    def event(self, level: str, name: str, **fields: Any) -> None:
        getattr(self.log, level)(name, **fields)

    def run(self, stop: threading.Event, poll_s: float = 0.2) -> int:
        try:
            for child in self.children:
                self._start(child)
            announced = False
            while not stop.is_set():
                for child in self.children:
                    failure = self._watch(child)
                    if failure:
                        self._give_up(child, failure)
                        return 1
                if not announced and all(c.ready for c in self.children):
                    announced = True
                    self.event("info", "all_ready")
                    if self.on_all_ready is not None:
                        self.on_all_ready()
                stop.wait(poll_s)
            self.console.print("[bold]stopping[/bold]: every child gets SIGTERM, then SIGKILL")
            self.event("info", "stop_requested")
            return 0
        finally:
            self.stop_all()
            self._events_file.close()

    def _start(self, child: Child) -> None:
        try:
            child.start()
        except OSError as error:  # a missing or unrunnable binary: a crash like any other
            self.console.print(f"[bold red]✗ {child.spec.name} could not start: {error}[/]")
            self.event("error", "child_start_failed", child=child.spec.name, error=str(error))
            child.process = None
            self._crashed(child, 127, time.monotonic())
            return
        self.event("info", "child_started", child=child.spec.name, pid=child.pid,
                   command=child.spec.command, start=child.starts)  # fmt: skip

    def _watch(self, child: Child) -> str | None:
        """Probe, detect a crash or restart one child; returns why to give up, if so."""
        now = time.monotonic()
        if child.process is None:  # crashed: waiting for its restart, or given up on
            if child.restart_at is not None and now >= child.restart_at:
                self._start(child)
            return self._too_many(child, now)
        code = child.poll()
        if code is None:
            if not child.ready and (child.spec.ready is None or _probe(child.spec.ready)):
                child.ready = True
                again = " again" if child.starts > 1 else ""
                where = f": {child.spec.where}" if child.spec.where else ""
                self.console.print(f"[green]✓[/green] {child.spec.name} ready{again}{where}")
                self.event("info", "child_ready", child=child.spec.name, pid=child.pid)
            return None
        self._crashed(child, code, now)
        return self._too_many(child, now)

    def _crashed(self, child: Child, code: int, now: float) -> None:
        pid = child.pid
        # What the crashed leader leaves of its group (a code server, a run worker) goes too.
        child.signal_group(signal.SIGKILL)
        child.process = None
        child.ready = False
        child.crashes.append(now)
        while child.crashes and now - child.crashes[0] > self.policy.window_s:
            child.crashes.popleft()
        recent = len(child.crashes)
        delay = self.policy.delay(recent)
        last = recent >= self.policy.max_crashes
        child.restart_at = None if last else now + delay
        self.console.print(
            f"[bold red]✗ {child.spec.name} (pid {pid}) exited unexpectedly with "
            f"{describe_exit(code)}; crash {recent} of {self.policy.max_crashes} allowed in "
            f"{self.policy.window_s:.0f} s; "
            f"{'not restarting' if last else f'restarting in {delay:.0f} s'}. "
            f"Log: {child.spec.log}[/]",
            soft_wrap=True,
        )
        for line in log_tail(child.spec.log, 4):
            self.console.print(f"    [red]{escape(line[:200])}[/]", soft_wrap=True)
        self.event("error", "child_crashed", child=child.spec.name, pid=pid, exit_code=code,
                   exit=describe_exit(code), crashes_in_window=recent,
                   restart_in_s=None if last else delay, log=str(child.spec.log))  # fmt: skip

    def _too_many(self, child: Child, now: float) -> str | None:
        recent = [t for t in child.crashes if now - t <= self.policy.window_s]
        if len(recent) >= self.policy.max_crashes:
            return (
                f"{child.spec.name} crashed {len(recent)} times within {self.policy.window_s:.0f} s"
            )
        return None

    def _give_up(self, child: Child, why: str) -> None:
        self.console.print(
            f"[bold red]✗ {why}: stopping everything. See {child.spec.log} for why it exits, "
            "fix the cause, then start again.[/]",
            soft_wrap=True,
        )
        self.event("critical", "giving_up", child=child.spec.name, reason=why,
                   log=str(child.spec.log))  # fmt: skip

    def stop_all(self) -> None:
        """SIGTERM each group (in ``stop_order``), wait, SIGKILL what is left; no orphans."""
        for order in sorted({c.spec.stop_order for c in self.children}):
            batch = [c for c in self.children if c.spec.stop_order == order]
            trees = [(c, c.descendants()) for c in batch]
            for child in batch:  # all of a batch at once, so their timeouts overlap
                child.restart_at = None
                child.signal_group(signal.SIGTERM)
            deadline = time.monotonic() + self.policy.stop_timeout_s
            for child, tree in trees:
                code, killed = child.stop(max(0.0, deadline - time.monotonic()), tree)
                self.event("info" if not killed else "warning", "child_stopped",
                           child=child.spec.name, exit_code=code, killed=killed)  # fmt: skip


def _probe(ready: ReadyProbe) -> bool:
    try:
        return bool(ready())
    except Exception:  # a probe that cannot connect yet is simply not ready
        return False
