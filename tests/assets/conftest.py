"""Real Dagster runs of the code location against a temporary state folder."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from resources.market_data import MarketDataResource
from sapphire_assets.definitions import build_definitions
from sapphire_domain.settings import Settings, parse_settings
from sapphire_market.replay import BUNDLED_DATA_DIR

DEFAULT_UNIVERSE = {
    "exchange": "replay",
    "symbols": ["BTC/USD", "ETH/USD", "XRP/USD", "EOS/USD"],
    "timeframe": "30m",
    "start": "2017-10-01",
    "end": "2019-10-01",
}


def settings_with(**universe: object) -> Settings:
    return parse_settings({"universe": {**DEFAULT_UNIVERSE, **universe}}, "test")


def warehouse_table(state: Path, name: str) -> pl.DataFrame:
    """Every stored partition of one asset in the local warehouse under ``state``."""
    files = sorted((state / "warehouse" / name).glob("*.parquet"))
    return pl.concat([pl.read_parquet(f) for f in files]) if files else pl.DataFrame()


class Platform:
    """One code location over a temporary state folder, with helpers to run and inspect it."""

    def __init__(self, state: Path, settings: Settings, **market: object) -> None:
        self.state = state
        self.settings = settings
        self.defs = build_definitions(settings, "local", state)
        if market:
            self.defs = self._with_market(market)
        self.instance = dg.DagsterInstance.ephemeral()

    def _with_market(self, updates: dict[str, object]) -> dg.Definitions:
        """The same definitions with some market data settings changed."""
        resources = dict(self.defs.resources or {})
        current: MarketDataResource = resources["market_data"]
        resources["market_data"] = MarketDataResource(**{**current.model_dump(), **updates})
        return dg.Definitions(
            assets=list(self.defs.assets or []),
            asset_checks=list(self.defs.asset_checks or []),
            resources=resources,
        )

    def override(
        self,
        assets: list[dg.AssetsDefinition] | tuple[()] = (),
        asset_checks: list[dg.AssetChecksDefinition] | tuple[()] = (),
        jobs: list[object] | None = None,
        **resources: object,
    ) -> None:
        """Swap in test variants of assets (and their checks) and resources by key."""
        replaced = {key for asset in assets for key in asset.keys}
        kept_assets = [
            a
            for a in self.defs.assets or []
            if not set(a.keys) & replaced  # type: ignore[union-attr]
        ]
        kept_checks = [
            c
            for c in self.defs.asset_checks or []
            if not {k.asset_key for k in c.check_keys} & replaced
        ]
        self.defs = dg.Definitions(
            assets=[*kept_assets, *assets],
            asset_checks=[*kept_checks, *asset_checks],
            jobs=jobs if jobs is not None else list(self.defs.jobs or []),
            resources={**(self.defs.resources or {}), **resources},
        )

    def materialize(
        self,
        selection: str | list[str],
        partition_range: tuple[str, str] | None = None,
        partition: str | None = None,
        raise_on_error: bool = True,
    ) -> dg.ExecuteInProcessResult:
        job = self.defs.resolve_implicit_global_asset_job_def()
        tags = {}
        if partition_range is not None:
            tags = {
                "dagster/asset_partition_range_start": partition_range[0],
                "dagster/asset_partition_range_end": partition_range[1],
            }
        names = [selection] if isinstance(selection, str) else selection
        return job.execute_in_process(
            instance=self.instance,
            asset_selection=[dg.AssetKey(n) for n in names],
            partition_key=partition,
            tags=tags,
            raise_on_error=raise_on_error,
        )

    def table(self, name: str) -> pl.DataFrame:
        return warehouse_table(self.state, name)


@pytest.fixture
def platform_factory(tmp_path: Path) -> Callable[..., Platform]:
    def make(
        settings: Settings | None = None, data_dir: Path | None = None, **market: object
    ) -> Platform:
        if data_dir is not None:
            market["replay_data_dir"] = str(data_dir)
        return Platform(tmp_path / "state", settings or settings_with(), **market)

    return make


@pytest.fixture
def data_copy(tmp_path: Path) -> Path:
    """A writable copy of the bundled USD candles, for planting defects."""
    target = tmp_path / "data"
    target.mkdir()
    for symbol in ("BTC", "ETH", "XRP", "EOS"):
        shutil.copy(BUNDLED_DATA_DIR / f"{symbol}_USD-30m.parquet", target)
    return target
