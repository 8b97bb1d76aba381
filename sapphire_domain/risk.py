"""The pre-trade risk engine and the trading state machine, free of I/O.

Every order the service wants to place passes ``RiskEngine.check``, which runs the checks below
in this order and stops at the first that fails; a denial names its ``DenialReason``:

 1. TRADING_HALTED      the state is HALTED: nothing passes.
 2. INVALID_ORDER       a quantity, price, position or equity that is not a positive (or, for a
                        position, finite) number.
 3. TRADING_REDUCING    the state is REDUCING and the order does not reduce exposure: it must
                        both be planned as reducing (``reduces_exposure``) and move the position
                        in ``positions`` toward zero without crossing it. Either alone is not
                        trusted: the flag can be wrong, and the positions may not yet show an
                        earlier leg of the same plan.
 4. TARGET_MISMATCH     the order was planned for another target version than ``target``.
 5. STALE_TARGET        ``now >= target.valid_until``.
 6. STALE_PRICE         the market price is older than ``max_price_age_ms``.
 7. PRICE_COLLAR        the order's reference price is too far from the market price, either way.
 8. MIN_NOTIONAL        the order is smaller than ``min_notional``.
 9. MAX_ORDER_NOTIONAL  the order is larger than ``max_order_notional``.
10. MAX_POSITION        the order grows a position beyond ``max_position_notional``.
11. MISSING_PRICE       the order grows gross exposure and another held symbol has no usable
                        price, so the exposure cannot be known (fail closed).
12. MAX_GROSS_EXPOSURE  the order grows gross exposure beyond ``max_gross_exposure`` x equity.
13. RATE_LIMIT          ``max_orders_per_interval`` orders were already approved in the last
                        ``order_rate_interval_ms``.

The state checks come first so an operator sees why nothing trades; the rate limit comes last so
that only orders which would otherwise go out use up the budget. Limits on position and exposure
apply only to orders that grow them, so a position that is over its limit (after a price move)
can always be reduced. Notionals are taken at the market price.

Trading states: ACTIVE -> REDUCING (``reduce_only``) -> HALTED (``halt``, a daily loss or
drawdown breach seen by ``on_equity``, a burst of venue errors seen by ``on_error``). Only
``reset`` with the right token leads back to ACTIVE. Each transition returns a
``messages.RiskEvent`` whose ``reason`` starts with a ``RiskEventReason`` code; free text (the
operator's words, the last error) follows after ": ".

The engine is not thread-safe; the service calls it from one event loop.
"""

from __future__ import annotations

import hmac
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sapphire_domain.errors import ConfigError, SapphireError
from sapphire_domain.messages import RiskEvent, Side, TargetPortfolio, TradingState
from sapphire_domain.orders import OrderIntent

DAY_MS = 86_400_000
SNAPSHOT_SCHEMA = 1
_QUANTITY_TOLERANCE = 1e-9  # relative; an order for "all of" a position may carry float noise


class DenialReason(StrEnum):
    TRADING_HALTED = "TRADING_HALTED"
    INVALID_ORDER = "INVALID_ORDER"
    TRADING_REDUCING = "TRADING_REDUCING"
    TARGET_MISMATCH = "TARGET_MISMATCH"
    STALE_TARGET = "STALE_TARGET"
    STALE_PRICE = "STALE_PRICE"
    PRICE_COLLAR = "PRICE_COLLAR"
    MIN_NOTIONAL = "MIN_NOTIONAL"
    MAX_ORDER_NOTIONAL = "MAX_ORDER_NOTIONAL"
    MAX_POSITION = "MAX_POSITION"
    MISSING_PRICE = "MISSING_PRICE"
    MAX_GROSS_EXPOSURE = "MAX_GROSS_EXPOSURE"
    RATE_LIMIT = "RATE_LIMIT"


