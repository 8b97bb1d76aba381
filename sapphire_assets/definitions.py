"""The Sapphire code location: one ``Definitions`` object built from the configuration file."""

from __future__ import annotations

import os
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


def build_definitions(
    settings: Settings, environment: str, state: Path | None = None
) -> dg.Definitions:
    """Every asset, check and resource of the configured universe; ``state`` overrides var/."""
    candles, trades, funding_rates = build_market_data_assets(settings)
    features = build_features_asset(settings)
    agent_settings = AgentSettings(backends=parse_backends(settings.agents.backends))
    agent_assets, agent_checks, agent_jobs, agent_schedules = build_agent_assets(
        settings, agent_settings
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
            build_live_vs_backtest_asset(
                settings, target_valid_bars=agent_settings.target_valid_bars
            ),
        ],
        asset_checks=[*build_candle_checks(candles, settings), *agent_checks],
        jobs=agent_jobs,
        schedules=agent_schedules,
        resources=resources_for(environment, settings, state),
    )


defs = build_definitions(load_settings(os.environ.get("SAPPHIRE_CONFIG")), current_environment())
