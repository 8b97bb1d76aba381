"""The ccxt venue's order placement, retries and lookups.

A live exchange cannot be reached from the test machines, so ``FakeExchange`` below, a
hand-written stand-in, plays the exchange: it has the async ccxt methods the venue calls and
raises ccxt's real error classes at the points a test chooses. (A later issue adds a loopback
exchange speaking a real exchange's HTTP API.) What runs for real: ccxt's error hierarchy, and a
real ``ccxt.async_support`` exchange object built through ``from_settings`` (no network calls).

Every placement test asserts that exactly one order exists at the exchange.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ccxt
import pytest
import structlog

from sapphire_domain.errors import ConfigError
from sapphire_domain.messages import OrderStatus, Side
from sapphire_domain.orders import OrderIntent
from sapphire_exec.config import ExecSettings, load_exec_settings
from sapphire_exec.venues.base import Venue, VenueRejectedError, VenueUnavailableError
from sapphire_exec.venues.ccxt import CcxtVenue

SYMBOL = "BTC/USDT"
NOW_MS = int(datetime(2026, 11, 22, tzinfo=UTC).timestamp() * 1000)


class FakeExchange:
    """A hand-written stand-in for a ccxt async exchange (no live exchange is reachable here).

    Orders fill at once at ``price``, each with one trade. ``faults`` is a queue of
    ``(error instance, placed)`` consumed by ``create_order``: the error is raised after the
    order was placed (``placed=True``, the ambiguous timeout that did reach the exchange) or
    instead of placing it. A second order with a known client order id is refused with
    ``DuplicateOrderId``, as exchanges refuse it. ``lookup_faults`` fail ``fetch_order``.
    """

    def __init__(self, *, has_fetch_order: bool = True, has_closed: bool = True) -> None:
        self.has = {
            "fetchOrder": has_fetch_order,
            "fetchOpenOrders": True,
            "fetchClosedOrders": has_closed,
            "fetchMyTrades": True,
            "fetchTickers": True,
        }
        self.orders: dict[str, dict[str, Any]] = {}  # by client order id
        self.trades: list[dict[str, Any]] = []
        self.faults: list[tuple[Exception, bool]] = []
        self.lookup_faults: list[Exception] = []
        self.create_calls = 0
        self.price = 50_000.0
        self.markets = {SYMBOL: {"symbol": SYMBOL}}
        self.balance = {"total": {"USDT": 1_000.0, "BTC": 0.0}}

    def milliseconds(self) -> int:
        return NOW_MS

    async def load_markets(self) -> dict[str, Any]:
        return self.markets

    async def close(self) -> None:
        return None

    async def create_order(
        self,
        symbol: str,
        type: str,
        side: str,
        amount: float,
        price: float | None = None,
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        self.create_calls += 1
        cid = (params or {})["clientOrderId"]
        fault = self.faults.pop(0) if self.faults else None
        if fault is not None and not fault[1]:
            raise fault[0]
        if cid in self.orders:
            raise ccxt.DuplicateOrderId(f"fake: duplicate clientOrderId {cid}")
        number = len(self.orders) + 1
        trade = {
            "id": f"T{number}", "order": f"O{number}", "symbol": symbol, "side": side,
            "amount": amount, "price": self.price, "timestamp": NOW_MS, "takerOrMaker": "taker",
            "fee": {"cost": amount * self.price * 0.0005, "currency": "USDT"},
        }  # fmt: skip
        order = {
            "id": f"O{number}", "clientOrderId": cid, "symbol": symbol, "type": type,
            "side": side, "amount": amount, "filled": amount, "average": self.price,
            "status": "closed", "timestamp": NOW_MS, "trades": [],
        }  # fmt: skip
        self.orders[cid] = order
        self.trades.append(trade)
        self.balance["total"]["BTC"] += amount if side == "buy" else -amount
        if fault is not None:
            raise fault[0]  # placed, but the answer never reached the caller
        return dict(order)

    async def fetch_order(
        self, id: str, symbol: str | None = None, params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        if self.lookup_faults:
            raise self.lookup_faults.pop(0)
        cid = (params or {}).get("clientOrderId")
        if cid not in self.orders:
            raise ccxt.OrderNotFound(f"fake: no order {cid}")
        return dict(self.orders[cid])

    async def fetch_open_orders(self, symbol: str | None = None) -> list[dict[str, Any]]:
        return [dict(o) for o in self.orders.values() if o["status"] == "open"]

    async def fetch_closed_orders(self, symbol: str | None = None) -> list[dict[str, Any]]:
        return [dict(o) for o in self.orders.values() if o["status"] != "open"]

    async def fetch_my_trades(
        self, symbol: str | None = None, since: int | None = None
    ) -> list[dict[str, Any]]:
        return [dict(t) for t in self.trades if symbol in (None, t["symbol"])]

    async def fetch_tickers(self, symbols: list[str]) -> dict[str, Any]:
        return {s: {"last": self.price, "timestamp": NOW_MS} for s in symbols}

    async def fetch_balance(self) -> dict[str, Any]:
        return {"total": dict(self.balance["total"])}


def intent(cid: str = "t7-BTC_USDT", side: Side = Side.BUY, quantity: float = 0.01) -> OrderIntent:
    return OrderIntent(cid, 7, SYMBOL, side, quantity, 50_000.0, False)


def make_venue(fake: FakeExchange, max_retries: int = 3) -> tuple[CcxtVenue, list[float]]:
    pauses: list[float] = []

    async def no_sleep(seconds: float) -> None:
        pauses.append(seconds)

    venue = CcxtVenue(fake, name="fake", max_retries=max_retries, backoff_s=0.5, sleep=no_sleep)
    return venue, pauses


def submit(venue: CcxtVenue, order: OrderIntent | None = None) -> Any:
    return asyncio.run(venue.submit(order or intent()))


def test_the_venue_satisfies_the_protocol() -> None:
    assert isinstance(make_venue(FakeExchange())[0], Venue)


def test_an_order_carries_the_client_order_id_and_its_fill_has_the_trade_id() -> None:
    fake = FakeExchange()
    venue, _ = make_venue(fake)
    placed = submit(venue)
    assert placed.client_order_id == "t7-BTC_USDT"
    assert placed.status is OrderStatus.FILLED and placed.venue_order_id == "O1"
    assert [f.fill_id for f in placed.fills] == ["T1"]
    assert placed.fills[0].quantity == pytest.approx(0.01)
    assert placed.fills[0].fee == pytest.approx(0.01 * 50_000 * 0.0005)
    assert fake.create_calls == 1 and len(fake.orders) == 1


def test_a_timeout_after_the_order_was_placed_finds_it_and_sends_nothing_more() -> None:
    fake = FakeExchange()
    fake.faults = [(ccxt.RequestTimeout("fake: timed out"), True)]
    venue, _ = make_venue(fake)
    placed = submit(venue)
    assert fake.create_calls == 1 and len(fake.orders) == 1
    assert placed.status is OrderStatus.FILLED and [f.fill_id for f in placed.fills] == ["T1"]


def test_a_timeout_before_the_order_was_placed_resends_exactly_once() -> None:
    fake = FakeExchange()
    fake.faults = [(ccxt.RequestTimeout("fake: timed out"), False)]
    venue, pauses = make_venue(fake)
    placed = submit(venue)
    assert fake.create_calls == 2 and len(fake.orders) == 1
    assert placed.status is OrderStatus.FILLED and len(pauses) == 1


@pytest.mark.parametrize("has_fetch_order", [True, False])
def test_the_lookup_falls_back_to_the_order_lists(has_fetch_order: bool) -> None:
    fake = FakeExchange(has_fetch_order=has_fetch_order)
    fake.faults = [(ccxt.RequestTimeout("fake"), True), (ccxt.RequestTimeout("fake"), False)]
    venue, _ = make_venue(fake)
    submit(venue)
    assert fake.create_calls == 1 and len(fake.orders) == 1


def test_without_a_complete_lookup_the_venue_never_resends_blind() -> None:
    fake = FakeExchange(has_fetch_order=False, has_closed=False)
    fake.faults = [(ccxt.RequestTimeout("fake: timed out"), False)]
    venue, _ = make_venue(fake)
    with pytest.raises(VenueUnavailableError, match="cannot tell"):
        submit(venue)
    assert fake.create_calls == 1 and not fake.orders


def test_a_lookup_that_keeps_failing_is_unavailable_not_a_resend() -> None:
    fake = FakeExchange()
    fake.faults = [(ccxt.RequestTimeout("fake"), False)]
    fake.lookup_faults = [ccxt.NetworkError("fake: down")] * 4
    venue, _ = make_venue(fake, max_retries=3)
    with pytest.raises(VenueUnavailableError):
        submit(venue)
    assert fake.create_calls == 1 and not fake.orders


@pytest.mark.parametrize("failures", [1, 3])
def test_network_errors_are_retried_until_success(failures: int) -> None:
    fake = FakeExchange()
    fake.faults = [(ccxt.NetworkError("fake: reset"), False)] * failures
    venue, pauses = make_venue(fake, max_retries=3)
    placed = submit(venue)
    assert fake.create_calls == failures + 1 and len(fake.orders) == 1
    assert placed.status is OrderStatus.FILLED
    assert len(pauses) == failures and pauses == sorted(pauses)  # backoff grows


def test_network_errors_past_the_retries_are_unavailable() -> None:
    fake = FakeExchange()
    fake.faults = [(ccxt.NetworkError("fake: reset"), False)] * 3
    venue, _ = make_venue(fake, max_retries=2)
    with pytest.raises(VenueUnavailableError):
        submit(venue)
    assert fake.create_calls == 3 and not fake.orders


@pytest.mark.parametrize("error_class", [ccxt.RateLimitExceeded, ccxt.DDoSProtection])
def test_rate_limit_refusals_are_retried_with_backoff(error_class: type[Exception]) -> None:
    fake = FakeExchange()
    fake.faults = [(error_class("fake: slow down"), False)] * 2
    venue, pauses = make_venue(fake)
    submit(venue)
    assert fake.create_calls == 3 and len(fake.orders) == 1
    assert len(pauses) == 2 and pauses[1] >= pauses[0]


@pytest.mark.parametrize(
    "error_class", [ccxt.ExchangeError, ccxt.InsufficientFunds, ccxt.InvalidOrder]
)
def test_exchange_errors_are_rejections_and_never_retried(error_class: type[Exception]) -> None:
    fake = FakeExchange()
    fake.faults = [(error_class("fake: no"), False)]
    venue, pauses = make_venue(fake)
    with pytest.raises(VenueRejectedError, match=error_class.__name__):
        submit(venue)
    assert fake.create_calls == 1 and not fake.orders and not pauses


def test_a_duplicate_client_order_id_is_refused() -> None:
    fake = FakeExchange()
    venue, _ = make_venue(fake)
    submit(venue)
    with pytest.raises(VenueRejectedError, match="DuplicateOrderId"):
        submit(venue)
    assert fake.create_calls == 2 and len(fake.orders) == 1


def test_a_duplicate_refusal_after_an_ambiguous_failure_returns_the_landed_order() -> None:
    fake = FakeExchange()
    # The first attempt lands, but the lookup right after it cannot see it yet; the resend is
    # refused as a duplicate, which proves the first attempt landed.
    fake.faults = [(ccxt.ExchangeNotAvailable("fake: 502"), True)]
    venue, _ = make_venue(fake)
    real_fetch = fake.fetch_order
    hidden = {"left": 1}

    async def lagging_fetch(id: str, symbol: str | None = None, params: Any = None) -> Any:
        if hidden["left"]:
            hidden["left"] -= 1
            raise ccxt.OrderNotFound("fake: not visible yet")
        return await real_fetch(id, symbol, params)

    fake.fetch_order = lagging_fetch  # type: ignore[method-assign]
    placed = submit(venue)
    assert fake.create_calls == 2 and len(fake.orders) == 1
    assert placed.status is OrderStatus.FILLED


def test_fetch_order_cancel_positions_and_balance() -> None:
    fake = FakeExchange()
    venue, _ = make_venue(fake)

    async def scenario() -> None:
        await venue.start()
        assert await venue.fetch_order("nope", SYMBOL) is None
        await venue.submit(intent())
        found = await venue.fetch_order("t7-BTC_USDT", SYMBOL)
        assert found is not None and found.filled == pytest.approx(0.01)
        assert await venue.fetch_positions() == {SYMBOL: pytest.approx(0.01)}
        balance = await venue.fetch_balance()
        assert balance.equity == pytest.approx(1_000.0 + 0.01 * 50_000)
        assert await venue.fetch_open_orders() == []
        assert (await venue.quotes([SYMBOL]))[SYMBOL].price == 50_000.0
        await venue.close()

    asyncio.run(scenario())


# --- a real ccxt exchange object, built from settings (no network calls) ----------------------

API_KEY = "fake-api-key-7f3a9c"
SECRET = "fake-secret-b81e44d2"


def settings_for(exchange: str, sandbox: bool, tmp_path: Path) -> ExecSettings:
    config = tmp_path / "exec.yaml"
    config.write_text(
        f"venue: {{kind: ccxt, ccxt: {{exchange: {exchange}, sandbox: {str(sandbox).lower()}}}}}\n"
    )
    return load_exec_settings(
        config,
        environ={
            "SAPPHIRE_STATE_DIR": str(tmp_path),
            "EXCHANGE_API_KEY": API_KEY,
            "EXCHANGE_SECRET": SECRET,
        },
    )


def test_from_settings_builds_a_sandboxed_rate_limited_exchange_without_leaking_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    from sapphire_exec.cli import build_venue, configure_logging

    settings = settings_for("binance", True, tmp_path)
    venue = build_venue(settings)
    assert isinstance(venue, CcxtVenue)
    exchange = venue.exchange
    assert isinstance(exchange, ccxt.async_support.binance)
    assert exchange.enableRateLimit is True
    assert exchange.isSandboxModeEnabled
    assert exchange.apiKey == API_KEY  # the credentials reached the exchange, and only it
    configure_logging()
    with caplog.at_level(logging.DEBUG):
        venue._log_retry("create_order", ccxt.RequestTimeout(f"echo {API_KEY} {SECRET}"), 0)
        structlog.get_logger("sapphire_exec").info("venue_built", venue=venue)
    shown = repr(venue) + str(venue) + repr(settings) + capsys.readouterr().err + caplog.text
    assert "venue_call_failed" in shown and "venue_built" in shown
    assert API_KEY not in shown and SECRET not in shown
    asyncio.run(exchange.close())


def test_aster_is_accepted_and_a_missing_testnet_is_a_config_error(tmp_path: Path) -> None:
    venue = CcxtVenue.from_settings(settings_for("aster", False, tmp_path))
    assert venue.name == "aster" and isinstance(venue.exchange, ccxt.async_support.aster)
    assert venue.exchange.enableRateLimit is True
    asyncio.run(venue.exchange.close())
    with pytest.raises(ConfigError, match="no sandbox"):
        CcxtVenue.from_settings(settings_for("aster", True, tmp_path))
    with pytest.raises(ConfigError, match="unknown ccxt exchange"):
        CcxtVenue.from_settings(settings_for("not-an-exchange", False, tmp_path))
