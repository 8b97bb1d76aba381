"""The replay exchange serves the bundled real data, and nothing that has not closed yet."""

import json
import shutil
from datetime import UTC, datetime

import polars as pl
import pytest

from sapphire_domain.candles import schema_problems
from sapphire_domain.errors import ConfigError, DataFileError, UnknownSymbolError
from sapphire_market.replay import BUNDLED_DATA_DIR, ReplayClockFile, ReplayExchange


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


def test_the_default_universe_is_bundled():
    symbols = ReplayExchange().list_symbols()
    assert {"BTC/USD", "ETH/USD", "XRP/USD", "EOS/USD"} <= set(symbols)
    assert "XRP/USDT:USDT" in symbols  # the perpetual, in ccxt's unified spelling


def test_a_candle_is_visible_only_once_it_has_closed():
    now = ms(2018, 3, 1, 12, 15)
    exchange = ReplayExchange(clock=lambda: now)
    candles = exchange.fetch_candles("BTC/USD", "30m", ms(2018, 3, 1), ms(2018, 3, 2))
    assert schema_problems(candles) == []
    last_open = candles["ts"].max()
    assert last_open == datetime(2018, 3, 1, 11, 30, tzinfo=UTC)  # 12:00 is still open at 12:15


def test_a_range_is_half_open_on_open_time():
    exchange = ReplayExchange()
    candles = exchange.fetch_candles("ETH/USD", "30m", ms(2018, 3, 1), ms(2018, 3, 2))
    assert candles["ts"].min() == datetime(2018, 3, 1, tzinfo=UTC)
    assert candles["ts"].max() < datetime(2018, 3, 2, tzinfo=UTC)
    assert candles.height == 48


def test_coarser_timeframes_are_aggregated_from_complete_buckets():
    exchange = ReplayExchange()
    half_hours = exchange.fetch_candles("BTC/USD", "30m", ms(2018, 3, 1), ms(2018, 3, 2))
    hours = exchange.fetch_candles("BTC/USD", "1h", ms(2018, 3, 1), ms(2018, 3, 2))
    first = hours.row(0, named=True)
    pair = half_hours.head(2)
    assert first["open"] == pair["open"][0] and first["close"] == pair["close"][1]
    assert first["high"] == pair["high"].max() and first["volume"] == pytest.approx(
        pair["volume"].sum()
    )


def test_a_timeframe_the_data_cannot_make_is_named():
    with pytest.raises(ConfigError, match="45m"):
        ReplayExchange().fetch_candles("BTC/USD", "45m", 0, ms(2019, 1, 1))


def test_an_unknown_symbol_is_named_with_what_exists():
    with pytest.raises(UnknownSymbolError, match=r"DOGE/USD.*BTC/USD"):
        ReplayExchange().fetch_candles("DOGE/USD", "30m", 0, ms(2019, 1, 1))


def test_trades_and_funding_exist_only_where_the_data_has_them():
    exchange = ReplayExchange(clock=lambda: ms(2030, 1, 1))
    assert exchange.fetch_trades("BTC/USD", 0, ms(2030, 1, 1)) is None
    trades = exchange.fetch_trades("XRP/ETH", 0, ms(2030, 1, 1))
    assert trades is not None and trades.height == 12_477
    funding = exchange.fetch_funding("XRP/USDT:USDT", 0, ms(2030, 1, 1))
    assert funding is not None and funding.height == 91 and funding["rate"].is_not_null().all()


def test_funding_published_after_now_is_not_visible():
    exchange = ReplayExchange(clock=lambda: ms(2021, 11, 20))
    funding = exchange.fetch_funding("XRP/USDT:USDT", 0, ms(2030, 1, 1))
    assert funding is not None and 0 < funding.height < 91
    assert funding["ts"].max() <= datetime(2021, 11, 20, tzinfo=UTC)


def test_a_corrupt_data_file_is_named(tmp_path):
    shutil.copy(BUNDLED_DATA_DIR / "BTC_USD-30m.parquet", tmp_path)
    (tmp_path / "ETH_USD-30m.parquet").write_bytes(b"PAR1 this is not parquet")
    exchange = ReplayExchange(data_dir=tmp_path)
    with pytest.raises(DataFileError, match=r"ETH_USD-30m\.parquet"):
        exchange.fetch_candles("ETH/USD", "30m", 0, ms(2019, 1, 1))


def test_a_data_file_with_the_wrong_columns_is_named(tmp_path):
    frame = pl.read_parquet(BUNDLED_DATA_DIR / "BTC_USD-30m.parquet").drop("volume")
    frame.write_parquet(tmp_path / "BTC_USD-30m.parquet")
    with pytest.raises(DataFileError, match="volume"):
        ReplayExchange(data_dir=tmp_path).fetch_candles("BTC/USD", "30m", 0, ms(2019, 1, 1))


def test_the_shared_clock_file_moves_every_reader(tmp_path):
    path = tmp_path / "clock.json"
    exchange = ReplayExchange.on_clock_file(path)
    assert exchange.now_ms() == exchange.data_end_ms()  # no session: all history visible
    clock = ReplayClockFile(path, default_ms=exchange.data_end_ms)
    clock.start(ms(2018, 1, 1), speed=0.0)
    assert ReplayExchange.on_clock_file(path).now_ms() == ms(2018, 1, 1)
    assert exchange.fetch_candles("BTC/USD", "30m", 0, ms(2019, 1, 1))["ts"].max() < datetime(
        2018, 1, 1, tzinfo=UTC
    )


def test_a_damaged_clock_file_says_how_to_recover(tmp_path):
    path = tmp_path / "clock.json"
    path.write_text(json.dumps({"speed": 1}))
    with pytest.raises(ConfigError, match="delete it"):
        ReplayExchange.on_clock_file(path).now_ms()
