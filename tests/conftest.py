"""Fixtures shared across the suite: real servers on loopback, started and stopped by the tests."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from sapphire_bus.server import RedisServer


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server of its own for one test, with AOF persistence on."""
    with RedisServer(tmp_path / "redis") as server:
        yield server
