"""A tested deployment: HAProxy (deploy/haproxy/haproxy.cfg) in front of three sockkit servers, each on
a machine of its own (network namespaces joined by veth), driven from a client machine by ``sockkit
load`` at a fixed rate with a new connection per request (the load a restart must not fail).

Every row prints its numbers: requests, failures by kind, the worst latency, what HAProxy's own log
says of each connection (which server, retried or not, how it ended).
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from reliability.suite import Row, Scale, scenario, skip
from sockkit import balancer_lab
from sockkit.balancer_lab import ECHO_PORT, GETFILE_PORT, BalancerLab
from sockkit.load.plan import LoadPlan
from sockkit.load.runner import run_load
from sockkit.testing import sockkit_command

#: Requests per second through HAProxy during the restarts and the kill (a new connection each).
RATE = 300
#: The servers read HAProxy's PROXY v2 header (send-proxy-v2 in the configuration).
PROXY_PROTOCOL = True


@contextlib.contextmanager
def load_in_background(lab: BalancerLab, seconds: float):
    """``sockkit load`` from the client machine for ``seconds``; yields a dict that holds the result
    (key "stats") once the block has waited for it."""
    result: dict = {}

    def drive() -> None:
        with lab.on_client():
            result["stats"] = run_load(LoadPlan(host=lab.front, port=ECHO_PORT, rate=RATE, duration=seconds,
                                                churn=True, connections=64, time_limit=seconds + 60)).stats

    thread = threading.Thread(target=drive, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        thread.join(seconds + 90)


def failures(stats) -> str:
    kinds = {"refused": stats.refused, "reset": stats.reset, "timeouts": stats.timeouts,
             "closed early": stats.closed_early, "errors": stats.errors, "wrong": stats.wrong_replies}
    failed = {name: count for name, count in kinds.items() if count}
    return f"{stats.failures} failed" + (f" ({', '.join(f'{n} {k}' for k, n in failed.items())})" if failed else "")


def retried(lab: BalancerLab) -> int:
    return sum(1 for conn in lab.connections() if conn.backend == "echo_servers" and conn.retries)


def lab_or_skip(name: str, model: str):
    reason = balancer_lab.unavailable()
    return skip(name, model, reason) if reason else None


@scenario("haproxy-client-address", "three servers behind HAProxy (send-proxy-v2): every client connection is logged "
          "by the server that took it with the client machine's address, none with HAProxy's (only its health "
          "checks, which are HAProxy's own)", ["haproxy"])
def haproxy_client_address(model: str, scale: Scale) -> Row:
    if skipped := lab_or_skip("haproxy-client-address", model):
        return skipped
    with BalancerLab(3, proxy_protocol=PROXY_PROTOCOL) as lab:
        with load_in_background(lab, scale.pick(2.0, 10.0)) as result:
            pass
        stats = result["stats"]
        per_server = collections.Counter(conn.server for conn in lab.connections()
                                         if conn.backend == "echo_servers" and not conn.unanswered)
        logged, others = {}, collections.Counter()
        for machine in lab.machines:
            deadline = time.monotonic() + 10  # the last lines may still be on their way
            while True:
                names = collections.Counter(machine.logged_clients("echo"))
                if names[lab.client_address] >= per_server[f"s{machine.index}"] or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            logged[machine.index] = names.pop(lab.client_address, 0)
            others.update(names)
    expected = {machine: per_server[f"s{machine}"] for machine in logged}
    strangers = {host: count for host, count in others.items() if not host.startswith("10.77.") or
                 not host.endswith(".1")}
    figure = (f"{stats.requests:,} requests; logged as {lab.client_address} by s1/s2/s3: "
              f"{'/'.join(str(logged[i]) for i in sorted(logged))} (HAProxy's log: "
              f"{'/'.join(str(expected[i]) for i in sorted(expected))}); health checks logged as HAProxy: "
              f"{sum(others.values())}; other addresses: {sum(strangers.values())}")
    return Row("haproxy-client-address", model, figure,
               logged == expected and sum(logged.values()) == stats.requests and not strangers)


@scenario("haproxy-reload", f"three servers behind HAProxy, {RATE} req/s through it (a new connection each): a "
          "rolling SIGHUP of all three, one after another, refuses nothing and fails zero requests (a connection "
          "the old server accepted an instant before its stop, its first bytes not read yet, gets a grace to speak "
          "and is served: engine rule 6)", ["haproxy"])
def haproxy_reload(model: str, scale: Scale) -> Row:
    if skipped := lab_or_skip("haproxy-reload", model):
        return skipped
    with BalancerLab(3, proxy_protocol=PROXY_PROTOCOL) as lab:
        with load_in_background(lab, scale.pick(6.0, 30.0)) as result:
            time.sleep(1.0)  # the restarts land in the middle of the load (not a synchronisation)
            for _ in range(scale.pick(1, 5)):
                for machine in lab.machines:
                    machine.reload("echo")
                    time.sleep(0.3)
        stats = result["stats"]
        figure = (f"{stats.requests:,} requests, {failures(stats)}; worst latency "
                  f"{stats.latency.maximum / 1e6:.0f} ms; HAProxy retried {retried(lab)}")
    return Row("haproxy-reload", model, figure, stats.requests > 0 and stats.failures == 0)


@scenario("haproxy-restart", f"the same at {RATE} req/s with a rolling SIGTERM + start of all three: the "
          "stopped server drains, HAProxy retries the connects it refuses on the others: zero requests fail",
          ["haproxy"])
def haproxy_restart(model: str, scale: Scale) -> Row:
    if skipped := lab_or_skip("haproxy-restart", model):
        return skipped
    with BalancerLab(3, proxy_protocol=PROXY_PROTOCOL) as lab:
        downs = []
        with load_in_background(lab, scale.pick(8.0, 30.0)) as result:
            time.sleep(1.0)
            for machine in lab.machines:
                machine.stop("echo")
                began = time.monotonic()
                machine.start("echo")
                lab.wait_state(f"echo_servers/s{machine.index}", "UP")
                downs.append(time.monotonic() - began)
                time.sleep(0.3)
        stats = result["stats"]
        figure = (f"{stats.requests:,} requests, {failures(stats)}; worst latency "
                  f"{stats.latency.maximum / 1e6:.0f} ms; HAProxy retried {retried(lab)}; each server back in "
                  f"{max(downs):.1f} s at most")
    return Row("haproxy-restart", model, figure, stats.failures == 0 and stats.requests > 0)


@scenario("haproxy-kill", f"kill -9 of one server at {RATE} req/s, each request held 0.2 s (--delay, so some are in "
          "flight): only the connections in flight on it fail (HAProxy's log: all on that server), connects it "
          "refuses are retried on the others, and its health checks take it out within 2 x 0.5 s", ["haproxy"])
def haproxy_kill(model: str, scale: Scale) -> Row:
    if skipped := lab_or_skip("haproxy-kill", model):
        return skipped
    with BalancerLab(3, proxy_protocol=PROXY_PROTOCOL, echo_args=("--delay", "0.2")) as lab:
        with load_in_background(lab, scale.pick(5.0, 20.0)) as result:
            time.sleep(1.5)
            in_flight = lab.sessions("echo_servers", "s1")
            lab.machines[0].kill("echo")
            down_after = lab.wait_state("echo_servers/s1", "DOWN")
        stats = result["stats"]
        connections = lab.connections()
        failed = collections.Counter(conn.server for conn in connections
                                     if conn.unanswered and conn.backend == "echo_servers")
        elsewhere = sum(count for server, count in failed.items() if server != "s1")
        window = balancer_lab.CHECK_SECONDS * balancer_lab.CHECKS_TO_CHANGE
        figure = (f"{stats.requests:,} requests, {failures(stats)} (HAProxy's log: {failed.get('s1', 0)} "
                  f"unanswered on s1, {elsewhere} elsewhere; {in_flight} in flight on s1 just before); marked "
                  f"down after {down_after:.2f} s; {retried(lab)} connects retried elsewhere")
    # In flight: what HAProxy had open to s1 a moment before the kill, give or take the requests that
    # began or ended in that moment (at 100 req/s on s1, 0.2 s each: about 20).
    ok = (elsewhere == 0 and stats.failures == sum(failed.values()) and stats.failures <= in_flight + 10
          and down_after <= window + 1.0)
    return Row("haproxy-kill", model, figure, ok)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        while block := source.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


@scenario("haproxy-get-retry", "sockkit get --retry of a 64 MiB file through HAProxy from three getfile servers "
          "holding the same file; the server sending it is killed (-9) mid-way: the get resumes on another and "
          "ends with an identical, verified file", ["haproxy"])
def haproxy_get_retry(model: str, scale: Scale) -> Row:
    if skipped := lab_or_skip("haproxy-get-retry", model):
        return skipped
    work = Path(tempfile.mkdtemp(prefix="sockkit-rel-haproxy-"))
    try:
        root, dest = work / "root", work / "dest"
        root.mkdir()
        dest.mkdir()
        with open(root / "big.bin", "wb") as out:
            for _ in range(64):
                out.write(os.urandom(1 << 20))
        with BalancerLab(3, proxy_protocol=PROXY_PROTOCOL, getfile_root=str(root)) as lab:
            with lab.on_client():
                command = sockkit_command("get", "big.bin", "--host", lab.front, "--port", str(GETFILE_PORT),
                                          "-o", str(dest), "--retry", "5", "--limit-rate", "16M", "--no-fsync")
                get = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            serving = wait_for_transfer(lab, dest, get)
            killed_at = part_size(dest)
            lab.machines[serving - 1].kill("getfile")
            out, err = get.communicate(timeout=120)
        identical = (dest / "big.bin").exists() and sha256(dest / "big.bin") == sha256(root / "big.bin")
        retries = err.count("retry ")
        resumed = re.search(r"resumed at ([\d.]+ \w+)", out)
        figure = (f"g{serving} killed with {killed_at / 2**20:.0f}+ MiB sent; exit {get.returncode} after {retries} "
                  f"retr{'y' if retries == 1 else 'ies'}, resumed at {resumed.group(1) if resumed else '-'}; "
                  f"sha256 identical: {identical}")
        return Row("haproxy-get-retry", model, figure, get.returncode == 0 and identical and retries >= 1)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def part_size(dest: Path) -> int:
    return sum(path.stat().st_size for path in dest.glob("*.part"))


def wait_for_transfer(lab: BalancerLab, dest: Path, get: subprocess.Popen) -> int:
    """Once 8 MiB have arrived: the machine whose getfile server holds the transfer (HAProxy's count)."""
    deadline = time.monotonic() + 60
    while part_size(dest) < 8 << 20:
        if get.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"the download did not get going: {get.stderr.read()[-300:]}")
        time.sleep(0.02)
    for machine in lab.machines:
        if lab.sessions("getfile_servers", f"g{machine.index}"):
            return machine.index
    raise AssertionError("HAProxy shows no getfile session")
