"""Opening client connections, with failures turned into one line a person can act on."""

from __future__ import annotations

import errno
import socket

from sockkit.ports import MAX_PORT


class ConnectFailed(ConnectionError):
    """The connection could not be made; ``str()`` says why and what to try."""


def explain(exc: BaseException, host: str, port: int) -> str:
    where = f"{host}:{port}"
    if isinstance(exc, socket.gaierror):
        return f"cannot connect to {where}: unknown host {host!r}"
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"cannot connect to {where}: timed out (no answer; is a firewall dropping it?)"
    if isinstance(exc, ConnectionRefusedError):
        return f"cannot connect to {where}: connection refused (is the server running on that port?)"
    if isinstance(exc, OSError) and exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return f"cannot connect to {where}: {'network' if exc.errno == errno.ENETUNREACH else 'host'} unreachable"
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot connect to {where}: {exc.strerror.lower()}"
    return f"cannot connect to {where}: {exc}"


def connect(host: str, port: int, timeout: float | None = 10.0) -> socket.socket:
    """A connected TCP socket (IPv4 or IPv6, whichever the name resolves to first that works)."""
    # An ASCII name goes as bytes: a str is run through the IDNA codec, whose import (with
    # stringprep) is ~1.5 ms of a client's start-up; for ASCII it changes nothing.
    name = host.encode("ascii") if host.isascii() else host
    if not 0 < port <= MAX_PORT:  # the resolver would wrap it (65537 is port 1)
        raise ConnectFailed(f"cannot connect to {host}:{port}: a port is a number from 1 to {MAX_PORT}")
    try:
        sock = socket.create_connection((name, port), timeout=timeout)
    except OSError as exc:
        raise ConnectFailed(explain(exc, host, port)) from exc
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock
