"""The connection engine with no sockets at all: a scripted service, a fake clock and a test adapter
that "sends" into a bytearray, as little at a time as a test likes.

What is checked is the engine's contract (see its module's rules): actions in order whatever the
order and whatever partial sends, Waits that hold what follows, Close after the flush, input held
back while an answer is in progress, one error boundary, the deadlines, and that a reset at any
point leaves every file closed and the service closed exactly once.
"""

from __future__ import annotations

import io
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sockkit.models.engine import CLOSED, CLOSING, HIGH_WATER, LINGER_BYTES, LINGER_SECONDS, LINGERING, OPEN, Engine
from sockkit.models.settings import Limits
from sockkit.services.actions import CLOSE, Peer, Send, SendFile, Wait

PEER = Peer("127.0.0.1", 41234)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class RecordingLog:
    """What the engine logs: the chapter's line per client, and errors."""

    def __init__(self) -> None:
        self.clients: list[Peer] = []
        self.errors: list[str] = []

    def connected(self, peer: Peer) -> None:
        self.clients.append(peer)

    def error(self, text: str) -> None:
        self.errors.append(text)

    def refused(self, text: str) -> None:
        self.errors.append(text)


class TrackedFile(io.BytesIO):
    """An in-memory file that remembers it was closed (SendFile hands ownership to the engine)."""

    opened: list[TrackedFile] = []

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        TrackedFile.opened.append(self)


class Script:
    """A service connection answering each ``receive`` with the next scripted reply (a list of
    actions, bytes, an exception to raise, or a callable given the data)."""

    def __init__(self, replies=(), start=(), mirrors: bool = False, pending=None) -> None:
        self.replies = list(replies)
        self.start_reply = list(start)
        self.got: list[bytes] = []
        self.closed = 0
        #: Files the engine was given (it owns them from then on).
        self.handed: list = []
        self.mirrors = mirrors
        self.pending = pending

    def start(self):
        return self.start_reply

    def receive(self, data: bytes):
        self.got.append(data)
        if not data:
            return [CLOSE]
        reply = self.replies.pop(0) if self.replies else []
        if isinstance(reply, Exception):
            raise reply
        if callable(reply):
            return reply(data)
        self.handed += [a.file for a in reply if isinstance(a, SendFile)] if isinstance(reply, list) else []
        return reply

    def pending_request(self) -> bool:
        return bool(self.pending and self.pending())

    def close(self) -> None:
        self.closed += 1


class OneService:
    name = "test"

    def __init__(self, conn: Script) -> None:
        self.conn = conn

    def connect(self, peer: Peer) -> Script:
        return self.conn

    def busy_reply(self) -> bytes:
        return b""


