"""``sapphire demo``: the whole loop once, headless and finite, in a state folder of its own.

1. backfill candles, trades, funding and features for ``--history-days`` before the session;
2. train every agent's model (``retrain_agents``; the first challenger becomes champion);
3. backtest: forecasts, combined signal and target portfolio for ``--backtest-days``, out of
   sample, and ``strategy_performance`` over them;
4. paper-trade ``--days`` simulated days: a real redis-server and the real execution service
   (paper venue) on a replay clock at ``--speed``. The clock runs through each day and holds at
   its close while that day's run computes and publishes the target, so the target is still
   valid when it arrives (how long the live loop takes is ``bench/bench_live_loop.py``'s
   question). Then the market runs on past the holdout and embargo of the next retrain, so the
   session's outcomes are known before the challengers' training cutoff;
5. feed the fills back: ``trade_fills`` and ``trade_feedback``;
6. retrain with that feedback; the blocking check promotes each challenger or rejects it.

Every run is a real Dagster run in the instance under ``<state>/dagster_home``, so the UI can
show them afterwards. The state folder (``var/demo`` by default) is wiped at each start, and
only a folder the demo made (it holds a ``.sapphire-demo`` marker) is ever wiped.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import shutil
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import redis
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from sapphire_assets.agents.settings import AgentSettings
from sapphire_assets.partitions import lookback_days as days
from sapphire_bus.reader import START, read_after
from sapphire_bus.server import RedisServer, free_port
from sapphire_cli import paper_exec
from sapphire_cli.clock import run_until, utc
from sapphire_cli.run import ensure_dagster_home
from sapphire_cli.supervisor import Child, ChildSpec, log_tail
from sapphire_domain.agents.specs import AGENTS
from sapphire_domain.errors import ConfigError, SapphireError
from sapphire_domain.features import FeatureParams, warmup_bars
from sapphire_domain.messages import (
    FILLS_STREAM,
    ORDERS_STREAM,
    TARGETS_STREAM,
    Fill,
    OrderEvent,
    OrderStatus,
)
from sapphire_domain.settings import PROJECT_ROOT, Settings, load_settings

MARKER = ".sapphire-demo"
DAY = timedelta(days=1)
MARKET = ["candles", "trades", "funding_rates"]
FORECASTS = [f"{name}_forecasts" for name in AGENTS]
SIGNAL = [*FORECASTS, "agent_scorecard", "combined_signal", "target_portfolio"]
MODELS = [f"{name}_model" for name in AGENTS]
# Run logs go to the instance (the UI shows them); the terminal keeps the progress bars.
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


class DemoError(SapphireError):
    """A step of the demo failed; the message says which and where to look."""


@dataclass(frozen=True)
class DemoPlan:
    state: Path
    session_start: date
    days: int
    history_days: int
    backtest_days: int
    speed: float

    @property
    def history_start(self) -> date:
        return self.session_start - timedelta(days=self.history_days)


def lookback_days() -> int:
    """Days of candles the features read before their first partition."""
    return days(warmup_bars(FeatureParams()), "30m")


def outcome_days() -> int:
    """Days the market must run on after the session for its outcomes to fall before the next
    challenger's training cutoff (its holdout and embargo stay unseen), plus the label."""
    wf = AgentSettings().walk_forward
    return math.ceil((wf.holdout + wf.embargo) / DAY) + 2


def check_plan(plan: DemoPlan, settings: Settings) -> None:
    universe = settings.universe
    if universe.exchange != "replay":
        raise ConfigError(
            f"the demo replays the bundled data; universe.exchange is {universe.exchange!r}"
        )
    if plan.days < 1 or plan.backtest_days < 1 or plan.speed <= 0:
        raise ConfigError("--days and --backtest-days must be at least 1, --speed positive")
    first = plan.history_start - timedelta(days=lookback_days())
    last = plan.session_start + timedelta(days=plan.days + outcome_days())
    if first < universe.start or (universe.end is not None and last >= universe.end):
        raise ConfigError(
            f"the demo needs data from {first} to {last}, outside the universe "
            f"{universe.start} .. {universe.end}: move --session-start or shorten the windows"
        )
    # The first champion forecasts only after its holdout began (cutoff + embargo).
    holdout_days = AgentSettings().walk_forward.holdout.days
    if plan.backtest_days >= holdout_days or plan.history_days < holdout_days + 6:
        raise ConfigError(
            f"--backtest-days must be under {holdout_days} (the first model's holdout, the "
            f"only days it has not trained on) and --history-days at least {holdout_days + 6}"
        )


