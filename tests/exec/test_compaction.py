"""Bounded state: the journal's outbox and the bus's dedupe sets are compacted, and nothing is
lost or published twice across restarts, crashes and compactions (real redis-server)."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from sapphire_bus.server import RedisServer
from sapphire_domain.fill_model import CostModel
from sapphire_domain.messages import (
    FILLS_STREAM,
    ORDERS_STREAM,
    RISK_STREAM,
    TARGETS_STREAM,
    OrderEvent,
    OrderStatus,
    RiskEvent,
    Side,
    TargetPortfolio,
    TargetPosition,
    TradingState,
    decode,
    encode,
)
from sapphire_exec.bus import ExecutionBus, published_set
from sapphire_exec.cli import configure_logging
from sapphire_exec.config import ExecSettings
from sapphire_exec.service import ExecutionService
from sapphire_exec.venues.paper import MarketPriceFeed, PaperVenue, read_book
from sapphire_market.synthetic_source import SyntheticMarketData
from tests.exec.conftest import TEST_RISK, ExecHarness, make_target

STREAMS = (FILLS_STREAM, ORDERS_STREAM, RISK_STREAM)


@pytest.fixture(autouse=True)
def _logs_to_a_stream_that_stays_open() -> None:
    """In process, the service logs as ``sapphire exec`` does, to the real stderr: an earlier
    test may have pointed structlog at pytest's capture stream, closed since."""
    configure_logging(sys.__stderr__)


def _journal(state_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (state_dir / "journal.jsonl").read_text().splitlines()]


def _dedupe_keys(client: redis.Redis) -> int:
    return sum(int(client.scard(published_set(s))) for s in STREAMS)  # type: ignore[arg-type]


def _assert_each_message_once(client: redis.Redis, state_dir: Path, book: Path) -> int:
    """Every venue fill is on the fills stream and in the journal exactly once; no order event
    or risk event is on its stream twice. Returns the number of fills."""
    fills = [decode(f) for _, f in client.xrange(FILLS_STREAM)]  # type: ignore[union-attr]
    venue = [
        f"paper:{f['fill_id']}" for r in read_book(book) if r["t"] == "order"
        for f in r["order"]["fills"]
    ]  # fmt: skip
    journalled = [r["fill"]["fill_id"] for r in _journal(state_dir) if r["t"] == "fill"]
    assert Counter(f.fill_id for f in fills) == Counter(venue) == Counter(journalled)  # type: ignore[union-attr]
    events = [decode(f) for _, f in client.xrange(ORDERS_STREAM)]  # type: ignore[union-attr]
    keys = Counter((e.client_order_id, e.status) for e in events)  # type: ignore[union-attr]
    assert all(n == 1 for n in keys.values()), keys
    risk = [f["payload"] for _, f in client.xrange(RISK_STREAM)]  # type: ignore[union-attr]
    assert len(risk) == len(set(risk))
    return len(venue)


def test_the_running_service_compacts_its_outbox_and_a_restart_republishes_nothing(
    tmp_path: Path, redis_server: RedisServer
):
    harness = ExecHarness(tmp_path, redis_server, outbox_compact_seconds=2.0)
    state_dir = tmp_path / "exec"
    book = state_dir / "paper_venue.jsonl"
    try:
        process = harness.start()
        harness.publish(make_target(1, {"BTC/USD": 0.2, "ETH/USD": -0.1}))
        harness.publish(make_target(2, {"BTC/USD": 0.1, "XRP/USD": 0.1}))
        harness.wait_for(harness.drained, what="v1 and v2")
        assert _dedupe_keys(harness.client) > 0
        # Seen at one pass, dropped at the next: the outbox and the dedupe sets empty out.
        harness.wait_for(
            lambda: (
                not [r for r in _journal(state_dir) if r["t"] == "out"]
                and _dedupe_keys(harness.client) == 0
            ),
            timeout=30,
            what="the outbox and the dedupe sets to be compacted",
        )
        before = {s: len(harness.stream(s)) for s in STREAMS}
        fills = _assert_each_message_once(harness.client, state_dir, book)
        assert fills >= 3 and before[FILLS_STREAM] == fills
        assert harness.stop(process) == 0

        # A restart replays the compacted journal: same positions (it reconciles with the
        # venue or refuses to start), nothing republished, and trading goes on.
        process = harness.start()
        assert {s: len(harness.stream(s)) for s in STREAMS} == before
        harness.publish(make_target(3, {"BTC/USD": -0.1, "ETH/USD": 0.1}))
        harness.wait_for(harness.drained, what="v3")
        assert _assert_each_message_once(harness.client, state_dir, book) > fills
        process.send_signal(signal.SIGKILL)  # and a crash once more, with messages in the outbox
        process.wait()
        process = harness.start()
        harness.publish(make_target(4, {"BTC/USD": 0.05}))
        harness.wait_for(harness.drained, what="v4")
        harness.wait_for(
            lambda: _dedupe_keys(harness.client) == 0, timeout=30, what="compaction after v4"
        )
        _assert_each_message_once(harness.client, state_dir, book)
        assert harness.stop(process) == 0
    finally:
        harness.cleanup()


# --- in process, to stop a compaction half-way -----------------------------------------------


class _CrashError(Exception):
    """Stands for the process dying at this point."""


