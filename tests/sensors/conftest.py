"""A code location over a temporary state folder, a real Dagster instance, a real Redis and a
frozen replay clock that the tests move by hand."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import redis

from sapphire_assets.definitions import build_definitions
from sapphire_bus.server import RedisServer
from sapphire_domain.messages import Message, encode
from sapphire_domain.settings import Settings, parse_settings
from sapphire_market.replay import ReplayClockFile
from tests.assets.conftest import warehouse_table
from tests.assets.test_agents import SMALL
from tests.sensors.loop import SensorLoop

DATA_END_MS = int(datetime(2019, 10, 1, tzinfo=UTC).timestamp() * 1000)
# The agents' test settings: small training, so a test trains in seconds.
SMALL_AGENTS = SMALL


def live_settings(**live: object) -> Settings:
    return parse_settings(
        {
            "universe": {
                "exchange": "replay",
                "symbols": ["BTC/USD", "ETH/USD", "XRP/USD", "EOS/USD"],
                "timeframe": "30m",
                "start": "2019-05-08",
                "end": "2019-10-01",
            },
            "live": {"sensor_interval_s": 1, **live},
        },
        "test",
    )


@dataclass
class LivePlatform:
    state: Path
    defs: dg.Definitions
    instance: dg.DagsterInstance
    redis: redis.Redis
    loop: SensorLoop

    def set_clock(self, at: datetime, speed: float = 0.0) -> None:
        """The shared replay clock at ``at``; speed 0 holds it there."""
        clock = ReplayClockFile(self.state / "replay_clock.json", default_ms=lambda: DATA_END_MS)
        clock.start(int(at.timestamp() * 1000), speed)

    def publish(self, stream: str, message: Message) -> str:
        return str(self.redis.xadd(stream, encode(message)))  # type: ignore[arg-type]

    def table(self, name: str) -> pl.DataFrame:
        return warehouse_table(self.state, name)


@pytest.fixture
def live_platform(
    tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LivePlatform]:
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    state = tmp_path / "state"
    defs = build_definitions(live_settings(), "local", state, agents=SMALL_AGENTS)
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    (tmp_path / "dagster_home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster_home")) as instance:
        yield LivePlatform(state, defs, instance, client, SensorLoop(defs, instance))
    client.close()
