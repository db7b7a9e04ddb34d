"""The echo service under every server model, over real loopback sockets."""

from __future__ import annotations

import os
import re
import select
import socket
import struct
import subprocess
import threading
import time

import pytest

from sockkit.testing import (
    PARALLEL_MODELS,
    descendants,
    exchange_line,
    ipv6_available,
    read_line,
    running,
    sockkit_command,
    worker_options,
    zombies_of,
)

CTIME = r"\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}"


def run_echo_client(*args: str) -> list[str]:
    done = subprocess.run(sockkit_command("echo", *args), capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_chapter_session(model):
    """The chapter's 10.3.1.3 session prints exactly as in the book, and the server logs each client."""
    with running("echo", "--model", model, "--port", "0") as server:
        assert run_echo_client(f"localhost:{server.port}") == ["Client received: 'Echo=>Hello network world'"]
        assert run_echo_client(f"localhost:{server.port}", "spam", "Spam", "SPAM") == [
            "Client received: 'Echo=>spam'", "Client received: 'Echo=>Spam'", "Client received: 'Echo=>SPAM'"]
        assert run_echo_client(f"localhost:{server.port}", "Shrubbery") == ["Client received: 'Echo=>Shrubbery'"]
        logged = server.wait_for_log(r"^Server connected by", count=3)
        assert all(re.fullmatch(rf"Server connected by \('127\.0\.0\.1', \d+\) at {CTIME}", line) for line in logged)


def test_stamp_appends_server_time(model):
    """--stamp answers as the chapter's forking/threading servers: 'Echo=>Bruce at <ctime>'."""
    with running("echo", "--model", model, "--port", "0", "--stamp", "--quiet") as server:
        (line,) = run_echo_client(f"localhost:{server.port}", "Bruce")
        assert re.fullmatch(rf"Client received: 'Echo=>Bruce at {CTIME}'", line)


def test_several_ports_at_once(model):
    """One server listens on several ports (the chapter's select server does two)."""
    with running("echo", "--model", model, "--port", "0", "--port", "0", "--quiet") as server:
        assert len(set(server.ports)) == 2
        for port in server.ports:
            assert exchange_line(port, b"Sir Lancelot") == b"Echo=>Sir Lancelot\n"


@pytest.mark.skipif(not ipv6_available(), reason="no IPv6 loopback on this machine")
def test_ipv6(model):
    """--host ::1 serves IPv6 clients."""
    with running("echo", "--model", model, "--host", "::1", "--port", "0", "--quiet") as server:
        assert exchange_line(server.port, b"ni", host="::1") == b"Echo=>ni\n"
        assert run_echo_client(f"[::1]:{server.port}", "Ni") == ["Client received: 'Echo=>Ni'"]


@pytest.mark.parametrize("late_reader", [False, True], ids=["reading", "late-reader"])
def test_large_raw_message_split_by_tcp(model, late_reader):
    """A 3 MB message in raw mode comes back byte-exact, however TCP cuts it; with a reader that
    starts late the server's sends come up short and it must buffer the rest (random bytes, so
    a reused or overwritten buffer cannot pass by chance)."""
    payload = os.urandom((12 if late_reader else 3) << 20)  # 12 MB: more than the socket buffers hold
    with running("echo", "--model", model, "--raw", "--port", "0", "--quiet") as server, \
            socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        received = bytearray()

        def reader():
            if late_reader:
                time.sleep(0.5)  # both directions' socket buffers fill meanwhile
            while len(received) < len(payload):
                chunk = sock.recv(1 << 16)
                if not chunk:
                    return
                received.extend(chunk)

        thread = threading.Thread(target=reader)
        thread.start()  # send and receive at once, or both sides' buffers fill and deadlock
        sock.sendall(payload)
        thread.join(30)
        assert bytes(received) == payload


def test_line_split_and_joined_segments(model):
    """--lines: lines cut across segments or packed into one get exactly one reply each."""
    with running("echo", "--model", model, "--lines", "--port", "0", "--quiet") as server, \
            socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"He")
        time.sleep(0.05)
        sock.sendall(b"llo\nWor")
        time.sleep(0.05)
        sock.sendall(b"ld\nthree\n")
        expected = b"Echo=>Hello\nEcho=>World\nEcho=>three\n"
        data = b""
        while len(data) < len(expected):
            chunk = sock.recv(4096)
            assert chunk, "server closed early"
            data += chunk
        assert data == expected


