"""The Sapphire code location: one ``Definitions`` object built from the configuration file."""

import os
from dataclasses import replace
from pathlib import Path

import dagster as dg

from resources.environments import current_environment, resources_for
from sapphire_assets.agents.assets import build_agent_assets
from sapphire_assets.agents.settings import AgentSettings, parse_backends
from sapphire_assets.features.assets import build_features_asset
from sapphire_assets.market_data.assets import build_market_data_assets
from sapphire_assets.market_data.checks import build_candle_checks
from sapphire_assets.performance.assets import build_strategy_performance_asset
from sapphire_assets.performance.live_vs_backtest import build_live_vs_backtest_asset
from sapphire_assets.trades import build_trade_assets
from sapphire_domain.settings import Settings, load_settings
from sensors import build_live_loop
from sensors.automation import after_new_fills, with_automation

# The full retrain runs daily; the retrain sensor adds retrains on feedback and skill decay.
DAILY_RETRAIN_CRON = "0 3 * * *"


def build_definitions(
    settings: Settings,
    environment: str,
    state: Path | None = None,
    agents: AgentSettings | None = None,
) -> dg.Definitions:
    """Every asset, check, job, sensor, schedule and resource of the configured universe;
    ``state`` overrides var/, ``agents`` the agents' settings (tests shrink training with it;
    its backends are always the configured ones)."""
    candles, trades, funding_rates = build_market_data_assets(settings)
    features = build_features_asset(settings)
    agent_settings = replace(
        agents or AgentSettings(retrain_cron=DAILY_RETRAIN_CRON),
        backends=parse_backends(settings.agents.backends),
    )
    agent_assets, agent_checks, agent_jobs, agent_schedules = build_agent_assets(
        settings, agent_settings
    )
    live_loop = build_live_loop(settings, agent_jobs[0])
    live_vs_backtest = build_live_vs_backtest_asset(
        settings, target_valid_bars=agent_settings.target_valid_bars
    )
    return dg.Definitions(
        assets=[
            candles,
            trades,
            funding_rates,
            features,
            *agent_assets,
            build_strategy_performance_asset(settings),
            *build_trade_assets(settings, agent_settings),
            with_automation(live_vs_backtest, after_new_fills()),
            *live_loop.assets,
        ],
        asset_checks=[*build_candle_checks(candles, settings), *agent_checks],
        jobs=[*agent_jobs, *live_loop.jobs],
        schedules=[*agent_schedules, *live_loop.schedules],
        sensors=live_loop.sensors,
        resources=resources_for(environment, settings, state),
    )


defs = build_definitions(load_settings(os.environ.get("SAPPHIRE_CONFIG")), current_environment())
