"""TLS scenarios from issue 16 (hostile clients): handshakes that never come.

Each runs a real ``sockkit serve echo`` with a certificate made by openssl, under every model that
carries TLS, and plays the attacker with raw sockets.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

from reliability.model_scenarios import PREFORK_WORKERS, WORKER_PROCESSES
from reliability.probes import snapshot, tree
from reliability.suite import Row, Scale, scenario, skip
from sockkit.catalog import MODELS, models_where
from sockkit.testing import descendants, read_line, running

TLS_MODELS = models_where(tls=True)
FORK_PER_CLIENT = {name for name, model in MODELS.items() if model.fork_per_client}
#: The server's --max-connections in the flood.
LIMIT = 16


@contextlib.contextmanager
def _certificate():
    """(cert, key): a self-signed P-256 certificate for 127.0.0.1 (None without openssl)."""
    folder = Path(tempfile.mkdtemp(prefix="sockkit-rel-tls-"))
    cert, key = folder / "cert.pem", folder / "key.pem"
    try:
        made = shutil.which("openssl") and subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days",
             "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out",
             str(cert)], capture_output=True).returncode == 0
        yield (cert, key) if made else None
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _silent(port: int) -> socket.socket:
    """A TCP connection that never says hello (non-blocking connect: the backlog may be full)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    code = sock.connect_ex(("127.0.0.1", port))
    if code not in (0, errno.EINPROGRESS):
        sock.close()
        raise OSError(code, "connect failed")
    return sock


def _sockets(server) -> int:
    """Distinct sockets open in the server's process tree (a forked child's inherited listener
    counts once): the connections it holds, plus its listeners."""
    inodes = set()
    for pid in tree(server):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:"):
                        inodes.add(target)
    return len(inodes)


def _canary(port: int, cert: Path, seconds: float) -> float | None:
    """Seconds until a TLS echo is answered on a fresh connection (None: not within ``seconds``)."""
    context = ssl.create_default_context(cafile=str(cert))
    began = time.monotonic()
    while time.monotonic() - began < seconds:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=2) as raw, \
                context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            sock.sendall(b"canary\n")
            if read_line(sock) == b"Echo=>canary\n":
                return time.monotonic() - began
        time.sleep(0.1)
    return None


@scenario("tls-handshake-flood", f"500 TCP connections (long: 2,000) to a TLS echo server with --max-connections "
          f"{LIMIT} never say hello: the server holds at most {LIMIT} of them (+4 being told busy inside TLS) in "
          "sockets and < 32 MiB (a process per client: 64); handshakes not done within the request deadline (2 s) "
          "are closed and a TLS canary is served", TLS_MODELS)
def tls_handshake_flood(model: str, scale: Scale) -> Row:
    if model == "sequential":
        return skip("tls-handshake-flood", model, "one client at a time: the rest wait in the kernel's backlog")
    count = scale.pick(500, 2000)
    socks: list[socket.socket] = []
    with _certificate() as made:
        if made is None:
            return skip("tls-handshake-flood", model, "openssl command not installed")
        cert, key = made
        workers = ["--workers", str(LIMIT)] if model == "pool" else []
        with running("echo", "--model", model, "--port", "0", "--quiet", "--tls-cert", str(cert), "--tls-key",
                     str(key), "--max-connections", str(LIMIT), "--request-timeout", "2", *workers) as server:
            if model in WORKER_PROCESSES:  # every worker up (forking them costs descriptors of their own)
                deadline = time.monotonic() + 10
                while len(descendants(server.pid)) < PREFORK_WORKERS and time.monotonic() < deadline:
                    time.sleep(0.05)
                time.sleep(0.3)
            before = {**snapshot(server), "sockets": _sockets(server)}
            peak = dict(before)
            try:
                for _ in range(count):
                    socks.append(_silent(server.port))
                for _ in range(8):  # 1.2 s, within the request deadline: every handshake still pending
                    time.sleep(0.15)
                    now = {**snapshot(server), "sockets": _sockets(server)}
                    peak = {key: max(now[key], peak[key]) for key in ("fds", "pss", "sockets")}
                waited = _canary(server.port, cert, 8.0)
            finally:
                while socks:
                    socks.pop().close()
    held, fds, pss = (peak[key] - before[key] for key in ("sockets", "fds", "pss"))
    # prefork: the limit is per worker process (nginx's worker_connections).
    per = PREFORK_WORKERS if model in WORKER_PROCESSES else 1
    allowed = per * (LIMIT + 4) + 8  # (+ refusals closing)
    memory = 64 if model in FORK_PER_CLIENT else 32  # a process per client: ~2 MiB each of its own
    ok = held <= allowed and pss < memory and waited is not None
    canary = f"canary served after {waited:.1f} s" if waited is not None else "canary NOT served in 8 s"
    return Row("tls-handshake-flood", model, f"{count} silent connections: sockets held +{held} (allowed "
                                             f"{allowed}), fds +{fds}, PSS +{pss:.1f} MiB; {canary}", ok)


