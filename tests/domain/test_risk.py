"""The pre-trade risk engine: every check's denial, their order, and the trading state machine."""

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sapphire_domain.errors import ConfigError
from sapphire_domain.messages import RiskEvent, Side, TargetPortfolio, TargetPosition, TradingState
from sapphire_domain.orders import OrderIntent, plan_orders
from sapphire_domain.risk import (
    DAY_MS,
    DenialReason,
    ResetRefusedError,
    RiskConfig,
    RiskEngine,
    RiskEventReason,
    RiskStateError,
)

NOW = int(datetime(2026, 11, 22, 12, tzinfo=UTC).timestamp() * 1000)
TOKEN = "s3cret-operator-token"
CONFIG = RiskConfig(
    max_order_notional=10_000,
    max_position_notional=20_000,
    max_gross_exposure=2.0,
    max_orders_per_interval=10,
    order_rate_interval_ms=1_000,
    price_collar_bps=100,
    min_notional=10,
    max_price_age_ms=5_000,
    max_daily_loss=0.05,
    max_drawdown=0.10,
    max_errors=3,
    error_window_ms=10_000,
)
TARGET = TargetPortfolio(
    version=3,
    created_at=datetime.fromtimestamp(NOW / 1000, tz=UTC) - timedelta(minutes=1),
    valid_until=datetime.fromtimestamp(NOW / 1000, tz=UTC) + timedelta(minutes=4),
    positions=(TargetPosition(symbol="BTC/USDT", weight=0.5),),
)
VALID_UNTIL = NOW + 4 * 60_000


def order(
    side: Side = Side.BUY,
    quantity: float = 0.1,
    symbol: str = "BTC/USDT",
    price: float = 50_000.0,
    version: int = 3,
) -> OrderIntent:
    return OrderIntent(
        client_order_id=f"t{version}-{symbol}",
        target_version=version,
        symbol=symbol,
        side=side,
        quantity=quantity,
        reference_price=price,
        reduces_exposure=False,
    )


def check(engine: RiskEngine, intent: OrderIntent | None = None, **overrides):
    arguments = {
        "target": TARGET,
        "now_ms": NOW,
        "market_price": 50_000.0,
        "price_ts_ms": NOW - 1_000,
        "positions": {},
        "prices": {"BTC/USDT": 50_000.0, "ETH/USDT": 2_500.0},
        "equity": 20_000.0,
    }
    arguments.update(overrides)
    return engine.check(intent or order(), **arguments)


def denial(engine: RiskEngine, intent: OrderIntent | None = None, **overrides) -> DenialReason:
    decision = check(engine, intent, **overrides)
    assert not decision.approved
    assert decision.detail
    assert decision.reason is not None
    return decision.reason


@pytest.fixture
def engine() -> RiskEngine:
    return RiskEngine(CONFIG)


# -- the checks ----------------------------------------------------------------------------


def test_an_order_within_every_limit_is_approved(engine):
    decision = check(engine)
    assert decision.approved
    assert decision.reason is None


def test_a_halted_engine_denies_everything(engine):
    engine.halt("operator", NOW)
    assert denial(engine) is DenialReason.TRADING_HALTED
    assert denial(engine, order(Side.SELL), positions={"BTC/USDT": 1.0}) is (
        DenialReason.TRADING_HALTED
    )


@pytest.mark.parametrize(
    ("intent", "overrides"),
    [
        (order(quantity=0.0), {}),
        (order(quantity=float("nan")), {}),
        (order(price=-1.0), {}),
        (order(), {"market_price": float("inf")}),
        (order(), {"equity": 0.0}),
        (order(), {"positions": {"BTC/USDT": float("nan")}}),
    ],
)
def test_non_finite_or_non_positive_numbers_are_an_invalid_order(engine, intent, overrides):
    assert denial(engine, intent, **overrides) is DenialReason.INVALID_ORDER


def reducing(side: Side, quantity: float) -> OrderIntent:
    return replace(order(side, quantity), reduces_exposure=True)


def test_reducing_allows_only_orders_that_reduce_exposure(engine):
    engine.reduce_only("volatility", NOW)
    long = {"BTC/USDT": 0.15}
    assert check(engine, reducing(Side.SELL, 0.1), positions=long).approved
    assert check(engine, reducing(Side.SELL, 0.15), positions=long).approved  # to flat
    assert denial(engine, order(Side.BUY, 0.1), positions=long) is DenialReason.TRADING_REDUCING
    assert denial(engine, order(Side.SELL, 0.1)) is DenialReason.TRADING_REDUCING  # from flat


