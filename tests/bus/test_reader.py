from datetime import UTC, datetime

import redis

from sapphire_bus.reader import START, read_after
from sapphire_bus.server import RedisServer
from sapphire_domain.messages import FILLS_STREAM, Fill, Side, encode


def _fill(n: int) -> Fill:
    return Fill(
        fill_id=f"paper:P{n}-1", client_order_id=f"t{n}-BTC_USD", target_version=n,
        symbol="BTC/USD", side=Side.BUY, quantity=0.5, price=100.0, fee=0.01,
        liquidity="taker", venue="paper", ts=datetime(2019, 6, 3, tzinfo=UTC),
    )  # fmt: skip


def test_the_reader_returns_messages_after_the_cursor_and_dead_letters_bad_entries(
    redis_server: RedisServer,
):
    client = redis.Redis.from_url(redis_server.url)
    client.xadd(FILLS_STREAM, encode(_fill(1)))  # type: ignore[arg-type]
    client.xadd(FILLS_STREAM, {"kind": "fill", "schema_version": "1", "payload": "{}"})
    client.xadd(FILLS_STREAM, encode(_fill(2)))  # type: ignore[arg-type]

    batch = read_after(client, START)
    assert [m.fill_id for _, m in batch.messages] == ["paper:P1-1", "paper:P2-1"]  # type: ignore[union-attr]
    assert len(batch.dead_letters) == 1 and "fill:" in batch.dead_letters[0].reason
    assert batch.cursor == batch.messages[-1][0]

    assert read_after(client, batch.cursor).messages == []  # nothing new: nothing returned
    client.xadd(FILLS_STREAM, encode(_fill(3)))  # type: ignore[arg-type]
    later = read_after(client, batch.cursor)
    assert [m.fill_id for _, m in later.messages] == ["paper:P3-1"]  # type: ignore[union-attr]

    first_two = read_after(client, START, count=2)
    assert len(first_two.messages) == 1 and len(first_two.dead_letters) == 1
    client.close()
