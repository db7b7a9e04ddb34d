"""redis-benchmark (Debian redis-tools), Redis's own load tool, against MiniRedis under every model
that can run it; and the refusal the other models give, as `sockkit serve minredis` prints it."""

from __future__ import annotations

import csv
import shutil
import subprocess

import pytest
import redis
from sockkit.testing import sockkit_command

from minredis import MiniRedis

REQUESTS = 2000
TESTS = ["PING_INLINE", "PING_MBULK", "SET", "GET", "INCR", "MSET (10 keys)"]


@pytest.fixture
def sockkit_service() -> MiniRedis:
    return MiniRedis()


@pytest.fixture
def sockkit_options(sockkit_model: str) -> dict:
    """redis-benchmark holds its ten connections open to the end: the pool model needs a thread for
    each (its default is one per CPU, and the clients queued behind them would wait forever)."""
    return {"workers": 16} if sockkit_model == "pool" else {}


@pytest.mark.skipif(shutil.which("redis-benchmark") is None, reason="redis-benchmark not installed (redis-tools)")
@pytest.mark.parametrize("pipeline", [1, 16])
def test_redis_benchmark(sockkit_server, sockkit_model, pipeline):
    """Every request of every test answered (its CSV has a rate for each), and INCR counted exactly.
    Ten clients at once; one under ``sequential``, which serves one client at a time."""
    host, port = sockkit_server.address
    clients = 1 if sockkit_model == "sequential" else 10
    done = subprocess.run(["redis-benchmark", "-h", host, "-p", str(port), "-t", "ping,set,get,incr,mset",
                           "-n", str(REQUESTS), "-c", str(clients), "-P", str(pipeline), "--csv"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = {row["test"]: float(row["rps"]) for row in csv.DictReader(done.stdout.splitlines())}
    assert list(rows) == TESTS and all(rate > 0 for rate in rows.values()), done.stdout
    with redis.Redis(host, port, protocol=2, socket_timeout=10) as client:
        assert client.get("counter:__rand_int__") == str(REQUESTS).encode()
        assert len(client.get("key:__rand_int__")) == 3  # SET writes 3 random bytes by default (-d)


@pytest.mark.parametrize(("model", "how"), [
    ("fork", "the fork model runs each client in its own process"),
    ("fork-signal", "the fork-signal model runs each client in its own process"),
    ("prefork", "the prefork model runs its clients in several worker processes"),
])
def test_the_models_that_fork_refuse_it(model, how):
    done = subprocess.run(sockkit_command("serve", "minredis", "--model", model), capture_output=True, text=True,
                          timeout=30)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (f"sockkit: the minredis service keeps state shared by all its clients, but {how}, where "
                           "each would see a different copy of it; run it under sequential, thread, socketserver, "
                           "pool, select, asyncio or uvloop\n")
