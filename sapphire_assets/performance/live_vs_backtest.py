"""The live_vs_backtest asset: realised fills against the backtester's fills for the same targets.

For each fill of ``trade_fills`` (the bus ``Fill`` schema of ``sapphire_domain.messages``), its
``target_version`` names a target of ``target_portfolio``. The backtester trades those targets
(``TargetPortfolioStrategy``, the engine and the shared fill model, on the same candles): the
target stamped at bar t is executed at the open of bar t + delay, and that bar's fill of the
symbol is the *modelled* fill of the version. Per fill:

- ``reference``: the modelled fill's reference price (the execution bar's open). Both slippages
  are measured against it, so their difference is a pure price difference:
  ``slippage_drift_bps = realised - modelled = side * (price - modelled price) / reference``.
- ``predicted fee``: the backtester's fee rate (its fee over its notional) on the realised
  quantity at the modelled price.
- PnL: the fill marked to the last close of its day, ``side * quantity * (close - price) - fee``,
  realised and at the modelled price and fee; the difference is what execution cost (or saved)
  against the model. The quantities are the realised ones: the live account's equity is not the
  backtest's, so the model is compared per unit of what was really traded.

The backtest starts flat at the first target read (the targets of the days the fills' targets
can come from, as ``trade_feedback`` reads them), so later versions rebalance from the positions
the earlier ones built, as live does. A fill whose version is not stored, or for which the model
had no fill (below a minimum, inside the no-trade band), is counted as unmatched and left out of
the comparison. Rows: one per day and symbol with fills.
"""

import dagster as dg
import numpy as np
import polars as pl

from sapphire_assets.metadata import table
from sapphire_assets.partitions import lookback_days, time_partitions, window_ms
from sapphire_assets.performance.assets import DEFAULT_CONFIG, HISTORY_BARS
from sapphire_assets.performance.inputs import load_optional_input, optional_asset_in
from sapphire_assets.trades.feedback import conform_fills, side_sign
from sapphire_domain.backtest import (
    BacktestConfig,
    MarketData,
    TargetPortfolioStrategy,
    run_backtest,
)
from sapphire_domain.candles import TS_TYPE
from sapphire_domain.settings import Settings

GROUP = "performance"
BPS = 10_000.0
SCHEMA: dict[str, pl.DataType] = {
    "ts": TS_TYPE,
    "symbol": pl.String(),
    "fills": pl.UInt32(),
    "unmatched_fills": pl.UInt32(),
    "target_versions": pl.UInt32(),
    "quantity": pl.Float64(),
    "realised_price": pl.Float64(),
    "predicted_price": pl.Float64(),
    "reference_price": pl.Float64(),
    "realised_slippage_bps": pl.Float64(),
    "modelled_slippage_bps": pl.Float64(),
    "slippage_drift_bps": pl.Float64(),
    "realised_fees": pl.Float64(),
    "predicted_fees": pl.Float64(),
    "realised_pnl": pl.Float64(),
    "predicted_pnl": pl.Float64(),
    "pnl_difference": pl.Float64(),
}


def modelled_fills(
    targets: pl.DataFrame, candles: pl.DataFrame, config: BacktestConfig
) -> pl.DataFrame:
    """The backtester's fill of each (target version, symbol) at the version's execution bar:
    version, symbol, model_side, model_price, reference, model_fee_rate."""
    market = MarketData.from_candles(candles.sort("symbol", "ts"))
    weights = TargetPortfolioStrategy(targets.select("ts", "symbol", "weight")).target_weights(
        market
    )
    fills = run_backtest(weights, market, config).fills
    stamps = targets.group_by("version").agg(pl.col("ts").max().dt.epoch("ms").alias("ms"))
    # The first bar that holds the version, then the configured delay (see the engine).
    first = np.searchsorted(market.ts, stamps["ms"].to_numpy(), side="left")
    bar = first + config.execution_delay
    inside = bar < market.bars  # a version executed after the last bar has no fill yet
    executes = market.ts[np.minimum(bar, market.bars - 1)]
    versions = stamps.filter(pl.Series(inside)).with_columns(
        pl.Series("ts", executes[inside]).cast(TS_TYPE)
    )
    return versions.join(fills, on="ts").select(
        "version",
        "symbol",
        pl.col("side").alias("model_side"),
        pl.col("price").alias("model_price"),
        pl.col("reference_price").alias("reference"),
        (pl.col("fee") / (pl.col("quantity") * pl.col("price"))).alias("model_fee_rate"),
    )


