"""``--proxy-protocol``: the stage before the service that reads a balancer's PROXY header and names
the real client (HAProxy's ``accept-proxy``).

Rule: the header is believed only from ``--trusted-proxy`` addresses. A connection from anywhere
else is refused at accept, before a byte is read: were its header believed, anyone could choose the
address the server logs, limits and throttles. Rule: every connection on such a server must start
with a valid header (the spec forbids guessing whether one is there); one that does not, or that
closes or stalls before its header is whole, is closed and logged -- at most one line a second,
with a count of the others, so that a flood of bad connections cannot flood the log. Pure: no
sockets; the clock is passed in (the model holds the header to the request deadline).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sockkit.lifecycle import Log
from sockkit.protocols.proxy_header import Command, HeaderReader, ProxyHeaderError
from sockkit.services.actions import CLOSE, Peer, as_actions

#: Trusted when ``--proxy-protocol`` is given with no ``--trusted-proxy``: only this machine.
LOOPBACK = ("127.0.0.0/8", "::1/128")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_network(text: str) -> Network:
    """``10.0.0.7``, ``10.0.0.0/24`` or ``fd00::/8``; ValueError with what was wrong."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(f"{text!r} is not an address or a network (ADDR or ADDR/PREFIX, e.g. 10.0.0.0/24)") from None


@dataclass(frozen=True)
class TrustedProxies:
    """The addresses whose PROXY headers are believed."""

    networks: tuple[Network, ...]

    @classmethod
    def parse(cls, texts: Iterable[str] | None) -> TrustedProxies:
        texts = list(texts or LOOPBACK)
        return cls(tuple(parse_network(text) for text in texts))

    def trusts(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # a dual-stack listener sees IPv4 balancers as ::ffff:a.b.c.d
        return any(address in network for network in self.networks)

    def describe(self) -> str:
        return ", ".join(str(network) for network in self.networks)


class NotTrusted(ValueError):
    """A PROXY-protocol connection from an address that is not a trusted proxy."""


class ProxyPreface:
    """One connection's PROXY header (v1 or v2): ``feed`` as the engine's ``Preface``."""

    __slots__ = ("peer", "reader")

    def __init__(self, trusted: TrustedProxies, peer: Peer) -> None:
        if not trusted.trusts(peer.host):
            raise NotTrusted(f"PROXY protocol connection from {peer.host}, which is not a trusted proxy "
                             f"(--trusted-proxy: {trusted.describe()}); closed")
        self.peer = peer
        self.reader = HeaderReader()

    def feed(self, data: bytes) -> tuple[Peer, bytes] | None:
        """None until the header is whole; then the client (the balancer itself for a LOCAL header
        or one naming no TCP/IP address) and the bytes after the header. ValueError refuses."""
        try:
            parsed = self.reader.receive(data)
        except ProxyHeaderError as exc:
            raise ValueError(f"PROXY protocol connection from {self.peer.host}: {exc}") from None
        if parsed is None:
            return None
        source = parsed.header.source
        if parsed.header.command is Command.LOCAL or source is None:
            return self.peer, parsed.rest
        return Peer(source.host, source.port), parsed.rest


def preface_factory(trusted: TrustedProxies):
    """What ``Server.preface`` holds: a new ``ProxyPreface`` per accepted connection."""
    def make(peer: Peer) -> ProxyPreface:
        return ProxyPreface(trusted, peer)

    return make


#: Refusals are logged at most once per this many seconds; the line after a quiet spell counts the rest.
REFUSAL_LOG_SECONDS = 1.0


class RefusalLog:
    """Refusal lines, at most one a second (as accept errors are), with the count of those not shown."""

    def __init__(self, log, clock: Callable[[], float]) -> None:
        self.log = log
        self.clock = clock
        self.last = float("-inf")
        self.suppressed = 0

    def __call__(self, text: str) -> None:
        now = self.clock()
        if now - self.last < REFUSAL_LOG_SECONDS:
            self.suppressed += 1
            return
        more = f" ({self.suppressed} more refused since the last line)" if self.suppressed else ""
        self.last, self.suppressed = now, 0
        self.log.error(text + more)


class ProxiedService:
    """Any service behind ``--proxy-protocol``: each connection reads the PROXY header first, then
    the wrapped service starts with the client the header names.

    A service wrapper, so it runs under every model as they are: the model's own line per client
    is silenced (``HeaderLog``) and this stage says it once the header names the client; the model
    holds an unfinished header to the request deadline (``pending_request``). The connection
    engine's preface hook is the same stage, run by the engine instead of a wrapper.
    """

    def __init__(self, service, trusted: TrustedProxies, log, clock: Callable[[], float]) -> None:
        self.service = service
        self.trusted = trusted
        self.log = log
        self.refused = RefusalLog(log, clock)
        self.name = service.name

    def busy_reply(self) -> bytes:
        return self.service.busy_reply()

    def connect(self, peer: Peer):
        try:
            preface = ProxyPreface(self.trusted, peer)
        except NotTrusted as exc:
            self.refused(str(exc))
            return Refused()
        return ProxiedConnection(self, preface)


class Refused:
    """A connection closed at once (from an address that may not send PROXY headers)."""

    def start(self) -> list:
        return [CLOSE]

    def receive(self, data: bytes) -> list:
        return [CLOSE]

    def close(self) -> None:
        pass


class ProxiedConnection:
    __slots__ = ("inner", "preface", "proxied", "said", "started")

    def __init__(self, proxied: ProxiedService, preface: ProxyPreface) -> None:
        self.proxied = proxied
        self.preface = preface
        self.inner = None
        self.started = False
        #: Its end before a header was logged already.
        self.said = False

    def _refuse(self, why: str) -> list:
        self.said = True
        self.proxied.refused(f"PROXY protocol connection from {self.preface.peer.host}: {why}; closed")
        return [CLOSE]

    def start(self) -> list:
        return []

    def receive(self, data: bytes):
        inner = self.inner
        if inner is not None:
            return inner.receive(data)
        proxied = self.proxied
        if not data:
            return self._refuse("it closed before a complete PROXY header")
        self.started = True
        try:
            done = self.preface.feed(data)
        except ValueError as exc:
            self.said = True
            proxied.refused(f"{exc}; closed")
            return [CLOSE]
        if done is None:
            return []
        peer, rest = done
        proxied.log.connected(peer)
        self.inner = inner = proxied.service.connect(peer)
        actions = as_actions(inner.start())
        if rest:
            actions = [*actions, *as_actions(inner.receive(rest))]
        return actions

    def pending_request(self) -> bool:
        inner = self.inner
        if inner is None:
            return self.started  # part of a header: due within the request deadline
        pending = getattr(inner, "pending_request", None)
        return bool(pending and pending())

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()
        elif not self.said:  # the model ended it: a deadline, a reset, the server stopping
            self._refuse("no complete PROXY header before the connection ended (deadline, reset or stop)")


class HeaderLog(Log):
    """The model's log with its line per accepted connection silenced: under ``--proxy-protocol``
    that line would name the balancer; ``ProxiedConnection`` says it once the header names the client."""

    def connected(self, peer: Peer) -> None:
        pass
