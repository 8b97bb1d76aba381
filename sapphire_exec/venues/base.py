"""The one interface every venue bridge implements.

The interface is deliberately small and keyed by the client order id, the one identifier the
service controls: a Freqtrade bridge (REST ``forceenter``/``forceexit``, trades by id) or a
Hummingbot bridge (client order ids are native there) fits it as well as a ccxt exchange. All
methods are coroutines; a synchronous venue simply does its work inline.

Errors: ``VenueUnavailableError`` when the venue cannot be reached after the bridge's own retries
(the order's fate is unknown, and the service must look it up by client order id before anything
else), ``VenueRejectedError`` when the venue refused the order (it does not exist there).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from sapphire_domain.errors import SapphireError
from sapphire_domain.messages import OrderStatus, Side
from sapphire_domain.orders import OrderIntent


class VenueUnavailableError(SapphireError):
    """The venue could not be reached; whether an order reached it is unknown."""


class VenueRejectedError(SapphireError):
    """The venue refused the request; an order it refused does not exist there."""


@dataclass(frozen=True, slots=True)
class VenueFill:
    """One execution of an order at the venue.

    fill_id: the venue's trade id, unique at the venue.
    quantity: base quantity, > 0 (the side is the order's).
    price: execution price. fee: quote currency. ts_ms: venue time of the trade.
    """

    fill_id: str
    quantity: float
    price: float
    fee: float
    liquidity: Literal["maker", "taker"]
    ts_ms: int


@dataclass(frozen=True, slots=True)
class VenueOrder:
    """An order as the venue knows it, with every fill it has had so far."""

    client_order_id: str
    symbol: str
    side: Side
    quantity: float
    status: OrderStatus
    venue_order_id: str = ""
    fills: tuple[VenueFill, ...] = field(default_factory=tuple)
    reason: str | None = None

    @property
    def filled(self) -> float:
        return sum(f.quantity for f in self.fills)

    @property
    def is_open(self) -> bool:
        return self.status in (OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED)


@dataclass(frozen=True, slots=True)
class Quote:
    """The latest usable price of a symbol, and what the fill model needs to know about it.

    ts_ms: when the price was observed (for the stale-price check).
    volatility: per-bar return standard deviation (NaN when unknown).
    volume: volume of the latest bar in base units (NaN when unknown).
    """

    price: float
    ts_ms: int
    volatility: float = float("nan")
    volume: float = float("nan")


@dataclass(frozen=True, slots=True)
class Balance:
    """Cash in the quote currency and equity (cash plus positions at the venue's prices)."""

    cash: float
    equity: float


@runtime_checkable
class Venue(Protocol):
    name: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def now_ms(self) -> int:
        """The venue's clock: the replay clock for the paper venue, the exchange's for ccxt."""
        ...

    async def quotes(self, symbols: list[str]) -> dict[str, Quote]: ...

    async def submit(self, order: OrderIntent) -> VenueOrder:
        """Place an order; a duplicate client order id is refused with ``VenueRejectedError``."""
        ...

    async def cancel(self, client_order_id: str, symbol: str) -> VenueOrder | None: ...

    async def fetch_order(self, client_order_id: str, symbol: str) -> VenueOrder | None:
        """The order with this client order id, or None when the venue never received it."""
        ...

    async def fetch_open_orders(self) -> list[VenueOrder]: ...

    async def fetch_positions(self) -> dict[str, float]:
        """Signed base quantities by symbol (zero positions may be left out)."""
        ...

    async def fetch_balance(self) -> Balance: ...
