"""The backtest engine: target weights per symbol and bar in, equity, positions and fills out.

Timing (walk-forward by construction). ``weights[t, j]`` is the fraction of equity to hold in
symbol j, decided with data known at the close of bar t. It trades at the open of bar
``t + execution_delay``; ``execution_delay`` must be at least 1, so no signal ever trades on the
bar it was computed from. The engine cannot see *how* a weight was computed: a strategy that
reads bar t+1 to decide bar t is caught by ``strategies.find_strategy_lookahead``, which
recomputes the weights on truncated history and compares (the same method as
``sapphire_domain.lookahead`` for features).

One bar t, in order:
1. funding: every open position pays ``position * open[t] * funding[t]`` (a long pays a positive
   rate, a short receives it);
2. rebalance at ``open[t]`` to the weights decided at bar ``t - delay``: the target quantity is
   ``weight * equity_at_open / open``, and the order is priced by the shared fill model
   (``fill_kernel``) with the volatility and volume of bar t-1, the last ones known at the open.
   Orders smaller than ``rebalance_band * equity`` are skipped, except those that close a
   position (target weight 0). When equity at the open is not positive the book is closed;
3. mark to market at ``close[t]``: equity = cash + sum(position * close).

Fees and slippage come out of cash, so out of equity. Cash may go negative (leverage up to
``max_leverage`` gross).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import polars as pl
from numba import njit

from sapphire_domain.backtest.errors import (
    LeverageExceededError,
    MisalignedIndexError,
    MissingPriceError,
    NonFiniteWeightsError,
)
from sapphire_domain.backtest.market import MarketData
from sapphire_domain.candles import TS_TYPE
from sapphire_domain.errors import ConfigError
from sapphire_domain.fill_model import CostModel, Liquidity, fill_kernel

# Slack on the leverage limit for weights that were normalised in floating point.
LEVERAGE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class BacktestConfig:
    """How the engine trades.

    cost_model (CostModel, CostModel()): fees, slippage, lot size and order minimums.
    liquidity ("maker" | "taker", "taker"): which fee and slippage every order gets.
    initial_cash (float, 10_000.0): quote currency at the start.
    execution_delay (int, 1): bars between the close a weight is decided at and the open it
        trades at; at least 1.
    rebalance_band (float, 0.0): skip an order whose notional is below this fraction of equity
        (a no-trade band against churn); closing a position is never skipped.
    max_leverage (float, 1.0): the largest gross weight (sum of |weight|) allowed on a bar.
    """

    cost_model: CostModel = field(default_factory=CostModel)
    liquidity: Liquidity = "taker"
    initial_cash: float = 10_000.0
    execution_delay: int = 1
    rebalance_band: float = 0.0
    max_leverage: float = 1.0

    def __post_init__(self) -> None:
        if self.execution_delay < 1:
            raise ConfigError(
                f"execution_delay is {self.execution_delay}: a weight decided at a bar's close "
                "can trade at the next bar's open at the earliest (delay >= 1)"
            )
        if not (math.isfinite(self.initial_cash) and self.initial_cash > 0):
            raise ConfigError(f"initial_cash must be positive, got {self.initial_cash}")
        if not (0 <= self.rebalance_band < 1):
            raise ConfigError(f"rebalance_band must be in [0, 1), got {self.rebalance_band}")
        if not (self.max_leverage > 0):
            raise ConfigError(f"max_leverage must be positive, got {self.max_leverage}")
        if self.liquidity not in ("maker", "taker"):
            raise ConfigError(f"liquidity must be 'maker' or 'taker', got {self.liquidity!r}")


@dataclass(frozen=True)
class BacktestResult:
    """What a backtest did, bar by bar (row t is bar t, marked at its close).

    equity, cash: quote currency after bar t.
    positions: (bars, symbols) base quantities held after bar t.
    fees, slippage, funding, traded_notional: paid (or traded) during bar t, quote currency;
        funding is positive when paid, negative when received.
    fill_*: one entry per fill, in execution order.
    """

    ts: np.ndarray
    symbols: tuple[str, ...]
    initial_cash: float
    liquidity: Liquidity
    equity: np.ndarray
    cash: np.ndarray
    positions: np.ndarray
    close: np.ndarray
    fees: np.ndarray
    slippage: np.ndarray
    funding: np.ndarray
    traded_notional: np.ndarray
    fill_bar: np.ndarray
    fill_symbol: np.ndarray
    fill_quantity: np.ndarray
    fill_price: np.ndarray
    fill_reference_price: np.ndarray
    fill_fee: np.ndarray
    fill_slippage: np.ndarray

    @property
    def fill_count(self) -> int:
        return len(self.fill_bar)

    @cached_property
    def gross_exposure(self) -> np.ndarray:
        """Sum of |position value| over equity, per bar, at the close."""
        value = np.abs(np.nan_to_num(self.positions * self.close)).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.equity > 0, value / self.equity, np.nan)

    @cached_property
    def fills(self) -> pl.DataFrame:
        """The fills as a frame with the bus ``Fill`` fields that a backtest can fill in:
        ts, symbol, side, quantity (> 0), price, fee, liquidity, venue, reference_price, plus
        slippage_cost."""
        symbols = pl.Series("symbol", list(self.symbols), pl.String)
        return pl.DataFrame(
            {
                "ts": pl.Series("ts", self.ts[self.fill_bar]).cast(TS_TYPE),
                "symbol": symbols.gather(self.fill_symbol),
                "side": np.where(self.fill_quantity > 0, "buy", "sell"),
                "quantity": np.abs(self.fill_quantity),
                "price": self.fill_price,
                "fee": self.fill_fee,
                "liquidity": [self.liquidity] * self.fill_count,
                "venue": ["backtest"] * self.fill_count,
                "reference_price": self.fill_reference_price,
                "slippage_cost": self.fill_slippage,
            },
            schema_overrides={"liquidity": pl.String, "venue": pl.String},
        )

    def equity_frame(self) -> pl.DataFrame:
        """ts, equity and drawdown (fraction below the running peak) per bar."""
        peak = np.maximum.accumulate(np.maximum(self.equity, self.initial_cash))
        return pl.DataFrame(
            {
                "ts": pl.Series("ts", self.ts).cast(TS_TYPE),
                "equity": self.equity,
                "drawdown": 1.0 - self.equity / peak,
            }
        )


def validate_weights(weights: np.ndarray, market: MarketData, config: BacktestConfig) -> int:
    """Raise a named error for weights the engine must not trade (see the module's errors);
    otherwise return how many (bar, symbol) cells are traded or held, the room for fills."""
    if weights.shape != market.close.shape:
        raise MisalignedIndexError(
            f"weights have shape {weights.shape}, prices {market.close.shape} "
            f"(bars x symbols {list(market.symbols)}): they must be on the same bars and symbols"
        )
    first, count, gross, held = _scan_inputs(
        weights,
        np.ascontiguousarray(market.open, dtype=np.float64),
        np.ascontiguousarray(market.close, dtype=np.float64),
        config.execution_delay,
        config.max_leverage + LEVERAGE_TOLERANCE,
    )
    if count[_NON_FINITE]:
        t, j = first[_NON_FINITE]
        raise NonFiniteWeightsError(
            f"{count[_NON_FINITE]} weight(s) are not finite, the first for {market.symbols[j]} "
            f"at {_when(market, t)}: {weights[t, j]}"
        )
    if count[_OVER_LEVERAGE]:
        raise LeverageExceededError(
            f"gross weight {gross:.6g} at {_when(market, first[_OVER_LEVERAGE, 0])} is above the "
            f"leverage limit {config.max_leverage} ({count[_OVER_LEVERAGE]} bar(s) over)"
        )
    for kind, name, prices in ((_NO_OPEN, "open", market.open), (_NO_CLOSE, "close", market.close)):
        if count[kind]:
            t, j = first[kind]
            raise MissingPriceError(
                f"{market.symbols[j]} is traded or held at {_when(market, t)} but its {name} "
                f"price there is {prices[t, j]} ({count[kind]} such bar(s)); give it a "
                "weight of 0 where it has no price"
            )
    return int(held)


# The problems _scan_inputs counts, in the order they are reported.
_NON_FINITE, _OVER_LEVERAGE, _NO_OPEN, _NO_CLOSE = range(4)


@njit(cache=True)
def _scan_inputs(
    weights: np.ndarray, open_: np.ndarray, close: np.ndarray, delay: int, limit: float
) -> tuple[np.ndarray, np.ndarray, float, int]:
    """One pass over the inputs without temporaries: (first, count, gross, held).

    first[k] is the (bar, symbol) of the first problem of kind k and count[k] how many there
    are (bars for the leverage limit, cells otherwise); gross is the first bar's gross weight
    over ``limit``. The weight in force at bar t was decided at t - delay; a symbol is traded
    or held at bar t when that weight or the one before it is non-zero, so it needs an open
    there, and a close where the weight in force is non-zero. held counts those cells.
    """
    bars, n = weights.shape
    first = np.full((4, 2), -1, dtype=np.int64)
    count = np.zeros(4, dtype=np.int64)
    first_gross = 0.0
    held = 0
    for t in range(bars):
        gross = 0.0
        for j in range(n):
            if not math.isfinite(weights[t, j]):
                if count[_NON_FINITE] == 0:
                    first[_NON_FINITE, 0], first[_NON_FINITE, 1] = t, j
                count[_NON_FINITE] += 1
            gross += abs(weights[t, j])
        if gross > limit:  # NaN: False, and reported as non-finite
            if count[_OVER_LEVERAGE] == 0:
                first[_OVER_LEVERAGE, 0], first_gross = t, gross
            count[_OVER_LEVERAGE] += 1
        if t < delay:
            continue
        for j in range(n):
            active = weights[t - delay, j] != 0.0
            if not (active or (t > delay and weights[t - delay - 1, j] != 0.0)):
                continue
            held += 1
            price = open_[t, j]
            if not (price > 0.0 and price < math.inf):
                if count[_NO_OPEN] == 0:
                    first[_NO_OPEN, 0], first[_NO_OPEN, 1] = t, j
                count[_NO_OPEN] += 1
            price = close[t, j]
            if active and not (price > 0.0 and price < math.inf):
                if count[_NO_CLOSE] == 0:
                    first[_NO_CLOSE, 0], first[_NO_CLOSE, 1] = t, j
                count[_NO_CLOSE] += 1
    return first, count, first_gross, held


def _when(market: MarketData, t: int) -> str:
    return f"bar {t} ({pl.Series([market.ts[t]]).cast(TS_TYPE)[0]})"


def run_backtest(
    weights: np.ndarray | pl.DataFrame,
    market: MarketData,
    config: BacktestConfig | None = None,
) -> BacktestResult:
    """Simulate trading ``weights`` (bars x symbols, or a frame ts/symbol/weight on exactly the
    market's bars) on ``market``; see the module docstring for the timing and accounting."""
    config = BacktestConfig() if config is None else config
    matrix = weights_matrix(weights, market) if isinstance(weights, pl.DataFrame) else weights
    matrix = np.ascontiguousarray(matrix, dtype=np.float64)
    room = validate_weights(matrix, market, config)
    per_bar, positions, fills, count = _simulate_growing(matrix, market, config, room)
    equity, cash, fees, slippage, funding, traded = per_bar
    # Views, not copies: the fill buffers have room for a fill in every held cell, and the
    # pages past ``count`` were never written, so they take no memory.
    bar, symbol, quantity, price, reference, fee, slip = (values[:count] for values in fills)
    return BacktestResult(
        ts=market.ts,
        symbols=market.symbols,
        initial_cash=config.initial_cash,
        liquidity=config.liquidity,
        equity=equity,
        cash=cash,
        positions=positions,
        close=market.close,
        fees=fees,
        slippage=slippage,
        funding=funding,
        traded_notional=traded,
        fill_bar=bar,
        fill_symbol=symbol,
        fill_quantity=quantity,
        fill_price=price,
        fill_reference_price=reference,
        fill_fee=fee,
        fill_slippage=slip,
    )


def weights_matrix(frame: pl.DataFrame, market: MarketData) -> np.ndarray:
    """A (ts, symbol, weight) frame as a bars x symbols matrix on the market's bars.

    Every ts of the frame must be a bar of the market and every symbol one of its symbols
    (otherwise MisalignedIndexError); a (bar, symbol) absent from the frame has weight 0. To
    align sparse or irregular targets to bars, use ``strategies.TargetPortfolioStrategy``.
    """
    missing = {"ts", "symbol", "weight"} - set(frame.columns)
    if missing:
        raise MisalignedIndexError(f"weights frame lacks columns {sorted(missing)}")
    ms = frame.get_column("ts").cast(TS_TYPE).dt.epoch("ms").to_numpy()
    rows = np.searchsorted(market.ts, ms)
    off_bar = (rows >= len(market.ts)) | (market.ts[np.minimum(rows, len(market.ts) - 1)] != ms)
    if off_bar.any():
        raise MisalignedIndexError(
            f"{int(off_bar.sum())} weight(s) are stamped at times that are not bars of the "
            f"market, the first at {frame.get_column('ts')[int(np.argmax(off_bar))]}"
        )
    column = {s: j for j, s in enumerate(market.symbols)}
    names = frame.get_column("symbol").to_list()
    unknown = sorted(set(names) - set(column))
    if unknown:
        raise MisalignedIndexError(f"weights name symbols without prices: {unknown}")
    if frame.select(pl.struct("ts", "symbol").is_duplicated().any()).item():
        raise MisalignedIndexError("weights frame has more than one weight per (ts, symbol)")
    out = np.zeros((len(market.ts), len(market.symbols)))
    out[rows, [column[s] for s in names]] = frame.get_column("weight").cast(pl.Float64).to_numpy()
    return out


def _simulate_growing(
    weights: np.ndarray, market: MarketData, config: BacktestConfig, room: int
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], int]:
    """Run the kernel with room for ``room`` fills: (per_bar, positions, fill buffers, count).

    ``validate_weights`` counts a fill's room in every traded or held cell, which the fills do
    not outgrow; should they, the kernel stops at the start of the bar that might overflow, and
    resumes there with bigger buffers. The outputs are allocated by numpy, not inside numba:
    numpy advises Linux to back large arrays with huge pages, which halves the cost of writing
    fresh outputs once a process has freed some (its first run pays to assemble them); and a
    kernel that neither reassigns nor slices an array does no reference counting (atomic
    operations) in its loops.
    """
    bars, n = weights.shape
    none = np.empty((0, n))
    model = config.cost_model
    per_bar = np.empty((6, bars))
    positions = np.empty(weights.shape)
    room = max(room, n)
    # bar, symbol; quantity, price, reference price, fee, slippage
    fills: list[np.ndarray] = [np.empty(room, np.int32), np.empty(room, np.int32)]
    fills += [np.empty(room) for _ in "qprfs"]
    inputs = (
        np.ascontiguousarray(market.open, dtype=np.float64),
        np.ascontiguousarray(market.close, dtype=np.float64),
        none if market.volatility is None else np.ascontiguousarray(market.volatility),
        np.ascontiguousarray(market.volume, dtype=np.float64),
        none if market.funding is None else np.ascontiguousarray(market.funding),
        weights,
        config.execution_delay,
        float(config.rebalance_band),
        float(model.lot_size),
        float(model.min_quantity),
        float(model.min_notional),
        float(model.fee_bps(config.liquidity)),
        float(model.slippage_bps),
        float(model.impact_coefficient),
        float(model.max_slippage_bps),
        config.liquidity == "taker",
    )
    position = np.zeros(n)
    cash, count, bar = float(config.initial_cash), 0, 0
    while True:
        bar, cash, count = _simulate(
            *inputs, bar, cash, count, position, per_bar, positions, *fills
        )
        if bar == bars:
            return per_bar, positions, fills, count
        fills = [_grown(values, count, 2 * len(values) + n) for values in fills]


def _grown(values: np.ndarray, used: int, size: int) -> np.ndarray:
    bigger = np.empty(size, dtype=values.dtype)
    bigger[:used] = values[:used]
    return bigger


@njit(cache=True)
def _simulate(
    open_: np.ndarray,
    close: np.ndarray,
    volatility: np.ndarray,
    volume: np.ndarray,
    funding: np.ndarray,
    weights: np.ndarray,
    delay: int,
    band: float,
    lot_size: float,
    min_quantity: float,
    min_notional: float,
    fee_bps: float,
    slippage_bps: float,
    impact_coefficient: float,
    max_slippage_bps: float,
    is_taker: bool,
    start: int,
    cash: float,
    count: int,
    position: np.ndarray,
    per_bar: np.ndarray,
    positions: np.ndarray,
    fill_bar: np.ndarray,
    fill_symbol: np.ndarray,
    fill_quantity: np.ndarray,
    fill_price: np.ndarray,
    fill_reference: np.ndarray,
    fill_fee: np.ndarray,
    fill_slippage: np.ndarray,
) -> tuple[int, float, int]:
    """Simulate from bar ``start`` with ``cash``, ``count`` fills and ``position`` (updated in
    place) after the bar before it. Write equity, cash, fees, slippage, funding and traded
    notional per bar into the rows of ``per_bar``, the positions after each bar into
    ``positions`` and the fills into the fill buffers. Return (bar, cash, count) at the end, or
    at the start of a bar whose fills might not fit in the buffers."""
    bars, n = weights.shape
    # Volatility and volume only matter to the impact term; without it they are not read.
    impact = is_taker and impact_coefficient > 0.0 and volatility.shape[0] > 0
    has_funding = funding.shape[0] > 0
    room = fill_bar.shape[0]
    for t in range(start, bars):
        if t >= delay and count + n > room:
            return t, cash, count
        bar_fees = 0.0
        bar_slippage = 0.0
        bar_funding = 0.0
        bar_traded = 0.0
        if has_funding:
            for j in range(n):
                rate = funding[t, j]
                if position[j] != 0.0 and not math.isnan(rate) and rate != 0.0:
                    payment = position[j] * open_[t, j] * rate
                    cash -= payment
                    bar_funding += payment
        decided = t - delay
        if decided >= 0:
            at_open = cash
            for j in range(n):
                if position[j] != 0.0:
                    at_open += position[j] * open_[t, j]
            invested = at_open > 0.0
            for j in range(n):
                weight = weights[decided, j] if invested else 0.0
                held = position[j]
                if weight == 0.0 and held == 0.0:
                    continue
                price = open_[t, j]
                if weight == 0.0:
                    order = -held
                else:
                    order = weight * at_open / price - held
                    if abs(order) * price < band * at_open:
                        continue
                vol = math.nan
                bar_volume = math.nan
                if impact and t > 0:
                    vol = volatility[t - 1, j]
                    bar_volume = volume[t - 1, j]
                quantity, executed, fee, slip = fill_kernel(
                    order,
                    price,
                    vol,
                    bar_volume,
                    lot_size,
                    min_quantity,
                    min_notional,
                    fee_bps,
                    slippage_bps,
                    impact_coefficient,
                    max_slippage_bps,
                    is_taker,
                )
                if quantity == 0.0:
                    continue
                position[j] = held + quantity
                cash -= quantity * executed + fee
                bar_fees += fee
                bar_slippage += slip
                bar_traded += abs(quantity) * executed
                fill_bar[count] = t
                fill_symbol[count] = j
                fill_quantity[count] = quantity
                fill_price[count] = executed
                fill_reference[count] = price
                fill_fee[count] = fee
                fill_slippage[count] = slip
                count += 1
        marked = cash
        for j in range(n):
            positions[t, j] = position[j]
            if position[j] != 0.0:
                marked += position[j] * close[t, j]
        per_bar[0, t] = marked
        per_bar[1, t] = cash
        per_bar[2, t] = bar_fees
        per_bar[3, t] = bar_slippage
        per_bar[4, t] = bar_funding
        per_bar[5, t] = bar_traded
    return bars, cash, count
