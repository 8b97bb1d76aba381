"""Strategies: small classes that turn market data into target weights, nothing more.

A strategy's ``target_weights(market)`` returns a (bars, symbols) matrix whose row t may use only
what was known at the close of bar t; the engine trades it at the open of t + delay. The engine
cannot check that rule by itself, so ``find_strategy_lookahead`` does: it recomputes the weights
on history cut after bar t and compares row t with the full-history run. A strategy that peeks
at bar t+1 changes under the cut and is named (the method of ``sapphire_domain.lookahead``).

Walk-forward. ``TargetPortfolioStrategy`` takes targets stamped with the candle time they were
decided at (the ``ts`` of the bar whose close they used, as features and forecasts are stamped)
and gives each bar the latest target stamped at or before it: a target is never used before it
exists. That the forecasts behind the targets are out of sample (made by models that had not
seen the period) is the producing asset's contract; this strategy only guarantees the timing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import polars as pl

from sapphire_domain.backtest.errors import LookaheadDetectedError, MisalignedIndexError
from sapphire_domain.backtest.market import MarketData
from sapphire_domain.candles import TS_TYPE


@runtime_checkable
class Strategy(Protocol):
    """Anything with a name and target weights per bar and symbol."""

    @property
    def name(self) -> str: ...

    def target_weights(self, market: MarketData) -> np.ndarray: ...


def _priced(market: MarketData) -> np.ndarray:
    return np.isfinite(market.close) & (market.close > 0)


@dataclass(frozen=True)
class BuyAndHold:
    """Buy equal amounts of every symbol at the first bar, ``gross`` in all, then hold.

    Row t holds the weights that the untouched portfolio has drifted to at the close of bar t
    (each symbol's value grows with its close since the start), so the engine does not trade
    against drift; give the engine a small ``rebalance_band`` to also skip the crumbs left by
    the open-to-close difference and by fees. A symbol whose prices start later joins on its
    first priced bar with the same initial stake as the others had at the start.
    """

    gross: float = 1.0
    name: str = "buy_and_hold"

    def target_weights(self, market: MarketData) -> np.ndarray:
        priced = _priced(market)
        close = np.where(priced, market.close, np.nan)
        # Value of one unit of quote put in at a symbol's first price, by bar.
        first = np.argmax(priced, axis=0)
        entry = close[first, np.arange(close.shape[1])]
        with np.errstate(invalid="ignore", divide="ignore"):
            grown = np.nan_to_num(close / entry, nan=0.0)
        total = grown.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, self.gross * grown / total, 0.0)


@dataclass(frozen=True)
class MomentumBaseline:
    """The sign of each symbol's ``lookback``-bar return, equal weight ``gross / symbols``.

    long_only: a negative signal is flat instead of short.
    volatility_target: when set, each weight is scaled by ``volatility_target / realized``
        (per-bar standard deviation of log returns over ``volatility_window`` bars), capped at
        1, so a volatile symbol gets less.
    """

    lookback: int = 48
    gross: float = 1.0
    long_only: bool = False
    volatility_target: float | None = None
    volatility_window: int = 48
    name: str = "momentum"

    def target_weights(self, market: MarketData) -> np.ndarray:
        close = market.close
        bars, n = close.shape
        signal = np.zeros_like(close)
        if bars > self.lookback:
            with np.errstate(invalid="ignore", divide="ignore"):
                change = np.log(close[self.lookback :] / close[: -self.lookback])
            signal[self.lookback :] = np.nan_to_num(np.sign(change))
        if self.long_only:
            signal = np.maximum(signal, 0.0)
        weights = signal * (self.gross / max(n, 1))
        if self.volatility_target is not None:
            weights *= self._volatility_scale(close)
        return np.where(_priced(market), weights, 0.0)

    def _volatility_scale(self, close: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            returns = np.diff(np.log(close), axis=0, prepend=np.nan)
        # Trailing window (rows t - window + 1 .. t); missing returns are skipped, not zero.
        frame = pl.DataFrame(returns, nan_to_null=True)
        realized = (
            frame.select(pl.all().rolling_std(self.volatility_window, min_samples=2))
            .to_numpy()
            .astype(np.float64)
        )
        target = self.volatility_target if self.volatility_target is not None else np.nan
        with np.errstate(invalid="ignore", divide="ignore"):
            scale = np.minimum(target / realized, 1.0)
        return np.nan_to_num(scale, nan=0.0)


@dataclass(frozen=True)
class TargetPortfolioStrategy:
    """Weights from a target frame (ts, symbol, weight), such as the target portfolio asset.

    Each bar holds the latest target of each symbol stamped at or before the bar's ts (see the
    module docstring); a symbol with no target yet, or none in the frame, has weight 0.
    ``max_age_bars`` drops a target older than that many bars (None keeps it forever).
    """

    targets: pl.DataFrame
    name: str = "target_portfolio"
    max_age_bars: int | None = None

    def target_weights(self, market: MarketData) -> np.ndarray:
        missing = {"ts", "symbol", "weight"} - set(self.targets.columns)
        if missing:
            raise MisalignedIndexError(f"targets lack columns {sorted(missing)}")
        out = np.zeros((market.bars, len(market.symbols)))
        targets = self.targets.select(
            pl.col("ts").cast(TS_TYPE).dt.epoch("ms").alias("ms"), "symbol", "weight"
        ).sort("ms")
        for j, symbol in enumerate(market.symbols):
            rows = targets.filter(pl.col("symbol") == symbol)
            if rows.is_empty():
                continue
            ms = rows.get_column("ms").to_numpy()
            weight = rows.get_column("weight").cast(pl.Float64).to_numpy()
            latest = np.searchsorted(ms, market.ts, side="right") - 1  # stamped at or before
            valid = latest >= 0
            if self.max_age_bars is not None:
                first_bar = np.searchsorted(market.ts, ms, side="left")
                age = np.arange(market.bars) - first_bar[np.maximum(latest, 0)]
                valid &= age <= self.max_age_bars
            out[valid, j] = weight[latest[valid]]
        return np.where(_priced(market), out, 0.0)


def find_strategy_lookahead(
    strategy: Strategy,
    market: MarketData,
    samples: int = 20,
    *,
    seed: int = 0,
    tolerance: float = 1e-9,
) -> list[tuple[int, str, float, float]]:
    """(bar, symbol, full-history weight, truncated weight) for every weight at a sampled bar
    that changes when the bars after it are cut off; empty when the strategy does not peek.

    The bars are drawn with ``seed`` from all but the last (which has no future to cut).
    """
    if market.bars == 0:
        return []
    full = strategy.target_weights(market)
    candidates = list(range(market.bars - 1))
    drawn = random.Random(seed).sample(candidates, min(samples, len(candidates)))
    problems: list[tuple[int, str, float, float]] = []
    for t in sorted(drawn):
        truncated = strategy.target_weights(market.head(t + 1))[t]
        differs = ~np.isclose(full[t], truncated, rtol=tolerance, atol=tolerance, equal_nan=True)
        problems.extend(
            (t, market.symbols[j], float(full[t, j]), float(truncated[j]))
            for j in np.flatnonzero(differs)
        )
    return problems


def require_no_lookahead(strategy: Strategy, market: MarketData, samples: int = 20) -> None:
    """Raise LookaheadDetectedError naming the first weight that peeks at later bars."""
    problems = find_strategy_lookahead(strategy, market, samples)
    if problems:
        t, symbol, full, truncated = problems[0]
        raise LookaheadDetectedError(
            f"strategy {strategy.name!r} looks ahead: its weight for {symbol} at bar {t} is "
            f"{full} with the full history and {truncated} with history cut after bar {t} "
            f"({len(problems)} weight(s) differ)"
        )
