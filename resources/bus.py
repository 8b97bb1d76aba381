"""The Redis bus as a Dagster resource: publish targets, read the latest one back, and read the
execution service's trading state from its risk events.

``url`` comes from ``dg.EnvVar("REDIS_URL")`` in production; the embedded default points it at
the project's local ``redis-server`` (``sapphire_bus.server``). Entries are ``encode(message)``
fields on the streams named in ``sapphire_domain.messages``.
"""

from __future__ import annotations

from datetime import datetime

import dagster as dg
import redis
from pydantic import Field

from sapphire_domain.errors import SapphireError
from sapphire_domain.messages import (
    RISK_STREAM,
    TARGETS_STREAM,
    MalformedMessageError,
    RiskEvent,
    TargetPortfolio,
    decode,
    encode,
)

# Risk events read back when looking for the latest valid one behind malformed entries.
_RISK_LOOKBACK = 100
_PAGE = 500


class BusUnavailableError(SapphireError):
    """The Redis bus could not be reached."""


class BusResource(dg.ConfigurableResource):
    """url: ``redis://host:port/db`` (a secret in production: pass a ``dg.EnvVar``).
    max_stream_length: targets kept in the stream (approximate trimming)."""

    url: str = Field(repr=False)
    max_stream_length: int = 10_000
    timeout_s: float = 5.0

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=self.timeout_s)

    def publish_target(self, target: TargetPortfolio) -> str:
        """XADD the target to the targets stream; returns the entry id."""
        try:
            entry = self.client().xadd(
                TARGETS_STREAM, encode(target),  # type: ignore[arg-type]
                maxlen=self.max_stream_length, approximate=True,
            )  # fmt: skip
        except redis.RedisError as error:
            raise BusUnavailableError(
                f"could not publish target v{target.version}: {error}"
            ) from None
        return entry.decode() if isinstance(entry, bytes) else str(entry)

    def latest_target(self) -> TargetPortfolio | None:
        """The last target on the stream, or None when none was published."""
        try:
            entries = self.client().xrevrange(TARGETS_STREAM, count=1)
        except redis.RedisError as error:
            raise BusUnavailableError(f"could not read the targets stream: {error}") from None
        if not entries:
            return None
        message = decode(entries[0][1])  # type: ignore[arg-type]
        return message if isinstance(message, TargetPortfolio) else None

    def published_targets(self, since: datetime) -> list[TargetPortfolio]:
        """The targets on the stream created at or after ``since``, oldest first. Targets are
        published in version (creation) order, so the stream is read backwards until one is
        older; malformed entries are passed over."""
        found: list[TargetPortfolio] = []
        upper = "+"
        try:
            client = self.client()
            while True:
                entries = client.xrevrange(TARGETS_STREAM, max=upper, count=_PAGE)
                for _, fields in entries or []:
                    try:
                        message = decode(fields)  # type: ignore[arg-type]
                    except MalformedMessageError:
                        continue
                    if not isinstance(message, TargetPortfolio):
                        continue
                    if message.created_at < since:
                        return found[::-1]
                    found.append(message)
                if not entries or len(entries) < _PAGE:
                    return found[::-1]
                last = entries[-1][0]
                upper = f"({last.decode() if isinstance(last, bytes) else last}"
        except redis.RedisError as error:
            raise BusUnavailableError(f"could not read the targets stream: {error}") from None

    def latest_risk_event(self) -> RiskEvent | None:
        """The execution service's latest risk event (its trading state now), or None when it
        never published one (it starts ACTIVE). Malformed entries are passed over: they are
        the service's dead letters to report, not a state."""
        try:
            entries = self.client().xrevrange(RISK_STREAM, count=_RISK_LOOKBACK)
        except redis.RedisError as error:
            raise BusUnavailableError(f"could not read the risk stream: {error}") from None
        for _, fields in entries or []:
            try:
                message = decode(fields)  # type: ignore[arg-type]
            except MalformedMessageError:
                continue
            if isinstance(message, RiskEvent):
                return message
        return None
