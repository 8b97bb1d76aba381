"""Time partitions shared by every market-time asset."""

from __future__ import annotations

import math
from datetime import datetime

import dagster as dg

from sapphire_domain.settings import UniverseSettings
from sapphire_domain.timeframes import timeframe_ms

DAY_MS = 86_400_000


def time_partitions(universe: UniverseSettings) -> dg.DailyPartitionsDefinition:
    """One partition per UTC day of market time.

    Days keep a partition small enough to retry cheaply and large enough that a two-year backfill
    is about 730 partitions in a single run. An open-ended universe includes the current day
    (``end_offset=1``) so the live loop can fill it as candles close.
    """
    if universe.end is None:
        return dg.DailyPartitionsDefinition(start_date=universe.start.isoformat(), end_offset=1)
    return dg.DailyPartitionsDefinition(
        start_date=universe.start.isoformat(), end_date=universe.end.isoformat()
    )


def lookback_days(bars: int, timeframe: str) -> int:
    """Whole days of history that hold at least ``bars`` candles of ``timeframe``."""
    return max(1, math.ceil(bars * timeframe_ms(timeframe) / DAY_MS))


def window_ms(window: dg.TimeWindow) -> tuple[int, int]:
    return _ms(window.start), _ms(window.end)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
