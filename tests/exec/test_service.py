"""The execution service as a real process on a real redis-server: bus, risk and control."""

from __future__ import annotations

import json
from datetime import timedelta

from sapphire_domain.messages import (
    DEAD_LETTER_STREAM,
    FILLS_STREAM,
    ORDERS_STREAM,
    RISK_STREAM,
    TARGETS_STREAM,
    TradingState,
    decode,
)
from sapphire_exec.venues.paper import read_book
from tests.exec.conftest import SESSION_START, ExecHarness, make_target, write_clock

TOKEN = "test-control-token"


def _metric(harness: ExecHarness, name: str) -> float:
    text = harness.control("GET", "/metrics", None).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_a_target_is_acked_only_after_its_fills_are_journalled_and_published(
    harness: ExecHarness,
):
    process = harness.start()
    msg_id = harness.publish(make_target(1, {"BTC/USD": 0.2, "ETH/USD": -0.1}))
    harness.wait_for(harness.drained, what="ack")
    fills = [decode(f) for _, f in harness.stream(FILLS_STREAM)]
    journal = (harness.root / "exec" / "journal.jsonl").read_text().splitlines()
    journalled = {json.loads(r)["fill"]["fill_id"] for r in journal if '"t":"fill"' in r}
    assert {f.fill_id for f in fills} == journalled and len(fills) == 2  # type: ignore[union-attr]
    done = [json.loads(r) for r in journal if '"t":"done"' in r]
    assert done == [{"t": "done", "version": 1, "msg_id": msg_id, "outcome": "traded"}]
    assert harness.stop(process) == 0


def test_an_unacked_target_is_redelivered_and_traded_after_a_restart(harness: ExecHarness):
    # A target read by a consumer that died before acking stays pending in the group.
    harness.client.xgroup_create(TARGETS_STREAM, "sapphire-exec", id="0", mkstream=True)
    harness.publish(make_target(1, {"BTC/USD": 0.1}))
    harness.client.xreadgroup("sapphire-exec", "dead-consumer", {TARGETS_STREAM: ">"})
    assert harness.pending() == 1
    process = harness.start()
    harness.wait_for(harness.drained, what="the pending target to be claimed and acked")
    assert len(harness.stream(FILLS_STREAM)) == 1
    assert harness.stop(process) == 0


def test_a_journal_that_lost_its_unsynced_tail_fails_closed_and_doubles_nothing(
    harness: ExecHarness,
):
    """The ``begin`` record is written before the orders go out but fsynced only with the
    commit. An OS crash in between can lose it with everything after it while the venue keeps
    the orders: the journal is cut back to before that record here (the paper venue's book is
    fsynced on every order, like a real venue's state). The restart must refuse to trade."""
    process = harness.start()
    harness.publish(make_target(1, {"BTC/USD": 0.2, "ETH/USD": -0.1}))
    harness.wait_for(harness.drained, what="v1 traded")
    assert harness.stop(process) == 0
    journal = harness.root / "exec" / "journal.jsonl"
    lines = journal.read_text().splitlines(keepends=True)
    begin = next(i for i, line in enumerate(lines) if '"t":"begin"' in line)
    journal.write_text("".join(lines[:begin]))
    book = harness.root / "exec" / "paper_venue.jsonl"
    orders_before = [r for r in read_book(book) if r["t"] == "order"]
    assert len(orders_before) == 2

    process = harness.start(wait=False)
    assert process.wait(timeout=60) == 3
    assert any(e.get("event") == "reconciliation_failed" for e in harness.log_events())
    assert "journal and venue disagree" in harness.log_text()
    assert [r for r in read_book(book) if r["t"] == "order"] == orders_before  # nothing resent
    saved = json.loads((harness.root / "exec" / "risk_state.json").read_text())
    assert saved["risk"]["trading_state"] == "HALTED"  # so it stays halted across restarts
    assert saved["risk"]["reason"].endswith("reconciliation failed")


def test_malformed_and_out_of_order_targets_are_dead_lettered_and_the_service_runs_on(
    harness: ExecHarness,
):
    process = harness.start()
    harness.publish(make_target(5, {"BTC/USD": 0.1}))
    harness.wait_for(harness.drained, what="v5")
    harness.client.xadd(TARGETS_STREAM, {"kind": "target_portfolio", "schema_version": "1",
                                         "payload": "{not json"})  # fmt: skip
    harness.publish(make_target(3, {"BTC/USD": 0.3}))  # older than the traded v5
    harness.publish(make_target(6, {"BTC/USD": 0.2}))
    harness.wait_for(harness.drained, what="all targets")
    letters = harness.stream(DEAD_LETTER_STREAM)
    reasons = [fields["reason"] for _, fields in letters]
    assert len(reasons) == 2
    assert reasons[0].startswith("malformed: target_portfolio: payload is not JSON")
    assert reasons[1].startswith("out of order: version 3")
    assert _metric(harness, "sapphire_dead_letters_total") == 2
    assert len(harness.stream(FILLS_STREAM)) == 2  # v5 and v6 traded, v3 not
    assert harness.healthy()
    assert harness.stop(process) == 0


def test_a_stale_target_places_no_orders(harness: ExecHarness):
    process = harness.start()
    stale = make_target(1, {"BTC/USD": 0.2}, created=SESSION_START - timedelta(hours=7))
    harness.publish(stale)
    harness.wait_for(harness.drained, what="ack")
    assert harness.stream(FILLS_STREAM) == []
    events = [decode(f) for _, f in harness.stream(ORDERS_STREAM)]
    assert [(e.status.value, e.reason) for e in events] == [("denied", "STALE_TARGET")]  # type: ignore[union-attr]
    assert _metric(harness, 'sapphire_risk_denials_total{reason="STALE_TARGET"}') == 1
    assert harness.stop(process) == 0


