"""Behind a balancer: the PROXY protocol reader and the fault proxy (``sockkit proxy``) under attack."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time

from reliability.suite import Row, Scale, run_atheris, scenario, skip
from sockkit import netlab
from sockkit.testing import open_fds, sockkit_command

CLOSE_WAIT = "08"


@scenario("fuzz-proxy-header", "atheris feeds random bytes (with the protocol's tokens), whole and cut at random, "
          "to the PROXY v1/v2 header reader for 20 s (long: 300 s): only a clean refusal, a bounded buffer, the same "
          "answer however TCP splits the bytes, every accepted header written back the same", ["sans-IO"])
def fuzz_proxy_header(model: str, scale: Scale) -> Row:
    return run_atheris("fuzz-proxy-header", "reliability.fuzz_proxy_header", model, scale)


@contextlib.contextmanager
def closing_target():
    """A target that accepts and closes at once; yields its port."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()  # accept() then fails and the thread ends (it is a daemon either way)


@contextlib.contextmanager
def proxy(*argv: str):
    """``sockkit proxy ARGV`` started; yields (process, port)."""
    process = subprocess.Popen(sockkit_command("proxy", *argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        line = process.stdout.readline()
        if "listening on" not in line:
            raise AssertionError(f"proxy did not start: {line!r} {process.stderr.read()[:200]!r}")
        yield process, int(line.split()[3].rsplit(":", 1)[1])
    finally:
        if process.poll() is None:
            process.terminate()
        process.communicate(timeout=20)


def close_wait_to(port: int) -> int:
    """TCP sockets on this host in CLOSE_WAIT whose peer is ``port`` (the target closed, we did not)."""
    count = 0
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[3] == CLOSE_WAIT and int(fields[2].rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


@scenario("proxy-idle", "sockkit proxy --idle-timeout 2: 200 clients whose target closed at once and who stay silent "
          "are closed once nothing moved for 2 s (before: 400 descriptors and 200 CLOSE_WAIT sockets for good)",
          ["proxy"])
def proxy_idle(model: str, scale: Scale) -> Row:
    count = scale.pick(200, 1000)
    with closing_target() as target, proxy("127.0.0.1:0", f"127.0.0.1:{target}", "--quiet",
                                           "--idle-timeout", "2") as (process, port):
        baseline = open_fds(process.pid)
        clients = []
        try:
            for _ in range(count):
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                clients.append(sock)
            for sock in clients:
                sock.recv(1)  # the target's FIN, passed on; the client keeps its side open
            held_fds, held_close_wait = open_fds(process.pid) - baseline, close_wait_to(target)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and (close_wait_to(target) or open_fds(process.pid) > baseline):
                time.sleep(0.1)
            after_fds, after_close_wait = open_fds(process.pid) - baseline, close_wait_to(target)
        finally:
            for sock in clients:
                sock.close()
    ok = after_close_wait == 0 and after_fds <= 0
    return Row("proxy-idle", model, f"{count} silent clients: +{held_fds} fds, {held_close_wait} CLOSE_WAIT while "
                                    f"idle; after the timeout +{after_fds} fds, {after_close_wait} CLOSE_WAIT", ok)


@scenario("proxy-loop", "sockkit proxy refuses a TARGET that is its own listening address (exit 2) and, for another "
          "address of the same host, closes its own connection when it comes back: one client makes 2 connections "
          "(before: a chain of 1,024)", ["proxy"])
def proxy_loop(model: str, scale: Scale) -> Row:
    reason = netlab.unavailable()
    if reason:
        return skip("proxy-loop", model, reason)
    with netlab.Lab() as lab:
        lab.add_address(lab.front, "10.99.0.1")
        with lab.inside(lab.front):
            refused = subprocess.run(sockkit_command("proxy", "127.0.0.1:9000", "127.0.0.1:9000"),
                                     capture_output=True, text=True, timeout=30)
            with proxy("0.0.0.0:9000", "10.99.0.1:9000", "--insecure") as (process, port):
                with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
                    client.sendall(b"hello")
                    with contextlib.suppress(OSError):
                        while client.recv(4096):
                            pass
                time.sleep(1)  # let a chain, if any, grow before counting it
                process.terminate()
                out, _ = process.communicate(timeout=20)
    connections = sum(1 for line in out.splitlines() if line.startswith("#"))
    ok = refused.returncode == 2 and connections <= 2
    return Row("proxy-loop", model, f"own address: exit {refused.returncode}; through another address of this host: "
                                    f"{connections} connections for one client", ok)
