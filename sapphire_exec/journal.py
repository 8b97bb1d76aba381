"""The local append-only journal: the service's source of truth across crashes.

Each record is one JSON line. ``append`` writes a batch with a single ``os.write`` and, when
asked, fsyncs it. The service writes the ``begin`` record of a target before it submits
anything (the kernel holds it from then on, so a crash of the service finds it), and fsyncs
before it publishes or acknowledges anything (fills, order events, ``done``, and with them the
``begin``), so a crash at any point leaves either nothing or a complete, replayable record. A
torn last line (a crash in the middle of a write) is cut off when the journal is opened.

Record types (field ``t``):
  begin      {"version", "msg_id"}: a target is being traded (written before any submit)
  done       {"version", "msg_id", "outcome"}: a target is finished (traded, stale, superseded)
  out        {"stream", "key", "fields"}: an outgoing bus message (fill, order or risk event),
             published idempotently by ``key``
  fill       {"fill": Fill JSON}: a fill the venue executed for us (also an ``out`` record)
  trim       {"items": [[stream, key], ...]}: ``out`` records compaction dropped; their keys are
             still to be removed from the bus's dedupe sets (see ``compact``)

**Compaction.** Without it the outbox grows with every message ever sent, and is republished
(as no-ops) on every start and reconnect. ``compact`` rewrites the file without the records a
predicate drops (the service drops ``out`` records the bus has held for a while, see
``service``), atomically: the new file is written beside the old one, fsynced and renamed over
it, so a crash leaves one or the other whole. Fills, ``begin`` and ``done`` records are kept:
they are the local record of what was traded, and positions are replayed from them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_JSON = json.JSONEncoder(separators=(",", ":"))  # compact, and no per-call set-up


def json_lines(records: list[dict[str, Any]]) -> bytes:
    """``records`` as compact JSON lines, ready for one ``os.write``."""
    return "".join(f"{_JSON.encode(r)}\n" for r in records).encode()


@dataclass
class JournalState:
    """What replaying the journal tells the service."""

    done: dict[int, str] = field(default_factory=dict)  # version -> stream message id
    begun: dict[int, str] = field(default_factory=dict)  # begun and not done
    fill_ids: set[str] = field(default_factory=set)
    fills: list[dict[str, Any]] = field(default_factory=list)
    outbox: list[dict[str, Any]] = field(default_factory=list)
    trims: list[tuple[str, str]] = field(default_factory=list)

    @property
    def max_done_version(self) -> int:
        return max(self.done, default=0)


class Journal:
    """An fsynced JSON-lines file, replayed into a ``JournalState`` when opened."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._repair()
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def _repair(self) -> None:
        """Cut a torn last line: a record is only real once its newline is on disk."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            with open(self.path, "r+b") as handle:
                handle.truncate(end)
                handle.flush()
                os.fsync(handle.fileno())

    def records(self) -> Iterator[dict[str, Any]]:
        with open(self.path, "rb") as handle:
            for line in handle:
                if line.strip():
                    yield json.loads(line)

    def replay(self) -> JournalState:
        state = JournalState()
        for record in self.records():
            kind = record["t"]
            if kind == "begin":
                state.begun[record["version"]] = record["msg_id"]
            elif kind == "done":
                # a finished version settles every older one still in flight
                state.begun = {v: m for v, m in state.begun.items() if v > record["version"]}
                state.done[record["version"]] = record["msg_id"]
            elif kind == "fill":
                fill = record["fill"]
                if fill["fill_id"] not in state.fill_ids:
                    state.fill_ids.add(fill["fill_id"])
                    state.fills.append(fill)
            elif kind == "out":
                state.outbox.append(record)
            elif kind == "trim":
                state.trims += [(stream, key) for stream, key in record["items"]]
        return state

    def append(self, records: list[dict[str, Any]], *, sync: bool) -> None:
        if not records:
            return
        # One write per batch: all of it or a torn tail, never a gap.
        os.write(self._fd, json_lines(records))
        if sync:
            os.fsync(self._fd)

    def sync(self) -> None:
        os.fsync(self._fd)

    def compact(self, drop: Callable[[dict[str, Any]], bool], first: list[dict[str, Any]]) -> int:
        """Rewrite the journal with ``first`` at its head and without the records ``drop``
        accepts; the others stay as they were, in order. Atomic and durable (write beside,
        fsync, rename, fsync the folder). Returns how many records were dropped.

        Synchronous on purpose: nothing can append between the read and the rename."""
        tmp = self.path.with_suffix(".compacting")
        dropped = 0
        with open(tmp, "wb") as out, open(self.path, "rb") as current:
            out.write(json_lines(first))
            for line in current:
                if not line.endswith(b"\n"):
                    break  # a torn tail never happened (see ``_repair``)
                if not line.strip():
                    continue
                if drop(json.loads(line)):
                    dropped += 1
                else:
                    out.write(line)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.path)
        fsync_folder(self.path.parent)
        os.close(self._fd)  # it still points at the old file
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND, 0o600)
        return dropped

    def close(self) -> None:
        try:
            os.fsync(self._fd)
        finally:
            os.close(self._fd)


def fsync_folder(folder: Path) -> None:
    """Make a rename or a new file in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