def prepare_state(state: Path) -> None:
    """An empty state folder, wiping only one the demo made before."""
    if state.exists() and any(state.iterdir()):
        if not (state / MARKER).exists():
            raise ConfigError(
                f"{state} is not empty and was not made by the demo (no {MARKER} in it): "
                "choose another --state-dir; the demo only wipes its own folders"
            )
        shutil.rmtree(state)
    state.mkdir(parents=True, exist_ok=True)
    (state / MARKER).write_text("made by `sapphire demo`; wiped at its next start\n")


class DemoPlatform:
    """The real code location over one state folder, with a persistent Dagster instance."""

    def __init__(self, state: Path, settings: Settings, redis_url: str) -> None:
        from resources.environments import LOCAL
        from sapphire_assets.definitions import build_definitions

        os.environ["REDIS_URL"] = redis_url  # the bus resource of the local environment reads it
        self.state = state
        self.defs = build_definitions(settings, LOCAL, state)
        self.home = ensure_dagster_home(state / "dagster_home")
        self.instance = dg.DagsterInstance.from_config(str(self.home))
        self.job = self.defs.resolve_implicit_global_asset_job_def()

    def materialize(
        self,
        progress: Progress,
        label: str,
        assets: Sequence[str],
        first: date,
        last: date,
        run_config: dict[str, Any] | None = None,
    ) -> dg.ExecuteInProcessResult:
        """One run of ``assets`` over the days ``first`` .. ``last``; raises if it fails."""
        tags = {
            "dagster/asset_partition_range_start": first.isoformat(),
            "dagster/asset_partition_range_end": last.isoformat(),
            "sapphire/demo": label,
        }
        with self._watch(progress, label, len(assets)) as run_id:
            result = self.job.execute_in_process(
                instance=self.instance, asset_selection=[dg.AssetKey(a) for a in assets],
                tags=tags, run_id=run_id, run_config={**QUIET, **(run_config or {})},
                raise_on_error=False,
            )  # fmt: skip
        if not result.success:
            raise DemoError(f"{label}: the run {run_id} failed: {_failure(result)}")
        return result

    def retrain(self, progress: Progress, label: str) -> dg.ExecuteInProcessResult:
        """``retrain_agents``; a rejected challenger fails its blocking check, which is an
        outcome here, not an error."""
        job = self.defs.resolve_job_def("retrain_agents")
        with self._watch(progress, label, len(MODELS)) as run_id:
            result = job.execute_in_process(
                instance=self.instance, run_id=run_id, raise_on_error=False,
                run_config={**QUIET, "ops": {m: {"config": {}} for m in MODELS}},
                tags={"sapphire/demo": label},
            )  # fmt: skip
        trained = {e.asset_key.to_user_string() for e in result.get_asset_check_evaluations()}
        if trained != set(MODELS):
            raise DemoError(f"{label}: the run {run_id} failed: {_failure(result)}")
        return result

    def models(self) -> dict[str, str]:
        store = self.defs.resources["model_store"].store()  # type: ignore[index]
        return {name: store.champion(name) or "" for name in AGENTS}

    @contextmanager
    def _watch(self, progress: Progress, label: str, total: int) -> Iterator[str]:
        """A progress bar over the assets the run has materialised, polled from the instance."""
        run_id = str(uuid.uuid4())
        task = progress.add_task(label, total=total)
        done = threading.Event()

        def poll() -> None:
            while not done.wait(0.5):
                records = self.instance.get_records_for_run(
                    run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
                ).records
                keys = {r.asset_key for r in records if r.asset_key is not None}
                progress.update(task, completed=len(keys))

        watcher = threading.Thread(target=poll, daemon=True)
        watcher.start()
        try:
            yield run_id
        finally:
            done.set()
            watcher.join()
            progress.update(task, completed=total)


