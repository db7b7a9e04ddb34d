"""One measurement: start a target, open its idle connections, drive it with ``sockkit load``, sample it.

The load runs in this process (``run_load``; the client is the same code as ``sockkit load``) while
the server runs in its own. Server figures come from /proc: resident memory, threads and processes
(the server and everything below it), open descriptors, and CPU including reaped children.
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import threading
import time
from contextlib import suppress
from pathlib import Path

from sockkit.bench.scenarios import Scenario
from sockkit.bench.targets import Target, environment
from sockkit.load.plan import LoadPlan
from sockkit.load.report import to_json
from sockkit.load.runner import run_load
from sockkit.testing import LISTENING, RunningServer, descendants, open_fds, status_field

START_SECONDS = 20.0
IDLE_CONNECT_SECONDS = 5.0


def raise_fd_limit() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit (inherited by the servers we start); returns (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def launch(target: Target, scenario: Scenario) -> RunningServer:
    workers = max(16, scenario.connections)
    command = target.command(delay=scenario.delay, max_connections=scenario.idle + scenario.connections + 1024,
                             workers=workers)
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1,
                            env=environment(target))
    deadline = time.monotonic() + START_SECONDS
    while True:
        line = proc.stdout.readline()
        match = LISTENING.search(line) if line else None
        if match:
            return RunningServer(proc, match.group(1) or "127.0.0.1", [int(match.group(2))])
        if not line or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"{target.name} did not start (last line {line!r})")


def cpu_total(pid: int) -> float:
    """CPU seconds of ``pid`` (with its reaped children) plus its live descendants."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for index, proc in enumerate([pid, *descendants(pid)]):
        with suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{proc}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
            if index == 0:
                total += int(fields[13]) + int(fields[14])
    return total / ticks


def pss_kib(pid: int) -> int:
    """Proportional set size: pages shared by N processes count 1/N each, so forked children sharing the
    parent's pages copy-on-write are not counted many times over (summed RSS would be)."""
    with suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return status_field(pid, "VmRSS")


def sample(pid: int) -> dict:
    procs = [pid, *descendants(pid)]
    return {"rss_mib": round(sum(status_field(p, "VmRSS") for p in procs) / 1024, 1),
            "pss_mib": round(sum(pss_kib(p) for p in procs) / 1024, 1),
            "threads": sum(status_field(p, "Threads") for p in procs),
            "processes": len(procs),
            "fds": sum(open_fds(p) for p in procs)}


class Sampler:
    """Samples the server every ``period`` seconds while the load runs and keeps the peaks: a thread per
    client exists only while its client is connected, so a sample taken after the run would miss it."""

    def __init__(self, pid: int, period: float = 0.5) -> None:
        self.pid = pid
        self.period = period
        self.peak: dict = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._done.wait(self.period):
            now = sample(self.pid)
            for key, value in now.items():
                self.peak[key] = max(value, self.peak.get(key, value))


def open_idle(host: str, port: int, count: int) -> tuple[list[socket.socket], int]:
    """``count`` connections, each proven served with a one-byte echo, then left silent. (sockets, failures)"""
    held: list[socket.socket] = []
    failures = 0
    deadline = time.monotonic() + max(30.0, count / 100)
    for _ in range(count):
        if time.monotonic() > deadline:
            failures += count - len(held) - failures
            break
        try:
            sock = socket.create_connection((host, port), timeout=IDLE_CONNECT_SECONDS)
        except OSError:
            failures += 1
            continue
        try:
            sock.sendall(b"i")
            if sock.recv(1) != b"i":
                raise ConnectionError("no echo")
        except OSError:
            failures += 1
            sock.close()
            continue
        held.append(sock)
    return held, failures


class Session:
    """One target started for one scenario, with its idle connections held; measured any number of times.

    Servers of a scenario are started together and measured in turn, round after round, so that the
    noise of a shared machine falls on every target alike instead of on whoever ran during a bad minute.
    """

    def __init__(self, target: Target, scenario: Scenario) -> None:
        self.target = target
        self.scenario = scenario
        self.server: RunningServer | None = None
        self.idle: list[socket.socket] = []
        self.idle_info: dict | None = None
        self.error: str | None = None

    def open(self) -> bool:
        try:
            self.server = launch(self.target, self.scenario)
        except (RuntimeError, OSError) as exc:
            self.error = str(exc)
            return False
        if self.scenario.idle:
            began = time.monotonic()
            self.idle, failed = open_idle(self.server.host, self.server.port, self.scenario.idle)
            self.idle_info = {"asked": self.scenario.idle, "held": len(self.idle), "failed": failed,
                              "open_s": round(time.monotonic() - began, 2)}
        return True

    def measure(self, duration: float, warmup: float) -> dict:
        """One measured run; a JSON-able record."""
        target, scenario, server = self.target, self.scenario, self.server
        # The 1-minute load average before the run: on a shared machine it says which figures were taken in noise.
        record: dict = {"target": target.name, "kind": target.kind, "scenario": scenario.name, "ok": False,
                        "loadavg": round(os.getloadavg()[0], 2)}
        if server is None or server.proc.poll() is not None:
            record["error"] = self.error or "the server is not running"
            return record
        if self.idle_info is not None:
            record["idle"] = self.idle_info
        plan = LoadPlan(host=server.host, port=server.port, connections=scenario.connections,
                        sizes=(scenario.size,), duration=duration, warmup=warmup, raw=True,
                        churn=scenario.churn, timeout=5.0, connect_timeout=5.0,
                        time_limit=warmup + duration + 60)
        marks: dict[str, tuple[float, float]] = {}

        def window(edge: str) -> None:  # server CPU exactly over the measured window
            marks[edge] = (cpu_total(server.pid), time.monotonic())

        with Sampler(server.pid, period=max(0.1, min(1.0, duration / 3))) as sampler:
            result = run_load(plan, window=window)
        record["server"] = sampler.peak or sample(server.pid)
        if "start" in marks and "end" in marks:
            cpu = marks["end"][0] - marks["start"][0]
            wall = marks["end"][1] - marks["start"][1]
            record["server"]["cpu_s"] = round(cpu, 3)
            record["server"]["cpu_cores"] = round(cpu / wall, 3) if wall > 0 else 0
            done = result.stats.requests
            record["server"]["cpu_us_per_request"] = round(cpu / done * 1e6, 2) if done else None
        record["load"] = to_json(result)
        record["ok"] = result.stats.requests > 0
        return record

    def close(self) -> str | None:
        """Drop the idle connections and stop the server; a note if it did not stop cleanly."""
        for sock in self.idle:
            sock.close()
        self.idle = []
        server, self.server = self.server, None
        if server is None:
            return None
        try:
            code = server.stop(timeout=30)
        except AssertionError as exc:
            server.kill()
            return str(exc)
        if self.target.kind == "model" and code != 0:
            return f"exit status {code}"
        return None
