"""The replay clock: simulated market time that advances with wall time at a chosen speed.

One clock drives the whole embedded default (the replay exchange, the sensors and the paper
venue), so every process must agree on it; its state is a small file written by whoever starts a
replay session and read by everyone else.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReplayClock:
    """Simulated time = ``anchor_sim_ms + (wall - anchor_wall_ms) * speed``, never past ``stop_ms``.

    anchor_sim_ms: simulated time at the anchor, UTC epoch milliseconds.
    anchor_wall_ms: wall time at the anchor, UTC epoch milliseconds.
    speed: simulated seconds per wall-clock second; 0 freezes the clock at the anchor.
    stop_ms: the end of the replayed data, where the clock stops.
    """

    anchor_sim_ms: int
    anchor_wall_ms: int
    speed: float
    stop_ms: int | None = None

    def __post_init__(self) -> None:
        if self.speed < 0:
            raise ValueError(f"replay speed must not be negative, got {self.speed}")

    def now_ms(self, wall_ms: int) -> int:
        simulated = self.anchor_sim_ms + int(max(0, wall_ms - self.anchor_wall_ms) * self.speed)
        return simulated if self.stop_ms is None else min(simulated, self.stop_ms)

    @classmethod
    def frozen_at(cls, sim_ms: int) -> ReplayClock:
        return cls(anchor_sim_ms=sim_ms, anchor_wall_ms=0, speed=0.0, stop_ms=sim_ms)
