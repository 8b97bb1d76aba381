"""Two real Dagster runs writing the same partitions while an analyst queries through SQL."""

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from tests.warehouse.bqemulator import PROJECT_ROOT
from tests.warehouse.warehouse_defs import ROWS_PER_DAY

WORKERS = "tests.warehouse.concurrency_workers"
RUNS_PER_WRITER = 10


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", WORKERS, *args],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_concurrent_writers_and_a_reader_never_see_partial_or_duplicate_data(
    tmp_path: Path,
) -> None:
    root = tmp_path / "warehouse"
    stop = tmp_path / "stop"
    reader = _start("read", str(root), str(stop), "180")
    writers = [_start("write", str(root), str(RUNS_PER_WRITER)) for _ in range(2)]
    try:
        writer_results = [w.communicate(timeout=240) for w in writers]
    finally:
        stop.touch()
        reader_out, reader_err = reader.communicate(timeout=60)
        for process in (*writers, reader):
            if process.poll() is None:
                process.kill()

    for writer, (_out, err) in zip(writers, writer_results, strict=True):
        assert writer.returncode == 0, err[-3000:]
    assert reader.returncode == 0, reader_out + reader_err[-3000:]
    report = json.loads(reader_out.strip().splitlines()[-1])
    assert report["problems"] == []
    assert report["queries"] >= 10  # the reader really overlapped the writes

    table = root / "candles"
    assert sorted(p.name for p in table.iterdir()) == [
        "2024-01-01.parquet",
        "2024-01-02.parquet",
        "2024-01-03.parquet",
    ]
    for path in table.iterdir():
        frame = pl.read_parquet(path)
        assert frame.height == ROWS_PER_DAY
        assert frame.select("ts", "symbol").is_unique().all()
        assert frame["run_id"].n_unique() == 1
