"""The echo service with no sockets at all: bytes in, actions out."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sockkit.services.actions import CLOSE, Peer, Send, Wait, as_actions
from sockkit.services.echo import EchoService
from sockkit.services.lines import LineBuffer, LineTooLong

PEER = Peer("127.0.0.1", 1)
STREAM = b"spam\nSpam\r\nSPAM\n\nlast"


def feed(conn, chunks):
    actions = []
    for chunk in chunks:
        actions += as_actions(conn.receive(chunk))
    return actions + as_actions(conn.receive(b""))


def sent(actions) -> bytes:
    return b"".join(a.data for a in actions if type(a) is Send)


def test_line_replies_for_every_split_position():
    """However the stream is cut in two, the replies are the same."""
    expected = b"Echo=>spam\nEcho=>Spam\nEcho=>SPAM\nEcho=>\nEcho=>last\n"
    for cut in range(len(STREAM) + 1):
        actions = feed(EchoService().connect(PEER), [STREAM[:cut], STREAM[cut:]])
        assert sent(actions) == expected
        assert actions[-1] == CLOSE


@given(st.lists(st.integers(min_value=1, max_value=7), max_size=40))
def test_line_replies_for_random_splits(sizes):
    """Chunks of 1..7 bytes in any pattern give the same replies as one big chunk."""
    chunks, rest = [], STREAM
    for size in sizes:
        chunks.append(rest[:size])
        rest = rest[size:]
    chunks.append(rest)
    assert sent(feed(EchoService().connect(PEER), chunks)) == sent(feed(EchoService().connect(PEER), [STREAM]))


def test_raw_echoes_bytes_unchanged():
    conn = EchoService(raw=True).connect(PEER)
    reply = conn.receive(b"\x00\xffabc")
    assert reply == b"\x00\xffabc"  # bare bytes: the cheap form of [Send(...)] the models send as-is
    assert as_actions(reply) == [Send(b"\x00\xffabc")]
    assert conn.receive(b"") == [CLOSE]


@given(st.lists(st.binary(min_size=1, max_size=300), max_size=20))
def test_mirrors_keeps_its_promise(chunks):
    """A connection that says ``mirrors`` answers every chunk with itself and the end with a close,
    so models may skip calling it; one that waits first (--delay) or frames lines does not say so."""
    conn = EchoService(raw=True).connect(PEER)
    assert conn.mirrors is True
    assert [conn.receive(chunk) for chunk in chunks] == chunks
    assert conn.receive(b"") == [CLOSE]
    assert EchoService(raw=True, delay=0.1).connect(PEER).mirrors is False
    assert getattr(EchoService().connect(PEER), "mirrors", False) is False


def test_delay_waits_before_each_reply():
    """--delay is a Wait action: the model decides how to wait, never the service."""
    conn = EchoService(delay=0.5).connect(PEER)
    assert conn.receive(b"a\nb\n") == [Wait(0.5), Send(b"Echo=>a\n"), Wait(0.5), Send(b"Echo=>b\n")]


def test_stamp_uses_the_injected_clock():
    conn = EchoService(stamp=lambda: "Sun Jun 18 22:52:52 2000").connect(PEER)
    assert as_actions(conn.receive(b"Bruce\n")) == [Send(b"Echo=>Bruce at Sun Jun 18 22:52:52 2000\n")]


def test_over_long_line_is_refused_and_closed():
    """A client sending no newline cannot make the server hold more than max_line bytes."""
    conn = EchoService(max_line=10).connect(PEER)
    assert conn.receive(b"0123456789") == []
    actions = as_actions(conn.receive(b"x"))
    assert actions[-1] == CLOSE
    assert b"error: line longer than 10 bytes" in sent(actions)


def test_line_buffer_bound():
    lines = LineBuffer(4)
    assert lines.feed(b"ab\ncd") == [b"ab"]
    try:
        lines.feed(b"efg")
    except LineTooLong:
        pass
    else:
        raise AssertionError("5 bytes without a newline passed a 4-byte limit")


def test_busy_reply():
    assert EchoService().busy_reply().startswith(b"Echo=>")
    assert EchoService(raw=True).busy_reply() == b""
