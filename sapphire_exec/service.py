"""The execution service loop: targets in, orders to the venue, fills out.

For each target read from the bus (consumer group, see ``bus``):

1. **Validate.** A malformed entry, a version older than one already traded, or a version that
   repeats a traded one under another stream id goes to the dead-letter stream with its reason.
   When several valid targets arrive in one read, only the newest is traded and the older ones
   are acknowledged as superseded: the service trades the latest target, never a queue of them.
2. **Decide.** ``plan_orders`` diffs the target against the journal's positions; every order
   passes ``RiskEngine.check``; denials are counted, logged and published as order events.
3. **Write ahead.** A ``begin`` record naming the approved client order ids is written to the
   journal before anything reaches the venue, so a crash after this point is recovered by
   looking those ids up. It is not fsynced on its own: once ``write`` returns, the kernel holds
   it, so any crash of the service finds it; the commit's fsync makes it durable with the rest.
   Only an OS crash or power loss within the few milliseconds before the commit can lose it,
   and then nothing is doubled either: the target is still pending on the bus and is
   redelivered, a redelivered target looks each order up by its deterministic id before
   submitting, and orders the journal does not know fail the startup reconciliation closed.
4. **Submit** each approved order (an id the journal already knows is never sent again).
5. **Commit.** Fills, order events and ``done`` go to the journal in one fsynced write, then to
   the bus (idempotently, by key), and only then is the target acknowledged.

Steps 1 to 4 are the **decision latency** (metric ``sapphire_decision_latency_seconds``): from
the moment a read returns the target to the moment its orders are handed to the venue, the
write-ahead record included. Nothing that can wait runs in that stretch: denial bookkeeping,
metrics, logs, the commit and the bus come after the hand-off, and the garbage collector is
paused in it (it runs right after). ``Timeline`` has the stamps of each stage.

Every ``tick_seconds`` the service refreshes prices and equity, feeds equity to the kill switch
(a drawdown breach halts within that tick), persists the risk state, and updates the metrics.
Every ``outbox_compact_seconds`` it compacts the journal's outbox and the bus's dedupe sets
(``compact_outbox``), so a service that runs for months keeps neither growing.

At start it replays the journal, restores the persisted risk state, looks up the orders of any
target that was in flight, and reconciles positions and open orders with the venue; if they
disagree beyond ``reconcile_tolerance`` it halts (persisted) and refuses to run. It then
republishes the journal's outbox, which is a no-op for what the bus already has.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import math
import os
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from sapphire_domain.errors import SapphireError
from sapphire_domain.messages import (
    FILLS_STREAM,
    ORDERS_STREAM,
    RISK_STREAM,
    SCHEMA_VERSION,
    Fill,
    MalformedMessageError,
    Message,
    OrderEvent,
    OrderStatus,
    RiskEvent,
    Side,
    TargetPortfolio,
    decode,
    encode,
)
from sapphire_domain.orders import (
    OrderIntent,
    OrderPlanningError,
    plan_orders,
    target_version_of,
)
from sapphire_domain.risk import RiskConfig, RiskEngine
from sapphire_exec.bus import BUS_ERRORS, Entry, ExecutionBus
from sapphire_exec.config import ExecSettings
from sapphire_exec.journal import Journal, fsync_folder
from sapphire_exec.metrics import ExecMetrics
from sapphire_exec.venues.base import (
    Quote,
    Venue,
    VenueOrder,
    VenueRejectedError,
    VenueUnavailableError,
)

log = structlog.get_logger("sapphire_exec")


class ReconciliationError(SapphireError):
    """The journal and the venue disagree beyond tolerance: the service must not trade."""


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


@dataclass(slots=True)
class Timeline:
    """``perf_counter_ns`` stamps of the newest target's way through the service: when its read
    batch was in hand, when plan and risk were done, when its orders were handed to the venue
    (after the write-ahead ``begin`` record), when the venue returned, when the outcome was
    durable in the journal, and when it was on the bus and acknowledged. The decision latency
    (the metric) is ``handed - received``; the benchmark reads the rest."""

    received: int
    decided: int = 0
    handed: int = 0
    accepted: int = 0
    committed: int = 0
    acked: int = 0


@dataclass
class Decision:
    """What one target turned into before anything reached the venue."""

    target: TargetPortfolio
    entry: Entry
    approved: list[OrderIntent]
    denied: list[tuple[OrderIntent, str, str]]  # order, reason code, detail
    recovering: bool


class ExecutionService:
    def __init__(
        self,
        settings: ExecSettings,
        venue: Venue,
        bus: ExecutionBus,
        metrics: ExecMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.venue = venue
        self.bus = bus
        self.metrics = metrics or ExecMetrics()
        self.risk_config = RiskConfig(**settings.risk)
        self.risk = RiskEngine(self.risk_config)
        self.journal: Journal | None = None
        self.positions: dict[str, float] = {}
        self.known_orders: set[str] = set()  # client order ids whose outcome is journalled
        self.fill_ids: set[str] = set()
        self.done: dict[int, str] = {}
        self.highest_done = 0  # max(self.done), kept up to date: it is read for every entry
        self.begun: dict[int, str] = {}
        self._quotes: dict[str, Quote] = {}
        self.prices: dict[str, float] = {}  # the quotes' prices and times, for plan and risk
        self.price_times: dict[str, int] = {}
        self.equity = math.nan
        self.baseline_equity: float | None = None
        self.latest_target: TargetPortfolio | None = None
        self.ready = False
        self.bus_ok = False
        self._persisted_risk: str = ""
        self._last_tick = 0.0
        # Outbox compaction (see ``compact_outbox``): what the bus held at the last pass, and
        # whether every ``trim`` record in the journal has been applied to the dedupe sets.
        self._confirmed: set[tuple[str, str]] = set()
        self._trims_applied = True
        self._last_compaction = time.monotonic()
        self.timeline = Timeline(0)

    @property
    def quotes(self) -> dict[str, Quote]:
        return self._quotes

    @quotes.setter
    def quotes(self, quotes: dict[str, Quote]) -> None:
        self._quotes = quotes
        self.prices = {s: q.price for s, q in quotes.items()}
        self.price_times = {s: q.ts_ms for s, q in quotes.items()}

    # --- startup ------------------------------------------------------------------------------

    async def start(self) -> None:
        settings = self.settings
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        self._restore_risk()
        self.journal = Journal(settings.journal_path)
        state = self.journal.replay()
        self.done, self.begun = state.done, state.begun
        self.highest_done = max(self.done, default=0)
        self.fill_ids = set(state.fill_ids)
        for fill in state.fills:
            self._apply_fill(fill["symbol"], Side(fill["side"]), float(fill["quantity"]))
        for record in state.outbox:
            if record["stream"] == ORDERS_STREAM:
                self.known_orders.add(record["key"].rsplit(":", 1)[0])
        await self.venue.start()
        await self._recover_in_flight()
        await self._reconcile()
        await self.tick()
        await self._connect_bus()
        self.ready = True
        log.info(
            "started",
            venue=self.venue.name,
            positions=self.positions,
            trading_state=self.risk.state.value,
            last_version=max(self.done, default=0),
        )

    async def _recover_in_flight(self) -> None:
        """Adopt the venue's fills for orders of targets that a crash left in flight."""
        assert self.journal is not None
        for version in sorted(self.begun):
            cids = self._begun_cids.get(version, [])
            for cid, symbol in cids:
                if cid in self.known_orders:
                    continue
                order = await self.venue.fetch_order(cid, symbol)
                if order is not None:
                    self._commit_orders(version, [(order, None)], extra=[])
                    log.info("recovered_order", client_order_id=cid, status=order.status.value)

    @property
    def _begun_cids(self) -> dict[int, list[tuple[str, str]]]:
        assert self.journal is not None
        found: dict[int, list[tuple[str, str]]] = {}
        for record in self.journal.records():
            if record["t"] == "begin" and record["version"] in self.begun:
                found[record["version"]] = [(c, s) for c, s in record["orders"]]
        return found

    async def _reconcile(self) -> None:
        venue_positions = await self.venue.fetch_positions()
        tolerance = self.settings.reconcile_tolerance
        symbols = set(venue_positions) | set(self.positions)
        differences = {
            s: (self.positions.get(s, 0.0), venue_positions.get(s, 0.0))
            for s in sorted(symbols)
            if abs(self.positions.get(s, 0.0) - venue_positions.get(s, 0.0)) > tolerance
        }
        unknown_open = [
            o.client_order_id
            for o in await self.venue.fetch_open_orders()
            if o.client_order_id not in self.known_orders
        ]
        if differences or unknown_open:
            now = self.venue.now_ms()
            event = self.risk.halt("reconciliation failed", now)
            self._persist_risk(force=True)
            self._journal_out([(RISK_STREAM, f"risk:{uuid.uuid4()}", encode(event))], sync=True)
            log.error(
                "reconciliation_failed",
                differences={s: {"journal": j, "venue": v} for s, (j, v) in differences.items()},
                unknown_open_orders=unknown_open,
            )
            raise ReconciliationError(
                f"journal and venue disagree: positions {differences}, "
                f"open orders unknown to the journal {unknown_open}"
            )
        log.info("reconciled", positions=self.positions)

    async def _connect_bus(self) -> None:
        """(Re)join the consumer group, finish any trim of the dedupe sets a crash interrupted,
        and republish the outbox; safe to repeat."""
        assert self.journal is not None
        await self.bus.prepare()
        state = self.journal.replay()
        if state.trims:
            await self.bus.forget(state.trims)
        self._trims_applied = True
        self._confirmed = set()  # seen before a reconnect: Redis may have restarted since
        outbox = [(r["stream"], r["key"], r["fields"]) for r in state.outbox]
        published = await self.bus.publish_once(outbox)
        self.bus_ok = True
        if published:
            log.info("outbox_republished", messages=published)

    async def compact_outbox(self) -> None:
        """Drop from the journal the outbox messages the bus already held at the previous pass,
        and their keys from the dedupe sets; then note which of the rest it holds now.

        Safe because a message is only ever published from the outbox: once its record is
        gone, nothing can publish it again, so its dedupe key is no longer needed. It is
        dropped at least ``outbox_compact_seconds`` after it was seen on the bus, long after
        Redis's AOF (fsynced every second) has it on disk, and never on the strength of a
        sighting from before a reconnect. Kept: events of orders still open or of targets in
        flight, which tell a restart what exists at the venue (``known_orders``). Keys leave the
        dedupe sets only once the rewritten journal is durable, and a ``trim`` record in it
        names them, so a crash in between removes them at the next start (``_connect_bus``).
        """
        assert self.journal is not None
        self._last_compaction = time.monotonic()
        confirmed, self._confirmed = self._confirmed, set()
        drop: set[tuple[str, str]] = set()
        outbox: list[tuple[str, str]] = []
        unapplied: list[tuple[str, str]] = []  # of trim records whose removal was interrupted
        trim_records = False
        for record in self.journal.records():
            kind = record["t"]
            if kind == "trim":
                trim_records = True
                if not self._trims_applied:
                    unapplied += [(stream, key) for stream, key in record["items"]]
            elif kind == "out":
                item = (record["stream"], record["key"])
                outbox.append(item)
                if item in confirmed and not self._names_a_live_order(record):
                    drop.add(item)
        if drop or trim_records:
            trims = [*unapplied, *sorted(drop)]
            dropped = self.journal.compact(
                lambda r: r["t"] == "trim" or (r["t"] == "out" and (r["stream"], r["key"]) in drop),
                [{"t": "trim", "items": trims}] if trims else [],
            )
            self._trims_applied = not trims
            if trims:
                await self.bus.forget(trims)
                self._trims_applied = True
            log.info("outbox_compacted", dropped=dropped, trimmed_keys=len(trims))
        # What compaction kept. An event journalled meanwhile (a halt from the control API)
        # is not in it, and is looked for at the next pass.
        kept = [item for item in outbox if item not in drop]
        self._confirmed = await self.bus.published(kept)

    def _names_a_live_order(self, record: dict[str, Any]) -> bool:
        """An order event of an order still open, or of a target still in flight."""
        if record["stream"] != ORDERS_STREAM:
            return False
        client_order_id, status = record["key"].rsplit(":", 1)
        return status in _OPEN_STATUSES or _version_of(client_order_id) in self.begun

    # --- the risk state -----------------------------------------------------------------------

    def _restore_risk(self) -> None:
        path = self.settings.risk_state_path
        if path.exists():
            saved = json.loads(path.read_text())
            self.risk = RiskEngine.restore(self.risk_config, saved["risk"])
            self.baseline_equity = saved.get("baseline_equity")
        self.metrics.set_state(self.risk.state)

    def _persist_risk(self, *, force: bool = False) -> None:
        text = json.dumps({"risk": self.risk.snapshot(), "baseline_equity": self.baseline_equity})
        if text == self._persisted_risk and not force:
            return
        _atomic_write(self.settings.risk_state_path, text)
        self._persisted_risk = text

    async def apply_risk_event(self, event: RiskEvent | None) -> None:
        """Persist the state first, then journal and publish the event."""
        if event is None:
            return
        self._persist_risk(force=True)
        self.metrics.set_state(self.risk.state)
        item = (RISK_STREAM, f"risk:{uuid.uuid4()}", encode(event))
        self._journal_out([item], sync=True)
        log.warning(
            "risk_event", state=event.state.value, previous=event.previous_state.value,
            reason=event.reason, detail=event.detail,
        )  # fmt: skip
        try:
            await self.bus.publish_once([item])
        except BUS_ERRORS:
            self.bus_ok = False  # republished from the outbox on reconnect

    # --- the loop -----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        block_ms = int(min(200, self.settings.tick_seconds * 1000))
        backoff = 0.1
        while not stop.is_set():
            try:
                if not self.bus_ok:
                    await self._connect_bus()
                    log.info("bus_connected")
                    backoff = 0.1
                entries = await self.bus.read_targets(self.settings.read_batch, block_ms)
                if entries:
                    await self.process(entries)
                if time.monotonic() - self._last_tick >= self.settings.tick_seconds:
                    await self.tick()
            except BUS_ERRORS as error:
                if self.bus_ok:
                    log.warning("bus_unavailable", error=type(error).__name__)
                self.bus_ok = False
                self.bus.redeliver_pending()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=backoff)
                backoff = min(backoff * 2, 2.0)
            except VenueUnavailableError as error:
                await self.apply_risk_event(self.risk.on_error(self.venue.now_ms(), str(error)))
                log.warning("venue_unavailable", error=str(error))
                self.bus.redeliver_pending()
                await asyncio.sleep(1.0)

    async def process(self, entries: list[Entry]) -> None:
        received = time.perf_counter_ns()
        # No garbage collection pause between a target's arrival and the hand-off of its orders
        # to the venue: collection resumes right after the hand-off (``trade``), or here.
        gc.disable()
        try:
            valid: list[tuple[Entry, TargetPortfolio]] = []
            for entry in entries:
                target = await self._validate(entry)
                if target is not None:
                    valid.append((entry, target))
            if not valid:
                return
            newest = max(valid, key=lambda pair: pair[1].version)
            superseded = [pair for pair in valid if pair is not newest]
            if superseded:
                # One journal write for all of them; they are acknowledged together with the
                # traded target, after its commit fsync has made these records durable too.
                # Should the trade fail, they are redelivered, found in ``done`` under their
                # own ids, and acked.
                self._mark_done_many(
                    [(target.version, entry.msg_id) for entry, target in superseded],
                    "superseded",
                )
            also_ack = [e.msg_id for e, _ in superseded]
            await self.trade(newest[0], newest[1], received, also_ack=also_ack)
        finally:
            gc.enable()

    async def _validate(self, entry: Entry) -> TargetPortfolio | None:
        try:
            message = _decode(entry.fields)
        except MalformedMessageError as error:
            await self._dead_letter(entry, f"malformed: {error}")
            return None
        if not isinstance(message, TargetPortfolio):
            await self._dead_letter(entry, f"not a target portfolio: {message.kind}")
            return None
        version = message.version
        if version in self.done:
            if self.done[version] == entry.msg_id:  # our own redelivery after a crash
                await self.bus.ack([entry.msg_id])
            else:
                await self._dead_letter(entry, f"repeated version {version}")
            return None
        highest = self.highest_done
        if version < highest:
            await self._dead_letter(
                entry, f"out of order: version {version} is older than {highest}, already traded"
            )
            return None
        return message

    async def _dead_letter(self, entry: Entry, reason: str) -> None:
        await self.bus.dead_letter(entry, reason)
        self.metrics.dead_letters.inc()
        log.warning("dead_letter", msg_id=entry.msg_id, reason=reason[:500])

    def decide(
        self, entry: Entry, target: TargetPortfolio, weights: dict[str, float] | None = None
    ) -> Decision:
        """Plan and risk-check one target: pure computation on cached prices and positions.
        ``weights`` is ``target.weights()`` when the caller has it already."""
        weights = target.weights() if weights is None else weights
        now = self.venue.now_ms()
        prices = self.prices
        orders = self.settings.orders
        approved: list[OrderIntent] = []
        denied: list[tuple[OrderIntent, str, str]] = []
        try:
            intents = plan_orders(
                target,
                self.positions,
                prices,
                self.equity,
                # One lot size for all (the common case) needs no per-symbol mapping.
                lot_sizes=orders.lot_for([*weights, *self.positions])
                if orders.lot_sizes
                else orders.lot_size,
                no_trade_band=orders.no_trade_band,
                min_notional=orders.min_notional,
                weights=weights,
            )
        except OrderPlanningError as error:
            log.error("planning_failed", version=target.version, error=str(error))
            intents = []
        # Each check sees the positions as they will be once the plan's earlier orders have
        # filled; an order already at the venue (recovered after a crash) is never sent twice.
        fresh = [i for i in intents if i.client_order_id not in self.known_orders]
        decisions = self.risk.check_plan(
            fresh,
            target=target,
            now_ms=now,
            price_times=self.price_times,
            positions=self.positions,
            prices=prices,
            equity=self.equity,
        )
        for intent, decision in zip(fresh, decisions, strict=True):
            if decision.approved:
                approved.append(intent)
            else:
                denied.append((intent, str(decision.reason), decision.detail))
        recovering = entry.redelivered or target.version in self.begun
        return Decision(target, entry, approved, denied, recovering)

    async def trade(
        self,
        entry: Entry,
        target: TargetPortfolio,
        received: int,
        also_ack: list[str] | None = None,
    ) -> None:
        """Decide, write ahead, hand the orders to the venue; everything that can wait
        (denial bookkeeping, the commit, the bus) comes after the hand-off."""
        assert self.journal is not None
        clock = time.perf_counter_ns
        timeline = self.timeline = Timeline(received)
        self.latest_target = target
        weights = target.weights()
        await self._refresh_quotes(weights, self.positions)
        decision = self.decide(entry, target, weights)
        timeline.decided = clock()
        version = target.version
        if decision.approved:
            orders = [[o.client_order_id, o.symbol] for o in decision.approved]
            self.journal.append(
                [{"t": "begin", "version": version, "msg_id": entry.msg_id, "orders": orders}],
                sync=False,  # durable with the commit; see step 3 above
            )
            self.begun[version] = entry.msg_id
        timeline.handed = clock()
        gc.enable()  # see ``process``
        results = await self.submit_orders(decision.approved, decision.recovering)
        timeline.accepted = clock()
        self.metrics.decision_latency.observe((timeline.handed - received) / 1e9)
        extra = self._denied_events(version, decision.denied)
        items = self._commit_orders(version, results, extra, msg_id=entry.msg_id)
        timeline.committed = clock()
        await self.bus.publish_once(items)
        await self.bus.ack([*(also_ack or ()), entry.msg_id])
        timeline.acked = clock()
        log.info(
            "target_traded", version=version, orders=len(decision.approved),
            denied=len(decision.denied), decision_us=(timeline.handed - received) // 1000,
        )  # fmt: skip

    def _denied_events(
        self, version: int, denied: list[tuple[OrderIntent, str, str]]
    ) -> list[tuple[str, str, dict[str, str]]]:
        """Count, log and describe (as order events to publish) the orders risk refused."""
        extra: list[tuple[str, str, dict[str, str]]] = []
        if not denied:
            return extra
        ts = _utc(self.venue.now_ms())
        for intent, reason, detail in denied:
            self.metrics.count_denial(reason)
            self.metrics.count_order(intent.symbol, intent.side, "denied")
            log.info(
                "order_denied", client_order_id=intent.client_order_id, reason=reason,
                detail=detail,
            )  # fmt: skip
            event = OrderEvent(
                client_order_id=intent.client_order_id, target_version=version,
                symbol=intent.symbol, side=intent.side, quantity=intent.quantity,
                status=OrderStatus.DENIED, reason=reason, ts=ts,
            )  # fmt: skip
            extra.append((ORDERS_STREAM, f"{intent.client_order_id}:denied", encode(event)))
        return extra

    async def submit_orders(
        self, approved: list[OrderIntent], recovering: bool
    ) -> list[tuple[VenueOrder, OrderIntent | None]]:
        """Hand the approved orders to the venue, in order. A venue with ``submit_many`` (the
        paper venue) takes them in one call, which fills them exactly as one-by-one calls
        would; after a crash (``recovering``) each is looked up first, one at a time."""
        submit_many = getattr(self.venue, "submit_many", None)
        if recovering or submit_many is None or not approved:
            return [(await self._submit(i, recovering), i) for i in approved]
        results: list[tuple[VenueOrder, OrderIntent | None]] = []
        outcomes: list[VenueOrder | VenueRejectedError] = await submit_many(approved)
        for intent, outcome in zip(approved, outcomes, strict=True):
            placed = (
                await self._rejected(intent, outcome)
                if isinstance(outcome, VenueRejectedError)
                else outcome
            )
            results.append((placed, intent))
        return results

    async def _rejected(self, intent: OrderIntent, error: VenueRejectedError) -> VenueOrder:
        await self.apply_risk_event(self.risk.on_error(self.venue.now_ms(), str(error)))
        return VenueOrder(
            intent.client_order_id, intent.symbol, intent.side, intent.quantity,
            OrderStatus.REJECTED, reason=str(error)[:200],
        )  # fmt: skip

    async def _submit(self, intent: OrderIntent, recovering: bool) -> VenueOrder:
        if recovering:  # the order may have reached the venue before a crash
            existing = await self.venue.fetch_order(intent.client_order_id, intent.symbol)
            if existing is not None:
                return existing
        try:
            return await self.venue.submit(intent)
        except VenueRejectedError as error:
            return await self._rejected(intent, error)

    def _commit_orders(
        self,
        version: int,
        results: list[tuple[VenueOrder, OrderIntent | None]],
        extra: list[tuple[str, str, dict[str, str]]],
        msg_id: str | None = None,
    ) -> list[tuple[str, str, dict[str, str]]]:
        """Journal the orders' outcomes and fills (and ``done``) in one fsync; returns the
        bus items to publish."""
        assert self.journal is not None
        records: list[dict[str, Any]] = []
        items = list(extra)
        ts = _utc(self.venue.now_ms())
        venue = self.venue.name
        metrics = self.metrics
        for order, intent in results:
            reference = intent.reference_price if intent is not None else None
            for execution in order.fills:
                fill_id = f"{venue}:{execution.fill_id}"
                if fill_id in self.fill_ids:
                    continue
                fill = Fill(
                    fill_id=fill_id, client_order_id=order.client_order_id,
                    target_version=version, symbol=order.symbol, side=order.side,
                    quantity=execution.quantity, price=execution.price, fee=execution.fee,
                    liquidity=execution.liquidity, venue=venue,
                    ts=_utc(execution.ts_ms), reference_price=reference,
                )  # fmt: skip
                records.append({"t": "fill", "fill": fill.model_dump(mode="json")})
                items.append((FILLS_STREAM, fill_id, encode(fill)))
                self.fill_ids.add(fill_id)
                self._apply_fill(order.symbol, order.side, execution.quantity)
                metrics.count_fill(order.symbol, order.side)
            event = OrderEvent(
                client_order_id=order.client_order_id, target_version=version,
                symbol=order.symbol, side=order.side, quantity=order.quantity,
                status=order.status, reason=order.reason, ts=ts,
            )  # fmt: skip
            items.append((ORDERS_STREAM, f"{order.client_order_id}:{order.status}", encode(event)))
            self.known_orders.add(order.client_order_id)
            metrics.count_order(order.symbol, order.side, order.status)
        records += [{"t": "out", "stream": s, "key": k, "fields": f} for s, k, f in items]
        if msg_id is not None:
            records.append({"t": "done", "version": version, "msg_id": msg_id, "outcome": "traded"})
            self.done[version] = msg_id
            self.highest_done = max(self.highest_done, version)
            self.begun = {v: m for v, m in self.begun.items() if v > version}
        self.journal.append(records, sync=bool(results) or version in self.begun)
        return items

    def _mark_done_many(self, finished: list[tuple[int, str]], outcome: str) -> None:
        assert self.journal is not None
        self.journal.append(
            [{"t": "done", "version": v, "msg_id": m, "outcome": outcome} for v, m in finished],
            sync=False,
        )
        for version, msg_id in finished:
            self.done[version] = msg_id
            self.highest_done = max(self.highest_done, version)

    def _journal_out(self, items: list[tuple[str, str, dict[str, str]]], *, sync: bool) -> None:
        assert self.journal is not None
        self.journal.append(
            [{"t": "out", "stream": s, "key": k, "fields": f} for s, k, f in items], sync=sync
        )

    def _apply_fill(self, symbol: str, side: Side, quantity: float) -> None:
        signed = quantity if side is Side.BUY else -quantity
        self.positions[symbol] = self.positions.get(symbol, 0.0) + signed

    # --- the tick -----------------------------------------------------------------------------

    async def _refresh_quotes(self, *symbols: Iterable[str]) -> None:
        quotes = self._quotes
        missing = [s for group in symbols for s in group if s not in quotes]
        if missing:
            self.quotes = {**quotes, **await self.venue.quotes(list(dict.fromkeys(missing)))}

    async def tick(self) -> None:
        """Prices, equity and the kill switch, the persisted risk state, and the metrics."""
        self._last_tick = time.monotonic()
        now = self.venue.now_ms()
        symbols = list(dict.fromkeys([*self.positions, *self.quotes]))
        if self.latest_target is not None:
            symbols += [s for s in self.latest_target.weights() if s not in symbols]
        self.quotes = await self.venue.quotes(symbols) if symbols else {}
        balance = await self.venue.fetch_balance()
        self.equity = balance.equity
        if self.baseline_equity is None:
            self.baseline_equity = balance.equity
        await self.apply_risk_event(self.risk.on_equity(balance.equity, now))
        self._persist_risk()
        m = self.metrics
        gross = 0.0
        for symbol, quantity in self.positions.items():
            price = self.quotes[symbol].price if symbol in self.quotes else math.nan
            m.position.labels(symbol).set(quantity)
            m.position_notional.labels(symbol).set(quantity * price)
            gross += abs(quantity * price)
        m.gross_exposure.set(gross)
        m.pnl.set(balance.equity - self.baseline_equity)
        peak = self.risk.peak_equity
        m.drawdown.set(max(0.0, 1.0 - balance.equity / peak) if peak else 0.0)
        m.set_state(self.risk.state)
        if self.latest_target is not None:
            m.target_age.set(max(0.0, (now - _ms(self.latest_target.created_at)) / 1000))
        if self.bus_ok:
            try:
                m.bus_lag.set(await self.bus.lag())
                if time.monotonic() - self._last_compaction >= self.settings.outbox_compact_seconds:
                    await self.compact_outbox()
            except BUS_ERRORS:
                self.bus_ok = False

    # --- control ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "trading_state": self.risk.state.value,
            "reason": self.risk.reason,
            "positions": self.positions,
            "equity": self.equity,
            "last_version": self.highest_done,
            "ready": self.ready,
            "bus_connected": self.bus_ok,
        }

    async def halt(self, reason: str) -> None:
        await self.apply_risk_event(self.risk.halt(reason, self.venue.now_ms()))

    async def resume(self, token: str) -> None:
        """Back to ACTIVE through the risk engine's authenticated reset (raises if refused)."""
        expected = self.settings.control_token
        event = self.risk.reset(
            token, expected.get_secret_value() if expected else "", self.venue.now_ms()
        )
        await self.apply_risk_event(event)

    # --- shutdown -----------------------------------------------------------------------------

    async def shutdown(self) -> None:
        """Handle open orders as configured, and flush the journal and the risk state."""
        try:
            if self.settings.on_shutdown == "cancel" and self.ready:
                for order in await self.venue.fetch_open_orders():
                    cancelled = await self.venue.cancel(order.client_order_id, order.symbol)
                    log.info("order_cancelled", client_order_id=order.client_order_id)
                    if cancelled is not None:
                        version = _version_of(cancelled.client_order_id)
                        items = self._commit_orders(version, [(cancelled, None)], [])
                        if self.bus_ok:
                            await self.bus.publish_once(items)
        finally:
            self._persist_risk(force=True)
            if self.journal is not None:
                self.journal.close()
                self.journal = None
            await self.venue.close()
            await self.bus.close()
            log.info("stopped", trading_state=self.risk.state.value, positions=self.positions)


