"""``sapphire run`` as a real process tree: the supervisor, redis-server, the Dagster webserver
and daemon, and the execution service, on free ports and a temporary state folder."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from sapphire_bus.server import free_port
from sapphire_domain.settings import PROJECT_ROOT

# A small universe whose replay clock stands at its first day (speed 0): no candle has closed,
# so the sensors request nothing and the tests measure the supervisor, not the pipeline.
QUIET_CONFIG = {
    "universe": {
        "exchange": "replay",
        "symbols": ["BTC/USD"],
        "timeframe": "30m",
        "start": "2019-09-01",
        "end": "2019-10-01",
    },
    "replay": {"start": "2019-09-01T00:00:00", "speed": 1440},
}


def base_env(root: Path) -> dict[str, str]:
    """The environment of a fresh machine's user, pointed at ``root`` for all state."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "SAPPHIRE_ENV")}
    config = root / "sapphire.yaml"
    config.write_text(yaml.safe_dump(QUIET_CONFIG))
    env.update(
        SAPPHIRE_STATE_DIR=str(root / "state"),
        DAGSTER_HOME=str(root / "dagster_home"),
        SAPPHIRE_CONFIG=str(config),
        PYTHONUNBUFFERED="1",
    )
    env.pop("SAPPHIRE_CONTROL_TOKEN", None)
    return env


def sapphire(*args: str) -> list[str]:
    return [sys.executable, "-m", "sapphire_cli.main", *args]


class RunningPlatform:
    """One ``sapphire run`` process, its output, and every process it ever had below it."""

    def __init__(self, root: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.root = root
        self.env = env or base_env(root)
        self.state = Path(self.env["SAPPHIRE_STATE_DIR"])
        self.ui_port, self.metrics_port, self.redis_port = free_port(), free_port(), free_port()
        self.output = root / "run-output.txt"
        self.process = subprocess.Popen(
            sapphire("run", "--speed", "0", "--port", str(self.ui_port),
                     "--metrics-port", str(self.metrics_port),
                     "--redis-port", str(self.redis_port), *extra),
            cwd=PROJECT_ROOT, env=self.env, stdin=subprocess.DEVNULL,
            stdout=self.output.open("wb"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.seen: dict[int, psutil.Process] = {}
        self.groups: set[int] = set()

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.ui_port}"

    @property
    def exec_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        path = self.state / "logs" / "supervisor.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def snapshot(self) -> list[psutil.Process]:
        """The supervisor's descendants now, remembered (with their groups) for the final check."""
        try:
            below = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        # A child caught between fork and setsid still has the supervisor's group, which is
        # also this test's: that group is not one the supervisor must clean up.
        own_group = os.getpgid(0)
        for child in below:
            self.seen.setdefault(child.pid, child)
            with contextlib.suppress(ProcessLookupError):
                group = os.getpgid(child.pid)
                if group != own_group:
                    self.groups.add(group)
        return below

    def find(self, marker: str) -> psutil.Process | None:
        """The live child of the supervisor whose command line contains ``marker`` (not a
        grandchild that inherited the same words), or None between a crash and its restart."""
        matches = []
        for process in self.snapshot():
            try:
                if marker in " ".join(process.cmdline()) and process.ppid() == self.process.pid:
                    matches.append(process)
            except psutil.NoSuchProcess:
                continue
        assert len(matches) <= 1, f"{marker}: {matches}\n{self.text()}"
        return matches[0] if matches else None

    def child(self, marker: str) -> psutil.Process:
        found = self.find(marker)
        assert found is not None, f"no child process {marker}:\n{self.text()}"
        return found

    def wait_for(self, condition: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.snapshot()
            result = condition()
            if result:
                return result
            if self.process.poll() is not None:
                break
            time.sleep(0.25)
        raise AssertionError(f"timed out waiting for {what}:\n{self.text()[-6000:]}")

    def interrupt(self, timeout: float = 90) -> int:
        self.snapshot()
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=timeout)

    def leftovers(self) -> list[str]:
        """Processes that outlived the supervisor: any it ever had, or any in their groups."""
        alive = []
        for pid, process in self.seen.items():
            try:
                if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                    alive.append(f"{pid} {' '.join(process.cmdline())[:120]}")
            except psutil.NoSuchProcess:
                continue
        for process in psutil.process_iter(["pid", "cmdline", "status"]):
            try:
                if os.getpgid(process.pid) in self.groups and process.status() != "zombie":
                    alive.append(f"{process.pid} (group) {' '.join(process.cmdline())[:120]}")
            except (ProcessLookupError, psutil.NoSuchProcess):
                continue
        return alive

    def cleanup(self) -> None:
        """Never leave a process behind, even when a test fails half-way."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for process in self.seen.values():
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()


@pytest.fixture
def start_platform(tmp_path: Path) -> Iterator[Callable[..., RunningPlatform]]:
    started: list[RunningPlatform] = []

    def start(*extra: str, env: dict[str, str] | None = None) -> RunningPlatform:
        platform = RunningPlatform(tmp_path, *extra, env=env)
        started.append(platform)
        return platform

    yield start
    for platform in started:
        platform.cleanup()
