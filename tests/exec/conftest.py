"""Helpers for the execution service tests: a config on disk, the service as a real process,
targets on a real Redis."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml

from sapphire_bus.server import RedisServer, free_port
from sapphire_domain.messages import TARGETS_STREAM, TargetPortfolio, TargetPosition, encode
from sapphire_domain.settings import PROJECT_ROOT

# A moment in the bundled candles, on a 30m boundary.
SESSION_START = datetime(2019, 6, 3, 12, 0, tzinfo=UTC)
SYMBOLS = ("BTC/USD", "ETH/USD", "XRP/USD")
TEST_RISK = {
    "max_order_notional": 200_000.0,
    "max_position_notional": 200_000.0,
    "max_gross_exposure": 3.0,
    "max_orders_per_interval": 1000,
    "max_price_age_ms": 3_600_000,
    "max_drawdown": 0.05,
    "max_daily_loss": 0.5,
}


def write_clock(path: Path, at: datetime, speed: float = 1.0) -> None:
    """The shared replay clock file, anchored at ``at`` now (speed 1: real time passes)."""
    sim = int(at.timestamp() * 1000)
    state = {"anchor_sim_ms": sim, "anchor_wall_ms": time.time_ns() // 1_000_000,
             "speed": speed, "stop_ms": None}  # fmt: skip
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)


def make_target(
    version: int,
    weights: dict[str, float],
    created: datetime = SESSION_START,
    valid_for: timedelta = timedelta(hours=6),
) -> TargetPortfolio:
    return TargetPortfolio(
        version=version,
        created_at=created,
        valid_until=created + valid_for,
        positions=tuple(TargetPosition(symbol=s, weight=w) for s, w in weights.items()),
        model_versions={"momentum": "m1"},
    )


class ExecHarness:
    """One service configuration (state dir, clock, Redis) and the processes started from it."""

    def __init__(self, root: Path, redis_server: RedisServer, **overrides: Any) -> None:
        self.root = root
        self.redis_server = redis_server
        self.clock_file = root / "replay_clock.json"
        write_clock(self.clock_file, SESSION_START)
        self.port = free_port()
        config: dict[str, Any] = {
            "state_dir": str(root / "exec"),
            "tick_seconds": 0.2,
            "http": {"host": "127.0.0.1", "port": self.port},
            "orders": {"no_trade_band": 0.0, "min_notional": 10.0, "lot_size": 1e-6},
            "venue": {"kind": "paper", "paper": {
                "timeframe": "30m", "initial_cash": 100_000.0,
                "replay_clock_file": str(self.clock_file), "fsync": True,
            }},
            "risk": dict(TEST_RISK),
        }  # fmt: skip
        for key, value in overrides.items():
            config[key] = value
        self.config_path = root / "exec.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.env = {
            **os.environ,
            "REDIS_URL": redis_server.url,
            "SAPPHIRE_EXEC_CONFIG": str(self.config_path),
            "SAPPHIRE_STATE_DIR": str(root),
            "SAPPHIRE_CONTROL_TOKEN": "test-control-token",
            "PYTHONUNBUFFERED": "1",
        }
        self.processes: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        self.client = redis.Redis.from_url(redis_server.url, decode_responses=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(
        self, wait: bool = True, extra_env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log_path = self.root / f"service-{len(self.logs)}.log"
        self.logs.append(log_path)
        process = subprocess.Popen(
            [sys.executable, "-m", "sapphire_exec"],
            cwd=PROJECT_ROOT,
            env={**self.env, **(extra_env or {})},
            stdout=open(log_path, "ab"),  # noqa: SIM115 - the child owns it
            stderr=subprocess.STDOUT,
        )
        self.processes.append(process)
        if wait:
            self.wait_healthy(process)
        return process

    def wait_healthy(self, process: subprocess.Popen[bytes], timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(
                    f"service exited with {process.returncode}:\n{self.log_text()}"
                )
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"service not healthy in {timeout}s:\n{self.log_text()}")

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, process: subprocess.Popen[bytes], timeout: float = 20) -> int:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        return process.wait(timeout=timeout)

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.kill()
        process.wait()

    def cleanup(self) -> None:
        for process in self.processes:
            self.kill(process)
        self.client.close()

    def log_text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.logs if p.exists())

    def log_events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.log_text().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events

    def publish(self, target: TargetPortfolio) -> str:
        return str(self.client.xadd(TARGETS_STREAM, encode(target)))  # type: ignore[arg-type]

    def stream(self, name: str) -> list[tuple[str, dict[str, str]]]:
        return list(self.client.xrange(name))  # type: ignore[arg-type]

    def pending(self) -> int:
        try:
            return int(self.client.xpending(TARGETS_STREAM, "sapphire-exec")["pending"])
        except redis.ResponseError:
            return 0

    def wait_for(self, condition: Any, timeout: float = 20, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}:\n{self.log_text()[-4000:]}")

    def drained(self) -> bool:
        """Every target delivered to the group and acknowledged."""
        try:
            groups = self.client.xinfo_groups(TARGETS_STREAM)
        except redis.ResponseError:
            return False
        group = next((g for g in groups if g["name"] == "sapphire-exec"), None)
        if group is None:
            return False
        last = self.client.xrevrange(TARGETS_STREAM, count=1)
        return int(group["pending"]) == 0 and (not last or group["last-delivered-id"] == last[0][0])

    def control(self, method: str, path: str, token: str | None, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=5, **kw)


@pytest.fixture
def harness(tmp_path: Path, redis_server: RedisServer) -> Iterator[ExecHarness]:
    h = ExecHarness(tmp_path, redis_server)
    try:
        yield h
    finally:
        h.cleanup()