class Adapter:
    """Carries out the engine's wants into memory: ``wire`` is what the peer would read."""

    def __init__(self, engine: Engine, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock
        self.wire = bytearray()
        self.fin_at: int | None = None  # len(wire) when our FIN went out

    def receive(self, data: bytes, limit: int | None = None, room: int | None = None) -> None:
        reply = self.engine.received(data)
        if reply:
            self.wire += reply
        self.pump(limit, room)

    def pump(self, limit: int | None = None, room: int | None = None) -> None:
        """Send what the engine wants, ``limit`` bytes per call at most, ``room`` bytes in all before
        the socket would block; stops when the engine waits."""
        engine = self.engine
        for _ in range(100_000):
            if room is not None and room <= 0 and (engine.out or engine.file is not None):
                return  # the socket is full
            if engine.out:
                count = min(len(engine.out), limit or len(engine.out), len(engine.out) if room is None else room)
                assert self.fin_at is None, "bytes after our FIN"
                self.wire += bytes(engine.out[:count])
                engine.sent(count)
                room = None if room is None else room - count
            elif engine.file is not None:
                count = min(engine.file_left, limit or engine.file_left, engine.file_left if room is None else room)
                assert self.fin_at is None, "file bytes after our FIN"
                engine.file.file.seek(engine.file_offset)
                self.wire += engine.file.file.read(count)
                engine.file_sent(count)
                room = None if room is None else room - count
            elif engine.wants_shutdown:
                self.fin_at = len(self.wire)
                engine.shut(True)
            else:
                return
        raise AssertionError("the engine never stopped wanting")

    def advance(self, seconds: float, limit: int | None = None) -> None:
        self.clock.now += seconds
        self.engine.timer(self.clock.now)
        self.pump(limit)


def make(conn: Script | None = None, **limits) -> tuple[Engine, Adapter, Script, RecordingLog]:
    conn = conn or Script()
    clock, log = Clock(), RecordingLog()
    engine = Engine(OneService(conn), PEER, log, Limits(**limits), clock)
    adapter = Adapter(engine, clock)
    adapter.pump()
    return engine, adapter, conn, log


# -- every ordering of the four actions ------------------------------------------------------------
def action_of(kind: str, index: int):
    if kind == "send":
        return Send(b"S%d." % index)
    if kind == "file":
        return SendFile(TrackedFile(b"0123456789F%d." % index), 10, 4)  # sends b"F<i>." (+ padding)
    if kind == "wait":
        return Wait(1.0)
    return CLOSE


def expected_wire(kinds: list[str]) -> tuple[bytes, bool]:
    """The bytes a peer must read for one reply, and whether our FIN follows them."""
    wire = b""
    for index, kind in enumerate(kinds):
        if kind == "close":
            return wire, True
        if kind == "send":
            wire += b"S%d." % index
        elif kind == "file":
            wire += (b"0123456789F%d." % index)[10:14]
    return wire, False


ORDERS = sorted({order for n in range(1, 5)
                 for order in itertools.product(("send", "file", "wait", "close"), repeat=n)})


@pytest.mark.parametrize("limit", [None, 1, 3])
@pytest.mark.parametrize("kinds", ORDERS, ids="-".join)
def test_every_ordering_of_actions_goes_out_in_order(kinds, limit) -> None:
    """Any sequence of Send/SendFile/Wait/Close, with sends of any size: the peer reads exactly the
    bytes before the first Close, in order; nothing after a Wait leaves before it ends; the FIN
    follows the last byte; files are all closed; the service is closed once."""
    TrackedFile.opened.clear()
    actions = [action_of(kind, i) for i, kind in enumerate(kinds)]
    engine, adapter, conn, _ = make(Script([actions]))
    adapter.receive(b"go", limit)
    want, closes = expected_wire(list(kinds))
    waits_before = [i for i, kind in enumerate(kinds) if kind == "wait"]
    for _ in range(len(waits_before) + 1):
        sent_now = bytes(adapter.wire)
        assert want.startswith(sent_now)
        adapter.advance(0.5, limit)
        assert bytes(adapter.wire) == sent_now, "bytes left during a Wait"
        adapter.advance(0.5, limit)
    assert bytes(adapter.wire) == want
    if closes:
        assert adapter.fin_at == len(want)
        assert engine.state in (LINGERING, CLOSED)  # the linger may have run out while Waits passed
        engine.received(b"")
        assert engine.state is CLOSED and not engine.aborted
    else:
        assert adapter.fin_at is None and engine.state is OPEN and engine.wants_read
    engine.release()
    assert conn.closed == 1
    assert all(f.closed for f in TrackedFile.opened)


# -- random conversations, partial sends and a reset anywhere -----------------------------------
actions_strategy = st.one_of(
    st.binary(min_size=1, max_size=40).map(Send),
    st.tuples(st.binary(min_size=0, max_size=60), st.integers(0, 60), st.integers(0, 60)).map(
        lambda t: ("file", t)),
    st.floats(0, 2).map(Wait),
    st.just(CLOSE),
)
reply_strategy = st.one_of(st.binary(min_size=1, max_size=40), st.lists(actions_strategy, max_size=6))


def materialise(reply):
    """Files are made fresh per run (hypothesis may reuse the drawn values)."""
    if isinstance(reply, bytes):
        return reply
    made = []
    for action in reply:
        if isinstance(action, tuple):
            data, offset, count = action[1]
            offset, count = min(offset, len(data)), min(count, max(0, len(data) - min(offset, len(data))))
            action = SendFile(TrackedFile(data), offset, count)
        made.append(action)
    return made


def flatten(replies) -> tuple[bytes, bool]:
    wire = b""
    for reply in replies:
        if isinstance(reply, bytes):
            wire += reply
            continue
        for action in reply:
            if action is CLOSE:
                return wire, True
            if isinstance(action, Send):
                wire += action.data
            elif isinstance(action, SendFile):
                action.file.seek(action.offset)
                wire += action.file.read(action.count)
    return wire, False


@settings(max_examples=300, deadline=None)
@given(replies=st.lists(reply_strategy, min_size=1, max_size=5), limits=st.lists(st.integers(1, 50), min_size=1),
       steps=st.lists(st.floats(0, 1.5), min_size=1, max_size=30), reset_at=st.integers(0, 40))
def test_random_conversations_with_partial_sends_and_a_reset_anywhere(replies, limits, steps, reset_at) -> None:
    """Each chunk gets the next scripted reply; sends go out a few bytes at a time; time passes in
    random steps; at step ``reset_at`` the socket fails. Until then, the wire is always a prefix of
    the replies' bytes in order; without the reset, it is all of it (up to the first Close); after
    it, nothing more goes out, every file is closed and the service is closed exactly once."""
    TrackedFile.opened.clear()
    replies = [materialise(r) for r in replies]
    want, closes = flatten(replies)  # (it reads the files; the adapter seeks before it sends)
    engine, adapter, conn, log = make(Script(list(replies)), idle_timeout=1000, request_timeout=1000)
    limit = itertools.cycle(limits)
    step = 0
    pending_chunks = len(replies)
    while step < max(len(steps), reset_at + 1) + 40:
        if step == reset_at:
            engine.reset()
            break
        if engine.state is CLOSED:
            break
        if engine.wants_read and pending_chunks and engine.state is OPEN:
            pending_chunks -= 1
            adapter.receive(b"chunk %d" % step, next(limit))
        else:
            adapter.advance(steps[step % len(steps)], next(limit))
        assert want.startswith(bytes(adapter.wire))
        step += 1
    wire_at_reset = bytes(adapter.wire)
    if step != reset_at:
        while engine.state is not CLOSED and (engine.out or engine.file or engine.held_until or engine.outbox):
            adapter.advance(2.0, next(limit))
        if engine.state is OPEN and not pending_chunks:
            assert bytes(adapter.wire) == want
        if closes and engine.state is not OPEN:
            assert bytes(adapter.wire) == want and adapter.fin_at == len(want)
    else:
        assert engine.state is CLOSED and engine.aborted
        assert not engine.out and engine.file is None and not engine.wants_read
        adapter.advance(5.0)
        assert bytes(adapter.wire) == wire_at_reset, "bytes after a reset"
    engine.release()
    engine.release()
    assert conn.closed == 1
    assert all(f.closed for f in conn.handed)
    assert log.errors == []


# -- rule 2: input is held back while an answer is in progress ----------------------------------------
def test_input_during_a_wait_reaches_the_service_after_it() -> None:
    """While a Wait holds an answer, the engine does not want to read and keeps what still arrives;
    the service sees it only once the wait is over (so a stamp is taken when the reply is sent)."""
    clock_at_receive: list[float] = []

    def stamped(data: bytes):
        clock_at_receive.append(adapter.clock.now)
        return [Wait(1.0), Send(b"at %.1f:" % adapter.clock.now + data)]

    engine, adapter, conn, _ = make(Script([stamped, stamped]))
    adapter.receive(b"one")
    assert not engine.wants_read
    adapter.receive(b"two")  # came anyway (already in flight): kept, not handed over
    assert conn.got == [b"one"]
    adapter.advance(1.0)
    assert conn.got == [b"one", b"two"]
    assert bytes(adapter.wire) == b"at 100.0:one"
    adapter.advance(1.0)
    assert bytes(adapter.wire) == b"at 100.0:oneat 101.0:two"
    assert clock_at_receive == [100.0, 101.0]
    assert engine.wants_read


def test_a_fin_during_a_wait_comes_after_the_kept_input() -> None:
    engine, adapter, conn, _ = make(Script([[Wait(1.0), Send(b"a")], b"b"]))
    adapter.receive(b"1")
    adapter.receive(b"2")
    adapter.receive(b"")
    adapter.advance(1.0)
    assert conn.got == [b"1", b"2", b""]
    assert bytes(adapter.wire) == b"ab" and adapter.fin_at == 2
    assert engine.state is CLOSED  # the peer's FIN was seen: no linger needed


def test_unsent_bytes_past_the_high_water_mark_stop_reading() -> None:
    engine, adapter, _conn, _ = make(Script([b"first", b"x" * (HIGH_WATER + 100), b"y"]))
    adapter.receive(b"hi")  # (a connection's first input takes the slow path: rule 6's ``spoke``)
    reply = engine.received(b"big")
    assert reply is not None and len(reply) == HIGH_WATER + 100
    engine.keep(reply[10:])  # only 10 bytes went out
    assert not engine.wants_read and len(engine.out) == HIGH_WATER + 90
    engine.sent(100)
    assert engine.wants_read  # below the mark again


def test_the_adapters_own_full_buffer_stops_reading() -> None:
    engine, _adapter, _, _ = make(Script([b"a"]))
    engine.pause(True)
    assert not engine.wants_read
    engine.pause(False)
    assert engine.wants_read


# -- fast paths --------------------------------------------------------------------------------
def test_bytes_answers_come_straight_back_and_mirroring_is_flagged() -> None:
    engine, adapter, _conn, _ = make(Script([b"one", b"two", b"three"]))
    assert not engine.plain  # nothing has reached the service yet: the first input is noted (rule 6)
    adapter.receive(b"x")
    assert bytes(adapter.wire) == b"one" and engine.plain
    assert engine.received(b"y") == b"two"
    assert engine.received(b"z") == b"three"
    assert not engine.mirroring
    engine, adapter, _, _ = make(Script([b"a"], mirrors=True))
    assert not engine.mirroring
    adapter.receive(b"a")
    assert engine.mirroring
    engine.received(b"")
    assert not engine.mirroring and engine.state is not OPEN


def test_a_request_in_progress_leaves_the_fast_path_and_has_an_absolute_deadline() -> None:
    partial = {"on": False}
    conn = Script([[], [], b"done"], pending=lambda: partial["on"])
    engine, adapter, _, _ = make(conn, idle_timeout=10, request_timeout=3)
    partial["on"] = True
    adapter.receive(b"par")
    assert engine.request_began == 100.0 and not engine.plain
    assert engine.read_timeout(101.0) == pytest.approx(2.0)
    adapter.clock.now = 102.0
    adapter.receive(b"t")  # progress, but the deadline does not move
    assert engine.request_began == 100.0
    assert not engine.sweep(102.5)
    assert engine.sweep(103.5)
    assert engine.state is CLOSED and engine.aborted


def test_a_finished_request_clears_its_deadline() -> None:
    partial = {"on": True}
    engine, adapter, _, _ = make(Script([[], b"ok"], pending=lambda: partial["on"]), request_timeout=3)
    adapter.receive(b"a")
    partial["on"] = False
    adapter.receive(b"b")
    assert bytes(adapter.wire) == b"ok" and engine.request_began == 0.0 and engine.plain


# -- the first request counts from accept (issue 16 item 9) ---------------------------------------
def test_a_silent_connection_is_closed_at_the_request_deadline_of_its_accept() -> None:
    engine, _adapter, conn, _ = make(idle_timeout=300, request_timeout=3)
    assert engine.request_began == 100.0 and engine.read_timeout(100.0) == pytest.approx(3.0)
    assert not engine.sweep(102.9)
    assert engine.sweep(103.5) and engine.aborted and conn.got == []


def test_the_first_request_is_due_within_the_deadline_of_accept_not_of_its_first_byte() -> None:
    partial = {"on": True}
    engine, adapter, _, _ = make(Script([[], b"ok"], pending=lambda: partial["on"]), request_timeout=3)
    adapter.clock.now = 102.0
    adapter.receive(b"GET")  # a start, 2 s after accept
    assert engine.request_began == 100.0
    assert engine.sweep(103.5) and engine.aborted


def test_after_the_first_request_silence_is_the_idle_timeouts_business() -> None:
    engine, adapter, _, _ = make(Script([b"one", b"two"]), idle_timeout=300, request_timeout=3)
    adapter.clock.now = 101.0
    adapter.receive(b"first")
    assert bytes(adapter.wire) == b"one" and engine.request_began == 0.0 and engine.plain
    assert not engine.sweep(101.0) and not engine.sweep(400.0)  # keep-alive between requests
    assert engine.received(b"second") == b"two"
    assert not engine.sweep(400.5) and engine.sweep(701.0) and engine.aborted


def test_a_first_byte_that_is_not_a_pending_request_ends_the_accept_deadline() -> None:
    engine, adapter, _, _ = make(Script([[]]), idle_timeout=300, request_timeout=3)
    adapter.receive(b"x")  # no answer, and the service says nothing is half-received
    assert engine.request_began == 0.0 and engine.plain
    assert not engine.sweep(150.0)


def test_a_service_that_speaks_first_waits_for_its_client_the_idle_timeout() -> None:
    """A banner or a prompt invites a person to read and think (sockkit talk): not a trickler."""
    engine, adapter, _, _ = make(Script(start=[Send(b"hello\n")]), idle_timeout=300, request_timeout=3)
    assert bytes(adapter.wire) == b"hello\n" and engine.request_began == 0.0
    assert not engine.sweep(100.0) and not engine.sweep(150.0)
    assert engine.sweep(401.0) and engine.aborted


def test_after_a_preface_the_first_request_still_counts_from_accept() -> None:
    clock, log = Clock(), RecordingLog()
    engine = Engine(OneService(Script()), PEER, log, Limits(request_timeout=5), clock, preface=Header())
    clock.now = 102.0
    engine.received(b"NAME 10.1.2.3 999\n")
    assert log.clients == [Peer("10.1.2.3", 999)] and engine.request_began == 100.0
    assert engine.sweep(105.5) and engine.aborted


def test_after_a_preface_and_a_tls_handshake_the_first_request_still_counts_from_accept() -> None:
    """PROXY before TLS: neither the header nor the handshake restarts the request deadline."""
    clock, log = Clock(), RecordingLog()
    engine = Engine(OneService(Script()), PEER, log, Limits(request_timeout=5), clock, preface=Header(),
                    tls_after_preface=True)
    clock.now = 102.0
    engine.received(b"NAME 10.1.2.3 999\n")
    assert engine.wants_handshake and log.clients == []
    clock.now = 104.0
    engine.secured()
    assert log.clients == [Peer("10.1.2.3", 999)] and engine.request_began == 100.0
    assert not engine.sweep(104.9) and engine.sweep(105.5) and engine.aborted


# -- the minimum rate of a file transfer (issue 16 item 7) ---------------------------------------------
def file_reply(size: int = 1 << 20) -> list:
    return [Send(b"OK\n"), SendFile(TrackedFile(bytes(size)), 0, size)]


def sip(engine: Engine, adapter: Adapter, seconds: int, per_second: int) -> bool:
    """The client takes ``per_second`` bytes a second for ``seconds``; True once the engine cut it."""
    for _ in range(seconds):
        adapter.clock.now += 1
        adapter.pump(room=per_second)
        if engine.sweep(adapter.clock.now):
            return True
    return False


def test_a_file_taken_slower_than_the_minimum_rate_is_cut_and_logged() -> None:
    engine, adapter, conn, log = make(Script([file_reply()]), idle_timeout=300, min_rate=1000, rate_window=10)
    adapter.receive(b"get", room=64 * 1024)
    assert engine.file is not None
    assert sip(engine, adapter, 30, 900)  # every second some progress: never idle, but too slow
    assert engine.aborted and engine.file is None and all(f.closed for f in conn.handed)
    assert adapter.clock.now <= 100 + 1 + 2 * 10  # the first whole window after it started
    assert len(log.errors) == 1 and "('127.0.0.1', 41234)" in log.errors[0] and "minimum rate" in log.errors[0]


def test_a_slow_but_real_link_is_not_cut() -> None:
    engine, adapter, _, log = make(Script([file_reply()]), idle_timeout=300, min_rate=1000, rate_window=10)
    adapter.receive(b"get", room=64 * 1024)
    assert not sip(engine, adapter, 60, 1100)
    assert engine.state is OPEN and engine.file is not None and log.errors == []


def test_the_minimum_rate_counts_what_left_the_adapter_not_what_it_was_handed() -> None:
    """asyncio's TLS path hands the transport a whole chunk at once: its backlog shrinking is the
    client's pace, and a backlog that stays full is no progress."""
    engine, adapter, _, _ = make(Script([file_reply()]), idle_timeout=300, min_rate=1000, rate_window=10)
    adapter.receive(b"get", room=3)  # the header line goes out, the file starts
    engine.file_sent(200_000)  # handed to the transport in one write
    backlog = 200_000
    for second in range(1, 30):
        backlog -= 500  # the client takes 500 bytes a second of it
        if engine.sweep(100.0 + second, backlog):
            break
    assert engine.aborted and second <= 21


def test_no_minimum_rate_without_a_file_or_when_it_is_off() -> None:
    engine, adapter, _, _ = make(Script([[Send(b"x" * 100_000)]]), idle_timeout=300, min_rate=1000, rate_window=10)
    adapter.receive(b"q", room=0)
    assert engine.file is None and not sip(engine, adapter, 60, 100)  # bytes, not a file: the idle timeout's business
    engine, adapter, _, _ = make(Script([file_reply()]), idle_timeout=300, min_rate=0, rate_window=10)
    adapter.receive(b"get", room=3)
    assert engine.file is not None and not sip(engine, adapter, 60, 100)


def test_a_file_never_read_is_idle_after_the_idle_timeout() -> None:
    """Issue 16 item 6: a download nobody reads holds its file only until the idle timeout."""
    engine, adapter, conn, _ = make(Script([file_reply()]), idle_timeout=3, min_rate=0)
    adapter.receive(b"get", room=100_000)
    assert not engine.sweep(100.1) and not engine.sweep(103.0)  # (progress is dated by the sweep that saw it)
    assert engine.sweep(103.5) and engine.aborted and all(f.closed for f in conn.handed)


# -- idle: no progress in either direction ----------------------------------------------------
def test_idle_means_no_progress_either_way() -> None:
    engine, _adapter, _, _ = make(Script([b"x" * 10]), idle_timeout=5)
    assert not engine.sweep(104.0)
    assert engine.sweep(105.5) and engine.aborted  # silent since it was accepted


def test_a_client_that_stops_reading_is_idle_even_with_bytes_pending() -> None:
    engine, adapter, _, _ = make(Script([[Send(b"x" * 100)]]), idle_timeout=5)
    adapter.receive(b"q", room=10)  # 10 bytes out, then the socket is full
    assert len(engine.out) == 90
    assert not engine.sweep(103.0)  # the read and the 10 bytes were progress
    assert not engine.sweep(107.0)
    assert engine.sweep(108.5) and engine.aborted


def test_a_shrinking_adapter_buffer_is_progress_and_a_wait_is_never_idle() -> None:
    engine, adapter, _, _ = make(Script([[Wait(20), Send(b"late")]]), idle_timeout=5)
    adapter.receive(b"q")
    for now in range(101, 120, 2):
        assert not engine.sweep(float(now))
    adapter.advance(20.0)
    assert bytes(adapter.wire) == b"late"
    engine, adapter, _, _ = make(Script(), idle_timeout=5)
    for now, backlog in [(103, 900), (106, 800), (109, 700), (112, 700)]:
        assert not engine.sweep(float(now), backlog), now
    assert engine.sweep(118.0, 700) and engine.aborted


# -- Close, linger -------------------------------------------------------------------------------
def test_the_linger_ends_at_the_peers_fin_its_budget_or_its_deadline() -> None:
    engine, adapter, _, _ = make(Script([[Send(b"bye"), CLOSE]]))
    adapter.receive(b"q")
    assert engine.state is LINGERING and engine.deadline == 100.0 + LINGER_SECONDS and engine.wants_read
    engine.received(b"more input")  # dropped
    assert engine.state is LINGERING
    adapter.advance(LINGER_SECONDS)
    assert engine.state is CLOSED and not engine.aborted
    engine, adapter, _, _ = make(Script([[CLOSE]]))
    adapter.receive(b"q")
    engine.received(b"z" * (LINGER_BYTES + 1))
    assert engine.state is CLOSED and not engine.aborted
    engine, adapter, _, _ = make(Script([[CLOSE]]))
    adapter.receive(b"q")
    adapter.clock.now += LINGER_SECONDS
    engine.sweep(adapter.clock.now, backlog=10)  # the adapter still holds our bytes: not yet
    assert engine.state is LINGERING
    engine.sweep(adapter.clock.now + 0.5, backlog=0)
    assert engine.state is CLOSED


def test_actions_after_close_are_dropped_and_their_files_closed() -> None:
    late = TrackedFile(b"never")
    _engine, adapter, _, _ = make(Script([[Send(b"a"), CLOSE, Send(b"b"), SendFile(late, 0, 5)]]))
    adapter.receive(b"q")
    assert bytes(adapter.wire) == b"a" and adapter.fin_at == 1 and late.closed


def test_a_transport_that_cannot_half_close_just_closes() -> None:
    engine, _adapter, _, _ = make(Script([[CLOSE]]))
    engine.received(b"q")
    assert engine.state is CLOSING and engine.wants_shutdown
    engine.shut(False)
    assert engine.state is CLOSED and not engine.aborted


# -- one error boundary ----------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["connect", "start", "receive", "pending_request", "answer", "action"])
def test_a_service_failure_is_logged_once_with_the_client_and_ends_this_connection(where) -> None:
    conn = Script([RuntimeError("boom")] if where == "receive" else
                  [123] if where == "answer" else [["not an action"]] if where == "action" else [[]],
                  pending=(lambda: 1 / 0) if where == "pending_request" else None)
    if where == "start":
        conn.start = lambda: 1 / 0
    service = OneService(conn)
    if where == "connect":
        service.connect = lambda peer: 1 / 0
    clock, log = Clock(), RecordingLog()
    engine = Engine(service, PEER, log, Limits(), clock)
    if where not in ("connect", "start"):
        engine.received(b"request")
    assert engine.state is CLOSED and engine.aborted
    assert len(log.errors) == 1, log.errors
    assert "('127.0.0.1', 41234)" in log.errors[0] and "test service failed" in log.errors[0]
    engine.received(b"more")
    engine.sweep(clock.now + 1000)
    engine.release()
    assert len(log.errors) == 1
    assert conn.closed == (0 if where == "connect" else 1)


def test_a_failing_close_is_logged_and_swallowed() -> None:
    engine, _, conn, log = make(Script())

    def broken() -> None:
        raise OSError("disk gone")

    conn.close = broken
    engine.release()
    assert len(log.errors) == 1 and "close()" in log.errors[0]


# -- stopping -----------------------------------------------------------------------------------
def test_a_stop_between_requests_is_a_goodbye_and_during_one_waits_for_the_answer() -> None:
    engine, adapter, conn, _ = make(Script([b"a"]))
    adapter.receive(b"q")
    engine.stop()
    adapter.pump()
    assert conn.got == [b"q", b""] and engine.state is LINGERING
    engine, adapter, conn, _ = make(Script([[Wait(1.0), Send(b"answer")]]))
    adapter.receive(b"q")
    engine.stop()
    adapter.pump()
    assert conn.got == [b"q"] and engine.state is OPEN
    adapter.advance(1.0)
    assert bytes(adapter.wire) == b"answer" and conn.got == [b"q", b""] and adapter.fin_at == 6


def test_a_stop_gives_a_connection_that_has_not_spoken_a_grace_to_speak_and_serves_it() -> None:
    """Accepted an instant before the stop, its request on the way: not "between requests"."""
    engine, adapter, conn, _ = make(Script([b"answer"]), request_timeout=30)
    engine.stop()
    adapter.pump()
    assert conn.got == [] and engine.state is OPEN and engine.wants_read and engine.deadline == 101.0
    assert engine.read_timeout(100.0) == 1.0  # the blocking models' kernel timeout
    adapter.clock.now += 0.5
    adapter.receive(b"request")
    assert bytes(adapter.wire) == b"answer" and conn.got == [b"request", b""] and engine.state is LINGERING
    # Silent through the grace: the goodbye, as for any connection between requests.
    engine, adapter, conn, _ = make(Script())
    engine.stop()
    adapter.advance(0.9)
    assert conn.got == [] and engine.state is OPEN
    adapter.advance(0.2)
    assert conn.got == [b""] and engine.state is LINGERING
    # Never past its request deadline (counted from accept here, as a preface's is).
    engine, adapter, conn, _ = make(Script(), request_timeout=5)
    engine.request_began = 95.5
    engine.stop()
    assert engine.deadline == 100.5


def test_a_stop_during_a_preface_waits_for_it_then_serves_the_request_behind_it() -> None:
    conn = Script([b"answer"])
    clock, log = Clock(), RecordingLog()
    engine = Engine(OneService(conn), PEER, log, Limits(request_timeout=5), clock, preface=Header())
    adapter = Adapter(engine, clock)
    engine.received(b"NAME 10.1")
    engine.stop()
    adapter.pump()
    assert engine.state is OPEN and engine.deadline == 101.0
    adapter.receive(b".2.3 999\n")  # the header alone: the request follows in its own segment
    assert log.clients == [Peer("10.1.2.3", 999)] and conn.got == [] and engine.state is OPEN
    adapter.receive(b"request")
    assert bytes(adapter.wire) == b"answer" and conn.got == [b"request", b""] and not log.errors
    # A header that does not come in the grace: logged, closed.
    engine = Engine(OneService(Script()), PEER, log, Limits(request_timeout=5), clock, preface=Header())
    adapter = Adapter(engine, clock)
    engine.stop()
    adapter.advance(1.0)
    assert engine.state is CLOSED and "the server stopped before its header was complete" in log.errors[-1]


def test_stale_timers_do_nothing() -> None:
    engine, adapter, _, _ = make(Script([[Wait(2.0), Send(b"x")]]))
    adapter.receive(b"q")
    adapter.advance(1.0)  # early: nothing
    assert bytes(adapter.wire) == b"" and engine.deadline == 102.0
    engine.reset()
    adapter.advance(5.0)
    assert bytes(adapter.wire) == b""


# -- the preface hook (e.g. a PROXY protocol header) -------------------------------------------
class Header:
    """``NAME host port\\n`` then the service's bytes."""

    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, data: bytes):
        self.buffer += data
        line, newline, rest = self.buffer.partition(b"\n")
        if not newline:
            return None
        parts = line.split()
        if len(parts) != 3 or parts[0] != b"NAME":
            raise ValueError("bad header")
        return Peer(parts[1].decode(), int(parts[2])), rest


def test_a_preface_names_the_peer_before_the_service_starts() -> None:
    conn = Script([b"hello"])
    clock, log = Clock(), RecordingLog()
    engine = Engine(OneService(conn), PEER, log, Limits(request_timeout=5), clock, preface=Header())
    assert log.clients == [] and engine.request_began == 100.0
    engine.received(b"NAME 10.1.2.3 ")
    assert log.clients == [] and conn.got == []
    adapter = Adapter(engine, clock)
    adapter.receive(b"999\nhi")
    assert log.clients == [Peer("10.1.2.3", 999)] and conn.got == [b"hi"] and bytes(adapter.wire) == b"hello"
    assert engine.request_began == 0.0 and engine.plain


def test_a_bad_or_late_preface_closes_the_connection() -> None:
    clock, log = Clock(), RecordingLog()
    engine = Engine(OneService(Script()), PEER, log, Limits(request_timeout=5), clock, preface=Header())
    engine.received(b"HELLO\n")
    assert engine.state is CLOSING and engine.wants_shutdown and "bad header" in log.errors[0]
    engine.shut(True)
    engine.received(b"more")  # dropped in the linger, never the service's
    assert engine.state is LINGERING and engine.conn is None and log.clients == []
    engine = Engine(OneService(Script()), PEER, log, Limits(request_timeout=5), clock, preface=Header())
    assert engine.sweep(106.0) and engine.aborted and log.clients == []


