"""The download cache keeps closed days, so a retry fetches only what is still missing."""

from datetime import UTC, datetime

import polars as pl

from sapphire_market.download_cache import CandleDownloadCache
from sapphire_market.replay import ReplayExchange

DAY = 86_400_000


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


class CountingSource:
    """The real replay exchange, counting the requests that reach it."""

    def __init__(self, now_ms: int) -> None:
        self.inner = ReplayExchange(clock=lambda: now_ms)
        self.name = "replay"
        self.requests: list[tuple[str, int, int]] = []

    def now_ms(self) -> int:
        return self.inner.now_ms()

    def list_symbols(self) -> list[str]:
        return self.inner.list_symbols()

    def fetch_candles(
        self, symbol: str, timeframe: str, start_ms: int, end_ms: int
    ) -> pl.DataFrame:
        self.requests.append((symbol, start_ms, end_ms))
        return self.inner.fetch_candles(symbol, timeframe, start_ms, end_ms)

    def fetch_trades(self, symbol, start_ms, end_ms):
        return None

    def fetch_funding(self, symbol, start_ms, end_ms):
        return None


def test_consecutive_missing_days_are_one_request_and_a_second_read_none(tmp_path):
    source = CountingSource(now_ms=ms(2019, 1, 1))
    cache = CandleDownloadCache(tmp_path)
    first, downloaded = cache.fetch(source, "BTC/USD", "30m", ms(2018, 5, 1), ms(2018, 5, 11))
    assert downloaded == 10 and len(source.requests) == 1
    again, downloaded = cache.fetch(source, "BTC/USD", "30m", ms(2018, 5, 1), ms(2018, 5, 11))
    assert downloaded == 0 and len(source.requests) == 1
    assert again.equals(first)
    assert (
        first.height
        == source.inner.fetch_candles("BTC/USD", "30m", ms(2018, 5, 1), ms(2018, 5, 11)).height
    )


def test_only_missing_days_are_fetched_around_cached_ones(tmp_path):
    source = CountingSource(now_ms=ms(2019, 1, 1))
    cache = CandleDownloadCache(tmp_path)
    cache.fetch(source, "BTC/USD", "30m", ms(2018, 5, 3), ms(2018, 5, 5))
    source.requests.clear()
    frame, downloaded = cache.fetch(source, "BTC/USD", "30m", ms(2018, 5, 1), ms(2018, 5, 7))
    assert downloaded == 4
    assert source.requests == [
        ("BTC/USD", ms(2018, 5, 1), ms(2018, 5, 3)),
        ("BTC/USD", ms(2018, 5, 5), ms(2018, 5, 7)),
    ]
    assert frame["ts"].is_sorted() and frame["ts"].n_unique() == frame.height


def test_a_day_still_open_is_never_cached(tmp_path):
    source = CountingSource(now_ms=ms(2018, 5, 2, 12))
    cache = CandleDownloadCache(tmp_path)
    partial, _ = cache.fetch(source, "BTC/USD", "30m", ms(2018, 5, 1), ms(2018, 5, 3))
    assert partial["ts"].max() < datetime(2018, 5, 2, 12, tzinfo=UTC)
    source.requests.clear()
    cache.fetch(source, "BTC/USD", "30m", ms(2018, 5, 1), ms(2018, 5, 3))
    # The closed first day comes from the cache; the open second day is asked for again.
    assert source.requests == [("BTC/USD", ms(2018, 5, 2), ms(2018, 5, 3))]
