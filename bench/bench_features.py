"""Features benchmark: Sapphire's polars feature maths against the Freqtrade way of computing them.

100 symbols x 30 days of synthetic 1-minute candles (4.32 M rows). The baseline computes the same
feature set as strategies do in Freqtrade: one pandas DataFrame per pair, TA-Lib for RSI, MACD,
ATR and Bollinger bands, pandas rolling windows for the rest, pair by pair in a Python loop.
Each side runs in its own subprocess so that its peak RSS is its own; each repeat frees the
previous repeat's result before it starts, so the peak is that of one computation (plus the
loaded data). The machine may be shared, so the sides take turns (``--rounds`` subprocesses each,
alternating) to see the same load, timings are the best of all repeats with the median beside
it, and the load average is printed with the results.

    .venv/bin/python bench/bench_features.py [--symbols 100] [--days 30] [--repeats 5] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

SIDES = ("sapphire", "baseline")
TARGET_RATIO = 2.0  # sapphire's throughput over the baseline's, at least
TARGET_RSS_MB = 2000  # sapphire's peak RSS, at most (2 GB, read strictly)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def run_sapphire(path: Path, repeats: int) -> dict[str, object]:
    from sapphire_domain.features import compute_features

    candles = pl.read_parquet(path)
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        features = compute_features(candles, "1m")
        timings.append(time.perf_counter() - started)
        assert features.height == candles.height
        del features
    return {"rows": candles.height, "timings": timings}


def _baseline_indicators(frame, talib, pd):  # type: ignore[no-untyped-def]
    close, high, low = frame["close"], frame["high"], frame["low"]
    log_close = np.log(close)
    for horizon in (1, 4, 16, 48):
        frame[f"ret_{horizon}"] = log_close.diff(horizon)
    frame["realized_vol"] = frame["ret_1"].rolling(48).std()
    frame["rsi"] = talib.RSI(close, timeperiod=14)
    line, signal, hist = talib.MACD(close, fastperiod=12, slowperiod=26, signalperiod=9)
    frame["macd"], frame["macd_signal"], frame["macd_hist"] = (
        line / close,
        signal / close,
        hist / close,
    )
    upper, middle, _ = talib.BBANDS(close, timeperiod=20, nbdevup=2.0, nbdevdn=2.0)
    frame["bb_z"] = (close - middle) / ((upper - middle) / 2.0)
    frame["natr"] = talib.ATR(high, low, close, timeperiod=14) / close
    log_volume = np.log1p(frame["volume"])
    volume_window = log_volume.rolling(48)
    frame["volume_z"] = (log_volume - volume_window.mean()) / volume_window.std()
    prev_high, prev_low, prev_close = high.shift(1), low.shift(1), close.shift(1)
    jump = (low - prev_close).clip(lower=0.0) + (high - prev_close).clip(upper=0.0)
    adj_high, adj_low = high - jump, low - jump
    beta = np.log(prev_high / prev_low) ** 2 + np.log(adj_high / adj_low) ** 2
    gamma = np.log(np.maximum(prev_high, adj_high) / np.minimum(prev_low, adj_low)) ** 2
    k = 3.0 - 2.0 * np.sqrt(2.0)
    alpha = (np.sqrt(2.0) - 1.0) / k * np.sqrt(beta) - np.sqrt(gamma / k)
    frame["cs_spread"] = (2.0 * np.tanh(alpha / 2.0)).clip(lower=0.0).rolling(48).mean()
    step = frame["date"].diff()
    gap = step != pd.Timedelta(minutes=1)
    frame["gap_before"] = gap
    run = gap.cumsum()
    frame["bars_since_gap"] = frame.groupby(run).cumcount().clip(upper=400)
    return frame


def run_baseline(path: Path, repeats: int) -> dict[str, object]:
    import pandas as pd
    import talib

    table = pd.read_parquet(path).rename(columns={"ts": "date"})
    # Freqtrade keeps one DataFrame per pair; building them is not timed.
    pairs = {pair: frame.reset_index(drop=True) for pair, frame in table.groupby("symbol")}
    rows = len(table)
    del table
    timings = []
    for _ in range(repeats):
        frames = {pair: frame.copy() for pair, frame in pairs.items()}
        started = time.perf_counter()
        for pair, frame in frames.items():
            frames[pair] = _baseline_indicators(frame, talib, pd)
        timings.append(time.perf_counter() - started)
        del frames
    return {"rows": rows, "timings": timings}


def child(side: str, path: Path, repeats: int) -> None:
    result = (run_sapphire if side == "sapphire" else run_baseline)(path, repeats)
    result["peak_rss_mb"] = _peak_rss_mb()
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        child(args.side, args.data, args.repeats)
        return

    from rich.console import Console
    from rich.table import Table

    from sapphire_domain.synthetic import generate_candles

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "candles.parquet"
        generate_candles(args.symbols, args.days, "1m", seed=0).write_parquet(path)
        runs: dict[str, list[dict]] = {side: [] for side in SIDES}
        for _ in range(args.rounds):
            for side in SIDES:
                command = [sys.executable, __file__, "--side", side, "--data", str(path)]
                command += ["--repeats", str(args.repeats)]
                output = subprocess.run(command, check=True, capture_output=True, text=True)
                runs[side].append(json.loads(output.stdout.strip().splitlines()[-1]))
    load_after = os.getloadavg()

    title = f"Features: {args.symbols} symbols x {args.days} days of 1m candles"
    table = Table(title=title)
    columns = ("side", "rows", "best of", "seconds", "median s", "rows/s", "peak RSS (MB)")
    for column in columns:
        table.add_column(column, justify="right")
    results = {}
    for side, side_runs in runs.items():
        timings = [t for run in side_runs for t in run["timings"]]
        results[side] = result = {
            "rows": side_runs[0]["rows"],
            "seconds": min(timings),
            "median_seconds": statistics.median(timings),
            "peak_rss_mb": max(run["peak_rss_mb"] for run in side_runs),
        }
        table.add_row(
            side,
            f"{result['rows']:,}",
            f"{len(timings)}",
            f"{result['seconds']:.2f}",
            f"{result['median_seconds']:.2f}",
            f"{result['rows'] / result['seconds']:,.0f}",
            f"{result['peak_rss_mb']:,.0f}",
        )
    console = Console(width=110)
    console.print(table)
    ratio = results["baseline"]["seconds"] / results["sapphire"]["seconds"]
    median_ratio = results["baseline"]["median_seconds"] / results["sapphire"]["median_seconds"]
    rss = results["sapphire"]["peak_rss_mb"]
    console.print(
        f"throughput ratio sapphire / baseline: {ratio:.2f}x best, {median_ratio:.2f}x median "
        f"(target >= {TARGET_RATIO:.0f}x: {'met' if ratio >= TARGET_RATIO else 'MISSED'})"
    )
    console.print(
        f"sapphire peak RSS {rss:,.0f} MB "
        f"(target <= {TARGET_RSS_MB:,} MB: {'met' if rss <= TARGET_RSS_MB else 'MISSED'})"
    )
    loads = ", ".join(f"{x:.2f}" for x in (*load_before, *load_after))
    console.print(f"load average (1, 5, 15 min) before / after: {loads} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
