"""Measurements the scenarios take of a running server and its process tree."""

from __future__ import annotations

import socket
import statistics
import time

from sockkit.testing import RunningServer, cpu_seconds, descendants, open_fds, status_field, zombies_of


def tree(server: RunningServer) -> list[int]:
    return [server.pid, *sorted(descendants(server.pid))]


def pss_mib(server: RunningServer) -> float:
    """Memory of the whole process tree in MiB, as PSS: a forked child's pages shared with its
    parent count once, not once per process (RSS counted a fresh fork child as +20 MiB)."""
    return sum(_pss_kib(pid) for pid in tree(server)) / 1024


def _pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return status_field(pid, "VmRSS")


def snapshot(server: RunningServer) -> dict:
    pids = tree(server)
    return {"fds": sum(open_fds(p) for p in pids), "threads": sum(status_field(p, "Threads") for p in pids),
            "children": len(pids) - 1, "zombies": len(zombies_of(server.pid)), "pss": pss_mib(server),
            "cpu": cpu_seconds(pids)}


def settle(server: RunningServer, baseline: dict, seconds: float = 5.0, slack: int = 2) -> dict:
    """Wait (bounded) for fds and threads to come back within ``slack`` of the baseline, and for
    children to come back to it exactly (a child still exiting is not a leak; a child left is)."""
    deadline = time.monotonic() + seconds
    while True:
        now = snapshot(server)
        back = (all(now[k] <= baseline[k] + slack for k in ("fds", "threads"))
                and now["children"] <= baseline["children"] and not now["zombies"])
        if back or time.monotonic() > deadline:
            return now
        time.sleep(0.05)


def round_trip(sock: socket.socket, payload: bytes = b"canary\n") -> float:
    began = time.perf_counter()
    sock.sendall(payload)
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("server closed the canary")
        data += chunk
    return time.perf_counter() - began


def canary_p99(port: int, rounds: int = 300, timeout: float = 10.0, batches: int = 3) -> float:
    """p99 latency in ms of ``rounds`` round trips on one connection: the median of ``batches``
    batches, so one scheduler hiccup on this shared 2-core machine does not decide the verdict."""
    results = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        for _ in range(batches):
            samples = sorted(round_trip(sock) for _ in range(rounds))
            results.append(samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1000)
    return statistics.median(results)


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000
