"""Backtest benchmark: Sapphire's engine against vectorbt and backtesting.py.

100 symbols x 100,000 one-minute bars (10 M bar-cells) of geometric random-walk prices built with
numpy (the engine does not care where prices come from, and the candle generator would dominate
the setup). Costs: 5 bps taker fee, 1 bps slippage. Two workloads:

- ``every bar``: the momentum baseline (sign of the 48-bar return, 1/100 of equity per symbol,
  long and short) re-targeted every bar. Constant |weights| against drifting prices make every
  bar-cell an order (about 10 M orders): the heaviest case for an engine.
- ``daily``: the sign of the 1,440-bar return, decided once a day and held: an order only where
  the target changes (a few thousand orders), so the per-cell loop dominates. vectorbt gets an
  order (a target percent) only on the bars where the target changes; Sapphire re-targets every
  bar, with a no-trade band of 90% of a position (0.9% of equity; an entry is 1%, a flip 2%), so
  it trades drift only where a position has grown to almost twice its target (3 orders more
  than vectorbt's 3,557 here; final equity within 0.1%).

Sides, each timed as a user calls it, on inputs built before the clock starts:

- sapphire: ``run_backtest(weights, market, config)`` (numba), which returns equity, cash,
  positions and costs per bar and every fill (bar, symbol, quantity, price, reference price, fee,
  slippage cost). Compile time is reported on its own: "warm-up" is a first run on a small market,
  which loads the numba cache (``cache=True``); "cold compile" is that run with an empty cache.
- vectorbt: ``Portfolio.from_orders`` with the same weights as target percents, shifted one bar and
  filled at the open, one shared cash pool, ``call_seq="auto"`` (sells before buys), the same fee
  and slippage; warmed up on a small market first ("warm-up"). On every bar it reaches the same
  final equity and, within 0.01%, the same order count, so the simulations are equivalent.
- backtesting.py: one symbol (100,000 bars), the every-bar signal, flipped with ``buy``/``sell``
  at the next open (it holds between flips; a few thousand trades). Compared twice: its bar-cells
  per second against Sapphire's 100-symbol rate, and Sapphire running the same strategy on the
  same symbol (lot size 1, fees only, a 50% no-trade band so that it also holds between flips).

Each side runs in its own subprocess so that its peak RSS is its own: "peak RSS" is the process's
high-water mark (inputs included), "run RSS" what the timed calls added on top of the inputs (the
high-water mark is reset after the setup). Every timed call is repeated (``--repeat``): the first
call in a process pays for fresh memory pages (the kernel zeroes them), later ones reuse freed
pages. The first, the best and the median wall time are shown, and the best CPU time (steadier
than wall time on a shared machine); the rates use the best wall time.

    .venv/bin/python bench/bench_backtest.py [--symbols 100] [--bars 100000] [--bt-bars 100000]
        [--repeat 3]
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
from collections.abc import Callable
from typing import Any

import numpy as np

FEE = 5e-4
SLIPPAGE = 1e-4
LOOKBACK = 48
DAY = 1_440
WORKLOADS = ("every bar", "daily")


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def prices(symbols: int, bars: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(open, close): a geometric random walk, built in place to keep the setup's memory low."""
    rng = np.random.default_rng(seed)
    close = rng.normal(0.0, 0.002, (bars, symbols))
    np.cumsum(close, axis=0, out=close)
    close += np.log(100.0)
    np.exp(close, out=close)
    open_ = rng.normal(0, 0.0003, (bars, symbols))
    np.exp(open_, out=open_)
    open_[0] *= close[0]
    open_[1:] *= close[:-1]
    return open_, close


def momentum_weights(close: np.ndarray) -> np.ndarray:
    weights = np.zeros_like(close)
    np.subtract(close[LOOKBACK:], close[:-LOOKBACK], out=weights[LOOKBACK:])
    np.sign(weights, out=weights)
    weights /= close.shape[1]
    return weights


