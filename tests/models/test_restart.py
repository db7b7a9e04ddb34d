"""Restarts that drop no connection: SIGHUP starts a new server on the same listening sockets and
the old one drains, under every model; socket activation (LISTEN_FDS) by systemd's own
``systemd-socket-activate``; sd_notify; a reload whose new server cannot start keeps the old one."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from sockkit import netlab
from sockkit.load.plan import LoadPlan
from sockkit.load.runner import run_load
from sockkit.testing import MODELS as ALL_MODELS
from sockkit.testing import alive, exchange_line, reload, running, start_server, stop_pid


def test_a_reload_under_load_refuses_no_connect(model):
    """A new connection per request at 200/s for 3 s; SIGHUP after 1 s. No connect is refused, none
    times out, none is reset or closed before its answer: the listening socket never closes (clients
    wait in its queue), and a connection the old server accepted an instant before its stop gets a
    grace to speak (engine rule 6; before, it was ended as idle: select 1 reset in 6 runs of 600).
    The old process exits 0 once drained, the new one (a new pid) goes on serving on the same port."""
    # pool: enough workers that a burst (this machine is shared) is queued, not answered busy.
    workers = "16" if model == "pool" else "2"
    server = start_server("echo", "--model", model, "--port", "0", "--quiet", "--workers", workers)
    successor = None
    try:
        assert exchange_line(server.port, b"before") == b"Echo=>before\n"
        results = {}
        load = threading.Thread(target=lambda: results.update(run=run_load(LoadPlan(
            host="127.0.0.1", port=server.port, rate=200, duration=3.0, churn=True, connections=32,
            time_limit=60))))
        load.start()
        time.sleep(1.0)  # the reload lands in the middle of the load (not a synchronisation)
        successor = reload(server)
        load.join(60)
        stats = results["run"].stats
        assert (stats.refused, stats.timeouts, stats.errors, stats.wrong_replies) == (0, 0, 0, 0)
        assert (stats.reset, stats.closed_early) == (0, 0)
        assert stats.requests >= 500
        assert successor != server.pid and alive(successor)
        assert exchange_line(server.port, b"after") == b"Echo=>after\n"
    finally:
        if successor is not None:
            stop_pid(successor)
        server.kill()


def test_a_reload_whose_new_server_fails_keeps_the_old_one(tmp_path):
    """The new server cannot start (its --root is gone): the old one never gets its SIGTERM and keeps
    serving; once the root is back, the next SIGHUP reloads."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.txt").write_text("a\n")
    server = start_server("getfile", "--model", "thread", "--port", "0", "--quiet", "--root", str(root))
    successor = None
    try:
        root.rename(tmp_path / "moved")
        server.proc.send_signal(signal.SIGHUP)
        line = server.wait_for_log(r"new server pid (\d+)")[0]
        failed = int(line.split("new server pid ")[1].split()[0])
        deadline = time.monotonic() + 30
        while alive(failed) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(failed) and server.proc.poll() is None
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"LIST1 .\n")
            assert sock.recv(100).startswith(b"OK1")  # still the old server, on its open root
        (tmp_path / "moved").rename(root)
        successor = reload(server)
        assert alive(successor)
    finally:
        if successor is not None:
            stop_pid(successor)
        server.kill()


def test_sd_notify_ready_then_mainpid_after_a_reload(tmp_path):
    """With NOTIFY_SOCKET set (Type=notify), the server says READY=1 once it serves; after a reload
    the new one says MAINPID=<its pid> and READY=1, so systemd follows the main process."""
    path = str(tmp_path / "notify")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    listener.settimeout(20)
    server = start_server("echo", "--model", "asyncio", "--port", "0", "--quiet",
                          env={**os.environ, "NOTIFY_SOCKET": path})
    successor = None
    try:
        assert listener.recv(200) == b"READY=1"
        successor = reload(server)
        assert listener.recv(200) == f"MAINPID={successor}\nREADY=1".encode()
    finally:
        listener.close()
        if successor is not None:
            stop_pid(successor)
        server.kill()


def test_listen_fds_that_are_not_listening_sockets_are_refused(tmp_path):
    """LISTEN_FDS naming a descriptor that is a file, not a listening socket: a clear error, exit 2.
    LISTEN_PID naming another process: the variables are not ours, the server binds as usual."""
    script = ("import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.dup2(fd, 3); "
              "os.environ.update(LISTEN_FDS='1', LISTEN_PID=str(os.getpid())); "
              "os.execv(sys.executable, [sys.executable, '-m', 'sockkit', 'serve', 'echo', '--port', '0'])")
    done = subprocess.run([sys.executable, "-c", script, __file__], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "descriptor 3 passed in LISTEN_FDS is not a socket" in done.stderr, done.stderr
    with running("echo", "--port", "0", "--quiet", env={**os.environ, "LISTEN_FDS": "1", "LISTEN_PID": "1"}) as server:
        assert exchange_line(server.port, b"x") == b"Echo=>x\n"


@pytest.mark.parametrize("model", ALL_MODELS)
def test_socket_activation_by_systemd_socket_activate(model, socket_activate):
    """systemd's own ``systemd-socket-activate`` binds 127.0.0.1:50007 and [::1]:50008 and starts the
    server with LISTEN_FDS=2: it serves both, logs the clients, and stops on SIGTERM. Fixed ports,
    so inside a private network namespace."""
    tool = socket_activate
    with netlab.Lab() as lab, lab.inside(lab.front):
        process = subprocess.Popen([tool, "-l", "127.0.0.1:50007", "-l", "[::1]:50008", "--", sys.executable, "-m",
                                    "sockkit", "serve", "echo", "--model", model, "--workers", "2"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            for _ in range(2):  # "Listening on 127.0.0.1:50007 as 3.": bound, so a connect may go
                assert "Listening on" in process.stderr.readline()
            for host, port in (("127.0.0.1", 50007), ("::1", 50008)):
                assert exchange_line(port, b"activated", host=host) == b"Echo=>activated\n"
        finally:
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert f"({model}) listening on 127.0.0.1:50007" in out and f"({model}) listening on [::1]:50008" in out
    assert "Server connected by ('::1'," in out
