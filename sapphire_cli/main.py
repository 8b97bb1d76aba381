"""``sapphire``: run the platform, query the warehouse and steer the replay clock."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from sapphire_domain.errors import SapphireError
from sapphire_domain.settings import PROJECT_ROOT, load_settings

console = Console(stderr=True)


def dagster_home() -> Path:
    """The project-local DAGSTER_HOME, holding a link to the project's ``dagster.yaml``."""
    home = Path(os.environ.get("DAGSTER_HOME", PROJECT_ROOT / "var" / "dagster_home"))
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.symlink_to(PROJECT_ROOT / "dagster.yaml")
    return home


def _state_dir() -> Path:
    from resources.environments import state_dir

    return state_dir()


def cmd_run(args: argparse.Namespace) -> int:
    """Redis for the bus, then the Dagster UI and daemon; Ctrl-C stops both."""
    from sapphire_bus.server import LOCAL_PORT, RedisServer

    home = dagster_home()
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    redis_server = None
    if "REDIS_URL" not in os.environ:
        redis_server = RedisServer(_state_dir() / "redis", port=LOCAL_PORT).start()
        env["REDIS_URL"] = redis_server.url
    dagster = shutil.which("dagster") or str(Path(sys.executable).with_name("dagster"))
    console.print(
        f"[bold]Sapphire[/bold]: Dagster UI on [cyan]http://{args.host}:{args.port}[/cyan] "
        f"(DAGSTER_HOME={home}); bus on {env['REDIS_URL']}; Ctrl-C stops everything."
    )
    command = [
        dagster, "dev", "-w", str(PROJECT_ROOT / "workspace.yaml"),
        "-h", args.host, "-p", str(args.port),
    ]  # fmt: skip
    try:
        return subprocess.run(command, env=env, cwd=PROJECT_ROOT, check=False).returncode
    except KeyboardInterrupt:
        return 0
    finally:
        if redis_server is not None:
            redis_server.stop()


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
    from sapphire_market.replay import ReplayClockFile, ReplayExchange

    settings = load_settings(os.environ.get("SAPPHIRE_CONFIG"))
    exchange = ReplayExchange()
    clock = ReplayClockFile(_state_dir() / "replay_clock.json", default_ms=exchange.data_end_ms)
    if args.action == "start":
        start = (
            args.at
            or settings.replay.start
            or datetime.combine(settings.universe.start, datetime.min.time(), tzinfo=UTC)
        )
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
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

    run = commands.add_parser("run", help="start the Dagster UI and daemon on the embedded default")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=3000)
    run.set_defaults(handler=cmd_run)

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
