"""A seeded synthetic crypto market in the candle contract, for scale tests and benchmarks.

Log returns follow a one-factor model: every symbol loads on one market factor, and both the
factor and each symbol's own component are GARCH(1,1) processes with standardised Student-t
innovations. That gives the stylised facts the platform's features and checks care about:
volatility clustering, fat tails and positively correlated symbols. Bars are continuous (open =
previous close, as in 24/7 crypto markets); high and low are the extremes of a Brownian bridge
between open and close with the bar's conditional variance; volume rises with the bar's absolute
return.

Each symbol draws from its own random stream spawned from the seed, so the first k symbols of a
larger universe are the same as a universe of k symbols.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import polars as pl

from sapphire_domain.candles import CANDLE_SCHEMA, TS_TYPE, empty_candles
from sapphire_domain.errors import ConfigError
from sapphire_domain.timeframes import timeframe_ms

DEFAULT_START = datetime(2024, 1, 1, tzinfo=UTC)
_DAY_MS = 86_400_000
_YEAR_MS = 365 * _DAY_MS


@dataclass(frozen=True)
class SyntheticMarketParams:
    """The synthetic market's model; defaults look like liquid crypto on one-minute bars.

    annual_volatility: float = 0.8. Typical annualised volatility of a symbol's log returns.
    volatility_dispersion: float = 0.3. Standard deviation of the log of each symbol's volatility
        multiplier, so some symbols are calmer than others.
    annual_drift: float = 0.0. Drift of log prices per year.
    garch_alpha: float = 0.05. Weight of last bar's squared shock in this bar's variance.
    garch_beta: float = 0.94. Weight of last bar's variance; ``alpha + beta`` is the persistence.
        Omega is not free: it is ``1 - alpha - beta`` (see ``garch_omega``), so each GARCH process
        has unit unconditional variance and ``annual_volatility`` sets the level.
    student_t_dof: float = 6.0. Degrees of freedom of the innovations (scaled to unit variance);
        lower is fatter-tailed; above 4 keeps the kurtosis finite.
    market_correlation: float = 0.5. Share of each symbol's return variance from the market
        factor, which is also the correlation between any two symbols' returns.
    intrabar_volatility: float = 1.0. Scales the bar's variance used for the high/low bridge.
    mean_bar_notional: float = 100_000.0. Typical traded value per bar, in quote currency.
    volume_return_sensitivity: float = 2.0. How much volume rises per unit of the bar's absolute
        return measured in the symbol's typical bar volatility.
    volume_noise: float = 0.5. Standard deviation of the log-normal noise on volume.
    min_start_price, max_start_price: float = 0.5, 50_000.0. First prices are log-uniform between.
    """

    annual_volatility: float = 0.8
    volatility_dispersion: float = 0.3
    annual_drift: float = 0.0
    garch_alpha: float = 0.05
    garch_beta: float = 0.94
    student_t_dof: float = 6.0
    market_correlation: float = 0.5
    intrabar_volatility: float = 1.0
    mean_bar_notional: float = 100_000.0
    volume_return_sensitivity: float = 2.0
    volume_noise: float = 0.5
    min_start_price: float = 0.5
    max_start_price: float = 50_000.0

    def __post_init__(self) -> None:
        problems = []
        if self.annual_volatility <= 0 or self.volatility_dispersion < 0:
            problems.append("annual_volatility must be positive and volatility_dispersion >= 0")
        if self.garch_alpha < 0 or self.garch_beta < 0 or self.garch_alpha + self.garch_beta >= 1:
            problems.append("GARCH needs alpha >= 0, beta >= 0 and alpha + beta < 1")
        if self.student_t_dof <= 2:
            problems.append("student_t_dof must exceed 2 for a finite variance")
        if not 0 <= self.market_correlation < 1:
            problems.append("market_correlation must lie in [0, 1)")
        if self.intrabar_volatility < 0 or self.volume_noise < 0:
            problems.append("intrabar_volatility and volume_noise must not be negative")
        if self.mean_bar_notional <= 0 or self.volume_return_sensitivity < 0:
            problems.append("mean_bar_notional must be positive, volume_return_sensitivity >= 0")
        if not 0 < self.min_start_price <= self.max_start_price:
            problems.append("need 0 < min_start_price <= max_start_price")
        if problems:
            raise ConfigError("invalid synthetic market parameters: " + "; ".join(problems))

    @property
    def garch_omega(self) -> float:
        return 1.0 - self.garch_alpha - self.garch_beta


def synthetic_symbols(n_symbols: int) -> list[str]:
    """``SYN000/USD``, ``SYN001/USD``...; zero-padded so name order is index order."""
    width = max(3, len(str(max(n_symbols - 1, 0))))
    return [f"SYN{i:0{width}d}/USD" for i in range(n_symbols)]


def bar_count(days: int, timeframe: str) -> int:
    """Bars whose open time falls in ``[start, start + days)``."""
    return -(-days * _DAY_MS // timeframe_ms(timeframe))


def generate_candles(
    n_symbols: int,
    days: int,
    timeframe: str = "1m",
    seed: int = 0,
    start: datetime | None = None,
    *,
    params: SyntheticMarketParams | None = None,
) -> pl.DataFrame:
    """Candles of ``n_symbols`` symbols over ``days`` days from ``start`` (UTC), sorted by
    (symbol, ts), in the candle contract. The same arguments always give the same frame."""
    if n_symbols < 0 or days < 0:
        raise ConfigError(f"n_symbols and days must not be negative, got {n_symbols}, {days}")
    start = DEFAULT_START if start is None else start
    if start.tzinfo is None:
        raise ConfigError(f"start {start} has no time zone; pass an aware datetime (UTC)")
    params = SyntheticMarketParams() if params is None else params
    step = timeframe_ms(timeframe)
    n_bars = bar_count(days, timeframe)
    if n_symbols == 0 or n_bars == 0:
        return empty_candles()

    market_stream, *symbol_streams = (
        np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(n_symbols + 1)
    )
    # Per-symbol constants come first in each stream, so later draws never shift them.
    constants = np.array([_symbol_constants(rng, params) for rng in symbol_streams])
    shocks = np.empty((n_symbols + 1, n_bars))
    shocks[0] = _standard_t(market_stream, params.student_t_dof, n_bars)
    for i, rng in enumerate(symbol_streams, start=1):
        shocks[i] = _standard_t(rng, params.student_t_dof, n_bars)
    variance = _garch_variance(shocks, params)
    shocks *= np.sqrt(variance)  # now the GARCH shocks, unit unconditional variance

    bar_vol = params.annual_volatility * math.sqrt(step / _YEAR_MS)
    drift = params.annual_drift * step / _YEAR_MS
    market_weight = math.sqrt(params.market_correlation)
    own_weight = math.sqrt(1.0 - params.market_correlation)

    size = n_symbols * n_bars
    columns = {name: np.empty(size) for name in ("open", "high", "low", "close", "volume")}
    for i, rng in enumerate(symbol_streams):
        start_price, vol_multiplier = constants[i]
        sigma = bar_vol * vol_multiplier
        returns = sigma * (market_weight * shocks[0] + own_weight * shocks[i + 1]) + drift
        bar_variance = sigma**2 * (
            params.market_correlation * variance[0]
            + (1.0 - params.market_correlation) * variance[i + 1]
        )
        block = slice(i * n_bars, (i + 1) * n_bars)
        _fill_bars(
            rng,
            params=params,
            start_price=start_price,
            sigma=sigma,
            returns=returns,
            bar_variance=bar_variance,
            out={name: values[block] for name, values in columns.items()},
        )
    del shocks, variance

    start_ms = int(start.timestamp() * 1000)
    bar_ts = start_ms + step * np.arange(n_bars, dtype=np.int64)
    names = pl.Series("symbol", synthetic_symbols(n_symbols), pl.String)
    frame = pl.DataFrame(
        {
            "ts": pl.Series("ts", np.tile(bar_ts, n_symbols)).cast(TS_TYPE),
            "symbol": names.gather(np.repeat(np.arange(n_symbols, dtype=np.uint32), n_bars)),
            **{name: pl.Series(name, values) for name, values in columns.items()},
        }
    )
    return frame.select(list(CANDLE_SCHEMA))


def _symbol_constants(
    rng: np.random.Generator, params: SyntheticMarketParams
) -> tuple[float, float]:
    start_price = math.exp(
        rng.uniform(math.log(params.min_start_price), math.log(params.max_start_price))
    )
    dispersion = params.volatility_dispersion
    vol_multiplier = math.exp(dispersion * rng.standard_normal() - dispersion**2 / 2)
    return start_price, vol_multiplier


def _standard_t(rng: np.random.Generator, dof: float, size: int) -> np.ndarray:
    """Student-t draws scaled to unit variance, so the tails change but the level does not."""
    return rng.standard_t(dof, size) * math.sqrt((dof - 2.0) / dof)


def _garch_variance(shocks: np.ndarray, params: SyntheticMarketParams) -> np.ndarray:
    """Conditional variances ``h[:, t] = omega + h[:, t-1] * (alpha * z[:, t-1]**2 + beta)``.

    ``shocks`` holds the standardised innovations z, one row per series. The recursion is
    sequential in time, so it loops over bars with numpy ops across all series at once.
    """
    n_series, n_bars = shocks.shape
    growth = shocks**2
    growth *= params.garch_alpha
    growth += params.garch_beta
    variance = np.empty((n_bars, n_series))  # time-major, so each step touches contiguous rows
    growth_by_bar = np.ascontiguousarray(growth.T)
    del growth
    current = np.ones(n_series)  # start at the unconditional variance
    omega = params.garch_omega
    for t in range(n_bars):
        variance[t] = current
        np.multiply(current, growth_by_bar[t], out=current)
        current += omega
    return np.ascontiguousarray(variance.T)


def _fill_bars(
    rng: np.random.Generator,
    *,
    params: SyntheticMarketParams,
    start_price: float,
    sigma: float,
    returns: np.ndarray,
    bar_variance: np.ndarray,
    out: dict[str, np.ndarray],
) -> None:
    """One symbol's OHLCV from its log returns, written into the ``out`` views."""
    n_bars = returns.size
    log_close = math.log(start_price) + np.cumsum(returns)
    log_open = np.empty(n_bars)
    log_open[0] = math.log(start_price)
    log_open[1:] = log_close[:-1]
    move = log_close - log_open

    # Extremes of a Brownian bridge from 0 to `move` with the bar's variance:
    # max = (move + sqrt(move² - 2 v ln U)) / 2, min = (move - sqrt(move² - 2 v ln V)) / 2.
    bridge_variance = params.intrabar_volatility**2 * bar_variance
    up = np.sqrt(move**2 - 2.0 * bridge_variance * np.log1p(-rng.random(n_bars)))
    down = np.sqrt(move**2 - 2.0 * bridge_variance * np.log1p(-rng.random(n_bars)))

    np.exp(log_open, out=out["open"])
    np.exp(log_close, out=out["close"])
    # The max/min guard against rounding putting open or close a hair outside [low, high].
    body_high = np.maximum(out["open"], out["close"])
    body_low = np.minimum(out["open"], out["close"])
    np.maximum(np.exp(log_open + (move + up) / 2), body_high, out=out["high"])
    np.minimum(np.exp(log_open + (move - down) / 2), body_low, out=out["low"])

    typical_volume = params.mean_bar_notional / start_price
    noise = params.volume_noise * rng.standard_normal(n_bars) - params.volume_noise**2 / 2
    activity = 1.0 + params.volume_return_sensitivity * np.abs(returns) / sigma
    np.multiply(typical_volume * np.exp(noise), activity, out=out["volume"])
