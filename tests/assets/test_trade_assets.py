"""Real Dagster runs of the trade assets over a real redis-server and a real target portfolio.

The agents chain (retrain, forecasts, combined signal, target portfolio) is materialised once
per module; each test starts from an empty fills stream and no stored trade tables.
"""

import math
import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import polars as pl
import pytest
import redis

import sapphire_assets.trades.assets as trade_module
from resources.bus import BusResource
from resources.model_store import ModelStoreResource
from sapphire_assets.agents.assets import build_agent_assets
from sapphire_assets.trades import build_trade_assets
from sapphire_assets.trades.feedback import fill_outcomes, fills_frame
from sapphire_bus.server import RedisServer
from sapphire_domain.messages import (
    FILLS_STREAM,
    TARGETS_STREAM,
    Fill,
    Side,
    TargetPortfolio,
    decode,
    encode,
)
from sapphire_warehouse.sql import connect
from tests.assets.conftest import Platform, settings_with
from tests.assets.test_agents import FORECASTS, MODELS, SMALL

TRADE_ASSETS = ["trade_fills", "trade_feedback"]
DAYS = ("2018-03-13", "2018-03-14")  # the target portfolio's days
FILL_DAYS = ("2018-03-14", "2018-03-15")  # their targets are created at the next midnight
HORIZON = SMALL.walk_forward.horizon_bars


class Chain:
    def __init__(self, platform: Platform, client: redis.Redis) -> None:
        self.platform = platform
        self.client = client
        self.warehouse = platform.state / "warehouse"
        self.stored_targets = platform.table("target_portfolio")
        published = decode(client.xrange(TARGETS_STREAM)[-1][1])  # type: ignore[index, arg-type]
        assert isinstance(published, TargetPortfolio)
        self.target = published

    def publish(self, *entries: Fill | dict[str, str]) -> list[str]:
        ids = []
        for entry in entries:
            fields = encode(entry) if isinstance(entry, Fill) else entry
            ids.append(self.client.xadd(FILLS_STREAM, fields).decode())  # type: ignore[arg-type, union-attr]
        return ids

    def run(
        self,
        assets: list[str],
        partition_range: tuple[str, str] = FILL_DAYS,
        after: str | None = None,
    ) -> dg.ExecuteInProcessResult:
        config: dict[str, Any] = {"after": after} if after else {}
        job = self.platform.defs.resolve_implicit_global_asset_job_def()
        return job.execute_in_process(
            instance=self.platform.instance,
            asset_selection=[dg.AssetKey(a) for a in assets],
            run_config={"ops": {"trade_fills": {"config": config}}} if "trade_fills" in assets
            else {},
            tags={
                "dagster/asset_partition_range_start": partition_range[0],
                "dagster/asset_partition_range_end": partition_range[1],
            },
        )  # fmt: skip

    def partition(self, asset: str, key: str) -> pl.DataFrame:
        return pl.read_parquet(self.warehouse / asset / f"{key}.parquet")

    def target_rows(self, version: int) -> pl.DataFrame:
        return self.stored_targets.filter(pl.col("version") == version)


@pytest.fixture(scope="module")
def chain_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Platform, str]]:
    root = tmp_path_factory.mktemp("trades")
    with RedisServer(root / "redis") as server:
        platform = Platform(root / "state", settings_with())
        agent_assets, _checks, jobs, _ = build_agent_assets(platform.settings, SMALL)
        ours = [*agent_assets, *build_trade_assets(platform.settings, SMALL)]
        keys = {k for a in ours for k in a.keys}
        # The lead may wire these into build_definitions; take them from here either way.
        base = [a for a in platform.defs.assets or [] if not set(a.keys) & keys]  # type: ignore[union-attr]
        platform.defs = dg.Definitions(
            assets=[*base, *ours],
            asset_checks=list(platform.defs.asset_checks or []),
            jobs=jobs,
            resources={
                **(platform.defs.resources or {}),
                "model_store": ModelStoreResource(root=str(platform.state / "models")),
                "bus": BusResource(url=server.url),
            },
        )
        platform.materialize(
            ["candles", "trades", "funding_rates"], partition_range=("2018-02-15", "2018-03-15")
        )
        platform.materialize("features", partition_range=("2018-03-01", "2018-03-14"))
        platform.defs.resolve_job_def("retrain_agents").execute_in_process(
            instance=platform.instance,
            run_config={"ops": {m: {"config": {}} for m in MODELS}},
        )
        platform.materialize(
            [*FORECASTS, "agent_scorecard", "combined_signal", "target_portfolio"],
            partition_range=DAYS,
        )
        yield platform, server.url


@pytest.fixture
def chain(chain_state: tuple[Platform, str]) -> Iterator[Chain]:
    platform, url = chain_state
    client = redis.Redis.from_url(url)
    client.delete(FILLS_STREAM)
    for name in TRADE_ASSETS:
        shutil.rmtree(platform.state / "warehouse" / name, ignore_errors=True)
    platform.instance = dg.DagsterInstance.ephemeral()
    yield Chain(platform, client)
    client.close()


