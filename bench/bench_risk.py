"""Risk check benchmark: the pre-trade risk check alone, and order planning, for a 20-symbol target.

Every order of a 20-symbol plan passes ``RiskEngine.check`` with all checks on (the rate limit
is set high enough never to deny, so every call runs the full path, gross exposure included).
Each call is timed on its own with ``perf_counter_ns``; the figures include that timer's cost.
``RiskEngine.check_plan`` (what the service calls: the 20 checks of one plan, each on the
positions the earlier orders leave) and ``plan_orders`` are timed per target, from 20 held
positions to a new 20-symbol target.

    .venv/bin/python bench/bench_risk.py [--checks 200000] [--plans 20000]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from datetime import UTC, datetime, timedelta

from rich.console import Console
from rich.table import Table

from sapphire_domain.messages import TargetPortfolio, TargetPosition
from sapphire_domain.orders import OrderIntent, plan_orders
from sapphire_domain.risk import RiskConfig, RiskEngine

SYMBOLS = [f"COIN{i:02d}/USDT:USDT" for i in range(20)]
NOW_MS = int(datetime(2026, 11, 22, 12, tzinfo=UTC).timestamp() * 1000)
EQUITY = 1_000_000.0


def _setup() -> tuple[TargetPortfolio, dict[str, float], dict[str, float], list[OrderIntent]]:
    now = datetime.fromtimestamp(NOW_MS / 1000, tz=UTC)
    weights = [(0.09 if i % 2 else -0.06) * (1 + i / 40) for i in range(len(SYMBOLS))]
    target = TargetPortfolio(
        version=42,
        created_at=now - timedelta(seconds=5),
        valid_until=now + timedelta(minutes=5),
        positions=tuple(
            TargetPosition(symbol=s, weight=w) for s, w in zip(SYMBOLS, weights, strict=True)
        ),
    )
    prices = {s: 10.0 * (i + 1) for i, s in enumerate(SYMBOLS)}
    # Held at 70% of target, so the plan has an order on every symbol, all growing exposure.
    positions = {s: 0.7 * w * EQUITY / prices[s] for s, w in zip(SYMBOLS, weights, strict=True)}
    orders = plan_orders(
        target, positions, prices, EQUITY, lot_sizes=0.001, no_trade_band=0.0005, min_notional=5.0
    )
    assert len(orders) == len(SYMBOLS)
    return target, positions, prices, orders


CONFIG = RiskConfig(
    max_order_notional=100_000.0,
    max_position_notional=200_000.0,
    max_gross_exposure=3.0,
    max_orders_per_interval=10**9,
    order_rate_interval_ms=1_000,
    price_collar_bps=50.0,
    min_notional=5.0,
    max_price_age_ms=5_000,
)


def bench_checks(n: int) -> list[int]:
    target, positions, prices, orders = _setup()
    engine = RiskEngine(CONFIG)
    timings = [0] * n
    clock = time.perf_counter_ns
    count = len(orders)
    for i in range(n):
        order = orders[i % count]
        now_ms = NOW_MS + i // 100  # 100 checks per simulated millisecond
        started = clock()
        decision = engine.check(
            order,
            target=target,
            now_ms=now_ms,
            market_price=prices[order.symbol],
            price_ts_ms=now_ms - 200,
            positions=positions,
            prices=prices,
            equity=EQUITY,
        )
        timings[i] = clock() - started
        if not decision.approved:
            raise AssertionError(f"benchmark order denied: {decision}")
    return timings


def bench_check_plans(n: int) -> list[int]:
    target, positions, prices, orders = _setup()
    engine = RiskEngine(CONFIG)
    timings = [0] * n
    clock = time.perf_counter_ns
    for i in range(n):
        now_ms = NOW_MS + i // 5  # 100 checks per simulated millisecond
        times = dict.fromkeys(prices, now_ms - 200)
        started = clock()
        decisions = engine.check_plan(
            orders,
            target=target,
            now_ms=now_ms,
            price_times=times,
            positions=positions,
            prices=prices,
            equity=EQUITY,
        )
        timings[i] = clock() - started
        if not all(d.approved for d in decisions):
            raise AssertionError(f"benchmark order denied: {decisions}")
    return timings


def bench_plans(n: int) -> list[int]:
    target, positions, prices, _ = _setup()
    timings = [0] * n
    clock = time.perf_counter_ns
    for i in range(n):
        started = clock()
        plan_orders(
            target,
            positions,
            prices,
            EQUITY,
            lot_sizes=0.001,
            no_trade_band=0.0005,
            min_notional=5.0,
        )
        timings[i] = clock() - started
    return timings


def _row(name: str, timings: list[int], batch: int) -> tuple[str, ...]:
    ordered = sorted(timings)
    p50 = ordered[len(ordered) // 2] / 1e3
    p99 = ordered[int(len(ordered) * 0.99)] / 1e3
    mean = statistics.fmean(timings) / 1e3
    # The mean of the fastest run of ``batch`` consecutive calls: what a call costs when the
    # process is not preempted, which on a shared machine the overall mean and p99 are not.
    best = min(
        statistics.fmean(timings[i : i + batch]) for i in range(0, len(timings) - batch + 1, batch)
    )
    return name, f"{len(timings):,}", f"{mean:.2f}", f"{p50:.2f}", f"{p99:.2f}", f"{best / 1e3:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checks", type=int, default=200_000)
    parser.add_argument("--plans", type=int, default=20_000)
    args = parser.parse_args()

    bench_checks(2_000)  # warm up (numba's lot rounding compiles or loads from cache here)
    bench_plans(200)
    checks = bench_checks(args.checks)
    check_plans = bench_check_plans(args.plans)
    plans = bench_plans(args.plans)

    table = Table(
        title=f"Risk check and order planning, 20-symbol target ({platform.python_version()})"
    )
    for column in ("what", "calls", "mean µs", "p50 µs", "p99 µs", "best-batch mean µs"):
        table.add_column(column, justify="left" if column == "what" else "right")
    table.add_row(*_row("RiskEngine.check (per order)", checks, batch=1_000))
    table.add_row(*_row("RiskEngine.check_plan (per 20-order plan)", check_plans, batch=100))
    table.add_row(*_row("plan_orders (per 20-symbol target)", plans, batch=100))
    per_target = sorted(checks)[int(len(checks) * 0.99)] * 20 / 1e3
    console = Console(width=120)
    console.print(table)
    console.print(f"20 checks at the p99 of one check: {per_target:.1f} µs per target")


if __name__ == "__main__":
    main()
