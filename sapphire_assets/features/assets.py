"""The features asset: model inputs for every symbol, computed with polars in one pass."""

from collections.abc import Callable, Iterator

import dagster as dg
import polars as pl
from dagster import AssetExecutionContext

from sapphire_assets.features.checks import evaluate_lookahead, lookahead_check_spec
from sapphire_assets.metadata import table
from sapphire_assets.partitions import lookback_days, time_partitions, window_ms
from sapphire_domain.features import FeatureParams, compute_features, feature_columns, warmup_bars
from sapphire_domain.settings import Settings

GROUP = "features"
INPUTS = ("candles", "trades", "funding_rates")
# (candles, timeframe, params, trades=..., funding=...) -> features; replaceable in tests only.
FeatureComputation = Callable[..., pl.DataFrame]


def _require_history(context: AssetExecutionContext) -> None:
    """Refuse to compute on a look-back with holes: the first rows would silently differ."""
    for name in INPUTS:
        key = context.asset_key_for_input(name)
        materialized = context.instance.get_materialized_partitions(key)
        missing = [k for k in context.asset_partition_keys_for_input(name) if k not in materialized]
        if missing:
            raise dg.Failure(
                description=(
                    f"features need {name} for their look-back, but {len(missing)} day(s) are "
                    f"not materialised ({missing[0]} .. {missing[-1]}): materialise {name} for "
                    "them first, or backfill both in one run"
                ),
                allow_retries=False,
            )


def _present(frame: pl.DataFrame) -> pl.DataFrame | None:
    return None if frame.is_empty() else frame


def build_features_asset(
    settings: Settings, compute: FeatureComputation = compute_features
) -> dg.AssetsDefinition:
    params = FeatureParams()
    timeframe = settings.universe.timeframe
    partitions = time_partitions(settings.universe)
    # Recursive indicators need their warm-up before a partition's first row; reading that many
    # days of earlier partitions makes each partition equal to a full-history computation.
    history = dg.TimeWindowPartitionMapping(
        start_offset=-lookback_days(warmup_bars(params), timeframe),
        allow_nonexistent_upstream_partitions=True,
    )

    def computation(
        candles: pl.DataFrame,
        trades: pl.DataFrame | None = None,
        funding: pl.DataFrame | None = None,
    ) -> pl.DataFrame:
        return compute(candles, timeframe, params, trades=trades, funding=funding)

    @dg.asset(
        ins={name: dg.AssetIn(partition_mapping=history) for name in INPUTS},
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=GROUP,
        kinds={"polars"},
        metadata={"partition_expr": "ts", "feature_columns": feature_columns(params)},
        check_specs=[lookahead_check_spec(dg.AssetKey("features"))],
    )
    def features(
        context: AssetExecutionContext,
        candles: pl.DataFrame,
        trades: pl.DataFrame,
        funding_rates: pl.DataFrame,
    ) -> Iterator[dg.Output[pl.DataFrame] | dg.AssetCheckResult]:
        """Returns, volatility, RSI, MACD, Bollinger z, ATR, volume z, spread, trade flow, funding.

        Gaps are not filled: ``gap_before`` and ``bars_since_gap`` mark them for downstream use.
        """
        _require_history(context)
        start_ms, end_ms = window_ms(context.partition_time_window)
        history_candles = candles.sort("symbol", "ts")
        full = computation(history_candles, _present(trades), _present(funding_rates))
        frame = full.filter(pl.col("ts").dt.epoch("ms").is_between(start_ms, end_ms, closed="left"))
        check = evaluate_lookahead(
            computation,
            frame,
            history_candles,
            _present(trades),
            _present(funding_rates),
            timeframe,
            warmup_bars(params),
            partitions,
            context.partition_keys,
        )
        yield check
        if not check.passed:
            raise dg.Failure(
                description=f"look-ahead in features: {check.description}; nothing was written",
                metadata=dict(check.metadata),
                allow_retries=False,
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
        yield dg.Output(
            frame,
            metadata={
                "dagster/row_count": frame.height,
                "symbols": frame["symbol"].n_unique(),
                "lookback_rows_read": history_candles.height - frame.height,
                "coverage": table(coverage),
            },
        )

    return features
