"""Backtest benchmark: Sapphire's engine against vectorbt and backtesting.py.

100 symbols x 100,000 bars (10 M bar-cells) of geometric random-walk prices built with numpy (the
engine does not care where prices come from, and the candle generator would dominate the setup).
The strategy is the momentum baseline (sign of the 48-bar return, equal weight, long and short),
which trades often: every sign flip is an order. Costs: 5 bps taker fee, 1 bps slippage.

- sapphire: ``run_backtest`` (numba), warmed up on a small market first; compile time reported.
- vectorbt: ``Portfolio.from_orders`` with the same weights as target percents, one shared cash
  pool, ``call_seq="auto"`` (sells before buys), the weights shifted one bar and filled at the
  open, the same fee and slippage. Its numba functions are warmed up the same way.
- backtesting.py: one symbol (100,000 bars), the same signal, ``position`` flipped with
  ``buy``/``sell`` at the next open; its bar-cells per second is compared as is (it simulates one
  instrument per run, so 100 symbols would take 100 times as long).

Each side runs in its own subprocess so that its peak RSS is its own.

    .venv/bin/python bench/bench_backtest.py [--symbols 100] [--bars 100000] [--bt-bars 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

FEE = 5e-4
SLIPPAGE = 1e-4
LOOKBACK = 48


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def prices(symbols: int, bars: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    log_close = np.cumsum(rng.normal(0.0, 0.002, (bars, symbols)), axis=0) + np.log(100.0)
    close = np.exp(log_close)
    open_ = np.vstack([close[:1], close[:-1]]) * np.exp(rng.normal(0, 0.0003, (bars, symbols)))
    return open_, close


def momentum_weights(close: np.ndarray) -> np.ndarray:
    weights = np.zeros_like(close)
    weights[LOOKBACK:] = np.sign(close[LOOKBACK:] - close[:-LOOKBACK]) / close.shape[1]
    return weights


def run_sapphire(symbols: int, bars: int) -> dict[str, float]:
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
        max_leverage=1.0,
    )
    small_open, small_close = prices(2, 200, seed=1)
    started = time.perf_counter()
    run_backtest(momentum_weights(small_close), market(small_open, small_close), config)
    compile_s = time.perf_counter() - started

    open_, close = prices(symbols, bars)
    weights = momentum_weights(close)
    data = market(open_, close)
    started = time.perf_counter()
    result = run_backtest(weights, data, config)
    elapsed = time.perf_counter() - started
    return {
        "seconds": elapsed,
        "compile_seconds": compile_s,
        "final_equity": float(result.equity[-1]),
        "orders": result.fill_count,
        "cells": symbols * bars,
        "rss_mb": _peak_rss_mb(),
    }


def run_vectorbt(symbols: int, bars: int) -> dict[str, float]:
    import vectorbt as vbt

    def simulate(open_: np.ndarray, close: np.ndarray) -> object:
        size = np.vstack([np.full((1, close.shape[1]), np.nan), momentum_weights(close)[:-1]])
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

    small_open, small_close = prices(2, 200, seed=1)
    started = time.perf_counter()
    simulate(small_open, small_close)
    compile_s = time.perf_counter() - started
    open_, close = prices(symbols, bars)
    started = time.perf_counter()
    portfolio = simulate(open_, close)
    elapsed = time.perf_counter() - started
    return {
        "seconds": elapsed,
        "compile_seconds": compile_s,
        "final_equity": float(portfolio.final_value()),  # type: ignore[attr-defined]
        "orders": int(portfolio.orders.count()),  # type: ignore[attr-defined]
        "cells": symbols * bars,
        "rss_mb": _peak_rss_mb(),
    }


def run_backtesting_py(bars: int) -> dict[str, float]:
    import pandas as pd
    from backtesting import Backtest, Strategy

    open_, close = prices(1, bars)
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
    signal = momentum_weights(close)[:, 0]

    class Momentum(Strategy):  # type: ignore[misc]
        def init(self) -> None:
            self.signal = self.I(lambda: signal, name="signal")

        def next(self) -> None:
            wanted = self.signal[-1]
            if wanted > 0 and not self.position.is_long:
                self.position.close()
                self.buy(size=0.99)
            elif wanted < 0 and not self.position.is_short:
                self.position.close()
                self.sell(size=0.99)

    test = Backtest(frame, Momentum, cash=1e9, commission=FEE, finalize_trades=True)
    started = time.perf_counter()
    stats = test.run()
    elapsed = time.perf_counter() - started
    return {
        "seconds": elapsed,
        "compile_seconds": 0.0,
        "final_equity": float(stats["Equity Final [$]"]),
        "orders": int(stats["# Trades"]),
        "cells": bars,
        "rss_mb": _peak_rss_mb(),
    }


def _child(side: str, args: argparse.Namespace) -> None:
    if side == "sapphire":
        out = run_sapphire(args.symbols, args.bars)
    elif side == "vectorbt":
        out = run_vectorbt(args.symbols, args.bars)
    else:
        out = run_backtesting_py(args.bt_bars)
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--bars", type=int, default=100_000)
    parser.add_argument("--bt-bars", type=int, default=100_000)
    parser.add_argument("--side", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        _child(args.side, args)
        return
    results = {}
    for side in ("sapphire", "vectorbt", "backtesting.py"):
        command = [sys.executable, __file__, "--side", side, *sys.argv[1:]]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"{side} failed")
        results[side] = json.loads(done.stdout.strip().splitlines()[-1])

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"backtest, load average {os.getloadavg()[0]:.1f}")
    for column in ("side", "bar-cells", "seconds", "M cells/s", "compile s", "peak RSS MB"):
        table.add_column(column, justify="right")
    table.add_column("orders", justify="right")
    table.add_column("final equity", justify="right")
    for side, out in results.items():
        rate = out["cells"] / out["seconds"]
        out["rate"] = rate
        table.add_row(
            side,
            f"{out['cells']:,}",
            f"{out['seconds']:.3f}",
            f"{rate / 1e6:.2f}",
            f"{out['compile_seconds']:.1f}",
            f"{out['rss_mb']:.0f}",
            f"{out['orders']:,}",
            f"{out['final_equity']:,.2f}",
        )
    console = Console()
    console.print(table)
    ours = results["sapphire"]["rate"]
    console.print(
        f"ratio vs vectorbt: {ours / results['vectorbt']['rate']:.2f} (target >= 1.0); "
        f"vs backtesting.py: {ours / results['backtesting.py']['rate']:.0f}x (target >= 100x)"
    )


if __name__ == "__main__":
    main()
