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


def test_default_answers_each_chunk_at_once_as_example_10_1():
    """The chapter's server: ``Echo=>`` + the chunk received, nothing added, nothing waited for (its
    client sends no newline and waits in ``recv``)."""
    conn = EchoService().connect(PEER)
    assert conn.start() == []
    assert conn.receive(b"Hello network world") == b"Echo=>Hello network world"
    assert conn.receive(b"spam\nSpam") == b"Echo=>spam\nSpam"  # no framing: a chunk is a chunk
    assert conn.pending_request() is False
    assert conn.receive(b"") == [CLOSE]


def test_default_stamp_follows_the_chunk():
    """--stamp as Examples 10-4..10-9: 'Echo=>%s at %s' with no newline."""
    conn = EchoService(stamp=lambda: "Sun Jun 18 22:52:52 2000").connect(PEER)
    assert conn.receive(b"Bruce") == b"Echo=>Bruce at Sun Jun 18 22:52:52 2000"


def test_line_replies_for_every_split_position():
    """--lines: however the stream is cut in two, the replies are the same."""
    expected = b"Echo=>spam\nEcho=>Spam\nEcho=>SPAM\nEcho=>\nEcho=>last\n"
    for cut in range(len(STREAM) + 1):
        actions = feed(EchoService(lines=True).connect(PEER), [STREAM[:cut], STREAM[cut:]])
        assert sent(actions) == expected
        assert actions[-1] == CLOSE


@given(st.lists(st.integers(min_value=1, max_value=7), max_size=40))
def test_line_replies_for_random_splits(sizes):
    """--lines: chunks of 1..7 bytes in any pattern give the same replies as one big chunk."""
    chunks, rest = [], STREAM
    for size in sizes:
        chunks.append(rest[:size])
        rest = rest[size:]
    chunks.append(rest)
    lines = EchoService(lines=True)
    assert sent(feed(lines.connect(PEER), chunks)) == sent(feed(lines.connect(PEER), [STREAM]))


def test_raw_echoes_bytes_unchanged():
    conn = EchoService(raw=True).connect(PEER)
    reply = conn.receive(b"\x00\xffabc")
    assert reply == b"\x00\xffabc"  # bare bytes: the cheap form of [Send(...)] the models send as-is
    assert as_actions(reply) == [Send(b"\x00\xffabc")]
    assert conn.receive(b"") == [CLOSE]


@given(st.lists(st.binary(min_size=1, max_size=300), max_size=20))
def test_mirrors_keeps_its_promise(chunks):
    """A connection that says ``mirrors`` answers every chunk with itself and the end with a close,
    so models may skip calling it; one that waits (--delay, --delay-each) or adds a prefix does not say so."""
    conn = EchoService(raw=True).connect(PEER)
    assert conn.mirrors is True
    assert [conn.receive(chunk) for chunk in chunks] == chunks
    assert conn.receive(b"") == [CLOSE]
    assert EchoService(raw=True, delay=0.1).connect(PEER).mirrors is False
    assert EchoService(raw=True, delay_each=0.1).connect(PEER).mirrors is False
    assert getattr(EchoService().connect(PEER), "mirrors", False) is False
    assert getattr(EchoService(lines=True).connect(PEER), "mirrors", False) is False


class Clock:
    """A clock that says how often it was read: proves *when* a stamp is made."""

    def __init__(self) -> None:
        self.reads = 0

    def __call__(self) -> str:
        self.reads += 1
        return f"T{self.reads}"


def test_delay_is_one_wait_per_connection_before_the_first_read():
    """--delay is the chapter's ``time.sleep(5)`` ahead of its recv loop: one Wait when the client is
    accepted; after it (models hand no input over during a Wait) each chunk is answered and stamped at once."""
    clock = Clock()
    for service in (EchoService(delay=5, stamp=clock), EchoService(delay=5, stamp=clock, lines=True),
                    EchoService(delay=5, raw=True)):
        assert service.connect(PEER).start() == [Wait(5)]
    conn = EchoService(delay=5, stamp=clock).connect(PEER)
    conn.start()
    assert clock.reads == 0
    assert conn.receive(b"The") == b"Echo=>The at T1"
    assert conn.receive(b"Meaning") == b"Echo=>Meaning at T2"


def test_delay_each_waits_before_every_reply_and_stamps_when_it_ends():
    """--delay-each: a Wait per message whose reply (and stamp) is made by ``Wait.then``, when it ends."""
    clock = Clock()
    conn = EchoService(delay_each=0.5, stamp=clock).connect(PEER)
    assert conn.start() == []
    (wait,) = conn.receive(b"Bruce")
    assert wait.seconds == 0.5 and clock.reads == 0
    assert wait.then() == b"Echo=>Bruce at T1"
    lines = EchoService(delay_each=0.5, stamp=clock, lines=True).connect(PEER)
    waits = lines.receive(b"a\nb\n")
    assert [w.seconds for w in waits] == [0.5, 0.5] and clock.reads == 1
    assert [w.then() for w in waits] == [b"Echo=>a at T2\n", b"Echo=>b at T3\n"]
    *tail, close = lines.receive(b"c") + lines.receive(b"")
    assert close == CLOSE and tail[0].then() == b"Echo=>c at T4\n"
    assert EchoService(delay_each=0.5, raw=True).connect(PEER).receive(b"x") == [Wait(0.5), Send(b"x")]


def test_stamp_uses_the_injected_clock():
    conn = EchoService(stamp=lambda: "Sun Jun 18 22:52:52 2000", lines=True).connect(PEER)
    assert as_actions(conn.receive(b"Bruce\n")) == [Send(b"Echo=>Bruce at Sun Jun 18 22:52:52 2000\n")]


def test_over_long_line_is_refused_and_closed():
    """--lines: a client sending no newline cannot make the server hold more than max_line bytes."""
    conn = EchoService(max_line=10, lines=True).connect(PEER)
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
