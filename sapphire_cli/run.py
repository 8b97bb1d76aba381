"""``sapphire run``: the whole platform as supervised processes, on one replay clock.

The embedded default starts ``redis-server`` (the bus), the Dagster webserver (the UI), the
Dagster daemon (sensors, schedules, the run queue) and the execution service in paper mode,
each a separate process in its own process group, so a crash of any one is seen and it is
restarted (see ``supervisor``). Production (``SAPPHIRE_ENV=production``, or ``REDIS_URL`` set)
uses the given ``REDIS_URL`` and starts no Redis.

The replay clock starts at ``--start`` (else ``replay.start``, else the universe's first day)
at ``--speed`` (else ``replay.speed``). Stopping holds the clock where it stands, and the next
``sapphire run`` resumes from there unless ``--start`` says otherwise.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import redis
from rich.console import Console
from rich.table import Table

from sapphire_bus.server import LOCAL_PORT
from sapphire_cli import paper_exec, preflight
from sapphire_cli.clock import clock_file, hold, start_or_resume, utc
from sapphire_cli.supervisor import ChildSpec, CrashPolicy, Supervisor
from sapphire_domain.errors import ConfigError
from sapphire_domain.settings import PROJECT_ROOT, Settings, load_settings

UI_PORT, METRICS_PORT = 3000, 9464
WORKSPACE = PROJECT_ROOT / "workspace.yaml"
BIN = Path(sys.executable).parent  # the environment's console scripts
EXIT_PREFLIGHT = 2


def ensure_dagster_home(home: Path) -> Path:
    """``home`` with a link to the project's ``dagster.yaml`` (the instance configuration) and
    the instance's storage created: the webserver and the daemon start together, and on a new
    home both would create the same SQLite schema and one of them would fail."""
    import dagster as dg

    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.symlink_to(PROJECT_ROOT / "dagster.yaml")
    dg.DagsterInstance.from_config(str(home)).dispose()
    return home


def default_dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME", PROJECT_ROOT / "var" / "dagster_home"))


def env_port(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ConfigError(f"{name}={raw!r} is not a port number (1-65535)")
    return int(raw)


@dataclass(frozen=True)
class RunPlan:
    """Everything ``sapphire run`` starts, decided before anything starts."""

    settings: Settings
    host: str
    ui_port: int
    metrics_port: int
    redis_port: int
    given_redis_url: str | None  # production: the bus to use; None starts the embedded one
    production: bool
    state: Path
    home: Path
    exec_config: Path
    speed: float
    start: datetime | None
    policy: CrashPolicy

    @property
    def redis_url(self) -> str:
        return self.given_redis_url or f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def ui_url(self) -> str:
        return f"http://{self.host}:{self.ui_port}"

    @property
    def exec_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    @property
    def replay(self) -> bool:
        return self.settings.universe.exchange == "replay"

    @property
    def logs(self) -> Path:
        return self.state / "logs"


def plan_from(args: argparse.Namespace) -> RunPlan:
    from resources.environments import PRODUCTION, current_environment, state_dir

    settings = load_settings(os.environ.get("SAPPHIRE_CONFIG"))
    if args.speed is not None and args.speed < 0:
        raise ConfigError(f"--speed must not be negative, got {args.speed}")
    given = os.environ.get("REDIS_URL") or None
    return RunPlan(
        settings=settings,
        host=args.host,
        ui_port=args.port or env_port("SAPPHIRE_UI_PORT", UI_PORT),
        metrics_port=args.metrics_port or env_port("SAPPHIRE_METRICS_PORT", METRICS_PORT),
        redis_port=args.redis_port or env_port("SAPPHIRE_REDIS_PORT", LOCAL_PORT),
        given_redis_url=given,
        production=current_environment() == PRODUCTION or given is not None,
        state=state_dir().resolve(),
        home=default_dagster_home().resolve(),
        exec_config=args.exec_config or paper_exec.DEFAULT_CONFIG,
        speed=args.speed if args.speed is not None else settings.replay.speed,
        start=args.start,
        policy=CrashPolicy(max_crashes=args.max_crashes, window_s=args.crash_window),
    )


def check(plan: RunPlan) -> list[str]:
    """Every problem that would stop the platform, each saying what to do."""
    ports = [
        preflight.Port(plan.ui_port, "the Dagster UI", "--port", "SAPPHIRE_UI_PORT"),
        preflight.Port(plan.metrics_port, "the execution service's metrics", "--metrics-port",
                       "SAPPHIRE_METRICS_PORT"),
    ]  # fmt: skip
    if plan.given_redis_url is None:
        ports.append(
            preflight.Port(plan.redis_port, "the bus (redis-server)", "--redis-port",
                           "SAPPHIRE_REDIS_PORT")
        )  # fmt: skip
    problems = preflight.collect(
        [
            lambda: preflight.writable_folder(plan.state, "the state folder", "SAPPHIRE_STATE_DIR"),
            lambda: _dagster_home_problem(plan.home),
            lambda: preflight.busy_ports(ports, plan.host),
            lambda: None if plan.given_redis_url else preflight.redis_binary(),
            lambda: preflight.executables([BIN / "dagster-webserver", BIN / "dagster-daemon"]),
        ]
    )
    if plan.production and plan.given_redis_url is None:
        problems.append(
            "SAPPHIRE_ENV=production needs the bus in REDIS_URL (redis://host:port/db); "
            "set it, or unset SAPPHIRE_ENV to run the embedded default"
        )
    if not problems:
        problems += _exec_config_problem(plan)
    return problems


def _dagster_home_problem(home: Path) -> str | None:
    problem = preflight.writable_folder(home, "DAGSTER_HOME", "DAGSTER_HOME")
    if problem:
        return problem
    import dagster as dg

    try:
        ensure_dagster_home(home)
    except OSError as error:
        return (
            f"DAGSTER_HOME {home} has no usable dagster.yaml ({error.strerror or error}): "
            "remove the broken file there, or point DAGSTER_HOME at another folder"
        )
    except dg.DagsterError as error:
        return (
            f"DAGSTER_HOME {home}: its Dagster instance cannot be opened ({error}); fix its "
            "dagster.yaml or point DAGSTER_HOME at another folder"
        )
    return None


def _exec_config_problem(plan: RunPlan) -> list[str]:
    from sapphire_exec.config import load_exec_settings

    try:
        written = _exec_config(plan)
        load_exec_settings(written, environ={"SAPPHIRE_STATE_DIR": str(plan.state)})
    except ConfigError as error:
        return [f"{error} (pass another file with --exec-config)"]
    return []


def _exec_config(plan: RunPlan) -> Path:
    return paper_exec.write_config(
        plan.exec_config, plan.state / "exec" / "supervised.yaml", plan.metrics_port,
        plan.settings.universe.timeframe,
    )  # fmt: skip


def children(plan: RunPlan, token: str) -> list[ChildSpec]:
    env = {
        **os.environ,
        "DAGSTER_HOME": str(plan.home),
        "SAPPHIRE_STATE_DIR": str(plan.state),
        "REDIS_URL": plan.redis_url,
        "PYTHONUNBUFFERED": "1",
    }
    specs = []
    if plan.given_redis_url is None:
        specs.append(
            ChildSpec(
                name="redis",
                command=[sys.executable, "-m", "sapphire_cli.bus_server",
                         "--dir", str(plan.state / "redis"), "--port", str(plan.redis_port)],
                env=env, log=plan.logs / "redis.log",
                ready=lambda: bool(redis.Redis.from_url(plan.redis_url, socket_timeout=1).ping()),
                where=plan.redis_url,
                stop_order=1,  # last: the others flush to the bus as they stop
            )
        )  # fmt: skip
    specs += [
        ChildSpec(
            name="dagster-webserver",
            command=[str(BIN / "dagster-webserver"), "-w", str(WORKSPACE),
                     "-h", plan.host, "-p", str(plan.ui_port)],
            env=env, log=plan.logs / "dagster-webserver.log",
            ready=lambda: httpx.get(f"{plan.ui_url}/server_info", timeout=1).status_code == 200,
            where=plan.ui_url,
        ),
        ChildSpec(
            name="dagster-daemon",
            command=[str(BIN / "dagster-daemon"), "run", "-w", str(WORKSPACE)],
            env=env, log=plan.logs / "dagster-daemon.log",
            where="sensors, schedules and the run queue",
        ),
        ChildSpec(
            name="exec",
            command=paper_exec.command(_exec_config(plan)),
            env={**env, paper_exec.TOKEN_ENV: token}, log=plan.logs / "exec.log",
            ready=lambda: paper_exec.healthy(plan.exec_url),
            where=f"{plan.exec_url}/metrics (paper venue)",
        ),
    ]  # fmt: skip
    return specs


def banner(plan: RunPlan, console: Console, clock_line: str) -> None:
    table = Table.grid(padding=(0, 2))
    table.add_row("Dagster UI", f"[cyan]{plan.ui_url}[/cyan]")
    table.add_row("metrics", f"[cyan]{plan.exec_url}/metrics[/cyan]  (health: /healthz)")
    table.add_row("bus", plan.redis_url if plan.given_redis_url is None else "REDIS_URL (given)")
    table.add_row("replay clock", clock_line)
    table.add_row("logs", str(plan.logs))
    table.add_row("DAGSTER_HOME", str(plan.home))
    given_token = os.environ.get(paper_exec.TOKEN_ENV)
    token = "SAPPHIRE_CONTROL_TOKEN" if given_token else str(paper_exec.token_file(plan.state))
    table.add_row("control token", token)
    mode = "production" if plan.production else "embedded default"
    console.print(f"[bold]Sapphire[/bold] ({mode}); Ctrl-C stops everything.")
    console.print(table)


def run(args: argparse.Namespace, console: Console) -> int:
    plan = plan_from(args)
    problems = check(plan)
    if problems:
        console.print("[bold red]sapphire run cannot start:[/bold red]")
        for problem in problems:
            # soft_wrap: no line breaks inside a path someone will copy
            console.print(f"  [red]•[/red] {problem}", soft_wrap=True)
        return EXIT_PREFLIGHT
    clock = clock_file(plan.state) if plan.replay else None
    clock_line = "none (live exchange)"
    if clock is not None:
        state, resumed = start_or_resume(clock, plan.settings, plan.speed, plan.start)
        how = "resumed" if resumed else "started"
        pace = f"a simulated day every {86_400 / plan.speed:.0f} s" if plan.speed else "held"
        clock_line = (
            f"{how} at {utc(state.anchor_sim_ms):%Y-%m-%d %H:%M} UTC, {plan.speed:g}x ({pace})"
        )
    banner(plan, console, clock_line)
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}

    def all_ready() -> None:
        console.print(f"[bold green]Sapphire is up[/bold green]: open {plan.ui_url}")

    supervisor = Supervisor(
        children(plan, paper_exec.control_token(plan.state)),
        plan.policy,
        console,
        events=plan.logs / "supervisor.jsonl",
        on_all_ready=all_ready,
    )
    try:
        return supervisor.run(stop)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if clock is not None:
            held = hold(clock)
            console.print(
                f"replay clock held at {utc(held):%Y-%m-%d %H:%M} UTC; the next `sapphire run` "
                "resumes there (--start to begin elsewhere)"
            )
