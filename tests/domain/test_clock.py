"""The replay clock runs at its speed from its anchor and stops at the end of the data."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sapphire_domain.clock import ReplayClock


def test_the_clock_advances_at_its_speed():
    clock = ReplayClock(anchor_sim_ms=1_000, anchor_wall_ms=50_000, speed=60.0)
    assert clock.now_ms(50_000) == 1_000
    assert clock.now_ms(51_000) == 61_000  # one wall second is a simulated minute


def test_the_clock_stops_at_the_end_of_the_data():
    clock = ReplayClock(anchor_sim_ms=0, anchor_wall_ms=0, speed=1000.0, stop_ms=5_000)
    assert clock.now_ms(10_000_000) == 5_000


def test_a_frozen_clock_never_moves():
    clock = ReplayClock.frozen_at(42)
    assert clock.now_ms(0) == clock.now_ms(10**12) == 42


def test_a_negative_speed_is_refused():
    with pytest.raises(ValueError, match="speed"):
        ReplayClock(anchor_sim_ms=0, anchor_wall_ms=0, speed=-1.0)


@given(st.integers(0, 10**12), st.integers(0, 10**6), st.floats(0, 10_000))
def test_simulated_time_never_runs_backwards(start, step, speed):
    clock = ReplayClock(anchor_sim_ms=start, anchor_wall_ms=0, speed=speed)
    assert clock.now_ms(step) <= clock.now_ms(step + 1000)
