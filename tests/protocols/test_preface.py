"""The --proxy-protocol stage, without sockets: who is trusted, what a header makes of the peer,
and what is refused."""

from __future__ import annotations

import pytest

from sockkit.lifecycle import RefusalLog
from sockkit.preface import NotTrusted, ProxyPreface, TrustedProxies, parse_network, preface_factory
from sockkit.protocols.proxy_header import Endpoint, format_v1, format_v2
from sockkit.services.actions import Peer

BALANCER = Peer("10.0.0.10", 40000)


def test_trusted_networks():
    trusted = TrustedProxies.parse(["10.0.0.0/24", "fd00::1"])
    assert trusted.trusts("10.0.0.10") and trusted.trusts("fd00::1") and trusted.trusts("::ffff:10.0.0.7")
    assert not trusted.trusts("10.0.1.10") and not trusted.trusts("fd00::2") and not trusted.trusts("not-an-ip")
    assert TrustedProxies.parse(None).trusts("127.0.0.1") and TrustedProxies.parse([]).trusts("::1")
    assert not TrustedProxies.parse(None).trusts("10.0.0.10")
    with pytest.raises(ValueError, match="not an address or a network"):
        parse_network("10.0.0.0/33")


def test_the_header_names_the_client():
    for header in (format_v1(Endpoint("192.0.2.7", 5555), Endpoint("10.0.0.10", 50007)),
                   format_v2(Endpoint("192.0.2.7", 5555), Endpoint("10.0.0.10", 50007))):
        preface = ProxyPreface(TrustedProxies.parse(["10.0.0.10"]), BALANCER)
        assert preface.feed(header[:10]) is None
        assert preface.feed(header[10:] + b"hello\n") == (Peer("192.0.2.7", 5555), b"hello\n")


def test_a_local_header_is_the_balancer_itself():
    """HAProxy's health checks send a LOCAL header: the peer stays the balancer."""
    preface = ProxyPreface(TrustedProxies.parse(["10.0.0.10"]), BALANCER)
    assert preface.feed(format_v2(None) + b"check\n") == (BALANCER, b"check\n")


def test_untrusted_peers_are_refused_before_reading():
    make = preface_factory(TrustedProxies.parse(["10.0.0.10"]))
    with pytest.raises(NotTrusted, match=r"192\.0\.2\.9, which is not a trusted proxy"):
        make(Peer("192.0.2.9", 1234))


def test_no_header_or_a_bad_one_is_refused():
    for data in (b"GET / HTTP/1.1\r\n", b"hello\n", b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n"):
        preface = ProxyPreface(TrustedProxies.parse(["10.0.0.10"]), BALANCER)
        with pytest.raises(ValueError, match=r"PROXY protocol connection from 10\.0\.0\.10: "):
            preface.feed(data)


def test_refusals_are_logged_at_most_once_a_second():
    """A flood of bad connections costs one log line a second, the next one counting the rest."""
    class Lines:
        said: list[str] = []

        def error(self, text: str) -> None:
            self.said.append(text)

    now = [100.0]
    lines = Lines()
    refused = RefusalLog(lines, lambda: now[0])
    for _ in range(500):
        refused("bad")
        now[0] += 0.001
    now[0] += 1.0
    refused("bad again")
    assert lines.said == ["bad", "bad again (499 more refused since the last line)"]
