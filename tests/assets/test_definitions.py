"""The code location loads, and one environment variable switches every resource."""

import subprocess
import sys

import dagster as dg
import pytest

from resources.environments import current_environment, resources_for
from resources.warehouse import LocalWarehouseIOManager
from sapphire_assets.definitions import build_definitions
from sapphire_domain.errors import ConfigError
from sapphire_domain.settings import load_settings
from tests.assets.conftest import settings_with

MARKET_TIME_ASSETS = {"candles", "trades", "funding_rates", "features"}
AGENTS = ("momentum", "microstructure", "sentiment", "timeseries")
ASSETS = (
    MARKET_TIME_ASSETS
    | {f"{a}_model" for a in AGENTS}
    | {f"{a}_forecasts" for a in AGENTS}
    | {"agent_scorecard", "combined_signal", "target_portfolio", "strategy_performance"}
    | {"trade_fills", "trade_feedback", "live_vs_backtest", "execution_state"}
)
CANDLE_CHECKS = {
    "schema",
    "no_nan",
    "positive_prices",
    "consistent_ranges",
    "no_duplicates",
    "ordered",
    "gaps",
}


def test_the_code_location_loads_with_every_asset_and_check():
    from sapphire_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == ASSETS
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    promotions = {(f"{a}_model", "beats_champion") for a in AGENTS}
    assert {("candles", n) for n in CANDLE_CHECKS} | {
        ("features", "no_lookahead")
    } | promotions == checks
    blocking = {k.name for k in graph.asset_check_keys if graph.get_check_spec(k).blocking}
    assert blocking == (CANDLE_CHECKS - {"gaps"}) | {"no_lookahead", "beats_champion"}
    assert {job.name for job in defs.jobs} == {
        "retrain_agents",
        "market_history",
        "live_loop",
        "fills_to_warehouse",
        "performance_report",
    }
    assert {s.name for s in defs.sensors} == {
        "new_candles",
        "new_fills",
        "retrain_trigger",
        "risk_events",
        "automation_conditions",
    }
    assert {s.name for s in defs.schedules} == {
        "retrain_agents_schedule",
        "daily_performance_report",
    }


def test_every_market_time_asset_backfills_in_a_single_run():
    defs = build_definitions(load_settings(), "local")
    for key in MARKET_TIME_ASSETS:
        asset = defs.resolve_assets_def(key)
        assert asset.backfill_policy == dg.BackfillPolicy.single_run(), key
        assert (
            asset.partitions_def is not None
            and len(asset.partitions_def.get_partition_keys()) == 730
        )


def test_an_open_ended_universe_includes_the_current_day():
    defs = build_definitions(
        settings_with(end=None, exchange="binance", symbols=["BTC/USDT"]), "local"
    )
    partitions = defs.resolve_assets_def("candles").partitions_def
    assert isinstance(partitions, dg.TimeWindowPartitionsDefinition)
    last = partitions.get_last_partition_key()
    assert last is not None and last >= "2026-01-01"


def test_the_environment_switch_selects_bigquery_and_credentials_from_the_environment(
    monkeypatch, tmp_path
):
    monkeypatch.setenv("SAPPHIRE_ENV", "production")
    assert current_environment() == "production"
    resources = resources_for("production", load_settings(), tmp_path)
    from resources.warehouse_bigquery import BigQueryWarehouseIOManager

    assert isinstance(resources["io_manager"], BigQueryWarehouseIOManager)
    market = resources["market_data"]
    # The secret is an EnvVar reference, resolved at run time and never stored in the definition.
    assert (
        isinstance(market.api_key, dg.EnvVar) and market.api_key.env_var_name == "EXCHANGE_API_KEY"
    )
    assert isinstance(resources["io_manager"].dataset, dg.EnvVar)


def test_the_local_environment_keeps_everything_under_the_state_folder(tmp_path):
    resources = resources_for("local", load_settings(), tmp_path)
    assert isinstance(resources["io_manager"], LocalWarehouseIOManager)
    assert resources["io_manager"].root == str(tmp_path / "warehouse")
    assert resources["market_data"].download_cache_dir.startswith(str(tmp_path))


def test_an_unknown_environment_is_named(monkeypatch):
    monkeypatch.setenv("SAPPHIRE_ENV", "staging")
    with pytest.raises(ConfigError, match="staging"):
        current_environment()


def test_a_bad_configuration_file_stops_the_code_location_with_its_reason(tmp_path):
    bad = tmp_path / "sapphire.yaml"
    bad.write_text("universe: {symbols: [BTC/USD], start: 2020-01-01, timeframe: 7x}\n")
    result = subprocess.run(
        [sys.executable, "-c", "import sapphire_assets.definitions"],
        env={"SAPPHIRE_CONFIG": str(bad), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "ConfigError" in result.stderr and "timeframe" in result.stderr
