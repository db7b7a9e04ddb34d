"""Shared test machinery: real servers as subprocesses on loopback, found by the line they print.

No fixed ports and no sleeps to synchronise: a server is started with ``--port 0`` and is ready
when it prints ``listening on HOST:PORT``; at the end it gets SIGTERM and must exit 0 with no
process of its left behind.
"""

from __future__ import annotations

import socket

import pytest

from sockkit.testing import (  # noqa: F401  (re-exported for the tests)
    RunningServer,
    alive,
    descendants,
    running,
    sockkit_command,
    start_server,
    zombies_of,
)

ALL_MODELS = ["sequential", "fork", "fork-signal", "thread", "socketserver", "pool", "select", "asyncio", "uvloop",
              "prefork"]
PARALLEL_MODELS = [m for m in ALL_MODELS if m != "sequential"]


def exchange_line(port: int, message: bytes, host: str = "127.0.0.1", timeout: float = 10.0) -> bytes:
    """One connection, one line out, the whole reply line back."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(message + b"\n")
        return read_line(sock)


def read_line(sock: socket.socket) -> bytes:
    data = bytearray()
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return bytes(data)


def ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.fixture(params=ALL_MODELS)
def model(request) -> str:
    return request.param
