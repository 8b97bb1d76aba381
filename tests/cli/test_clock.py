"""The replay clock as ``sapphire run`` and the demo drive it, on a real clock file."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from sapphire_cli.clock import clock_file, hold, run_until, start_or_resume, wall_time_of
from sapphire_domain.settings import parse_settings

SETTINGS = parse_settings(
    {
        "universe": {"symbols": ["BTC/USD"], "start": "2019-01-01", "end": "2019-10-01"},
        "replay": {"start": "2019-06-01T00:00:00", "speed": 1440},
    },
    "test",
)
JUNE = int(datetime(2019, 6, 1, tzinfo=UTC).timestamp() * 1000)


def test_a_first_run_starts_at_replay_start_and_a_later_one_resumes_where_it_was_held(
    tmp_path: Path,
):
    clock = clock_file(tmp_path)
    started, resumed = start_or_resume(clock, SETTINGS, speed=86_400.0)
    assert not resumed and started.anchor_sim_ms == JUNE
    time.sleep(0.05)  # a simulated hour or more passes
    held_at = hold(clock)
    assert held_at > JUNE
    time.sleep(0.05)
    assert clock.now_ms() == held_at  # held: no time passes while the platform is down

    again, resumed = start_or_resume(clock, SETTINGS, speed=1440.0)
    assert resumed and again.anchor_sim_ms == held_at and again.speed == 1440.0


def test_start_says_where_to_begin_even_when_a_session_exists(tmp_path: Path):
    clock = clock_file(tmp_path)
    start_or_resume(clock, SETTINGS, speed=1440.0)
    hold(clock)
    at = datetime(2019, 7, 1, tzinfo=UTC)
    restarted, resumed = start_or_resume(clock, SETTINGS, speed=1440.0, at=at)
    assert not resumed and restarted.anchor_sim_ms == int(at.timestamp() * 1000)


def test_run_until_stops_by_itself_at_the_moment_given(tmp_path: Path):
    path = tmp_path / "replay_clock.json"
    stop = JUNE + 3_600_000
    clock = run_until(path, JUNE, speed=3_600_000.0, stop_ms=stop)  # an hour per millisecond
    time.sleep(0.05)
    assert clock_file(tmp_path).now_ms() == stop
    assert abs(wall_time_of(clock, stop) - (clock.anchor_wall_ms + 1) / 1000) < 1e-9
