"""``--proxy-protocol``: the stage before the service that reads a balancer's PROXY header and names
the real client (HAProxy's ``accept-proxy``) -- the connection engine's preface (engine rule 7).

Rule: the header is believed only from ``--trusted-proxy`` addresses. A connection from anywhere
else is refused at accept, before a byte is read: were its header believed, anyone could choose the
address the server logs, limits and throttles. Rule: every connection on such a server must start
with a valid header (the spec forbids guessing whether one is there); one that does not, or that
closes or stalls before its header is whole, is closed and logged by the engine (``Log.refused``:
at most one line a second, with a count of the others). Pure: no sockets, no clock.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sockkit.protocols.proxy_header import Command, HeaderReader, ProxyHeaderError
from sockkit.services.actions import Peer

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
    #: What the engine's log lines call it ("PROXY protocol connection from ...: ...").
    name = "PROXY protocol"

    def __init__(self, trusted: TrustedProxies, peer: Peer) -> None:
        if not trusted.trusts(peer.host):
            raise NotTrusted(f"PROXY protocol connection from {peer.host}, which is not a trusted proxy "
                             f"(--trusted-proxy: {trusted.describe()})")
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


def preface_factory(trusted: TrustedProxies) -> Callable[[Peer], ProxyPreface]:
    """What ``Server.preface`` holds: a new ``ProxyPreface`` per accepted connection, given the TCP
    peer (``NotTrusted``, a ValueError, refuses it before a byte is read)."""
    def make(peer: Peer) -> ProxyPreface:
        return ProxyPreface(trusted, peer)

    return make