def _failure(result: dg.ExecuteInProcessResult) -> str:
    """The first failed step and the innermost error message behind it."""
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data is not None:
            error = event.step_failure_data.error
            while error is not None and error.cause is not None:
                error = error.cause
            message = error.message.strip() if error is not None else "unknown error"
            return f"step {event.step_key}: {message}"
    return "see the run in the Dagster UI"


@dataclass
class Session:
    """The paper-trading session: the execution service process and what it did."""

    plan: DemoPlan
    client: redis.Redis
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    port: int = field(default_factory=free_port)
    child: Child | None = None
    group: str = "sapphire-exec"
    initial_cash: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, redis_url: str, timeframe: str) -> None:
        from sapphire_exec.config import load_exec_settings

        state = self.plan.state
        config = paper_exec.write_config(
            paper_exec.DEFAULT_CONFIG, state / "exec" / "demo.yaml", self.port, timeframe
        )
        settings = load_exec_settings(config, environ={"SAPPHIRE_STATE_DIR": str(state)})
        self.group, self.initial_cash = settings.group, settings.venue.paper.initial_cash
        env = {
            **os.environ, "REDIS_URL": redis_url, "SAPPHIRE_STATE_DIR": str(state),
            paper_exec.TOKEN_ENV: self.token, "PYTHONUNBUFFERED": "1",
        }  # fmt: skip
        self.child = Child(
            ChildSpec("exec", paper_exec.command(config), env, state / "logs" / "exec.log")
        )
        self.child.start()
        self._wait(lambda: paper_exec.healthy(self.url), 180, "the execution service to be healthy")

    def wait_drained(self, timeout_s: float = 120) -> None:
        """Every target on the stream delivered to the service and acknowledged."""

        def drained() -> bool:
            last = self.client.xrevrange(TARGETS_STREAM, count=1)
            if not last:
                return True
            groups = self.client.xinfo_groups(TARGETS_STREAM)
            group = next((g for g in groups if _text(g["name"]) == self.group), None)
            return (
                group is not None
                and int(group["pending"]) == 0
                and _text(group["last-delivered-id"]) == _text(last[0][0])
            )

        self._wait(drained, timeout_s, "the execution service to take the target")

    def _wait(self, condition: Any, timeout_s: float, what: str) -> None:
        assert self.child is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.child.poll() is not None:
                tail = "\n".join(log_tail(self.child.spec.log, 8))
                raise DemoError(f"the execution service exited while waiting for {what}:\n{tail}")
            if condition():
                return
            time.sleep(0.1)
        raise DemoError(f"timed out after {timeout_s:.0f} s waiting for {what}")

    def status(self) -> dict[str, Any]:
        time.sleep(1.5)  # one tick of the service marks the book at the held clock
        return paper_exec.status(self.url, self.token)

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop(20.0)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def stream_messages(client: redis.Redis, stream: str) -> list[Any]:
    messages, cursor = [], START
    while True:
        batch = read_after(client, cursor, stream=stream)
        messages += [m for _, m in batch.messages]
        if batch.cursor == cursor:
            return messages
        cursor = batch.cursor


def warehouse_table(state: Path, name: str) -> pl.DataFrame:
    return pl.read_parquet(state / "warehouse" / name / "*.parquet")


def _ms(day: date) -> int:
    return int(datetime.combine(day, datetime.min.time(), tzinfo=UTC).timestamp() * 1000)