def compare_fills(fills: pl.DataFrame, model: pl.DataFrame, candles: pl.DataFrame) -> pl.DataFrame:
    """Per day and symbol: realised against modelled fills (SCHEMA; see the module docstring)."""
    day = pl.col("ts").dt.truncate("1d")
    marks = (
        candles.sort("ts")
        .group_by(day.alias("day"), "symbol")
        .agg(pl.col("close").last().alias("mark"))
    )
    sign = side_sign("side")
    model_sign = side_sign("model_side")
    per_fill = (
        fills.with_columns(day.alias("day"))
        .join(
            model, left_on=["target_version", "symbol"], right_on=["version", "symbol"], how="left"
        )
        .join(marks, on=["day", "symbol"], how="left")
        .with_columns(
            pl.col("model_price").is_not_null().alias("matched"),
            (sign * (pl.col("price") / pl.col("reference") - 1.0) * BPS).alias("realised_bps"),
            (model_sign * (pl.col("model_price") / pl.col("reference") - 1.0) * BPS).alias(
                "modelled_bps"
            ),
            (pl.col("quantity") * pl.col("model_price") * pl.col("model_fee_rate")).alias(
                "predicted_fee"
            ),
        )
        .with_columns(
            (sign * pl.col("quantity") * (pl.col("mark") - pl.col("price")) - pl.col("fee")).alias(
                "pnl"
            ),
            (
                sign * pl.col("quantity") * (pl.col("mark") - pl.col("model_price"))
                - pl.col("predicted_fee")
            ).alias("predicted_pnl"),
            (pl.col("quantity") * pl.col("reference")).alias("notional"),
        )
    )
    matched = pl.col("matched")

    def weighted(column: str) -> pl.Expr:
        """Notional-weighted mean over the matched fills (null when none matched)."""
        weight = pl.col("notional").filter(matched)
        return (pl.col(column).filter(matched) * weight).sum() / weight.sum()

    def vwap(column: str) -> pl.Expr:
        return (pl.col(column).filter(matched) * pl.col("quantity").filter(matched)).sum() / pl.col(
            "quantity"
        ).filter(matched).sum()

    frame = (
        per_fill.group_by(pl.col("day").alias("ts"), "symbol")
        .agg(
            pl.len().alias("fills"),
            (~matched).sum().alias("unmatched_fills"),
            pl.col("target_version").n_unique().alias("target_versions"),
            pl.col("quantity").filter(matched).sum().alias("quantity"),
            vwap("price").alias("realised_price"),
            vwap("model_price").alias("predicted_price"),
            vwap("reference").alias("reference_price"),
            weighted("realised_bps").alias("realised_slippage_bps"),
            weighted("modelled_bps").alias("modelled_slippage_bps"),
            weighted("realised_bps").sub(weighted("modelled_bps")).alias("slippage_drift_bps"),
            pl.col("fee").filter(matched).sum().alias("realised_fees"),
            pl.col("predicted_fee").filter(matched).sum().alias("predicted_fees"),
            pl.col("pnl").filter(matched).sum().alias("realised_pnl"),
            pl.col("predicted_pnl").filter(matched).sum().alias("predicted_pnl"),
        )
        .with_columns((pl.col("realised_pnl") - pl.col("predicted_pnl")).alias("pnl_difference"))
    )
    return frame.select(list(SCHEMA)).cast(pl.Schema(SCHEMA)).sort("ts", "symbol")


