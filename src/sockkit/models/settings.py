"""What every model is handed: the service, the bound listeners and the limits."""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

from sockkit.lifecycle import DEFAULT_DRAIN_SECONDS, Log, StopSignal
from sockkit.services.actions import Peer, Preface, Service

#: Bytes asked of the kernel per recv: large enough that a bulk upload is a few syscalls,
#: small enough that one read per client cannot balloon memory.
RECV_SIZE = 256 * 1024
#: Most bytes asked of one ``os.sendfile`` call (Linux sends at most 2 GiB - 4 KiB per call anyway).
SENDFILE_MAX = 1 << 30
#: A connection that sends nothing for this long is closed (nginx's keepalive/client timeouts
#: are of this order); a slow request (``--delay``) never counts as idle.
DEFAULT_IDLE_SECONDS = 300.0
#: Longest a client may take to send one whole request once it has started it (nginx's
#: client_header_timeout, rsync's handshake deadline): an absolute deadline, not an idle gap.
DEFAULT_REQUEST_SECONDS = 30.0
#: While a file is being sent, the least a client must take, in bytes per second averaged over each
#: window of ``DEFAULT_RATE_WINDOW`` seconds (20 KiB per 20 s), or it is cut (IIS and Kestrel's
#: minimum response data rate is 240 bytes/s, Apache's request body rate 500 bytes/s). Slower than
#: a 9,600-baud modem: no real link is cut, while a client that sips a file to hold its transfer
#: slot must at least keep paying for it; a whole 20 s with no byte taken is the same cut.
DEFAULT_MIN_RATE = 1024
#: The minimum rate's window: long enough to ride out a stall of a real link (a Wi-Fi roam, a
#: retransmission back-off of several seconds), short next to the 300 s idle timeout.
DEFAULT_RATE_WINDOW = 20.0
#: Most simultaneous clients; past it a client gets the service's busy reply and is closed.
DEFAULT_MAX_CONNECTIONS = 1024


@dataclass
class Limits:
    idle_timeout: float = DEFAULT_IDLE_SECONDS
    request_timeout: float = DEFAULT_REQUEST_SECONDS
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    #: Bytes per second a file transfer must move, over each ``rate_window``; 0: no minimum.
    min_rate: int = DEFAULT_MIN_RATE
    rate_window: float = DEFAULT_RATE_WINDOW
    drain_seconds: float = DEFAULT_DRAIN_SECONDS
    workers: int = field(default_factory=lambda: os.cpu_count() or 2)
    #: socketserver model: ForkingTCPServer instead of ThreadingTCPServer.
    fork: bool = False
    #: Server-side TLS (``--tls-cert``/``--tls-key``); None: plain TCP.
    tls: ssl.SSLContext | None = None


@dataclass
class Server:
    service: Service
    listeners: list[socket.socket]
    limits: Limits
    log: Log
    stop: StopSignal
    #: The process serving; forked children check it is still their parent (see die_with_parent).
    pid: int = field(default_factory=os.getpid)
    #: Makes each connection's stage before the service (e.g. a PROXY protocol header reader) from the
    #: accepted TCP peer, or raises ValueError to refuse that peer; None: the service starts at accept.
    preface: Callable[[Peer], Preface] | None = None
