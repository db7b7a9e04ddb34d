"""TLS under every model that carries it (--tls-cert/--tls-key), with a real certificate."""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import subprocess
import time

import pytest

from sockkit.catalog import MODELS, models_where
from sockkit.testing import read_line, running, sockkit_command, worker_options

TLS_MODELS = models_where(tls=True)


def client_context(cert) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cert))
    return context


@pytest.mark.parametrize("model", TLS_MODELS)
def test_echo_over_tls(model, certificate):
    cert, key = certificate
    with running("echo", "--model", model, "--port", "0", "--quiet", "--tls-cert", str(cert),
                 "--tls-key", str(key)) as server:
        # A client that speaks no TLS at all must not stop the server from serving the next one.
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as plain:
            plain.sendall(b"not a handshake\n")
            plain.settimeout(10)
            with contextlib.suppress(OSError):
                plain.recv(100)  # the server gives up on the handshake and closes
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw, \
                client_context(cert).wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            assert sock.version() in ("TLSv1.2", "TLSv1.3")
            sock.sendall(b"secret spam\n")
            assert read_line(sock) == b"Echo=>secret spam\n"


def test_untrusted_certificate_is_refused_by_a_verifying_client(certificate):
    cert, key = certificate
    with running("echo", "--port", "0", "--quiet", "--tls-cert", str(cert), "--tls-key", str(key)) as server, \
            socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw, \
            pytest.raises(ssl.SSLCertVerificationError):
        ssl.create_default_context().wrap_socket(raw, server_hostname="127.0.0.1")


@pytest.mark.parametrize("model", models_where(tls=False))
def test_models_without_tls_refuse_clearly(model, certificate):
    cert, key = certificate
    done = subprocess.run(sockkit_command("serve", "echo", "--model", model, "--port", "0", "--tls-cert", str(cert),
                                          "--tls-key", str(key)), capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "does not do TLS" in done.stderr


def test_half_configured_tls_is_an_error(certificate):
    cert, _ = certificate
    done = subprocess.run(sockkit_command("serve", "echo", "--port", "0", "--tls-cert", str(cert)),
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "--tls-cert and --tls-key go together" in done.stderr


@pytest.mark.parametrize("model", TLS_MODELS)
def test_finished_tls_clients_free_their_place(model, certificate):
    """Clients that came and went over TLS (and one that never said hello) no longer count:
    with room for 3 at once, the 7th client is still served, and a stop does not wait out the
    drain deadline for connections that ended long ago."""
    cert, key = certificate
    with running("echo", "--model", model, "--port", "0", "--quiet", "--tls-cert", str(cert), "--tls-key",
                 str(key), "--max-connections", "3", "--drain-timeout", "10") as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10):
            pass  # connects and leaves without a handshake
        for turn in range(6):
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw, \
                    client_context(cert).wrap_socket(raw, server_hostname="127.0.0.1") as sock:
                sock.sendall(b"turn %d\n" % turn)
                assert read_line(sock) == b"Echo=>turn %d\n" % turn
        started = time.monotonic()
        assert server.stop() == 0
        assert time.monotonic() - started < 5


@pytest.mark.parametrize("model", TLS_MODELS)
def test_stop_closes_idle_tls_clients_without_waiting_for_the_deadline(model, certificate):
    """A client that connected and never said hello, and one idle after its handshake, are idle
    connections: SIGTERM closes them at once (drain deadline 10 s; the stop must take far less)."""
    cert, key = certificate
    options = ["--drain-timeout", "10", "--request-timeout", "30", "--idle-timeout", "30"]
    with running("echo", "--model", model, "--port", "0", "--quiet", "--tls-cert", str(cert), "--tls-key",
                 str(key), *options) as server, \
            socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw, \
            client_context(cert).wrap_socket(raw, server_hostname="127.0.0.1") as idle:
        idle.sendall(b"hello\n")
        assert read_line(idle) == b"Echo=>hello\n"
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as silent:
            time.sleep(0.2)  # the silent client's handshake is under way in the server
            started = time.monotonic()
            assert server.stop() == 0
            assert time.monotonic() - started < 5
            silent.settimeout(5)
            with contextlib.suppress(ConnectionResetError):  # reset or EOF: closed either way
                for _ in range(10):  # closed, not left hanging (perhaps after a TLS alert)
                    if silent.recv(4096) == b"":
                        break


#: Models that refuse clients over --max-connections (sequential has none) inside a TLS session;
#: the fork models refuse in plain text, so that no thread exists in a process that forks.
REFUSE_OVER_TLS = [name for name in TLS_MODELS if MODELS[name].concurrent and not MODELS[name].fork_per_client]


@pytest.mark.parametrize("model", REFUSE_OVER_TLS)
def test_busy_answer_travels_inside_tls(model, certificate):
    """Past --max-connections, any TLS client (here the standard library's, not sockkit's) completes
    its handshake and reads the busy line, instead of seeing a handshake fail on plain text."""
    cert, key = certificate
    one_worker = worker_options(model, threads=1)
    with running("echo", "--model", model, "--port", "0", "--quiet", "--tls-cert", str(cert), "--tls-key",
                 str(key), "--max-connections", "1", *one_worker) as server, \
            socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw, \
            client_context(cert).wrap_socket(raw, server_hostname="127.0.0.1") as first:
        first.sendall(b"hi\n")
        assert read_line(first) == b"Echo=>hi\n"  # the one place is taken
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw2, \
                client_context(cert).wrap_socket(raw2, server_hostname="127.0.0.1") as second:
            assert read_line(second) == b"Echo=>server busy, try again later\n"
        first.sendall(b"still here\n")
        assert read_line(first) == b"Echo=>still here\n"


def test_refusals_inside_tls_are_bounded(certificate):
    """Clients that never finish a handshake hold at most TLS_REFUSERS refusal threads, each for at
    most REFUSE_SECONDS (then they are closed); past them the busy line goes out at once, in plain text."""
    from sockkit.models.accept import REFUSE_SECONDS, TLS_REFUSERS

    cert, key = certificate
    with running("echo", "--model", "thread", "--port", "0", "--quiet", "--tls-cert", str(cert), "--tls-key",
                 str(key), "--max-connections", "1") as server, \
            socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw, \
            client_context(cert).wrap_socket(raw, server_hostname="127.0.0.1") as first:
        first.sendall(b"hi\n")
        assert read_line(first) == b"Echo=>hi\n"
        stalled = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(TLS_REFUSERS)]
        try:
            time.sleep(0.2)  # each is now a refusal thread waiting for a hello
            started = time.monotonic()
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as late:
                assert read_line(late) == b"Echo=>server busy, try again later\n"
            assert time.monotonic() - started < 1.0
            for sock in stalled:
                sock.settimeout(REFUSE_SECONDS + 5)
                assert sock.recv(100) == b""  # given up on after the deadline, not held forever
        finally:
            for sock in stalled:
                sock.close()
        first.sendall(b"still here\n")
        assert read_line(first) == b"Echo=>still here\n"