def _hello_then_silence(port: int, context: ssl.SSLContext) -> tuple[socket.socket, bool]:
    """A client past the limit that finishes its TLS hello (if the server does one) and then neither
    reads nor closes: (its socket, whether the handshake was done)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock = context.wrap_socket(raw, server_hostname="127.0.0.1", do_handshake_on_connect=False)
    try:
        sock.do_handshake()
    except (OSError, ssl.SSLError):
        return sock, False  # told busy in plain text
    return sock, True


@scenario("tls-refused-silent", "past --max-connections 1 (one TLS client holds it), 300 TLS clients (long: 2,000) "
          "one after another finish their hello and then neither read nor close: the server holds at most 4 of "
          "them (the refusals inside TLS, each closed within REFUSE_SECONDS + 1 s; per worker under prefork), the "
          "rest are told busy in plain text; once the place is free a TLS canary is served", TLS_MODELS)
def tls_refused_silent(model: str, scale: Scale) -> Row:
    if not MODELS[model].concurrent:
        return skip("tls-refused-silent", model, "one client at a time: nobody is refused (they wait in the backlog)")
    count = scale.pick(300, 2000)
    socks: list[socket.socket] = []
    with _certificate() as made:
        if made is None:
            return skip("tls-refused-silent", model, "openssl command not installed")
        cert, key = made
        context = ssl.create_default_context(cafile=str(cert))
        workers = ["--workers", "1"] if MODELS[model].workers else []
        with running("echo", "--model", model, "--port", "0", "--quiet", "--tls-cert", str(cert), "--tls-key",
                     str(key), "--max-connections", "1", "--request-timeout", "5", *workers) as server:
            if model in WORKER_PROCESSES:
                deadline = time.monotonic() + 10
                while len(descendants(server.pid)) < 1 and time.monotonic() < deadline:
                    time.sleep(0.05)
                time.sleep(0.3)
            raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            first = context.wrap_socket(raw, server_hostname="127.0.0.1")
            socks.append(first)
            first.sendall(b"hi\n")
            holding = read_line(first) == b"Echo=>hi\n"
            before = _sockets(server)
            peak, handshaken = before, 0
            try:
                for turn in range(count):
                    sock, done = _hello_then_silence(server.port, context)
                    socks.append(sock)
                    handshaken += done
                    if turn % 25 == 0:
                        peak = max(peak, _sockets(server))
                time.sleep(0.5)
                peak = max(peak, _sockets(server))
                first.close()
                waited = _canary(server.port, cert, 8.0)
            finally:
                while socks:
                    socks.pop().close()
    held = peak - before
    allowed = 4 + 2  # TLS_REFUSERS (+ refusals closing)
    ok = holding and held <= allowed and waited is not None
    canary = f"canary served after {waited:.1f} s" if waited is not None else "canary NOT served in 8 s"
    return Row("tls-refused-silent", model, f"{count} refused clients, {handshaken} given a TLS hello: sockets held "
                                            f"+{held} (allowed {allowed}); {canary}", ok)