def test_every_early_end_of_a_preface_is_logged() -> None:
    """Its close, a reset, the request deadline (blocking models: a kernel timeout, a reset), the stop."""
    for end, said in [(lambda e, c: e.received(b""), "it closed before a complete header"),
                      (lambda e, c: e.reset(), "reset or timed out before a complete header"),
                      (lambda e, c: (setattr(c, "now", 106.0), e.reset()), "within the request deadline (5 s)"),
                      (lambda e, c: e.sweep(106.0), "within the request deadline (5 s)")]:
        clock, log = Clock(), RecordingLog()
        engine = Engine(OneService(Script()), PEER, log, Limits(request_timeout=5), clock, preface=Header())
        engine.received(b"NAME 10.1")
        end(engine, clock)
        assert engine.state is CLOSED and engine.aborted and log.clients == []
        assert len(log.errors) == 1 and said in log.errors[0] and "from 127.0.0.1" in log.errors[0], log.errors


def test_a_preface_factory_refuses_a_peer_before_a_byte_is_read() -> None:
    from sockkit.models.engine import open_engine
    from sockkit.models.settings import Server

    def make(peer: Peer) -> Header:
        if peer.host != "10.0.0.1":
            raise ValueError(f"{peer.host} may not send headers")
        return Header()

    log = RecordingLog()
    server = Server(OneService(Script()), [], Limits(), log, None, preface=make)
    refused = open_engine(server, PEER, Clock())
    assert refused.state is CLOSING and refused.wants_shutdown and refused.conn is None
    assert log.errors == ["127.0.0.1 may not send headers; closed"] and log.clients == []
    trusted = open_engine(server, Peer("10.0.0.1", 5), Clock())
    trusted.received(b"NAME 192.0.2.1 7\n")
    assert log.clients == [Peer("192.0.2.1", 7)]