@pytest.mark.parametrize("model", ["thread", "pool"])
def test_busy_line_survives_a_client_that_speaks_first(model, certificate):
    """A refused client that sends its request right after the handshake (as sockkit get does)
    still reads the busy line. (The refusal ends with a half-close and a bounded read, not a
    reset; on loopback a reset would not lose the line either, so this checks the line, not that.)"""
    cert, key = certificate
    with running("echo", "--model", model, "--port", "0", "--quiet", "--tls-cert", str(cert), "--tls-key",
                 str(key), "--max-connections", "1") as server, \
            socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw, \
            client_context(cert).wrap_socket(raw, server_hostname="127.0.0.1") as first:
        first.sendall(b"hi\n")
        assert read_line(first) == b"Echo=>hi\n"
        for _ in range(20):
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw2, \
                    client_context(cert).wrap_socket(raw2, server_hostname="127.0.0.1") as second:
                second.sendall(b"spam\n" * 2000)
                time.sleep(0.01)  # the server has sent its line and closed by now
                assert read_line(second) == b"Echo=>server busy, try again later\n"


@pytest.mark.parametrize("model", TLS_MODELS)
def test_a_tls_client_is_logged_once(model, certificate):
    """One 'Server connected by' line per client, as without TLS (339ff7a started the service a
    second time after the handshake in the blocking models: two lines, two service connections)."""
    cert, key = certificate
    with running("echo", "--model", model, "--port", "0", "--tls-cert", str(cert), "--tls-key", str(key)) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw, \
                client_context(cert).wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            sock.sendall(b"once\n")
            assert read_line(sock) == b"Echo=>once\n"
            port = sock.getsockname()[1]
        server.wait_for_log(re.escape(f", {port})"))
        time.sleep(0.3)  # (a second line would follow the first at once)
    assert sum(f", {port})" in line for line in server.lines) == 1, server.lines
