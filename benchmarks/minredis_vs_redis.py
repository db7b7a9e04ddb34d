"""The tutorial's MiniRedis (examples/minredis) under each model that can run it, against a real
``redis-server``, both driven by ``redis-benchmark`` (Debian redis-tools / redis-server).

Every server listens on a fixed port, so the whole run happens in a private network namespace made
for it (``unshare --net``, loopback up): nothing of it is visible on the shared loopback. Servers
run one at a time, in rotating rounds so noise spreads evenly; the table gives each target's median
requests per second per test and its ratio to redis-server in the same run.

Usage: python benchmarks/minredis_vs_redis.py [--requests 50000] [--clients 50] [--rounds 2] [--pipeline 1 16]
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import subprocess
import sys

from sockkit.catalog import MODELS
from sockkit.testing import models_for, running, worker_options

TESTS = "ping,set,get,incr,mset"
PORT = 6390
REDIS_PORT = 6379
INSIDE = "SOCKKIT_BENCH_NETNS"


def benchmark(port: int, requests: int, clients: int, pipeline: int) -> dict[str, float]:
    done = subprocess.run(["redis-benchmark", "-p", str(port), "-t", TESTS, "-n", str(requests), "-c", str(clients),
                           "-P", str(pipeline), "--csv"], capture_output=True, text=True, check=True, timeout=600)
    return {row["test"]: float(row["rps"]) for row in csv.DictReader(done.stdout.splitlines())}


def run_redis(requests: int, clients: int, pipeline: int) -> dict[str, float]:
    server = subprocess.Popen(["redis-server", "--port", str(REDIS_PORT), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--loglevel", "warning"], stdout=subprocess.DEVNULL)
    try:
        for _ in range(200):  # up within a second here; ask until it answers
            if subprocess.run(["redis-cli", "-p", str(REDIS_PORT), "ping"], capture_output=True).returncode == 0:
                break
        return benchmark(REDIS_PORT, requests, clients, pipeline)
    finally:
        server.terminate()
        server.wait(10)


def run_model(model: str, requests: int, clients: int, pipeline: int) -> dict[str, float]:
    with running("minredis", "--model", model, "--port", str(PORT), "--quiet",
                 *worker_options(model, threads=clients + 8)):
        return benchmark(PORT, requests, clients, pipeline)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--pipeline", type=int, nargs="+", default=[1, 16])
    args = parser.parse_args()
    if shutil.which("redis-benchmark") is None:
        sys.exit("minredis bench: redis-benchmark is not installed (Debian: redis-tools)")
    if os.environ.get(INSIDE) != "1":
        script = 'ip link set lo up && exec "$@"'
        return subprocess.call(["unshare", "--net", "sh", "-c", script, "sh", sys.executable, *sys.argv],
                               env={**os.environ, INSIDE: "1"})
    from minredis import MiniRedis

    # sequential serves one client at a time: redis-benchmark's clients would wait behind the first.
    models = [m for m in models_for(MiniRedis()) if MODELS[m].concurrent]
    targets = ([] if shutil.which("redis-server") is None else ["redis-server"]) + models
    for pipeline in args.pipeline:
        results: dict[str, list[dict[str, float]]] = {target: [] for target in targets}
        for round_ in range(args.rounds):
            order = targets[round_ % len(targets):] + targets[:round_ % len(targets)]
            for target in order:
                run = run_redis if target == "redis-server" else lambda *a, t=target: run_model(t, *a)
                results[target].append(run(args.requests, args.clients, pipeline))
        tests = list(results[targets[0]][0])
        medians = {t: {test: statistics.median(r[test] for r in runs) for test in tests} for t, runs in results.items()}
        print(f"\n-P {pipeline}, {args.clients} clients, {args.requests} requests per test, "
              f"median of {args.rounds} rounds (requests/s; x = ratio to redis-server)")
        print(f"{'target':<14}" + "".join(f"{test:>22}" for test in tests))
        for target in targets:
            cells = []
            for test in tests:
                rate = medians[target][test]
                ratio = f" {rate / medians['redis-server'][test]:.2f}x" if "redis-server" in medians else ""
                cells.append(f"{rate:>14,.0f}{ratio:>8}")
            print(f"{target:<14}" + "".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
