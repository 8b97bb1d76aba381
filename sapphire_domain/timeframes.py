"""Candle timeframes such as ``30m`` or ``1h``, as ccxt spells them."""

from __future__ import annotations

import re
from datetime import timedelta

from sapphire_domain.errors import ConfigError

_UNITS_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}
_PATTERN = re.compile(r"^(\d+)([mhdw])$")


def timeframe_ms(timeframe: str) -> int:
    """Length of one candle in milliseconds; raises ConfigError for an unknown spelling."""
    match = _PATTERN.match(timeframe)
    if match is None or int(match.group(1)) == 0:
        raise ConfigError(
            f"unknown timeframe {timeframe!r}: use a positive count and one of m, h, d, w "
            "(for example '30m' or '1h')"
        )
    return int(match.group(1)) * _UNITS_MS[match.group(2)]


def timeframe_delta(timeframe: str) -> timedelta:
    return timedelta(milliseconds=timeframe_ms(timeframe))


def bars_per_day(timeframe: str) -> float:
    return 86_400_000 / timeframe_ms(timeframe)
