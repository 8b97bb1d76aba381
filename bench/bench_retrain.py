"""Training time and peak RSS of retraining every agent on the default universe.

What ``retrain_agents`` computes, without Dagster's overhead: features of two years of 30m
candles (4 symbols), labels, and one challenger per agent (180-day window) plus its holdout
scoring. Each run is a fresh process so peak RSS is its own. Writes "Agents: retrain_agents"
in bench/RESULTS.md.

    .venv/bin/python bench/bench_retrain.py
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Agents: retrain_agents (training time, peak RSS)"

CHILD = """
import json, resource, time
import polars as pl
from sapphire_market.replay import ReplayExchange
from sapphire_domain.features import compute_features
from sapphire_domain.agents.models import labelled_features, train_model, validation_metrics
from sapphire_domain.agents.specs import AGENTS
from sapphire_domain.agents.walk_forward import WalkForwardParams, challenger_windows
t0 = time.perf_counter()
ex = ReplayExchange()
symbols = ("BTC/USD", "ETH/USD", "XRP/USD", "EOS/USD")
c = pl.concat(ex.fetch_candles(s, "30m", 0, 2**62) for s in symbols)
f = compute_features(c.sort("symbol", "ts"), "30m")
wf = WalkForwardParams()
lab = labelled_features(f, wf.horizon_bars, 1_800_000)
as_of = lab.filter(pl.col("forward_return").is_not_null())["label_end"].max()
window, holdout_start = challenger_windows(as_of, wf)
t1 = time.perf_counter()
per_agent = {}
for spec in AGENTS.values():
    s = time.perf_counter()
    m = train_model(spec, lab, window, wf.horizon_bars)
    validation_metrics(m, lab.filter(pl.col("ts") >= holdout_start).drop_nulls("forward_return"))
    per_agent[spec.name] = time.perf_counter() - s
print(json.dumps({"rows": f.height, "prepare_s": t1 - t0, "train_s": time.perf_counter() - t1,
                  "per_agent": per_agent,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main(runs: int = 3) -> None:
    results = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, capture_output=True,
                             text=True, check=True)  # fmt: skip
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    best = min(results, key=lambda r: r["train_s"])
    lines = [
        SECTION,
        "",
        f"`bench/bench_retrain.py`, {datetime.now(UTC):%Y-%m-%d}, best of {runs} fresh processes "
        f"on this machine ({__import__('os').cpu_count()} CPUs; LightGBM single-threaded, "
        "deterministic, 15 leaves, 50 trees). Default universe: 4 symbols x 2 years of 30m bars "
        f"({best['rows']} feature rows); each challenger trains on 180 days.",
        "",
        "| step | seconds |",
        "| --- | ---: |",
        f"| candles + features + labels | {best['prepare_s']:.2f} |",
        *(f"| train + holdout score: {a} | {s:.2f} |" for a, s in best["per_agent"].items()),
        f"| all four agents | {best['train_s']:.2f} |",
        "",
        f"Peak RSS of the process: {max(r['peak_rss_mib'] for r in results):.0f} MiB "
        "(maximum over runs). Dagster's run overhead and the warehouse reads are not included.",
        "",
    ]
    path = ROOT / "bench" / "RESULTS.md"
    current = path.read_text()
    if SECTION in current:
        before, _, after = current.partition(SECTION)
        rest = after.split("\n## ", 1)
        current = before + "\n".join(lines) + ("\n## " + rest[1] if len(rest) > 1 else "")
    else:
        current = current.rstrip("\n") + "\n\n" + "\n".join(lines)
    path.write_text(current)
    print("\n".join(lines))


if __name__ == "__main__":
    _ = resource, time
    main()