@pytest.mark.parametrize(
    ("intent", "why"),
    [
        (reducing(Side.BUY, 0.1), "the flag says reducing, the positions say it grows"),
        (reducing(Side.SELL, 0.2), "the flag says reducing, the positions say it crosses zero"),
        (order(Side.SELL, 0.1), "the positions say reducing, the flag says it opens"),
    ],
)
def test_reducing_needs_both_the_flag_and_the_positions_to_agree(engine, intent, why):
    engine.reduce_only("volatility", NOW)
    assert denial(engine, intent, positions={"BTC/USDT": 0.15}) is DenialReason.TRADING_REDUCING


def test_reducing_lets_the_reducing_leg_of_a_planned_flip_through(engine):
    engine.reduce_only("volatility", NOW)
    positions = {"BTC/USDT": 0.1}
    flip = TARGET.model_copy(
        update={"positions": (TargetPosition(symbol="BTC/USDT", weight=-0.1),)}
    )
    legs = plan_orders(
        flip, positions, {"BTC/USDT": 50_000.0}, 20_000.0, lot_sizes=0.001, no_trade_band=0.0,
        min_notional=10.0,
    )  # fmt: skip
    decisions = [check(engine, leg, target=flip, positions=positions) for leg in legs]
    assert [d.reason for d in decisions] == [None, DenialReason.TRADING_REDUCING]


def test_an_order_for_another_target_version_is_denied(engine):
    assert denial(engine, order(version=2)) is DenialReason.TARGET_MISMATCH


def test_a_target_is_stale_from_its_valid_until(engine):
    assert check(engine, now_ms=VALID_UNTIL - 1, price_ts_ms=VALID_UNTIL - 1).approved
    assert denial(engine, now_ms=VALID_UNTIL, price_ts_ms=VALID_UNTIL) is DenialReason.STALE_TARGET


def test_a_price_older_than_its_limit_is_stale(engine):
    assert check(engine, price_ts_ms=NOW - 5_000).approved
    assert denial(engine, price_ts_ms=NOW - 5_001) is DenialReason.STALE_PRICE


@pytest.mark.parametrize("market_price", [49_400.0, 50_600.0])
def test_the_price_collar_denies_in_both_directions(engine, market_price):
    # 100 bps of the market price; the order was priced at 50,000.
    assert denial(engine, market_price=market_price) is DenialReason.PRICE_COLLAR


@pytest.mark.parametrize("market_price", [49_550.0, 50_450.0])
def test_the_price_collar_allows_prices_inside_it(engine, market_price):
    assert check(engine, market_price=market_price).approved


def test_an_order_below_the_minimum_notional_is_denied(engine):
    assert denial(engine, order(quantity=0.0001)) is DenialReason.MIN_NOTIONAL  # 5 USDT


def test_an_order_above_the_maximum_notional_is_denied(engine):
    assert denial(engine, order(quantity=0.21)) is DenialReason.MAX_ORDER_NOTIONAL  # 10,500


def test_an_order_that_grows_a_position_beyond_its_limit_is_denied(engine):
    assert denial(engine, positions={"BTC/USDT": 0.35}) is DenialReason.MAX_POSITION  # 22,500


def test_a_position_over_its_limit_can_still_be_reduced(engine):
    assert check(engine, order(Side.SELL, 0.1), positions={"BTC/USDT": 0.5}).approved


def test_a_short_position_is_limited_like_a_long_one(engine):
    assert denial(engine, order(Side.SELL), positions={"BTC/USDT": -0.35}) is (
        DenialReason.MAX_POSITION
    )


def test_an_order_that_grows_gross_exposure_beyond_its_limit_is_denied(engine):
    # 0.2 BTC (10,000) + 12 ETH short (30,000) = 40,000 = 2x equity; one more 0.1 BTC breaks it.
    positions = {"BTC/USDT": 0.2, "ETH/USDT": -12.0}
    assert denial(engine, positions=positions) is DenialReason.MAX_GROSS_EXPOSURE
    assert check(engine, order(Side.SELL), positions=positions).approved  # reducing is fine


