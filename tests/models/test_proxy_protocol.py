"""``sockkit serve --proxy-protocol`` under every model: the PROXY header (v1 and v2, however it is
split) names the client in the log line and to the service; no header, a bad one, or one from an
untrusted address closes the connection and says so; getfile's per-address token throttle counts
the header's client; ``sockkit proxy --send-proxy-v2`` in front gives the real client end to end."""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import time

import pytest

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


def test_proxy_protocol_with_tls_is_refused_clearly(certificate):
    cert, key = certificate
    done = subprocess.run(sockkit_command("serve", "echo", "--port", "0", "--proxy-protocol", "--tls-cert", str(cert),
                                          "--tls-key", str(key)), capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "--proxy-protocol with TLS is not supported" in done.stderr
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
