"""The shared replay clock as the commands drive it: start, resume, hold and run to a moment.

Every process of the embedded default reads the same clock file (``ReplayClockFile``); these
helpers only decide what to write into it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sapphire_domain.clock import ReplayClock
from sapphire_domain.settings import Settings
from sapphire_market.replay import ReplayClockFile, ReplayExchange


def clock_file(state: Path) -> ReplayClockFile:
    """The clock of a state folder; with no session it stands at the end of the bundled data."""
    return ReplayClockFile(state / "replay_clock.json", default_ms=ReplayExchange().data_end_ms)


def session_start(settings: Settings, at: datetime | None = None) -> datetime:
    """Where a new replay session begins: ``at``, else ``replay.start``, else the universe's
    first day."""
    start = (
        at
        or settings.replay.start
        or datetime.combine(settings.universe.start, datetime.min.time(), tzinfo=UTC)
    )
    return start if start.tzinfo is not None else start.replace(tzinfo=UTC)


def start_or_resume(
    clock: ReplayClockFile, settings: Settings, speed: float, at: datetime | None = None
) -> tuple[ReplayClock, bool]:
    """Run the clock at ``speed``: from ``at`` when given, else from where an earlier session
    stands (held or running), else from ``session_start``. Returns the clock and whether it
    resumed."""
    resumed = at is None and clock.path.exists()
    start_ms = clock.now_ms() if resumed else _ms(session_start(settings, at))
    return clock.start(start_ms, speed), resumed


def hold(clock: ReplayClockFile) -> int:
    """Stop the clock where it stands (speed 0), so the next run resumes from there."""
    now = clock.now_ms()
    clock.start(now, 0.0)
    return now


def run_until(path: Path, from_ms: int, speed: float, stop_ms: int) -> ReplayClock:
    """Run the clock from ``from_ms`` at ``speed``; it stops by itself at ``stop_ms`` and holds
    there (the clock never passes its ``stop_ms``)."""
    return ReplayClockFile(path, default_ms=lambda: stop_ms).start(from_ms, speed)


def wall_time_of(clock: ReplayClock, sim_ms: int) -> float:
    """The wall time (epoch seconds) at which a running clock reads ``sim_ms``."""
    return (clock.anchor_wall_ms + (sim_ms - clock.anchor_sim_ms) / clock.speed) / 1000


def utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