def test_states_are_named() -> None:
    assert {s.name for s in (OPEN, CLOSING, LINGERING, CLOSED)} == {"OPEN", "CLOSING", "LINGERING", "CLOSED"}


# -- Wait.then: the reply made when the wait is over ------------------------------------------------
def test_a_waits_continuation_answers_when_it_is_over_ahead_of_what_was_queued() -> None:
    made_at: list[float] = []

    def later() -> bytes:
        made_at.append(adapter.clock.now)
        return b"stamped at %.1f;" % adapter.clock.now

    _engine, adapter, _conn, _ = make(Script([[Wait(2.0, then=later), Send(b"after")]]))
    adapter.receive(b"q")
    assert made_at == [] and bytes(adapter.wire) == b""
    adapter.advance(2.0)
    assert made_at == [102.0]
    assert bytes(adapter.wire) == b"stamped at 102.0;after"


def test_a_zero_wait_chain_makes_each_answer_once_the_one_before_is_out() -> None:
    """``Wait(0, then)``: how a service answers pipelined requests one at a time. Each continuation
    runs only once every earlier byte has left -- with a socket that takes nothing, only the first
    answer exists -- and a chain of them goes on without any new event from the adapter (a
    continuation's reply used to land in a fresh queue the running loop never looked at: the next
    answer was never sent and the blocking models closed the connection)."""
    made: list[int] = []

    def answer(n: int):
        made.append(n)
        return [Send(b"answer %d;" % n)] + ([Wait(0, then=lambda: answer(n + 1))] if n < 5 else [])

    engine, adapter, _conn, _ = make(Script([lambda data: answer(1)]))
    adapter.receive(b"requests", room=0)  # the client reads nothing
    assert made == [1] and not engine.wants_read
    adapter.pump(room=4)
    assert made == [1]  # still not out
    adapter.pump()
    assert made == [1, 2, 3, 4, 5]
    assert bytes(adapter.wire) == b"".join(b"answer %d;" % n for n in range(1, 6))
    assert engine.wants_read


