"""The replay exchange: the bundled real market data served through the simulated clock.

It offers the same interface as a live exchange (``MarketDataSource``), and a candle becomes
visible only once it has closed at the clock's simulated "now".

File names say what a file holds: ``BTC_USD-30m.parquet`` (spot candles of BTC/USD),
``XRP_USDT-PERP-5m.parquet`` (candles of the perpetual ``XRP/USDT:USDT``),
``XRP_ETH-trades.parquet`` (public trades) and ``XRP_USDT-PERP-8h-funding.parquet`` (funding
rates, the rate in ``open``).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import polars as pl

from sapphire_domain.candles import (
    CANDLE_SCHEMA,
    PRICE_COLUMNS,
    closed_before,
    require_candle_schema,
)
from sapphire_domain.clock import ReplayClock
from sapphire_domain.errors import (
    CandleSchemaError,
    ConfigError,
    DataFileError,
    UnknownSymbolError,
)
from sapphire_domain.market_schemas import FUNDING_SCHEMA, TRADE_SCHEMA
from sapphire_domain.timeframes import timeframe_ms

BUNDLED_DATA_DIR = Path(__file__).resolve().parent / "data"
_FILE_NAME = re.compile(
    r"^(?P<base>[A-Z0-9]+)_(?P<quote>[A-Z0-9]+)(?P<perp>-PERP)?-(?P<kind>\d+[mhdw](?:-mark|-funding)?|trades)\.parquet$"
)


@dataclass(frozen=True)
class _DataFile:
    path: Path
    symbol: str
    kind: str  # "candles", "trades" or "funding"
    timeframe: str | None


def _unified_symbol(base: str, quote: str, perpetual: bool) -> str:
    return f"{base}/{quote}:{quote}" if perpetual else f"{base}/{quote}"


def _catalogue(data_dir: Path) -> list[_DataFile]:
    if not data_dir.is_dir():
        raise DataFileError(f"replay data folder {data_dir} does not exist")
    files = []
    for path in sorted(data_dir.glob("*.parquet")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            continue
        symbol = _unified_symbol(match["base"], match["quote"], match["perp"] is not None)
        kind = match["kind"]
        if kind == "trades":
            files.append(_DataFile(path, symbol, "trades", None))
        elif kind.endswith("-funding"):
            files.append(_DataFile(path, symbol, "funding", None))
        elif not kind.endswith("-mark"):
            files.append(_DataFile(path, symbol, "candles", kind))
    return files


class ReplayExchange:
    """A ``MarketDataSource`` over Parquet files, visible up to the replay clock's now."""

    name = "replay"

    def __init__(
        self,
        clock: Callable[[], int] | None = None,
        data_dir: Path | str = BUNDLED_DATA_DIR,
    ) -> None:
        """``clock`` gives the simulated now in epoch ms; without one, the data's end."""
        self._clock = clock or self.data_end_ms
        self._data_dir = Path(data_dir)
        self._frames: dict[Path, pl.DataFrame] = {}

    @classmethod
    def on_clock_file(
        cls, clock_file: Path | str, data_dir: Path | str = BUNDLED_DATA_DIR
    ) -> ReplayExchange:
        """A replay that follows the shared clock file, standing at the data's end without one."""
        exchange = cls(data_dir=data_dir)
        exchange._clock = ReplayClockFile(clock_file, default_ms=exchange.data_end_ms).now_ms
        return exchange

    def __repr__(self) -> str:
        return f"ReplayExchange(data_dir={str(self._data_dir)!r})"

    @cached_property
    def _files(self) -> list[_DataFile]:
        return _catalogue(self._data_dir)

    def now_ms(self) -> int:
        return self._clock()

    def list_symbols(self) -> list[str]:
        return sorted({f.symbol for f in self._files if f.kind == "candles"})

    @cached_property
    def _data_end_ms(self) -> int:
        ends = []
        for file in self._files:
            if file.kind == "candles" and file.timeframe is not None:
                try:
                    last = self._read(file).select(pl.col("ts").max()).item()
                except DataFileError:
                    continue  # named when its own symbol is fetched; the others still replay
                ends.append(int(last.timestamp() * 1000) + timeframe_ms(file.timeframe))
        if not ends:
            raise DataFileError(f"replay data folder {self._data_dir} holds no readable candles")
        return max(ends)

    def data_end_ms(self) -> int:
        """Close time of the last candle in the data: where a replay naturally ends."""
        return self._data_end_ms

    def fetch_candles(
        self, symbol: str, timeframe: str, start_ms: int, end_ms: int
    ) -> pl.DataFrame:
        file = self._candle_file(symbol, timeframe)
        native_ms = timeframe_ms(file.timeframe or timeframe)
        wanted_ms = timeframe_ms(timeframe)
        frame = self._read(file)
        if wanted_ms != native_ms:
            frame = _resample(frame, timeframe)
        in_range = frame.filter(
            pl.col("ts").dt.epoch("ms").is_between(start_ms, end_ms, closed="left")
        )
        return closed_before(in_range, timeframe, self.now_ms())

    def fetch_trades(self, symbol: str, start_ms: int, end_ms: int) -> pl.DataFrame | None:
        return self._events(symbol, "trades", start_ms, end_ms)

    def fetch_funding(self, symbol: str, start_ms: int, end_ms: int) -> pl.DataFrame | None:
        return self._events(symbol, "funding", start_ms, end_ms)

    # --- internals ------------------------------------------------------------------------------

    def _events(self, symbol: str, kind: str, start_ms: int, end_ms: int) -> pl.DataFrame | None:
        """Timestamped events (trades, funding prints) in the range that have happened by now."""
        file = self._find(symbol, kind)
        if file is None:
            return None
        ts = pl.col("ts").dt.epoch("ms")
        return self._read(file).filter(
            ts.is_between(start_ms, end_ms, closed="left") & (ts <= self.now_ms())
        )

    def _find(self, symbol: str, kind: str) -> _DataFile | None:
        self._require_known(symbol)
        return next((f for f in self._files if f.symbol == symbol and f.kind == kind), None)

    def _require_known(self, symbol: str) -> None:
        known = {f.symbol for f in self._files}
        if symbol not in known:
            raise UnknownSymbolError(
                f"symbol {symbol!r} is not in the replay data ({self._data_dir}); "
                f"available: {', '.join(sorted(known))}"
            )

    def _candle_file(self, symbol: str, timeframe: str) -> _DataFile:
        self._require_known(symbol)
        wanted = timeframe_ms(timeframe)
        candidates = [
            f
            for f in self._files
            if f.symbol == symbol and f.kind == "candles" and f.timeframe is not None
        ]
        usable = [f for f in candidates if wanted % timeframe_ms(f.timeframe or "") == 0]
        if not usable:
            have = ", ".join(sorted(f.timeframe or "" for f in candidates)) or "none"
            raise ConfigError(
                f"the replay data has no candles of {symbol} that make up {timeframe!r} "
                f"(it has: {have})"
            )
        # The coarsest native timeframe that divides the wanted one needs the least resampling.
        return max(usable, key=lambda f: timeframe_ms(f.timeframe or ""))

    def _read(self, file: _DataFile) -> pl.DataFrame:
        cached = self._frames.get(file.path)
        if cached is None:
            cached = _read_data_file(file)
            self._frames[file.path] = cached
        return cached


