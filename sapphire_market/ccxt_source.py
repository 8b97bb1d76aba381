"""A live exchange through ccxt, offered as a ``MarketDataSource``.

Candles, trades and funding are fetched page by page with ccxt's unified methods. Errors follow
ccxt's hierarchy: failures of the operation (``ccxt.NetworkError`` with ``RateLimitExceeded``,
``DDoSProtection``, ``RequestTimeout`` and ``ExchangeNotAvailable``, and a garbled ``BadResponse``)
may pass, so they are retried with capped, jittered exponential backoff; an ``ccxt.ExchangeError``
is the exchange's considered answer (bad symbol, bad request, bad keys) and is never retried.

Credentials live only inside the ccxt exchange object. They are kept out of this client's repr,
its log lines and the messages of the errors it raises.
"""

from __future__ import annotations

import difflib
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import ccxt
import polars as pl

from sapphire_domain.candles import closed_before, empty_candles, from_ohlcv_rows, sort_candles
from sapphire_domain.errors import (
    ConfigError,
    ExchangeRejectedError,
    ExchangeUnavailableError,
    UnknownSymbolError,
)
from sapphire_domain.market_schemas import (
    FUNDING_SCHEMA,
    TRADE_SCHEMA,
    empty_funding,
    empty_trades,
)
from sapphire_domain.timeframes import timeframe_ms

logger = logging.getLogger(__name__)

# Errors where the same request may succeed a moment later. OperationFailed is the parent of
# NetworkError (and so of RateLimitExceeded, DDoSProtection, RequestTimeout, ExchangeNotAvailable)
# and of BadResponse/NullResponse, which are typically a proxy's error page in place of JSON.
_RETRYABLE: tuple[type[Exception], ...] = (ccxt.OperationFailed,)
_REDACTED = "***"


