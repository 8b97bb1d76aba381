"""The blocking look-ahead check of the features asset.

It runs inside the asset's own step, on exactly the frames the asset computed from, so the
look-back window it truncates is the one the features really used. A failed check stops the
step before anything is written, and everything downstream with it.
"""

import zlib
from collections.abc import Callable, Sequence

import dagster as dg
import polars as pl

from sapphire_assets.metadata import table
from sapphire_assets.partitions import window_ms
from sapphire_domain.lookahead import find_lookahead, sample_times, violations_frame

CHECK_NAME = "no_lookahead"
SAMPLES_PER_PARTITION = 2
TOLERANCE = 1e-9


def lookahead_check_spec(features_key: dg.AssetKey) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        CHECK_NAME,
        asset=features_key,
        blocking=True,
        description=(
            f"{SAMPLES_PER_PARTITION} sampled rows of every partition equal a recomputation on "
            "history truncated at their time"
        ),
    )


def evaluate_lookahead(
    compute: Callable[..., pl.DataFrame],
    features: pl.DataFrame,
    candles: pl.DataFrame,
    trades: pl.DataFrame | None,
    funding: pl.DataFrame | None,
    timeframe: str,
    history_bars: int,
    partitions: dg.TimeWindowPartitionsDefinition,
    partition_keys: Sequence[str],
) -> dg.AssetCheckResult:
    """Sample rows of each partition and recompute them on history cut at their own time."""
    times = []
    for key in partition_keys:
        start_ms, end_ms = window_ms(partitions.time_window_for_partition_key(key))
        rows = features.filter(
            pl.col("ts").dt.epoch("ms").is_between(start_ms, end_ms, closed="left")
        )
        if not rows.is_empty():
            # Seeded by the partition key, so a re-run samples the same times.
            times += sample_times(rows, SAMPLES_PER_PARTITION, zlib.crc32(key.encode()))
    if not times:
        return dg.AssetCheckResult(
            check_name=CHECK_NAME, passed=True, description="no rows in these partitions"
        )
    violations = violations_frame(
        find_lookahead(
            compute,
            candles,
            timeframe,
            times,
            trades=trades,
            funding=funding,
            history_bars=history_bars,
            tolerance=TOLERANCE,
            expected=features,
        )
    )
    return dg.AssetCheckResult(
        check_name=CHECK_NAME,
        passed=violations.is_empty(),
        description=None
        if violations.is_empty()
        else f"{violations['column'].n_unique()} feature(s) change when the future is cut off",
        metadata={
            "partitions_checked": len(partition_keys),
            "sampled_times": len(times),
            "violations": violations.height,
            "leaking_columns": sorted(violations["column"].unique().to_list()),
            "sample": table(violations.head(10)),
        },
    )
