"""MiniRedis spoken to by redis-py (a client nobody here wrote) under every model that can run
it, through sockkit's pytest plugin; the models that fork are skipped with their refusal."""

from __future__ import annotations

import threading

import pytest
import redis

from minredis import MiniRedis


@pytest.fixture
def sockkit_service() -> MiniRedis:
    return MiniRedis()


@pytest.fixture
def client(sockkit_server):
    with redis.Redis(*sockkit_server.address, protocol=2, socket_timeout=10) as connection:
        yield connection


def test_strings(client):
    assert client.ping() is True
    assert client.get("spam") is None
    assert client.set("spam", "eggs") is True
    assert client.get("spam") == b"eggs"
    assert client.set("spam", "ham", nx=True) is None
    assert client.set("spam", "ham", xx=True) is True
    assert client.echo(b"\x00\xff\r\n") == b"\x00\xff\r\n"
    value = bytes(range(256)) * 4096  # 1 MiB, every byte value
    client.set("big", value)
    assert client.get("big") == value


def test_counters_and_keys(client):
    assert client.incr("hits") == 1
    assert client.incrby("hits", 41) == 42
    assert client.decr("hits") == 41
    assert client.mset({"a": "1", "b": "2"}) is True
    assert client.mget("a", "nope", "b") == [b"1", None, b"2"]
    assert client.exists("a", "b", "nope") == 2
    assert client.delete("a", "nope") == 1
    assert client.dbsize() == 2
    client.set("word", "x")
    with pytest.raises(redis.ResponseError, match="value is not an integer"):
        client.incr("word")
    with pytest.raises(redis.ResponseError, match="unknown command 'HSET'"):
        client.hset("h", "f", "v")


def test_a_pipeline_is_answered_in_order(client):
    pipe = client.pipeline(transaction=False)
    for number in range(500):
        pipe.set(f"key:{number}", number).incr("count")
    results = pipe.execute()
    assert results == [value for number in range(500) for value in (True, number + 1)]
    assert client.get("key:499") == b"499"


def test_every_client_shares_one_store_and_no_count_is_lost(sockkit_server):
    """Eight clients at once, 250 INCR each: 2,000 exactly, under the thread models too."""
    def count() -> None:
        with redis.Redis(*sockkit_server.address, protocol=2, socket_timeout=10) as connection:
            for _ in range(250):
                connection.incr("shared")

    threads = [threading.Thread(target=count) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    with redis.Redis(*sockkit_server.address, protocol=2, socket_timeout=10) as connection:
        assert connection.get("shared") == b"2000"
