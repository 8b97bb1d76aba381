"""The paper venue: the embedded default, filling against replayed prices.

**Which price.** An order fills at once, as a taker, against the *latest close*: the close of the
last candle that has closed at the market source's clock (the replay clock in the embedded
default). That is the freshest price a live trader could have seen at that moment, so nothing
from the future leaks in. (The backtester fills at the next bar's open because it decides on a
bar's close; the service decides whenever a target arrives, so the latest close is its nearest
equivalent.) The fill goes through ``sapphire_domain.fill_model.fill``, the same fees, slippage,
square-root impact and lot rounding as the backtester, with the per-bar volatility and the last
bar's volume of the recent candles.

**Its own state.** Like a real exchange, the venue remembers its orders, fills and cash across a
crash of the service: every order is appended to its own JSON-lines book (fsynced by default)
before ``submit`` returns (one write: an order is in the book whole or not at all), and the
book is replayed when the venue starts. A second submission of a known client order id is
refused, as exchanges refuse it, and recorded, so tests can prove it never happens.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from sapphire_domain.fill_model import CostModel, MarketState, fill, fill_arrays
from sapphire_domain.messages import OrderStatus, Side
from sapphire_domain.orders import OrderIntent
from sapphire_domain.timeframes import timeframe_ms
from sapphire_exec.journal import json_lines
from sapphire_exec.venues.base import Balance, Quote, VenueFill, VenueOrder, VenueRejectedError
from sapphire_market.source import MarketDataSource

_FILL_FIELDS = ("fill_id", "quantity", "price", "fee", "liquidity", "ts_ms")
VOLATILITY_BARS = 20  # recent bars for the per-bar volatility the impact term needs


class MarketPriceFeed:
    """Latest-close quotes from any ``MarketDataSource`` (replay, synthetic or live candles)."""

    def __init__(self, source: MarketDataSource, timeframe: str) -> None:
        self.source = source
        self.timeframe = timeframe
        self._step = timeframe_ms(timeframe)
        self._cache: dict[tuple[str, int], Quote] = {}

    def now_ms(self) -> int:
        return self.source.now_ms()

    def quote(self, symbol: str) -> Quote:
        return self._quote(symbol, self.source.now_ms())

    def quotes(self, symbols: Iterable[str]) -> list[Quote]:
        """The quotes of several symbols at one moment (one clock read for all)."""
        now = self.source.now_ms()
        return [self._quote(symbol, now) for symbol in symbols]

    def _quote(self, symbol: str, now: int) -> Quote:
        bar = now // self._step  # the quote changes only when another candle closes
        cached = self._cache.get((symbol, bar))
        if cached is not None:
            return cached
        start = now - (VOLATILITY_BARS + 2) * self._step
        candles = self.source.fetch_candles(symbol, self.timeframe, start, now)
        if candles.height == 0:
            raise VenueRejectedError(f"no closed {self.timeframe} candle of {symbol} at {now}")
        closes = candles["close"].to_numpy()
        returns = np.diff(np.log(closes))
        last = candles.row(candles.height - 1, named=True)
        quote = Quote(
            price=float(last["close"]),
            ts_ms=int(last["ts"].timestamp() * 1000) + self._step,  # its close time
            volatility=float(np.std(returns, ddof=1)) if returns.size > 1 else math.nan,
            volume=float(last["volume"]),
        )
        self._cache = {k: v for k, v in self._cache.items() if k[1] == bar}
        self._cache[(symbol, bar)] = quote
        return quote


class PaperVenue:
    """Fills orders at once against the feed's latest close, through the shared fill model."""

    name = "paper"

    def __init__(
        self,
        feed: MarketPriceFeed,
        book_path: Path,
        cost_model: CostModel,
        initial_cash: float,
        *,
        fsync: bool = True,
    ) -> None:
        self.feed = feed
        self.book_path = book_path
        self.cost_model = cost_model
        self.initial_cash = initial_cash
        self.fsync = fsync
        self.orders: dict[str, VenueOrder] = {}
        self.duplicates: list[str] = []
        self.cash = initial_cash
        self.positions: dict[str, float] = {}
        self._fd: int | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        # The fill model is compiled (numba); load it now, not on the first live order.
        fill(1.0, MarketState(1.0, math.nan, math.nan), self.cost_model)
        self.book_path.parent.mkdir(parents=True, exist_ok=True)
        for record in read_book(self.book_path):
            if record["t"] == "duplicate":
                self.duplicates.append(record["cid"])
            else:
                self._apply(order_from_json(record["order"]))
        self._fd = os.open(self.book_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    async def close(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None

    def now_ms(self) -> int:
        return self.feed.now_ms()

    # --- the venue interface ------------------------------------------------------------------

    async def quotes(self, symbols: list[str]) -> dict[str, Quote]:
        return dict(zip(symbols, self.feed.quotes(symbols), strict=True))

    async def submit(self, order: OrderIntent) -> VenueOrder:
        result = await self.submit_many([order])
        if isinstance(result[0], VenueRejectedError):
            raise result[0]
        return result[0]

    async def submit_many(self, orders: list[OrderIntent]) -> list[VenueOrder | VenueRejectedError]:
        """Place several orders at once: one call into the fill model's kernel for all of them
        (``fill_arrays``, the same kernel as ``fill``, so the fills are identical to placing
        them one by one) and one write (and fsync) of the book. Each order gets its outcome in
        the same position: the placed order, or the ``VenueRejectedError`` that ``submit``
        would have raised (a duplicate client order id, recorded as ``submit`` records it)."""
        outcomes: list[VenueOrder | VenueRejectedError | None] = [None] * len(orders)
        records: list[dict[str, Any]] = []
        fresh: list[OrderIntent] = []
        slots: list[int] = []  # where each fresh order's outcome goes
        seen: set[str] = set()
        for i, order in enumerate(orders):
            cid = order.client_order_id
            if cid in self.orders or cid in seen:
                # Recorded: a venue without this check would now hold the same order twice.
                records.append({"t": "duplicate", "cid": cid})
                self.duplicates.append(cid)
                outcomes[i] = VenueRejectedError(f"duplicate client order id {cid}")
            else:
                seen.add(cid)
                fresh.append(order)
                slots.append(i)
        if fresh:
            quotes = self.feed.quotes([order.symbol for order in fresh])
            for quote in quotes:
                if not (math.isfinite(quote.price) and quote.price > 0):
                    raise ValueError(
                        f"fill: reference price must be positive and finite, got {quote.price}"
                    )
            result = fill_arrays(
                np.array([order.signed_quantity for order in fresh]),
                np.array([q.price for q in quotes]),
                np.array([q.volatility for q in quotes]),
                np.array([q.volume for q in quotes]),
                self.cost_model,
                "taker",
            )
            now = self.feed.now_ms()
            number = len(self.orders)
            for order, i, quantity, price, fee in zip(
                fresh, slots, result.quantity.tolist(), result.price.tolist(),
                result.fee.tolist(), strict=True,
            ):  # fmt: skip
                number += 1
                if quantity == 0.0:
                    placed = VenueOrder(
                        order.client_order_id, order.symbol, order.side, order.quantity,
                        OrderStatus.REJECTED, f"P{number}", (), "below the venue's minimum size",
                    )  # fmt: skip
                else:
                    execution = VenueFill(f"P{number}-1", abs(quantity), price, fee, "taker", now)
                    placed = VenueOrder(
                        order.client_order_id, order.symbol, order.side, order.quantity,
                        OrderStatus.FILLED, f"P{number}", (execution,),
                    )  # fmt: skip
                records.append({"t": "order", "order": order_to_json(placed)})
                outcomes[i] = placed
        # One write: every order of the batch is in the book whole, or (a torn tail) the
        # last ones never happened; none is acknowledged to the caller before the write.
        if records:
            self._write(records)
        for outcome in outcomes:
            if isinstance(outcome, VenueOrder):
                self._apply(outcome)
        return [o for o in outcomes if o is not None]

    async def cancel(self, client_order_id: str, symbol: str) -> VenueOrder | None:
        return self.orders.get(client_order_id)  # paper orders fill at once; nothing rests

    async def fetch_order(self, client_order_id: str, symbol: str) -> VenueOrder | None:
        return self.orders.get(client_order_id)

    async def fetch_open_orders(self) -> list[VenueOrder]:
        return [o for o in self.orders.values() if o.is_open]

    async def fetch_positions(self) -> dict[str, float]:
        return {s: q for s, q in self.positions.items() if q != 0.0}

    async def fetch_balance(self) -> Balance:
        value = sum(q * self.feed.quote(s).price for s, q in self.positions.items() if q)
        return Balance(cash=self.cash, equity=self.cash + value)

    # --- internals ----------------------------------------------------------------------------

    def _apply(self, order: VenueOrder) -> None:
        self.orders[order.client_order_id] = order
        sign = 1.0 if order.side is Side.BUY else -1.0
        for execution in order.fills:
            self.positions[order.symbol] = (
                self.positions.get(order.symbol, 0.0) + sign * execution.quantity
            )
            self.cash -= sign * execution.quantity * execution.price + execution.fee

    def _write(self, records: list[dict[str, Any]]) -> None:
        if self._fd is None:
            raise RuntimeError("the paper venue is not started")
        os.write(self._fd, json_lines(records))
        if self.fsync:
            os.fsync(self._fd)


def read_book(path: Path) -> list[dict[str, Any]]:
    """The paper venue's records; a torn last line (a crash mid-write) never happened."""
    if not path.exists():
        return []
    records = []
    for line in path.read_bytes().split(b"\n"):
        try:
            records.append(json.loads(line))
        except ValueError:
            continue  # the empty tail, or a torn last line
    return records


def order_to_json(order: VenueOrder) -> dict[str, Any]:
    return {
        "client_order_id": order.client_order_id,
        "symbol": order.symbol,
        "side": order.side.value,
        "quantity": order.quantity,
        "status": order.status.value,
        "venue_order_id": order.venue_order_id,
        "reason": order.reason,
        "fills": [{k: getattr(f, k) for k in _FILL_FIELDS} for f in order.fills],
    }


def order_from_json(data: dict[str, Any]) -> VenueOrder:
    return VenueOrder(
        client_order_id=data["client_order_id"],
        symbol=data["symbol"],
        side=Side(data["side"]),
        quantity=float(data["quantity"]),
        status=OrderStatus(data["status"]),
        venue_order_id=data.get("venue_order_id", ""),
        fills=tuple(VenueFill(**f) for f in data["fills"]),
        reason=data.get("reason"),
    )


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000