def test_gross_exposure_counts_the_order_at_the_market_price(engine):
    positions = {"ETH/USDT": -11.0}  # 27,500; + 0.1 BTC at 50,000 = 32,500 < 40,000
    assert check(engine, positions=positions).approved


@pytest.mark.parametrize("prices", [{}, {"SOL/USDT": -1.0}, {"SOL/USDT": float("nan")}])
def test_an_unknown_price_for_a_held_symbol_fails_closed(engine, prices):
    positions = {"SOL/USDT": 10.0}
    assert denial(engine, positions=positions, prices=prices) is DenialReason.MISSING_PRICE


def test_the_eleventh_order_within_a_second_is_rate_limited_and_allowed_after(engine):
    for offset in range(10):
        assert check(engine, now_ms=NOW + offset * 10).approved
    assert denial(engine, now_ms=NOW + 999) is DenialReason.RATE_LIMIT
    assert check(engine, now_ms=NOW + 1_000).approved  # the first approval left the window
    assert denial(engine, now_ms=NOW + 1_001) is DenialReason.RATE_LIMIT
    assert check(engine, now_ms=NOW + 1_010).approved


def test_denied_orders_do_not_use_up_the_rate_limit(engine):
    for _ in range(50):
        denial(engine, order(quantity=0.0001))
    for _ in range(10):
        assert check(engine).approved


def test_checks_run_in_order_and_the_first_failure_is_reported(engine):
    # An order that fails every check at once reports each in turn as the earlier ones are fixed.
    bad = {
        "target": TARGET,
        "now_ms": VALID_UNTIL,
        "price_ts_ms": NOW - 60_000,
        "market_price": 40_000.0,
    }
    engine.reduce_only("test", NOW)
    assert denial(engine, order(version=2), **bad) is DenialReason.TRADING_REDUCING
    engine.reset(TOKEN, TOKEN, NOW)
    assert denial(engine, order(version=2), **bad) is DenialReason.TARGET_MISMATCH
    assert denial(engine, order(), **bad) is DenialReason.STALE_TARGET
    bad["now_ms"] = NOW
    assert denial(engine, order(), **bad) is DenialReason.STALE_PRICE
    bad["price_ts_ms"] = NOW
    assert denial(engine, order(quantity=0.0001), **bad) is DenialReason.PRICE_COLLAR
    bad["market_price"] = 50_000.0
    assert denial(engine, order(quantity=0.0001), **bad) is DenialReason.MIN_NOTIONAL
    assert denial(engine, order(quantity=0.3), **bad) is DenialReason.MAX_ORDER_NOTIONAL
    held = {"BTC/USDT": 0.3, "ETH/USDT": 10.0, "SOL/USDT": 1.0}
    assert denial(engine, order(quantity=0.2), positions=held, **bad) is DenialReason.MAX_POSITION
    assert denial(engine, order(), positions=held, **bad) is DenialReason.MISSING_PRICE


@settings(deadline=None)  # no timings in tests; a loaded CI box is slow
@given(st.sampled_from(list(Side)), st.floats(0.0002, 0.19), st.floats(-0.3, 0.3))
def test_a_halted_engine_approves_nothing_whatever_the_order(side, quantity, held):
    engine = RiskEngine(CONFIG)
    engine.halt("test", NOW)
    decision = check(engine, order(side, quantity), positions={"BTC/USDT": held})
    assert decision.reason is DenialReason.TRADING_HALTED


# -- equity: drawdown and daily loss --------------------------------------------------------


def test_a_drawdown_breach_halts_on_the_call_that_sees_it(engine):
    assert engine.on_equity(10_000, NOW) is None
    assert engine.on_equity(12_000, NOW + 1) is None  # new peak
    assert engine.on_equity(10_900, NOW + 2) is None  # 9.2% below the peak, same-day loss ok
    event = engine.on_equity(10_700, NOW + DAY_MS)  # next day: 10.8% below the peak
    assert isinstance(event, RiskEvent)
    assert event.state is TradingState.HALTED
    assert event.previous_state is TradingState.ACTIVE
    assert event.reason == RiskEventReason.MAX_DRAWDOWN
    assert event.detail["drawdown"] == pytest.approx(1 - 10_700 / 12_000)
    assert engine.state is TradingState.HALTED
    assert denial(engine) is DenialReason.TRADING_HALTED


