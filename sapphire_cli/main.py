"""``sapphire``: run the platform, query the warehouse and steer the replay clock."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, date, datetime
from pathlib import Path

from rich.console import Console

from sapphire_domain.errors import SapphireError
from sapphire_domain.settings import PROJECT_ROOT, load_settings

console = Console(stderr=True)


def dagster_home() -> Path:
    """The project-local DAGSTER_HOME, holding a link to the project's ``dagster.yaml``."""
    from sapphire_cli.run import default_dagster_home, ensure_dagster_home

    return ensure_dagster_home(default_dagster_home())


def _state_dir() -> Path:
    from resources.environments import state_dir

    return state_dir()


def cmd_run(args: argparse.Namespace) -> int:
    """Redis, the Dagster UI and daemon, and the paper execution service, supervised."""
    from sapphire_cli.run import run

    return run(args, console)


def cmd_demo(args: argparse.Namespace) -> int:
    from sapphire_cli.demo import run_demo

    return run_demo(args, console)


def cmd_exec(args: argparse.Namespace) -> int:
    from sapphire_exec.cli import main as exec_main

    return exec_main(args.rest)


def cmd_models(args: argparse.Namespace) -> int:
    from resources.model_store import main as models_main

    return models_main([*args.rest, "--root", str(_state_dir() / "models")])


def cmd_sql(args: argparse.Namespace) -> int:
    from rich.table import Table

    from sapphire_warehouse.sql import connect

    root = Path(args.warehouse) if args.warehouse else _state_dir() / "warehouse"
    con = connect(root)

    def show(query: str) -> None:
        cursor = con.execute(query)
        if cursor.description is None:
            return
        table = Table(*(column[0] for column in cursor.description))
        for row in cursor.fetchmany(args.limit):
            table.add_row(*(str(v) for v in row))
        Console().print(table)

    if args.query:
        show(args.query)
        return 0
    tables = ", ".join(row[0] for row in con.execute("SHOW TABLES").fetchall())
    console.print(f"DuckDB over {root}; tables: {tables or 'none yet'}")
    console.print("End each statement with ';'. Ctrl-D quits.")
    buffer = ""
    while True:
        try:
            line = input("sql> " if not buffer else "...> ")
        except EOFError:
            return 0
        buffer += line + "\n"
        if buffer.strip().endswith(";"):
            try:
                show(buffer)
            except Exception as error:  # show the database's message and keep the session
                console.print(f"[red]{error}[/red]")
            buffer = ""


def cmd_replay(args: argparse.Namespace) -> int:
    from sapphire_cli.clock import clock_file, session_start

    settings = load_settings(os.environ.get("SAPPHIRE_CONFIG"))
    clock = clock_file(_state_dir())
    if args.action == "start":
        start = session_start(settings, args.at)
        speed = args.speed if args.speed is not None else settings.replay.speed
        clock.start(int(start.timestamp() * 1000), speed)
    elif args.action == "reset":
        clock.path.unlink(missing_ok=True)
    now = datetime.fromtimestamp(clock.now_ms() / 1000, tz=UTC)
    console.print(f"replay clock: {now.isoformat()} (state in {clock.path})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sapphire", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run",
        help="run the platform: Redis, the Dagster UI and daemon, the paper execution service",
    )
    run.add_argument("--host", default="127.0.0.1", help="interface of the Dagster UI")
    run.add_argument("--port", type=int, help="Dagster UI port (SAPPHIRE_UI_PORT, 3000)")
    run.add_argument(
        "--metrics-port",
        type=int,
        help="execution service's /metrics, /healthz and control API (SAPPHIRE_METRICS_PORT, 9464)",
    )
    run.add_argument(
        "--redis-port",
        type=int,
        help="port of the embedded redis-server (SAPPHIRE_REDIS_PORT, 6390)",
    )
    run.add_argument(
        "--speed",
        type=float,
        help="simulated seconds per wall second "
        "(default: replay.speed; 60 closes a 30m candle every 30 s)",
    )
    run.add_argument(
        "--start",
        type=datetime.fromisoformat,
        help="restart the replay clock at this simulated time (default: resume where it stands)",
    )
    run.add_argument(
        "--exec-config",
        type=Path,
        help="execution service configuration (default: config/exec-paper.yaml)",
    )
    run.add_argument(
        "--max-crashes",
        type=int,
        default=5,
        help="crashes of one process within --crash-window that stop everything",
    )
    run.add_argument("--crash-window", type=float, default=300.0, help="seconds (300)")
    run.set_defaults(handler=cmd_run)

    demo = commands.add_parser(
        "demo", help="a finite, headless tour: backfill, train, backtest, paper-trade, retrain"
    )
    demo.add_argument(
        "--state-dir",
        default=str(PROJECT_ROOT / "var" / "demo"),
        help="the demo's own state folder, wiped at each start (var/demo)",
    )
    demo.add_argument(
        "--session-start",
        type=date.fromisoformat,
        default=date(2019, 6, 1),
        help="first paper-traded day (2019-06-01)",
    )
    demo.add_argument("--days", type=int, default=3, help="paper-traded days (3)")
    demo.add_argument(
        "--history-days",
        type=int,
        default=200,
        help="days of features before the session (200: a full training window)",
    )
    demo.add_argument("--backtest-days", type=int, default=7, help="days backtested (7)")
    demo.add_argument(
        "--speed",
        type=float,
        default=8640.0,
        help="simulated seconds per wall second in the session (8640: a simulated day per 10 s)",
    )
    demo.set_defaults(handler=cmd_demo)

    sql = commands.add_parser("sql", help="query the local warehouse with DuckDB SQL")
    sql.add_argument("-c", "--query", help="run one statement and exit")
    sql.add_argument("--warehouse", help="warehouse folder (default: var/warehouse)")
    sql.add_argument("--limit", type=int, default=50, help="rows to show")
    sql.set_defaults(handler=cmd_sql)

    # Listed for --help; main() hands their arguments to their own parsers.
    commands.add_parser("exec", help="run the execution service (sapphire exec --help)")
    commands.add_parser("models", help="show, promote or roll back models: models rollback AGENT")

    replay = commands.add_parser("replay", help="show, start or reset the replay clock")
    replay.add_argument("action", choices=["status", "start", "reset"])
    replay.add_argument("--at", type=datetime.fromisoformat, help="simulated start (ISO time)")
    replay.add_argument("--speed", type=float, help="simulated seconds per wall second")
    replay.set_defaults(handler=cmd_replay)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # These pass every option through to their own parsers, --help included.
    passthrough = {"exec": cmd_exec, "models": cmd_models}
    if argv and argv[0] in passthrough:
        return passthrough[argv[0]](argparse.Namespace(rest=argv[1:]))
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except SapphireError as error:
        console.print(f"[red]error:[/red] {error}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
