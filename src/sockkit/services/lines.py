"""A line splitter with a hard bound on how much it will hold.

Rule: a peer can never make us buffer more than ``limit`` bytes of an unfinished line. The bound
is a security feature, not a tuning knob: without it one client sending no newline grows the
server without limit (asyncio's ``streams._DEFAULT_LIMIT`` exists for the same reason).
"""

from __future__ import annotations


class LineTooLong(ValueError):
    """The peer sent more than ``limit`` bytes without a newline."""


class LineBuffer:
    """Collects bytes and hands out complete ``\\n``-terminated lines (without the newline)."""

    __slots__ = ("_partial", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._partial = b""

    def feed(self, data: bytes) -> list[bytes]:
        """Complete lines in ``data`` (joined to what came before); keeps the unfinished tail."""
        if self._partial:
            data = self._partial + data
        *lines, tail = data.split(b"\n")
        if len(tail) > self.limit or any(len(line) > self.limit for line in lines):
            self._partial = b""
            raise LineTooLong(f"line longer than {self.limit} bytes")
        self._partial = tail
        return lines

    @property
    def holding(self) -> bool:
        """Part of a line has arrived and its newline has not."""
        return bool(self._partial)

    def pending(self) -> bytes:
        """The unfinished tail, emptied: what is left when the peer closes mid-line."""
        tail, self._partial = self._partial, b""
        return tail
