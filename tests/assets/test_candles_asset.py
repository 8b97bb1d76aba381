"""Candles materialise from the replay exchange; defects fail blocking checks and stop downstream."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from sapphire_market.replay import BUNDLED_DATA_DIR
from tests.assets.conftest import settings_with

UNIVERSE = ("BTC/USD", "ETH/USD", "XRP/USD", "EOS/USD")
DAY = "2018-03-01"


def check_results(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_a_partition_holds_one_day_of_every_symbol(platform_factory):
    platform = platform_factory()
    result = platform.materialize("candles", partition=DAY)
    assert result.success
    candles = platform.table("candles")
    assert sorted(candles["symbol"].unique()) == sorted(UNIVERSE)
    assert candles.group_by("symbol").len()["len"].to_list() == [48] * 4
    assert candles["ts"].min() == datetime(2018, 3, 1, tzinfo=UTC)
    (materialization,) = result.asset_materializations_for_node("candles")
    metadata = materialization.metadata
    assert metadata["dagster/row_count"].value == 192
    assert metadata["last_candle"].value == "2018-03-01T23:30:00+00:00"
    assert len(metadata["per_symbol"].value.records) == 4


def test_every_blocking_check_passes_on_the_bundled_data(platform_factory):
    platform = platform_factory()
    result = platform.materialize("candles", partition_range=("2018-01-01", "2018-01-31"))
    checks = check_results(result)
    assert {
        "schema",
        "no_nan",
        "positive_prices",
        "consistent_ranges",
        "no_duplicates",
        "ordered",
        "gaps",
    } <= set(checks)
    assert all(e.passed for e in checks.values())


def test_a_two_month_backfill_is_one_run_and_rematerialising_never_duplicates(platform_factory):
    platform = platform_factory()
    result = platform.materialize("candles", partition_range=("2018-06-01", "2018-07-31"))
    assert result.success
    files = sorted((platform.state / "warehouse" / "candles").glob("*.parquet"))
    assert len(files) == 61
    first = platform.table("candles")
    platform.materialize("candles", partition_range=("2018-06-15", "2018-06-20"))
    again = platform.table("candles")
    assert again.height == first.height
    assert again.select(pl.struct("symbol", "ts").n_unique()).item() == again.height
    # The second run read every day from the download cache instead of the exchange.
    assert platform.instance.get_runs_count() == 2


def test_gaps_are_reported_not_filled(platform_factory):
    platform = platform_factory()
    result = platform.materialize("candles", partition_range=("2017-10-01", "2019-09-30"))
    materialization = result.asset_materializations_for_node("candles")[0]
    assert materialization.metadata["gaps"].value == 9 + 13 + 14 + 17
    candles = platform.table("candles")
    bundled = sum(
        pl.read_parquet(p).filter(pl.col("ts") < datetime(2019, 10, 1, tzinfo=UTC)).height
        for p in BUNDLED_DATA_DIR.glob("*_USD-30m.parquet")
    )
    assert candles.height == bundled  # every real candle of the universe, and not one invented


def plant(data_dir: Path, symbol: str, change) -> None:
    path = data_dir / f"{symbol}_USD-30m.parquet"
    frame = pl.read_parquet(path)
    change(frame).write_parquet(path)


def at(frame: pl.DataFrame, hour: int) -> pl.Expr:
    return pl.col("ts") == datetime(2018, 3, 1, hour, tzinfo=UTC)


DEFECTS = {
    "no_nan": lambda f: f.with_columns(
        pl.when(at(f, 5)).then(float("nan")).otherwise(pl.col("close")).alias("close")
    ),
    "positive_prices": lambda f: f.with_columns(
        pl.when(at(f, 5)).then(0.0).otherwise(pl.col("low")).alias("low")
    ),
    "consistent_ranges": lambda f: f.with_columns(
        pl.when(at(f, 5)).then(pl.col("high") * 1.05).otherwise(pl.col("close")).alias("close")
    ),
    "no_duplicates": lambda f: pl.concat([f, f.filter(at(f, 5))]).sort("ts", maintain_order=True),
    "ordered": lambda f: pl.concat(
        [
            f.filter(pl.col("ts") < datetime(2018, 3, 1, 5, tzinfo=UTC)),
            f.filter(at(f, 6)),
            f.filter(at(f, 5)),
            f.filter(pl.col("ts") > datetime(2018, 3, 1, 6, tzinfo=UTC)),
        ]
    ),
}


@pytest.mark.parametrize("failing_check", sorted(DEFECTS))
def test_each_defect_fails_its_own_check_and_features_do_not_run(
    platform_factory, data_copy, failing_check
):
    plant(data_copy, "ETH", DEFECTS[failing_check])
    platform = platform_factory(data_dir=data_copy)
    result = platform.materialize(
        ["candles", "trades", "funding_rates", "features"], partition=DAY, raise_on_error=False
    )
    checks = check_results(result)
    failed = {name for name, e in checks.items() if not e.passed and name != "gaps"}
    assert failed == {failing_check}
    assert checks[failing_check].metadata["offending_rows"].value >= 1
    assert result.asset_materializations_for_node("features") == []
    assert not (platform.state / "warehouse" / "features").exists()


def test_an_unknown_symbol_fails_before_anything_is_written(platform_factory):
    platform = platform_factory(settings_with(symbols=["BTC/USD", "DOGE/USD"]))
    result = platform.materialize("candles", partition=DAY, raise_on_error=False)
    assert not result.success
    failure = result.failure_data_for_node("candles")
    assert failure is not None and "DOGE/USD" in str(failure.error)
    assert not (platform.state / "warehouse" / "candles").exists()


def test_an_unreachable_exchange_is_one_clear_error_and_nothing_is_written(platform_factory):
    """A live exchange cannot be reached from here; ccxt is pointed at a closed loopback port."""
    platform = platform_factory(
        settings_with(exchange="binance", symbols=["BTC/USDT"]),
        ccxt_config={"httpsProxy": "http://127.0.0.1:9"},
        max_retries=1,
        retry_backoff_s=0.01,
    )
    result = platform.materialize("candles", partition=DAY, raise_on_error=False)
    failure = result.failure_data_for_node("candles")
    assert failure is not None
    assert "'binance' unavailable" in str(failure.error) and "failed 2 times" in str(failure.error)
    assert not (platform.state / "warehouse" / "candles").exists()


def test_a_failed_symbol_is_retried_without_redownloading_the_others(platform_factory, data_copy):
    good = (data_copy / "ETH_USD-30m.parquet").read_bytes()
    (data_copy / "ETH_USD-30m.parquet").write_bytes(b"PAR1 damaged in transit")
    platform = platform_factory(data_dir=data_copy)
    result = platform.materialize(
        "candles", partition_range=("2018-03-01", "2018-03-10"), raise_on_error=False
    )
    failure = result.failure_data_for_node("candles")
    assert (
        failure is not None
        and "ETH/USD" in str(failure.error)
        and "nothing was written" in str(failure.error)
    )
    assert not (platform.state / "warehouse" / "candles").exists()

    (data_copy / "ETH_USD-30m.parquet").write_bytes(good)
    platform = platform_factory(data_dir=data_copy)
    retry = platform.materialize("candles", partition_range=("2018-03-01", "2018-03-10"))
    materialization = retry.asset_materializations_for_node("candles")[0]
    assert materialization.metadata["days_downloaded"].value == 10  # ETH alone, not 40
    assert platform.table("candles")["symbol"].n_unique() == 4


def test_partitions_materialise_on_synthetic_data(platform_factory):
    settings = settings_with(
        exchange="synthetic",
        symbols=[f"SYN{i:03d}/USD" for i in range(4)],
        start="2024-01-01",
        end="2024-01-31",
    )
    platform = platform_factory(settings)
    result = platform.materialize(
        ["candles", "trades", "funding_rates", "features"],
        partition_range=("2024-01-01", "2024-01-21"),
    )
    assert result.success
    assert platform.table("candles").height == 4 * 48 * 21
    assert platform.table("features").height == 4 * 48 * 21
