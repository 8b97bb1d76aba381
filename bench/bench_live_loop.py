"""End-to-end latency of the live loop in the embedded default, with Dagster runs in the path.

Starts the real platform with ``sapphire run`` (redis-server, the Dagster webserver and daemon
with the live-loop sensors, the execution service in paper mode) on a fresh state folder and a
universe that begins ``--history-days`` before ``--start``. The replay clock is held at
``--start`` while the sensors catch up and train the first models (the warm-up), then runs at
``--speed`` for ``--session`` wall seconds. Afterwards it reads the bus and the Dagster instance:

- candle close: the simulated close time of the candle a live run was requested for (the target's
  ``created_at``), converted to the wall time it happened from the clock's anchor and speed;
- target published: the ms time of the target's entry id on the targets stream;
- order submitted: the ms time of the first non-denied event of that target on the orders stream;
- where the time goes, per live run: close -> run created (the sensor's tick interval and
  evaluation), created -> launched (the run queue), launched -> started (the run worker's
  process and code load), started -> published (the steps up to target_portfolio), and
  published -> order (the execution service).

It prints the figures (p50, p95, max) and asserts nothing.

    .venv/bin/python bench/bench_live_loop.py [--speed 60] [--session 240] [--start 2019-06-01]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import dagster as dg
import numpy as np
import redis
import yaml
from rich.console import Console
from rich.table import Table

from sapphire_bus.server import free_port
from sapphire_cli.clock import clock_file, hold, utc, wall_time_of
from sapphire_domain.clock import ReplayClock
from sapphire_domain.messages import (
    ORDERS_STREAM,
    TARGETS_STREAM,
    OrderEvent,
    OrderStatus,
    TargetPortfolio,
    decode,
)
from sapphire_domain.settings import DEFAULT_CONFIG_PATH, PROJECT_ROOT, load_settings
from sensors.candles import CANDLE_CLOSE_TAG
from sensors.jobs import LIVE_LOOP

console = Console()
STAGES = (
    "close -> run created (sensor tick; it waits for the previous run)",
    "created -> launched (run queue)",
    "launched -> started (run worker process)",
    "started -> target published (steps)",
    "published -> order submitted (exec)",
)


@dataclass
class Target:
    version: int
    created_ms: int
    published_s: float
    order_s: float | None = None
    denied_only: bool = False


def entry_seconds(entry_id: object) -> float:
    """The wall time (epoch seconds) Redis gave a stream entry: its id's milliseconds."""
    return int(str(entry_id).split("-", maxsplit=1)[0]) / 1000


def percentiles(values: list[float]) -> str:
    if not values:
        return "n/a"
    p50, p95 = np.percentile(values, [50, 95])
    return f"{p50:6.2f}  {p95:6.2f}  {max(values):6.2f}  (n={len(values)})"


def write_config(root: Path, start: date, history_days: int) -> Path:
    raw = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    raw["universe"]["start"] = (start - timedelta(days=history_days)).isoformat()
    raw["replay"]["start"] = f"{start.isoformat()}T00:00:00"
    path = root / "sapphire.yaml"
    path.write_text(yaml.safe_dump(raw))
    load_settings(path)  # the same checks as the platform's
    return path


class Platform:
    """``sapphire run`` on its own ports and state, held at ``start`` until released."""

    def __init__(self, root: Path, config: Path, start: date) -> None:
        self.state = root / "state"
        self.home = root / "dagster_home"
        env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "SAPPHIRE_ENV")}
        env.update(SAPPHIRE_CONFIG=str(config), SAPPHIRE_STATE_DIR=str(self.state),
                   DAGSTER_HOME=str(self.home), PYTHONUNBUFFERED="1")  # fmt: skip
        self.redis_port = free_port()
        self.log = root / "sapphire-run.txt"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sapphire_cli.main", "run", "--speed", "0",
             "--start", f"{start.isoformat()}T00:00:00", "--port", str(free_port()),
             "--metrics-port", str(free_port()), "--redis-port", str(self.redis_port)],
            cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL,
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.bus = redis.Redis(port=self.redis_port, decode_responses=True)

    def alive(self) -> bool:
        return self.process.poll() is None

    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(str(self.home))

    def targets(self) -> int:
        try:
            return int(self.bus.xlen(TARGETS_STREAM))
        except redis.RedisError:
            return 0

    def stop(self) -> int:
        if self.alive():
            self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=120)