def _fill(
    n: int, target: int, symbol: str, at: datetime, reference: float, side: Side = Side.BUY
) -> Fill:
    price = reference * (1.0005 if side is Side.BUY else 0.9995)  # 5 bps worse than reference
    return Fill(
        fill_id=f"paper:{n}", client_order_id=f"{target}-{symbol}", target_version=target,
        symbol=symbol, side=side, quantity=0.5, price=price, fee=price * 0.5 * 0.001,
        liquidity="taker", venue="paper", ts=at, reference_price=reference,
    )  # fmt: skip


def _trading_day_fills(chain: Chain) -> list[Fill]:
    """Fills of the published target (created 03-15 00:00) and of the stored one before it."""
    target = chain.target
    earlier = chain.stored_targets.filter(pl.col("version") < target.version)
    earlier_version = int(earlier["version"].max())  # type: ignore[arg-type]
    earlier_at: datetime = chain.target_rows(earlier_version)["created_at"][0]
    symbols = sorted(target.reference_prices)
    at = target.created_at
    ref = target.reference_prices
    return [
        _fill(1, earlier_version, symbols[0], earlier_at + timedelta(minutes=2), 100.0),
        _fill(2, target.version, symbols[0], at + timedelta(seconds=30), ref[symbols[0]]),
        _fill(3, target.version, symbols[1], at + timedelta(minutes=1), ref[symbols[1]], Side.SELL),
        # too late in the day for its horizon's candles (03-16 is not materialised)
        _fill(4, target.version, symbols[2], at + timedelta(hours=23, minutes=50), ref[symbols[2]]),
    ]


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    materialization = result.asset_materializations_for_node(asset)[0]
    return {k: v.value for k, v in materialization.metadata.items()}


def test_fills_land_in_the_partition_of_their_day_and_never_duplicate(chain: Chain) -> None:
    fills = _trading_day_fills(chain)
    chain.publish(*fills, fills[1])  # a fill published twice, as a crash and replay can do
    meta = _metadata(chain.run(["trade_fills"]), "trade_fills")

    assert chain.partition("trade_fills", "2018-03-14")["fill_id"].to_list() == ["paper:1"]
    first = chain.partition("trade_fills", "2018-03-15")
    assert first["fill_id"].to_list() == ["paper:2", "paper:3", "paper:4"]
    assert meta["dagster/row_count"] == 4 and meta["duplicates_dropped"] == 1
    assert meta["entries_read"] == 5 and meta["dead_letters"] == 0
    assert meta["fees"] == pytest.approx(sum(f.fee for f in fills))
    assert sum(meta["fills_per_symbol"].values()) == 4
    stored = first.row(0, named=True)
    assert stored["price"] == fills[1].price and stored["target_version"] == fills[1].target_version
    assert stored["ts"] == fills[1].ts and stored["side"] == "buy"

    chain.run(["trade_fills"])  # the same range again
    one_day = chain.run(["trade_fills"], partition_range=("2018-03-15", "2018-03-15"))
    assert _metadata(one_day, "trade_fills")["fills_outside_partitions"] == 1  # 03-14's fill
    assert chain.partition("trade_fills", "2018-03-15").equals(first)
    assert chain.partition("trade_fills", "2018-03-14")["fill_id"].to_list() == ["paper:1"]


def test_a_malformed_entry_is_counted_and_nothing_is_lost(chain: Chain) -> None:
    fills = _trading_day_fills(chain)
    chain.publish(fills[0], {"kind": "fill", "schema_version": "1", "payload": "{not json"})
    chain.publish(fills[1], encode(chain.target), *fills[2:])  # a target on the fills stream
    result = chain.run(["trade_fills"])

    assert result.success
    meta = _metadata(result, "trade_fills")
    assert meta["dead_letters"] == 2 and meta["dagster/row_count"] == len(fills)
    reasons = [d["reason"] for d in meta["dead_letter_entries"]]
    assert any("not JSON" in r for r in reasons) and any("target_portfolio" in r for r in reasons)


def test_the_cursor_lets_a_later_run_resume_without_rereading(chain: Chain) -> None:
    fills = _trading_day_fills(chain)
    ids = chain.publish(*fills[:3])
    first = _metadata(chain.run(["trade_fills"]), "trade_fills")
    assert first["last_stream_id"] == ids[-1] and first["start_cursor"] == "0-0"

    (later_id,) = chain.publish(fills[3])
    resumed = _metadata(chain.run(["trade_fills"], after=first["last_stream_id"]), "trade_fills")
    assert resumed["entries_read"] == 1 and resumed["new_fills"] == 1
    assert resumed["last_stream_id"] == later_id
    assert chain.partition("trade_fills", "2018-03-15")["fill_id"].to_list() == [
        "paper:2", "paper:3", "paper:4",
    ]  # fmt: skip

    # A run with nothing new reads nothing and keeps what is stored.
    idle = _metadata(chain.run(["trade_fills"], after=later_id), "trade_fills")
    assert idle["entries_read"] == 0 and idle["last_stream_id"] == later_id
    assert idle["dagster/row_count"] == 4


