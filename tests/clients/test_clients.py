"""The small clients: probe, spawn, signals, echo errors -- against real sockets and processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading

from sockkit.clients.probe import decode_escapes, render
from sockkit.net import describe_bind_error, split_host_port
from sockkit.testing import running, sockkit_command


def run(*args, timeout=30):
    return subprocess.run(sockkit_command(*args), capture_output=True, text=True, timeout=timeout)


def banner_server(banner: bytes, reply: bytes):
    """A one-shot server that speaks first (like POP/FTP), then answers one line."""
    listener = socket.create_server(("127.0.0.1", 0))
    got: list[bytes] = []

    def serve():
        conn, _ = listener.accept()
        with conn:
            conn.sendall(banner)
            got.append(conn.recv(1024))
            conn.sendall(reply)
        listener.close()

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1], got


def test_probe_shows_banner_and_reply():
    """probe prints the banner, sends the line with CRLF, prints the reply and notes the close."""
    port, got = banner_server(b"+OK sockkit POP3 ready\r\n", b"+OK bye\r\n")
    done = run("probe", "127.0.0.1", str(port), "--send", "QUIT")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"connected to 127.0.0.1:{port}", "+OK sockkit POP3 ready",
                                        "sent 6 bytes", "+OK bye", "(server closed the connection)"]
    assert got == [b"QUIT\r\n"]


def test_probe_binary_reply_is_hex():
    port, _ = banner_server(b"\x00\x01\xfeOK", b"")
    done = run("probe", "127.0.0.1", str(port))
    assert "00 01 fe 4f 4b" in done.stdout


def test_probe_refused_is_one_clear_line():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        done = run("probe", "127.0.0.1", str(port))
    assert done.returncode == 1
    assert done.stderr.strip() == f"sockkit probe: cannot connect to 127.0.0.1:{port}: connection refused " \
                                  "(is the server running on that port?)"


def test_echo_client_refused():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        done = run("echo", f"localhost:{port}", "hi")
    assert done.returncode == 1
    assert "connection refused" in done.stderr
    assert "Traceback" not in done.stderr


def test_spawn_runs_clients_in_parallel_and_counts():
    """The chapter's testecho: eight clients at once, all succeed, and the server saw eight."""
    with running("echo", "--model", "select", "--port", "0") as server:
        done = run("spawn", "8", "--", *sockkit_command("echo", f"localhost:{server.port}"))
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("8 of 8 clients succeeded in ")
        server.wait_for_log(r"^Server connected by", count=8)


def test_spawn_reports_failures():
    done = run("spawn", "3", "--", "false")
    assert done.returncode == 1
    assert done.stdout.startswith("0 of 3 clients succeeded")


def test_signals_demo_prints_each_signal():
    """signals USR1 prints 'Got signal 10 at <time>' per signal; SIGCHLD adds 'sigchld caught'."""
    for name, number, extra in (("USR1", signal.SIGUSR1, []), ("17", signal.SIGCHLD, ["sigchld caught"])):
        proc = subprocess.Popen(sockkit_command("signals", name), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        try:
            assert "waiting for signal" in proc.stderr.readline()
            for _ in range(2):
                os.kill(proc.pid, number)
                assert proc.stdout.readline().startswith(f"Got signal {int(number)} at ")
                for line in extra:
                    assert proc.stdout.readline().strip() == line
        finally:
            proc.kill()
            proc.wait()


def test_signals_refuses_uncatchable():
    done = run("signals", "KILL")
    assert done.returncode == 2
    assert "cannot be caught" in done.stderr


def test_helpers():
    assert decode_escapes("GET /\\r\\n") == b"GET /\r\n"
    assert render(b"hello\r\n") == "hello"
    assert split_host_port("[::1]:9", 1) == ("::1", 9)
    assert split_host_port("localhost", 7) == ("localhost", 7)
    assert split_host_port("h:8", 7) == ("h", 8)
    assert "permission denied" in describe_bind_error(PermissionError(13, "Permission denied"), "", 80)
