"""The live loop end to end, with real processes: Redis, the execution service in paper mode
(``python -m sapphire_exec``), and the code location's sensors evaluated in process against a
real Dagster instance (``tests.sensors.loop``), over a replay clock running 120 times real time.

The session: catch-up, bootstrap training, live runs that publish targets, orders and fills,
the fills into the warehouse, a retrain triggered by that feedback, a halt through the control
API (no targets, no orders), and a resume (the next target is traded).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
import redis

from resources.model_store import ModelStoreResource
from sapphire_assets.agents.models import CHECK
from sapphire_assets.definitions import build_definitions
from sapphire_bus.server import RedisServer
from sapphire_domain.agents.specs import AGENTS
from sapphire_domain.messages import (
    FILLS_STREAM,
    ORDERS_STREAM,
    RISK_STREAM,
    TARGETS_STREAM,
    Fill,
    OrderEvent,
    OrderStatus,
    RiskEvent,
    TargetPortfolio,
    TradingState,
    decode,
)
from sapphire_market.replay import ReplayClockFile
from sapphire_warehouse.sql import connect
from sensors.jobs import LIVE_LOOP, RETRAIN_AGENTS
from tests.exec.conftest import ExecHarness
from tests.sensors.conftest import DATA_END_MS, SMALL_AGENTS, live_settings
from tests.sensors.loop import SensorLoop

pytestmark = pytest.mark.slow

SESSION_START = datetime(2019, 5, 20, 10, 5, tzinfo=UTC)
SPEED = 120.0  # a 30-minute candle every 15 s; a target stays valid 60 s
TOKEN = "test-control-token"  # the harness's SAPPHIRE_CONTROL_TOKEN
# The sensors in the order the daemon's threads would most often see them.
SENSORS = ("risk_events", "new_candles", "new_fills", "retrain_trigger")


def entries(client: redis.Redis, stream: str) -> list[tuple[str, object]]:
    return [(entry_id, decode(fields)) for entry_id, fields in client.xrange(stream)]


@dataclass
class LiveSession:
    loop: SensorLoop
    harness: ExecHarness
    state: Path
    client: redis.Redis
    log: list[str] = field(default_factory=list)

    def turn(self) -> None:
        """One pass over the sensors, executing what they request."""
        for name in SENSORS:
            for result in self.loop.step(name):
                self.log.append(f"{name}: {result.job_def.name} {result.success}")

    def run_until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out waiting for {what}; runs: {self.log[-12:]}\n"
                    f"service log:\n{self.harness.log_text()[-3000:]}"
                )
            self.turn()
            time.sleep(0.2)

    def runs(self, job: str, sensor: str | None = None) -> list[dg.ExecuteInProcessResult]:
        return [r for s, _, r in self.loop.results if r.job_def.name == job and sensor in (None, s)]

    def targets(self) -> dict[int, TargetPortfolio]:
        found = entries(self.client, TARGETS_STREAM)
        return {m.version: m for _, m in found if isinstance(m, TargetPortfolio)}

    def fills(self) -> list[tuple[str, Fill]]:
        return [(i, m) for i, m in entries(self.client, FILLS_STREAM) if isinstance(m, Fill)]

    def orders(self) -> list[tuple[str, OrderEvent]]:
        found = entries(self.client, ORDERS_STREAM)
        return [(i, m) for i, m in found if isinstance(m, OrderEvent)]

    def state_on_bus(self) -> TradingState | None:
        events = [m for _, m in entries(self.client, RISK_STREAM) if isinstance(m, RiskEvent)]
        return events[-1].state if events else None

    def traded(self, version: int) -> bool:
        return any(
            e.get("event") == "target_traded" and e.get("version") == version
            for e in self.harness.log_events()
        )


@pytest.fixture
def session(
    tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LiveSession]:
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    state = tmp_path / "state"
    state.mkdir()
    harness = ExecHarness(state, redis_server)  # the clock file is the one the assets read
    settings = live_settings(retrain_after_fills=1, min_live_hit_rate=0.0)
    defs = build_definitions(
        settings, "local", state, agents=replace(SMALL_AGENTS, target_valid_bars=4)
    )
    home = tmp_path / "dagster_home"
    home.mkdir()
    client = redis.Redis.from_url(redis_server.url)
    try:
        with dg.instance_for_test(temp_dir=str(home)) as instance:
            ReplayClockFile(harness.clock_file, default_ms=lambda: DATA_END_MS).start(
                int(SESSION_START.timestamp() * 1000), SPEED
            )
            harness.start()
            yield LiveSession(SensorLoop(defs, instance), harness, state, client)
    finally:
        harness.cleanup()
        client.close()


def test_the_live_loop_trades_feeds_back_retrains_and_obeys_a_halt(session: LiveSession):
    # 1. Catch-up, bootstrap, live runs: until fills are stored and a retrain has run.
    session.run_until(
        lambda: bool(session.runs(RETRAIN_AGENTS, sensor="retrain_trigger")),
        timeout=300,
        what="fills, their feedback and a retrain",
    )
    assert session.fills(), "the session produced no fills"
    assert len(session.runs("market_history")) == 1  # the whole history in one run

    # 2. Halt through the control API: no new targets, no new orders.
    halt = session.harness.control("POST", "/control/halt", TOKEN, json={"reason": "e2e drill"})
    assert halt.status_code == 200 and halt.json()["trading_state"] == "HALTED"
    session.harness.wait_for(
        lambda: session.state_on_bus() is TradingState.HALTED, what="the HALT risk event"
    )
    targets_at_halt, orders_at_halt = len(session.targets()), len(session.orders())
    fills_at_halt = len(session.fills())
    live_at_halt = len(session.runs(LIVE_LOOP))
    session.run_until(
        lambda: len(session.runs(LIVE_LOOP)) >= live_at_halt + 2,
        timeout=120,
        what="two live runs while HALTED",
    )
    halted_runs = session.runs(LIVE_LOOP)[live_at_halt:]
    assert all(r.success for r in halted_runs)
    for run in halted_runs:
        metadata = run.asset_materializations_for_node("target_portfolio")[0].metadata
        assert metadata["trading_state"].value == "HALTED"
        assert "not published: trading is HALTED (MANUAL_HALT" in metadata["published_entry"].value
    assert len(session.targets()) == targets_at_halt
    assert len(session.orders()) == orders_at_halt and len(session.fills()) == fills_at_halt
    observed = session.loop.instance.fetch_observations(dg.AssetKey("execution_state"), limit=5)
    assert observed.records[0].asset_observation.metadata["state"].value == "HALTED"

    # 3. Resume: the next target is published and traded.
    resume = session.harness.control("POST", "/control/resume", TOKEN)
    assert resume.status_code == 200 and resume.json()["trading_state"] == "ACTIVE"
    session.harness.wait_for(
        lambda: session.state_on_bus() is TradingState.ACTIVE, what="the resume risk event"
    )
    session.run_until(
        lambda: len(session.targets()) > targets_at_halt and session.traded(max(session.targets())),
        timeout=120,
        what="a target after the resume, traded",
    )

    # 4. Every fill into the warehouse: the fills sensor until it has nothing left.
    session.harness.wait_for(session.harness.drained, what="the service to finish its targets")
    every_fill = {f.fill_id: f for _, f in session.fills()}
    session.run_until(lambda: stored_fill_ids(session.state) == set(every_fill), timeout=120,
                      what="every fill in trade_fills")  # fmt: skip

    assert_orders_came_from_valid_unexpired_targets(session)
    assert_every_fill_has_its_provenance(session, every_fill)
    assert_the_retrain_promoted_or_rejected_by_the_check(session)


def stored_fill_ids(state: Path) -> set[str]:
    if not (state / "warehouse" / "trade_feedback").is_dir():
        return set()
    con = connect(state / "warehouse")
    fills = {r[0] for r in con.execute("SELECT fill_id FROM trade_fills").fetchall()}
    feedback = {r[0] for r in con.execute("SELECT fill_id FROM trade_feedback").fetchall()}
    return fills & feedback


def assert_orders_came_from_valid_unexpired_targets(session: LiveSession) -> None:
    targets = session.targets()
    placed = [o for _, o in session.orders() if o.status is not OrderStatus.DENIED]
    assert placed
    for order in placed:
        target = targets[order.target_version]
        assert target.created_at <= order.ts < target.valid_until, order
    for _, fill in session.fills():
        target = targets[fill.target_version]
        assert target.created_at <= fill.ts < target.valid_until, fill


def assert_every_fill_has_its_provenance(session: LiveSession, fills: dict[str, Fill]) -> None:
    targets = session.targets()
    con = connect(session.state / "warehouse")
    columns = ", ".join(f"{a}_model_version" for a in sorted(AGENTS))
    rows = con.execute(
        "SELECT fill_id, target_version, target_created_at, target_valid_until, explained, "
        f"model_versions, {columns} FROM trade_feedback"
    ).fetchall()
    assert {r[0] for r in rows} == set(fills)
    for fill_id, version, created, valid_until, explained, versions, *per_agent in rows:
        target = targets[version]
        assert explained and version == fills[fill_id].target_version
        assert created == target.created_at and valid_until == target.valid_until
        recorded = dict(v.split("=", 1) for v in versions.split(",") if v)
        for agent, model in zip(sorted(AGENTS), per_agent, strict=True):
            assert model == recorded[agent]
            # The model the target was decided with, even when a retrain promoted another since
            # and the day was forecast again (a challenger serves only from its training time).
            assert model == target.model_versions[agent], (agent, model, target.model_versions)


def assert_the_retrain_promoted_or_rejected_by_the_check(session: LiveSession) -> None:
    store = ModelStoreResource(root=str(session.state / "models")).store()
    (retrain, *_) = session.runs(RETRAIN_AGENTS, sensor="retrain_trigger")
    checks = {
        e.asset_key.path[0].removesuffix("_model"): e for e in retrain.get_asset_check_evaluations()
    }
    assert set(checks) == set(AGENTS)
    for agent, evaluation in checks.items():
        assert evaluation.check_name == CHECK
        (materialization,) = retrain.asset_materializations_for_node(f"{agent}_model")
        challenger = materialization.metadata["challenger"].value
        manifest = store.manifest(agent, challenger)
        if evaluation.passed:
            assert challenger in store.lineage(agent) and manifest["status"] in (
                "champion",
                "retired",
            )
        else:
            assert challenger not in store.lineage(agent) and manifest["status"] == "retired"
        assert "log-loss" in (evaluation.description or "")