def test_feedback_joins_each_fill_to_its_target_models_and_forecasts(chain: Chain) -> None:
    fills = _trading_day_fills(chain)
    chain.publish(*fills)
    result = chain.run(TRADE_ASSETS)
    meta = _metadata(result, "trade_feedback")
    assert meta["unexplained_fills"] == 0 and meta["dagster/row_count"] == len(fills)

    feedback = pl.concat([chain.partition("trade_feedback", d) for d in FILL_DAYS])
    momentum = chain.platform.table("momentum_forecasts")
    combined = chain.platform.table("combined_signal")
    for fill in fills:
        row = feedback.filter(pl.col("fill_id") == fill.fill_id).row(0, named=True)
        target = chain.target_rows(fill.target_version)
        decided = target["ts"][0]
        assert row["ts"] == decided and row["target_created_at"] == target["created_at"][0]
        assert row["target_weight"] == target.filter(pl.col("symbol") == fill.symbol)["weight"][0]
        assert row["source_partition"] == decided.date().isoformat()
        forecast = momentum.filter((pl.col("ts") == decided) & (pl.col("symbol") == fill.symbol))
        assert row["momentum_model_version"] == forecast["model_version"][0]
        assert row["momentum_p_up"] == forecast["p_up"][0]
        signal = combined.filter((pl.col("ts") == decided) & (pl.col("symbol") == fill.symbol))
        assert row["combined_p_up"] == signal["p_up"][0]
        assert row["slippage_bps"] == pytest.approx(5.0)

    # The published target carries the same model versions and source partition.
    published = feedback.filter(pl.col("target_version") == chain.target.version)
    for versions in published["model_versions"]:
        assert dict(v.split("=", 1) for v in versions.split(",")) == chain.target.model_versions
    assert set(published["source_partition"]) == {chain.target.partitions["combined_signal"]}

    # Outcomes: known where every bar of the horizon is stored, null where it is not yet.
    known = feedback.filter(pl.col("fill_id") == "paper:2").row(0, named=True)
    candles = chain.platform.table("candles").filter(
        (pl.col("symbol") == known["symbol"]) & (pl.col("ts") < known["exit_ts"])
    )
    exit_close = candles.sort("ts")["close"][-1]
    assert known["forward_return"] == pytest.approx(math.log(exit_close / known["price"]))
    assert known["realised_return"] == pytest.approx(known["forward_return"] - 0.001)
    late = feedback.filter(pl.col("fill_id") == "paper:4").row(0, named=True)
    assert late["forward_return"] is None and late["realised_return"] is None


def test_the_sql_example_explains_an_order_end_to_end(chain: Chain) -> None:
    fills = _trading_day_fills(chain)
    chain.publish(*fills)
    chain.run(TRADE_ASSETS)
    docstring = trade_module.__doc__ or ""
    match = re.search(r"(SELECT f\.client_order_id.*?ORDER BY f\.fill_ts)", docstring, re.S)
    assert match is not None
    order = fills[2]
    sql = match.group(1).replace("the-order-id", order.client_order_id)

    explained = connect(chain.warehouse).sql(sql).pl()
    assert explained.height == 1
    row = explained.row(0, named=True)
    target = chain.target
    assert row["fill_id"] == order.fill_id and row["target_version"] == target.version
    assert row["decided_at"] == target.created_at
    assert row["target_weight"] == target.weights()[order.symbol]
    assert row["momentum_model"] == target.model_versions["momentum"]
    assert row["sentiment_model"] == target.model_versions["sentiment"]
    assert 0.0 <= row["momentum_p_up"] <= 1.0 and row["forward_return"] is not None
    assert row["slippage_bps"] == pytest.approx(5.0)


def test_the_outcome_is_unknown_across_a_gap() -> None:
    start = datetime(2018, 3, 15, tzinfo=UTC)
    step = timedelta(minutes=30)
    bars = [start + step * i for i in range(6) if i != 2]  # the third bar is missing
    candles = pl.DataFrame(
        {"ts": bars, "symbol": "BTC/USD", "close": [100.0 + i for i in range(len(bars))]},
        schema_overrides={"ts": pl.Datetime("ms", "UTC")},
    )
    before = _fill(1, 1, "BTC/USD", start + timedelta(minutes=5), 100.0)
    after = _fill(2, 1, "BTC/USD", start + step * 3 + timedelta(minutes=5), 100.0)
    outcomes = fill_outcomes(
        fills_frame([("1-0", before), ("2-0", after)]), candles, 3, 1_800_000
    ).sort("fill_id")
    assert outcomes["forward_return"][0] is None  # its window spans the missing bar
    assert outcomes["forward_return"][1] == pytest.approx(math.log(104.0 / after.price))
    assert outcomes["exit_ts"][1] == start + step * 6  # the close of its third bar
