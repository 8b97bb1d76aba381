"""Read a stream (the fills, by default) after a cursor: what the Dagster sensors use.

``read_after`` returns the messages after ``cursor`` (a stream id, "0-0" for the start), and the
new cursor: the id of the last entry read, malformed or not, so a bad entry is reported once and
never blocks the cursor. Malformed entries come back as ``DeadLetter`` with the reason instead of
raising. Nothing is acknowledged or deleted: the stream stays the record, and any number of
readers can keep their own cursors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import redis

from sapphire_domain.messages import FILLS_STREAM, MalformedMessageError, Message, decode

START = "0-0"


@dataclass(frozen=True)
class DeadLetter:
    entry_id: str
    reason: str
    fields: dict[str, str]


@dataclass(frozen=True)
class StreamBatch:
    messages: list[tuple[str, Message]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    cursor: str = START


def read_after(
    client: redis.Redis,
    cursor: str = START,
    *,
    stream: str = FILLS_STREAM,
    count: int = 1000,
) -> StreamBatch:
    """Up to ``count`` entries of ``stream`` strictly after ``cursor``."""
    entries = client.xrange(stream, min=f"({cursor}", count=count)
    messages: list[tuple[str, Message]] = []
    dead: list[DeadLetter] = []
    last = cursor
    for raw_id, raw_fields in entries or []:
        entry_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
        fields = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in (raw_fields or {}).items()
        }
        try:
            messages.append((entry_id, decode(fields)))
        except MalformedMessageError as error:
            dead.append(DeadLetter(entry_id, str(error), fields))
        last = entry_id
    return StreamBatch(messages, dead, last)
