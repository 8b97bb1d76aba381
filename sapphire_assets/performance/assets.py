"""The strategy_performance asset: each configured strategy backtested on each UTC day.

Shape. One asset, daily partitions like the market assets, one row per strategy per day
(``strategy`` column, ``ts`` = the day's start). A row per strategy keeps every strategy's figures
in one table that an analyst can query and compare, and the daily partitions line up with
candles for backfills and sensors. A static strategy dimension (MultiPartitions) would make
adding a strategy a partition-definition change and would not fit the warehouse's ``ts``
partition column; one asset per strategy would repeat the candle reads.

Each day's backtest starts flat with the configured cash at the day's first bar and trades
through its last; the candles of the days before it (``lookback_days``) are read only so that
a strategy's signal has its history on the first bar (weights before the day are zeroed).
"""

from collections.abc import Sequence
from dataclasses import replace

import dagster as dg
import numpy as np
import polars as pl
from dagster import AssetExecutionContext

from sapphire_assets.metadata import table
from sapphire_assets.partitions import lookback_days, time_partitions, window_ms
from sapphire_assets.performance.plots import equity_drawdown_svg
from sapphire_domain.backtest import (
    BacktestConfig,
    BacktestResult,
    BuyAndHold,
    MarketData,
    MomentumBaseline,
    Strategy,
    performance_metrics,
    run_backtest,
)
from sapphire_domain.backtest.strategies import require_no_lookahead
from sapphire_domain.candles import TS_TYPE
from sapphire_domain.settings import Settings

GROUP = "performance"
DEFAULT_STRATEGIES: tuple[Strategy, ...] = (BuyAndHold(), MomentumBaseline())
# Drift rebalances under 0.5% of equity are skipped: buy-and-hold stays bought.
DEFAULT_CONFIG = BacktestConfig(rebalance_band=0.005)
HISTORY_BARS = 96  # signal history read before each day (the momentum baseline needs 48)


def backtest_window(
    candles: pl.DataFrame,
    strategies: Sequence[Strategy],
    config: BacktestConfig,
    timeframe: str,
    start_ms: int,
    end_ms: int,
) -> tuple[pl.DataFrame, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Metrics per strategy for the bars opening in [start_ms, end_ms), and their curves."""
    market = MarketData.from_candles(candles.sort("symbol", "ts"))
    in_window = (market.ts >= start_ms) & (market.ts < end_ms)
    rows, curves = [], {}
    first = int(np.argmax(in_window)) if in_window.any() else market.bars
    for strategy in strategies:
        require_no_lookahead(strategy, market, samples=5)
        weights = strategy.target_weights(market)
        # Decided before the window: its first trade is on the window's second bar at the
        # earliest, like a live start at the window's first close.
        window = market.head(int(in_window.nonzero()[0][-1]) + 1) if in_window.any() else market
        weights = weights[: window.bars].copy()
        weights[:first] = 0.0
        result = run_backtest(weights, window, config)
        kept = slice(first, window.bars)
        trimmed = _tail(result, kept)
        metrics = performance_metrics(trimmed, timeframe).as_dict()
        rows.append({"strategy": strategy.name, **metrics})
        frame = trimmed.equity_frame()
        curves[strategy.name] = (frame["equity"].to_numpy(), frame["drawdown"].to_numpy())
    out = pl.DataFrame(rows).with_columns(pl.lit(start_ms).cast(pl.Int64).cast(TS_TYPE).alias("ts"))
    return out.select("ts", "strategy", pl.exclude("ts", "strategy")), curves


def _tail(result: BacktestResult, kept: slice) -> BacktestResult:
    """The result from bar ``kept.start`` on (nothing was held before it)."""
    fills = result.fill_bar >= kept.start
    return replace(
        result,
        ts=result.ts[kept],
        equity=result.equity[kept],
        cash=result.cash[kept],
        positions=result.positions[kept],
        close=result.close[kept],
        fees=result.fees[kept],
        slippage=result.slippage[kept],
        funding=result.funding[kept],
        traded_notional=result.traded_notional[kept],
        fill_bar=result.fill_bar[fills] - kept.start,
        fill_symbol=result.fill_symbol[fills],
        fill_quantity=result.fill_quantity[fills],
        fill_price=result.fill_price[fills],
        fill_reference_price=result.fill_reference_price[fills],
        fill_fee=result.fill_fee[fills],
        fill_slippage=result.fill_slippage[fills],
    )


def _markdown(frame: pl.DataFrame) -> str:
    columns = [
        ("strategy", "{}"),
        ("total_return", "{:.2%}"),
        ("cagr", "{:.2%}"),
        ("sharpe", "{:.2f}"),
        ("sortino", "{:.2f}"),
        ("max_drawdown", "{:.2%}"),
        ("calmar", "{:.2f}"),
        ("hit_rate", "{:.1%}"),
        ("turnover", "{:.1f}"),
        ("exposure", "{:.2f}"),
        ("fees_paid", "{:.2f}"),
        ("slippage_paid", "{:.2f}"),
        ("fills", "{}"),
    ]
    lines = [
        "| " + " | ".join(name for name, _ in columns) + " |",
        "|" + " --- |" * len(columns),
    ]
    for row in frame.iter_rows(named=True):
        lines.append("| " + " | ".join(fmt.format(row[name]) for name, fmt in columns) + " |")
    return "\n".join(lines)


def build_strategy_performance_asset(
    settings: Settings,
    strategies: Sequence[Strategy] = DEFAULT_STRATEGIES,
    config: BacktestConfig = DEFAULT_CONFIG,
) -> dg.AssetsDefinition:
    """The ``strategy_performance`` asset for ``strategies`` (names must be unique)."""
    names = [s.name for s in strategies]
    if len(set(names)) != len(names):
        raise ValueError(f"strategy names must be unique, got {names}")
    timeframe = settings.universe.timeframe
    history = dg.TimeWindowPartitionMapping(
        start_offset=-lookback_days(HISTORY_BARS, timeframe),
        allow_nonexistent_upstream_partitions=True,
    )

    @dg.asset(
        ins={"candles": dg.AssetIn(partition_mapping=history)},
        partitions_def=time_partitions(settings.universe),
        group_name=GROUP,
        kinds={"polars"},
        metadata={"partition_expr": "ts", "strategies": names},
    )
    def strategy_performance(
        context: AssetExecutionContext, candles: pl.DataFrame
    ) -> dg.Output[pl.DataFrame]:
        """Total return, CAGR, Sharpe, Sortino, max drawdown, Calmar, hit rate, turnover,
        exposure, fees and slippage of each strategy, backtested on the day."""
        start_ms, end_ms = window_ms(context.partition_time_window)
        day = candles.filter(pl.col("ts").dt.epoch("ms").is_between(start_ms, end_ms, "left"))
        if day.is_empty():
            raise dg.Failure(
                description=f"no candles for {context.partition_key}: materialise candles first",
                allow_retries=False,
            )
        frame, curves = backtest_window(candles, strategies, config, timeframe, start_ms, end_ms)
        markdown = _markdown(frame)
        return dg.Output(
            frame,
            metadata={
                "dagster/row_count": frame.height,
                "metrics": dg.MetadataValue.md(markdown),
                "equity_and_drawdown": dg.MetadataValue.md(equity_drawdown_svg(curves)),
                "summary": table(
                    frame.select("strategy", "total_return", "sharpe", "max_drawdown")
                ),
            },
        )

    return strategy_performance
