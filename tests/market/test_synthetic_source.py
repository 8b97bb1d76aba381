"""The synthetic market data source: closed candles only, exact ranges, a fixed universe."""

from __future__ import annotations

import polars as pl
import pytest

from sapphire_domain.candles import CANDLE_SCHEMA
from sapphire_domain.errors import ConfigError, UnknownSymbolError
from sapphire_domain.synthetic import generate_candles
from sapphire_market.source import MarketDataSource
from sapphire_market.synthetic_source import SyntheticMarketData

MINUTE = 60_000
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC, the default start


def open_times(frame: pl.DataFrame) -> list[int]:
    return frame["ts"].dt.epoch("ms").to_list()


@pytest.fixture(scope="module")
def market() -> SyntheticMarketData:
    return SyntheticMarketData(n_symbols=3, days=2, timeframe="1m", seed=9)


def test_it_is_a_market_data_source(market: SyntheticMarketData) -> None:
    assert isinstance(market, MarketDataSource)
    assert market.fetch_trades("SYN000/USD", T0, T0 + MINUTE) is None
    assert market.fetch_funding("SYN000/USD", T0, T0 + MINUTE) is None


def test_the_universe_is_fixed(market: SyntheticMarketData) -> None:
    assert market.list_symbols() == ["SYN000/USD", "SYN001/USD", "SYN002/USD"]


def test_by_default_now_is_the_end_and_everything_has_closed(market: SyntheticMarketData) -> None:
    assert market.now_ms() == T0 + 2 * 1440 * MINUTE
    frame = market.fetch_candles("SYN001/USD", "1m", 0, 2**62)
    expected = generate_candles(3, 2, "1m", seed=9).filter(pl.col("symbol") == "SYN001/USD")
    assert frame.equals(expected)


def test_ranges_are_half_open_on_the_open_time(market: SyntheticMarketData) -> None:
    frame = market.fetch_candles("SYN002/USD", "1m", T0 + 10 * MINUTE + 1, T0 + 20 * MINUTE)
    assert frame.schema == CANDLE_SCHEMA
    assert open_times(frame) == list(range(T0 + 11 * MINUTE, T0 + 20 * MINUTE, MINUTE))
    assert (frame["symbol"] == "SYN002/USD").all()


def test_a_range_outside_the_market_is_empty(market: SyntheticMarketData) -> None:
    for start, end in [(T0 - 10 * MINUTE, T0), (market.end_ms, market.end_ms + MINUTE)]:
        frame = market.fetch_candles("SYN000/USD", "1m", start, end)
        assert frame.is_empty() and frame.schema == CANDLE_SCHEMA


def test_only_candles_closed_at_the_clock_are_visible() -> None:
    now = [T0 + 30 * MINUTE + 59_999]  # the candle opening at T0 + 30 min has not closed
    market = SyntheticMarketData(n_symbols=1, days=1, seed=1, clock=lambda: now[0])
    assert open_times(market.fetch_candles("SYN000/USD", "1m", T0, T0 + 60 * MINUTE))[-1] == (
        T0 + 29 * MINUTE
    )
    now[0] += 1
    assert open_times(market.fetch_candles("SYN000/USD", "1m", T0, T0 + 60 * MINUTE))[-1] == (
        T0 + 30 * MINUTE
    )


def test_coarser_timeframes_aggregate_the_generated_bars(market: SyntheticMarketData) -> None:
    hourly = market.fetch_candles("SYN000/USD", "1h", T0, T0 + 3 * 60 * MINUTE)
    minutes = market.fetch_candles("SYN000/USD", "1m", T0 + 60 * MINUTE, T0 + 120 * MINUTE)
    assert open_times(hourly) == [T0, T0 + 60 * MINUTE, T0 + 120 * MINUTE]
    second = hourly.row(1, named=True)
    assert second["open"] == minutes["open"][0]
    assert second["close"] == minutes["close"][-1]
    assert second["high"] == minutes["high"].max()
    assert second["low"] == minutes["low"].min()
    assert second["volume"] == pytest.approx(minutes["volume"].sum())


def test_incomplete_and_open_buckets_are_left_out() -> None:
    now = [T0 + 90 * MINUTE]
    market = SyntheticMarketData(n_symbols=1, days=1, seed=2, clock=lambda: now[0])
    assert open_times(market.fetch_candles("SYN000/USD", "1h", T0, T0 + 86_400_000)) == [T0]
    now[0] = market.end_ms
    # 1440 minutes in 7-minute buckets aligned to the epoch: the edge buckets are partial.
    sevens = market.fetch_candles("SYN000/USD", "7m", T0 - 7 * MINUTE, T0 + 86_400_000)
    step = 7 * MINUTE
    first_full = -(-T0 // step) * step
    assert first_full > T0  # so the bucket holding T0 started before the market did
    full_buckets = list(range(first_full, market.end_ms - step + 1, step))
    assert open_times(sevens) == full_buckets
    assert full_buckets[-1] + step < market.end_ms  # and the last bucket would run past its end


def test_a_timeframe_that_is_not_a_multiple_is_a_config_error() -> None:
    market = SyntheticMarketData(n_symbols=1, days=1, timeframe="5m")
    with pytest.raises(ConfigError, match="multiple"):
        market.fetch_candles("SYN000/USD", "7m", T0, T0 + 86_400_000)


def test_an_unknown_symbol_is_refused(market: SyntheticMarketData) -> None:
    with pytest.raises(UnknownSymbolError, match="'BTC/USD'"):
        market.fetch_candles("BTC/USD", "1m", T0, T0 + MINUTE)


def test_the_market_is_generated_once(market: SyntheticMarketData) -> None:
    assert market.candles is market.candles
