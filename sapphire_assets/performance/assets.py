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

The Sapphire ensemble. Next to the configured strategies, the ``sapphire_ensemble`` row
backtests the weights of the ``target_portfolio`` asset (``TargetPortfolioStrategy``). It is
walk-forward by construction, at two levels:

- *Out-of-sample forecasts.* Each target comes from the combined signal of the agents'
  forecasts, and every forecast row at ``ts`` was made by the latest model of the walk-forward
  lineage whose ``cutoff + embargo <= ts`` (``sapphire_domain.agents.walk_forward``): the model
  had seen no label that ended after its cutoff, and the embargo is at least the label length,
  so no model forecasts a period it was trained on.
- *Timing.* A target is stamped at the bar whose close it used (``ts``; created at that
  close); ``TargetPortfolioStrategy`` gives a bar the latest target stamped at or before it, and
  the engine trades a bar's weight at the next bar's open (``execution_delay >= 1``). So a target
  stamped at t trades at t+1 at the earliest, and a target stamped after a bar never reaches it.
  A day reads the targets of the day before it (the daily target is stamped at the day's last
  bar) and of the day itself, never later ones. The targets hold until replaced: after
  ``valid_until`` the execution service keeps its positions (the risk engine refuses new orders),
  and the backtest keeps the weights (rebalancing only beyond the band).

``target_portfolio`` is an optional input (``performance.inputs``): where the agents chain has
not run, the ensemble row is absent and the ``ensemble`` metadata entry says why; so it is for a
day with no target in its window.

Backfills run as one run over the whole range (``BackfillPolicy.single_run``): the candles and
targets are read once and each day is backtested as above, from the same slice of history a
single-partition run reads, so a day's row does not depend on how a backfill was cut into runs.
One *continuous* backtest over the range (positions carried across midnight) was considered and
not done: a day's figures would then depend on where the run's range started, so re-running one
day, or cutting the backfill differently, would store different rows for the same partition.
Carrying the state deterministically needs each day to start from the stored end of the day
before (a self-dependent asset, and initial positions in the engine): a follow-up.
"""

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

import dagster as dg
import numpy as np
import polars as pl
from dagster import AssetExecutionContext

from sapphire_assets.metadata import table
from sapphire_assets.partitions import DAY_MS, lookback_days, time_partitions, window_ms
from sapphire_assets.performance.inputs import load_optional_input, optional_asset_in
from sapphire_assets.performance.plots import as_markdown_image, equity_drawdown_svg
from sapphire_domain.backtest import (
    BacktestConfig,
    BacktestResult,
    BuyAndHold,
    MarketData,
    MomentumBaseline,
    Strategy,
    TargetPortfolioStrategy,
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
ENSEMBLE = "sapphire_ensemble"
TARGET_DAYS = 1  # days of targets read before each day (see the module docstring)


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


def _chain(curves: dict[str, list[np.ndarray]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each strategy's daily equity curves (each from the day's initial cash) compounded into one
    curve from 1, with its drawdown: the plot of a multi-day run."""
    out = {}
    for name, days in curves.items():
        level, parts = 1.0, []
        for equity in days:
            scaled = level * equity / equity[0] if len(equity) and equity[0] else equity
            parts.append(scaled)
            level = float(scaled[-1]) if len(scaled) else level
        chained = np.concatenate(parts) if parts else np.empty(0)
        peak = np.maximum.accumulate(np.maximum(chained, 1.0)) if len(chained) else chained
        out[name] = (chained, 1.0 - chained / peak if len(chained) else chained)
    return out


