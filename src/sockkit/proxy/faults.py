"""The fault plan: given the bytes one side sent and the time they arrived, what to forward when.

Rule: nothing here performs I/O or reads a clock. ``now`` is an argument, randomness comes from a
``random.Random`` the caller owns (seed it and a run is reproducible), and the answer is a list of
frozen actions stamped with the absolute time they are due. The relay (``relay.py``) only sleeps
until each stamp and carries the action out, so every fault can be tested without a socket.

Rule: order is preserved. A piece is never due before the piece ahead of it, whatever the jitter
draws, because a TCP stream has no way to deliver byte 10 before byte 9.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field, fields

#: Piece size when only ``rate`` is set: about this fraction of a second of bandwidth per write,
#: so throughput is smooth at the scale a client can notice (a 1 MiB/s limit writes 50 KiB every
#: 50 ms rather than 1 MiB once a second).
RATE_PIECE_SECONDS = 0.05
#: ...but never more than this per write, so one piece cannot dominate the pending-output bound.
MAX_RATE_PIECE = 16 * 1024


@dataclass(frozen=True, slots=True)
class Faults:
    """What to do to the bytes flowing in one direction. Times in seconds, sizes in bytes.

    At most one of ``stall_after``, ``close_after`` and ``reset_after``: each ends the stream.
    """

    #: Added to every chunk's delivery time.
    latency: float = 0.0
    #: Each chunk's latency is drawn from ``latency ± jitter`` (never below 0, never reordering).
    jitter: float = 0.0
    #: Bytes per second at most; ``None`` for no limit.
    rate: int | None = None
    #: Forward in pieces of at most this many bytes, each its own write.
    slice: int | None = None
    #: Pause between two pieces (only meaningful with ``slice`` or ``rate``).
    slice_delay: float = 0.0
    #: Forward this many bytes, then swallow everything else while keeping the connection open.
    stall_after: int | None = None
    #: Forward this many bytes, then close both sides with a FIN.
    close_after: int | None = None
    #: Forward this many bytes, then reset both sides (RST).
    reset_after: int | None = None

    def __post_init__(self) -> None:
        for name in ("latency", "jitter", "slice_delay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, not {getattr(self, name)}")
        for name in ("rate", "slice"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 byte, not {value}")
        ends = [name for name in ("stall_after", "close_after", "reset_after") if getattr(self, name) is not None]
        if len(ends) > 1:
            raise ValueError(f"{' and '.join(ends)} both end the stream: give one per direction")
        for name in ends:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 bytes, not {getattr(self, name)}")

    @property
    def active(self) -> bool:
        return self != NO_FAULTS

    @property
    def budget(self) -> int | None:
        """Bytes forwarded before the stream ends, or ``None`` if it never ends on its own."""
        for value in (self.stall_after, self.close_after, self.reset_after):
            if value is not None:
                return value
        return None

    @property
    def piece_size(self) -> int | None:
        """Largest single write, or ``None`` to forward each chunk as it came."""
        pieces = []
        if self.slice is not None:
            pieces.append(self.slice)
        if self.rate is not None:
            pieces.append(max(1, min(MAX_RATE_PIECE, int(self.rate * RATE_PIECE_SECONDS))))
        return min(pieces) if pieces else None

    def describe(self) -> str:
        """``latency=50ms slice=10`` for logs; ``none`` without faults."""
        parts = []
        for item in fields(self):
            value = getattr(self, item.name)
            if value == item.default:
                continue
            name = item.name.replace("_", "-")
            parts.append(f"{name}={value * 1000:g}ms" if isinstance(value, float) else f"{name}={value}")
        return " ".join(parts) or "none"


NO_FAULTS = Faults()


@dataclass(frozen=True, slots=True)
class ProxyFaults:
    """Faults for both directions of every proxied connection.

    ``upstream`` is client -> target, ``downstream`` target -> client. ``probability`` is the chance
    that a connection gets the faults at all; the others pass through untouched.
    """

    upstream: Faults = field(default=NO_FAULTS)
    downstream: Faults = field(default=NO_FAULTS)
    probability: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"probability must be within 0..1, not {self.probability}")

    @classmethod
    def both(cls, probability: float = 1.0, **faults) -> ProxyFaults:
        """The same ``Faults(**faults)`` in both directions."""
        same = Faults(**faults)
        return cls(upstream=same, downstream=same, probability=probability)

    def describe(self) -> str:
        text = f"up: {self.upstream.describe()}; down: {self.downstream.describe()}"
        return text if self.probability == 1.0 else f"{text}; probability {self.probability:g}"


# --- actions: what the relay must do, and when -------------------------------------------------


@dataclass(frozen=True, slots=True)
class Forward:
    """Write ``data`` to the destination at time ``at`` (one write: this is what slicing controls)."""

    at: float
    data: bytes


@dataclass(frozen=True, slots=True)
class Finish:
    """The source ended its stream: half-close the destination (FIN) at ``at``."""

    at: float


@dataclass(frozen=True, slots=True)
class Stall:
    """From ``at`` on, forward nothing more; keep both connections open."""

    at: float


class CutKind(enum.Enum):
    #: Close both sides with a FIN, as a server that gives up cleanly.
    CLOSE = "close"
    #: Reset both sides (SO_LINGER 0), as a crashed peer or a middlebox.
    RESET = "reset"


@dataclass(frozen=True, slots=True)
class Cut:
    """At ``at``, once every earlier byte is written, end the whole connection."""

    at: float
    kind: CutKind


Action = Forward | Finish | Stall | Cut


class PlanState(enum.Enum):
    #: Bytes are being forwarded.
    FLOWING = "flowing"
    #: The budget ran out under ``stall_after``: later bytes are swallowed.
    STALLED = "stalled"
    #: The budget ran out under ``close_after``/``reset_after``: the connection is to be cut.
    CUT = "cut"
    #: The source sent its end of stream and it was passed on.
    FINISHED = "finished"


class DirectionPlan:
    """The schedule of one direction of one connection."""

    def __init__(self, faults: Faults, rng: random.Random | None = None) -> None:
        self.faults = faults
        self.state = PlanState.FLOWING
        #: Bytes handed out in ``Forward`` actions so far.
        self.forwarded = 0
        self._rng = rng or random.Random()
        #: Earliest time the next action may be due: keeps order, the rate and the slice delay.
        self._next_free = float("-inf")

    def start(self, now: float) -> list[Action]:
        """Actions due before any byte arrives: a budget of 0 ends the stream at once."""
        if self.faults.budget == 0:
            return [self._end(max(now, self._next_free))]
        return []

    def receive(self, data: bytes, now: float) -> list[Action]:
        """Schedule ``data`` that arrived at ``now``; ``b""`` means the source closed its side.

        After the stream has ended (stall, cut or finish) everything is swallowed: ``[]``.
        """
        if self.state is not PlanState.FLOWING:
            return []
        ready = max(now + self._delay(), self._next_free)
        if not data:
            self.state = PlanState.FINISHED
            self._next_free = ready
            return [Finish(ready)]
        budget = self.faults.budget
        keep = data if budget is None else data[: budget - self.forwarded]
        actions: list[Action] = []
        at = ready
        for piece in self._pieces(keep):
            at = max(ready, self._next_free)
            actions.append(Forward(at, piece))
            self.forwarded += len(piece)
            self._next_free = at
            if self.faults.rate is not None:
                self._next_free += len(piece) / self.faults.rate
            if self.faults.slice_delay:
                self._next_free = max(self._next_free, at + self.faults.slice_delay)
        if budget is not None and self.forwarded >= budget:
            actions.append(self._end(at))
        return actions

    def _end(self, at: float) -> Action:
        if self.faults.stall_after is not None:
            self.state = PlanState.STALLED
            return Stall(at)
        self.state = PlanState.CUT
        return Cut(at, CutKind.CLOSE if self.faults.close_after is not None else CutKind.RESET)

    def _delay(self) -> float:
        if not self.faults.jitter:
            return self.faults.latency
        return max(0.0, self.faults.latency + self._rng.uniform(-self.faults.jitter, self.faults.jitter))

    def _pieces(self, data: bytes) -> list[bytes]:
        size = self.faults.piece_size
        if size is None or len(data) <= size:
            return [data] if data else []
        return [data[i : i + size] for i in range(0, len(data), size)]
