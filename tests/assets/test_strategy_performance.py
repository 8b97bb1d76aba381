"""The strategy_performance asset in real Dagster runs over the bundled candles."""

from datetime import UTC, datetime

import numpy as np
import polars as pl

from sapphire_assets.performance.assets import build_strategy_performance_asset
from sapphire_domain.backtest import MarketData


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


def test_a_day_reports_every_strategys_metrics_with_a_table_and_a_plot(platform_factory):
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
    assert metadata["equity_and_drawdown"].value.startswith("<svg")
    assert metadata["equity_and_drawdown"].value.count("<polyline") == 4


def test_a_strategy_that_peeks_one_bar_ahead_fails_the_partition(platform_factory):
    platform = with_performance(platform_factory(), strategies=(PeekingMomentum(),))
    platform.materialize(["candles"], partition_range=("2018-02-26", "2018-03-01"))
    result = platform.materialize(
        ["strategy_performance"], partition="2018-03-01", raise_on_error=False
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "looks ahead" in str(failure.event_specific_data.error)
    assert platform.table("strategy_performance").is_empty()
