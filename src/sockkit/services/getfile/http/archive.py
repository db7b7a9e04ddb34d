"""A folder as one tar archive, streamed: headers in memory, file bodies zero-copy, no temporary file.

Rules:
- The archive is planned before its first byte: every member's header (Python's ``tarfile``,
  POSIX pax format, so long and non-ASCII names survive) and size come from the same listing rules
  as TREE1, so the answer has an exact Content-Length and a cut transfer is visibly incomplete.
- A member's file is opened only when the model reaches it (``LazyMember.fileno``), through the
  root's race-free walk, so an archive of any number of files holds one file open at a time. A
  member that vanished or shrank since the plan ends the connection: the client sees a short
  archive, never a wrong one; a member that grew is cut at its planned size.
- Memory is the plan: about a kilobyte per member (header and two small objects), bounded by
  ``MAX_MEMBERS``; bodies never pass through user space.
- The whole archive is one transfer (one ``--max-transfers`` slot), ended when its last member
  is closed by the model -- sent, or dropped with the connection.
"""

from __future__ import annotations

import errno
import io
import os
import tarfile
from collections.abc import Callable

from sockkit.protocols.getfile import Entry
from sockkit.services.actions import SendFile
from sockkit.services.getfile.root import Refused, ServedRoot

#: Most files in one archive (~1 KiB of plan each: ~20 MiB at the bound). Past it: refused, with advice.
MAX_MEMBERS = 20_000
BLOCK = 512
#: What ends a tar archive: two zero blocks.
END_OF_ARCHIVE = bytes(2 * BLOCK)


class LazyMember(io.RawIOBase):
    """One member's file, opened on first use by the model (``fileno``) and closed by it."""

    def __init__(self, root: ServedRoot, path: str, size: int, on_close: Callable[[], None]) -> None:
        super().__init__()
        self.root = root
        self.path = path
        self.size = size
        self.fd = -1
        self._on_close: Callable[[], None] | None = on_close

    @property
    def mode(self) -> str:
        return "rb"

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        if self.fd < 0:
            if self.closed:
                raise ValueError("member closed")
            try:
                fd = self.root.open_file(self.path)
            except Refused as refused:  # models expect OSError from a file: the connection ends
                raise FileNotFoundError(errno.ENOENT, f"archive member {self.path}: {refused.message}") from None
            if os.fstat(fd).st_size < self.size:
                os.close(fd)
                raise OSError(errno.EIO, f"archive member {self.path} shrank since the archive began")
            self.fd = fd
        return self.fd

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return os.lseek(self.fileno(), offset, whence)

    def readinto(self, buffer) -> int:
        return os.readv(self.fileno(), [buffer])

    def close(self) -> None:
        if self.closed:
            return
        fd, self.fd = self.fd, -1
        callback, self._on_close = self._on_close, None
        try:
            if fd >= 0:
                os.close(fd)
        finally:
            super().close()
            if callback is not None:
                callback()


class _Countdown:
    """Calls ``done`` once ``count`` members have been closed."""

    __slots__ = ("done", "left")

    def __init__(self, count: int, done: Callable[[], None]) -> None:
        self.left = count
        self.done = done

    def tick(self) -> None:
        self.left -= 1
        if self.left == 0:
            self.done()


def member_header(name: str, entry: Entry) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = entry.size
    info.mtime = entry.mtime_ns // 1_000_000_000
    info.mode = 0o644
    info.type = tarfile.REGTYPE
    return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")


def padding(size: int) -> bytes:
    return bytes(-size % BLOCK)


class Plan:
    """The archive of a folder: its exact length and the pieces that make it up."""

    def __init__(self, top: str, folder: str, entries: list[Entry]) -> None:
        """``top``: the name the archive unpacks into; ``folder``: its path under the root."""
        if len(entries) > MAX_MEMBERS:
            raise ValueError(f"more than {MAX_MEMBERS} files; download its subfolders one at a time")
        self.folder = folder
        #: Headers (with the previous member's padding in front) and the members they introduce.
        self.pieces: list[tuple[bytes, Entry]] = []
        length = 0
        pad = b""
        for entry in entries:
            head = pad + member_header(f"{top}/{entry.path}", entry)
            self.pieces.append((head, entry))
            length += len(head) + entry.size
            pad = padding(entry.size)
        self.tail = pad + END_OF_ARCHIVE
        self.length = length + len(self.tail)

    def parts(self, root: ServedRoot, done: Callable[[], None]) -> list[bytes | SendFile]:
        """The body, in order: bytes, and SendFiles of lazily opened members. ``done`` is called once
        every member's file has been closed (at once when there is none)."""
        with_bodies = [entry for _, entry in self.pieces if entry.size]
        countdown = _Countdown(len(with_bodies), done)
        parts: list[bytes | SendFile] = []
        prefix = f"{self.folder}/" if self.folder else ""
        for head, entry in self.pieces:
            parts.append(head)
            if entry.size:
                member = LazyMember(root, prefix + entry.path, entry.size, countdown.tick)
                parts.append(SendFile(member, 0, entry.size, prefix + entry.path))
        parts.append(self.tail)
        if not with_bodies:
            done()
        return parts
