"""live_vs_backtest (and the ensemble in strategy_performance) over the real agents chain.

The chain (retrain, forecasts, combined signal, target portfolio on 03-13 and 03-14, a real
redis-server) is the trade assets' module fixture; fills are published to the real fills stream
and stored by a real ``trade_fills`` run.
"""

import shutil
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import polars as pl
import pytest

from sapphire_assets.performance.assets import DEFAULT_CONFIG, build_strategy_performance_asset
from sapphire_assets.performance.live_vs_backtest import build_live_vs_backtest_asset
from sapphire_domain.fill_model import CostModel
from sapphire_domain.messages import Fill, Side
from tests.assets.conftest import Platform
from tests.assets.test_trade_assets import SMALL, Chain, chain, chain_state  # noqa: F401

# No impact term: the modelled price is the open moved by the fixed slippage, whatever the size.
MODEL = CostModel(impact_coefficient=0.0)
CONFIG = replace(DEFAULT_CONFIG, cost_model=MODEL)
DAY = ("2018-03-14", "2018-03-14")  # fills of the 03-13 target (created 03-14 00:00)


@pytest.fixture
def performance(chain: Chain) -> Iterator[Chain]:  # noqa: F811
    platform = chain.platform
    platform.override(
        [
            build_live_vs_backtest_asset(platform.settings, CONFIG, SMALL.target_valid_bars),
            build_strategy_performance_asset(platform.settings),
        ]
    )
    for name in ("live_vs_backtest", "strategy_performance"):
        shutil.rmtree(platform.state / "warehouse" / name, ignore_errors=True)
    yield chain


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    materialization = result.asset_materializations_for_node(asset)[0]
    return {k: v.value for k, v in materialization.metadata.items()}


def _open(platform: Platform, symbol: str, at: datetime) -> float:
    candles = platform.table("candles")
    row = candles.filter((pl.col("symbol") == symbol) & (pl.col("ts") == at))
    return float(row["open"][0])


def test_without_fills_the_result_is_empty_and_says_why(performance: Chain) -> None:
    result = performance.run(["live_vs_backtest"], partition_range=DAY)
    meta = _metadata(result, "live_vs_backtest")
    assert meta["dagster/row_count"] == 0
    assert "trade_fills was never materialised" in meta["explanation"]
    assert performance.platform.table("live_vs_backtest").is_empty()


def test_the_reported_drift_is_how_far_the_fills_are_from_the_model(performance: Chain) -> None:
    platform = performance.platform
    first = performance.stored_targets.sort("version").filter(
        pl.col("version") == performance.stored_targets["version"].min()
    )
    held = first.filter(pl.col("weight") != 0).sort("symbol")
    assert held.height >= 2, "the first target must hold two symbols for this test"
    created: datetime = held["created_at"][0]  # the first bar it trades at (03-14 00:00)
    drifts = {held["symbol"][0]: 7.5, held["symbol"][1]: -2.0}  # bps worse (+) or better (-)
    fills, expected = [], {}
    for n, (symbol, drift) in enumerate(drifts.items()):
        weight = float(held.filter(pl.col("symbol") == symbol)["weight"][0])
        side = Side.BUY if weight > 0 else Side.SELL
        sign = 1.0 if side is Side.BUY else -1.0
        reference = _open(platform, symbol, created)
        # The backtest starts flat, so its first fill takes the target's side at the open,
        # moved by the fixed slippage; the live fill is ``drift`` bps of the open further.
        modelled = reference * (1 + sign * MODEL.slippage_bps / 1e4)
        price = modelled + sign * drift / 1e4 * reference
        quantity = 0.25
        fee = quantity * price * 10 / 1e4  # 10 bps against the model's taker 5 bps
        fills.append(
            Fill(
                fill_id=f"live:{n}", client_order_id=f"{n}", target_version=int(held["version"][0]),
                symbol=symbol, side=side, quantity=quantity, price=price, fee=fee,
                liquidity="taker", venue="paper", ts=created + timedelta(seconds=20),
                reference_price=reference,
            )
        )  # fmt: skip
        predicted_fee = quantity * modelled * MODEL.taker_fee_bps / 1e4
        expected[symbol] = {
            "realised_price": price,
            "predicted_price": modelled,
            "slippage_drift_bps": drift,
            "modelled_slippage_bps": MODEL.slippage_bps,
            "realised_fees": fee,
            "predicted_fees": predicted_fee,
            "pnl_difference": -sign * quantity * (price - modelled) - (fee - predicted_fee),
        }
    # A fill of a version that no stored target has: reported, never compared.
    stray = fills[0].model_copy(update={"fill_id": "live:stray", "target_version": 12345})
    performance.publish(*fills, stray)
    performance.run(["trade_fills"], partition_range=DAY)

    result = performance.run(["live_vs_backtest"], partition_range=DAY)
    stored = platform.table("live_vs_backtest").sort("symbol")
    assert stored["symbol"].to_list() == sorted(drifts)
    assert stored["ts"].to_list() == [datetime(2018, 3, 14, tzinfo=UTC)] * 2
    for symbol, values in expected.items():
        row = stored.filter(pl.col("symbol") == symbol).row(0, named=True)
        for column, value in values.items():
            assert row[column] == pytest.approx(value, rel=1e-9, abs=1e-9), column
    assert stored["unmatched_fills"].to_list() == [1, 0]
    meta = _metadata(result, "live_vs_backtest")
    assert "1 without a modelled fill" in meta["explanation"]
    assert f"| {held['symbol'][0]} |" in meta["comparison"]
    assert meta["mean_slippage_drift_bps"] == pytest.approx(sum(drifts.values()) / 2)


def test_the_ensemble_is_backtested_from_the_target_portfolio(performance: Chain) -> None:
    # 03-14 trades the target stamped at 03-13's last bar; 03-15 has no target of its own day
    # stored, but the one of 03-14 (stamped at its last bar) is read as the day before's.
    result = performance.run(["strategy_performance"], partition_range=("2018-03-14", "2018-03-15"))
    stored = performance.platform.table("strategy_performance")
    by_day = stored.group_by(pl.col("ts").dt.date().alias("day")).agg(pl.col("strategy"))
    assert all("sapphire_ensemble" in s for s in by_day["strategy"])
    assert stored.height == 6
    meta = _metadata(result, "strategy_performance")
    assert meta["days"] == 2 and "walk-forward" in meta["ensemble"]
    ensemble = stored.filter(pl.col("strategy") == "sapphire_ensemble")
    assert (ensemble["exposure"] > 0).all() and (ensemble["fills"] > 0).all()