def test_a_drawdown_breach_halts_within_a_tick_and_halted_survives_a_restart(
    harness: ExecHarness,
):
    # BTC/USD fell 8.7 % in the 30m bar that closed at 2019-09-24 19:00 UTC.
    from datetime import UTC, datetime

    before = datetime(2019, 9, 24, 18, 30, tzinfo=UTC)
    write_clock(harness.clock_file, before)
    process = harness.start()
    harness.publish(make_target(1, {"BTC/USD": 0.9}, created=before))
    harness.wait_for(harness.drained, what="the long position")
    write_clock(harness.clock_file, before + timedelta(minutes=30))
    status = lambda: harness.control("GET", "/control/status", TOKEN).json()  # noqa: E731
    harness.wait_for(lambda: status()["trading_state"] == "HALTED", timeout=5, what="HALTED")
    # The state changes first and the risk event is published right after: wait for it.
    harness.wait_for(lambda: harness.stream(RISK_STREAM), timeout=5, what="the risk event")
    events = [decode(f) for _, f in harness.stream(RISK_STREAM)]
    assert [e.state for e in events] == [TradingState.HALTED]  # type: ignore[union-attr]
    assert events[0].reason.startswith("MAX_DRAWDOWN")  # type: ignore[union-attr]
    assert _metric(harness, "sapphire_trading_state") == 2
    assert harness.stop(process) == 0

    process = harness.start()
    assert status()["trading_state"] == "HALTED"
    harness.publish(make_target(2, {"BTC/USD": 0.0}, created=before + timedelta(minutes=30)))
    harness.wait_for(harness.drained, what="v2")
    assert len(harness.stream(FILLS_STREAM)) == 1  # nothing traded while halted
    assert harness.control("POST", "/control/resume", "wrong-token").status_code == 403
    assert status()["trading_state"] == "HALTED"
    assert harness.control("POST", "/control/resume", TOKEN).status_code == 200
    assert status()["trading_state"] == "ACTIVE"
    assert harness.stop(process) == 0


def test_the_control_api_refuses_calls_without_the_right_token(harness: ExecHarness):
    process = harness.start()
    for method, path in (("GET", "/control/status"), ("POST", "/control/halt"),
                         ("POST", "/control/resume")):  # fmt: skip
        assert harness.control(method, path, None).status_code == 401
        assert harness.control(method, path, "not-the-token").status_code == 403
    assert harness.control("GET", "/control/status", TOKEN).json()["trading_state"] == "ACTIVE"
    halted = harness.control("POST", "/control/halt", TOKEN, json={"reason": "maintenance"})
    assert halted.json()["trading_state"] == "HALTED"
    assert harness.healthy() and harness.control("GET", "/metrics", None).status_code == 200
    assert harness.stop(process) == 0


def test_secrets_never_appear_in_the_logs(harness: ExecHarness):
    secrets = {
        "SAPPHIRE_CONTROL_TOKEN": "ctl-7f3a9c1e5b",
        "EXCHANGE_API_KEY": "key-1d2c3b4a59",
        "EXCHANGE_SECRET": "sec-a8b7c6d5e4",
        "EXCHANGE_PASSWORD": "pw-0f9e8d7c6b",
    }
    process = harness.start(extra_env=secrets)
    harness.publish(make_target(1, {"BTC/USD": 0.1}))
    harness.wait_for(harness.drained, what="ack")
    harness.control("GET", "/control/status", "guess-" + secrets["EXCHANGE_SECRET"])
    harness.control("POST", "/control/halt", secrets["SAPPHIRE_CONTROL_TOKEN"])
    harness.control("POST", "/control/resume", secrets["SAPPHIRE_CONTROL_TOKEN"])
    assert harness.stop(process) == 0
    logs = harness.log_text()
    assert '"event": "target_traded"' in logs and "control_refused" in logs
    for value in secrets.values():
        assert value not in logs


def test_a_redis_restart_mid_session_loses_nothing_and_the_service_reconnects(
    harness: ExecHarness,
):
    process = harness.start()
    harness.publish(make_target(1, {"BTC/USD": 0.1}))
    harness.wait_for(harness.drained, what="v1")
    harness.redis_server.kill()  # kill -9: AOF fsyncs every second, so the tail may be lost
    harness.redis_server.start()
    harness.client = type(harness.client).from_url(harness.redis_server.url, decode_responses=True)
    harness.publish(make_target(2, {"BTC/USD": 0.2, "ETH/USD": 0.1}))
    harness.wait_for(harness.drained, timeout=30, what="v2 after the restart")
    fills = [decode(f).fill_id for _, f in harness.stream(FILLS_STREAM)]  # type: ignore[union-attr]
    journal = (harness.root / "exec" / "journal.jsonl").read_text().splitlines()
    journalled = [json.loads(r)["fill"]["fill_id"] for r in journal if '"t":"fill"' in r]
    assert sorted(fills) == sorted(journalled) and len(fills) == 3
    assert harness.stop(process) == 0


def test_a_damaged_replay_clock_file_stops_the_service_with_one_clear_error(
    harness: ExecHarness,
):
    harness.clock_file.write_text("{not json")
    process = harness.start(wait=False)
    assert process.wait(timeout=60) == 2
    errors = [e for e in harness.log_events() if e.get("level") == "error"]
    assert [e["event"] for e in errors] == ["bad_config"]
    assert errors[0]["error"].startswith(f"replay clock file {harness.clock_file} is damaged")
    assert "delete it to reset the clock" in errors[0]["error"]
    assert "Traceback" not in harness.log_text()