def paper_session(
    platform: DemoPlatform, session: Session, progress: Progress, plan: DemoPlan
) -> None:
    """Steps 4: the clock runs through each day, holds at its close, the day's run publishes
    the target and the service trades it."""
    clock_path = plan.state / "replay_clock.json"
    hour = 3_600_000
    task = progress.add_task("4 paper session (simulated hours)", total=plan.days * 24)
    for index in range(plan.days):
        day = plan.session_start + timedelta(days=index)
        close_ms = _ms(day + DAY)
        clock = run_until(clock_path, _ms(day), plan.speed, close_ms)
        while (now := clock.now_ms(time.time_ns() // 1_000_000)) < close_ms:
            fills = session.client.xlen(FILLS_STREAM)
            progress.update(task, completed=index * 24 + (now - _ms(day)) // hour,
                            description=f"4 paper session: {utc(now):%Y-%m-%d %H:%M}, "
                            f"{fills} fills")  # fmt: skip
            time.sleep(0.2)
        progress.update(task, completed=(index + 1) * 24)
        platform.materialize(progress, f"4 day {day}: market data to target", [*MARKET,
                             "features", *SIGNAL], day, day)  # fmt: skip
        session.wait_drained()


def run_demo(args: argparse.Namespace, console: Console) -> int:
    settings = load_settings(os.environ.get("SAPPHIRE_CONFIG"))
    plan = DemoPlan(
        state=Path(args.state_dir).resolve(),
        session_start=args.session_start,
        days=args.days,
        history_days=args.history_days,
        backtest_days=args.backtest_days,
        speed=args.speed,
    )
    check_plan(plan, settings)
    prepare_state(plan.state)
    started = time.monotonic()
    e = plan.session_start
    console.print(
        f"[bold]Sapphire demo[/bold] in {plan.state}: {plan.history_days} days of history, "
        f"backtest {plan.backtest_days} days, paper-trade {plan.days} days from {e} at "
        f"{plan.speed:g}x"
    )
    with RedisServer(plan.state / "redis", port=free_port()) as server:
        platform = DemoPlatform(plan.state, settings, server.url)
        client = redis.Redis.from_url(server.url)
        session = Session(plan, client)
        columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                   MofNCompleteColumn(), TimeElapsedColumn())  # fmt: skip
        try:
            with Progress(*columns, console=console) as progress:
                market_from = plan.history_start - timedelta(days=lookback_days())
                platform.materialize(
                    progress, "1 backfill market data", MARKET, market_from, e - DAY
                )
                platform.materialize(progress, "1 backfill features", ["features"],
                                     plan.history_start, e - DAY)  # fmt: skip
                run_until(plan.state / "replay_clock.json", _ms(e), 0.0, _ms(e))
                platform.retrain(progress, "2 train the agents")
                before = platform.models()
                backtest_from = e - timedelta(days=plan.backtest_days)
                platform.materialize(progress, "3 backtest: forecasts to targets", SIGNAL,
                                     backtest_from, e - DAY)  # fmt: skip
                platform.materialize(progress, "3 backtest: strategy_performance",
                                     ["strategy_performance"], backtest_from, e - DAY)  # fmt: skip
                session.start(server.url, settings.universe.timeframe)
                session.wait_drained()  # the target decided at the session's start
                paper_session(platform, session, progress, plan)
                status = session.status()
                session.stop()
                after_session = e + timedelta(days=plan.days)
                ends = after_session + timedelta(days=outcome_days())
                run_until(plan.state / "replay_clock.json", _ms(ends), 0.0, _ms(ends))
                platform.materialize(progress, "4 the market runs on", MARKET, after_session,
                                     ends - DAY)  # fmt: skip
                platform.materialize(progress, "4 the market runs on: features", ["features"],
                                     after_session, ends - DAY)  # fmt: skip
                platform.materialize(
                    progress, "5 feed the fills back", ["trade_fills", "trade_feedback"], e,
                    after_session, run_config={"ops": {"trade_fills": {"config": {}}}},
                )  # fmt: skip
                retrain = platform.retrain(progress, "6 retrain with the feedback")
        except (SapphireError, dg.DagsterError) as error:
            console.print(f"[bold red]demo failed:[/bold red] {error}")
            console.print(f"logs and state: {plan.state}")
            return 1
        finally:
            session.stop()
        summary(console, plan, platform, session, status, before, retrain,
                backtest_from, time.monotonic() - started)  # fmt: skip
        client.close()
    return 0


def summary(
    console: Console,
    plan: DemoPlan,
    platform: DemoPlatform,
    session: Session,
    status: dict[str, Any],
    before: dict[str, str],
    retrain: dg.ExecuteInProcessResult,
    backtest_from: date,
    elapsed_s: float,
) -> dict[str, Any]:
    """The figures of the demo, printed as tables and written to ``<state>/summary.json``."""
    fills = [m for m in stream_messages(session.client, FILLS_STREAM) if isinstance(m, Fill)]
    events = [
        m for m in stream_messages(session.client, ORDERS_STREAM) if isinstance(m, OrderEvent)
    ]
    denied = [e for e in events if e.status == OrderStatus.DENIED]
    feedback = warehouse_table(plan.state, "trade_feedback")
    performance = warehouse_table(plan.state, "strategy_performance")
    returns = performance.group_by("strategy").agg(
        ((pl.col("total_return") + 1).product() - 1).alias("r")
    ).sort("strategy")  # fmt: skip
    checks = {e.asset_key.to_user_string(): e for e in retrain.get_asset_check_evaluations()}
    models = {}
    for name in AGENTS:
        meta = retrain.asset_materializations_for_node(f"{name}_model")[0].metadata
        models[name] = {
            "before": before[name],
            "challenger": str(meta["challenger"].value),
            "after": str(meta["champion"].value),
            "promoted": bool(checks[f"{name}_model"].passed),
            "trade_feedback_rows": int(str(meta["trade_feedback_rows"].value)),
        }
    figures: dict[str, Any] = {
        "backtest": {
            "days": [backtest_from.isoformat(), (plan.session_start - DAY).isoformat()],
            "total_return": {str(r["strategy"]): r["r"] for r in returns.iter_rows(named=True)},
        },
        "session": {"start": plan.session_start.isoformat(), "days": plan.days},
        "targets_published": session.client.xlen(TARGETS_STREAM),
        "pnl": float(status["equity"]) - session.initial_cash,
        "equity": float(status["equity"]),
        "trading_state": status["trading_state"],
        "fills": len(fills),
        "orders": len({e.client_order_id for e in events if e.status != OrderStatus.DENIED}),
        "denials": len(denied),
        "denial_reasons": sorted({str(d.reason) for d in denied}),
        "trade_feedback_rows": feedback.height,
        "trade_feedback_with_outcome": feedback.filter(
            pl.col("realised_return").is_not_null()
        ).height,
        "models": models,
        "wall_s": round(elapsed_s, 1),
    }
    (plan.state / "summary.json").write_text(json.dumps(figures, indent=2))
    show(console, figures)
    console.print(
        f"Figures in {plan.state / 'summary.json'}. Browse these runs in the UI: "
        f"DAGSTER_HOME={platform.home} SAPPHIRE_STATE_DIR={plan.state} "
        f"{PROJECT_ROOT / '.venv/bin/dagster-webserver'} -w workspace.yaml",
        soft_wrap=True,
    )
    return figures


def show(console: Console, figures: dict[str, Any]) -> None:
    wide = Console(file=console.file, width=max(console.width, 120))
    table = Table(title="Sapphire demo", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    backtest = figures["backtest"]
    table.add_row("backtest", f"{backtest['days'][0]} .. {backtest['days'][1]}: " + ", ".join(
        f"{name} {r:+.2%}" for name, r in backtest["total_return"].items()))  # fmt: skip
    session = figures["session"]
    table.add_row("paper session", f"{session['days']} days from {session['start']}, "
                  f"{figures['targets_published']} targets published")  # fmt: skip
    table.add_row("PnL", f"{figures['pnl']:+,.2f} (equity {figures['equity']:,.2f}, "
                  f"state {figures['trading_state']})")  # fmt: skip
    table.add_row("trades", f"{figures['fills']} fills of {figures['orders']} orders")
    reasons = figures["denial_reasons"]
    table.add_row(
        "denials", f"{figures['denials']}" + (f" ({', '.join(reasons)})" if reasons else "")
    )
    table.add_row("trade feedback", f"{figures['trade_feedback_rows']} rows in the warehouse, "
                  f"{figures['trade_feedback_with_outcome']} with outcomes")  # fmt: skip
    table.add_row("wall time", f"{figures['wall_s']:.0f} s")
    wide.print(table)
    models = Table(title="Models: the champion before and after the retrain")
    for column in ("agent", "before", "challenger", "after", "decision", "feedback rows"):
        models.add_column(column, no_wrap=True)
    for name, model in figures["models"].items():
        models.add_row(
            name, _short(name, model["before"]), _short(name, model["challenger"]),
            _short(name, model["after"]), "promoted" if model["promoted"] else "rejected",
            str(model["trade_feedback_rows"]),
        )  # fmt: skip
    wide.print(models)


def _short(agent: str, version: str) -> str:
    return version.removeprefix(f"{agent}-")