class CcxtMarketData:
    """Candles, trades and funding from any exchange ccxt supports.

    exchange_id: a ccxt exchange id such as ``"binance"``, ``"kraken"`` or ``"aster"``.
    api_key, secret, password: optional credentials; public market data needs none.
    sandbox: use the exchange's testnet; a ConfigError if the exchange has none.
    max_retries: retries after the first attempt on a retryable error (so ``max_retries + 1``
        attempts in all) before ``ExchangeUnavailableError``.
    backoff_s: the first retry's backoff in seconds; it doubles each retry.
    max_backoff_s: the cap on one backoff.
    page_limit: rows asked for per request; exchanges may return fewer.
    timeout_ms: ccxt's HTTP timeout per request.
    options: extra settings for the ccxt constructor (``httpsProxy``, ``urls``, ``options``...);
        the rate limiter stays on whatever they say.
    exchange: an already-built ccxt exchange (or a stand-in with the same methods); when given,
        exchange_id only names it and no exchange is built.
    sleep: how to wait, injectable so tests do not sleep.
    rng: the source of backoff jitter.
    """

    def __init__(
        self,
        exchange_id: str,
        *,
        api_key: str | None = None,
        secret: str | None = None,
        password: str | None = None,
        sandbox: bool = False,
        max_retries: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        page_limit: int = 1000,
        timeout_ms: int = 10_000,
        options: Mapping[str, Any] | None = None,
        exchange: Any | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if max_retries < 0 or backoff_s < 0 or max_backoff_s < 0 or page_limit < 1:
            raise ConfigError(
                f"{exchange_id}: max_retries, backoff_s and max_backoff_s must not be negative "
                f"and page_limit must be positive (got {max_retries}, {backoff_s}, "
                f"{max_backoff_s}, {page_limit})"
            )
        self.name = exchange_id
        self.sandbox = sandbox
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.page_limit = page_limit
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()
        self._markets: Mapping[str, Mapping[str, Any]] | None = None
        if exchange is not None and (api_key or secret or password):
            raise ConfigError(
                f"{exchange_id}: credentials are given together with a built exchange; "
                "configure them on the exchange object instead"
            )
        if exchange is None:
            exchange = build_exchange(
                exchange_id, api_key, secret, password, timeout_ms, options or {}
            )
        self._exchange = exchange
        if sandbox:
            self._enable_sandbox()

    def __repr__(self) -> str:
        # Deliberately no credentials: only whether there are any.
        authenticated = bool(getattr(self._exchange, "apiKey", None))
        return (
            f"CcxtMarketData(exchange={self.name!r}, sandbox={self.sandbox}, "
            f"authenticated={authenticated})"
        )

    __str__ = __repr__

    @property
    def exchange(self) -> Any:
        """The underlying ccxt exchange object."""
        return self._exchange

    # --- MarketDataSource ----------------------------------------------------------------------

    def now_ms(self) -> int:
        return int(self._exchange.milliseconds())

    def list_symbols(self) -> list[str]:
        return sorted(self._load_markets())

    def fetch_candles(
        self, symbol: str, timeframe: str, start_ms: int, end_ms: int
    ) -> pl.DataFrame:
        """Closed candles with open time in ``[start_ms, end_ms)``, walking forward page by page."""
        self._require_symbol(symbol)
        step = timeframe_ms(timeframe)
        supported = getattr(self._exchange, "timeframes", None)
        if supported and timeframe not in supported:
            raise ConfigError(
                f"{self.name} has no {timeframe!r} candles; it offers {sorted(supported)}"
            )
        now = self.now_ms()
        # A candle opening after now - step has not closed yet, so never ask beyond it.
        stop = min(end_ms, now - step + 1)
        by_ts: dict[int, list[float]] = {}
        since = start_ms
        pages = 0
        while since < stop:
            page = self._call("fetch_ohlcv", symbol, timeframe, since=since, limit=self.page_limit)
            pages += 1
            if not page:
                break
            for row in page:
                ts = int(row[0])
                if start_ms <= ts < end_ms:
                    by_ts[ts] = list(row[:6])  # a later page wins on overlap
            next_since = max(int(row[0]) for row in page) + step
            if next_since <= since:
                logger.warning(
                    "ccxt candle page made no progress exchange=%s symbol=%s timeframe=%s "
                    "since=%d page=%d; stopping",
                    self.name,
                    symbol,
                    timeframe,
                    since,
                    pages,
                )
                break
            since = next_since
            self._pace(since < stop)
        logger.info(
            "ccxt candles fetched exchange=%s symbol=%s timeframe=%s pages=%d rows=%d",
            self.name,
            symbol,
            timeframe,
            pages,
            len(by_ts),
        )
        if not by_ts:
            return empty_candles()
        rows = [by_ts[ts] for ts in sorted(by_ts)]
        return sort_candles(closed_before(from_ohlcv_rows(symbol, rows), timeframe, now))

    def fetch_trades(self, symbol: str, start_ms: int, end_ms: int) -> pl.DataFrame | None:
        """Public trades in ``[start_ms, end_ms)``, or None when the exchange offers none.

        The walk stops at the first empty page, so an exchange that pages by fixed time windows
        may end early across a window without trades.
        """
        self._require_symbol(symbol)
        if not self._has("fetchTrades"):
            return None
        trades = self._walk_records("fetch_trades", symbol, start_ms, end_ms)
        if not trades:
            return empty_trades()
        frame = pl.DataFrame(
            {
                "ts": [int(t["timestamp"]) for t in trades],
                "symbol": [symbol] * len(trades),
                "side": [t.get("side") for t in trades],
                "price": [_float(t.get("price")) for t in trades],
                "amount": [_float(t.get("amount")) for t in trades],
            },
            schema={**TRADE_SCHEMA, "ts": pl.Int64},
        )
        return frame.with_columns(pl.col("ts").cast(TRADE_SCHEMA["ts"])).sort("ts")

    def fetch_funding(self, symbol: str, start_ms: int, end_ms: int) -> pl.DataFrame | None:
        """Funding rates in ``[start_ms, end_ms)`` of a swap or future, else None."""
        market = self._require_symbol(symbol)
        is_derivative = bool(market.get("swap") or market.get("future"))
        if not is_derivative or not self._has("fetchFundingRateHistory"):
            return None
        records = self._walk_records("fetch_funding_rate_history", symbol, start_ms, end_ms)
        if not records:
            return empty_funding()
        frame = pl.DataFrame(
            {
                "ts": [int(r["timestamp"]) for r in records],
                "symbol": [symbol] * len(records),
                "rate": [_float(r.get("fundingRate")) for r in records],
            },
            schema={**FUNDING_SCHEMA, "ts": pl.Int64},
        )
        return frame.with_columns(pl.col("ts").cast(FUNDING_SCHEMA["ts"])).sort("ts")

    # --- internals -----------------------------------------------------------------------------

    def _enable_sandbox(self) -> None:
        enable_sandbox(self._exchange, self.name)

    def _has(self, capability: str) -> bool:
        return bool((getattr(self._exchange, "has", None) or {}).get(capability))

    def _load_markets(self) -> Mapping[str, Mapping[str, Any]]:
        if self._markets is None:
            markets = self._call("load_markets")
            self._markets = markets if markets is not None else self._exchange.markets
            logger.info("ccxt markets loaded exchange=%s markets=%d", self.name, len(self._markets))
        return self._markets

    def _require_symbol(self, symbol: str) -> Mapping[str, Any]:
        markets = self._load_markets()
        if symbol not in markets:
            close = difflib.get_close_matches(symbol, list(markets), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UnknownSymbolError(
                f"symbol {symbol!r} is not listed on exchange {self.name!r} "
                f"({len(markets)} markets){hint}"
            )
        return markets[symbol]

    def _pace(self, more_pages: bool) -> None:
        """Wait between pages when the exchange object does not throttle by itself."""
        if more_pages and not getattr(self._exchange, "enableRateLimit", False):
            rate_limit_ms = float(getattr(self._exchange, "rateLimit", 0) or 0)
            if rate_limit_ms > 0:
                self._sleep(rate_limit_ms / 1000)

    def _walk_records(
        self, method: str, symbol: str, start_ms: int, end_ms: int
    ) -> list[Mapping[str, Any]]:
        """Page forward through time-stamped records (trades, funding), deduplicated."""
        seen: dict[Any, Mapping[str, Any]] = {}
        since = start_ms
        pages = 0
        while since < end_ms:
            page = self._call(method, symbol, since=since, limit=self.page_limit)
            pages += 1
            if not page:
                break
            new = 0
            for record in page:
                ts = record.get("timestamp")
                if ts is None or not start_ms <= int(ts) < end_ms:
                    continue
                key = _record_key(record)
                if key not in seen:
                    seen[key] = record
                    new += 1
            stamps = [int(r["timestamp"]) for r in page if r.get("timestamp") is not None]
            if not stamps:
                break
            last = max(stamps)
            # Several records can share a millisecond, so resume at the last one's time; only a
            # page with nothing new moves past it, which also ends a stalled walk.
            next_since = last if new else last + 1
            if next_since <= since:
                logger.warning(
                    "ccxt page made no progress exchange=%s call=%s symbol=%s since=%d; stopping",
                    self.name,
                    method,
                    symbol,
                    since,
                )
                break
            since = next_since
            self._pace(since < end_ms)
        logger.info(
            "ccxt records fetched exchange=%s call=%s symbol=%s pages=%d rows=%d",
            self.name,
            method,
            symbol,
            pages,
            len(seen),
        )
        return sorted(seen.values(), key=lambda r: int(r["timestamp"]))

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call the exchange, retrying operation failures and translating ccxt's errors."""
        call = f"{method}({', '.join(map(str, args))})"
        last_error: Exception | None = None
        for attempt in range(self.max_retries + 1):
            try:
                return getattr(self._exchange, method)(*args, **kwargs)
            except ccxt.BadSymbol as error:
                raise UnknownSymbolError(
                    f"exchange {self.name!r} does not know the symbol in {call}: "
                    f"{self._redact(error)}"
                ) from error
            except ccxt.ExchangeError as error:
                raise ExchangeRejectedError(
                    f"exchange {self.name!r} rejected {call} ({type(error).__name__}): "
                    f"{self._redact(error)}"
                ) from error
            except _RETRYABLE as error:
                last_error = error
                if attempt == self.max_retries:
                    break
                delay = self._backoff(attempt)
                logger.warning(
                    "ccxt call failed, retrying exchange=%s call=%s error=%s attempt=%d/%d "
                    "backoff_s=%.3f",
                    self.name,
                    call,
                    type(error).__name__,
                    attempt + 1,
                    self.max_retries,
                    delay,
                )
                self._sleep(delay)
        raise ExchangeUnavailableError(
            f"exchange {self.name!r} unavailable: {call} failed {self.max_retries + 1} times; "
            f"last error {type(last_error).__name__}: {self._redact(last_error)}"
        ) from last_error

    def _backoff(self, attempt: int) -> float:
        return backoff_delay(attempt, self.backoff_s, self.max_backoff_s, self._rng)

    def _redact(self, error: object) -> str:
        return redact_credentials(self._exchange, error)


# --- shared with the execution service's ccxt venue (sapphire_exec.venues.ccxt) ---------------


def backoff_delay(
    attempt: int, backoff_s: float, max_backoff_s: float, rng: random.Random
) -> float:
    """Exponential backoff with jitter in [half, full] of the step, so it still grows."""
    step = min(max_backoff_s, backoff_s * 2**attempt)
    return step * (0.5 + 0.5 * rng.random())


def redact_credentials(exchange: Any, error: object) -> str:
    """The error's text with any credential replaced, as exchanges may echo a request."""
    text = str(error)
    for attribute in ("apiKey", "secret", "password"):
        value = getattr(exchange, attribute, None)
        if isinstance(value, str) and len(value) >= 4:
            text = text.replace(value, _REDACTED)
    return text


def enable_sandbox(exchange: Any, name: str) -> None:
    """Switch a ccxt exchange to its testnet; a ConfigError if ccxt knows none for it."""
    urls = getattr(exchange, "urls", None)
    # ccxt 4.5 leaves urls["test"] as None on exchanges without a testnet, and then
    # set_sandbox_mode fails with a TypeError instead of NotSupported: check first.
    if isinstance(urls, Mapping) and not urls.get("test"):
        raise ConfigError(f"exchange {name!r} has no sandbox (testnet) in ccxt")
    try:
        exchange.set_sandbox_mode(True)
    except ccxt.NotSupported as error:
        raise ConfigError(
            f"exchange {name!r} has no sandbox (testnet) in ccxt: "
            f"{redact_credentials(exchange, error)}"
        ) from error


def build_exchange(
    exchange_id: str,
    api_key: str | None,
    secret: str | None,
    password: str | None,
    timeout_ms: int,
    options: Mapping[str, Any],
    module: Any = ccxt,
) -> Any:
    """A ccxt exchange object with the rate limiter on; ``module`` is ``ccxt`` (synchronous) or
    ``ccxt.async_support``."""
    if exchange_id not in module.exchanges:
        close = difflib.get_close_matches(exchange_id, ccxt.exchanges, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(
            f"unknown ccxt exchange id {exchange_id!r}{hint} (ccxt {ccxt.__version__} lists "
            f"{len(ccxt.exchanges)} exchanges in ccxt.exchanges)"
        )
    # Extra ccxt settings (proxies, urls, exchange options) never switch the rate limiter off.
    config: dict[str, Any] = {**options, "enableRateLimit": True, "timeout": timeout_ms}
    credentials = {"apiKey": api_key, "secret": secret, "password": password}
    config.update({key: value for key, value in credentials.items() if value})
    return getattr(module, exchange_id)(config)


def _record_key(record: Mapping[str, Any]) -> Any:
    if record.get("id") is not None:
        return ("id", str(record["id"]))
    return (
        int(record["timestamp"]),
        record.get("side"),
        record.get("price"),
        record.get("amount"),
        record.get("fundingRate"),
    )


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