_OPEN_STATUSES = frozenset(
    {OrderStatus.SUBMITTED, OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED}
)

_TARGET_FIELDS = {
    "kind": TargetPortfolio.model_fields["kind"].default,
    "schema_version": str(SCHEMA_VERSION),
}


def _decode(fields: dict[str, str]) -> Message:
    """``messages.decode``, with a fast path for the common case, a well-formed target: the
    payload is parsed and validated in one step by pydantic's JSON parser (about half the
    cost). Anything else, or anything that path refuses, goes through ``decode`` itself, so
    every malformed entry is refused with ``decode``'s own reason."""
    if (
        fields.get("kind") == _TARGET_FIELDS["kind"]
        and fields.get("schema_version") == _TARGET_FIELDS["schema_version"]
        and len(fields) == 3
    ):
        payload = fields.get("payload")
        if payload is not None:
            try:
                return TargetPortfolio.model_validate_json(payload)
            except ValueError:
                pass  # decode names the problem (or accepts what this path would not)
    return decode(fields)


def _version_of(client_order_id: str) -> int:
    """The target version in a client order id; 1 for an id Sapphire did not make (an order
    someone placed at the venue by hand, cancelled at shutdown)."""
    try:
        return target_version_of(client_order_id)
    except OrderPlanningError:
        return 1


def _atomic_write(path: Path, text: str) -> None:
    """Write, fsync and rename, so a crash leaves the old file or the new one, never half."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_folder(path.parent)