def build_strategy_performance_asset(
    settings: Settings,
    strategies: Sequence[Strategy] = DEFAULT_STRATEGIES,
    config: BacktestConfig = DEFAULT_CONFIG,
    with_ensemble: bool = True,
) -> dg.AssetsDefinition:
    """The ``strategy_performance`` asset for ``strategies`` (names must be unique), plus the
    Sapphire ensemble from ``target_portfolio`` when ``with_ensemble`` and it is stored."""
    names = [s.name for s in strategies]
    if len(set(names)) != len(names) or (with_ensemble and ENSEMBLE in names):
        raise ValueError(f"strategy names must be unique (and not {ENSEMBLE!r}), got {names}")
    timeframe = settings.universe.timeframe
    history_days = lookback_days(HISTORY_BARS, timeframe)
    history = dg.TimeWindowPartitionMapping(
        start_offset=-history_days, allow_nonexistent_upstream_partitions=True
    )
    ins = {"candles": dg.AssetIn(partition_mapping=history)}
    if with_ensemble:
        # The daily target is stamped at the last bar of its day: a day trades the one before's.
        ins["target_portfolio"] = optional_asset_in(
            dg.TimeWindowPartitionMapping(
                start_offset=-TARGET_DAYS, allow_nonexistent_upstream_partitions=True
            )
        )

    @dg.asset(
        ins=ins,
        partitions_def=time_partitions(settings.universe),
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=GROUP,
        kinds={"polars"},
        metadata={"partition_expr": "ts", "strategies": [*names, *([ENSEMBLE] * with_ensemble)]},
        required_resource_keys={"io_manager"},
    )
    def strategy_performance(
        context: AssetExecutionContext, candles: pl.DataFrame
    ) -> dg.Output[pl.DataFrame]:
        """Total return, CAGR, Sharpe, Sortino, max drawdown, Calmar, hit rate, turnover,
        exposure, fees and slippage of each strategy (and the Sapphire ensemble), backtested on
        each day of the run."""
        targets = load_optional_input(context, "target_portfolio") if with_ensemble else None
        start_ms, end_ms = window_ms(context.partition_time_window)
        ms = pl.col("ts").dt.epoch("ms")
        frames, no_candles, no_targets = [], [], []
        curves: dict[str, list[np.ndarray]] = {}
        for day_ms in range(start_ms, end_ms, DAY_MS):
            day_end = day_ms + DAY_MS
            day = _date(day_ms)
            # The slice a single-partition run of this day reads: same rows whatever the range.
            window = candles.filter(ms.is_between(day_ms - history_days * DAY_MS, day_end, "left"))
            if window.filter(ms >= day_ms).is_empty():
                no_candles.append(day)
                continue
            day_strategies = list(strategies)
            if targets is not None:
                first = day_ms - TARGET_DAYS * DAY_MS
                known = targets.filter(ms.is_between(first, day_end, "left"))
                if known.is_empty():
                    no_targets.append(day)
                else:
                    day_strategies.append(TargetPortfolioStrategy(known, name=ENSEMBLE))
            frame, day_curves = backtest_window(
                window, day_strategies, config, timeframe, day_ms, day_end
            )
            frames.append(frame)
            for name, (equity, _) in day_curves.items():
                curves.setdefault(name, []).append(equity)
        if no_candles:
            raise dg.Failure(
                description=f"no candles for {', '.join(no_candles)}: materialise candles first",
                allow_retries=False,
            )
        frame = pl.concat(frames, how="diagonal_relaxed")
        if not with_ensemble:
            ensemble = "not configured"
        elif targets is None:
            ensemble = "absent: target_portfolio was never materialised (run the agents chain)"
        elif no_targets:
            ensemble = f"absent on {', '.join(no_targets)}: no target_portfolio rows for the day"
        else:
            ensemble = "backtested from target_portfolio (walk-forward forecasts)"
        return dg.Output(
            frame,
            metadata={
                "dagster/row_count": frame.height,
                "days": len(frames),
                "metrics": dg.MetadataValue.md(_markdown(frame)),
                "equity_and_drawdown": dg.MetadataValue.md(
                    as_markdown_image(equity_drawdown_svg(_chain(curves)), "equity and drawdown")
                ),
                "ensemble": ensemble,
                "summary": table(
                    frame.select("ts", "strategy", "total_return", "sharpe", "max_drawdown")
                ),
            },
        )

    return strategy_performance


def _date(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).date().isoformat()
