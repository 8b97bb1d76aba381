"""Features partitions equal a full-history computation, and the look-ahead check guards them."""

from datetime import UTC, datetime

import dagster as dg
import polars as pl
from polars.testing import assert_frame_equal

from sapphire_assets.features.assets import build_features_asset
from sapphire_domain.features import compute_features
from sapphire_market.replay import ReplayExchange

CHAIN = ["candles", "trades", "funding_rates", "features"]
USD_PAIRS = ("BTC/USD", "ETH/USD", "XRP/USD", "EOS/USD")


def checks_of(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


def test_a_partitions_first_rows_equal_a_full_history_computation(platform_factory):
    platform = platform_factory()
    # History first, in one run; then the day on its own, reading its look-back from the warehouse.
    platform.materialize(
        ["candles", "trades", "funding_rates"], partition_range=("2018-01-01", "2018-02-28")
    )
    platform.materialize(CHAIN, partition="2018-03-01")
    stored = platform.table("features").sort("symbol", "ts")

    exchange = ReplayExchange()
    history = pl.concat(exchange.fetch_candles(s, "30m", 0, ms(2018, 3, 2)) for s in USD_PAIRS)
    full = compute_features(history.sort("symbol", "ts"), "30m")
    expected = full.filter(pl.col("ts") >= datetime(2018, 3, 1, tzinfo=UTC)).sort("symbol", "ts")
    assert stored.height == 4 * 48
    assert_frame_equal(stored, expected, check_exact=False, rel_tol=1e-9, abs_tol=1e-12)


def test_the_look_ahead_check_passes_on_every_partition_of_a_backfill(platform_factory):
    platform = platform_factory()
    platform.materialize(CHAIN[:3], partition_range=("2018-04-20", "2018-04-30"))
    result = platform.materialize(CHAIN, partition_range=("2018-05-01", "2018-05-20"))
    check = checks_of(result)["no_lookahead"]
    assert check.passed
    assert check.metadata["partitions_checked"].value == 20
    assert check.metadata["sampled_times"].value == 40


def leaky_features(candles, timeframe, params, trades=None, funding=None):
    """The real features, plus RSI taken from the next bar: the mistake a misaligned join makes."""
    real = compute_features(candles, timeframe, params, trades=trades, funding=funding)
    return real.with_columns(pl.col("rsi").shift(-1).over("symbol"))


def test_the_look_ahead_check_catches_a_leaky_feature_and_nothing_is_written(platform_factory):
    platform = platform_factory()
    platform.override([build_features_asset(platform.settings, compute=leaky_features)])
    platform.materialize(CHAIN[:3], partition_range=("2018-04-20", "2018-05-01"))
    result = platform.materialize(CHAIN, partition="2018-05-02", raise_on_error=False)
    check = checks_of(result)["no_lookahead"]
    assert not check.passed
    assert check.metadata["leaking_columns"].value == ["rsi"]
    assert result.asset_materializations_for_node("features") == []
    assert not (platform.state / "warehouse" / "features").exists()


def test_features_without_their_look_back_fail_and_say_what_to_materialise(platform_factory):
    platform = platform_factory()
    result = platform.materialize(CHAIN, partition="2019-06-01", raise_on_error=False)
    failure = result.failure_data_for_node("features")
    assert (
        failure is not None
        and "look-back" in str(failure.error)
        and "2019-05-" in str(failure.error)
    )
    assert result.asset_materializations_for_node("features") == []


def test_features_cover_every_symbol_and_say_what_is_missing(platform_factory):
    platform = platform_factory()
    platform.materialize(CHAIN[:3], partition_range=("2019-05-01", "2019-05-31"))
    result = platform.materialize(CHAIN, partition="2019-06-01")
    (materialization,) = result.asset_materializations_for_node("features")
    coverage = {
        r.data["feature"]: r.data["non_null_share"]
        for r in materialization.metadata["coverage"].value.records
    }
    assert coverage["rsi"] > 0.9 and coverage["cs_spread"] > 0.5
    assert coverage["trade_imbalance"] == 0.0  # the USD pairs have no trades: null, never zero
    assert materialization.metadata["symbols"].value == 4
