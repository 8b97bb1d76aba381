"""The fill and cost model: one implementation for the backtester and the paper venue.

An order for a signed quantity executes against a reference price (in a backtest the open of
the execution bar, in the paper venue the replayed price). The model:

1. **Lot rounding.** ``|quantity|`` is rounded down to a multiple of ``lot_size`` (toward zero,
   so an order never grows). A relative tolerance of ``LOT_TOLERANCE`` lots absorbs binary
   representation error (0.3 / 0.1 is 2.9999999999999996 in floating point, and is 3 lots here).
2. **Minimums.** An order whose rounded quantity is zero, below ``min_quantity``, or whose
   notional at the reference price is below ``min_notional`` is dropped (``fill`` returns None).
3. **Slippage** (taker only), in basis points of the reference price::

       slippage_bps = slippage_bps_fixed
                      + impact_coefficient * sigma_bps * sqrt(order_notional / bar_notional_volume)

   The second term is the square-root market-impact law: the price moves by about one daily
   volatility times the square root of the order's share of the period's volume (Loeb 1983;
   Torre and Ferrari, *Market Impact Model Handbook*, BARRA 1997; Almgren, Thum, Hauptmann and
   Li, "Direct estimation of equity market impact", *Risk* 2005; Bouchaud, Bonart, Donier and
   Gould, *Trades, Quotes and Prices*, 2018, ch. 12). Here the period is one bar: ``sigma`` is
   the per-bar return standard deviation and the volume is the bar's notional volume. When the
   volatility or the volume is unknown (NaN, or a volume of zero) only the fixed part applies.
   The total is capped at ``max_slippage_bps``.
   A buy executes above the reference price and a sell below it.
4. **Fees** are charged on the executed notional, ``|quantity| * price * fee_bps / 1e4``, in
   the quote currency, as exchanges charge them. A negative maker fee is a rebate.

A maker order (a resting limit order) executes at the reference price with no slippage: the
model assumes it was filled at its limit, and does not model the risk of it not being filled.

``fill`` and ``fill_arrays`` (one order, many orders: the paper venue) and the backtest engine
all call the same compiled kernel ``fill_kernel``, so for the same inputs they give bit-identical
quantities, prices, fees and slippage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numba import njit

from sapphire_domain.errors import ConfigError

Liquidity = Literal["maker", "taker"]
BPS = 1e-4
LOT_TOLERANCE = 1e-9  # lots; see the module docstring
_NON_NEGATIVE = (
    "taker_fee_bps",
    "slippage_bps",
    "impact_coefficient",
    "lot_size",
    "min_quantity",
    "min_notional",
    "max_slippage_bps",
)


@dataclass(frozen=True)
class CostModel:
    """Fees, slippage and order constraints of one venue.

    maker_fee_bps (float, 2.0): fee of a maker fill in basis points of its notional; negative
        for a rebate.
    taker_fee_bps (float, 5.0): fee of a taker fill in basis points of its notional.
    slippage_bps (float, 1.0): fixed slippage of a taker fill in basis points of the reference
        price.
    impact_coefficient (float, 0.1): scale of the square-root impact term (see the module
        docstring); 0 turns it off.
    lot_size (float, 1e-8): quantities are rounded toward zero to a multiple of this; 0 keeps
        them unrounded.
    min_quantity (float, 0.0): orders below this base quantity (after rounding) are dropped.
    min_notional (float, 0.0): orders below this quote notional at the reference price are
        dropped.
    max_slippage_bps (float, 500.0): cap on the total slippage; the square-root law is not
        meant for orders many times a bar's volume (or a bar with almost none).
    """

    maker_fee_bps: float = 2.0
    taker_fee_bps: float = 5.0
    slippage_bps: float = 1.0
    impact_coefficient: float = 0.1
    lot_size: float = 1e-8
    min_quantity: float = 0.0
    min_notional: float = 0.0
    max_slippage_bps: float = 500.0

    def __post_init__(self) -> None:
        values = {name: float(getattr(self, name)) for name in self.__dataclass_fields__}
        bad = [name for name, value in values.items() if not math.isfinite(value)]
        if bad:
            raise ConfigError(f"CostModel: {bad} must be finite numbers")
        negative = [name for name in _NON_NEGATIVE if values[name] < 0]
        if negative:
            raise ConfigError(f"CostModel: {negative} must not be negative")

    def fee_bps(self, liquidity: Liquidity) -> float:
        return self.maker_fee_bps if liquidity == "maker" else self.taker_fee_bps


@dataclass(frozen=True)
class MarketState:
    """What the fill model may know when an order executes.

    price: the execution reference price (the next bar's open in a backtest).
    volatility: per-bar return standard deviation; NaN means fixed slippage only.
    volume: bar volume in base units (its notional is ``volume * price``); NaN or 0 means fixed
        slippage only.
    """

    price: float
    volatility: float
    volume: float


@dataclass(frozen=True)
class FillResult:
    """One executed order.

    quantity: signed (+ buy, - sell), after lot rounding.
    price: execution price including slippage (worse than the reference price for a taker).
    fee: quote currency; negative only for a maker rebate.
    slippage_cost: quote currency lost to slippage, ``|quantity| * |price - reference|``.
    liquidity: "maker" or "taker".
    """

    quantity: float
    price: float
    fee: float
    slippage_cost: float
    liquidity: Liquidity


@njit(cache=True)
def round_lot_kernel(quantity: float, lot_size: float) -> float:
    if lot_size <= 0.0 or quantity == 0.0:
        return quantity
    lots = math.floor(abs(quantity) / lot_size + LOT_TOLERANCE)
    # lots * lot_size can land one ulp above |quantity| (1.9 / 1e-8 lots); never grow an order.
    return math.copysign(min(lots * lot_size, abs(quantity)), quantity)


@njit(cache=True)
def fill_kernel(
    order_quantity: float,
    price: float,
    volatility: float,
    volume: float,
    lot_size: float,
    min_quantity: float,
    min_notional: float,
    fee_bps: float,
    slippage_bps: float,
    impact_coefficient: float,
    max_slippage_bps: float,
    is_taker: bool,
) -> tuple[float, float, float, float]:
    """(quantity, price, fee, slippage_cost); a quantity of 0.0 means the order is dropped."""
    quantity = round_lot_kernel(order_quantity, lot_size)
    size = abs(quantity)
    if size == 0.0 or size < min_quantity or size * price < min_notional:
        return 0.0, math.nan, 0.0, 0.0
    slip = 0.0
    if is_taker:
        slip = slippage_bps
        bar_notional = volume * price
        if impact_coefficient > 0.0 and volatility > 0.0 and bar_notional > 0.0:  # NaN: False
            slip += impact_coefficient * (volatility / BPS) * math.sqrt(size * price / bar_notional)
        if not slip <= max_slippage_bps:  # also a NaN from 0 * inf on a bar with ~no volume
            slip = max_slippage_bps
    direction = 1.0 if quantity > 0.0 else -1.0
    executed = price * (1.0 + direction * slip * BPS)
    fee = size * executed * fee_bps * BPS
    slippage_cost = size * abs(executed - price)
    return quantity, executed, fee, slippage_cost


def round_to_lot(quantity: float, lot_size: float) -> float:
    """``quantity`` rounded toward zero to a multiple of ``lot_size`` (unchanged if it is 0)."""
    return float(round_lot_kernel(float(quantity), float(lot_size)))


def fill(
    order_quantity: float,
    market: MarketState,
    model: CostModel,
    liquidity: Liquidity = "taker",
) -> FillResult | None:
    """Execute one order; None when it is dropped (rounds to zero or is below a minimum)."""
    if not (math.isfinite(market.price) and market.price > 0):
        raise ValueError(f"fill: reference price must be positive and finite, got {market.price}")
    quantity, price, fee, slippage_cost = fill_kernel(
        float(order_quantity),
        float(market.price),
        float(market.volatility),
        float(market.volume),
        float(model.lot_size),
        float(model.min_quantity),
        float(model.min_notional),
        float(model.fee_bps(liquidity)),
        float(model.slippage_bps),
        float(model.impact_coefficient),
        float(model.max_slippage_bps),
        liquidity == "taker",
    )
    if quantity == 0.0:
        return None
    return FillResult(quantity, price, fee, slippage_cost, liquidity)


@dataclass(frozen=True)
class FillArrays:
    """Many executed orders, element by element; ``filled`` is False where an order was dropped
    (its quantity, fee and slippage are 0 and its price NaN)."""

    quantity: np.ndarray
    price: np.ndarray
    fee: np.ndarray
    slippage_cost: np.ndarray
    filled: np.ndarray


@njit(cache=True)
def _fill_many(
    order_quantity: np.ndarray,
    price: np.ndarray,
    volatility: np.ndarray,
    volume: np.ndarray,
    lot_size: float,
    min_quantity: float,
    min_notional: float,
    fee_bps: float,
    slippage_bps: float,
    impact_coefficient: float,
    max_slippage_bps: float,
    is_taker: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n = order_quantity.shape[0]
    quantity = np.empty(n)
    executed = np.empty(n)
    fee = np.empty(n)
    slippage = np.empty(n)
    for i in range(n):
        quantity[i], executed[i], fee[i], slippage[i] = fill_kernel(
            order_quantity[i],
            price[i],
            volatility[i],
            volume[i],
            lot_size,
            min_quantity,
            min_notional,
            fee_bps,
            slippage_bps,
            impact_coefficient,
            max_slippage_bps,
            is_taker,
        )
    return quantity, executed, fee, slippage


def fill_arrays(
    order_quantity: np.ndarray,
    price: np.ndarray,
    volatility: np.ndarray,
    volume: np.ndarray,
    model: CostModel,
    liquidity: Liquidity = "taker",
) -> FillArrays:
    """Execute many orders at once (1-D arrays of equal length); the vectorised ``fill``."""
    orders, prices, vols, volumes = (
        np.ascontiguousarray(a, dtype=np.float64).ravel()
        for a in (order_quantity, price, volatility, volume)
    )
    if not orders.shape == prices.shape == vols.shape == volumes.shape:
        raise ValueError("fill_arrays: all inputs must have the same length")
    quantity, executed, fee, slippage = _fill_many(
        orders,
        prices,
        vols,
        volumes,
        float(model.lot_size),
        float(model.min_quantity),
        float(model.min_notional),
        float(model.fee_bps(liquidity)),
        float(model.slippage_bps),
        float(model.impact_coefficient),
        float(model.max_slippage_bps),
        liquidity == "taker",
    )
    return FillArrays(quantity, executed, fee, slippage, quantity != 0.0)
