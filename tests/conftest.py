"""Shared test machinery: real servers as subprocesses on loopback, found by the line they print.

No fixed ports and no sleeps to synchronise: a server is started with ``--port 0`` and is ready
when it prints ``listening on HOST:PORT``; at the end it gets SIGTERM and must exit 0 with no
process of its left behind.
"""

from __future__ import annotations

import shutil
import socket
import subprocess

import pytest

from sockkit.catalog import MODELS, models_where
from sockkit.testing import (  # noqa: F401  (re-exported for the tests)
    RunningServer,
    alive,
    descendants,
    running,
    sockkit_command,
    start_server,
    zombies_of,
)

#: Every model of the registry, and those serving clients at once (the registry's traits decide).
ALL_MODELS = list(MODELS)
PARALLEL_MODELS = models_where(concurrent=True)


def worker_options(model: str, threads: int, processes: int = 1) -> list[str]:
    """``--workers`` for the models that take it: ``threads`` where each worker thread holds one
    client (pool), ``processes`` where each worker process serves many (prefork); else nothing."""
    kind = MODELS[model].workers
    return ["--workers", str(threads if kind == "threads" else processes)] if kind else []


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


@pytest.fixture(scope="session")
def certificate(tmp_path_factory):
    """A self-signed P-256 certificate for 127.0.0.1 and localhost, made by the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl command not installed (Debian package openssl)")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key
