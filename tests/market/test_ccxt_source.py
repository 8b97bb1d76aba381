"""The ccxt market data client, against a hand-written fake exchange.

A live exchange cannot be reached from this machine, so a hand-written fake stands in for it:
``FakeExchange`` below has the same methods and attributes the client uses on a ccxt exchange
(``load_markets``, ``markets``, ``fetch_ohlcv``, ``fetch_trades``, ``fetch_funding_rate_history``,
``milliseconds``, ``rateLimit``, ``enableRateLimit``, ``has``, ``timeframes``, ``urls``,
``set_sandbox_mode``) and raises ccxt's real error classes. Where the client builds the exchange
itself, the tests use real ccxt exchange objects and never call the network.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

import ccxt
import polars as pl
import pytest

from sapphire_domain.candles import CANDLE_SCHEMA, duplicate_rows, gap_reports
from sapphire_domain.errors import (
    ConfigError,
    ExchangeRejectedError,
    ExchangeUnavailableError,
    UnknownSymbolError,
)
from sapphire_domain.market_schemas import FUNDING_SCHEMA, TRADE_SCHEMA
from sapphire_market.ccxt_source import CcxtMarketData
from sapphire_market.source import MarketDataSource

MINUTE = 60_000
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC


def expected_row(ts: int) -> list[float]:
    """The fake's deterministic candle at open time ``ts``."""
    level = 100.0 + (ts // MINUTE) % 50
    return [ts, level, level + 1.5, level - 1.0, level + 0.5, 1.0 + (ts // MINUTE) % 7]


class FakeExchange:
    """A hand-written stand-in for a ccxt exchange, because a live one cannot be reached here.

    It serves deterministic 1m candles from ``T0`` up to and including the still-open candle at
    ``now``, like a real exchange does. Knobs:
    max_page: the most rows one page returns, whatever ``limit`` asks (a short-paging exchange).
    overlap: each page starts this many bars before ``since`` (overlapping pages).
    stall_from: from this time on, every page is the same page at ``stall_from`` (no progress).
    failures: errors raised, one per call, before calls succeed.
    always: an error raised on every call.
    """

    id = "fakex"

    def __init__(
        self,
        *,
        now: int = T0 + 5_000 * MINUTE + 30_000,
        max_page: int | None = None,
        overlap: int = 0,
        stall_from: int | None = None,
        failures: list[Exception] | None = None,
        always: Exception | None = None,
        enable_rate_limit: bool = True,
        rate_limit: int = 50,
    ) -> None:
        self.now = now
        self.max_page = max_page
        self.overlap = overlap
        self.stall_from = stall_from
        self.failures = list(failures or [])
        self.always = always
        self.enableRateLimit = enable_rate_limit
        self.rateLimit = rate_limit
        self.has: dict[str, Any] = {
            "fetchOHLCV": True,
            "fetchTrades": True,
            "fetchFundingRateHistory": True,
        }
        self.timeframes = {"1m": "1m", "1h": "1h"}
        self.urls: dict[str, Any] = {"api": "https://fake.invalid", "test": None}
        self.markets: dict[str, dict[str, Any]] | None = None
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.served_ts: list[int] = []

    def milliseconds(self) -> int:
        return self.now

    def set_sandbox_mode(self, enabled: bool) -> None:
        raise ccxt.NotSupported(f"{self.id} does not have a sandbox URL")

    def _enter(self, name: str, **kwargs: Any) -> None:
        self.calls.append((name, kwargs))
        if self.always is not None:
            raise self.always
        if self.failures:
            raise self.failures.pop(0)

    def load_markets(self) -> dict[str, dict[str, Any]]:
        self._enter("load_markets")
        self.markets = {
            "BTC/USDT": {"symbol": "BTC/USDT", "spot": True, "swap": False, "future": False},
            "ETH/USDT": {"symbol": "ETH/USDT", "spot": True, "swap": False, "future": False},
            "BTC/USDT:USDT": {"symbol": "BTC/USDT:USDT", "spot": False, "swap": True},
        }
        return self.markets

    def fetch_ohlcv(
        self, symbol: str, timeframe: str, since: int | None = None, limit: int | None = None
    ) -> list[list[float]]:
        self._enter("fetch_ohlcv", symbol=symbol, since=since, limit=limit)
        assert since is not None and limit is not None
        first = max(T0, -(-since // MINUTE) * MINUTE - self.overlap * MINUTE)
        if self.stall_from is not None and since >= self.stall_from:
            first = self.stall_from
        size = min(limit, self.max_page or limit)
        rows = [expected_row(ts) for ts in range(first, first + size * MINUTE, MINUTE)]
        rows = [row for row in rows if row[0] <= self.now]  # includes the open candle
        self.served_ts.extend(int(row[0]) for row in rows)
        return rows

    def fetch_trades(
        self, symbol: str, since: int | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        self._enter("fetch_trades", symbol=symbol, since=since, limit=limit)
        assert since is not None and limit is not None
        # Two trades every 10 s, both in the same millisecond, ids by position.
        first = -(-since // 10_000) * 10_000
        trades = []
        for ts in range(first, min(first + 10_000 * limit, self.now), 10_000):
            for k, side in enumerate(("buy", "sell")):
                trade_id = f"{ts}-{k}"
                trades.append(
                    {"id": trade_id, "timestamp": ts, "side": side, "price": 1.0, "amount": 2.0}
                )
        return trades[:limit]

    def fetch_funding_rate_history(
        self, symbol: str, since: int | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        self._enter("fetch_funding_rate_history", symbol=symbol, since=since, limit=limit)
        assert since is not None and limit is not None
        eight_hours = 8 * 3_600_000
        first = -(-since // eight_hours) * eight_hours
        stamps = range(first, min(first + eight_hours * limit, self.now), eight_hours)
        return [{"symbol": symbol, "timestamp": ts, "fundingRate": 0.0001} for ts in stamps]

    def count(self, name: str) -> int:
        return sum(1 for call, _ in self.calls if call == name)


class RecordingSleep:
    """Records the backoffs the client asks for instead of sleeping."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def make_client(
    exchange: FakeExchange, sleep: Callable[[float], None] | None = None, **kwargs: Any
) -> CcxtMarketData:
    return CcxtMarketData(
        "fakex",
        exchange=exchange,
        sleep=sleep or RecordingSleep(),
        rng=random.Random(7),
        **kwargs,
    )


def candle_ts(frame: pl.DataFrame) -> list[int]:
    return frame["ts"].dt.epoch("ms").to_list()


# --- candles -------------------------------------------------------------------------------------


def test_client_satisfies_the_market_data_source_protocol() -> None:
    assert isinstance(make_client(FakeExchange()), MarketDataSource)


def test_a_long_range_is_paged_into_exactly_the_expected_candles(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeExchange(max_page=300)  # asks for 1000, gets 300: a short-paging exchange
    client = make_client(fake, page_limit=1000)
    end = T0 + 4_000 * MINUTE
    with caplog.at_level(logging.INFO, logger="sapphire_market.ccxt_source"):
        frame = client.fetch_candles("BTC/USDT", "1m", T0, end)

    assert frame.schema == CANDLE_SCHEMA
    assert candle_ts(frame) == list(range(T0, end, MINUTE))
    assert duplicate_rows(frame).is_empty()
    assert gap_reports(frame, "1m")[0].missing_bars == 0
    expected = [expected_row(ts)[1:] for ts in range(T0, end, MINUTE)]
    assert frame.select("open", "high", "low", "close", "volume").rows() == [
        tuple(row) for row in expected
    ]
    assert fake.count("fetch_ohlcv") == 14  # ceil(4000 / 300)
    assert "pages=14 rows=4000" in caplog.text


def test_overlapping_pages_are_deduplicated() -> None:
    fake = FakeExchange(max_page=100, overlap=30)
    frame = make_client(fake).fetch_candles("BTC/USDT", "1m", T0, T0 + 1_000 * MINUTE)
    assert candle_ts(frame) == list(range(T0, T0 + 1_000 * MINUTE, MINUTE))
    assert fake.count("fetch_ohlcv") > 10  # the overlap really made more pages


def test_rows_outside_the_range_are_trimmed() -> None:
    fake = FakeExchange(overlap=5)
    start, end = T0 + 10 * MINUTE + 1, T0 + 20 * MINUTE + 1  # not on the candle grid
    frame = make_client(fake).fetch_candles("BTC/USDT", "1m", start, end)
    assert candle_ts(frame) == list(range(T0 + 11 * MINUTE, T0 + 21 * MINUTE, MINUTE))


def test_the_still_open_candle_is_dropped() -> None:
    now = T0 + 200 * MINUTE + 15_000  # 15 s into the candle opening at T0 + 200 min
    fake = FakeExchange(now=now)
    frame = make_client(fake).fetch_candles("BTC/USDT", "1m", T0, T0 + 1_000 * MINUTE)
    open_candle = T0 + 200 * MINUTE
    assert open_candle in fake.served_ts  # the exchange did hand it over
    assert candle_ts(frame)[-1] == open_candle - MINUTE
    assert len(frame) == 200


def test_a_page_that_makes_no_progress_ends_the_walk(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeExchange(max_page=100, stall_from=T0 + 250 * MINUTE)
    with caplog.at_level(logging.WARNING, logger="sapphire_market.ccxt_source"):
        frame = make_client(fake).fetch_candles("BTC/USDT", "1m", T0, T0 + 1_000 * MINUTE)
    assert fake.count("fetch_ohlcv") <= 5
    assert candle_ts(frame) == list(range(T0, T0 + 350 * MINUTE, MINUTE))
    assert "no progress" in caplog.text


def test_an_empty_page_ends_the_walk() -> None:
    fake = FakeExchange(now=T0 + 50 * MINUTE)
    frame = make_client(fake).fetch_candles("BTC/USDT", "1m", T0 - 500 * MINUTE, T0 + MINUTE)
    assert candle_ts(frame) == [T0]


def test_a_range_in_the_future_makes_no_request() -> None:
    fake = FakeExchange()
    frame = make_client(fake).fetch_candles("BTC/USDT", "1m", fake.now, fake.now + 10 * MINUTE)
    assert frame.is_empty() and frame.schema == CANDLE_SCHEMA
    assert fake.count("fetch_ohlcv") == 0


def test_an_exchange_that_does_not_throttle_is_paced_by_its_rate_limit() -> None:
    fake = FakeExchange(max_page=100, enable_rate_limit=False, rate_limit=200)
    sleep = RecordingSleep()
    make_client(fake, sleep=sleep).fetch_candles("BTC/USDT", "1m", T0, T0 + 500 * MINUTE)
    assert fake.count("fetch_ohlcv") == 5
    assert sleep.calls == [0.2] * 4  # between pages, not after the last


def test_an_unsupported_timeframe_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="'5m'"):
        make_client(FakeExchange()).fetch_candles("BTC/USDT", "5m", T0, T0 + MINUTE)


# --- symbols -------------------------------------------------------------------------------------


def test_markets_are_loaded_once() -> None:
    fake = FakeExchange()
    client = make_client(fake)
    assert client.list_symbols() == ["BTC/USDT", "BTC/USDT:USDT", "ETH/USDT"]
    client.list_symbols()
    client.fetch_candles("ETH/USDT", "1m", T0, T0 + MINUTE)
    assert fake.count("load_markets") == 1


def test_an_unlisted_symbol_names_the_symbol_and_the_exchange() -> None:
    fake = FakeExchange()
    with pytest.raises(UnknownSymbolError, match=r"'BTC/USD'.*'fakex'.*BTC/USDT"):
        make_client(fake).fetch_candles("BTC/USD", "1m", T0, T0 + MINUTE)
    assert fake.count("fetch_ohlcv") == 0


def test_now_is_the_exchange_clock() -> None:
    fake = FakeExchange(now=T0 + 123)
    assert make_client(fake).now_ms() == T0 + 123


# --- retries and errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error_class",
    [
        ccxt.RateLimitExceeded,
        ccxt.DDoSProtection,
        ccxt.RequestTimeout,
        ccxt.NetworkError,
        ccxt.ExchangeNotAvailable,
    ],
)
def test_network_errors_are_retried_with_growing_backoff(error_class: type[Exception]) -> None:
    fake = FakeExchange()
    sleep = RecordingSleep()
    client = make_client(fake, sleep=sleep, backoff_s=0.5, max_backoff_s=60.0, max_retries=5)
    client.list_symbols()
    fake.failures = [error_class("transient") for _ in range(4)]

    frame = client.fetch_candles("BTC/USDT", "1m", T0, T0 + 10 * MINUTE)

    assert len(frame) == 10
    assert fake.count("fetch_ohlcv") == 5
    assert len(sleep.calls) == 4
    assert all(
        later > earlier for earlier, later in zip(sleep.calls, sleep.calls[1:], strict=False)
    )
    for attempt, delay in enumerate(sleep.calls):
        assert 0.5 * 0.5 * 2**attempt <= delay <= 0.5 * 2**attempt


def test_backoff_is_capped() -> None:
    fake = FakeExchange(failures=[ccxt.RequestTimeout("slow") for _ in range(6)])
    sleep = RecordingSleep()
    make_client(fake, sleep=sleep, backoff_s=1.0, max_backoff_s=2.0, max_retries=6).list_symbols()
    assert len(sleep.calls) == 6
    assert max(sleep.calls) <= 2.0


def test_exhausted_retries_name_the_exchange_the_call_and_the_last_error() -> None:
    fake = FakeExchange(always=ccxt.RateLimitExceeded("429 too many requests"))
    sleep = RecordingSleep()
    with pytest.raises(ExchangeUnavailableError) as raised:
        make_client(fake, sleep=sleep, max_retries=2).list_symbols()
    message = str(raised.value)
    assert "'fakex'" in message
    assert "load_markets" in message
    assert "RateLimitExceeded: 429 too many requests" in message
    assert fake.count("load_markets") == 3
    assert len(sleep.calls) == 2


@pytest.mark.parametrize(
    "error",
    [
        ccxt.ExchangeError("no"),
        ccxt.AuthenticationError("bad key"),
        ccxt.BadRequest("bad since"),
        ccxt.InsufficientFunds("broke"),
    ],
)
def test_exchange_errors_are_not_retried(error: Exception) -> None:
    fake = FakeExchange()
    sleep = RecordingSleep()
    client = make_client(fake, sleep=sleep)
    client.list_symbols()
    fake.always = error
    with pytest.raises(ExchangeRejectedError, match=type(error).__name__):
        client.fetch_candles("BTC/USDT", "1m", T0, T0 + 10 * MINUTE)
    assert fake.count("fetch_ohlcv") == 1
    assert sleep.calls == []


def test_bad_symbol_from_the_exchange_is_an_unknown_symbol_error() -> None:
    fake = FakeExchange()
    client = make_client(fake)
    client.list_symbols()
    fake.always = ccxt.BadSymbol("fakex does not have market symbol BTC/USDT")
    with pytest.raises(UnknownSymbolError, match="'fakex'"):
        client.fetch_candles("BTC/USDT", "1m", T0, T0 + 10 * MINUTE)
    assert fake.count("fetch_ohlcv") == 1


# --- trades and funding --------------------------------------------------------------------------


def test_trades_are_paged_deduplicated_and_mapped_to_the_trade_schema() -> None:
    fake = FakeExchange()
    client = make_client(fake, page_limit=7)  # odd, so a page splits a millisecond's pair
    trades = client.fetch_trades("BTC/USDT", T0, T0 + 10 * MINUTE)
    assert trades is not None
    assert trades.schema == TRADE_SCHEMA
    assert len(trades) == 2 * 60  # two trades every 10 s for 10 minutes, none twice
    assert trades["ts"].is_sorted()
    assert set(trades["side"]) == {"buy", "sell"}


def test_trades_are_none_when_the_exchange_has_none() -> None:
    fake = FakeExchange()
    fake.has["fetchTrades"] = False
    assert make_client(fake).fetch_trades("BTC/USDT", T0, T0 + MINUTE) is None


def test_funding_of_a_perpetual_maps_to_the_funding_schema() -> None:
    fake = FakeExchange(now=T0 + 10 * 86_400_000)
    funding = make_client(fake, page_limit=4).fetch_funding("BTC/USDT:USDT", T0, T0 + 86_400_000)
    assert funding is not None
    assert funding.schema == FUNDING_SCHEMA
    assert funding["ts"].dt.epoch("ms").to_list() == [T0, T0 + 8 * 3_600_000, T0 + 16 * 3_600_000]
    assert funding["rate"].to_list() == [0.0001] * 3


def test_funding_of_a_spot_market_is_none() -> None:
    fake = FakeExchange()
    assert make_client(fake).fetch_funding("BTC/USDT", T0, T0 + 86_400_000) is None
    assert fake.count("fetch_funding_rate_history") == 0


# --- construction, sandbox and secrets -----------------------------------------------------------


def test_an_unknown_exchange_id_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"'binanse'.*binance"):
        CcxtMarketData("binanse")


def test_credentials_beside_an_injected_exchange_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="credentials"):
        CcxtMarketData("fakex", exchange=FakeExchange(), api_key="AKFAKE-1234-KEY")


def test_a_built_exchange_has_rate_limiting_enabled() -> None:
    client = CcxtMarketData("kraken")
    assert isinstance(client.exchange, ccxt.kraken)
    assert client.exchange.enableRateLimit is True
    assert client.exchange.rateLimit > 0


def test_aster_is_available_by_its_ccxt_id() -> None:
    assert isinstance(CcxtMarketData("aster").exchange, ccxt.Exchange)


def test_sandbox_mode_switches_a_real_exchange_to_its_testnet() -> None:
    client = CcxtMarketData("binance", sandbox=True)
    assert client.exchange.isSandboxModeEnabled is True


def test_sandbox_on_an_exchange_without_one_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="'kraken' has no sandbox"):
        CcxtMarketData("kraken", sandbox=True)


def test_sandbox_not_supported_becomes_a_config_error() -> None:
    fake = FakeExchange()
    fake.urls["test"] = "https://test.fake.invalid"  # claims one, then refuses
    with pytest.raises(ConfigError, match="'fakex' has no sandbox"):
        make_client(fake, sandbox=True)


SECRETS = {"api_key": "AKFAKE-1234-KEY", "secret": "sEcReT-fake-5678", "password": "pw-fake-9"}


def test_credentials_stay_out_of_repr_logs_and_errors(caplog: pytest.LogCaptureFixture) -> None:
    sleep = RecordingSleep()
    client = CcxtMarketData(
        "binance",
        api_key=SECRETS["api_key"],
        secret=SECRETS["secret"],
        password=SECRETS["password"],
        sleep=sleep,
        max_retries=1,
    )
    exchange = client.exchange
    assert isinstance(exchange, ccxt.binance)
    assert exchange.apiKey == SECRETS["api_key"]  # the credentials did reach ccxt

    # No network: the real exchange object's two calls are replaced, and the errors echo the key
    # the way an exchange's error body can.
    exchange.load_markets = lambda *args, **kwargs: {"BTC/USDT": {"spot": True}}
    errors = [
        ccxt.NetworkError(f"timeout on GET /klines?apiKey={SECRETS['api_key']}"),
        ccxt.AuthenticationError(f"binance {SECRETS['secret']} {SECRETS['password']} invalid"),
    ]

    def failing_fetch_ohlcv(*args: Any, **kwargs: Any) -> Any:
        raise errors.pop(0)

    exchange.fetch_ohlcv = failing_fetch_ohlcv
    with (
        caplog.at_level(logging.DEBUG),
        pytest.raises(ExchangeRejectedError) as raised,
    ):
        client.fetch_candles("BTC/USDT", "1m", T0, T0 + MINUTE)

    shown = [repr(client), str(client), str(raised.value), caplog.text]
    assert "binance" in repr(client) and "authenticated=True" in repr(client)
    assert "***" in str(raised.value)
    assert sleep.calls  # the network error was retried and logged
    for secret in SECRETS.values():
        for text in shown:
            assert secret not in text
