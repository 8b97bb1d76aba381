"""The strategy_performance asset in real Dagster runs over the bundled candles."""

import base64
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import numpy as np
import polars as pl

from sapphire_assets.partitions import time_partitions
from sapphire_assets.performance.assets import (
    DEFAULT_CONFIG,
    ENSEMBLE,
    backtest_window,
    build_strategy_performance_asset,
)
from sapphire_domain.backtest import MarketData, TargetPortfolioStrategy
from tests.assets.conftest import Platform

PlatformFactory = Callable[..., Platform]


class PeekingMomentum:
    """Long when the *next* close is higher: a strategy that looks one bar ahead."""

    name = "peeking"

    def target_weights(self, market: MarketData) -> np.ndarray:
        ahead = np.full_like(market.close, np.nan)
        ahead[:-1] = market.close[1:]
        n = market.close.shape[1]
        return np.where(np.nan_to_num(ahead) > market.close, 1.0 / n, 0.0)


def with_performance(platform, **kwargs):  # type: ignore[no-untyped-def]
    platform.override([build_strategy_performance_asset(platform.settings, **kwargs)])
    return platform


def test_a_day_reports_every_strategys_metrics_with_a_table_and_a_plot(
    platform_factory: PlatformFactory,
) -> None:
    platform = with_performance(platform_factory())
    platform.materialize(["candles"], partition_range=("2018-02-26", "2018-03-01"))
    result = platform.materialize(["strategy_performance"], partition="2018-03-01")
    stored = platform.table("strategy_performance")
    assert stored["strategy"].to_list() == ["buy_and_hold", "momentum"]
    assert stored["ts"].to_list() == [datetime(2018, 3, 1, tzinfo=UTC)] * 2
    buy_and_hold = stored.row(0, named=True)
    assert 0 <= buy_and_hold["max_drawdown"] <= 1
    assert buy_and_hold["exposure"] > 0.9  # fully invested from the day's second bar on
    assert buy_and_hold["fills"] == 4  # one buy per symbol, then held
    assert stored.filter(pl.col("strategy") == "momentum")["fills"][0] > 4
    assert (stored["fees_paid"] > 0).all()

    materialization = result.asset_materializations_for_node("strategy_performance")[0]
    metadata = materialization.metadata
    assert "| buy_and_hold |" in metadata["metrics"].value
    # A Markdown image with a data URI: the form the Dagster UI's sanitiser lets through.
    image = metadata["equity_and_drawdown"].value
    prefix = "![equity and drawdown](data:image/svg+xml;base64,"
    assert image.startswith(prefix) and image.endswith(")")
    svg = base64.b64decode(image[len(prefix) : -1]).decode()
    assert svg.startswith("<svg") and svg.count("<polyline") == 4


def test_a_strategy_that_peeks_one_bar_ahead_fails_the_partition(
    platform_factory: PlatformFactory,
) -> None:
    platform = with_performance(platform_factory(), strategies=(PeekingMomentum(),))
    platform.materialize(["candles"], partition_range=("2018-02-26", "2018-03-01"))
    result = platform.materialize(
        ["strategy_performance"], partition="2018-03-01", raise_on_error=False
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "looks ahead" in str(failure.event_specific_data.error)
    assert platform.table("strategy_performance").is_empty()


def test_without_the_agents_chain_the_ensemble_is_absent_and_the_metadata_says_why(
    platform_factory: PlatformFactory,
) -> None:
    platform = with_performance(platform_factory())
    platform.materialize(["candles"], partition_range=("2018-02-26", "2018-03-01"))
    result = platform.materialize(["strategy_performance"], partition="2018-03-01")
    metadata = result.asset_materializations_for_node("strategy_performance")[0].metadata
    assert "never materialised" in metadata["ensemble"].value
    assert "sapphire_ensemble" not in platform.table("strategy_performance")["strategy"]


def _targets(stamps: list[datetime]) -> pl.DataFrame:
    return pl.DataFrame(
        {"ts": [s for s in stamps for _ in SYMBOLS], "symbol": SYMBOLS * len(stamps)},
        schema_overrides={"ts": pl.Datetime("ms", "UTC")},
    ).with_columns(pl.lit(0.25).alias("weight"))


SYMBOLS = ["BTC/USD", "EOS/USD", "ETH/USD", "XRP/USD"]
DAY = datetime(2018, 3, 1, tzinfo=UTC)


def test_a_target_trades_on_the_bar_after_its_stamp_and_never_before(
    platform_factory: PlatformFactory,
) -> None:
    platform = platform_factory()
    platform.materialize(["candles"], partition_range=("2018-02-26", "2018-03-01"))
    candles = platform.table("candles")
    start_ms = int(DAY.timestamp() * 1000)
    end_ms = start_ms + 86_400_000

    def ensemble(stamps: list[datetime]) -> tuple[dict[str, Any], np.ndarray]:
        strategy = TargetPortfolioStrategy(_targets(stamps), name=ENSEMBLE)
        frame, curves = backtest_window(
            candles, [strategy], DEFAULT_CONFIG, "30m", start_ms, end_ms
        )
        return frame.row(0, named=True), curves[ENSEMBLE][0]

    noon = DAY + timedelta(hours=12)
    row, equity = ensemble([noon])
    untouched = equity == DEFAULT_CONFIG.initial_cash
    assert untouched[:25].all() and not untouched[25]  # bar 24 is 12:00; it trades at 12:30
    assert row["fills"] >= 4  # one buy per symbol, then drift rebalances past the band
    # Stamped at the day's last bar, or after the day: never traded inside it.
    assert ensemble([DAY + timedelta(hours=23, minutes=30)])[0]["fills"] == 0
    assert ensemble([DAY + timedelta(days=1)])[0]["fills"] == 0


def test_the_ensemble_reads_the_stored_target_portfolio(platform_factory: PlatformFactory) -> None:
    platform = with_performance(platform_factory())
    stamps = [DAY - timedelta(minutes=30), DAY + timedelta(hours=23, minutes=30)]

    @dg.asset(
        name="target_portfolio",
        partitions_def=time_partitions(platform.settings.universe),
        metadata={"partition_expr": "ts"},
    )
    def fake_targets(context: dg.AssetExecutionContext) -> pl.DataFrame:
        window = context.partition_time_window
        return _targets(stamps).filter(pl.col("ts").is_between(window.start, window.end, "left"))

    platform.override([fake_targets])
    platform.materialize(["candles"], partition_range=("2018-02-26", "2018-03-01"))
    platform.materialize(["target_portfolio"], partition_range=("2018-02-28", "2018-03-01"))
    result = platform.materialize(["strategy_performance"], partition="2018-03-01")
    stored = platform.table("strategy_performance")
    assert stored["strategy"].to_list() == ["buy_and_hold", "momentum", ENSEMBLE]
    row = stored.filter(pl.col("strategy") == ENSEMBLE).row(0, named=True)
    # The day before's target from the day's second bar, like buy-and-hold at equal weights.
    assert row["fills"] >= 4 and row["exposure"] > 0.9
    metadata = result.asset_materializations_for_node("strategy_performance")[0].metadata
    assert "walk-forward" in metadata["ensemble"].value
