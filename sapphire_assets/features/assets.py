"""The features asset: model inputs for every symbol, computed with polars in one pass."""


import dagster as dg
from dagster import AssetExecutionContext
import polars as pl

from sapphire_assets.features.checks import build_lookahead_check
from sapphire_assets.metadata import table
from sapphire_assets.partitions import lookback_days, time_partitions, window_ms
from sapphire_domain.features import FeatureParams, compute_features, feature_columns, warmup_bars
from sapphire_domain.settings import Settings

GROUP = "features"


def features_in_window(
    candles: pl.DataFrame,
    trades: pl.DataFrame,
    funding_rates: pl.DataFrame,
    timeframe: str,
    params: FeatureParams,
    start_ms: int,
    end_ms: int,
) -> pl.DataFrame:
    """Features of the candles that open in ``[start_ms, end_ms)``, computed over the look-back."""
    full = compute_features(
        candles.sort("symbol", "ts"),
        timeframe,
        params,
        trades=trades if not trades.is_empty() else None,
        funding=funding_rates if not funding_rates.is_empty() else None,
    )
    return full.filter(pl.col("ts").dt.epoch("ms").is_between(start_ms, end_ms, closed="left"))


def build_feature_assets(
    settings: Settings,
    candles: dg.AssetsDefinition,
    trades: dg.AssetsDefinition,
    funding_rates: dg.AssetsDefinition,
) -> tuple[dg.AssetsDefinition, list[dg.AssetChecksDefinition]]:
    params = FeatureParams()
    timeframe = settings.universe.timeframe
    # Recursive indicators need their warm-up before a partition's first row; reading that many
    # days of earlier partitions makes each partition equal to a full-history computation.
    history = dg.TimeWindowPartitionMapping(
        start_offset=-lookback_days(warmup_bars(params), timeframe),
        allow_nonexistent_upstream_partitions=True,
    )
    ins = {
        "candles": dg.AssetIn(key=candles.key, partition_mapping=history),
        "trades": dg.AssetIn(key=trades.key, partition_mapping=history),
        "funding_rates": dg.AssetIn(key=funding_rates.key, partition_mapping=history),
    }

    @dg.asset(
        ins=ins,
        partitions_def=time_partitions(settings.universe),
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=GROUP,
        kinds={"polars"},
        metadata={"partition_expr": "ts", "feature_columns": feature_columns(params)},
    )
    def features(
        context: AssetExecutionContext,
        candles: pl.DataFrame,
        trades: pl.DataFrame,
        funding_rates: pl.DataFrame,
    ) -> dg.Output[pl.DataFrame]:
        """Returns, volatility, RSI, MACD, Bollinger z, ATR, volume z, spread, trade flow, funding.

        Gaps are not filled: ``gap_before`` and ``bars_since_gap`` mark them for downstream use.
        """
        start_ms, end_ms = window_ms(context.partition_time_window)
        frame = features_in_window(
            candles, trades, funding_rates, timeframe, params, start_ms, end_ms
        )
        coverage = pl.DataFrame(
            {
                "feature": feature_columns(params),
                "non_null_share": [
                    round(1 - frame[c].null_count() / max(frame.height, 1), 4)
                    for c in feature_columns(params)
                ],
            }
        )
        return dg.Output(
            frame,
            metadata={
                "dagster/row_count": frame.height,
                "symbols": frame["symbol"].n_unique(),
                "lookback_rows_read": candles.height - frame.height,
                "coverage": table(coverage),
            },
        )

    return features, [build_lookahead_check(features, history, settings, params)]
