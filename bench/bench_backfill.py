"""Two-year backfill of the default universe: candles, trades, funding and features, one run.

Runs the real code location in process against a fresh state folder (a fresh download cache, so
every candle is read from the replay exchange), with the single-run backfill policy, and prints
the wall time of the run, of each step, and the peak RSS.

    .venv/bin/python bench/bench_backfill.py [--start 2017-10-01] [--end 2019-09-30]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import dagster as dg
from rich.console import Console
from rich.table import Table

from sapphire_assets.definitions import build_definitions
from sapphire_domain.settings import load_settings

ASSETS = ("candles", "trades", "funding_rates", "features")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", default="2017-10-01")
    parser.add_argument("--end", default="2019-09-30", help="last partition, inclusive")
    args = parser.parse_args()

    state = Path(tempfile.mkdtemp(prefix="sapphire-bench-"))
    defs = build_definitions(load_settings(), "local", state)
    job = defs.resolve_implicit_global_asset_job_def()
    instance = dg.DagsterInstance.ephemeral()
    tags = {
        "dagster/asset_partition_range_start": args.start,
        "dagster/asset_partition_range_end": args.end,
    }
    started = time.perf_counter()
    result = job.execute_in_process(
        instance=instance, asset_selection=[dg.AssetKey(a) for a in ASSETS], tags=tags
    )
    elapsed = time.perf_counter() - started
    partitions = len(result.asset_materializations_for_node("features"))
    table = Table(
        title=f"Backfill {args.start} .. {args.end}: {partitions} partitions, one run", width=72
    )
    for column in ("step", "seconds"):
        table.add_column(column)
    for step in instance.get_run_step_stats(result.run_id):
        if step.end_time is not None and step.start_time is not None:
            table.add_row(step.step_key, f"{step.end_time - step.start_time:.1f}")
    table.add_row("whole run (wall)", f"{elapsed:.1f}")
    console = Console()
    console.print(table)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    console.print(f"peak RSS {peak_mb:,.0f} MB; runs: {instance.get_runs_count()}")


if __name__ == "__main__":
    main()