def run_counts(instance: dg.DagsterInstance) -> str:
    counts: dict[str, int] = {}
    for record in instance.get_run_records(limit=500):
        run = record.dagster_run
        key = f"{run.job_name}:{run.status.value.lower()}"
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no runs yet"


def warm_up(platform: Platform, timeout_s: float) -> None:
    """Until the first target is published: catch-up, models' bootstrap, the first live run."""
    deadline = time.monotonic() + timeout_s
    last_report = 0.0
    while platform.targets() == 0:
        if not platform.alive():
            raise SystemExit(f"sapphire run exited:\n{platform.log.read_text()[-4000:]}")
        if time.monotonic() > deadline:
            raise SystemExit(f"no target after {timeout_s:.0f} s of warm-up; see {platform.log}")
        if time.monotonic() - last_report > 20 and platform.home.exists():
            last_report = time.monotonic()
            try:
                console.print(f"  warm-up: {run_counts(platform.instance())}")
            except Exception as error:  # the instance is still being created
                console.print(f"  warm-up: instance not ready ({error})")
        time.sleep(2)


def collect(bus: redis.Redis, since_ms: int) -> dict[int, Target]:
    """The targets created after ``since_ms``, with their first order event."""
    targets: dict[int, Target] = {}
    for entry_id, fields in bus.xrange(TARGETS_STREAM) or []:
        message = decode(fields)  # type: ignore[arg-type]
        if isinstance(message, TargetPortfolio):
            created = int(message.created_at.timestamp() * 1000)
            if created > since_ms:
                targets[message.version] = Target(message.version, created, entry_seconds(entry_id))
    denied: set[int] = set()
    for entry_id, fields in bus.xrange(ORDERS_STREAM) or []:
        event = decode(fields)  # type: ignore[arg-type]
        if not isinstance(event, OrderEvent) or event.target_version not in targets:
            continue
        target = targets[event.target_version]
        if event.status == OrderStatus.DENIED:
            denied.add(target.version)
        elif target.order_s is None:
            target.order_s = entry_seconds(entry_id)
    for version in denied:
        targets[version].denied_only = targets[version].order_s is None
    return targets


def published_by_run(instance: dg.DagsterInstance) -> dict[str, int]:
    """Run id -> the target version its target_portfolio step published."""
    records = instance.fetch_materializations(dg.AssetKey("target_portfolio"), limit=10_000)
    published = {}
    for record in records.records:
        materialization = record.asset_materialization
        if materialization is None:
            continue
        entry = materialization.metadata.get("published_entry")
        version = materialization.metadata.get("version")
        if entry is not None and version is not None and "-" in str(entry.value):
            published[record.run_id] = int(str(version.value))
    return published


def report(
    instance: dg.DagsterInstance, clock: ReplayClock, targets: dict[int, Target], end_ms: int
) -> None:
    step_ms = 1_800_000
    speed = clock.speed
    # Headline: from the close of the newest candle in each target (its created_at).
    publish, order = [], []
    for target in targets.values():
        close_s = wall_time_of(clock, target.created_ms)
        publish.append(target.published_s - close_s)
        if target.order_s is not None:
            order.append(target.order_s - close_s)
    # Per candle: from its close to the first target that includes it (coalesced ones too).
    fresh = []
    published = sorted((t.created_ms, t.published_s) for t in targets.values())
    candle = clock.anchor_sim_ms - clock.anchor_sim_ms % step_ms + step_ms
    while candle <= end_ms:
        later = [s for created, s in published if created >= candle]
        if later:
            fresh.append(min(later) - wall_time_of(clock, candle))
        candle += step_ms
    # Where the time goes, per live run that published a session target: from the close of the
    # candle the run was requested for (its tag), through the run's own timestamps.
    stages: dict[str, list[float]] = {name: [] for name in STAGES}
    live_runs = instance.get_run_records(dg.RunsFilter(job_name=LIVE_LOOP))
    versions = published_by_run(instance)
    for live_run in live_runs:
        traded = targets.get(versions.get(live_run.dagster_run.run_id, -1))
        tag = live_run.dagster_run.tags.get(CANDLE_CLOSE_TAG)
        stats = instance.get_run_stats(live_run.dagster_run.run_id)
        if traded is None or tag is None or not (stats.launch_time and stats.start_time):
            continue
        close_s = wall_time_of(clock, int(datetime.fromisoformat(tag).timestamp() * 1000))
        created = live_run.create_timestamp.timestamp()
        marks = [close_s, created, stats.launch_time, stats.start_time, traded.published_s]
        if traded.order_s is not None:
            marks.append(traded.order_s)
        for name, (begin, end) in zip(STAGES, pairwise(marks), strict=False):
            stages[name].append(end - begin)

    table = Table(title=f"Live loop latency at {speed:g}x (seconds: p50, p95, max)")
    table.add_column("measure")
    table.add_column("p50     p95     max")
    table.add_row("candle close -> target published", percentiles(publish))
    table.add_row("candle close -> order submitted", percentiles(order))
    table.add_row("candle close -> first target including it", percentiles(fresh))
    for name, values in stages.items():
        table.add_row(f"  {name}", percentiles(values))
    console.print(table)
    denied = sum(t.denied_only for t in targets.values())
    failed = sum(r.dagster_run.status == dg.DagsterRunStatus.FAILURE for r in live_runs)
    settings = load_settings(os.environ.get("SAPPHIRE_CONFIG"))
    console.print(
        f"{len(targets)} targets in the session from {len(live_runs)} live runs ({failed} "
        f"failed); {denied} targets had only denied orders. The stages run from the close of "
        "the candle a run was requested for; the run may include later candles, so the "
        f"headline can be shorter than their sum. Sensor interval "
        f"{settings.live.sensor_interval_s} s. Load: {os.getloadavg()[0]:.2f} (1 min), "
        f"{os.cpu_count()} CPUs."
    )


