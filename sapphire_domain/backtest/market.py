"""Market data as aligned matrices: one row per bar, one column per symbol.

Row t is the candle that opens at ``ts[t]`` (the candle contract's convention); a missing candle
is NaN. Funding rates are aligned the same way: ``funding[t, j]`` is the rate charged at the
open of bar t (a print stamped inside ``(ts[t-1], ts[t]]`` is charged at bar t), NaN or 0 when
there is none.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from sapphire_domain.backtest.errors import MisalignedIndexError
from sapphire_domain.candles import TS_TYPE, require_candle_schema


@dataclass(frozen=True)
class MarketData:
    """Prices of ``symbols`` on the bars ``ts`` (UTC milliseconds, strictly increasing).

    open, high, low, close, volume: float arrays of shape (bars, symbols); NaN where a candle is
        missing.
    volatility: per-bar return standard deviation known at the close of each bar (for the
        impact part of slippage); None means fixed slippage only.
    funding: perpetual funding rate charged at the open of each bar; None means no funding.
    """

    ts: np.ndarray
    symbols: tuple[str, ...]
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    volatility: np.ndarray | None = None
    funding: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        shape = (len(self.ts), len(self.symbols))
        for name in ("open", "high", "low", "close", "volume", "volatility", "funding"):
            values = getattr(self, name)
            if values is not None and values.shape != shape:
                raise MisalignedIndexError(
                    f"market {name} has shape {values.shape}, expected (bars, symbols) = {shape}"
                )
        if len(self.ts) > 1 and not bool(np.all(np.diff(self.ts) > 0)):
            raise MisalignedIndexError("market ts must be strictly increasing")

    @property
    def bars(self) -> int:
        return len(self.ts)

    def head(self, bars: int) -> MarketData:
        """The first ``bars`` bars: what was known at the close of bar ``bars - 1``."""
        cut = slice(0, bars)

        def part(values: np.ndarray | None) -> np.ndarray | None:
            return None if values is None else values[cut]

        return MarketData(
            ts=self.ts[cut],
            symbols=self.symbols,
            open=self.open[cut],
            high=self.high[cut],
            low=self.low[cut],
            close=self.close[cut],
            volume=self.volume[cut],
            volatility=part(self.volatility),
            funding=part(self.funding),
        )

    @classmethod
    def from_candles(
        cls,
        candles: pl.DataFrame,
        *,
        funding: pl.DataFrame | None = None,
        volatility_window: int | None = 48,
        fill_gaps: bool = True,
    ) -> MarketData:
        """Pivot a candle frame (the candle contract) into matrices on the union of its bars.

        fill_gaps: a bar missing inside a symbol's history (between its first and last candle)
            gets the previous close as open, high, low and close, and zero volume: the position
            is valued at the last known price and trades there. Before a symbol's first candle
            and after its last, prices stay NaN, and holding it there is an error.
        volatility_window: bars of the rolling standard deviation of close-to-close log returns
            behind the impact part of slippage; None leaves it out.
        funding: a frame (ts, symbol, rate); each print is charged at the first bar opening at
            or after it.
        """
        frame = require_candle_schema(candles, "backtest candles")
        symbols = tuple(sorted(frame.get_column("symbol").unique().to_list()))
        bars = frame.get_column("ts").unique().sort()
        ts = bars.dt.epoch("ms").to_numpy().astype(np.int64)
        grid = pl.DataFrame({"ts": bars}).join(pl.DataFrame({"symbol": list(symbols)}), how="cross")
        full = grid.join(frame, on=["ts", "symbol"], how="left").sort("symbol", "ts")
        if fill_gaps:
            inside = (pl.col("close").is_not_null().cum_sum().over("symbol") > 0) & (
                pl.col("close").is_not_null().cum_sum(reverse=True).over("symbol") > 0
            )
            last_close = pl.col("close").forward_fill().over("symbol")
            full = full.with_columns(
                *(
                    pl.when(inside & pl.col(c).is_null())
                    .then(last_close)
                    .otherwise(pl.col(c))
                    .alias(c)
                    for c in ("open", "high", "low", "close")
                ),
                pl.when(inside & pl.col("volume").is_null())
                .then(0.0)
                .otherwise(pl.col("volume"))
                .alias("volume"),
            )

        def matrix(column: str | pl.Expr) -> np.ndarray:
            values = full.select(pl.col(column) if isinstance(column, str) else column)
            flat = values.to_series().cast(pl.Float64).fill_null(np.nan).to_numpy()
            return np.ascontiguousarray(flat.reshape(len(symbols), len(ts)).T)

        volatility = None
        if volatility_window is not None:
            log_return = (pl.col("close").log() - pl.col("close").shift(1).log()).over("symbol")
            volatility = matrix(
                log_return.rolling_std(volatility_window, min_samples=2).over("symbol")
            )
        funding_matrix = None
        if funding is not None and not funding.is_empty():
            funding_matrix = _funding_matrix(funding, bars, symbols)
        return cls(
            ts=ts,
            symbols=symbols,
            open=matrix("open"),
            high=matrix("high"),
            low=matrix("low"),
            close=matrix("close"),
            volume=matrix("volume"),
            volatility=volatility,
            funding=funding_matrix,
        )

    def ts_frame(self) -> pl.Series:
        return pl.Series("ts", self.ts).cast(TS_TYPE)


def _funding_matrix(funding: pl.DataFrame, bars: pl.Series, symbols: tuple[str, ...]) -> np.ndarray:
    """Sum the prints of each symbol onto the first bar opening at or after them."""
    out = np.zeros((len(bars), len(symbols)))
    bar_ms = bars.dt.epoch("ms").to_numpy()
    column = {s: j for j, s in enumerate(symbols)}
    prints = funding.select(
        pl.col("ts").cast(TS_TYPE).dt.epoch("ms").alias("ms"), "symbol", "rate"
    ).filter(pl.col("symbol").is_in(list(symbols)))
    ms = prints.get_column("ms").to_numpy()
    rows = np.searchsorted(bar_ms, ms, side="left")
    cols = np.array([column[s] for s in prints.get_column("symbol").to_list()], dtype=np.int64)
    keep = rows < len(bar_ms)
    np.add.at(out, (rows[keep], cols[keep]), prints.get_column("rate").to_numpy()[keep])
    return out
