"""Execution service benchmark: decision latency in process, and throughput over Redis.

**Decision latency (in process).** The real ``ExecutionService.process`` on a real
``redis-server``, one 20-symbol target at a time: each target is XADDed, read through the
consumer group and processed as the running service processes it. The service's own
``Timeline`` stamps each stage from the moment the read returned the target ("received"):
decode and validation, plan and ``RiskEngine.check_plan`` on every order (all checks on), the
write-ahead ``begin`` journal record (written; fsynced later with the commit), the hand-off of
the orders to the paper venue (the figure the issue asks for, and the service's latency
metric), the venue's answer (the shared fill model; its own book fsync is off, as it stands in
for an exchange), the commit (fills, events, ``done``, fsynced) and the publication and ack on
the bus. Targets vary by version, so every target trades all 20 symbols; 200 targets warm up
first.

**Throughput over Redis (loopback).** A real ``redis-server`` (``RedisServer``, AOF on, fsync
every second), the real service (``python -m sapphire_exec``: paper venue on a synthetic
20-symbol market, risk checks on, journal fsyncs on, the paper venue's book fsync off as it stands
in for an exchange), and a separate publisher process XADDing 20-symbol targets, either as fast
as it can (burst) or paced. Consumed/s counts targets taken off the stream and acknowledged from
the first XADD until the group has nothing pending or undelivered; the service trades the newest
target of each read and acknowledges the older ones as superseded, so traded/s is shown too.

    .venv/bin/python bench/bench_exec.py [--targets 5000] [--burst 20000] [--paced-rate 2500]
        [--paced-seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import redis
import yaml
from rich.console import Console
from rich.table import Table

from sapphire_bus.server import RedisServer, free_port
from sapphire_domain.fill_model import CostModel
from sapphire_domain.messages import TARGETS_STREAM, TargetPortfolio, TargetPosition, encode
from sapphire_exec.bus import ExecutionBus
from sapphire_exec.cli import configure_logging, settle_heap
from sapphire_exec.config import ExecSettings
from sapphire_exec.service import ExecutionService
from sapphire_exec.venues.paper import MarketPriceFeed, PaperVenue
from sapphire_market.synthetic_source import SyntheticMarketData

ROOT = Path(__file__).resolve().parents[1]
N_SYMBOLS = 20
ORDERS = {"no_trade_band": 0.0, "min_notional": 10.0, "lot_size": 1e-6}
RISK = {
    "max_order_notional": 1e9,
    "max_position_notional": 1e9,
    "max_gross_exposure": 10.0,
    "max_orders_per_interval": 10**9,
    "max_price_age_ms": 10**12,
    "max_drawdown": 0.99,
    "max_daily_loss": 0.99,
}


def market() -> SyntheticMarketData:
    return SyntheticMarketData(n_symbols=N_SYMBOLS, days=3, timeframe="1m")


def make_target(version: int, symbols: list[str], now_ms: int) -> TargetPortfolio:
    created = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
    # Varies with the version, so the newest target of any read batch moves every symbol.
    scale = 0.5 + (version % 13) / 13
    return TargetPortfolio(
        version=version,
        created_at=created,
        valid_until=created + timedelta(days=365),
        positions=tuple(
            TargetPosition(symbol=s, weight=scale * (0.03 if i % 2 else -0.02))
            for i, s in enumerate(symbols)
        ),
        model_versions={"bench": "1"},
    )


# --- decision latency, in process ------------------------------------------------------------

STAGES = ("decided", "handed", "accepted", "committed", "acked")


async def decision_latency(n: int, warmup: int, root: Path) -> dict[str, list[int]]:
    """The real ``ExecutionService.process`` on a real redis-server, one target at a time: each
    target is XADDed, read through the consumer group, and processed; the service's own
    ``Timeline`` stamps say how long each stage took (nanoseconds), from the moment the read
    returned the target."""
    server = RedisServer(root / "redis").start()
    client = redis.Redis.from_url(server.url)
    try:
        source = market()
        symbols = source.list_symbols()
        settings = ExecSettings(state_dir=root / "exec", risk=RISK, orders=ORDERS)
        venue = PaperVenue(
            MarketPriceFeed(source, "1m"), root / "book.jsonl", CostModel(), 100_000.0,
            fsync=False,
        )  # fmt: skip
        bus = ExecutionBus(server.url)
        service = ExecutionService(settings, venue, bus)
        await service.start()
        settle_heap()  # as ``sapphire exec`` does once started
        timings: dict[str, list[int]] = {stage: [] for stage in STAGES}
        now = source.now_ms()
        for version in range(1, warmup + n + 1):
            client.xadd(TARGETS_STREAM, encode(make_target(version, symbols, now)))  # type: ignore[arg-type]
            entries = await bus.read_targets(16, 1000)
            await service.process(entries)
            timeline = service.timeline
            if len(entries) != 1 or timeline.acked == 0:
                raise AssertionError(f"target {version} was not traded: {entries}")
            if version > warmup:
                for stage in STAGES:
                    timings[stage].append(getattr(timeline, stage) - timeline.received)
        traded = sum(1 for r in service.journal.records() if r["t"] == "fill")  # type: ignore[union-attr]
        if traded != N_SYMBOLS * (warmup + n):
            raise AssertionError(f"{traded} fills for {warmup + n} targets of {N_SYMBOLS}")
        await service.shutdown()
    finally:
        client.close()
        server.stop()
    return timings


# --- throughput over Redis -------------------------------------------------------------------


def publisher(url: str, count: int, rate: float, first_version: int, now_ms: int) -> None:
    """Runs in its own process: XADD ``count`` targets, paced at ``rate``/s (0: unpaced)."""
    symbols = market().list_symbols()
    client = redis.Redis.from_url(url)
    payloads = [encode(make_target(first_version + i, symbols, now_ms)) for i in range(count)]
    print(json.dumps({"start": time.time()}), flush=True)
    started = time.perf_counter()
    if rate <= 0:
        for i in range(0, count, 100):
            pipe = client.pipeline(transaction=False)
            for fields in payloads[i : i + 100]:
                pipe.xadd(TARGETS_STREAM, fields)  # type: ignore[arg-type]
            pipe.execute()
    else:
        for i, fields in enumerate(payloads):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            client.xadd(TARGETS_STREAM, fields)  # type: ignore[arg-type]
    print(json.dumps({"end": time.time()}), flush=True)
    client.close()


def drained(client: redis.Redis, group: str) -> bool:
    groups = client.xinfo_groups(TARGETS_STREAM)  # type: ignore[no-untyped-call]
    info = next((g for g in groups if g["name"] == group), None)
    last = client.xrevrange(TARGETS_STREAM, count=1)
    return bool(
        info and int(info["pending"]) == 0 and (not last or info["last-delivered-id"] == last[0][0])
    )


def throughput(root: Path, runs: list[tuple[str, int, float]]) -> list[dict[str, Any]]:
    server = RedisServer(root / "redis").start()
    port = free_port()
    config = {
        "state_dir": str(root / "exec"),
        "tick_seconds": 1.0,
        "http": {"host": "127.0.0.1", "port": port},
        "orders": ORDERS,
        "venue": {"kind": "paper", "paper": {
            "market": "synthetic", "synthetic_symbols": N_SYMBOLS, "timeframe": "1m",
            "fsync": False,
        }},
        "risk": RISK,
    }  # fmt: skip
    (root / "exec.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "REDIS_URL": server.url, "SAPPHIRE_EXEC_CONFIG": str(root / "exec.yaml"),
           "SAPPHIRE_STATE_DIR": str(root), "PYTHONUNBUFFERED": "1"}  # fmt: skip
    log = open(root / "service.log", "wb")  # noqa: SIM115 - closed in finally
    service = subprocess.Popen(
        [sys.executable, "-m", "sapphire_exec"], cwd=ROOT, env=env, stdout=log, stderr=log
    )
    client = redis.Redis.from_url(server.url, decode_responses=True)
    results = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise RuntimeError((root / "service.log").read_text()[-3000:])
        now_ms = market().now_ms()
        version = 1
        for name, count, rate in runs:
            done_before = _outcomes(root)
            pub = subprocess.Popen(
                [sys.executable, __file__, "--publish", server.url, str(count), str(rate),
                 str(version), str(now_ms)],
                cwd=ROOT, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            assert pub.stdout is not None
            start = json.loads(pub.stdout.readline())["start"]
            end = json.loads(pub.stdout.readline())["end"]
            pub.wait()
            while not drained(client, "sapphire-exec"):
                time.sleep(0.002)
            finished = time.time()
            version += count
            load = os.getloadavg()[0]
            time.sleep(0.5)  # the journal lines of the last target
            outcomes = _outcomes(root)
            traded = outcomes["traded"] - done_before["traded"]
            elapsed = finished - start
            results.append({
                "run": name, "targets": count, "publish_s": end - start, "elapsed_s": elapsed,
                "consumed_per_s": count / elapsed, "traded": traded,
                "traded_per_s": traded / elapsed, "load1": load,
            })  # fmt: skip
    finally:
        if service.poll() is None:
            service.terminate()
            try:
                service.wait(timeout=30)
            except subprocess.TimeoutExpired:
                service.kill()
                service.wait()
        log.close()
        client.close()
        server.stop()
    return results


def _outcomes(root: Path) -> dict[str, int]:
    counts = {"traded": 0, "superseded": 0}
    path = root / "exec" / "journal.jsonl"
    if path.exists():
        for line in path.read_bytes().splitlines():
            if b'"t":"done"' in line:
                outcome = json.loads(line)["outcome"]
                counts[outcome] = counts.get(outcome, 0) + 1
    return counts


def _minus(later: list[int], earlier: list[int]) -> list[int]:
    return [a - b for a, b in zip(later, earlier, strict=True)]


def _quantiles(values: list[int]) -> tuple[float, float, float]:
    ordered = sorted(values)
    return (
        ordered[len(ordered) // 2] / 1e6,
        ordered[int(len(ordered) * 0.99)] / 1e6,
        statistics.fmean(values) / 1e6,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--targets", type=int, default=5_000)
    parser.add_argument("--burst", type=int, default=20_000)
    parser.add_argument("--paced-rate", type=float, default=2_500.0)
    parser.add_argument("--paced-seconds", type=float, default=8.0)
    parser.add_argument("--publish", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.publish:
        url, count, rate, first, now_ms = args.publish
        publisher(url, int(count), float(rate), int(first), int(now_ms))
        return

    console = Console(width=120)
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(
            tempfile.TemporaryDirectory(dir=ROOT / "var" if (ROOT / "var").exists() else None)
        )
        root = Path(tmp)
        # The service logs in process as ``sapphire exec`` does (JSON lines), into a file that
        # stays open to the end: the logging set-up is process-wide.
        log = stack.enter_context(open(root / "service.log", "w"))
        configure_logging(log)
        timings = asyncio.run(decision_latency(args.targets, 200, root / "latency"))
        table = Table(title=f"Decision path, 20-symbol target, in process ({args.targets:,})")
        for column in ("what", "p50 ms", "p99 ms", "mean ms"):
            table.add_column(column, justify="left" if column == "what" else "right")
        handed, decided = timings["handed"], timings["decided"]
        rows = {
            "decision latency: target received -> 20 orders handed to the venue": handed,
            "  of which decode, validate, plan, 20 risk checks": decided,
            "  of which the write-ahead 'begin' journal write": _minus(handed, decided),
            "the paper venue filling the 20 orders (its book fsync off)": _minus(
                timings["accepted"], handed
            ),
            "target received -> the venue's answer": timings["accepted"],
            "commit: fills, events, done to the journal + fsync": _minus(
                timings["committed"], timings["accepted"]
            ),
            "publish to the bus + ack": _minus(timings["acked"], timings["committed"]),
        }
        for label, values in rows.items():
            p50, p99, mean = _quantiles(values)
            table.add_row(label, f"{p50:.3f}", f"{p99:.3f}", f"{mean:.3f}")
        console.print(table)

        paced = int(args.paced_rate * args.paced_seconds)
        runs = [("burst (unpaced)", args.burst, 0.0),
                (f"paced {args.paced_rate:,.0f}/s", paced, args.paced_rate)]  # fmt: skip
        results = throughput(root / "redis-run", runs)
        table = Table(title="Throughput over Redis on loopback, risk checks and journal fsync on")
        for column in ("run", "targets", "publish s", "drained s", "consumed/s", "traded",
                       "traded/s", "load 1m"):  # fmt: skip
            table.add_column(column, justify="left" if column == "run" else "right")
        for r in results:
            table.add_row(
                r["run"], f"{r['targets']:,}", f"{r['publish_s']:.2f}", f"{r['elapsed_s']:.2f}",
                f"{r['consumed_per_s']:,.0f}", f"{r['traded']:,}", f"{r['traded_per_s']:,.0f}",
                f"{r['load1']:.2f}",
            )  # fmt: skip
        console.print(table)
    console.print(
        f"Python {platform.python_version()}, {os.cpu_count()} cores, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )


if __name__ == "__main__":
    main()
