"""What one connection holds while its transfers run: a count of them and one server-wide slot.

Rule: a connection takes one slot (``--max-transfers``) when its first transfer begins and gives
it back when its last one ends, whatever speaks on it -- getfile's own requests or HTTP's (both
use this class, so both obey the same bounds). A file handed to the model is a ``TrackedFile``
whose ``close`` (the model's, once the bytes are sent or the connection is gone) ends its
transfer. Past the server's slots: ``Refused(BUSY)``. (A connection has one file open at a time:
pipelined requests are answered one at a time, connection.py.)
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable

from sockkit.protocols.getfile import ErrorCode
from sockkit.services.getfile.root import Refused
from sockkit.services.getfile.slots import Slot, Slots

#: Bodies up to this size are read and sent with their header in one write (one syscall for
#: small files instead of send + sendfile); larger ones go to the model as a zero-copy SendFile.
INLINE_BODY = 64 * 1024
#: Answer bytes made from requests already read before the rest wait for them to leave (a file
#: counts its size), by getfile's requests and HTTP's alike: small answers still go out many to a
#: send, and a client that pipelines and never reads holds one pause's worth. The engine's
#: HIGH_WATER, past which it holds input back, is the same figure.
ANSWER_BUDGET = 64 * 1024


class TrackedFile(io.FileIO):
    """A file handed to the model, telling its connection when the model is done with it."""

    def __init__(self, fd: int, on_close: Callable[[], None]) -> None:
        super().__init__(fd, "rb", closefd=True)
        self._on_close: Callable[[], None] | None = on_close

    def close(self) -> None:
        callback, self._on_close = self._on_close, None
        try:
            super().close()
        finally:
            if callback is not None:
                callback()


class Transfers:
    """One connection's transfers in flight and the slot they share."""

    __slots__ = ("queued", "slot", "slots")

    def __init__(self, slots: Slots) -> None:
        self.slots = slots
        self.queued = 0  # transfers begun and not ended
        self.slot: Slot | None = None

    def begin(self) -> None:
        """Count one more transfer, taking the server-wide slot if it is the first; raises Refused."""
        if self.queued == 0 and self.slot is None:
            try:
                slot = self.slots.acquire()
            except OSError:  # no descriptor left to take a slot with: as good as busy
                slot = None
            if slot is None:
                raise Refused(ErrorCode.BUSY, f"server busy: {self.slots.limit} transfers running; try again later")
            self.slot = slot
        self.queued += 1

    def end(self) -> None:
        """One transfer is over; the last one gives the slot back."""
        self.queued -= 1
        if self.queued <= 0:
            self.release()

    def hand_over(self, fd: int) -> TrackedFile:
        """``fd`` wrapped for the model as one transfer, ended when the model closes it."""
        self.begin()
        try:
            return TrackedFile(fd, self.end)
        except BaseException:
            self.end()
            raise

    def release(self) -> None:
        """Give the slot back now (the connection is over, or nothing is in flight)."""
        slot, self.slot = self.slot, None
        if slot is not None:
            with contextlib.suppress(Exception):
                slot.release()
