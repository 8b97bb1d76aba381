"""The market data resource: any ccxt exchange, the replay exchange or a synthetic market."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import dagster as dg
from pydantic import Field

from sapphire_market.download_cache import CandleDownloadCache
from sapphire_market.replay import BUNDLED_DATA_DIR, ReplayExchange
from sapphire_market.source import MarketDataSource

REPLAY = "replay"
SYNTHETIC = "synthetic"


class MarketDataResource(dg.ConfigurableResource):
    """Where candles come from.

    exchange: a ccxt exchange id (``binance``, ``aster``...), ``replay`` for the bundled real data
        on the replay clock, or ``synthetic`` for the seeded synthetic market.
    api_key, secret, password: exchange credentials; pass them as ``dg.EnvVar`` so they are read
        from the environment at run time and never shown or logged.
    sandbox: use the exchange's sandbox/testnet where it has one.
    ccxt_config: extra settings for the ccxt exchange (proxies, URLs, exchange options).
    max_retries, retry_backoff_s: retries of network errors, and the first backoff (it doubles).
    replay_data_dir: folder of the replay's Parquet files (the bundled data by default).
    replay_clock_file: the shared replay clock state.
    synthetic_seed, synthetic_symbols, synthetic_days, synthetic_timeframe, synthetic_start:
        shape of the synthetic market (taken from the universe by ``resources_for``).
    download_cache_dir: staging folder for downloaded days (see ``CandleDownloadCache``).
    """

    exchange: str = REPLAY
    api_key: str | None = Field(default=None, repr=False)
    secret: str | None = Field(default=None, repr=False)
    password: str | None = Field(default=None, repr=False)
    sandbox: bool = False
    ccxt_config: dict[str, Any] = Field(default_factory=dict)
    max_retries: int = 5
    retry_backoff_s: float = 0.5
    replay_data_dir: str = str(BUNDLED_DATA_DIR)
    replay_clock_file: str = "var/replay_clock.json"
    synthetic_seed: int = 0
    synthetic_symbols: int = 4
    synthetic_days: int = 30
    synthetic_timeframe: str = "30m"
    synthetic_start: str = "2024-01-01"
    download_cache_dir: str = "var/download_cache"

    def source(self) -> MarketDataSource:
        if self.exchange == REPLAY:
            return ReplayExchange.on_clock_file(self.replay_clock_file, self.replay_data_dir)
        if self.exchange == SYNTHETIC:
            from sapphire_market.synthetic_source import SyntheticMarketData

            return SyntheticMarketData(
                n_symbols=self.synthetic_symbols,
                days=self.synthetic_days,
                timeframe=self.synthetic_timeframe,
                seed=self.synthetic_seed,
                start=datetime.fromisoformat(self.synthetic_start).replace(tzinfo=UTC),
            )
        from sapphire_market.ccxt_source import CcxtMarketData

        return CcxtMarketData(
            self.exchange,
            api_key=self.api_key,
            secret=self.secret,
            password=self.password,
            sandbox=self.sandbox,
            options=self.ccxt_config,
            max_retries=self.max_retries,
            backoff_s=self.retry_backoff_s,
        )

    def download_cache(self) -> CandleDownloadCache:
        return CandleDownloadCache(self.download_cache_dir)
