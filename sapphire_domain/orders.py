"""From a target portfolio to orders: the order manager's decision logic, free of I/O.

``plan_orders`` turns a ``TargetPortfolio`` (signed fractions of equity) into the orders that move
the current positions to it:

1. **Target quantity.** ``weight * equity / price`` for every symbol in the target. A symbol held
   but absent from the target has a target of zero: the portfolio is exactly what the target
   says, so anything it no longer names is closed.
2. **No-trade band.** A difference whose notional is below ``no_trade_band * equity`` is left
   alone, so the portfolio does not churn (and pay fees) on every small move of the target. A
   target of zero is exempt: it means "be flat", and a residual position in a symbol the models
   no longer cover is exposure nobody is watching.
3. **Lot rounding** toward zero (``fill_model.round_to_lot``, shared with the backtester and the
   paper venue), so an order never trades more than was asked.
4. **Minimum notional.** An order below ``min_notional`` at its reference price is dropped; the
   venue would reject it anyway.

An order that crosses zero (long to short, or short to long) is **split in two legs**: one that
reduces the position toward zero (``reduces_exposure=True``) and one that opens the other side.
In the REDUCING trading state the risk engine then lets the first leg through and denies the
second, so the kill switch can still take risk off; a single crossing order would have to be
denied whole. The risk engine also checks each leg's position and exposure limits on its own.

Client order ids are deterministic: the same target version and symbol always give the same id,
so a retried submission is recognised by the venue (or looked up by id after an ambiguous
timeout) instead of being placed twice.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from sapphire_domain.errors import SapphireError
from sapphire_domain.fill_model import round_to_lot
from sapphire_domain.messages import Side, TargetPortfolio

# Unified ccxt symbols ("BTC/USDT", "BTC/USDT:USDT", "BTC/USD:BTC-250627-60000-C") use only these.
_SYMBOL = re.compile(r"[A-Za-z0-9/:\-]+")
_ID_TRANSLATION = str.maketrans({"/": "_", ":": "."})
# A quantity this close to a position (relative) counts as "all of it" when classifying orders.
_QUANTITY_TOLERANCE = 1e-9


class OrderPlanningError(SapphireError):
    """The inputs to order planning are missing or not finite numbers; no order is planned."""


@dataclass(frozen=True, slots=True)
class OrderIntent:
    """An order the service wants to place, before the risk engine has seen it.

    client_order_id: deterministic id from the target version, symbol and leg.
    target_version: the version of the target this order moves toward.
    symbol: unified symbol, e.g. "BTC/USDT:USDT".
    side: buy or sell.
    quantity: base quantity, > 0 and a multiple of the symbol's lot size.
    reference_price: the price the order was sized at (the price collar compares it with the
        market).
    reduces_exposure: True when the order moves the position toward zero without crossing it.
    """

    client_order_id: str
    target_version: int
    symbol: str
    side: Side
    quantity: float
    reference_price: float
    reduces_exposure: bool

    @property
    def signed_quantity(self) -> float:
        return self.quantity if self.side is Side.BUY else -self.quantity

    @property
    def notional(self) -> float:
        return self.quantity * self.reference_price


def client_order_id(target_version: int, symbol: str, *, opening_leg: bool = False) -> str:
    """``t{version}-{symbol}`` with "/" as "_" and ":" as "."; ``t{version}o-…`` for the leg
    that opens the other side after a crossing order is split.

    The mapping is injective: symbols are restricted to letters, digits, "/", ":" and "-", and
    "_" and "." cannot occur in them, so two different (version, symbol, leg) never share an id.
    The result uses only characters that venues accept in client ids (Binance: ``.:/_-``).
    """
    if target_version <= 0:
        raise OrderPlanningError(f"target version must be positive, got {target_version}")
    return f"t{target_version}{'o' if opening_leg else ''}-{_id_symbol(symbol)}"


_CLIENT_ORDER_ID = re.compile(r"t([1-9][0-9]*)o?-[A-Za-z0-9_.\-]+")


def target_version_of(client_order_id: str) -> int:
    """The target version an id from ``client_order_id`` was made for (after a crash, the
    service learns from the venue's open orders which target they belong to)."""
    match = _CLIENT_ORDER_ID.fullmatch(client_order_id)
    if match is None:
        raise OrderPlanningError(f"{client_order_id!r} is not a Sapphire client order id")
    return int(match.group(1))


@functools.lru_cache(maxsize=4096)
def _id_symbol(symbol: str) -> str:
    # Cached: a service sees the same few dozen symbols on every target.
    if not _SYMBOL.fullmatch(symbol):
        raise OrderPlanningError(
            f"symbol {symbol!r} has characters outside letters, digits, '/', ':' and '-'; "
            "it cannot be turned into a client order id"
        )
    return symbol.translate(_ID_TRANSLATION)


def plan_orders(
    target: TargetPortfolio,
    positions: Mapping[str, float],
    prices: Mapping[str, float],
    equity: float,
    *,
    lot_sizes: Mapping[str, float] | float,
    no_trade_band: float,
    min_notional: float,
    weights: Mapping[str, float] | None = None,
) -> list[OrderIntent]:
    """The orders that move ``positions`` (signed base quantities) to ``target``.

    prices: symbol -> price to size at; needed for every symbol that may trade.
    equity: account equity in the quote currency, > 0.
    lot_sizes: one lot size for every symbol, or symbol -> lot size; 0 means unrounded.
    no_trade_band: fraction of equity; smaller differences are not traded (see the module
        docstring for the exemption of closing orders).
    min_notional: quote notional below which an order is dropped.
    weights: ``target.weights()``, when the caller has computed it already.

    Orders that reduce exposure come first (they free margin and exposure for the rest), then
    by symbol, so the same inputs always give the same list. Raises ``OrderPlanningError`` for
    bad input, and then plans nothing: a partial plan would trade a portfolio nobody asked for.
    """
    if not (math.isfinite(equity) and equity > 0):
        raise OrderPlanningError(f"equity must be positive and finite, got {equity}")
    if not (math.isfinite(no_trade_band) and no_trade_band >= 0):
        raise OrderPlanningError(f"no_trade_band must be >= 0 and finite, got {no_trade_band}")
    if not (math.isfinite(min_notional) and min_notional >= 0):
        raise OrderPlanningError(f"min_notional must be >= 0 and finite, got {min_notional}")
    for symbol, quantity in positions.items():
        if not math.isfinite(quantity):
            raise OrderPlanningError(f"position of {symbol} is not finite: {quantity}")

    # Checked once here, not per symbol: the planner sits on the service's decision path.
    per_symbol_lots: Mapping[str, float] | None
    if isinstance(lot_sizes, Mapping):
        per_symbol_lots, single_lot = lot_sizes, 0.0
    else:
        per_symbol_lots, single_lot = None, _checked_lot(lot_sizes, "every symbol")
    if weights is None:
        weights = target.weights()
    held = [s for s, q in positions.items() if q != 0.0 and s not in weights]
    band = no_trade_band * equity
    reducing: list[OrderIntent] = []
    opening: list[OrderIntent] = []
    for symbol in sorted((*weights, *held)):
        weight = weights.get(symbol, 0.0)
        current = positions.get(symbol, 0.0)
        if weight == 0.0 and current == 0.0:
            continue  # nothing held, nothing wanted: no price needed
        price = _price(prices, symbol)
        lot = single_lot if per_symbol_lots is None else _lot_size(per_symbol_lots, symbol)
        wanted = weight * equity / price
        difference = wanted - current
        if wanted != 0.0 and abs(difference) * price < band:
            continue
        legs = _orders_for(target.version, symbol, current, difference, price, lot, min_notional)
        for order in legs:
            (reducing if order.reduces_exposure else opening).append(order)
    return reducing + opening


def _orders_for(
    version: int,
    symbol: str,
    current: float,
    difference: float,
    price: float,
    lot: float,
    min_notional: float,
) -> list[OrderIntent]:
    """One order, or two legs when the difference crosses zero (see the module docstring);
    none, or fewer, where an order would be below the minimum notional."""
    total = abs(round_to_lot(difference, lot))
    if total == 0.0:
        return []
    side = Side.BUY if difference > 0 else Side.SELL
    against_position = current != 0.0 and (current > 0) != (difference > 0)
    if not against_position or total <= abs(current) * (1 + _QUANTITY_TOLERANCE):
        if total * price < min_notional:
            return []
        return [_intent(version, symbol, side, total, price, reduces=against_position)]
    # Crossing zero. The reducing leg closes whole lots of the position; the opening leg takes
    # the rest of the lot-rounded total, so both legs together never exceed the rounded total.
    closing = min(total, abs(round_to_lot(current, lot)))
    rest = round_to_lot(total - closing, lot) if lot > 0 else total - closing
    legs = []
    if closing > 0 and closing * price >= min_notional:
        legs.append(_intent(version, symbol, side, closing, price, reduces=True))
    if rest > 0 and rest * price >= min_notional:
        legs.append(_intent(version, symbol, side, rest, price, reduces=False, opening_leg=True))
    return legs


def _intent(
    version: int,
    symbol: str,
    side: Side,
    quantity: float,
    price: float,
    *,
    reduces: bool,
    opening_leg: bool = False,
) -> OrderIntent:
    return OrderIntent(
        client_order_id=client_order_id(version, symbol, opening_leg=opening_leg),
        target_version=version,
        symbol=symbol,
        side=side,
        quantity=quantity,
        reference_price=price,
        reduces_exposure=reduces,
    )


def _price(prices: Mapping[str, float], symbol: str) -> float:
    price = prices.get(symbol)
    if price is None:
        raise OrderPlanningError(f"no price for {symbol}, which the target or a position needs")
    if not (math.isfinite(price) and price > 0):
        raise OrderPlanningError(f"price of {symbol} must be positive and finite, got {price}")
    return float(price)


def _lot_size(lot_sizes: Mapping[str, float], symbol: str) -> float:
    if symbol not in lot_sizes:
        raise OrderPlanningError(f"no lot size for {symbol}")
    return _checked_lot(lot_sizes[symbol], symbol)


def _checked_lot(lot: float, symbol: str) -> float:
    if not (math.isfinite(lot) and lot >= 0):
        raise OrderPlanningError(f"lot size of {symbol} must be >= 0 and finite, got {lot}")
    return float(lot)
