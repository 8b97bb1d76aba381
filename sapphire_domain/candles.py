"""The candle contract and the rules that decide whether a candle frame can be trusted.

A candle frame has one row per (symbol, open time). ``ts`` is the candle's open time in UTC
milliseconds; the candle is closed, and so visible to the platform, from ``ts + timeframe`` on.
Each rule returns the offending rows, so a failed check can show the user exactly what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from sapphire_domain.errors import CandleSchemaError
from sapphire_domain.timeframes import timeframe_ms

TS_TYPE = pl.Datetime("ms", "UTC")
PRICE_COLUMNS = ("open", "high", "low", "close")
CANDLE_SCHEMA: dict[str, pl.DataType] = {
    "ts": TS_TYPE,
    "symbol": pl.String(),
    "open": pl.Float64(),
    "high": pl.Float64(),
    "low": pl.Float64(),
    "close": pl.Float64(),
    "volume": pl.Float64(),
}
KEY = ("symbol", "ts")


def empty_candles() -> pl.DataFrame:
    return pl.DataFrame(schema=CANDLE_SCHEMA)


def schema_problems(frame: pl.DataFrame) -> list[str]:
    """Every way in which ``frame`` differs from the candle contract; empty when it conforms."""
    problems = []
    for name, dtype in CANDLE_SCHEMA.items():
        if name not in frame.columns:
            problems.append(f"missing column {name!r} ({dtype})")
        elif frame.schema[name] != dtype:
            problems.append(f"column {name!r} is {frame.schema[name]}, expected {dtype}")
    extra = sorted(set(frame.columns) - set(CANDLE_SCHEMA))
    if extra:
        problems.append(f"unexpected columns {extra}")
    return problems


def require_candle_schema(frame: pl.DataFrame, source: str) -> pl.DataFrame:
    """Return ``frame`` with the contract's column order, or raise naming every problem."""
    problems = schema_problems(frame)
    if problems:
        raise CandleSchemaError(f"{source}: not a candle frame: " + "; ".join(problems))
    return frame.select(list(CANDLE_SCHEMA))


def from_ohlcv_rows(symbol: str, rows: list[list[float]]) -> pl.DataFrame:
    """Build a candle frame from ccxt-style ``[ts_ms, open, high, low, close, volume]`` rows."""
    if not rows:
        return empty_candles()
    frame = pl.DataFrame(
        rows,
        schema=[
            ("ts", pl.Int64),
            ("open", pl.Float64),
            ("high", pl.Float64),
            ("low", pl.Float64),
            ("close", pl.Float64),
            ("volume", pl.Float64),
        ],
        orient="row",
    )
    return frame.select(
        pl.col("ts").cast(TS_TYPE),
        pl.lit(symbol, pl.String).alias("symbol"),
        *PRICE_COLUMNS,
        "volume",
    )


def sort_candles(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort(list(KEY))


# --- the blocking rules -------------------------------------------------------------------------


def _has_nan() -> pl.Expr:
    return pl.any_horizontal(
        [pl.col(c).is_null() | pl.col(c).is_nan() for c in (*PRICE_COLUMNS, "volume")]
    )


def nan_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows with a NaN or missing price or volume."""
    return frame.filter(_has_nan())


def non_positive_price_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows with a price at or below zero, or a negative volume."""
    bad = pl.any_horizontal([pl.col(c) <= 0 for c in PRICE_COLUMNS]) | (pl.col("volume") < 0)
    return frame.filter(bad)


def inconsistent_range_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows whose high is below the low, or whose open or close lies outside [low, high].

    Rows with a NaN are left to ``nan_rows``: polars orders NaN above every number, so they
    would otherwise be counted twice.
    """
    bad = ~_has_nan() & (
        (pl.col("high") < pl.col("low"))
        | (pl.col("close") > pl.col("high"))
        | (pl.col("close") < pl.col("low"))
        | (pl.col("open") > pl.col("high"))
        | (pl.col("open") < pl.col("low"))
    )
    return frame.filter(bad)


def duplicate_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """Every row whose (symbol, ts) occurs more than once."""
    return frame.filter(pl.struct(list(KEY)).is_duplicated())


def out_of_order_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows whose open time is earlier than the row before it for the same symbol."""
    previous = pl.col("ts").shift(1).over("symbol")
    return frame.filter(pl.col("ts") < previous)


# --- gaps: reported, never filled --------------------------------------------------------------


@dataclass(frozen=True)
class GapReport:
    """Missing candles of one symbol between its first and last candle."""

    symbol: str
    count: int
    missing_bars: int
    longest_bars: int


def gap_reports(frame: pl.DataFrame, timeframe: str) -> list[GapReport]:
    """One report per symbol: how many gaps, how many candles are missing and the longest gap."""
    step = timeframe_ms(timeframe)
    per_symbol = (
        frame.sort(list(KEY))
        .with_columns(
            ((pl.col("ts").diff().over("symbol").dt.total_milliseconds() // step) - 1)
            .fill_null(0)
            .clip(lower_bound=0)
            .alias("missing")
        )
        .group_by("symbol", maintain_order=True)
        .agg(
            (pl.col("missing") > 0).sum().alias("count"),
            pl.col("missing").sum().alias("missing_bars"),
            pl.col("missing").max().alias("longest_bars"),
        )
        .sort("symbol")
    )
    return [
        GapReport(
            symbol=row["symbol"],
            count=int(row["count"]),
            missing_bars=int(row["missing_bars"]),
            longest_bars=int(row["longest_bars"] or 0),
        )
        for row in per_symbol.iter_rows(named=True)
    ]


def closed_before(frame: pl.DataFrame, timeframe: str, now_ms: int) -> pl.DataFrame:
    """Only the candles that have closed by ``now_ms``: nothing from the future is ever visible."""
    step = timeframe_ms(timeframe)
    return frame.filter(pl.col("ts").dt.epoch("ms") + step <= now_ms)
