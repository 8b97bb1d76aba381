"""The Sapphire code location: one ``Definitions`` object built from the configuration file."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from resources.environments import current_environment, resources_for
from sapphire_assets.features.assets import build_features_asset
from sapphire_assets.market_data.assets import build_market_data_assets
from sapphire_assets.market_data.checks import build_candle_checks
from sapphire_domain.settings import Settings, load_settings


def build_definitions(
    settings: Settings, environment: str, state: Path | None = None
) -> dg.Definitions:
    """Every asset, check and resource of the configured universe; ``state`` overrides var/."""
    candles, trades, funding_rates = build_market_data_assets(settings)
    features = build_features_asset(settings)
    return dg.Definitions(
        assets=[candles, trades, funding_rates, features],
        asset_checks=build_candle_checks(candles, settings),
        resources=resources_for(environment, settings, state),
    )


defs = build_definitions(load_settings(os.environ.get("SAPPHIRE_CONFIG")), current_environment())
