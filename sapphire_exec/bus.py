"""The execution service's side of the Redis Streams bus.

Targets are read through a consumer group, so a target stays pending until the service acks it,
and the service acks only once the target is durably processed; after a crash the pending
targets are claimed again (``XAUTOCLAIM``) and redelivered. Outgoing messages are published
idempotently: a small Lua script adds the message's key to a per-stream set and appends to the
stream only when the key is new, in one atomic step, so republishing the journal's outbox after a
crash or a Redis restart never duplicates an entry. A lost connection surfaces as
``BusUnavailableError``; the service loop backs off and carries on, and redis-py reconnects on the
next command.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from sapphire_domain.messages import DEAD_LETTER_STREAM, TARGETS_STREAM

# On Redis 6.2 the bus lag is a lower bound past this many undelivered targets.
LAG_SCAN_LIMIT = 100

_CHUNK = 1000  # keys per SMISMEMBER / SREM call

BUS_ERRORS = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)

# Many items in one call. KEYS: (dedupe set, stream) per item; ARGV: per item its key, the
# number of field/value strings n, then those n strings. Returns how many were new.
_PUBLISH_ONCE = """
local added, a = 0, 1
for i = 1, #KEYS, 2 do
  local key, n = ARGV[a], tonumber(ARGV[a + 1])
  a = a + 2
  if redis.call('SADD', KEYS[i], key) == 1 then
    local fields = {}
    for j = a, a + n - 1 do fields[#fields + 1] = ARGV[j] end
    redis.call('XADD', KEYS[i + 1], '*', unpack(fields))
    added = added + 1
  end
  a = a + n
end
return added
"""


class BusUnavailableError(Exception):
    """Redis could not be reached; the caller retries after a pause."""


@dataclass(frozen=True)
class Entry:
    msg_id: str
    fields: dict[str, str]
    redelivered: bool = False  # read again from the pending list: it may have been traded


def published_set(stream: str) -> str:
    return f"{stream}:published"


class ExecutionBus:
    """Consumer-group reads of the targets stream, acks, dead letters and outgoing streams."""

    def __init__(
        self,
        url: str,
        group: str = "sapphire-exec",
        consumer: str = "exec-1",
        targets_stream: str = TARGETS_STREAM,
    ) -> None:
        self.url = url
        self.group = group
        self.consumer = consumer
        self.targets_stream = targets_stream
        self.redis: aioredis.Redis = aioredis.from_url(
            url, decode_responses=True, socket_connect_timeout=2, socket_timeout=10
        )
        self._publish_once = self.redis.register_script(_PUBLISH_ONCE)
        self._pending_drained = False

    async def close(self) -> None:
        await self.redis.aclose()

    async def prepare(self) -> None:
        """Create the group (from the stream's start) and claim targets left pending by anyone.

        Exactly one execution service runs (see deploy/k8s), so claiming every pending entry,
        however fresh, is safe: a pending entry belongs to a consumer that died.
        """
        try:
            await self.redis.xgroup_create(self.targets_stream, self.group, id="0", mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        start = "0-0"
        while True:
            reply = await self.redis.xautoclaim(
                self.targets_stream, self.group, self.consumer, 0, start, count=500
            )
            start = reply[0]  # [next cursor, claimed entries, deleted ids]
            if start in ("0-0", b"0-0"):
                break
        self._pending_drained = False

    async def read_targets(self, count: int, block_ms: int) -> list[Entry]:
        """Our own pending entries first (redelivery after a restart), then new ones."""
        if not self._pending_drained:
            reply = await self.redis.xreadgroup(
                self.group, self.consumer, {self.targets_stream: "0"}, count=count
            )
            entries = _entries(reply, redelivered=True)
            if entries:
                return entries
            self._pending_drained = True
        reply = await self.redis.xreadgroup(
            self.group, self.consumer, {self.targets_stream: ">"}, count=count, block=block_ms
        )
        return _entries(reply)

    def redeliver_pending(self) -> None:
        """Read our pending entries again before new ones (after a lost connection)."""
        self._pending_drained = False

    async def ack(self, msg_ids: Iterable[str]) -> None:
        ids = list(msg_ids)
        if ids:
            await self.redis.xack(self.targets_stream, self.group, *ids)

    async def dead_letter(self, entry: Entry, reason: str) -> str:
        """Move an entry to the dead-letter stream with its reason, and ack it, atomically."""
        fields = {
            "reason": reason,
            "source_stream": self.targets_stream,
            "source_id": entry.msg_id,
            **{f"original_{k}": v for k, v in entry.fields.items()},
        }
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(DEAD_LETTER_STREAM, fields)  # type: ignore[arg-type]
            pipe.xack(self.targets_stream, self.group, entry.msg_id)
            result = await pipe.execute()
        return str(result[0])

    async def publish_once(self, items: Iterable[tuple[str, str, Mapping[str, str]]]) -> int:
        """Publish (stream, key, fields) items, skipping keys already published; returns new.

        One script call for the whole batch (one round trip, no pipeline ``SCRIPT EXISTS``
        first): every item is added to its stream and dedupe set in one atomic step, in order.
        """
        batch = list(items)
        if not batch:
            return 0
        keys: list[str] = []
        args: list[str | int] = []
        for stream, key, fields in batch:
            keys += [published_set(stream), stream]
            args += [key, 2 * len(fields)]
            for name, value in fields.items():
                args += [name, value]
        return int(await self._publish_once(keys=keys, args=args))

    async def published(self, items: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """The (stream, key) items whose keys the dedupe sets hold: published, since a key and
        its stream entry are added in one atomic step."""
        held: set[tuple[str, str]] = set()
        for stream, keys in _chunks(items):
            flags = await self.redis.smismember(published_set(stream), keys)
            held.update((stream, k) for k, flag in zip(keys, flags, strict=True) if flag)
        return held

    async def forget(self, items: Iterable[tuple[str, str]]) -> None:
        """Remove keys from the dedupe sets: only for messages that will never be published
        again (compacted out of the journal; see ``service``)."""
        for stream, keys in _chunks(items):
            await self.redis.srem(published_set(stream), *keys)

    async def lag(self) -> int:
        """Targets waiting for this service: pending plus not yet delivered to the group."""
        groups = await self.redis.xinfo_groups(self.targets_stream)
        group = next((g for g in groups if g["name"] == self.group), None)
        if group is None:
            return int(await self.redis.xlen(self.targets_stream))
        pending = int(group["pending"])
        lag = group.get("lag")
        if lag is not None:  # Redis 7 counts it for us
            return pending + int(lag)
        # Redis 6.2 has no lag field: count undelivered entries, but only up to a bound, so a
        # backlog costs one small read per tick instead of parsing the whole backlog.
        last = group["last-delivered-id"]
        undelivered = await self.redis.xrange(
            self.targets_stream, min=f"({last}", count=LAG_SCAN_LIMIT
        )
        return pending + len(undelivered or [])


def _chunks(items: Iterable[tuple[str, str]]) -> Iterator[tuple[str, list[str]]]:
    """(stream, keys) in groups of at most ``_CHUNK`` keys of one stream."""
    by_stream: dict[str, list[str]] = {}
    for stream, key in items:
        by_stream.setdefault(stream, []).append(key)
    for stream, keys in by_stream.items():
        for start in range(0, len(keys), _CHUNK):
            yield stream, keys[start : start + _CHUNK]


def _entries(reply: Any, redelivered: bool = False) -> list[Entry]:
    entries: list[Entry] = []
    if not reply:
        return entries
    streams = reply.items() if isinstance(reply, dict) else reply  # RESP3 vs RESP2 shapes
    for _stream, messages in streams:
        for msg_id, fields in messages:
            entries.append(Entry(str(msg_id), dict(fields or {}), redelivered))
    return entries
