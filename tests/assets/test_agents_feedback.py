"""Retraining on trade feedback: the model assets read the stored trade_feedback rows (no graph
edge, so no cycle through the forecasts) and weight the traded decisions by their outcome."""

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import dagster as dg
import polars as pl
import pytest

from resources.model_store import ModelStoreResource
from sapphire_assets.agents.assets import build_agent_assets
from sapphire_assets.agents.feedback import usable_feedback, weighted_rows
from sapphire_assets.trades import build_trade_assets
from sapphire_domain.agents.models import SAMPLE_WEIGHT
from sapphire_domain.candles import TS_TYPE
from sapphire_warehouse import parquet_store
from tests.assets.conftest import Platform
from tests.assets.test_agents import SMALL

STEP = timedelta(minutes=30)
HORIZON = SMALL.walk_forward.horizon_bars


@pytest.fixture
def platform(platform_factory: Callable[..., Platform]) -> Platform:
    """Momentum's model (feedback on, the default) beside the trade assets, features stored."""
    platform = platform_factory()
    assets, checks, jobs, _ = build_agent_assets(platform.settings, SMALL)
    platform.override(
        [*assets, *build_trade_assets(platform.settings, SMALL)],
        checks,
        jobs=jobs,
        model_store=ModelStoreResource(root=str(platform.state / "models")),
    )
    platform.materialize(
        ["candles", "trades", "funding_rates"], partition_range=("2018-02-15", "2018-03-14")
    )
    platform.materialize("features", partition_range=("2018-03-01", "2018-03-14"))
    return platform


def feedback_rows(
    decisions: list[tuple[datetime, str, float | None]], late: bool = False
) -> pl.DataFrame:
    """trade_feedback rows (the columns retraining reads) for decisions on the bar at ``ts``."""
    exit_after = STEP * (HORIZON + 1) + (timedelta(days=30) if late else timedelta())
    return pl.DataFrame(
        {
            "ts": [ts for ts, _, _ in decisions],
            "symbol": [s for _, s, _ in decisions],
            "fill_ts": [ts + STEP + timedelta(minutes=1) for ts, _, _ in decisions],
            "exit_ts": [ts + exit_after for ts, _, _ in decisions],
            "realised_return": [r for _, _, r in decisions],
        },
        schema_overrides={
            "ts": TS_TYPE,
            "fill_ts": TS_TYPE,
            "exit_ts": TS_TYPE,
            "realised_return": pl.Float64,
        },
    )


def store_feedback(platform: Platform, rows: pl.DataFrame) -> None:
    """Writes rows where the warehouse keeps trade_feedback: one file per fill day."""
    table = parquet_store.table_dir(platform.state / "warehouse", ["trade_feedback"])
    for (day,), part in rows.group_by(pl.col("fill_ts").dt.date()):
        parquet_store.write_atomically(parquet_store.partition_file(table, str(day)), part)


def retrain_momentum(platform: Platform) -> tuple[dict[str, Any], dict[str, Any]]:
    """Materialisation metadata and the challenger's manifest."""
    # A challenger that loses to the champion fails the blocking check; its metadata still counts.
    result = platform.materialize("momentum_model", raise_on_error=False)
    meta = {
        k: v.value
        for k, v in result.asset_materializations_for_node("momentum_model")[0].metadata.items()
    }
    store = ModelStoreResource(root=str(platform.state / "models")).store()
    return meta, store.manifest("momentum", str(meta["challenger"]))


def test_the_models_read_feedback_without_a_graph_edge_so_there_is_no_cycle(
    platform: Platform,
) -> None:
    graph = platform.defs.resolve_asset_graph()
    assert dg.AssetKey("trade_feedback") in graph.get_all_asset_keys()
    for agent in ("momentum", "microstructure", "sentiment", "timeseries"):
        assert graph.get(dg.AssetKey(f"{agent}_model")).parent_keys == {dg.AssetKey("features")}


def test_without_feedback_the_challenger_trains_and_says_so(platform: Platform) -> None:
    meta, manifest = retrain_momentum(platform)
    assert meta["trade_feedback_rows"] == 0 and meta["trade_feedback"]["used"] is False
    assert manifest["parameters"]["trade_feedback"]["used"] is False


def test_stored_feedback_weights_the_traded_decisions_of_the_challenger(platform: Platform) -> None:
    plain, _ = retrain_momentum(platform)
    start, cutoff = (datetime.fromisoformat(t) for t in plain["training_window"].split(" .. "))
    decided = start + timedelta(days=2)
    rows = feedback_rows(
        [
            (decided, "BTC/USD", 0.02),
            (decided + STEP * 3, "ETH/USD", -0.01),
            (decided + STEP * 6, "XRP/USD", 0.005),
            (decided + STEP * 9, "EOS/USD", None),  # its outcome is not known yet: unused
        ]
    )
    after_cutoff = feedback_rows([(cutoff - STEP, "BTC/USD", 0.5)])  # realised after the cutoff
    store_feedback(platform, pl.concat([rows, after_cutoff]))

    meta, manifest = retrain_momentum(platform)
    used = meta["trade_feedback"]
    assert used["used"] is True and meta["trade_feedback_rows"] == 3
    assert used["decisions_weighted"] == 3 and used["weight_max"] > used["weight_mean"] > 1.0
    assert manifest["parameters"]["trade_feedback"] == used
    # Same data and window, different weights: a different model.
    assert meta["training_window"] == plain["training_window"]
    assert meta["challenger"] != plain["challenger"]


def test_feedback_changes_the_weights_of_the_traded_rows_only(platform: Platform) -> None:
    labelled = platform.table("features").select("ts", "symbol").sort("symbol", "ts")
    traded = labelled.head(2)
    decisions: list[tuple[datetime, str, float | None]] = [
        (ts, s, r) for (ts, s), r in zip(traded.iter_rows(), [0.03, -0.01], strict=True)
    ]
    rows = feedback_rows(decisions)
    first_exit = decisions[0][0] + STEP * (HORIZON + 1)
    cutoff = decisions[1][0] + STEP * (HORIZON + 1)
    with_feedback, summary = weighted_rows(labelled, usable_feedback(rows, cutoff), boost=1.0)
    without, none = weighted_rows(labelled, usable_feedback(None, cutoff), boost=1.0)

    assert none == {"used": False, "rows": 0, "reason": "no trade feedback with a known outcome"}
    assert without[SAMPLE_WEIGHT].to_list() == [1.0] * labelled.height
    # 1 + |r| / mean|r|: the larger outcome weighs more.
    assert with_feedback[SAMPLE_WEIGHT].head(2).to_list() == pytest.approx([1.0 + 1.5, 1.0 + 0.5])
    assert with_feedback[SAMPLE_WEIGHT].tail(labelled.height - 2).eq(1.0).all()
    assert summary["decisions_weighted"] == 2
    # An outcome realised after the training cutoff is not used.
    assert usable_feedback(rows, first_exit) is not None
    assert usable_feedback(rows, first_exit - timedelta(minutes=1)) is None
