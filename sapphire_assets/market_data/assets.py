"""Market data assets: candles, public trades and funding rates, one UTC day per partition."""

from collections.abc import Callable

import dagster as dg
import polars as pl
from dagster import AssetExecutionContext

from resources.market_data import MarketDataResource
from sapphire_assets.metadata import table
from sapphire_assets.partitions import time_partitions, window_ms
from sapphire_domain.candles import empty_candles, gap_reports
from sapphire_domain.errors import SapphireError
from sapphire_domain.market_schemas import empty_funding, empty_trades
from sapphire_domain.settings import Settings
from sapphire_market.source import MarketDataSource

GROUP = "market_data"
PARTITION_COLUMN = {"partition_expr": "ts"}


def _require_universe(source: MarketDataSource, symbols: tuple[str, ...]) -> None:
    """Fail before anything is fetched or written when a configured symbol does not exist."""
    try:
        listed = set(source.list_symbols())
    except SapphireError as error:
        raise dg.Failure(
            description=f"cannot list the symbols of {source.name!r}: {error}"
        ) from None
    unknown = [s for s in symbols if s not in listed]
    if unknown:
        raise dg.Failure(
            description=(
                f"unknown symbol(s) {', '.join(unknown)} on exchange {source.name!r}: fix "
                "universe.symbols in the configuration"
            ),
            allow_retries=False,
        )


def _per_symbol(
    context: AssetExecutionContext,
    symbols: tuple[str, ...],
    what: str,
    fetch: Callable[[str], pl.DataFrame | None],
) -> list[pl.DataFrame]:
    """Fetch every symbol; if any fail, fail the step naming each one, having written nothing."""
    frames, failures = [], {}
    for index, symbol in enumerate(symbols, start=1):
        try:
            frame = fetch(symbol)
        except SapphireError as error:
            failures[symbol] = f"{type(error).__name__}: {error}"
            context.log.error(f"{what} for {symbol} failed: {error}")
            continue
        if frame is not None:
            frames.append(frame)
        context.log.info(f"{what}: {index}/{len(symbols)} symbols fetched ({symbol})")
    if failures:
        raise dg.Failure(
            description=f"{what} failed for {', '.join(failures)}; nothing was written. "
            "Re-executing fetches only what is still missing.",
            metadata={"failures": dg.MetadataValue.json(failures)},
        )
    return frames


def candle_summary(frame: pl.DataFrame, timeframe: str) -> pl.DataFrame:
    """Rows, gaps and the last candle per symbol: what the UI shows for a materialisation."""
    counts = frame.group_by("symbol").agg(
        pl.len().alias("rows"), pl.col("ts").min().alias("first"), pl.col("ts").max().alias("last")
    )
    gaps = pl.DataFrame(
        [
            {
                "symbol": g.symbol,
                "gaps": g.count,
                "missing_bars": g.missing_bars,
                "longest_gap_bars": g.longest_bars,
            }
            for g in gap_reports(frame, timeframe)
        ],
        schema={
            "symbol": pl.String,
            "gaps": pl.Int64,
            "missing_bars": pl.Int64,
            "longest_gap_bars": pl.Int64,
        },
    )
    return counts.join(gaps, on="symbol", how="left").sort("symbol")


def build_market_data_assets(settings: Settings) -> list[dg.AssetsDefinition]:
    universe = settings.universe
    partitions = time_partitions(universe)

    @dg.asset(
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=GROUP,
        metadata=PARTITION_COLUMN,
        kinds={"polars"},
    )
    def candles(
        context: AssetExecutionContext, market_data: MarketDataResource
    ) -> dg.Output[pl.DataFrame]:
        """Closed OHLCV candles of every symbol in the universe, as the exchange reported them.

        Incremental: days already downloaded are read from the download cache; idempotent: a
        partition's rows replace whatever the warehouse held for it.
        """
        start_ms, end_ms = window_ms(context.partition_time_window)
        source = market_data.source()
        _require_universe(source, universe.symbols)
        cache = market_data.download_cache()
        downloaded = 0

        def fetch(symbol: str) -> pl.DataFrame:
            nonlocal downloaded
            frame, days = cache.fetch(source, symbol, universe.timeframe, start_ms, end_ms)
            downloaded += days
            return frame

        frames = _per_symbol(context, universe.symbols, "candles", fetch)
        frame = pl.concat(frames) if frames else empty_candles()
        summary = candle_summary(frame, universe.timeframe)
        last = frame.select(pl.col("ts").max()).item()
        return dg.Output(
            frame,
            metadata={
                "dagster/row_count": frame.height,
                "per_symbol": table(summary),
                "gaps": int(summary.select(pl.col("gaps").sum()).item() or 0),
                "longest_gap_bars": int(
                    summary.select(pl.col("longest_gap_bars").max()).item() or 0
                ),
                "last_candle": last.isoformat() if last is not None else "none",
                "days_downloaded": downloaded,
                "exchange": source.name,
                "timeframe": universe.timeframe,
            },
        )

    def sparse_market_asset(
        name: str,
        description: str,
        fetch: Callable[[MarketDataSource, str, int, int], pl.DataFrame | None],
        empty: Callable[[], pl.DataFrame],
    ) -> dg.AssetsDefinition:
        """An asset of data that only some symbols have (trades, funding): empty for the rest."""

        @dg.asset(
            name=name,
            description=description,
            partitions_def=partitions,
            backfill_policy=dg.BackfillPolicy.single_run(),
            group_name=GROUP,
            metadata=PARTITION_COLUMN,
            kinds={"polars"},
        )
        def _asset(
            context: AssetExecutionContext, market_data: MarketDataResource
        ) -> dg.Output[pl.DataFrame]:
            start_ms, end_ms = window_ms(context.partition_time_window)
            source = market_data.source()
            _require_universe(source, universe.symbols)
            frames = _per_symbol(
                context,
                universe.symbols,
                name,
                lambda symbol: fetch(source, symbol, start_ms, end_ms),
            )
            frame = pl.concat(frames) if frames else empty()
            return dg.Output(
                frame,
                metadata={"dagster/row_count": frame.height, "symbols_with_data": len(frames)},
            )

        return _asset

    trades = sparse_market_asset(
        "trades",
        "Public trades of the symbols whose exchange publishes them; empty for the others.",
        lambda source, symbol, start, end: source.fetch_trades(symbol, start, end),
        empty_trades,
    )
    funding_rates = sparse_market_asset(
        "funding_rates",
        "Funding rates of the perpetuals in the universe; empty for spot symbols.",
        lambda source, symbol, start, end: source.fetch_funding(symbol, start, end),
        empty_funding,
    )
    return [candles, trades, funding_rates]
