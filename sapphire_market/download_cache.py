"""A cache of downloaded candles, one file per (source, symbol, timeframe, UTC day).

Only days that had fully closed at the source's clock are cached, and a cached day is immutable,
so a retried backfill re-downloads only what failed: one symbol's failure never costs the others
their downloads. The cache is a staging area, not the warehouse: nothing here is visible to
analysts or downstream assets.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from sapphire_domain.candles import empty_candles
from sapphire_market.source import MarketDataSource

DAY_MS = 86_400_000


def _safe(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", part)


def _day_name(day_start_ms: int) -> str:
    return datetime.fromtimestamp(day_start_ms / 1000, tz=UTC).strftime("%Y-%m-%d")


def _days(start_ms: int, end_ms: int) -> Iterator[int]:
    day = start_ms - start_ms % DAY_MS
    while day < end_ms:
        yield day
        day += DAY_MS


class CandleDownloadCache:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def _path(self, source: str, symbol: str, timeframe: str, day_start_ms: int) -> Path:
        return (
            self.root
            / _safe(source)
            / _safe(timeframe)
            / _safe(symbol)
            / f"{_day_name(day_start_ms)}.parquet"
        )

    def fetch(
        self, source: MarketDataSource, symbol: str, timeframe: str, start_ms: int, end_ms: int
    ) -> tuple[pl.DataFrame, int]:
        """Candles of ``symbol`` in ``[start_ms, end_ms)`` and how many days were downloaded.

        Consecutive missing days are downloaded in one paginated request.
        """
        now_ms = source.now_ms()
        pieces: list[pl.DataFrame] = []
        missing: list[int] = []
        downloaded_days = 0

        def download(days: list[int]) -> None:
            nonlocal downloaded_days
            frame = source.fetch_candles(symbol, timeframe, days[0], days[-1] + DAY_MS)
            downloaded_days += len(days)
            for day in days:
                part = frame.filter(
                    pl.col("ts").dt.epoch("ms").is_between(day, day + DAY_MS, closed="left")
                )
                if day + DAY_MS <= now_ms:
                    self._store(self._path(source.name, symbol, timeframe, day), part)
            pieces.append(frame)

        for day in _days(start_ms, end_ms):
            cached = self._path(source.name, symbol, timeframe, day)
            if cached.exists():
                if missing:
                    download(missing)
                    missing = []
                pieces.append(pl.read_parquet(cached))
            else:
                missing.append(day)
        if missing:
            download(missing)
        if not pieces:
            return empty_candles(), downloaded_days
        frame = pl.concat(pieces).filter(
            pl.col("ts").dt.epoch("ms").is_between(start_ms, end_ms, closed="left")
        )
        # Stored as the source sent it: defects such as duplicates or disorder are left for the
        # blocking checks to name, not hidden here.
        return frame, downloaded_days

    @staticmethod
    def _store(path: Path, frame: pl.DataFrame) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
        frame.write_parquet(tmp)
        os.replace(tmp, path)
