"""Small assets for the warehouse tests, importable by the test subprocesses too.

``candles`` holds one row per symbol and hour of its day, and stamps every row with the id of
the run that wrote it, so a reader can tell whether a partition's rows came from one write.
"""

from datetime import datetime, timedelta

import dagster as dg
import polars as pl

SYMBOLS = ("BTC/USDT", "ETH/USDT")
ROWS_PER_DAY = 24 * len(SYMBOLS)
DAILY = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-02-01")
RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


def hourly_rows(start: datetime, end: datetime, run_id: str) -> pl.DataFrame:
    """One row per symbol and hour in ``[start, end)``, with a price that depends on both."""
    hours = int((end - start) / timedelta(hours=1))
    stamps = [start + timedelta(hours=h) for h in range(hours)]
    return pl.DataFrame(
        {
            "ts": [t for t in stamps for _ in SYMBOLS],
            "symbol": [s for _ in stamps for s in SYMBOLS],
            "close": [
                100.0 + t.timestamp() % 86400 / 3600 + i
                for t in stamps
                for i in range(len(SYMBOLS))
            ],
            "run_id": [run_id] * (hours * len(SYMBOLS)),
        },
        schema={
            "ts": pl.Datetime("us", "UTC"),
            "symbol": pl.String,
            "close": pl.Float64,
            "run_id": pl.String,
        },
    )


@dg.asset(
    partitions_def=DAILY,
    metadata={"partition_expr": "ts"},
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def candles(context: dg.AssetExecutionContext) -> pl.DataFrame:
    window = context.partition_time_window
    return hourly_rows(window.start, window.end, context.run.run_id)


@dg.asset(
    partitions_def=DAILY,
    metadata={"partition_expr": "ts"},
    ins={
        "candles": dg.AssetIn(
            partition_mapping=dg.TimeWindowPartitionMapping(
                start_offset=-2, allow_nonexistent_upstream_partitions=True
            )
        )
    },
)
def candles_lookback(context: dg.AssetExecutionContext, candles: pl.DataFrame) -> pl.DataFrame:
    """Per symbol: how many upstream rows the 3-day look-back saw, and their time span."""
    return (
        candles.group_by("symbol")
        .agg(
            pl.len().alias("rows_seen"),
            pl.col("ts").min().alias("first_ts"),
            pl.col("ts").max().alias("last_ts"),
        )
        .with_columns(pl.lit(context.partition_time_window.start).alias("ts"))
        .sort("symbol")
    )


@dg.asset
def candles_snapshot(candles: pl.DataFrame) -> pl.DataFrame:
    """Every materialised candle, unpartitioned: exercises loading all upstream partitions."""
    return candles.sort("ts", "symbol")


@dg.asset(partitions_def=DAILY, metadata={"partition_expr": "ts"})
def misdated_candles(context: dg.AssetExecutionContext) -> pl.DataFrame:
    """Returns its day's rows plus one row from the following day: must be refused."""
    window = context.partition_time_window
    return hourly_rows(window.start, window.end + timedelta(hours=1), context.run.run_id)
