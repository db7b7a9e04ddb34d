"""A line splitter with a hard bound on how much it will hold, at a cost linear in what it is fed.

Rules:
- A peer can never make us buffer more than ``limit`` bytes of an unfinished line. The bound is a
  security feature, not a tuning knob: without it one client sending no newline grows the server
  without limit (asyncio's ``streams._DEFAULT_LIMIT`` exists for the same reason).
- With a ``memory`` holding (``line_memory``), what the unfinished line holds also counts against
  the server-wide pool, so the bounds of all connections add up to one for the server.
- Every byte is searched for a newline once and copied a bounded number of times, however the
  line is cut: the unfinished tail grows in place (a ``bytearray``) and only the bytes just fed are
  searched, since the tail is known to hold no newline. (It used to be joined to each new chunk
  and the whole of it split again: a 1 MiB line trickled in 100-byte pieces cost ~420 times the
  CPU of the same line sent at once -- issue 16.)
"""

from __future__ import annotations

from typing import NoReturn

from sockkit.services.line_memory import ALLOWANCE, LineHolding, LineMemoryFull


class LineTooLong(ValueError):
    """The peer sent more than ``limit`` bytes without a newline."""


class LineBuffer:
    """Collects bytes and hands out complete ``\\n``-terminated lines (without the newline)."""

    __slots__ = ("_charged", "_partial", "limit", "memory")

    def __init__(self, limit: int, memory: LineHolding | None = None) -> None:
        self.limit = limit
        #: The unfinished line: never holds a newline, never longer than ``limit``.
        self._partial = bytearray()
        #: Where the unfinished line is counted server-wide (None: only ``limit`` bounds it).
        self.memory = memory
        #: The line holds units of ``memory`` (it is longer than the allowance every line has).
        self._charged = False

    def feed(self, data: bytes) -> list[bytes]:
        """Complete lines in ``data`` (joined to what came before); keeps the unfinished tail.
        Raises LineTooLong past ``limit``, LineMemoryFull when the server's pool is spent."""
        partial = self._partial
        if partial:
            end = data.find(b"\n")  # the tail before it holds none: only the new bytes are searched
            if end < 0:
                partial += data
                if len(partial) > self.limit:
                    self._too_long()
                if self.memory is not None and (len(partial) > ALLOWANCE or self._charged):
                    self._account(len(partial))
                return []
            partial += memoryview(data)[:end]
            first = bytes(partial)
            self._partial = bytearray()  # a fresh one: the old may hold up to ``limit`` bytes of capacity
            lines = data[end + 1:].split(b"\n")
            tail = lines.pop()
            lines.insert(0, first)
        else:  # the common case, kept as cheap as it was: one split of the chunk
            *lines, tail = data.split(b"\n")
        if len(tail) > self.limit or any(len(line) > self.limit for line in lines):
            self._too_long()
        if tail:
            self._partial = bytearray(tail)
        if self.memory is not None and (len(tail) > ALLOWANCE or self._charged):
            self._account(len(tail))
        return lines

    def _account(self, size: int) -> None:
        try:
            self.memory.fit(size)
        except LineMemoryFull:
            self._drop()
            raise
        self._charged = size > ALLOWANCE

    def _drop(self) -> None:
        self._partial = bytearray()
        if self._charged:
            self._charged = False
            self.memory.fit(0)

    def _too_long(self) -> NoReturn:
        self._drop()
        raise LineTooLong(f"line longer than {self.limit} bytes")

    @property
    def holding(self) -> bool:
        """Part of a line has arrived and its newline has not."""
        return bool(self._partial)

    def pending(self) -> bytes:
        """The unfinished tail, emptied: what is left when the peer closes mid-line."""
        tail = bytes(self._partial)
        self._drop()
        return tail

    def close(self) -> None:
        """Give back whatever the buffer holds of the server's pool (its connection is gone)."""
        self._partial = bytearray()
        self._charged = False
        if self.memory is not None:
            self.memory.release()
