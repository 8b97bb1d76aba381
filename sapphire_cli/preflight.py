"""What ``sapphire run`` checks before it starts anything, each problem with what to do about it.

All problems are collected and shown together in one message, so a newcomer fixes them in one
go instead of meeting them one crash at a time.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sapphire_bus.server import RedisServerError, find_redis_server, port_in_use


@dataclass(frozen=True)
class Port:
    """A port the platform listens on, and how the user moves it."""

    number: int
    what: str
    option: str
    env: str


def writable_folder(path: Path, name: str, env: str) -> str | None:
    """None when ``path`` can be created and written to; else what is wrong and what to do."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".sapphire-write-check-"):
            pass
    except OSError as error:
        return (
            f"{name} {path} cannot be used ({error.strerror or error}): point {env} at a "
            "folder you can write, or fix the permissions of this one"
        )
    return None


def busy_ports(ports: list[Port], host: str) -> list[str]:
    problems = []
    seen: dict[int, str] = {}
    for port in ports:
        if port.number in seen:
            problems.append(
                f"{port.what} and {seen[port.number]} are both set to port {port.number}: "
                f"give one another port with {port.option} or {port.env}"
            )
        seen[port.number] = port.what
        if port_in_use(port.number, host):
            problems.append(
                f"port {port.number} ({port.what}) is already in use on {host}: stop what "
                f"listens there, or choose another port with {port.option} or {port.env}"
            )
    return problems


def redis_binary() -> str | None:
    try:
        find_redis_server()
    except RedisServerError as error:
        return str(error)
    return None


def executables(paths: list[Path]) -> list[str]:
    return [
        f"{path.name} is not installed at {path}: run `make sync` to install the project's "
        "dependencies"
        for path in paths
        if not (path.is_file() and os.access(path, os.X_OK))
    ]


def collect(checks: list[Callable[[], list[str] | str | None]]) -> list[str]:
    """Run every check; each returns nothing, one problem or several."""
    problems: list[str] = []
    for check in checks:
        found = check()
        if isinstance(found, str):
            problems.append(found)
        elif found:
            problems.extend(found)
    return problems
