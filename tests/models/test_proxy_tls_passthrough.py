"""``--proxy-protocol`` with TLS behind a real HAProxy passing the client's own TLS through (TCP mode,
``send-proxy-v2``, no ``ssl`` on the server line): HAProxy writes the header in clear, then relays the
client's hello untouched, so the server must take the header and not one byte more before its
handshake. A ``sockkit get --cafile`` of a getfile file through it, under every model that carries
TLS: the file identical, and the server names the client's own port (HAProxy's log), not HAProxy's.
Whether HAProxy's header and the hello share a segment is up to timing, so a client that sends them
in one ``send`` checks, under every such model, that the server never takes a byte of the hello."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import ssl
import subprocess
import threading
import time

import pytest

from sockkit.catalog import models_where
from sockkit.protocols.proxy_header import Endpoint, format_v1, format_v2
from sockkit.testing import running, sockkit_command

HAPROXY = "/usr/sbin/haproxy"
#: Many TLS records and, under the blocking models, several of their 256 KiB file chunks.
FILE_BYTES = 3 * 1024 * 1024 + 12345


def one_segment_echo(port: int, cert, header: bytes, message: bytes) -> bytes:
    """The header and the client's TLS hello in one ``send`` (so in one segment, read by the server's
    first read), then the handshake and one echoed line, over memory BIOs."""
    tls = ssl.create_default_context(cafile=str(cert)).wrap_bio(incoming := ssl.MemoryBIO(),
                                                                outgoing := ssl.MemoryBIO(),
                                                                server_hostname="127.0.0.1")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:

        def more() -> None:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("the server closed during the handshake")
            incoming.write(data)

        with contextlib.suppress(ssl.SSLWantReadError):
            tls.do_handshake()
        sock.sendall(header + outgoing.read())
        for _ in range(20):  # bounded: a TLS 1.3 handshake is one round trip
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                if outgoing.pending:
                    sock.sendall(outgoing.read())
                more()
        tls.write(message)
        sock.sendall(outgoing.read())
        reply = b""
        for _ in range(20):  # session tickets may come first
            try:
                reply += tls.read(4096)
            except ssl.SSLWantReadError:
                more()
            if reply.endswith(b"\n"):
                break
        return reply


@pytest.mark.parametrize("model", models_where(tls=True))
def test_a_header_and_a_hello_in_one_segment(model, certificate):
    cert, key = certificate
    client, front = Endpoint("192.0.2.7", 4242), Endpoint("203.0.113.1", 1)
    with running("echo", "--model", model, "--port", "0", "--proxy-protocol", "--workers", "2",
                 "--tls-cert", str(cert), "--tls-key", str(key)) as server:
        assert one_segment_echo(server.port, cert, format_v2(client, front), b"v2\n") == b"Echo=>v2\n"
        assert one_segment_echo(server.port, cert, format_v1(client, front), b"v1\n") == b"Echo=>v1\n"
        server.wait_for_log(r"connected by \('192\.0\.2\.7', 4242\)")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def haproxy_config(front: int, server_port: int) -> str:
    return f"""global
    maxconn 100
    log stdout format raw local0
defaults
    mode tcp
    log global
    option tcplog
    timeout connect 2s
    timeout client 20s
    timeout server 20s
frontend getfile
    bind 127.0.0.1:{front}
    default_backend servers
backend servers
    server g1 127.0.0.1:{server_port} send-proxy-v2
"""


def fetches(log: str) -> list[str]:
    """The client ports of HAProxy's log lines for connections that carried the file."""
    ports = re.findall(r"^127\.0\.0\.1:(\d+) \[.*\] getfile servers/g1 .* (\d+) -- ", log, re.MULTILINE)
    return [port for port, sent in ports if int(sent) > FILE_BYTES]


@pytest.mark.skipif(not os.path.exists(HAPROXY), reason=f"{HAPROXY} is not installed (Debian package haproxy)")
@pytest.mark.parametrize("model", models_where(tls=True))
def test_sockkit_get_through_haproxy_tls_passthrough(model, certificate, tmp_path):
    cert, key = certificate
    root, out = tmp_path / "root", tmp_path / "out"
    root.mkdir()
    out.mkdir()
    data = os.urandom(FILE_BYTES)
    (root / "big.bin").write_bytes(data)
    with running("getfile", "--model", model, "--port", "0", "--root", str(root), "--workers", "2",
                 "--proxy-protocol", "--tls-cert", str(cert), "--tls-key", str(key)) as server:
        front = free_port()
        config = tmp_path / "haproxy.cfg"
        config.write_text(haproxy_config(front, server.port))
        haproxy = subprocess.Popen([HAPROXY, "-db", "-f", str(config)], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: [lines.append(line) for line in haproxy.stdout], daemon=True)
        reader.start()
        try:
            deadline = time.monotonic() + 10
            while True:  # until HAProxy listens
                try:
                    socket.create_connection(("127.0.0.1", front), timeout=5).close()
                    break
                except ConnectionRefusedError:
                    assert time.monotonic() < deadline and haproxy.poll() is None, "haproxy did not start"
                    time.sleep(0.05)
            got = subprocess.run(sockkit_command("get", "--cafile", str(cert), "--host", "127.0.0.1", "--port",
                                                 str(front), "--progress", "none", "-o", str(out), "big.bin"),
                                 capture_output=True, text=True, timeout=60)
            # HAProxy logs a connection once both sides are closed: wait for the fetch's line before
            # stopping it (it was lost now and then under pool when HAProxy was stopped at once).
            deadline = time.monotonic() + 10
            while not fetches("".join(lines)) and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            haproxy.terminate()
            haproxy.wait(timeout=10)
            reader.join(5)
            log = "".join(lines)
        assert got.returncode == 0, got.stderr
        assert (out / "big.bin").read_bytes() == data
        # The fetch is the last connection HAProxy logged (the first, the readiness probe, sent nothing).
        fetched = fetches(log)
        assert len(fetched) == 1, log
        server.wait_for_log(re.escape(f"connected by ('127.0.0.1', {fetched[0]})"))
