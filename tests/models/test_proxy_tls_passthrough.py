"""``--proxy-protocol`` with TLS behind a real HAProxy passing the client's own TLS through (TCP mode,
``send-proxy-v2``, no ``ssl`` on the server line): HAProxy writes the header in clear, then relays the
client's hello untouched, so the server must take the header and not one byte more before its
handshake. A ``sockkit get --cafile`` of a getfile file through it, under every model that carries
TLS: the file identical, and the server names the client's own port (HAProxy's log), not HAProxy's."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time

import pytest

from sockkit.catalog import models_where
from sockkit.testing import running, sockkit_command

HAPROXY = "/usr/sbin/haproxy"
#: Many TLS records and, under the blocking models, several of their 256 KiB file chunks.
FILE_BYTES = 3 * 1024 * 1024 + 12345


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
        finally:
            haproxy.terminate()
            log, _ = haproxy.communicate(timeout=10)
        assert got.returncode == 0, got.stderr
        assert (out / "big.bin").read_bytes() == data
        # The fetch is the last connection HAProxy logged (the first, the readiness probe, sent nothing).
        ports = re.findall(r"^127\.0\.0\.1:(\d+) \[.*\] getfile servers/g1 .* (\d+) -- ", log, re.MULTILINE)
        fetched = [port for port, sent in ports if int(sent) > FILE_BYTES]
        assert len(fetched) == 1, log
        server.wait_for_log(re.escape(f"connected by ('127.0.0.1', {fetched[0]})"))
