"""kill -9 of the service at random points of a replayed session, over many cycles."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter

from sapphire_domain.messages import FILLS_STREAM, Side, decode
from sapphire_domain.settings import PROJECT_ROOT
from sapphire_exec.venues.paper import read_book
from tests.exec.conftest import SYMBOLS, ExecHarness, make_target

CYCLES = 60


class Zygote:
    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.exec.zygote"], cwd=PROJECT_ROOT, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip

    def spawn(self, log: str) -> int:
        assert self.process.stdin and self.process.stdout
        self.process.stdin.write(f"spawn {log}\n")
        self.process.stdin.flush()
        return int(self.process.stdout.readline())

    def reap(self, pid: int) -> int:
        assert self.process.stdin and self.process.stdout
        self.process.stdin.write(f"reap {pid}\n")
        self.process.stdin.flush()
        return int(self.process.stdout.readline())

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        self.process.wait(timeout=10)


def test_kill_9_at_random_points_loses_no_fill_and_duplicates_no_order(harness: ExecHarness):
    rng = random.Random(20261122)
    zygote = Zygote(harness.env)
    log = str(harness.root / "crash.log")
    harness.logs.append(harness.root / "crash.log")
    version = 0
    started = time.monotonic()
    try:
        for _cycle in range(CYCLES):
            pid = zygote.spawn(log)
            for _ in range(rng.randint(1, 3)):
                version += 1
                weights = {s: round(rng.uniform(-0.25, 0.25), 3) for s in SYMBOLS}
                harness.publish(make_target(version, weights))
            time.sleep(rng.uniform(0.0, 0.6))
            os.kill(pid, signal.SIGKILL)
            assert zygote.reap(pid) == signal.SIGKILL  # it really died by kill -9
        pid = zygote.spawn(log)  # the final run finishes whatever is left
        harness.wait_for(harness.healthy, timeout=30, what="the final run to start")
        harness.wait_for(harness.drained, timeout=60, what="all targets processed")
        os.kill(pid, signal.SIGTERM)
        assert os.waitstatus_to_exitcode(zygote.reap(pid)) == 0
    finally:
        zygote.close()
    elapsed = time.monotonic() - started

    state_dir = harness.root / "exec"
    book = read_book(state_dir / "paper_venue.jsonl")
    assert [r for r in book if r["t"] == "duplicate"] == []  # no id was ever sent again
    placed = [r["order"]["client_order_id"] for r in book if r["t"] == "order"]
    assert len(placed) == len(set(placed))  # one order per client order id
    venue_fills = {
        f"paper:{f['fill_id']}": (r["order"]["symbol"], r["order"]["side"], f["quantity"])
        for r in book if r["t"] == "order" for f in r["order"]["fills"]
    }  # fmt: skip
    assert len(venue_fills) > CYCLES  # the session really traded

    journal = [json.loads(line) for line in (state_dir / "journal.jsonl").read_text().splitlines()]
    journal_fills = [r["fill"]["fill_id"] for r in journal if r["t"] == "fill"]
    assert Counter(journal_fills) == Counter(venue_fills.keys())  # each venue fill exactly once

    stream_fills = [decode(fields) for _, fields in harness.stream(FILLS_STREAM)]
    assert Counter(f.fill_id for f in stream_fills) == Counter(venue_fills.keys())  # type: ignore[union-attr]

    positions: dict[str, float] = {}
    for symbol, side, quantity in venue_fills.values():
        positions[symbol] = positions.get(symbol, 0.0) + (
            quantity if side == Side.BUY else -quantity
        )
    journal_positions: dict[str, float] = {}
    for r in journal:
        if r["t"] == "fill":
            f = r["fill"]
            signed = f["quantity"] if f["side"] == "buy" else -f["quantity"]
            journal_positions[f["symbol"]] = journal_positions.get(f["symbol"], 0.0) + signed
    assert journal_positions == positions  # same fills summed in the same order: exactly equal
    print(f"\n{CYCLES} kill -9 cycles, {len(venue_fills)} fills, {elapsed:.1f} s")