@pytest.mark.parametrize("model", PARALLEL_MODELS)
def test_fifty_concurrent_clients(model):
    """50 clients at once, 20 round trips each, every reply matching its own request."""
    failures: list[str] = []
    with running("echo", "--model", model, "--port", "0", "--quiet", "--workers", "64") as server:

        def client(index: int) -> None:
            try:
                with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
                    for turn in range(20):
                        message = f"client {index} turn {turn}".encode()
                        sock.sendall(message + b"\n")
                        reply = read_line(sock)
                        if reply != b"Echo=>" + message + b"\n":
                            failures.append(f"{index}/{turn}: {reply!r}")
                            return
            except OSError as exc:
                failures.append(f"{index}: {exc!r}")

        threads = [threading.Thread(target=client, args=(i,)) for i in range(50)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert not failures, failures[:5]


def _eight_delayed_clients(port: int) -> float:
    replies: list[bytes] = []
    started = time.monotonic()

    def client(index: int) -> None:
        replies.append(exchange_line(port, f"slow {index}".encode(), timeout=30))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(40)
    assert sorted(replies) == sorted(f"Echo=>slow {i}\n".encode() for i in range(8))
    return time.monotonic() - started


@pytest.mark.parametrize("model", PARALLEL_MODELS)
def test_delay_does_not_serialise_parallel_models(model):
    """--delay 1 with 8 clients: every parallel model (select and the event loops included)
    answers all of them in about one second, not eight."""
    with running("echo", "--model", model, "--port", "0", "--delay", "1", "--quiet", "--workers", "8") as server:
        assert _eight_delayed_clients(server.port) < 4.0


def test_delay_serialises_sequential():
    """The sequential model, by design, makes the eighth client wait for the seven before it."""
    with running("echo", "--model", "sequential", "--port", "0", "--delay", "1", "--quiet") as server:
        assert _eight_delayed_clients(server.port) >= 7.0


@pytest.mark.parametrize("model", ["fork", "fork-signal"])
def test_no_zombies_after_a_hundred_fork_clients(model):
    """After 100 clients of a forking server no dead child is left unreaped."""
    with running("echo", "--model", model, "--port", "0", "--quiet") as server:
        for index in range(100):
            assert exchange_line(server.port, f"c{index}".encode()) == f"Echo=>c{index}\n".encode()
        # Children exit once their client has closed; on a loaded machine that can take a moment.
        deadline = time.monotonic() + 5
        while ((zombies := zombies_of(server.pid)) or descendants(server.pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert zombies == []
        assert len(descendants(server.pid)) == 0


def test_sigterm_drains_in_flight_and_leaves_nothing(model):
    """SIGTERM: a request in flight (read, inside its --delay-each wait) is still answered, exit 0,
    no process left."""
    with running("echo", "--model", model, "--port", "0", "--delay-each", "1", "--quiet") as server:
        busy = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        busy.sendall(b"in flight\n")
        time.sleep(0.3)  # the request is now inside its one-second delay
        server.note_children()
        t0 = time.monotonic()
        server.proc.send_signal(15)
        assert read_line(busy) == b"Echo=>in flight\n"
        busy.close()
        assert server.proc.wait(15) == 0
        assert time.monotonic() - t0 < 12


@pytest.mark.parametrize("model", ["thread", "pool", "socketserver", "fork", "sequential"])
def test_sigterm_lets_idle_raw_clients_go_at_once(model):
    """Raw echo (the blocking models' mirror loop): at SIGTERM an idle client sees a clean end of
    stream, not the drain deadline's cut, and a chunk sent just before is still echoed."""
    with running("echo", "--model", model, "--raw", "--port", "0", "--drain-timeout", "30",
                 "--quiet") as server:
        idle = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        idle.sendall(b"hello")
        assert idle.recv(10) == b"hello"  # the connection is being served, now waiting
        time.sleep(0.2)
        t0 = time.monotonic()
        server.proc.send_signal(15)
        assert idle.recv(10) == b""  # FIN, long before the 30 s drain deadline would cut it
        assert server.proc.wait(15) == 0
        assert time.monotonic() - t0 < 10
        idle.close()


@pytest.mark.parametrize("model", PARALLEL_MODELS)
def test_idle_connection_times_out(model):
    """A client that connects and says nothing is closed after --idle-timeout."""
    with running("echo", "--model", model, "--port", "0", "--idle-timeout", "0.5", "--quiet") as server, \
            socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        started = time.monotonic()
        assert sock.recv(100) == b""
        assert time.monotonic() - started < 5


def test_reset_client_does_not_hurt_others(model):
    """A client that resets mid-conversation costs only its own connection."""
    with running("echo", "--model", model, "--port", "0", "--quiet") as server:
        rude = socket.create_connection(("127.0.0.1", server.port))
        rude.sendall(b"half a li")
        rude.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        rude.close()  # RST
        assert exchange_line(server.port, b"still here") == b"Echo=>still here\n"


@pytest.mark.parametrize("model", ["select", "asyncio", "uvloop", "thread"])
def test_client_that_never_reads_does_not_stall_others(model):
    """One client floods raw data and never reads; another is answered promptly all the while."""
    with running("echo", "--model", model, "--raw", "--port", "0", "--quiet") as server:
        hog = socket.create_connection(("127.0.0.1", server.port))
        hog.setblocking(False)
        sent = 0
        try:
            while sent < 64 << 20:
                sent += hog.send(b"x" * 65536)
        except BlockingIOError:
            pass  # everything is full: the server stopped reading it
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as other:
            other.sendall(b"ping")
            assert other.recv(10) == b"ping"
        hog.close()


@pytest.mark.parametrize("model", PARALLEL_MODELS)
def test_connection_limit_answers_busy(model):
    """Past --max-connections a client is told the server is busy, and is not left hanging."""
    # prefork: the limit is per worker (as nginx's worker_connections), so one worker makes it exact.
    extra = worker_options(model, threads=2)
    with running("echo", "--model", model, "--port", "0", "--max-connections", "2", "--quiet", *extra) as server:
        holders = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(2)]
        for holder in holders:
            holder.sendall(b"hold\n")
            assert read_line(holder) == b"Echo=>hold\n"
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as late:
            assert read_line(late) == b"Echo=>server busy, try again later\n"
        for holder in holders:
            holder.close()


def test_port_in_use_is_a_clear_error():
    """A second server on a taken port says so in one line and exits 1."""
    with running("echo", "--model", "select", "--port", "0", "--quiet") as server:
        done = subprocess.run(sockkit_command("serve", "echo", "--port", str(server.port)),
                              capture_output=True, text=True, timeout=20)
        assert done.returncode == 1
        assert f"port {server.port} is already in use" in done.stderr


def test_trickling_request_hits_an_absolute_deadline(model):
    """A client sending one byte of a line every 0.2 s (never idle for long) is still cut off at
    --request-timeout, though the idle timeout alone would never fire."""
    with running("echo", "--model", model, "--lines", "--port", "0", "--quiet", "--idle-timeout", "5",
                 "--request-timeout", "1") as server, \
            socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        started = time.monotonic()
        closed = False
        for _ in range(40):  # bounded: about 8 s at most
            try:
                sock.sendall(b"x")
                if select.select([sock], [], [], 0.2)[0] and sock.recv(1) == b"":
                    closed = True
            except OSError:
                closed = True
            if closed:
                break
        assert closed, "the server let a trickling client go on past its request deadline"
        assert time.monotonic() - started < 5
