"""Performance metrics of an equity curve and of a backtest.

Returns are simple bar-to-bar returns of equity, the first one measured from the initial cash.
Crypto trades around the clock, so a year is 365 days of bars: ``periods_per_year("30m")`` is
17,520. Ratios are annualised with the square root of that count, without a risk-free rate.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from sapphire_domain.backtest.engine import BacktestResult
from sapphire_domain.timeframes import timeframe_ms

YEAR_MS = 365 * 86_400_000


def periods_per_year(timeframe: str) -> float:
    return YEAR_MS / timeframe_ms(timeframe)


def bar_returns(equity: np.ndarray, initial: float) -> np.ndarray:
    """Simple returns per bar; the first is measured from ``initial``."""
    previous = np.concatenate(([initial], equity[:-1]))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(previous > 0, equity / previous - 1.0, 0.0)


def total_return(equity: np.ndarray, initial: float) -> float:
    return float(equity[-1] / initial - 1.0) if len(equity) else 0.0


def cagr(equity: np.ndarray, initial: float, per_year: float) -> float:
    """Compound annual growth rate; -1 once equity is gone."""
    if not len(equity):
        return 0.0
    if equity[-1] <= 0:
        return -1.0
    years = len(equity) / per_year
    return float((equity[-1] / initial) ** (1.0 / years) - 1.0)


def sharpe(returns: np.ndarray, per_year: float) -> float:
    """Annualised mean over standard deviation (ddof 1); 0 when returns do not vary."""
    if len(returns) < 2:
        return 0.0
    deviation = float(np.std(returns, ddof=1))
    if not deviation > 0:
        return 0.0
    return float(np.mean(returns) / deviation * math.sqrt(per_year))


def sortino(returns: np.ndarray, per_year: float) -> float:
    """Annualised mean over downside deviation (root mean square of the negative returns, over
    all bars); 0 without losses."""
    if len(returns) < 2:
        return 0.0
    downside = math.sqrt(float(np.mean(np.minimum(returns, 0.0) ** 2)))
    if not downside > 0:
        return 0.0
    return float(np.mean(returns) / downside * math.sqrt(per_year))


def drawdown(equity: np.ndarray, initial: float) -> np.ndarray:
    """Fraction below the running peak (the initial cash counts as a peak), per bar."""
    if not len(equity):
        return np.zeros(0)
    peak = np.maximum.accumulate(np.maximum(equity, initial))
    return np.clip(1.0 - equity / peak, 0.0, 1.0)


def max_drawdown(equity: np.ndarray, initial: float) -> float:
    """Largest fall from a running peak, as a fraction in [0, 1]."""
    return float(drawdown(equity, initial).max()) if len(equity) else 0.0


def calmar(equity: np.ndarray, initial: float, per_year: float) -> float:
    """CAGR over maximum drawdown; 0 without a drawdown."""
    worst = max_drawdown(equity, initial)
    return cagr(equity, initial, per_year) / worst if worst > 0 else 0.0


@dataclass(frozen=True)
class PerformanceMetrics:
    """The performance of one backtest.

    hit_rate: share of bars with a position whose return was positive.
    turnover: traded notional over mean equity, per year.
    exposure: mean gross exposure (sum of |position value| over equity).
    fees_paid, slippage_paid, funding_paid: quote currency over the whole run.
    """

    total_return: float
    cagr: float
    sharpe: float
    sortino: float
    max_drawdown: float
    calmar: float
    hit_rate: float
    turnover: float
    exposure: float
    fees_paid: float
    slippage_paid: float
    funding_paid: float
    fills: int
    bars: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def performance_metrics(result: BacktestResult, timeframe: str) -> PerformanceMetrics:
    per_year = periods_per_year(timeframe)
    equity, initial = result.equity, result.initial_cash
    returns = bar_returns(equity, initial)
    # A bar counts for the hit rate when a position was held into it (over its close-to-close).
    held_before = np.concatenate(([False], np.abs(result.positions[:-1]).sum(axis=1) > 0))
    invested = held_before | (np.abs(result.positions).sum(axis=1) > 0)
    hit_rate = float(np.mean(returns[invested] > 0)) if invested.any() else 0.0
    years = len(equity) / per_year if len(equity) else 1.0
    mean_equity = float(np.mean(equity)) if len(equity) else initial
    turnover = float(result.traded_notional.sum() / mean_equity / years) if mean_equity > 0 else 0.0
    exposure = float(np.nanmean(result.gross_exposure)) if len(equity) else 0.0
    return PerformanceMetrics(
        total_return=total_return(equity, initial),
        cagr=cagr(equity, initial, per_year),
        sharpe=sharpe(returns, per_year),
        sortino=sortino(returns, per_year),
        max_drawdown=max_drawdown(equity, initial),
        calmar=calmar(equity, initial, per_year),
        hit_rate=hit_rate,
        turnover=turnover,
        exposure=exposure,
        fees_paid=float(result.fees.sum()),
        slippage_paid=float(result.slippage.sum()),
        funding_paid=float(result.funding.sum()),
        fills=result.fill_count,
        bars=len(equity),
    )
