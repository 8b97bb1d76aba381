"""A live exchange through ccxt (``ccxt.async_support``), behind the ``Venue`` interface.

**Client order ids.** Every order carries the service's deterministic client order id in ccxt's
unified ``clientOrderId`` parameter (ccxt maps it to the exchange's own field, e.g. Binance's
``newClientOrderId``), and orders are looked up by it. Orders are market orders by default.

**Errors, following ccxt's hierarchy.**

- ``ccxt.ExchangeError`` (``InsufficientFunds``, ``InvalidOrder``, ``AuthenticationError``...) is
  the exchange's considered answer: never retried, raised as ``VenueRejectedError``.
- ``RateLimitExceeded`` and ``DDoSProtection`` mean the exchange turned the request away before
  acting on it: retried after a jittered, doubling backoff.
- Any other ``OperationFailed`` (``RequestTimeout``, ``ExchangeNotAvailable``, a bare
  ``NetworkError``, a garbled ``BadResponse``) on ``create_order`` is *ambiguous*: the order may
  have been placed. The venue then looks it up by client order id (``fetch_order`` with the
  ``clientOrderId`` parameter, else the open and closed orders) and resends only when the lookup
  *proves* the order does not exist. When nothing can prove it (the exchange offers no lookup, or
  the lookup itself keeps failing), it raises ``VenueUnavailableError`` and the service looks the
  order up again later; it never sends blind. A duplicate-id refusal after such a resend means
  the first attempt landed after all, and that order is returned.
- Read-only calls retry every ``OperationFailed``; ``VenueUnavailableError`` after
  ``max_retries``.

**Fills** come from the order's own ``trades`` or from ``fetch_my_trades`` (matched by the
exchange order id); the fill id is the exchange's trade id, so the same trade always has the same
id. When the exchange's trades do not add up to the order's filled amount (trade history lags on
some exchanges), one aggregate fill with id ``order-<exchange order id>`` stands for the whole
order, so nothing filled is ever dropped.

**Credentials** live only in the ccxt exchange object; they are kept out of this class's repr
and of every log line and error message (``redact_credentials``).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

import ccxt
import ccxt.async_support as ccxt_async
import structlog

from sapphire_domain.messages import OrderStatus, Side
from sapphire_domain.orders import OrderIntent
from sapphire_exec.venues.base import (
    Balance,
    Quote,
    VenueFill,
    VenueOrder,
    VenueRejectedError,
    VenueUnavailableError,
)
from sapphire_market.ccxt_source import (
    backoff_delay,
    build_exchange,
    enable_sandbox,
    redact_credentials,
)

if TYPE_CHECKING:
    from sapphire_exec.config import ExecSettings

log = structlog.get_logger("sapphire_exec")

# The exchange refused the request before acting on it: resending cannot duplicate anything.
_REFUSED = (ccxt.RateLimitExceeded, ccxt.DDoSProtection)
_STATUS = {
    "closed": OrderStatus.FILLED,
    "canceled": OrderStatus.CANCELLED,
    "cancelled": OrderStatus.CANCELLED,
    "expired": OrderStatus.CANCELLED,
    "rejected": OrderStatus.REJECTED,
}
# Settling a market order that an exchange acknowledges before it has filled.
SETTLE_ATTEMPTS = 5
# Sapphire's own key in ``venue.ccxt.options``; every other key goes to the ccxt constructor.
QUOTE_OPTION = "quote_currency"


class _NotProvenError(Exception):
    """The lookup could not prove whether the order exists."""


class CcxtVenue:
    """Any ccxt exchange as a ``Venue``; build it with ``from_settings`` or around an exchange.

    exchange: a ``ccxt.async_support`` exchange (or a stand-in with the same coroutines).
    name: the venue's name in fill ids and logs (the ccxt id).
    quote_currency: the currency of cash and equity (``USDT`` by default).
    order_type: ``market`` (default) or ``limit`` at the order's reference price.
    max_retries, backoff_s, max_backoff_s: retries of operation failures (see the module doc).
    sleep, rng: injectable so tests neither sleep nor depend on jitter.
    """

    def __init__(
        self,
        exchange: Any,
        *,
        name: str,
        quote_currency: str = "USDT",
        order_type: Literal["market", "limit"] = "market",
        max_retries: int = 3,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.exchange = exchange
        self.name = name
        self.quote_currency = quote_currency
        self.order_type = order_type
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()

    @classmethod
    def from_settings(cls, settings: ExecSettings) -> CcxtVenue:
        """The venue of ``settings.venue.ccxt`` with the ``EXCHANGE_*`` credentials; no I/O."""
        config = settings.venue.ccxt
        options = dict(config.options)
        quote = str(options.pop(QUOTE_OPTION, "USDT"))
        # Binance refuses a symbol-less fetch_open_orders unless told the caller knows its cost;
        # the startup reconciliation needs exactly that call.
        exchange_options: dict[str, Any] = {"warnOnFetchOpenOrdersWithoutSymbol": False}
        exchange_options.update(options.pop("options", {}) or {})
        options["options"] = exchange_options

        def secret(value: Any) -> str | None:
            return value.get_secret_value() if value is not None else None

        exchange = build_exchange(
            config.exchange,
            secret(settings.exchange_api_key),
            secret(settings.exchange_secret),
            secret(settings.exchange_password),
            timeout_ms=10_000,
            options=options,
            module=ccxt_async,
        )
        if config.sandbox:  # a ConfigError where ccxt knows no testnet for the exchange
            enable_sandbox(exchange, config.exchange)
        return cls(
            exchange,
            name=config.exchange,
            quote_currency=quote,
            max_retries=config.max_retries,
            backoff_s=config.retry_backoff_s,
        )

    def __repr__(self) -> str:
        authenticated = bool(getattr(self.exchange, "apiKey", None))
        return f"CcxtVenue(exchange={self.name!r}, authenticated={authenticated})"

    __str__ = __repr__

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        await self._call("load_markets")

    async def close(self) -> None:
        closer = getattr(self.exchange, "close", None)
        if closer is not None:
            await closer()

    def now_ms(self) -> int:
        return int(self.exchange.milliseconds())

    # --- the venue interface ------------------------------------------------------------------

    async def quotes(self, symbols: list[str]) -> dict[str, Quote]:
        if not symbols:
            return {}
        if self._has("fetchTickers"):
            tickers = await self._call("fetch_tickers", symbols)
        else:
            tickers = {s: await self._call("fetch_ticker", s) for s in symbols}
        now = self.now_ms()
        quotes: dict[str, Quote] = {}
        for symbol in symbols:
            ticker = tickers.get(symbol) or {}
            price = _number(ticker.get("last")) or _number(ticker.get("close"))
            if not price:
                raise VenueRejectedError(f"{self.name} has no price for {symbol}")
            quotes[symbol] = Quote(
                price=price,
                ts_ms=int(ticker.get("timestamp") or now),
                volume=_number(ticker.get("baseVolume")) or float("nan"),
            )
        return quotes

    async def submit(self, order: OrderIntent) -> VenueOrder:
        cid = order.client_order_id
        price = order.reference_price if self.order_type == "limit" else None
        params = {"clientOrderId": cid}
        resent = False
        for attempt in range(self.max_retries + 1):
            try:
                placed = await self.exchange.create_order(
                    order.symbol, self.order_type, order.side.value, order.quantity, price, params
                )
            except ccxt.DuplicateOrderId as error:
                if resent:  # our first attempt landed after all
                    found = await self._lookup_or_unavailable(cid, order.symbol)
                    if found is not None:
                        return await self._settle(found, order.symbol, cid)
                raise VenueRejectedError(self._text("create_order", error)) from error
            except ccxt.ExchangeError as error:
                raise VenueRejectedError(self._text("create_order", error)) from error
            except _REFUSED as error:
                self._log_retry("create_order", error, attempt)
            except ccxt.OperationFailed as error:
                self._log_retry("create_order", error, attempt, ambiguous=True)
                found = await self._lookup_or_unavailable(cid, order.symbol)
                if found is not None:
                    log.info("ambiguous_order_found", venue=self.name, client_order_id=cid)
                    return await self._settle(found, order.symbol, cid)
            else:
                return await self._settle(placed, order.symbol, cid)
            if attempt == self.max_retries:
                break
            resent = True
            await self._sleep(self._backoff(attempt))
        raise VenueUnavailableError(
            f"{self.name}: create_order {cid} not placed after {self.max_retries + 1} attempts"
        )

    async def cancel(self, client_order_id: str, symbol: str) -> VenueOrder | None:
        found = await self._lookup_or_unavailable(client_order_id, symbol)
        if found is None:
            return None
        if _is_open(found):
            try:
                await self._call("cancel_order", found.get("id"), symbol)
            except VenueRejectedError as error:  # filled or gone meanwhile: report what it is
                log.info("cancel_refused", venue=self.name, client_order_id=client_order_id,
                         error=str(error))  # fmt: skip
            found = await self._lookup_or_unavailable(client_order_id, symbol) or found
        return await self._to_venue_order(found, symbol, client_order_id)

    async def fetch_order(self, client_order_id: str, symbol: str) -> VenueOrder | None:
        found = await self._lookup_or_unavailable(client_order_id, symbol)
        if found is None:
            return None
        return await self._to_venue_order(found, symbol, client_order_id)

    async def fetch_open_orders(self) -> list[VenueOrder]:
        orders = await self._call("fetch_open_orders")
        return [
            await self._to_venue_order(o, str(o.get("symbol")), str(o.get("clientOrderId") or ""))
            for o in orders
        ]

    async def fetch_positions(self) -> dict[str, float]:
        if self._derivatives():
            positions: dict[str, float] = {}
            for p in await self._call("fetch_positions"):
                size = _number(p.get("contracts")) * (_number(p.get("contractSize")) or 1.0)
                if size:
                    sign = -1.0 if p.get("side") == "short" else 1.0
                    symbol = str(p["symbol"])
                    positions[symbol] = positions.get(symbol, 0.0) + sign * size
            return positions
        # Spot: what is held of each base currency that trades against the quote currency.
        balance = await self._call("fetch_balance")
        totals = balance.get("total") or {}
        markets = getattr(self.exchange, "markets", None) or {}
        held: dict[str, float] = {}
        for currency, amount in totals.items():
            symbol = f"{currency}/{self.quote_currency}"
            if currency != self.quote_currency and _number(amount) and symbol in markets:
                held[symbol] = _number(amount)
        return held

    async def fetch_balance(self) -> Balance:
        balance = await self._call("fetch_balance")
        cash = _number((balance.get("total") or {}).get(self.quote_currency))
        if self._derivatives():
            unrealised = sum(
                _number(p.get("unrealizedPnl")) for p in await self._call("fetch_positions")
            )
            return Balance(cash=cash, equity=cash + unrealised)
        positions = await self.fetch_positions()
        prices = await self.quotes(sorted(positions))
        value = sum(q * prices[s].price for s, q in positions.items())
        return Balance(cash=cash, equity=cash + value)

    # --- looking orders up --------------------------------------------------------------------

    async def _lookup_or_unavailable(self, cid: str, symbol: str) -> dict[str, Any] | None:
        try:
            return await self._lookup(cid, symbol)
        except _NotProvenError as error:
            raise VenueUnavailableError(
                f"{self.name}: cannot tell whether order {cid} exists: {error}"
            ) from None

    async def _lookup(self, cid: str, symbol: str) -> dict[str, Any] | None:
        """The exchange's order with this client order id; None only when proven absent."""
        if self._has("fetchOrder"):
            try:
                found = await self._call_raw("fetch_order", "", symbol, {"clientOrderId": cid})
            except ccxt.OrderNotFound:
                return None  # the exchange itself says no order has this id
            except ccxt.ExchangeError:
                pass  # no lookup by client id here: scan the order lists instead
            else:
                if found and _client_id(found) in (cid, None):
                    return dict(found)
        scanned = []
        for method, capability in (
            ("fetch_open_orders", "fetchOpenOrders"),
            ("fetch_closed_orders", "fetchClosedOrders"),
        ):
            if not self._has(capability):
                continue
            try:
                orders = await self._call_raw(method, symbol)
            except ccxt.ExchangeError as error:
                raise _NotProvenError(f"{method}: {self._redact(error)}") from None
            scanned.append(method)
            for candidate in orders:
                if _client_id(candidate) == cid:
                    return dict(candidate)
        if len(scanned) < 2:
            # Without both open and closed orders, absence from a list proves nothing.
            raise _NotProvenError("the exchange offers no complete lookup by client order id")
        return None

    async def _settle(self, placed: Mapping[str, Any], symbol: str, cid: str) -> VenueOrder:
        """The placed order, re-read until a market order has left ``open``."""
        current = dict(placed)
        for attempt in range(SETTLE_ATTEMPTS):
            if self.order_type != "market" or not _is_open(current):
                break
            await self._sleep(min(self.backoff_s, 0.2) * (attempt + 1))
            try:
                current = await self._lookup(cid, symbol) or current
            except _NotProvenError:
                break
        return await self._to_venue_order(current, symbol, cid)

    async def _to_venue_order(self, order: Mapping[str, Any], symbol: str, cid: str) -> VenueOrder:
        symbol = str(order.get("symbol") or symbol)
        filled = _number(order.get("filled"))
        status = _STATUS.get(str(order.get("status")), OrderStatus.ACCEPTED)
        if status is OrderStatus.ACCEPTED and filled > 0:
            status = OrderStatus.PARTIALLY_FILLED
        fills = await self._fills(order, symbol) if filled > 0 else ()
        return VenueOrder(
            client_order_id=_client_id(order) or cid,
            symbol=symbol,
            side=Side(str(order.get("side"))),
            quantity=_number(order.get("amount")),
            status=status,
            venue_order_id=str(order.get("id") or ""),
            fills=fills,
            reason=None if status is not OrderStatus.REJECTED else str(order.get("status")),
        )

    async def _fills(self, order: Mapping[str, Any], symbol: str) -> tuple[VenueFill, ...]:
        order_id = str(order.get("id") or "")
        trades = list(order.get("trades") or [])
        if not trades and self._has("fetchMyTrades"):
            since = order.get("timestamp")
            try:
                mine = await self._call_raw("fetch_my_trades", symbol, since)
            except ccxt.ExchangeError as error:
                # The order exists either way; its fills then come from the order itself.
                log.warning("trades_unavailable", venue=self.name, detail=self._redact(error))
                mine = []
            trades = [t for t in mine if str(t.get("order")) == order_id]
        fills = {str(t["id"]): self._to_fill(t) for t in trades if t.get("id") is not None}
        filled = _number(order.get("filled"))
        if abs(sum(f.quantity for f in fills.values()) - filled) <= 1e-9 * max(filled, 1.0):
            return tuple(sorted(fills.values(), key=lambda f: (f.ts_ms, f.fill_id)))
        # The trades do not account for the order: one aggregate fill stands for all of it.
        price = _number(order.get("average")) or _number(order.get("price"))
        fee = self._fee(order.get("fee"), price, symbol)
        return (
            VenueFill(
                fill_id=f"order-{order_id}",
                quantity=filled,
                price=price,
                fee=fee,
                liquidity="taker" if order.get("type") == "market" else "maker",
                ts_ms=int(order.get("lastTradeTimestamp") or order.get("timestamp") or 0),
            ),
        )

    def _to_fill(self, trade: Mapping[str, Any]) -> VenueFill:
        price = _number(trade.get("price"))
        liquidity: Literal["maker", "taker"] = (
            "maker" if trade.get("takerOrMaker") == "maker" else "taker"
        )
        return VenueFill(
            fill_id=str(trade["id"]),
            quantity=_number(trade.get("amount")),
            price=price,
            fee=self._fee(trade.get("fee"), price, str(trade.get("symbol") or "")),
            liquidity=liquidity,
            ts_ms=int(trade.get("timestamp") or 0),
        )

    def _fee(self, fee: Any, price: float, symbol: str) -> float:
        """A ccxt fee in the quote currency (a fee in the base currency is valued at ``price``);
        a fee in a third currency (e.g. BNB) is reported at its face amount."""
        if not isinstance(fee, Mapping):
            return 0.0
        cost = _number(fee.get("cost"))
        base = symbol.split("/", 1)[0]
        return cost * price if fee.get("currency") == base else cost

    # --- calling the exchange -----------------------------------------------------------------

    async def _call(self, method: str, *args: Any) -> Any:
        """A read-only or idempotent call: operation failures retried, exchange errors raised
        as ``VenueRejectedError``, exhaustion as ``VenueUnavailableError``."""
        try:
            return await self._call_raw(method, *args)
        except ccxt.ExchangeError as error:
            raise VenueRejectedError(self._text(method, error)) from error

    async def _call_raw(self, method: str, *args: Any) -> Any:
        """Retries operation failures only; ccxt's ``ExchangeError`` reaches the caller as is."""
        last: Exception | None = None
        for attempt in range(self.max_retries + 1):
            try:
                return await getattr(self.exchange, method)(*args)
            except ccxt.OperationFailed as error:
                last = error
                if attempt == self.max_retries:
                    break
                self._log_retry(method, error, attempt)
                await self._sleep(self._backoff(attempt))
        raise VenueUnavailableError(self._text(method, last))

    def _backoff(self, attempt: int) -> float:
        return backoff_delay(attempt, self.backoff_s, self.max_backoff_s, self._rng)

    def _log_retry(
        self, method: str, error: Exception, attempt: int, *, ambiguous: bool = False
    ) -> None:
        log.warning(
            "venue_call_failed", venue=self.name, call=method, error=type(error).__name__,
            detail=self._redact(error)[:300], attempt=attempt + 1, max_retries=self.max_retries,
            ambiguous=ambiguous,
        )  # fmt: skip

    def _redact(self, error: object) -> str:
        return redact_credentials(self.exchange, error)

    def _text(self, method: str, error: object) -> str:
        return f"{self.name} {method} ({type(error).__name__}): {self._redact(error)}"[:500]

    def _has(self, capability: str) -> bool:
        return bool((getattr(self.exchange, "has", None) or {}).get(capability))

    def _derivatives(self) -> bool:
        options = getattr(self.exchange, "options", None) or {}
        return options.get("defaultType", "spot") not in ("spot", "margin")


def _client_id(order: Mapping[str, Any]) -> str | None:
    value = order.get("clientOrderId")
    return None if value is None else str(value)


def _is_open(order: Mapping[str, Any]) -> bool:
    return str(order.get("status")) == "open"


def _number(value: Any) -> float:
    return 0.0 if value is None else float(value)
