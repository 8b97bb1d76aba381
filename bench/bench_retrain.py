"""Training time and peak RSS of a real ``retrain_agents`` run on the default universe.

Prepares a fresh state folder once (two years of candles and features, one backfill run), then
runs the ``retrain_agents`` job of the real code location in a fresh process per repeat, so the
peak RSS is the run's own. Reports the run's wall time, each step's time from the instance's step
statistics, and the peak RSS. Each repeat trains four new challengers, and the blocking check
compares them with the champion, as a scheduled retrain does; a rejected challenger fails its
step (that is what a blocking check does), which is reported, not an error of the benchmark.

    .venv/bin/python bench/bench_retrain.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent

BACKFILL = """
import sys
from pathlib import Path
import dagster as dg
from sapphire_assets.definitions import build_definitions
from sapphire_domain.settings import load_settings
defs = build_definitions(load_settings(), "local", Path(sys.argv[1]))
result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
    instance=dg.DagsterInstance.ephemeral(),
    asset_selection=[dg.AssetKey(a) for a in ("candles", "trades", "funding_rates", "features")],
    tags={"dagster/asset_partition_range_start": "2017-10-01",
          "dagster/asset_partition_range_end": "2019-09-30"},
)
assert result.success
"""

RETRAIN = """
import json, resource, sys, time
from pathlib import Path
import dagster as dg
from sapphire_assets.definitions import build_definitions
from sapphire_domain.settings import load_settings
started = time.perf_counter()
defs = build_definitions(load_settings(), "local", Path(sys.argv[1]))
instance = dg.DagsterInstance.ephemeral()
loaded = time.perf_counter()
job = defs.get_job_def("retrain_agents")
result = job.execute_in_process(instance=instance, raise_on_error=False)
finished = time.perf_counter()
steps = {s.step_key: s.end_time - s.start_time for s in instance.get_run_step_stats(result.run_id)
         if s.end_time and s.start_time}
checks = {e.asset_key.path[-1]: e.passed for e in result.get_asset_check_evaluations()}
print(json.dumps({"success": result.success, "load_s": loaded - started,
                  "run_s": finished - loaded, "steps": steps, "promoted": checks,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _python(code: str, state: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code, str(state)],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"benchmark step failed:\n{done.stderr[-3000:]}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    console = Console()
    state = Path(tempfile.mkdtemp(prefix="sapphire-bench-retrain-"))
    with console.status("backfilling two years of candles and features (one run)"):
        _python(BACKFILL, state)
    runs = []
    for repeat in range(args.repeats):
        with console.status(f"retrain_agents run {repeat + 1}/{args.repeats}"):
            runs.append(json.loads(_python(RETRAIN, state).strip().splitlines()[-1]))
    best = min(runs, key=lambda r: r["run_s"])
    table = Table(title=f"retrain_agents, best of {args.repeats} runs (fresh process each)")
    table.add_column("step")
    table.add_column("seconds", justify="right")
    for step, seconds in sorted(best["steps"].items()):
        table.add_row(step, f"{seconds:.2f}")
    table.add_row("code location load", f"{best['load_s']:.2f}")
    table.add_row("whole run (wall)", f"{best['run_s']:.2f}")
    console.print(table)
    walls = ", ".join(f"{r['run_s']:.1f} s" for r in runs)
    peak = max(r["peak_rss_mib"] for r in runs)
    console.print(
        f"runs: {walls}; runs without a rejected challenger: "
        f"{sum(r['success'] for r in runs)}/{len(runs)}; peak RSS {peak:,.0f} MiB (maximum over "
        f"runs); promotion checks of the best run: {best['promoted']}"
    )


if __name__ == "__main__":
    main()