def test_a_wait_or_a_file_starts_once_the_adapters_own_buffer_drains() -> None:
    """Under asyncio ``out`` is handed to the transport at once: a full transport buffer (``pause``)
    must hold the next answer back too, or every pipelined answer would pile up in it."""
    made: list[int] = []

    def answer(n: int):
        made.append(n)
        return [Send(b"%d;" % n), Wait(0, then=lambda: answer(n + 1))] if n < 3 else b"done"

    engine, adapter, _conn, _ = make(Script([lambda data: answer(1)]))
    adapter.receive(b"requests", room=0)
    engine.pause(True)  # the transport's buffer is full
    adapter.pump()
    assert made == [1] and bytes(adapter.wire) == b"1;"
    engine.pause(False)
    adapter.pump()
    assert made == [1, 2, 3] and bytes(adapter.wire) == b"1;2;done"


def test_a_continuation_that_fails_ends_the_connection_once() -> None:
    engine, adapter, _conn, log = make(Script([[Wait(1.0, then=lambda: 1 / 0), Send(b"never")]]))
    adapter.receive(b"q")
    adapter.advance(1.0)
    assert engine.state is CLOSED and engine.aborted and len(log.errors) == 1
    assert bytes(adapter.wire) == b""


def test_input_held_back_is_dropped_when_the_server_stops() -> None:
    """As the blocking models never read it: the answer in progress finishes, then the goodbye."""
    engine, adapter, conn, _ = make(Script([[Wait(1.0), Send(b"answer")]]))
    adapter.receive(b"q")
    adapter.receive(b"held")
    engine.stop()
    adapter.advance(1.0)
    assert conn.got == [b"q", b""]
    assert bytes(adapter.wire) == b"answer" and adapter.fin_at == 6


