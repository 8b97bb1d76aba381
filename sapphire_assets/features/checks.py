"""The blocking look-ahead check: features recomputed on truncated history must not change."""


import zlib

import dagster as dg
from dagster import AssetCheckExecutionContext
import polars as pl

from sapphire_assets.metadata import table
from sapphire_assets.partitions import window_ms
from sapphire_domain.features import FeatureParams, compute_features
from sapphire_domain.lookahead import lookahead_violations, sample_times
from sapphire_domain.settings import Settings

SAMPLES_PER_RUN = 6
TOLERANCE = 1e-9


def build_lookahead_check(
    features: dg.AssetsDefinition,
    history: dg.PartitionMapping,
    settings: Settings,
    params: FeatureParams,
) -> dg.AssetChecksDefinition:
    timeframe = settings.universe.timeframe

    @dg.asset_check(
        asset=features,
        blocking=True,
        partitions_def=features.partitions_def,
        additional_ins={
            "candles": dg.AssetIn(key="candles", partition_mapping=history),
            "trades": dg.AssetIn(key="trades", partition_mapping=history),
            "funding_rates": dg.AssetIn(key="funding_rates", partition_mapping=history),
        },
        description="features at sampled times equal a recomputation on history truncated there",
    )
    def no_lookahead(
        context: AssetCheckExecutionContext,
        features: pl.DataFrame,
        candles: pl.DataFrame,
        trades: pl.DataFrame,
        funding_rates: pl.DataFrame,
    ) -> dg.AssetCheckResult:
        start_ms, end_ms = window_ms(context.partition_time_window)
        # Seeded by the partition range, so a re-run samples the same times.
        seed = zlib.crc32(f"{start_ms}-{end_ms}".encode())
        times = sample_times(features, SAMPLES_PER_RUN, seed)

        def compute(
            candles: pl.DataFrame, trades: pl.DataFrame | None, funding: pl.DataFrame | None
        ) -> pl.DataFrame:
            return compute_features(candles, timeframe, params, trades=trades, funding=funding)

        violations = lookahead_violations(
            compute,
            candles.sort("symbol", "ts"),
            times,
            expected=features,
            trades=trades if not trades.is_empty() else None,
            funding=funding_rates if not funding_rates.is_empty() else None,
            tolerance=TOLERANCE,
        )
        return dg.AssetCheckResult(
            passed=violations.is_empty(),
            metadata={
                "sampled_times": len(times),
                "violations": violations.height,
                "sample": table(violations.head(10)),
            },
        )

    return no_lookahead
