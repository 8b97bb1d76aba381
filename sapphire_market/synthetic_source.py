"""A synthetic market offered as a ``MarketDataSource``, so scale tests and benchmarks can
materialise the assets on as many symbols and days as they like."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import cached_property

import polars as pl

from sapphire_domain.candles import closed_before, empty_candles
from sapphire_domain.errors import ConfigError, UnknownSymbolError
from sapphire_domain.synthetic import (
    DEFAULT_START,
    SyntheticMarketParams,
    bar_count,
    generate_candles,
    synthetic_symbols,
)
from sapphire_domain.timeframes import timeframe_ms


class SyntheticMarketData:
    """A fixed universe of synthetic symbols, generated once from a seed.

    n_symbols, days, timeframe, seed, start, params: passed to ``generate_candles``; the market
        is generated at ``timeframe`` on first use, and coarser timeframes that are whole
        multiples of it are aggregated from it (buckets aligned to the epoch), so all timeframes
        tell the same story.
    clock: returns "now" in UTC epoch milliseconds; by default the end of the generated span,
        when every candle has closed. Candles are visible only once closed at ``clock()``.

    Synthetic markets have no trades or funding: those calls return None.
    """

    name = "synthetic"

    def __init__(
        self,
        n_symbols: int = 10,
        days: int = 30,
        timeframe: str = "1m",
        seed: int = 0,
        start: datetime | None = None,
        *,
        params: SyntheticMarketParams | None = None,
        clock: Callable[[], int] | None = None,
    ) -> None:
        self.n_symbols = n_symbols
        self.days = days
        self.timeframe = timeframe
        self.seed = seed
        self.params = params
        self._step = timeframe_ms(timeframe)
        self._start = DEFAULT_START if start is None else start
        self._n_bars = bar_count(days, timeframe)
        self._symbols = synthetic_symbols(n_symbols)
        self._index = {symbol: i for i, symbol in enumerate(self._symbols)}
        self._clock = clock

    def __repr__(self) -> str:
        return (
            f"SyntheticMarketData(n_symbols={self.n_symbols}, days={self.days}, "
            f"timeframe={self.timeframe!r}, seed={self.seed})"
        )

    @property
    def start_ms(self) -> int:
        return int(self._start.timestamp() * 1000)

    @property
    def end_ms(self) -> int:
        """The close of the last generated candle."""
        return self.start_ms + self._n_bars * self._step

    @cached_property
    def candles(self) -> pl.DataFrame:
        """The whole generated market, sorted by (symbol, ts), one block of rows per symbol."""
        return generate_candles(
            self.n_symbols,
            self.days,
            self.timeframe,
            seed=self.seed,
            start=self._start,
            params=self.params,
        )

    def now_ms(self) -> int:
        return self._clock() if self._clock is not None else self.end_ms

    def list_symbols(self) -> list[str]:
        return list(self._symbols)

    def fetch_candles(
        self, symbol: str, timeframe: str, start_ms: int, end_ms: int
    ) -> pl.DataFrame:
        if symbol not in self._index:
            raise UnknownSymbolError(
                f"symbol {symbol!r} is not listed by the synthetic market, which has "
                f"{self.n_symbols} symbols named like {synthetic_symbols(1)[0]!r}"
            )
        step = timeframe_ms(timeframe)
        if step % self._step:
            raise ConfigError(
                f"the synthetic market is generated at {self.timeframe}; {timeframe} is not a "
                "whole multiple of it"
            )
        now = self.now_ms()
        if step == self._step:
            return closed_before(self._base_slice(symbol, start_ms, end_ms), timeframe, now)
        # Buckets opening in [start_ms, end_ms) need base bars up to the last bucket's close.
        first_bucket = -(-start_ms // step) * step
        last_bucket_end = -(-end_ms // step) * step
        base = self._base_slice(symbol, first_bucket, last_bucket_end)
        buckets = (
            base.group_by(
                (pl.col("ts").dt.epoch("ms") // step * step).alias("bucket"), maintain_order=True
            )
            .agg(
                pl.col("symbol").first(),
                pl.col("open").first(),
                pl.col("high").max(),
                pl.col("low").min(),
                pl.col("close").last(),
                pl.col("volume").sum(),
                pl.len().alias("bars"),
            )
            .filter(pl.col("bars") == step // self._step)  # only complete buckets
            .select(
                pl.col("bucket").cast(pl.Datetime("ms", "UTC")).alias("ts"),
                "symbol",
                "open",
                "high",
                "low",
                "close",
                "volume",
            )
        )
        return closed_before(buckets, timeframe, now)

    def fetch_trades(self, symbol: str, start_ms: int, end_ms: int) -> pl.DataFrame | None:
        return None

    def fetch_funding(self, symbol: str, start_ms: int, end_ms: int) -> pl.DataFrame | None:
        return None

    def _base_slice(self, symbol: str, start_ms: int, end_ms: int) -> pl.DataFrame:
        """Rows of one symbol with open time in ``[start_ms, end_ms)``, by index arithmetic on the
        complete grid rather than a filter over the whole market."""
        first = max(0, -(-(start_ms - self.start_ms) // self._step))
        stop = min(self._n_bars, -(-(end_ms - self.start_ms) // self._step))
        if stop <= first:
            return empty_candles()
        offset = self._index[symbol] * self._n_bars
        return self.candles.slice(offset + first, stop - first)
