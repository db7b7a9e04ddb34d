"""Scenarios against the echo service under every server model: abuse, exhaustion, signals."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import struct
import subprocess
import threading
import time

from reliability.probes import canary_p99, pss_mib, round_trip, settle, snapshot, tree
from reliability.suite import Row, Scale, scenario, skip
from sockkit.catalog import MODELS as REGISTRY
from sockkit.catalog import models_where
from sockkit.testing import alive, descendants, running, start_server, zombies_of

#: The models of the registry; the sets below come from their traits.
MODELS = list(REGISTRY)
EVENT_LOOPS = set(models_where(event_loop=True))
FORKING = set(models_where(forks=True))
#: One client at a time (the scenarios that need several at once skip them).
ONE_AT_A_TIME = set(models_where(concurrent=False))
#: ``--workers`` counts threads that each hold one client (pool) / processes that each serve many (prefork).
WORKER_THREADS = set(models_where(workers="threads"))
WORKER_PROCESSES = set(models_where(workers="processes"))


@contextlib.contextmanager
def serve(model: str, *extra: str, **kwargs):
    with running("echo", "--model", model, "--port", "0", "--quiet", *extra, **kwargs) as server:
        if model in WORKER_PROCESSES:
            workers = int(extra[extra.index("--workers") + 1]) if "--workers" in extra else PREFORK_WORKERS
            wait_for_workers(server, workers)
        yield server


#: prefork's default worker count: one per CPU.
PREFORK_WORKERS = os.cpu_count() or 2


def wait_for_workers(server, count: int, seconds: float = 10.0, hello: bytes = b"canary\n") -> None:
    """Baselines are taken once every worker is up (forking them costs RSS of its own) and one
    request (``hello``, answered with a line) has been served."""
    deadline = time.monotonic() + seconds
    while len(descendants(server.pid)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    with connect(server.port) as sock:
        round_trip(sock, hello)
    time.sleep(0.2)


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


@scenario("trickle", "echo --lines: a client sending one byte every 0.2 s is cut off at the request deadline (1 s)",
          MODELS)
def trickle(model: str, scale: Scale) -> Row:
    with serve(model, "--lines", "--idle-timeout", "10", "--request-timeout", "1") as server, \
            connect(server.port) as sock:
        began = time.monotonic()
        closed_after = None
        for _ in range(50):  # 10 s at most
            try:
                sock.sendall(b"x")
                if select.select([sock], [], [], 0.2)[0] and sock.recv(1) == b"":
                    closed_after = time.monotonic() - began
            except OSError:
                closed_after = time.monotonic() - began
            if closed_after is not None:
                break
    if closed_after is None:
        return Row("trickle", model, "never closed in 10 s", False)
    return Row("trickle", model, f"closed after {closed_after:.1f} s (deadline 1 s)", closed_after < 3.0)


@scenario("long-line", "echo --lines: a line with no newline (up to 1 GiB sent) is refused at 1 MiB; server PSS "
          "grows < 32 MiB",
          MODELS)
def long_line(model: str, scale: Scale) -> Row:
    total = scale.pick(64 << 20, 1 << 30)
    with serve(model, "--lines") as server, connect(server.port) as sock:
        base = pss_mib(server)
        peak = base
        chunk = b"y" * (1 << 20)
        sent = 0
        sock.settimeout(5)
        try:
            while sent < total:
                sock.sendall(chunk)
                sent += len(chunk)
                if sent % (8 << 20) == 0:
                    peak = max(peak, pss_mib(server))
        except OSError:
            pass  # the server gave up on us: that is the point
        reply = b""
        with contextlib.suppress(OSError):
            reply = sock.recv(200)
        peak = max(peak, pss_mib(server))
    growth = peak - base
    refused = sent < total
    figure = f"accepted {sent >> 20} MiB of {total >> 20} MiB before close; PSS +{growth:.1f} MiB"
    if reply:
        said = reply.splitlines()[0][:40].decode(errors="replace")
        figure += f"; said {said!r}"
    return Row("long-line", model, figure, refused and growth < 32)


@scenario("churn", "connect-and-close cycles leave fds, threads and children at baseline, no zombies", MODELS)
def churn(model: str, scale: Scale) -> Row:
    cycles = scale.pick(300, 10_000)
    with serve(model) as server:
        round_trip_sock = connect(server.port)
        round_trip(round_trip_sock)
        round_trip_sock.close()
        baseline = settle(server, snapshot(server))
        for index in range(cycles):
            with connect(server.port) as sock:
                if index % 2:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
        after = settle(server, baseline)
    ok = (after["fds"] <= baseline["fds"] + 2 and after["threads"] <= baseline["threads"] + 2
          and after["children"] <= baseline["children"] and after["zombies"] == 0)
    figure = (f"{cycles} cycles: fds {baseline['fds']}→{after['fds']}, threads {baseline['threads']}→"
              f"{after['threads']}, children {baseline['children']}→{after['children']}, zombies {after['zombies']}")
    return Row("churn", model, figure, ok)


@scenario("never-reads", "a raw client flooding 64 MiB and never reading costs < 32 MiB; a canary is still served",
          MODELS)
def never_reads(model: str, scale: Scale) -> Row:
    with serve(model, "--raw", "--idle-timeout", "2") as server:
        base = pss_mib(server)
        hog = connect(server.port)
        hog.setblocking(False)
        sent = 0
        deadline = time.monotonic() + 3
        while sent < (64 << 20) and time.monotonic() < deadline:
            try:
                sent += hog.send(b"z" * 65536)
            except BlockingIOError:
                time.sleep(0.01)
            except OSError:
                break
        peak = pss_mib(server)
        began = time.monotonic()
        with connect(server.port, timeout=15) as canary:
            canary.sendall(b"ping")
            answered = canary.recv(4) == b"ping"
        waited = time.monotonic() - began
        hog.close()
    growth = peak - base
    limit = 4.0 if model in ONE_AT_A_TIME else 1.0  # sequential: served once the hog times out
    figure = f"hog pushed {sent >> 20} MiB; PSS +{growth:.1f} MiB; canary answered in {waited:.2f} s"
    return Row("never-reads", model, figure, answered and growth < 32 and waited < limit)


@scenario("idle-flood", "many idle connections (100/500; long 500/5000) keep a canary's p99 within 3x baseline",
          MODELS)
def idle_flood(model: str, scale: Scale) -> Row:
    if model in ONE_AT_A_TIME:
        return skip("idle-flood", model, "serves one client at a time by design")
    count = scale.pick(500 if model in EVENT_LOOPS else 100, 5000 if model in EVENT_LOOPS else 500)
    extra = ["--max-connections", str(count + 50)]
    if model in WORKER_THREADS:
        extra += ["--workers", str(count + 10)]
    with serve(model, *extra) as server:
        before = canary_p99(server.port)
        idle = []
        try:
            for _ in range(count):
                idle.append(connect(server.port))
            pss = pss_mib(server)
            during = canary_p99(server.port)
        finally:
            for sock in idle:
                sock.close()
    ok = during <= max(3 * before, before + 2.0)
    return Row("idle-flood", model, f"{count} idle: canary p99 {before:.2f} → {during:.2f} ms; server PSS "
                                    f"{pss:.0f} MiB", ok)


@scenario("busy", "client N+1 past --max-connections gets the busy reply within 1 s", MODELS)
def busy(model: str, scale: Scale) -> Row:
    if model in ONE_AT_A_TIME:
        return skip("busy", model, "accepts the next client only after the current one")
    # pool: a worker per held client; prefork: the limit is per worker, so one worker makes it exact.
    extra = ["--workers", "4"] if model in WORKER_THREADS else ["--workers", "1"] if model in WORKER_PROCESSES else []
    holders = []
    with serve(model, "--max-connections", "4", *extra) as server:
        reply = b""
        for _ in range(4):
            sock = connect(server.port)
            holders.append(sock)
            sock.sendall(b"hello\n")
            reply = sock.recv(100)
        began = time.monotonic()
        with connect(server.port, timeout=5) as late:
            reply = late.recv(100)
        waited = time.monotonic() - began
        for sock in holders:
            sock.close()
    ok = reply.startswith(b"Echo=>server busy") and waited < 1.0
    return Row("busy", model, f"answered {reply.strip()[:40].decode(errors='replace')!r} in {waited * 1000:.0f} ms", ok)


@scenario("burst", "a burst of simultaneous connects (300; long 1,000) is all served: backlog >= 128", MODELS)
def burst(model: str, scale: Scale) -> Row:
    count = scale.pick(300, 1000)
    extra = ["--max-connections", str(count + 10)]
    if model in WORKER_THREADS:
        extra += ["--workers", "32"]
    results: list[bool] = []
    with serve(model, *extra) as server:
        gate = threading.Event()

        def client():
            gate.wait()
            try:
                with connect(server.port, timeout=20) as sock:
                    round_trip(sock)
                results.append(True)
            except OSError:
                results.append(False)

        threads = [threading.Thread(target=client) for _ in range(count)]
        for thread in threads:
            thread.start()
        gate.set()
        for thread in threads:
            thread.join(60)
    served = sum(results)
    return Row("burst", model, f"{served}/{count} served", served == count)


@scenario("fd-limit", "under a 64-descriptor limit, 100 clients cause no busy loop (CPU < 10%, <= 1 log line/s) "
          "and service resumes", MODELS)
def fd_limit(model: str, scale: Scale) -> Row:
    if subprocess.run(["which", "prlimit"], capture_output=True).returncode != 0:
        return skip("fd-limit", model, "prlimit not installed (util-linux)")
    from sockkit.testing import sockkit_command

    command = ["prlimit", "--nofile=64:64", "--", *sockkit_command(
        "serve", "echo", "--model", model, "--port", "0", "--quiet", "--workers", "2")]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    try:
        line = proc.stdout.readline()
        port = int(line.rsplit(":", 1)[1])
        hold = []
        for _ in range(100):
            try:
                hold.append(socket.create_connection(("127.0.0.1", port), timeout=2))
            except OSError:
                break
        server_pids = [proc.pid, *descendants(proc.pid)]
        from sockkit.testing import cpu_seconds

        cpu0 = cpu_seconds(server_pids)
        time.sleep(2.0)
        cpu = (cpu_seconds([proc.pid, *descendants(proc.pid)]) - cpu0) / 2.0
        for sock in hold:
            sock.close()
        time.sleep(0.5)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            resumed = round_trip(sock) < 2
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    log_lines = len([x for x in err.splitlines() if x.strip()])
    ok = cpu < 0.10 and resumed and proc.returncode == 0 and log_lines <= 4
    return Row("fd-limit", model, f"{len(hold)} connected; CPU {cpu * 100:.0f}% while saturated; "
                                  f"{log_lines} log lines; resumed {resumed}; exit {proc.returncode}", ok)


@scenario("sigterm", "SIGTERM: in-flight answered, new connects refused at once, exit 0; a 2nd signal exits at once; "
          "fork models: <= 1 zombie, none after 1 s", MODELS)
def sigterm(model: str, scale: Scale) -> Row:
    server = start_server("echo", "--model", model, "--port", "0", "--quiet", "--delay-each", "1")
    try:
        busy = connect(server.port)
        busy.sendall(b"in flight\n")
        idle = connect(server.port)
        time.sleep(0.3)
        server.note_children()
        began = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.1)
        refused = False
        try:
            with connect(server.port, timeout=1) as late:
                late.sendall(b"late\n")
                refused = late.recv(100) in (b"",)
        except OSError:
            refused = True
        peak_zombies = 0
        reply = b""
        busy.settimeout(5)
        while not reply.endswith(b"\n"):
            peak_zombies = max(peak_zombies, len(zombies_of(server.pid)))
            chunk = busy.recv(100)
            if not chunk:
                break
            reply += chunk
        code = server.proc.wait(15)
        took = time.monotonic() - began
        try:
            idle_closed = idle.recv(10) == b""
        except ConnectionResetError:
            idle_closed = True  # sequential: still in the backlog when the listener closed
        busy.close()
        idle.close()
    finally:
        if server.proc.poll() is None:
            server.kill()
    leftover = [p for p in server.seen if alive(p)]
    # The second signal: a long drain cut short.
    second = start_server("echo", "--model", model, "--port", "0", "--quiet", "--delay-each", "30",
                          "--drain-timeout", "30")
    try:
        slow = connect(second.port)
        slow.sendall(b"slow\n")
        time.sleep(0.3)
        second.note_children()
        began2 = time.monotonic()
        second.proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        second.proc.send_signal(signal.SIGTERM)
        second.proc.wait(10)
        hurry = time.monotonic() - began2
        slow.close()
    finally:
        if second.proc.poll() is None:
            second.kill()
    time.sleep(0.5)
    leftover += [p for p in second.seen if alive(p)]
    ok = (reply == b"Echo=>in flight\n" and refused and code == 0 and idle_closed and not leftover
          and peak_zombies <= 1 and hurry < 2.0)
    return Row("sigterm", model, f"in-flight {'answered' if reply else 'LOST'}, late connect refused {refused}, "
                                 f"exit {code} in {took:.1f} s; 2nd signal exit in {hurry:.1f} s; peak zombies "
                                 f"{peak_zombies}; left {len(leftover)}", ok)


@scenario("parent-killed", "kill -9 of the server leaves no orphaned worker or child within 2 s", MODELS)
def parent_killed(model: str, scale: Scale) -> Row:
    extra = ["--workers", "4"] if model in WORKER_THREADS else []  # a worker per held client
    server = start_server("echo", "--model", model, "--port", "0", "--quiet", *extra)
    clients: list[socket.socket] = []
    try:
        if model in WORKER_PROCESSES:
            wait_for_workers(server, PREFORK_WORKERS)
        # Sequential serves one client at a time: keep only one connection open there.
        clients = [connect(server.port) for _ in range(1 if model in ONE_AT_A_TIME else 3)]
        for sock in clients:
            round_trip(sock)
    except BaseException:
        server.kill()  # a failed set-up must not leave the server running
        for sock in clients:
            sock.close()
        raise
    kids = server.note_children()
    os.kill(server.pid, signal.SIGKILL)
    server.proc.wait()
    deadline = time.monotonic() + 2
    while (left := [p for p in kids if alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    for sock in clients:
        sock.close()
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return Row("parent-killed", model, f"{len(kids)} children before; {len(left)} left after 2 s", not left)


@scenario("restart", "killed and restarted on the same port, with connections in TIME_WAIT, it binds at once", MODELS)
def restart(model: str, scale: Scale) -> Row:
    first = start_server("echo", "--model", model, "--port", "0", "--quiet")
    port = first.port
    for _ in range(20):
        with connect(port) as sock:
            round_trip(sock)  # server-side closes leave TIME_WAIT entries on this port
    first.kill()
    began = time.monotonic()
    with running("echo", "--model", model, "--port", str(port), "--quiet") as second, connect(second.port) as sock:
        took = time.monotonic() - began
        ok = round_trip(sock) < 2
    return Row("restart", model, f"rebound port {port} and served in {took:.2f} s", ok and took < 5)


@scenario("kill-worker", "a killed prefork worker is replaced and clients keep being served", sorted(WORKER_PROCESSES))
def kill_worker(model: str, scale: Scale) -> Row:
    with serve(model, "--workers", "2") as server:
        workers = sorted(descendants(server.pid))
        os.kill(workers[0], signal.SIGKILL)
        served = 0
        for _ in range(50):
            try:
                with connect(server.port, timeout=5) as sock:
                    round_trip(sock)
                served += 1
            except OSError:
                pass
        deadline = time.monotonic() + 5
        while len(descendants(server.pid) - {workers[0]}) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        now = descendants(server.pid)
        replaced = len(now) == 2 and workers[0] not in now
    return Row("kill-worker", model, f"{served}/50 served after the kill; worker replaced {replaced}",
               replaced and served >= 45)


__all__ = ["MODELS", "tree"]
