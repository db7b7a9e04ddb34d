"""``sockkit serve --proxy-protocol`` under every model: the PROXY header (v1 and v2, however it is
split) names the client in the log line and to the service; no header, a bad one, or one from an
untrusted address closes the connection and says so; getfile's per-address token throttle counts
the header's client; ``sockkit proxy --send-proxy-v2`` in front gives the real client end to end."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import ssl
import subprocess
import time

import pytest

from sockkit.catalog import models_where
from sockkit.protocols.proxy_header import Endpoint, format_v1, format_v2
from sockkit.testing import read_line, running, sockkit_command

CLIENT_A = Endpoint("192.0.2.7", 4242)
CLIENT_B = Endpoint("198.51.100.9", 5151)
FRONT = Endpoint("203.0.113.1", 50007)


def exchange(port: int, header: bytes, message: bytes = b"hi\n", *, pieces: int = 1) -> bytes:
    """The header in ``pieces`` separate sends (the last one with the message: the chapter's echo
    answers each chunk as it comes, so the message itself stays whole)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        step = max(1, len(header) // pieces)
        cuts = list(range(0, len(header), step))[1:]
        for start, end in zip([0, *cuts], [*cuts, len(header)], strict=True):
            sock.sendall(header[start:end] + (message if end == len(header) else b""))
            if pieces > 1:
                time.sleep(0.005)  # separate segments, so the header really arrives in pieces
        return read_line(sock)


def test_the_header_names_the_client_under_every_model(model):
    """v1 and v2, whole and cut into pieces: echoed, and logged as the header's client, not 127.0.0.1."""
    with running("echo", "--model", model, "--port", "0", "--proxy-protocol", "--workers", "2") as server:
        assert exchange(server.port, format_v2(CLIENT_A, FRONT)) == b"Echo=>hi\n"
        assert exchange(server.port, format_v1(CLIENT_B, FRONT), pieces=7) == b"Echo=>hi\n"
        server.wait_for_log(r"connected by \('192\.0\.2\.7', 4242\)")
        server.wait_for_log(r"connected by \('198\.51\.100\.9', 5151\)")
        assert not [line for line in server.lines if "connected by ('127.0.0.1'" in line]


def bad_connection(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        try:
            return sock.recv(100)
        except ConnectionResetError:
            return b""


@pytest.mark.parametrize("model", ["thread", "select", "uvloop", "fork"])
def test_no_header_a_bad_one_or_an_untrusted_peer_is_closed_and_logged(model):
    """The connection is closed without a byte of service, the server says why on stderr, and goes on."""
    for extra, data, said in [
        ((), b"hi\n", "no PROXY header: the connection starts with b'hi\\n'"),
        ((), b"PROXY TCP4 192.0.2.7 203.0.113.1 4242 99999\r\nhi\n", "not a number from 0 to 65535"),
        (("--trusted-proxy", "10.9.9.9"), format_v2(CLIENT_A, FRONT) + b"hi\n",
         "from 127.0.0.1, which is not a trusted proxy (--trusted-proxy: 10.9.9.9/32)"),
    ]:
        command = sockkit_command("serve", "echo", "--model", model, "--port", "0", "--proxy-protocol", *extra)
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = ""
            while "listening on" not in line:
                line = process.stdout.readline()
            port = int(line.rsplit(":", 1)[1])
            assert bad_connection(port, data) == b""
            assert exchange(port, format_v2(CLIENT_A, FRONT)) == (b"" if extra else b"Echo=>hi\n")
        finally:
            process.terminate()
            _, err = process.communicate(timeout=30)
        assert said in err, err


def test_a_header_not_whole_within_the_request_deadline_is_closed_and_logged(model):
    """Counted from accept: a balancer (or anyone trusted) that stalls mid-header holds a connection
    for the request deadline, no longer; the server says so and goes on."""
    command = sockkit_command("serve", "echo", "--model", model, "--port", "0", "--proxy-protocol", "--workers", "2",
                              "--request-timeout", "0.5")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        while "listening on" not in line:
            line = process.stdout.readline()
        port = int(line.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            began = time.monotonic()
            sock.sendall(b"PROXY TCP4 192.0.2.7 ")
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(100) == b""
            took = time.monotonic() - began
        assert 0.4 <= took < 5, took
        assert exchange(port, format_v2(CLIENT_A, FRONT)) == b"Echo=>hi\n"
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
    assert ("PROXY protocol connection from 127.0.0.1: no complete header within the request deadline (0.5 s); "
            "closed") in err, err


TLS_MODELS = models_where(tls=True)


def tls_exchange(port: int, cert, header: bytes, message: bytes = b"hi\n") -> bytes:
    """HAProxy's send-proxy-v2 + ssl: the header in clear, then the TLS handshake, then the request."""
    context = ssl.create_default_context(cafile=str(cert))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(header)
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            sock.sendall(message)
            return read_line(sock)


@pytest.mark.parametrize("model", TLS_MODELS)
def test_proxy_protocol_with_tls_the_header_comes_in_clear_before_the_handshake(model, certificate):
    """v2 and v1 (the v1 header and the client's hello in one segment, too): the client's answer
    comes over TLS and the log names the header's client; a bad header is refused before any TLS."""
    cert, key = certificate
    with running("echo", "--model", model, "--port", "0", "--proxy-protocol", "--workers", "2",
                 "--tls-cert", str(cert), "--tls-key", str(key)) as server:
        assert tls_exchange(server.port, cert, format_v2(CLIENT_A, FRONT)) == b"Echo=>hi\n"
        assert tls_exchange(server.port, cert, format_v1(CLIENT_B, FRONT), b"again\n") == b"Echo=>again\n"
        assert bad_connection(server.port, b"\x16\x03\x01\x00\x05hello") == b""  # a hello with no header
        server.wait_for_log(r"connected by \('192\.0\.2\.7', 4242\)")
        server.wait_for_log(r"connected by \('198\.51\.100\.9', 5151\)")
        assert not [line for line in server.lines if "connected by ('127.0.0.1'" in line]


HAPROXY = "/usr/sbin/haproxy"


@pytest.mark.skipif(not os.path.exists(HAPROXY), reason=f"{HAPROXY} is not installed (Debian package haproxy)")
@pytest.mark.parametrize("model", ["thread", "asyncio", "uvloop"])
def test_haproxy_send_proxy_v2_with_ssl_to_a_tls_server(model, certificate, tmp_path):
    """A real outside peer: Debian's HAProxy in TCP mode, ``send-proxy-v2 ssl`` to a TLS sockkit
    server (the header in clear, then HAProxy's own TLS handshake). The client, in clear to HAProxy,
    gets its echo, and the server logs the client's own port, not HAProxy's."""
    cert, key = certificate
    with running("echo", "--model", model, "--port", "0", "--proxy-protocol", "--tls-cert", str(cert),
                 "--tls-key", str(key)) as server:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            front = probe.getsockname()[1]
        config = tmp_path / "haproxy.cfg"
        config.write_text(f"""global
    maxconn 100
defaults
    mode tcp
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend echo
    bind 127.0.0.1:{front}
    default_backend servers
backend servers
    server s1 127.0.0.1:{server.port} send-proxy-v2 ssl verify required ca-file {cert} sni str(localhost)
""")
        haproxy = subprocess.Popen([HAPROXY, "-db", "-f", str(config)], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    sock = socket.create_connection(("127.0.0.1", front), timeout=10)
                    break
                except ConnectionRefusedError:
                    assert time.monotonic() < deadline and haproxy.poll() is None, "haproxy did not start"
                    time.sleep(0.05)
            with sock:
                sock.sendall(b"through haproxy\n")
                assert read_line(sock) == b"Echo=>through haproxy\n"
                mine = sock.getsockname()[1]
            server.wait_for_log(re.escape(f"connected by ('127.0.0.1', {mine})"))
        finally:
            haproxy.terminate()
            haproxy.communicate(timeout=10)


def test_proxy_protocol_needs_its_option():
    done = subprocess.run(sockkit_command("serve", "echo", "--port", "0", "--trusted-proxy", "10.0.0.1"),
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "it needs --proxy-protocol" in done.stderr


@pytest.mark.parametrize("model", ["thread", "prefork"])
def test_the_token_throttle_counts_the_headers_client(tmp_path, model):
    """12 wrong tokens from client A (10 at once, then one a second): A is throttled and the log names
    A; client B, behind the same balancer, still has its tries."""
    (tmp_path / "a.txt").write_text("a\n")
    with running("getfile", "--model", model, "--port", "0", "--root", str(tmp_path), "--token", "right",
                 "--proxy-protocol", "--workers", "2") as server:
        answers = [exchange(server.port, format_v2(CLIENT_A, FRONT), b"AUTH1 wrong\nLIST1 .\n") for _ in range(12)]
        assert "too many wrong tokens from 192.0.2.7" in answers[-1].decode()
        other = exchange(server.port, format_v2(CLIENT_B, FRONT), b"AUTH1 wrong\nLIST1 .\n").decode()
        assert "wrong token" in other and "too many" not in other
        assert exchange(server.port, format_v1(CLIENT_B, FRONT), b"AUTH1 right\nLIST1 .\n").startswith(b"OK1 ")
        server.wait_for_log(r"too many wrong tokens from 192\.0\.2\.7")


def test_sockkit_proxy_send_proxy_v2_end_to_end():
    """client -> sockkit proxy --send-proxy-v2 -> sockkit serve --proxy-protocol: the server logs the
    client's own port, not the proxy's outgoing one."""
    with running("echo", "--port", "0", "--proxy-protocol") as server:
        proxy = subprocess.Popen(sockkit_command("proxy", "127.0.0.1:0", f"127.0.0.1:{server.port}", "--send-proxy-v2",
                                                 "--quiet"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            port = int(proxy.stdout.readline().split()[3].rsplit(":", 1)[1])
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(b"through\n")
                assert read_line(sock) == b"Echo=>through\n"
                mine = sock.getsockname()[1]
            server.wait_for_log(re.escape(f"connected by ('127.0.0.1', {mine})"))
        finally:
            proxy.terminate()
            proxy.communicate(timeout=30)