def test_a_daily_loss_breach_halts_on_the_call_that_sees_it(engine):
    engine.on_equity(10_000, NOW)
    assert engine.on_equity(9_600, NOW + 1) is None  # 4%
    event = engine.on_equity(9_500, NOW + 2)  # 5%: the limit itself halts
    assert event is not None
    assert event.reason == RiskEventReason.MAX_DAILY_LOSS
    assert event.detail["day_start_equity"] == 10_000


def test_a_new_utc_day_restarts_the_daily_baseline(engine):
    midnight = (NOW // DAY_MS + 1) * DAY_MS
    engine.on_equity(10_000, midnight - 1)
    assert engine.on_equity(9_600, midnight - 1) is None
    assert engine.on_equity(9_600, midnight) is None
    assert engine.day_start_equity == 9_600
    assert engine.on_equity(9_300, midnight + 1) is None  # 3.1% down today, 7% below the peak
    assert engine.state is TradingState.ACTIVE


def test_a_new_utc_day_does_not_clear_a_halt(engine):
    engine.on_equity(10_000, NOW)
    assert engine.on_equity(9_000, NOW + 1) is not None
    assert engine.on_equity(9_000, NOW + DAY_MS) is None
    assert engine.state is TradingState.HALTED
    assert engine.day_start_equity == 9_000


def test_equity_that_is_not_a_positive_number_halts(engine):
    engine.on_equity(10_000, NOW)
    event = engine.on_equity(float("nan"), NOW + 1)
    assert event is not None
    assert event.reason == RiskEventReason.INVALID_EQUITY
    assert engine.peak_equity == 10_000


def test_a_breach_while_reducing_halts(engine):
    engine.reduce_only("test", NOW)
    engine.on_equity(10_000, NOW)
    event = engine.on_equity(8_000, NOW + 1)
    assert event is not None
    assert event.previous_state is TradingState.REDUCING


def test_a_second_breach_while_halted_keeps_the_first_reason(engine):
    engine.on_equity(10_000, NOW)
    engine.on_equity(9_400, NOW + 1)
    assert engine.on_equity(8_000, NOW + 2) is None
    assert engine.reason == RiskEventReason.MAX_DAILY_LOSS


# -- errors, manual halt, reduce, reset -----------------------------------------------------


def test_a_burst_of_errors_halts(engine):
    assert engine.on_error(NOW, "timeout") is None
    assert engine.on_error(NOW + 1_000, "timeout") is None
    event = engine.on_error(NOW + 2_000, "exchange not available")
    assert event is not None
    assert event.reason == "ERROR_BURST: exchange not available"
    assert engine.state is TradingState.HALTED


def test_errors_spread_wider_than_the_window_do_not_halt(engine):
    for i in range(10):
        assert engine.on_error(NOW + i * 5_000, "timeout") is None
    assert engine.state is TradingState.ACTIVE


def test_a_manual_halt_names_the_operators_reason(engine):
    event = engine.halt("exchange maintenance", NOW)
    assert event.reason == "MANUAL_HALT: exchange maintenance"
    assert event.ts == datetime.fromtimestamp(NOW / 1000, tz=UTC)
    again = engine.halt("again", NOW + 1)
    assert again.previous_state is TradingState.HALTED
    assert engine.reason == "MANUAL_HALT: exchange maintenance"


def test_reduce_only_cannot_leave_halted(engine):
    engine.halt("test", NOW)
    with pytest.raises(RiskStateError, match="reset"):
        engine.reduce_only("test", NOW)
    assert engine.state is TradingState.HALTED


def test_a_reset_with_the_wrong_token_is_refused_and_changes_nothing(engine):
    engine.on_equity(10_000, NOW)
    engine.on_equity(8_000, NOW + 1)
    before = engine.snapshot()
    for wrong in ("", "s3cret-operator-toke", "s3cret-operator-token!", "ß"):
        with pytest.raises(ResetRefusedError):
            engine.reset(wrong, TOKEN, NOW + 2)
    assert engine.snapshot() == before
    assert engine.state is TradingState.HALTED


def test_an_empty_expected_token_never_resets(engine):
    engine.halt("test", NOW)
    with pytest.raises(ResetRefusedError):
        engine.reset("", "", NOW)
    assert engine.state is TradingState.HALTED


def test_a_reset_with_the_right_token_resumes_and_accepts_the_losses_so_far(engine):
    engine.on_equity(10_000, NOW)
    engine.on_equity(8_000, NOW + 1)
    event = engine.reset(TOKEN, TOKEN, NOW + 2)
    assert (event.previous_state, event.state) == (TradingState.HALTED, TradingState.ACTIVE)
    assert event.reason == RiskEventReason.RESET
    assert engine.on_equity(8_000, NOW + 3) is None  # the baselines restart from 8,000
    assert check(engine).approved


def test_a_reset_clears_the_error_window(engine):
    engine.on_error(NOW, "a")
    engine.on_error(NOW, "b")
    engine.on_error(NOW, "c")
    engine.reset(TOKEN, TOKEN, NOW)
    assert engine.on_error(NOW, "d") is None


# -- persistence ---------------------------------------------------------------------------


def test_halted_survives_a_snapshot_and_restore(engine):
    engine.on_equity(10_000, NOW)
    engine.on_equity(8_000, NOW + 1)
    saved = json.loads(json.dumps(engine.snapshot()))
    restored = RiskEngine.restore(CONFIG, saved)
    assert restored.state is TradingState.HALTED
    assert restored.reason == RiskEventReason.MAX_DRAWDOWN
    assert restored.snapshot() == engine.snapshot()
    assert denial(restored) is DenialReason.TRADING_HALTED
    with pytest.raises(ResetRefusedError):
        restored.reset("guess", TOKEN, NOW)
    restored.reset(TOKEN, TOKEN, NOW)
    assert restored.state is TradingState.ACTIVE


def test_the_baselines_survive_a_restore(engine):
    engine.on_equity(10_000, NOW)
    engine.on_equity(9_700, NOW + 1)
    restored = RiskEngine.restore(CONFIG, engine.snapshot())
    assert restored.on_equity(9_500, NOW + 2) is not None  # 5% below the restored day start


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda s: s.pop("trading_state"),
        lambda s: s.update(trading_state="PAUSED"),
        lambda s: s.update(schema=2),
        lambda s: s.update(peak_equity="12000"),
        lambda s: s.update(peak_equity=float("nan")),
        lambda s: s.update(day_start_equity=-5.0),
        lambda s: s.update(since_ms=None),
        lambda s: s.update(day=1.5),
        lambda s: s.update(reason=None),
        lambda s: s.update(extra=1),
    ],
)
def test_a_malformed_snapshot_fails_closed(engine, corrupt):
    engine.on_equity(10_000, NOW)
    snapshot = engine.snapshot()
    corrupt(snapshot)
    with pytest.raises(RiskStateError):
        RiskEngine.restore(CONFIG, snapshot)


