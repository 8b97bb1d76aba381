"""The Redis bus as a Dagster resource: publish targets, read the latest one back.

``url`` comes from ``dg.EnvVar("REDIS_URL")`` in production; the embedded default points it at
the project's local ``redis-server`` (``sapphire_bus.server``). Entries are ``encode(message)``
fields on the streams named in ``sapphire_domain.messages``.
"""

from __future__ import annotations

import dagster as dg
import redis
from pydantic import Field

from sapphire_domain.errors import SapphireError
from sapphire_domain.messages import TARGETS_STREAM, TargetPortfolio, decode, encode


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
