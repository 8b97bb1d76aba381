"""Entry points of the processes in the concurrency test: writers and an analyst reading.

    python -m tests.warehouse.concurrency_workers write ROOT RUNS
    python -m tests.warehouse.concurrency_workers read ROOT STOP_FILE MAX_SECONDS

The reader prints one JSON line: how many queries it ran and every inconsistency it saw.
"""

import json
import sys
import time
from pathlib import Path

import dagster as dg

from resources.warehouse import LocalWarehouseIOManager
from sapphire_warehouse.sql import connect
from tests.warehouse.warehouse_defs import RANGE_END, RANGE_START, ROWS_PER_DAY, candles

FIRST_DAY = "2024-01-01"
LAST_DAY = "2024-01-03"

CHECK_SQL = """
SELECT CAST(ts AS DATE)::VARCHAR AS day,
       count(*) AS n,
       count(DISTINCT run_id) AS writers,
       count(DISTINCT (ts, symbol)) AS distinct_rows
FROM candles GROUP BY day ORDER BY day
"""


def write(root: str, runs: int) -> None:
    io_manager = LocalWarehouseIOManager(root=root)
    for _ in range(runs):
        dg.materialize(
            [candles],
            tags={RANGE_START: FIRST_DAY, RANGE_END: LAST_DAY},
            resources={"io_manager": io_manager},
        )


def read(root: str, stop_file: str, max_seconds: float) -> int:
    queries = 0
    problems: list[str] = []
    deadline = time.monotonic() + max_seconds
    while time.monotonic() < deadline and not Path(stop_file).exists():
        if not (Path(root) / "candles").is_dir():
            time.sleep(0.01)
            continue
        try:
            # A fresh connection each time: views are re-created while the writers run.
            rows = connect(root).execute(CHECK_SQL).fetchall()
        except Exception as exc:
            problems.append(f"query failed: {type(exc).__name__}: {exc}")
            continue
        queries += 1
        for day, n, writers, distinct_rows in rows:
            if (n, writers, distinct_rows) != (ROWS_PER_DAY, 1, ROWS_PER_DAY):
                problems.append(f"{day}: {n} rows from {writers} runs, {distinct_rows} distinct")
    print(json.dumps({"queries": queries, "problems": problems[:20]}))
    return 1 if problems else 0


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(read(sys.argv[2], sys.argv[3], float(sys.argv[4])))