class RiskEventReason(StrEnum):
    """The code at the start of every ``RiskEvent.reason`` the engine emits."""

    MAX_DAILY_LOSS = "MAX_DAILY_LOSS"
    MAX_DRAWDOWN = "MAX_DRAWDOWN"
    INVALID_EQUITY = "INVALID_EQUITY"  # equity not a positive finite number: fail closed
    ERROR_BURST = "ERROR_BURST"
    MANUAL_HALT = "MANUAL_HALT"
    MANUAL_REDUCE = "MANUAL_REDUCE"
    RESET = "RESET"


class RiskStateError(SapphireError):
    """A risk state snapshot is unreadable, or a transition is not allowed from this state."""


class ResetRefusedError(SapphireError):
    """A reset was attempted without the right token; the trading state is unchanged."""


@dataclass(frozen=True)
class RiskConfig:
    """Limits of the pre-trade risk engine. Money is in the quote currency (e.g. USDT).

    max_order_notional (float, 10_000.0): largest notional of one order.
    max_position_notional (float, 25_000.0): largest absolute notional of one symbol's position
        after an order that grows it.
    max_gross_exposure (float, 2.0): largest sum of absolute position notionals, as a multiple
        of equity (a leverage), after an order that grows it. A multiple rather than an amount,
        so the limit scales with the account.
    max_orders_per_interval (int, 10): orders approved per sliding window of
        ``order_rate_interval_ms``; one more within the window is denied.
    order_rate_interval_ms (int, 1_000): length of the rate-limit window.
    price_collar_bps (float, 100.0): largest distance, in basis points of the market price,
        between an order's reference price and the market price, in either direction.
    min_notional (float, 5.0): smallest notional of one order.
    max_price_age_ms (int, 30_000): oldest market price an order may be checked against.
    max_daily_loss (float, 0.05): loss since the start of the UTC day, as a fraction of that
        day's first equity, at which trading halts.
    max_drawdown (float, 0.15): fall from peak equity, as a fraction of the peak, at which
        trading halts.
    max_errors (int, 5): venue errors within ``error_window_ms`` at which trading halts.
    error_window_ms (int, 60_000): length of the error window.

    A loss or drawdown equal to its limit halts (the limit is the first value not tolerated).
    """

    max_order_notional: float = 10_000.0
    max_position_notional: float = 25_000.0
    max_gross_exposure: float = 2.0
    max_orders_per_interval: int = 10
    order_rate_interval_ms: int = 1_000
    price_collar_bps: float = 100.0
    min_notional: float = 5.0
    max_price_age_ms: int = 30_000
    max_daily_loss: float = 0.05
    max_drawdown: float = 0.15
    max_errors: int = 5
    error_window_ms: int = 60_000

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"RiskConfig.{name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ConfigError(f"RiskConfig.{name} must be finite, got {value}")
        counts = ("max_orders_per_interval", "order_rate_interval_ms", "max_errors")
        for name in (*counts, "error_window_ms", "max_price_age_ms"):
            lowest = 0 if name == "max_price_age_ms" else 1
            if not isinstance(getattr(self, name), int) or getattr(self, name) < lowest:
                raise ConfigError(f"RiskConfig.{name} must be an integer >= {lowest}")
        for name in ("max_order_notional", "max_position_notional", "max_gross_exposure"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"RiskConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in ("price_collar_bps", "min_notional"):
            if getattr(self, name) < 0:
                raise ConfigError(f"RiskConfig.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("max_daily_loss", "max_drawdown"):
            if not 0 < getattr(self, name) <= 1:
                raise ConfigError(f"RiskConfig.{name} must be in (0, 1], got {getattr(self, name)}")
        if self.min_notional > self.max_order_notional:
            raise ConfigError("RiskConfig.min_notional is above max_order_notional")


@dataclass(frozen=True, slots=True)
class RiskDecision:
    approved: bool
    reason: DenialReason | None
    detail: str


APPROVED = RiskDecision(approved=True, reason=None, detail="")


@dataclass
class RiskState:
    """What must survive a restart. The rate-limit and error windows are seconds long and are
    not kept: after a restart they start empty.

    trading_state: ACTIVE, REDUCING or HALTED.
    reason: the RiskEvent reason of the last transition ("" before any).
    since_ms: when the last transition happened (0 before any).
    peak_equity: highest equity seen since start or the last reset; None before any.
    day_start_equity: first equity seen in the current UTC day (or at the last reset).
    day: the current UTC day as days since the epoch.
    last_equity: the last equity seen; a reset restarts the baselines from it.
    """

    trading_state: TradingState = TradingState.ACTIVE
    reason: str = ""
    since_ms: int = 0
    peak_equity: float | None = None
    day_start_equity: float | None = None
    day: int | None = None
    last_equity: float | None = None


def _deny(reason: DenialReason, detail: str) -> RiskDecision:
    return RiskDecision(approved=False, reason=reason, detail=detail)


def _positive(value: float) -> bool:
    return value > 0 and value != math.inf  # False for NaN too


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


_EPSILON = 2.0**-52  # the relative spacing of doubles near 1
# Of the limit, kept clear by the running sum before it decides alone: far more than any
# rounding the error bound could miss, far less than anything a limit means.
_CLEAR_OF_LIMIT = 1e-9


class _Exposure:
    """Gross exposure of a plan's projected positions, as ``check_plan`` needs it: the sum of
    ``|held| x price`` over held symbols with a usable price, kept up to date as orders are
    approved, with a bound on how far rounding has taken it from the exact sum; and the held
    symbols without a usable price (an order then needs ``check``'s exact path, which denies
    it)."""

    __slots__ = ("error", "prices", "total", "unpriced")

    def __init__(self, positions: Mapping[str, float], prices: Mapping[str, float]) -> None:
        self.prices = prices
        self.total = 0.0
        self.unpriced: set[str] = set()
        for symbol, held in positions.items():
            if held != 0.0:
                self._add(symbol, held)
        # Each term is one product and one addition away from exact.
        self.error = 2.0 * (len(positions) + 1) * _EPSILON * self.total

    def _price(self, symbol: str) -> float | None:
        price = self.prices.get(symbol)
        # _positive inlined: called for every order of every plan.
        return price if price is not None and price > 0 and price != math.inf else None

    def _add(self, symbol: str, held: float) -> None:
        price = self._price(symbol)
        if price is None:
            self.unpriced.add(symbol)
        else:
            self.total += abs(held) * price

    def move(self, symbol: str, before: float, after: float) -> None:
        price = self._price(symbol)
        if price is None:
            self.unpriced.discard(symbol)
            if after != 0.0:
                self.unpriced.add(symbol)
            return
        old, new = abs(before) * price, abs(after) * price
        self.total += new - old
        self.error += 4.0 * _EPSILON * (abs(self.total) + old + new)

    def clearly_within(
        self, symbol: str, position: float, position_notional: float, limit: float
    ) -> bool:
        """True when gross exposure after an order for ``symbol`` (whose position becomes worth
        ``position_notional``) is certainly within ``limit`` and every other held symbol has a
        usable price: then ``check``'s exact sum would find the same."""
        unpriced = self.unpriced
        if unpriced and (len(unpriced) > 1 or symbol not in unpriced):
            return False
        price = self._price(symbol)
        own = abs(position) * price if price is not None else 0.0
        total = self.total
        bound = self.error + 4.0 * _EPSILON * (total + own + position_notional)
        gross = position_notional + (total - own) + bound
        return gross <= limit * (1.0 - _CLEAR_OF_LIMIT) and math.isfinite(gross)


class RiskEngine:
    """The pre-trade checks and the trading state (see the module docstring)."""

    def __init__(self, config: RiskConfig, state: RiskState | None = None) -> None:
        self.config = config
        self._state = state if state is not None else RiskState()
        self._approved_ms: deque[int] = deque()
        self._error_ms: deque[int] = deque()
        self._target: TargetPortfolio | None = None  # the target whose deadline is cached
        self._valid_until_ms = 0

    # -- state ------------------------------------------------------------------------------

    @property
    def state(self) -> TradingState:
        return self._state.trading_state

    @property
    def reason(self) -> str:
        return self._state.reason

    @property
    def peak_equity(self) -> float | None:
        return self._state.peak_equity

    @property
    def day_start_equity(self) -> float | None:
        return self._state.day_start_equity

    # -- the pre-trade check ----------------------------------------------------------------

    def check(
        self,
        order: OrderIntent,
        *,
        target: TargetPortfolio,
        now_ms: int,
        market_price: float,
        price_ts_ms: int,
        positions: Mapping[str, float],
        prices: Mapping[str, float],
        equity: float,
    ) -> RiskDecision:
        """Approve or deny one order; an approved order counts toward the rate limit.

        positions: symbol -> signed base quantity, including the unfilled rest of orders that
        were approved and are still working, so that orders in flight count toward the limits.
        prices: symbol -> market price of every held symbol (for gross exposure).
        market_price, price_ts_ms: the market price of the order's symbol and its time (epoch ms).
        equity: account equity now. now_ms: the time of the check (epoch ms).
        """
        return self._check(
            order, target, now_ms, market_price, price_ts_ms, positions, prices, equity, None
        )

    def check_plan(
        self,
        orders: Sequence[OrderIntent],
        *,
        target: TargetPortfolio,
        now_ms: int,
        price_times: Mapping[str, int],
        positions: Mapping[str, float],
        prices: Mapping[str, float],
        equity: float,
    ) -> list[RiskDecision]:
        """``check`` on each order of a plan in turn, at its symbol's price in ``prices``
        (observed at ``price_times``), each order seeing ``positions`` as they will be once the
        orders approved before it have filled: a plan cannot add up past a limit that each of
        its orders respects alone.

        The decisions are exactly those of calling ``check`` that way, order by order. It is
        faster with many held symbols: gross exposure is kept as a running sum with a bound on
        its rounding error, and ``check``'s exact sum over every held symbol is taken only
        where the running sum cannot tell an order from the limit.
        """
        projected = dict(positions)
        exposure = _Exposure(projected, prices)
        decisions: list[RiskDecision] = []
        for order in orders:
            symbol = order.symbol
            decision = self._check(
                order, target, now_ms, prices.get(symbol, math.nan),
                price_times.get(symbol, 0), projected, prices, equity, exposure,
            )  # fmt: skip
            if decision.approved:
                before = projected.get(symbol, 0.0)
                projected[symbol] = before + order.signed_quantity
                exposure.move(symbol, before, projected[symbol])
            decisions.append(decision)
        return decisions

    def _check(
        self,
        order: OrderIntent,
        target: TargetPortfolio,
        now_ms: int,
        market_price: float,
        price_ts_ms: int,
        positions: Mapping[str, float],
        prices: Mapping[str, float],
        equity: float,
        exposure: _Exposure | None,
    ) -> RiskDecision:
        config = self.config
        state = self._state.trading_state
        if state is TradingState.HALTED:
            return _deny(DenialReason.TRADING_HALTED, f"trading is halted: {self._state.reason}")

        quantity = order.quantity
        position = positions.get(order.symbol, 0.0)
        if not (
            _positive(quantity)
            and _positive(order.reference_price)
            and _positive(market_price)
            and _positive(equity)
            and math.isfinite(position)
        ):
            return _deny(
                DenialReason.INVALID_ORDER,
                f"quantity {quantity}, reference price {order.reference_price}, market price "
                f"{market_price}, equity {equity} and position {position} must be finite, "
                "all but the position positive",
            )

        signed = quantity if order.side is Side.BUY else -quantity
        after = position + signed
        if state is TradingState.REDUCING:
            reduces = (
                order.reduces_exposure
                and position != 0.0
                and (position > 0) != (signed > 0)
                and quantity <= abs(position) * (1 + _QUANTITY_TOLERANCE)
            )
            if not reduces:
                return _deny(
                    DenialReason.TRADING_REDUCING,
                    f"only reducing orders pass: {order.side} {quantity} {order.symbol} "
                    f"against a position of {position}",
                )

        if order.target_version != target.version:
            return _deny(
                DenialReason.TARGET_MISMATCH,
                f"order is for target {order.target_version}, the current target is "
                f"{target.version}",
            )
        if target is not self._target:
            self._target = target
            self._valid_until_ms = _ms(target.valid_until)
        if now_ms >= self._valid_until_ms:
            return _deny(
                DenialReason.STALE_TARGET,
                f"target {target.version} expired at {self._valid_until_ms} (now {now_ms})",
            )
        if now_ms - price_ts_ms > config.max_price_age_ms:
            return _deny(
                DenialReason.STALE_PRICE,
                f"price of {order.symbol} is {now_ms - price_ts_ms} ms old "
                f"(limit {config.max_price_age_ms} ms)",
            )

        distance_bps = abs(order.reference_price - market_price) / market_price * 1e4
        if distance_bps > config.price_collar_bps:
            return _deny(
                DenialReason.PRICE_COLLAR,
                f"reference price {order.reference_price} is {distance_bps:.1f} bps from the "
                f"market price {market_price} (limit {config.price_collar_bps} bps)",
            )

        notional = quantity * market_price
        if notional < config.min_notional:
            return _deny(
                DenialReason.MIN_NOTIONAL,
                f"notional {notional:.2f} is below {config.min_notional}",
            )
        if notional > config.max_order_notional:
            return _deny(
                DenialReason.MAX_ORDER_NOTIONAL,
                f"notional {notional:.2f} is above {config.max_order_notional}",
            )

        if abs(after) > abs(position):  # the order grows the position (and gross exposure)
            position_notional = abs(after) * market_price
            if position_notional > config.max_position_notional:
                return _deny(
                    DenialReason.MAX_POSITION,
                    f"position of {order.symbol} would be {position_notional:.2f} "
                    f"(limit {config.max_position_notional})",
                )
            if exposure is not None and exposure.clearly_within(
                order.symbol, position, position_notional, config.max_gross_exposure * equity
            ):
                return self._approve(now_ms)
            gross = position_notional
            own, inf, price_of = order.symbol, math.inf, prices.get  # locals: a hot loop
            for symbol, held in positions.items():
                if held == 0.0 or symbol == own:
                    continue
                price = price_of(symbol)
                # _positive inlined: this loop runs for every symbol held, on every order.
                if price is None or not (price > 0 and price != inf):
                    return _deny(
                        DenialReason.MISSING_PRICE,
                        f"no usable price for held {symbol} ({price}): gross exposure is unknown",
                    )
                gross += abs(held) * price
            if not math.isfinite(gross):
                return _deny(DenialReason.INVALID_ORDER, f"gross exposure is {gross}")
            leverage = gross / equity
            if leverage > config.max_gross_exposure:
                return _deny(
                    DenialReason.MAX_GROSS_EXPOSURE,
                    f"gross exposure would be {leverage:.3f} x equity "
                    f"(limit {config.max_gross_exposure})",
                )

        return self._approve(now_ms)

    def _approve(self, now_ms: int) -> RiskDecision:
        """The last check, the rate limit: approve, counting the order, unless it is reached."""
        config = self.config
        window = self._approved_ms
        while window and window[0] <= now_ms - config.order_rate_interval_ms:
            window.popleft()
        if len(window) >= config.max_orders_per_interval:
            return _deny(
                DenialReason.RATE_LIMIT,
                f"{len(window)} orders in the last {config.order_rate_interval_ms} ms "
                f"(limit {config.max_orders_per_interval})",
            )
        window.append(now_ms)
        return APPROVED

    # -- what changes the trading state -----------------------------------------------------

    def on_equity(self, equity: float, now_ms: int) -> RiskEvent | None:
        """Track the day's first equity and the peak; halt on a daily loss or drawdown breach.

        A new UTC day restarts the daily baseline, but never clears a halt. Returns the
        RiskEvent when this call halts trading, else None.
        """
        state = self._state
        if not _positive(equity):
            return self._halt_once(
                RiskEventReason.INVALID_EQUITY,
                now_ms,
                detail={"equity": equity} if math.isfinite(equity) else {},
            )
        day = now_ms // DAY_MS
        if state.day != day or state.day_start_equity is None:
            state.day = day
            state.day_start_equity = equity
        if state.peak_equity is None or equity > state.peak_equity:
            state.peak_equity = equity
        state.last_equity = equity

        drawdown = 1.0 - equity / state.peak_equity
        if drawdown >= self.config.max_drawdown:
            return self._halt_once(
                RiskEventReason.MAX_DRAWDOWN,
                now_ms,
                detail={
                    "drawdown": drawdown,
                    "limit": self.config.max_drawdown,
                    "equity": equity,
                    "peak_equity": state.peak_equity,
                },
            )
        daily_loss = 1.0 - equity / state.day_start_equity
        if daily_loss >= self.config.max_daily_loss:
            return self._halt_once(
                RiskEventReason.MAX_DAILY_LOSS,
                now_ms,
                detail={
                    "daily_loss": daily_loss,
                    "limit": self.config.max_daily_loss,
                    "equity": equity,
                    "day_start_equity": state.day_start_equity,
                },
            )
        return None

    def on_error(self, now_ms: int, detail: str) -> RiskEvent | None:
        """Count a venue error; ``max_errors`` within ``error_window_ms`` halt trading."""
        window = self._error_ms
        window.append(now_ms)
        while window and window[0] <= now_ms - self.config.error_window_ms:
            window.popleft()
        if len(window) < self.config.max_errors:
            return None
        return self._halt_once(
            RiskEventReason.ERROR_BURST,
            now_ms,
            text=detail,
            detail={"errors": float(len(window)), "window_ms": float(self.config.error_window_ms)},
        )

    def halt(self, reason: str, now_ms: int) -> RiskEvent:
        """Manual halt, from any state. Halting when already HALTED returns an event for the
        record but keeps the first reason as the state's reason."""
        if self._state.trading_state is TradingState.HALTED:
            return _event(
                TradingState.HALTED,
                TradingState.HALTED,
                RiskEventReason.MANUAL_HALT,
                now_ms,
                reason,
                None,
            )
        return self._transition(TradingState.HALTED, RiskEventReason.MANUAL_HALT, now_ms, reason)

    def reduce_only(self, reason: str, now_ms: int) -> RiskEvent:
        """ACTIVE -> REDUCING. Refused from HALTED: only a reset leaves HALTED."""
        if self._state.trading_state is TradingState.HALTED:
            raise RiskStateError("trading is HALTED; only an authenticated reset leaves it")
        return self._transition(
            TradingState.REDUCING, RiskEventReason.MANUAL_REDUCE, now_ms, reason
        )

    def reset(self, token: str, expected_token: str, now_ms: int) -> RiskEvent:
        """Back to ACTIVE from any state, with the operator's token; the only way out of HALTED.

        A reset accepts the losses so far: the peak and the day's baseline restart from the last
        equity seen (otherwise the next equity update would halt again at once), and the error
        window is cleared. A wrong or empty token raises ``ResetRefusedError`` and changes
        nothing.
        """
        if not expected_token or not hmac.compare_digest(
            token.encode("utf-8"), expected_token.encode("utf-8")
        ):
            raise ResetRefusedError("reset refused: the token does not match")
        state = self._state
        if state.last_equity is not None:
            state.peak_equity = state.last_equity
            state.day_start_equity = state.last_equity
        self._error_ms.clear()
        return self._transition(TradingState.ACTIVE, RiskEventReason.RESET, now_ms, "")

    def _halt_once(
        self,
        code: RiskEventReason,
        now_ms: int,
        *,
        text: str = "",
        detail: dict[str, float] | None = None,
    ) -> RiskEvent | None:
        if self._state.trading_state is TradingState.HALTED:
            return None  # already halted: the first breach is the one on record
        return self._transition(TradingState.HALTED, code, now_ms, text, detail)

    def _transition(
        self,
        new: TradingState,
        code: RiskEventReason,
        now_ms: int,
        text: str,
        detail: dict[str, float] | None = None,
    ) -> RiskEvent:
        event = _event(new, self._state.trading_state, code, now_ms, text, detail)
        self._state.trading_state = new
        self._state.reason = event.reason
        self._state.since_ms = now_ms
        return event

    # -- persistence ------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The persistent state as a JSON-serialisable dict (see ``RiskState``)."""
        state = self._state
        return {
            "schema": SNAPSHOT_SCHEMA,
            "trading_state": state.trading_state.value,
            "reason": state.reason,
            "since_ms": state.since_ms,
            "peak_equity": state.peak_equity,
            "day_start_equity": state.day_start_equity,
            "day": state.day,
            "last_equity": state.last_equity,
        }

    @classmethod
    def restore(cls, config: RiskConfig, snapshot: dict[str, Any]) -> RiskEngine:
        """An engine in the persisted state. Fails closed: a snapshot that is not exactly what
        ``snapshot`` writes raises ``RiskStateError``, and the service must not trade until an
        operator repairs or removes it (then the engine starts ACTIVE with no baselines)."""
        return cls(config, _parse_snapshot(snapshot))


def _event(
    new: TradingState,
    previous: TradingState,
    code: RiskEventReason,
    now_ms: int,
    text: str,
    detail: dict[str, float] | None,
) -> RiskEvent:
    return RiskEvent(
        state=new,
        previous_state=previous,
        reason=f"{code}: {text.strip()}" if text.strip() else str(code),
        ts=datetime.fromtimestamp(now_ms / 1000, tz=UTC),
        detail=detail or {},
    )


def _parse_snapshot(snapshot: Any) -> RiskState:
    expected = {
        "schema",
        "trading_state",
        "reason",
        "since_ms",
        "peak_equity",
        "day_start_equity",
        "day",
        "last_equity",
    }
    if not isinstance(snapshot, dict) or set(snapshot) != expected:
        keys = sorted(snapshot) if isinstance(snapshot, dict) else type(snapshot).__name__
        raise RiskStateError(
            f"risk state snapshot must have exactly {sorted(expected)}, got {keys}"
        )
    if snapshot["schema"] != SNAPSHOT_SCHEMA:
        raise RiskStateError(f"risk state snapshot schema {snapshot['schema']!r} is unknown")
    try:
        trading_state = TradingState(snapshot["trading_state"])
    except ValueError:
        raise RiskStateError(
            f"unknown trading state {snapshot['trading_state']!r} in the risk state snapshot"
        ) from None
    reason = snapshot["reason"]
    if not isinstance(reason, str):
        raise RiskStateError("risk state snapshot: reason must be a string")
    return RiskState(
        trading_state=trading_state,
        reason=reason,
        since_ms=_snapshot_int(snapshot, "since_ms", optional=False) or 0,
        peak_equity=_snapshot_equity(snapshot, "peak_equity"),
        day_start_equity=_snapshot_equity(snapshot, "day_start_equity"),
        day=_snapshot_int(snapshot, "day", optional=True),
        last_equity=_snapshot_equity(snapshot, "last_equity"),
    )


def _snapshot_int(snapshot: dict[str, Any], key: str, *, optional: bool) -> int | None:
    value = snapshot[key]
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise RiskStateError(f"risk state snapshot: {key} must be an integer, got {value!r}")
    return value


def _snapshot_equity(snapshot: dict[str, Any], key: str) -> float | None:
    value = snapshot[key]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not _positive(value):
        raise RiskStateError(
            f"risk state snapshot: {key} must be a positive number or null, got {value!r}"
        )
    return float(value)