def _service(state_dir: Path, url: str) -> ExecutionService:
    source = SyntheticMarketData(n_symbols=3, days=2, timeframe="1m")
    settings = ExecSettings(state_dir=state_dir, risk=TEST_RISK, redis_url=url)
    venue = PaperVenue(
        MarketPriceFeed(source, "1m"), state_dir / "paper_venue.jsonl", CostModel(), 100_000.0
    )
    return ExecutionService(settings, venue, ExecutionBus(url))


async def _trade(service: ExecutionService, client: redis.Redis, version: int) -> None:
    symbols = service.venue.feed.source.list_symbols()  # type: ignore[attr-defined]
    created = datetime.fromtimestamp(service.venue.now_ms() / 1000, tz=UTC)
    target = TargetPortfolio(
        version=version, created_at=created, valid_until=created + timedelta(hours=1),
        positions=tuple(
            TargetPosition(symbol=s, weight=0.1 * version * (-1) ** i)
            for i, s in enumerate(symbols)
        ),
    )  # fmt: skip
    client.xadd(TARGETS_STREAM, encode(target))  # type: ignore[arg-type]
    entries = await service.bus.read_targets(16, 1000)
    assert len(entries) == 1
    await service.process(entries)


def test_a_crash_between_the_journal_rewrite_and_the_dedupe_trim_loses_and_repeats_nothing(
    tmp_path: Path, redis_server: RedisServer
):
    state_dir = tmp_path / "exec"
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)

    async def first_life() -> None:
        service = _service(state_dir, redis_server.url)
        await service.start()
        await _trade(service, client, 1)
        await service.compact_outbox()  # sees what the bus holds
        assert _dedupe_keys(client) > 0

        async def crash(items: object) -> None:
            raise _CrashError

        service.bus.forget = crash  # type: ignore[method-assign]
        with pytest.raises(_CrashError):
            await service.compact_outbox()  # the journal is rewritten, then the process dies
        assert service.journal is not None
        service.journal.close()
        await service.venue.close()
        await service.bus.close()

    async def second_life() -> None:
        service = _service(state_dir, redis_server.url)
        await service.start()  # applies the interrupted trim
        assert _dedupe_keys(client) == 0
        await _trade(service, client, 2)
        await service.shutdown()

    try:
        asyncio.run(first_life())
        journal = _journal(state_dir)
        assert not [r for r in journal if r["t"] == "out"]
        (trim,) = [r for r in journal if r["t"] == "trim"]
        assert {s for s, _ in trim["items"]} == {FILLS_STREAM, ORDERS_STREAM}
        assert _dedupe_keys(client) == len(trim["items"])  # the keys outlived the crash
        streams = {s: len(client.xrange(s)) for s in STREAMS}  # type: ignore[arg-type]

        asyncio.run(second_life())
        assert len(client.xrange(FILLS_STREAM)) == streams[FILLS_STREAM] + 3  # type: ignore[arg-type]
        _assert_each_message_once(client, state_dir, state_dir / "paper_venue.jsonl")
    finally:
        client.close()


def test_a_message_the_bus_never_had_stays_in_the_outbox_until_it_is_published(
    tmp_path: Path, redis_server: RedisServer
):
    state_dir = tmp_path / "exec"
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    event = RiskEvent(
        state=TradingState.ACTIVE, previous_state=TradingState.ACTIVE, reason="MANUAL_HALT: t",
        ts=datetime(2026, 11, 22, tzinfo=UTC),
    )  # fmt: skip
    item = (RISK_STREAM, "risk:never-published", encode(event))
    resting = OrderEvent(
        client_order_id="t9-SYN00_USDT", target_version=9, symbol="SYN00/USDT", side=Side.BUY,
        quantity=1.0, status=OrderStatus.ACCEPTED, ts=datetime(2026, 11, 22, tzinfo=UTC),
    )  # fmt: skip
    open_order = (ORDERS_STREAM, "t9-SYN00_USDT:accepted", encode(resting))

    def outbox() -> list[str]:
        return sorted(r["key"] for r in _journal(state_dir) if r["t"] == "out")

    async def run() -> None:
        service = _service(state_dir, redis_server.url)
        await service.start()
        service._journal_out([item], sync=True)  # journalled while the bus was away
        service._journal_out([open_order], sync=True)
        await service.bus.publish_once([open_order])
        for _ in range(3):
            await service.compact_outbox()
        # An open order's event stays: a restart must know the order exists.
        assert outbox() == ["risk:never-published", "t9-SYN00_USDT:accepted"]
        assert client.xlen(RISK_STREAM) == 0
        await service._connect_bus()  # the reconnect publishes it
        assert client.xlen(RISK_STREAM) == 1
        await service.compact_outbox()  # seen on the bus...
        await service._connect_bus()  # ...but before a reconnect: Redis may have restarted
        await service.compact_outbox()
        assert outbox() == ["risk:never-published", "t9-SYN00_USDT:accepted"]
        await service.compact_outbox()
        assert outbox() == ["t9-SYN00_USDT:accepted"]
        await service._connect_bus()  # nothing left to republish
        assert client.xlen(RISK_STREAM) == 1 and client.xlen(ORDERS_STREAM) == 1
        assert _dedupe_keys(client) == 1  # the open order's key: it may be republished
        await service.shutdown()

    try:
        asyncio.run(run())
    finally:
        client.close()
