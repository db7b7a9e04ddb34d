"""Bind first, serve second: every model gets listeners opened here, once.

Rule: a model never calls ``bind``; it is handed ready listening sockets. That is what lets one
place own IPv4/IPv6, several ports, ``--port 0`` and ``SO_REUSEPORT`` for every model alike.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
from collections.abc import Iterable

from sockkit.ports import parse_port

#: Pending connections the kernel queues per listener. The chapter's 5 drops clients in a burst
#: (200 simultaneous connects: 167 timed out on this machine); the kernel caps it at somaxconn.
BACKLOG = 1024
LOOPBACK = "127.0.0.1"


class BindError(OSError):
    """A listener could not be opened; the message says why and what to do."""


def family_for(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def open_listener(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``''`` or ``0.0.0.0``: all IPv4; ``::``: all).
    ValueError for a port out of range (never wrapped by the resolver)."""
    parse_port(port, listen=True)
    try:
        infos = socket.getaddrinfo(host or None, port, family_for(host) if host else socket.AF_INET,
                                   socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise BindError(exc.errno, f"cannot listen on {host!r}: unknown host ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        # SO_REUSEADDR: a restarted server binds at once instead of waiting out TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6 and host in ("::", ""):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise BindError(exc.errno, describe_bind_error(exc, host, port)) from None
    return sock


def describe_bind_error(exc: OSError, host: str, port: int) -> str:
    where = f"{host or '*'}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return f"cannot listen on {where}: port {port} is already in use (stop the other server or pick another --port)"
    if exc.errno == errno.EACCES:
        return f"cannot listen on {where}: permission denied (ports below 1024 are reserved; use a port above 1023)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {where}: address not available on this machine"
    return f"cannot listen on {where}: {exc.strerror or exc}"


def open_listeners(host: str, ports: Iterable[int], *, reuse_port: bool = False) -> list[socket.socket]:
    """One listener per port; all or none (a failure closes the ones already opened)."""
    opened: list[socket.socket] = []
    try:
        for port in ports:
            opened.append(open_listener(host, port, reuse_port=reuse_port))
    except BaseException:
        for sock in opened:
            sock.close()
        raise
    return opened


def address_text(sock: socket.socket) -> str:
    """``HOST:PORT`` (``[HOST]:PORT`` for IPv6) that a client can connect to."""
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_loopback(host: str) -> bool:
    """Only this machine can reach ``host``: ``localhost`` or a loopback address (127/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # '' and names other than localhost may reach other machines


def split_host_port(text: str, default_port: int, *, listen: bool = False) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]:port`` or ``v6`` -> (host, port); ValueError for a port out
    of range (``parse_port``: 0 allowed only where ``listen``) or not a number."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, parse_port(rest[1:], listen=listen) if rest.startswith(":") else default_port
    if text.count(":") == 1:
        host, port = text.split(":")
        return host or "localhost", parse_port(port, listen=listen)
    return text, default_port


def tune_accepted(sock: socket.socket) -> None:
    """Per-connection options: no Nagle, so latency figures do not measure delayed-ACK stalls."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