def show(root: Path) -> None:
    """The figures of a finished session, from its live_loop.json and its Dagster instance."""
    saved = json.loads((root / "live_loop.json").read_text())
    os.environ["SAPPHIRE_CONFIG"] = saved["config"]
    targets = {t["version"]: Target(**t) for t in saved["targets"]}
    instance = dg.DagsterInstance.from_config(str(root / "dagster_home"))
    report(instance, ReplayClock(**saved["clock"]), targets, saved["end_ms"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=date.fromisoformat, default=date(2019, 6, 1))
    parser.add_argument(
        "--history-days", type=int, default=60,
        help="days of the universe before --start (the warm-up catches up)",
    )  # fmt: skip
    parser.add_argument(
        "--speed", type=float, default=60.0,
        help="simulated seconds per wall second (60: a 30m candle every 30 s)",
    )  # fmt: skip
    parser.add_argument("--session", type=float, default=240.0, help="wall seconds measured")
    parser.add_argument("--warmup-timeout", type=float, default=1200.0)
    parser.add_argument("--state-dir", type=Path, help="keep the state here (default: a temp dir)")
    parser.add_argument(
        "--report", type=Path, help="only print the figures of an earlier --state-dir"
    )
    args = parser.parse_args()
    if args.report:
        show(args.report)
        return

    root = args.state_dir or Path(tempfile.mkdtemp(prefix="sapphire-live-"))
    root.mkdir(parents=True, exist_ok=True)
    config = write_config(root, args.start, args.history_days)
    console.print(f"state in {root}; warm-up with the clock held at {args.start}")
    platform = Platform(root, config, args.start)
    try:
        started = time.monotonic()
        warm_up(platform, args.warmup_timeout)
        console.print(f"warm-up done in {time.monotonic() - started:.0f} s; the clock runs")
        clock_path = clock_file(platform.state)
        start_ms = clock_path.now_ms()
        clock = clock_path.start(start_ms, args.speed)
        deadline = time.monotonic() + args.session
        while time.monotonic() < deadline and platform.alive():
            time.sleep(10)
            console.print(f"  {utc(clock_path.now_ms()):%Y-%m-%d %H:%M} simulated, "
                          f"{platform.targets()} targets on the bus")  # fmt: skip
        end_ms = hold(clock_path)
        time.sleep(20)  # the run for the last candle lands
        targets = collect(platform.bus, start_ms)
        (root / "live_loop.json").write_text(json.dumps({
            "clock": clock.__dict__, "end_ms": end_ms, "config": str(config),
            "targets": [t.__dict__ for t in targets.values()],
        }, indent=1))  # fmt: skip
        show(root)
    finally:
        code = platform.stop()
        console.print(f"sapphire run exited with {code}; its output: {platform.log}")


if __name__ == "__main__":
    main()
