"""The stop race, made deterministic: a connection the server accepted before its SIGTERM but whose
first bytes it has not read yet is not "between requests" (engine rule 6). It gets a grace to speak,
is served, then sees the server's FIN; one that stays silent is closed once the grace is over."""

from __future__ import annotations

import re
import socket
import time

from sockkit.models.engine import STOP_GRACE_SECONDS
from sockkit.protocols.proxy_header import Endpoint, format_v2
from sockkit.testing import read_line, running


def test_a_connection_accepted_before_the_stop_speaks_after_it_and_is_served(model):
    with running("echo", "--model", model, "--port", "0", "--quiet", "--workers", "2",
                 "--drain-timeout", "30") as server:
        fresh = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        silent = socket.create_connection(("127.0.0.1", server.port), timeout=10) if model != "sequential" else None
        time.sleep(0.3)  # both accepted (sequential: the first), not a byte sent
        server.note_children()
        began = time.monotonic()
        server.proc.send_signal(15)
        time.sleep(0.2)  # the stop has begun
        fresh.sendall(b"late words\n")
        assert read_line(fresh) == b"Echo=>late words\n"
        assert fresh.recv(100) == b""  # then the server's goodbye
        if silent is not None:
            silent.settimeout(10)
            assert silent.recv(100) == b""  # the grace is over: closed, long before the drain deadline
        assert server.proc.wait(15) == 0
        assert time.monotonic() - began < STOP_GRACE_SECONDS + 5
        fresh.close()
        if silent is not None:
            silent.close()


def test_a_proxy_header_and_request_after_the_stop_are_served(model):
    """Through a balancer: its connect was accepted, then the stop; the header and the request follow."""
    with running("echo", "--model", model, "--port", "0", "--workers", "2", "--proxy-protocol") as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            time.sleep(0.3)
            server.note_children()
            server.proc.send_signal(15)
            time.sleep(0.2)
            sock.sendall(format_v2(Endpoint("192.0.2.7", 4242), Endpoint("203.0.113.1", 50007)))
            time.sleep(0.05)  # the request in a segment of its own
            sock.sendall(b"hi\n")
            assert read_line(sock) == b"Echo=>hi\n"
        assert server.proc.wait(15) == 0
        assert any(re.search(r"connected by \('192\.0\.2\.7', 4242\)", line) for line in server.lines)