def _read_data_file(file: _DataFile) -> pl.DataFrame:
    try:
        raw = pl.read_parquet(file.path)
    except Exception as error:  # polars raises several types for a damaged file
        raise DataFileError(f"cannot read replay data file {file.path}: {error}") from None
    try:
        if file.kind == "candles":
            frame = raw.with_columns(
                pl.col("ts").cast(CANDLE_SCHEMA["ts"]), pl.lit(file.symbol).alias("symbol")
            )
            return require_candle_schema(frame, str(file.path))
        if file.kind == "trades":
            frame = raw.with_columns(
                pl.col("ts").cast(TRADE_SCHEMA["ts"]), pl.lit(file.symbol).alias("symbol")
            )
            return frame.select([pl.col(c).cast(t) for c, t in TRADE_SCHEMA.items()])
        frame = raw.select(
            pl.col("ts").cast(FUNDING_SCHEMA["ts"]),
            pl.lit(file.symbol).alias("symbol"),
            pl.col("open").cast(pl.Float64).alias("rate"),
        )
        return frame
    except (pl.exceptions.PolarsError, CandleSchemaError) as error:
        raise DataFileError(
            f"replay data file {file.path} does not have the expected columns: {error}"
        ) from None


def _resample(frame: pl.DataFrame, timeframe: str) -> pl.DataFrame:
    """Aggregate native candles into coarser ones; a bucket is emitted only when fully present."""
    native = frame.sort("ts")
    step = native.select(pl.col("ts").diff().min()).item()
    per_bucket = timeframe_ms(timeframe) // int(step.total_seconds() * 1000)
    aggregated = native.group_by_dynamic("ts", every=timeframe, closed="left", label="left").agg(
        pl.col("open").first(),
        pl.col("high").max(),
        pl.col("low").min(),
        pl.col("close").last(),
        pl.col("volume").sum(),
        pl.col("symbol").first(),
        pl.len().alias("bars"),
    )
    return aggregated.filter(pl.col("bars") == per_bucket).select(
        "ts", "symbol", *PRICE_COLUMNS, "volume"
    )


# --- the shared clock state ---------------------------------------------------------------------


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class ReplayClockFile:
    """The replay clock's state in a JSON file that every process of the platform reads.

    With no file, the clock stands at ``default_ms`` (the end of the data), so all bundled
    history is visible; starting a replay session writes the anchor.
    """

    def __init__(self, path: Path | str, default_ms: Callable[[], int]) -> None:
        self.path = Path(path)
        self.default_ms = default_ms

    def load(self) -> ReplayClock:
        if not self.path.exists():
            return ReplayClock.frozen_at(self.default_ms())
        try:
            state = json.loads(self.path.read_text())
            return ReplayClock(
                anchor_sim_ms=int(state["anchor_sim_ms"]),
                anchor_wall_ms=int(state["anchor_wall_ms"]),
                speed=float(state["speed"]),
                stop_ms=None if state.get("stop_ms") is None else int(state["stop_ms"]),
            )
        except (ValueError, KeyError, TypeError) as error:
            raise ConfigError(
                f"replay clock file {self.path} is damaged ({error}); delete it to reset the clock"
            ) from None

    def start(self, sim_start_ms: int, speed: float) -> ReplayClock:
        clock = ReplayClock(
            anchor_sim_ms=sim_start_ms,
            anchor_wall_ms=wall_ms(),
            speed=speed,
            stop_ms=self.default_ms(),
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(clock.__dict__))
        os.replace(tmp, self.path)
        return clock

    def now_ms(self) -> int:
        return self.load().now_ms(wall_ms())