def test_a_snapshot_that_is_not_a_dict_fails_closed():
    with pytest.raises(RiskStateError):
        RiskEngine.restore(CONFIG, ["HALTED"])  # type: ignore[arg-type]


# -- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field",
    [
        {"max_order_notional": 0.0},
        {"max_gross_exposure": float("nan")},
        {"max_orders_per_interval": 0},
        {"max_orders_per_interval": 2.5},
        {"max_price_age_ms": -1},
        {"max_daily_loss": 1.5},
        {"max_drawdown": 0.0},
        {"price_collar_bps": -1.0},
        {"min_notional": 20_000.0},
    ],
)
def test_an_inconsistent_risk_config_is_refused(field):
    with pytest.raises(ConfigError):
        replace(CONFIG, **field)


def test_the_default_risk_config_is_valid():
    assert RiskConfig().max_orders_per_interval == 10


@settings(deadline=None)  # no timings in tests; a loaded CI box is slow
@given(st.lists(st.integers(0, 300), min_size=1, max_size=80))
def test_the_rate_limit_never_approves_more_than_its_budget_in_any_window(gaps):
    engine = RiskEngine(CONFIG)
    now, approved = NOW, []
    for gap in gaps:
        now += gap
        if check(engine, now_ms=now, price_ts_ms=now).approved:
            approved.append(now)
    for i, start in enumerate(approved):
        in_window = [t for t in approved[i:] if t < start + CONFIG.order_rate_interval_ms]
        assert len(in_window) <= CONFIG.max_orders_per_interval