def daily_weights(close: np.ndarray) -> np.ndarray:
    """The sign of the last day's return, decided once a day and held until the next decision."""
    decided = np.arange(DAY, close.shape[0], DAY)
    weights = np.zeros_like(close)
    for start, end in zip(decided, [*decided[1:], close.shape[0]], strict=True):
        weights[start:end] = np.sign(close[start] - close[start - DAY]) / close.shape[1]
    return weights


def workload(name: str, symbols: int, bars: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    open_, close = prices(symbols, bars, seed)
    weights = momentum_weights(close) if name == "every bar" else daily_weights(close)
    return open_, close, weights


def _timed(call: Callable[[], Any], repeat: int) -> tuple[Any, list[float], list[float]]:
    """The last result, and the wall and CPU seconds of each call."""
    seconds, cpu = [], []
    result = None
    for _ in range(repeat):
        result = None  # the previous result is freed before the next run, as in a loop of runs
        started, started_cpu = time.perf_counter(), time.process_time()
        result = call()
        seconds.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    return result, seconds, cpu


def _summary(timed: tuple[Any, list[float], list[float]], cells: int, before_kb: int) -> dict:
    _, seconds, cpu = timed
    return {
        "first": seconds[0],
        "best": min(seconds),
        "median": statistics.median(seconds),
        "cpu": min(cpu),
        "cells": cells,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "run_rss_mb": (_status_kb("VmHWM") - before_kb) / 1024,
    }


def run_sapphire(name: str, symbols: int, bars: int, repeat: int) -> dict[str, Any]:
    from sapphire_domain.backtest import BacktestConfig, MarketData, run_backtest
    from sapphire_domain.fill_model import CostModel

    def market(open_: np.ndarray, close: np.ndarray) -> MarketData:
        return MarketData(
            ts=np.arange(close.shape[0], dtype=np.int64) * 60_000,
            symbols=tuple(f"S{j}" for j in range(close.shape[1])),
            open=open_,
            high=np.maximum(open_, close),
            low=np.minimum(open_, close),
            close=close,
            volume=np.full_like(close, 1e6),
        )

    config = BacktestConfig(
        cost_model=CostModel(taker_fee_bps=FEE * 1e4, slippage_bps=SLIPPAGE * 1e4),
        rebalance_band=0.9 / symbols if name == "daily" else 0.0,
    )
    small_open, small_close = prices(2, 3 * DAY, seed=1)
    started = time.perf_counter()
    run_backtest(momentum_weights(small_close), market(small_open, small_close), config)
    warm_up = time.perf_counter() - started

    open_, close, weights = workload(name, symbols, bars)
    data = market(open_, close)
    _reset_peak_rss()
    before = _status_kb("VmRSS")
    timed = _timed(lambda: run_backtest(weights, data, config), repeat)
    result = timed[0]
    if not np.isclose(result.fill_fee.sum(), result.fees.sum(), rtol=1e-9):
        raise AssertionError("the fills' fees do not add up to the fees per bar")
    return {
        **_summary(timed, symbols * bars, before),
        "warm_up": warm_up,
        "final_equity": float(result.equity[-1]),
        "orders": result.fill_count,
    }


def run_vectorbt(name: str, symbols: int, bars: int, repeat: int) -> dict[str, Any]:
    import vectorbt as vbt

    def target_percent(weights: np.ndarray) -> np.ndarray:
        # Row t + 1 trades the weight decided at t; the daily workload orders only on changes.
        size = np.full_like(weights, np.nan)
        size[1:] = weights[:-1]
        if name == "daily":
            unchanged = np.zeros_like(weights, dtype=bool)
            unchanged[2:] = weights[1:-1] == weights[:-2]
            size[unchanged] = np.nan
        return size

    def simulate(open_: np.ndarray, close: np.ndarray, size: np.ndarray) -> Any:
        return vbt.Portfolio.from_orders(
            close,
            size=size,
            size_type="targetpercent",
            price=open_,
            fees=FEE,
            slippage=SLIPPAGE,
            init_cash=10_000.0,
            cash_sharing=True,
            group_by=True,
            call_seq="auto",
            freq="1min",
        )

    small_open, small_close = prices(2, 3 * DAY, seed=1)
    started = time.perf_counter()
    simulate(small_open, small_close, target_percent(momentum_weights(small_close)))
    warm_up = time.perf_counter() - started
    open_, close, weights = workload(name, symbols, bars)
    size = target_percent(weights)
    del weights
    _reset_peak_rss()
    before = _status_kb("VmRSS")
    timed = _timed(lambda: simulate(open_, close, size), repeat)
    portfolio = timed[0]
    return {
        **_summary(timed, symbols * bars, before),
        "warm_up": warm_up,
        "final_equity": float(portfolio.final_value()),
        "orders": int(portfolio.orders.count()),
    }


def one_symbol(bars: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The backtesting.py case: one symbol, the every-bar signal, 99% of equity long or short."""
    open_, close = prices(1, bars)
    return open_, close, 0.99 * np.sign(momentum_weights(close))


def run_backtesting_py(bars: int, repeat: int) -> dict[str, Any]:
    import pandas as pd
    from backtesting import Backtest, Strategy

    open_, close, signal = one_symbol(bars)
    frame = pd.DataFrame(
        {
            "Open": open_[:, 0],
            "High": np.maximum(open_, close)[:, 0],
            "Low": np.minimum(open_, close)[:, 0],
            "Close": close[:, 0],
            "Volume": 1e6,
        },
        index=pd.date_range("2024-01-01", periods=bars, freq="1min"),
    )
    wanted = signal[:, 0]

    class Momentum(Strategy):  # type: ignore[misc]
        def init(self) -> None:
            self.signal = self.I(lambda: wanted, name="signal")

        def next(self) -> None:
            if self.signal[-1] > 0 and not self.position.is_long:
                self.position.close()
                self.buy(size=0.99)
            elif self.signal[-1] < 0 and not self.position.is_short:
                self.position.close()
                self.sell(size=0.99)

    test = Backtest(frame, Momentum, cash=1e9, commission=FEE, finalize_trades=True)
    _reset_peak_rss()
    before = _status_kb("VmRSS")
    timed = _timed(test.run, repeat)
    stats = timed[0]
    return {
        **_summary(timed, bars, before),
        "warm_up": 0.0,
        "final_equity": float(stats["Equity Final [$]"]),
        "orders": int(stats["# Trades"]),
    }


def run_sapphire_one_symbol(bars: int, repeat: int) -> dict[str, Any]:
    from sapphire_domain.backtest import BacktestConfig, MarketData, run_backtest
    from sapphire_domain.fill_model import CostModel

    open_, close, weights = one_symbol(bars)
    data = MarketData(
        ts=np.arange(bars, dtype=np.int64) * 60_000,
        symbols=("S0",),
        open=open_,
        high=np.maximum(open_, close),
        low=np.minimum(open_, close),
        close=close,
        volume=np.full_like(close, 1e6),
    )
    model = CostModel(taker_fee_bps=FEE * 1e4, slippage_bps=0, impact_coefficient=0, lot_size=1)
    config = BacktestConfig(cost_model=model, initial_cash=1e9, rebalance_band=0.5)
    started = time.perf_counter()
    run_backtest(weights[:200], data.head(200), config)
    warm_up = time.perf_counter() - started
    _reset_peak_rss()
    before = _status_kb("VmRSS")
    timed = _timed(lambda: run_backtest(weights, data, config), repeat)
    result = timed[0]
    return {
        **_summary(timed, bars, before),
        "warm_up": warm_up,
        "final_equity": float(result.equity[-1]),
        "orders": result.fill_count,
    }


def _child(args: argparse.Namespace) -> dict[str, Any]:
    side, name = args.side, args.workload
    if side == "sapphire":
        return run_sapphire(name, args.symbols, args.bars, args.repeat)
    if side == "vectorbt":
        return run_vectorbt(name, args.symbols, args.bars, args.repeat)
    if side == "backtesting.py":
        return run_backtesting_py(args.bt_bars, args.repeat)
    return run_sapphire_one_symbol(args.bt_bars, args.repeat)


def _spawn(side: str, name: str, args: list[str], env: dict[str, str] | None = None) -> dict:
    command = [sys.executable, __file__, "--side", side, "--workload", name, *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"{side} ({name}) failed")
    out: dict = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--bars", type=int, default=100_000)
    parser.add_argument("--bt-bars", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("--workload", default="every bar", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(json.dumps(_child(args)))
        return
    passed = sys.argv[1:]
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as empty_cache:
        cold = _spawn(
            "sapphire",
            "every bar",
            [*passed, "--symbols", "2", "--bars", "200", "--repeat", "1"],
            env={**os.environ, "NUMBA_CACHE_DIR": empty_cache},
        )["warm_up"]
    rows: dict[tuple[str, str], dict] = {}
    for name in WORKLOADS:
        for side in ("sapphire", "vectorbt"):
            rows[(name, side)] = _spawn(side, name, passed)
            load.append(os.getloadavg()[0])
    for side in ("backtesting.py", "sapphire 1 symbol"):
        rows[("1 symbol", side)] = _spawn(side, "every bar", passed)
        load.append(os.getloadavg()[0])
    _report(rows, cold, load)


def _report(rows: dict[tuple[str, str], dict], cold_compile: float, load: list[float]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"backtest; load average (1 min) {min(load):.1f}-{max(load):.1f}")
    columns = ("workload", "side", "bar-cells", "1st s", "best s", "median s", "CPU s", "M cells/s")
    for column in (*columns, "warm-up s", "peak RSS MB", "run RSS MB", "orders", "final equity"):
        table.add_column(column, justify="right")
    for (name, side), out in rows.items():
        out["rate"] = out["cells"] / out["best"]
        table.add_row(
            name,
            side,
            f"{out['cells']:,}",
            f"{out['first']:.3f}",
            f"{out['best']:.3f}",
            f"{out['median']:.3f}",
            f"{out['cpu']:.3f}",
            f"{out['rate'] / 1e6:.2f}",
            f"{out['warm_up']:.2f}",
            f"{out['rss_mb']:.0f}",
            f"{out['run_rss_mb']:.0f}",
            f"{out['orders']:,}",
            f"{out['final_equity']:,.2f}",
        )
    console = Console(width=160)
    console.print(table)
    for name in WORKLOADS:
        ours, theirs = rows[(name, "sapphire")], rows[(name, "vectorbt")]
        console.print(
            f"{name}: ratio vs vectorbt {ours['rate'] / theirs['rate']:.2f} best, "
            f"{theirs['median'] / ours['median']:.2f} median, {theirs['first'] / ours['first']:.2f}"
            f" first call, {theirs['cpu'] / ours['cpu']:.2f} CPU time (target >= 1.0)"
        )
    bt, ours_one = rows[("1 symbol", "backtesting.py")], rows[("1 symbol", "sapphire 1 symbol")]
    per_cell = rows[("every bar", "sapphire")]["rate"] / bt["rate"]
    console.print(
        f"vs backtesting.py (target >= 100x): {per_cell:.0f}x per bar-cell (every bar, all "
        f"symbols), {bt['best'] / ours_one['best']:.0f}x on the same strategy and symbol "
        f"({bt['cpu'] / ours_one['cpu']:.0f}x CPU time); cold numba compile {cold_compile:.1f} s"
    )


if __name__ == "__main__":
    main()
