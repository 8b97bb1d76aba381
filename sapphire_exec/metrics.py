"""The service's Prometheus metrics: exactly the contract in deploy/README.md.

The Grafana dashboard and the alert rules use these names; a new metric needs all three updated.
A registry of its own per service keeps tests (several services in one process) independent.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from sapphire_domain.messages import TradingState

STATE_CODES = {TradingState.ACTIVE: 0, TradingState.REDUCING: 1, TradingState.HALTED: 2}
_LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip


class ExecMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.orders = Counter(
            "sapphire_orders", "Orders by outcome", ["symbol", "side", "status"], registry=r
        )
        self.fills = Counter(
            "sapphire_fills", "Fills received from the venue", ["symbol", "side"], registry=r
        )
        self.risk_denials = Counter(
            "sapphire_risk_denials", "Orders the risk manager refused", ["reason"], registry=r
        )
        self.position = Gauge("sapphire_position", "Position in base units", ["symbol"], registry=r)
        self.position_notional = Gauge(
            "sapphire_position_notional", "Position value in quote", ["symbol"], registry=r
        )
        self.gross_exposure = Gauge(
            "sapphire_gross_exposure", "Sum of absolute position notionals", registry=r
        )
        self.pnl = Gauge("sapphire_pnl", "Profit and loss in the quote currency", registry=r)
        self.drawdown = Gauge("sapphire_drawdown", "Fraction below peak equity", registry=r)
        self.trading_state = Gauge(
            "sapphire_trading_state", "0 ACTIVE, 1 REDUCING, 2 HALTED", registry=r
        )
        self.target_age = Gauge(
            "sapphire_target_age_seconds", "Age of the newest target held", registry=r
        )
        self.bus_lag = Gauge("sapphire_bus_lag_messages", "Targets waiting on the bus", registry=r)
        self.dead_letters = Counter(
            "sapphire_dead_letters", "Messages sent to the dead-letter stream", registry=r
        )
        self.decision_latency = Histogram(
            "sapphire_decision_latency_seconds",
            "From a target read off the bus to its orders handed to the venue",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )

        # Labelled children by label values: ``labels()`` takes a lock and str()s every value,
        # on every order; a child never changes once made.
        self._children: dict[tuple[object, ...], Counter] = {}

    def _count(self, counter: Counter, *values: str) -> None:
        key = (counter, *values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = counter.labels(*values)
        child.inc()

    def count_order(self, symbol: str, side: str, status: str) -> None:
        self._count(self.orders, symbol, side, status)

    def count_fill(self, symbol: str, side: str) -> None:
        self._count(self.fills, symbol, side)

    def count_denial(self, reason: str) -> None:
        self._count(self.risk_denials, reason)

    def set_state(self, state: TradingState) -> None:
        self.trading_state.set(STATE_CODES[state])
