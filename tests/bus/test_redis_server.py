"""The project starts a real redis-server by itself, with AOF on, and says so when it cannot."""

import redis

from sapphire_bus.server import RedisServer, find_redis_server


def test_a_started_server_answers_and_persists_with_aof(redis_server):
    client = redis.Redis.from_url(redis_server.url)
    assert client.ping()
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    assert client.config_get("appendfsync") == {"appendfsync": "everysec"}


def test_data_survives_a_restart_through_the_append_only_file(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    client = redis.Redis.from_url(server.url)
    client.xadd("stream", {"n": "1"})
    server.stop()
    again = RedisServer(tmp_path / "redis", port=server.port).start()
    try:
        assert redis.Redis.from_url(again.url).xlen("stream") == 1
    finally:
        again.stop()


def test_a_port_in_use_is_named_with_what_to_do(redis_server, tmp_path):
    import pytest

    from sapphire_domain.errors import ConfigError

    with pytest.raises(ConfigError, match=f"port {redis_server.port}.*already in use"):
        RedisServer(tmp_path / "other", port=redis_server.port).start()


def test_a_binary_is_always_found_in_the_project_environment():
    assert find_redis_server().name == "redis-server"