def test_the_engine_touches_no_socket_thread_or_clock() -> None:
    """What makes it testable like this: it imports nothing that does I/O or reads time (the clock is
    handed in), as services/ does not."""
    import ast
    from pathlib import Path

    import sockkit.models.engine as module

    tree = ast.parse(Path(module.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert not imported & {"socket", "select", "selectors", "asyncio", "threading", "time", "os", "ssl", "signal"}
    assert imported <= {"__future__", "enum", "errno", "collections", "typing", "sockkit"}


def test_a_file_that_fails_to_read_is_logged_once_and_a_socket_error_is_not() -> None:
    """An EIO while sending a file is the file's: one line naming the client and the file; a broken
    pipe is the client leaving: silent. Either ends the connection at once."""
    import errno

    for error, logged in ((OSError(errno.EIO, "Input/output error"), True),
                          (BrokenPipeError(errno.EPIPE, "Broken pipe"), False)):
        engine, _adapter, _conn, log = make(Script([[SendFile(TrackedFile(b"x" * 100), 0, 100, "dir/f.bin")]]))
        engine.received(b"get")
        assert engine.file is not None
        engine.file_failed(error)
        engine.file_failed(error)  # (a second report changes nothing)
        assert engine.state is CLOSED and engine.aborted and engine.file is None
        assert len(log.errors) == int(logged)
        if logged:
            assert "client ('127.0.0.1', 41234): reading 'dir/f.bin' failed at byte 0: Input/output error (EIO)" \
                in log.errors[0]


def test_secured_without_a_preface_starts_nothing_twice() -> None:
    """The blocking models call ``secured()`` after every TLS handshake; without a preface the service
    started at accept, and a second start logged the client twice and made a second connection."""
    engine, adapter, conn, log = make(Script([[Send(b"answer")]]))
    assert len(log.clients) == 1
    engine.secured()
    assert len(log.clients) == 1 and conn.closed == 0
    adapter.receive(b"q")
    assert bytes(adapter.wire) == b"answer"
