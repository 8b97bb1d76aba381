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
from pathlib import Path
from typing import Any

import numpy as np

from sapphire_domain.fill_model import CostModel, MarketState, fill
from sapphire_domain.messages import OrderStatus, Side
from sapphire_domain.orders import OrderIntent
from sapphire_domain.timeframes import timeframe_ms
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
        now = self.source.now_ms()
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
        return {symbol: self.feed.quote(symbol) for symbol in symbols}

    async def submit(self, order: OrderIntent) -> VenueOrder:
        if order.client_order_id in self.orders:
            # Recorded: a venue without this check would now hold the same order twice.
            self._write([{"t": "duplicate", "cid": order.client_order_id}])
            self.duplicates.append(order.client_order_id)
            raise VenueRejectedError(f"duplicate client order id {order.client_order_id}")
        quote = self.feed.quote(order.symbol)
        market = MarketState(quote.price, quote.volatility, quote.volume)
        result = fill(order.signed_quantity, market, self.cost_model, "taker")
        number = len(self.orders) + 1
        if result is None:
            placed = VenueOrder(
                order.client_order_id, order.symbol, order.side, order.quantity,
                OrderStatus.REJECTED, f"P{number}", (), "below the venue's minimum size",
            )  # fmt: skip
        else:
            execution = VenueFill(
                fill_id=f"P{number}-1",
                quantity=abs(result.quantity),
                price=result.price,
                fee=result.fee,
                liquidity=result.liquidity,
                ts_ms=self.feed.now_ms(),
            )
            placed = VenueOrder(
                order.client_order_id, order.symbol, order.side, order.quantity,
                OrderStatus.FILLED, f"P{number}", (execution,),
            )  # fmt: skip
        self._write([{"t": "order", "order": order_to_json(placed)}])
        self._apply(placed)
        return placed

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
        os.write(self._fd, b"".join(json.dumps(r).encode() + b"\n" for r in records))
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
