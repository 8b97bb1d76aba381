"""One switch, ``SAPPHIRE_ENV``, selects the set of resources; asset code never asks which.

``local`` (the embedded default): the exchange named in the configuration (the replay exchange
by default) and the Parquet warehouse that DuckDB queries. ``production``: the same exchange with
credentials from the environment, and BigQuery.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dagster as dg

from resources.bus import BusResource
from resources.llm import LlmResource
from resources.market_data import SYNTHETIC, MarketDataResource
from resources.model_store import ModelStoreResource
from resources.warehouse import LocalWarehouseIOManager
from sapphire_bus.server import LOCAL_PORT
from sapphire_domain.errors import ConfigError
from sapphire_domain.settings import PROJECT_ROOT, Settings

LOCAL_REDIS_URL = f"redis://127.0.0.1:{LOCAL_PORT}/0"
LOCAL = "local"
PRODUCTION = "production"
ENVIRONMENTS = (LOCAL, PRODUCTION)


def current_environment() -> str:
    environment = os.environ.get("SAPPHIRE_ENV", LOCAL)
    if environment not in ENVIRONMENTS:
        raise ConfigError(f"SAPPHIRE_ENV={environment!r} is not one of {', '.join(ENVIRONMENTS)}")
    return environment


def state_dir() -> Path:
    """Where the embedded default keeps its state: the warehouse, caches and the replay clock."""
    return Path(os.environ.get("SAPPHIRE_STATE_DIR", PROJECT_ROOT / "var"))


def resources_for(
    environment: str, settings: Settings, state: Path | None = None
) -> dict[str, Any]:
    state = state or state_dir()
    universe = settings.universe
    exchange = universe.exchange
    if environment == LOCAL:
        synthetic: dict[str, Any] = {}
        if exchange == SYNTHETIC:
            if universe.end is None:
                raise ConfigError("a synthetic universe needs universe.end: it is a finite market")
            synthetic = {
                "synthetic_symbols": len(universe.symbols),
                "synthetic_days": (universe.end - universe.start).days,
                "synthetic_timeframe": universe.timeframe,
                "synthetic_start": universe.start.isoformat(),
            }
        return {
            "market_data": MarketDataResource(
                exchange=exchange,
                replay_clock_file=str(state / "replay_clock.json"),
                download_cache_dir=str(state / "download_cache"),
                **synthetic,
            ),
            "model_store": ModelStoreResource(root=str(state / "models")),
            # The project's own redis-server (``sapphire run`` starts it); REDIS_URL overrides.
            "bus": BusResource(url=os.environ.get("REDIS_URL", LOCAL_REDIS_URL)),
            "llm": LlmResource(
                base_url=os.environ.get("VLLM_BASE_URL", "http://127.0.0.1:8000"),
                model=os.environ.get("SAPPHIRE_LLM_MODEL", ""),
                cache_dir=str(state / "llm_cache"),
            ),
            "io_manager": LocalWarehouseIOManager(root=str(state / "warehouse")),
        }
    if environment == PRODUCTION:
        # Imported here so the embedded default never loads the BigQuery client.
        from resources.warehouse_bigquery import BigQueryWarehouseIOManager

        return {
            "market_data": MarketDataResource(
                exchange=exchange,
                api_key=dg.EnvVar("EXCHANGE_API_KEY"),
                secret=dg.EnvVar("EXCHANGE_SECRET"),
                password=dg.EnvVar("EXCHANGE_PASSWORD"),
                download_cache_dir=str(state / "download_cache"),
            ),
            "io_manager": BigQueryWarehouseIOManager(
                project=dg.EnvVar("GCP_PROJECT"),
                dataset=dg.EnvVar("BIGQUERY_DATASET"),
            ),
            "model_store": ModelStoreResource(root=dg.EnvVar("MODEL_STORE")),
            "bus": BusResource(url=dg.EnvVar("REDIS_URL")),
            "llm": LlmResource(
                base_url=dg.EnvVar("VLLM_BASE_URL"),
                model=dg.EnvVar("VLLM_MODEL"),
                cache_dir=str(state / "llm_cache"),
            ),
        }
    raise ConfigError(f"unknown environment {environment!r}: use one of {', '.join(ENVIRONMENTS)}")