def _markdown(frame: pl.DataFrame) -> str:
    columns = [
        ("symbol", "{}"),
        ("fills", "{}"),
        ("unmatched_fills", "{}"),
        ("realised_price", "{:.6g}"),
        ("predicted_price", "{:.6g}"),
        ("realised_slippage_bps", "{:.2f}"),
        ("modelled_slippage_bps", "{:.2f}"),
        ("slippage_drift_bps", "{:.2f}"),
        ("realised_fees", "{:.4f}"),
        ("predicted_fees", "{:.4f}"),
        ("pnl_difference", "{:.4f}"),
    ]
    lines = [
        "| day | " + " | ".join(name for name, _ in columns) + " |",
        "|" + " --- |" * (len(columns) + 1),
    ]
    for row in frame.iter_rows(named=True):
        cells = ["-" if row[n] is None else f.format(row[n]) for n, f in columns]
        lines.append(f"| {row['ts'].date()} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def build_live_vs_backtest_asset(
    settings: Settings, config: BacktestConfig = DEFAULT_CONFIG, target_valid_bars: int = 2
) -> dg.AssetsDefinition:
    """The ``live_vs_backtest`` asset; ``config`` is the backtest the fills are compared with
    (its cost model should be the paper venue's), ``target_valid_bars`` the agents' setting
    (how far back a fill's target can have been decided)."""
    timeframe = settings.universe.timeframe
    # As trade_feedback: a fill comes before its target's valid_until, plus a day for late fills.
    decision_days = lookback_days(target_valid_bars + 1, timeframe) + 1
    decisions = dg.TimeWindowPartitionMapping(
        start_offset=-decision_days, allow_nonexistent_upstream_partitions=True
    )
    # The candles from the first target on, and the volatility history before it.
    history = dg.TimeWindowPartitionMapping(
        start_offset=-decision_days - lookback_days(HISTORY_BARS, timeframe),
        allow_nonexistent_upstream_partitions=True,
    )

    @dg.asset(
        ins={
            "candles": dg.AssetIn(partition_mapping=history),
            "trade_fills": optional_asset_in(dg.IdentityPartitionMapping()),
            "target_portfolio": optional_asset_in(decisions),
        },
        partitions_def=time_partitions(settings.universe),
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=GROUP,
        kinds={"polars"},
        metadata={"partition_expr": "ts"},
        required_resource_keys={"io_manager"},
    )
    def live_vs_backtest(
        context: dg.AssetExecutionContext, candles: pl.DataFrame
    ) -> dg.Output[pl.DataFrame]:
        """Per day and symbol, realised fills against the backtester's fills for the same
        targets: fill prices, slippage (realised, modelled and their drift, in bps), fees and
        PnL (see the module docstring)."""
        stored = load_optional_input(context, "trade_fills")
        targets = load_optional_input(context, "target_portfolio")
        start_ms, end_ms = window_ms(context.partition_time_window)
        fills = pl.DataFrame() if stored is None else conform_fills(stored)
        if not fills.is_empty():
            fills = fills.filter(pl.col("ts").dt.epoch("ms").is_between(start_ms, end_ms, "left"))
        explanation = ""
        if stored is None:
            explanation = "no fills yet: trade_fills was never materialised"
        elif fills.is_empty():
            explanation = "no fills in these days"
        # Targets after the run's days cannot explain its fills.
        known = (
            pl.DataFrame()
            if targets is None or targets.is_empty()
            else targets.filter(pl.col("ts").dt.epoch("ms") < end_ms)
        )
        if not explanation and known.is_empty():
            explanation = "fills, but no stored target_portfolio for them: nothing to model"
        if explanation:
            frame = pl.DataFrame(schema=SCHEMA)
        else:
            first_ms = int(known["ts"].dt.epoch("ms").min())  # type: ignore[arg-type]
            warm = lookback_days(HISTORY_BARS, timeframe) * 86_400_000
            prices = candles.filter(
                pl.col("ts").dt.epoch("ms").is_between(first_ms - warm, end_ms, "left")
            )
            frame = compare_fills(fills, modelled_fills(known, prices, config), candles)
            unmatched = int(frame["unmatched_fills"].sum())
            explanation = f"{fills.height} fill(s), {unmatched} without a modelled fill"
        return dg.Output(
            frame,
            metadata={
                "dagster/row_count": frame.height,
                "explanation": explanation,
                "comparison": dg.MetadataValue.md(
                    _markdown(frame) if frame.height else f"_{explanation}_"
                ),
                "mean_slippage_drift_bps": float(
                    frame.select(pl.col("slippage_drift_bps").mean().fill_null(0.0)).item()
                ),
                "pnl_difference": float(frame["pnl_difference"].sum()),
                "summary": table(frame.select("ts", "symbol", "fills", "slippage_drift_bps")),
            },
        )

    return live_vs_backtest
