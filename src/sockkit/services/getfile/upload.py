"""One upload, from its checked target to the file under its final name: THE place for upload rules.

Every way into the server that stores a file (``PUT1``, HTTP's PUT and form uploads) goes through
``Upload``, made by ``GetfileService.begin_upload`` (checks the target, takes no space yet, raises
``Refused``): ``feed`` it the body, then ``complete`` (raises ``Refused``) or ``abort``. The
transfer slot and the wire answers stay with the caller.

Rules:
- The final name only ever holds a complete, verified, fsynced file, and exactly the bytes this
  upload's own hash verified. Only this upload's descriptor ever writes its file: no other client
  can see it, read it, replace it or write into it (a stalled one may be emptied to make room, and
  is then refused, never put in place) (issue 16: a client that listed another's
  temporary name and uploaded over it got its bytes put in place under the owner's verified OK).
- So the body goes to an *unnamed* file (``O_TMPFILE`` in the target's directory, opened through
  the parent's directory descriptor, so it cannot land outside the root). At the end it is linked
  into place with ``linkat`` through ``/proc/self/fd`` (no overwrite: fails atomically if the name
  exists), or, to overwrite, linked under a reserved name and renamed over the target.
- Where there is no ``O_TMPFILE`` (an old kernel, a filesystem without it) or no ``/proc``, the
  body goes to a file under a reserved name (``root.RESERVED_PREFIX``) created
  ``O_CREAT|O_EXCL|O_NOFOLLOW``. No request can name a reserved name and no listing shows one
  (root.py), so this too is invisible and unreachable to every client, in every model: the rule
  lives in the path checks every process runs, not in any shared state.
- A stalled upload gives its disk space back as soon as another needs it (stalls.py): its file is
  emptied from outside and its client told ``busy``; so it holds the disk for ``--upload-stall``
  (30 s) at most while anyone else wants it, not for the idle timeout (300 s).
- Any failure, and any disconnect, removes the file (an unnamed one simply vanishes when its
  descriptor closes, even if the server is killed with SIGKILL; a reserved name is left behind
  only by a SIGKILL during the fallback, and never shown to anyone).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import stat

import xxhash

from sockkit.protocols.getfile import DIGEST_ALGORITHM, ErrorCode, Put
from sockkit.services.getfile.root import RESERVED_PREFIX, Refused, ServedRoot, Walk, split_request_path
from sockkit.services.getfile.stalls import Stalls, Ticket
from sockkit.writeback import Writeback

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
#: errnos of ``open(O_TMPFILE)`` that mean "not here" (filesystem or kernel), not "refused".
_NO_TMPFILE = (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT)
_WRITE_FLAGS = os.O_WRONLY | os.O_CLOEXEC
_PROC_FD = "/proc/self/fd"


@functools.cache
def unnamed_files_possible() -> bool:
    """Whether this process can create an unnamed file and later give it a name: ``O_TMPFILE``
    exists and ``/proc/self/fd`` is there to ``linkat`` through (``AT_EMPTY_PATH`` would need
    CAP_DAC_READ_SEARCH). Checked once per process; each filesystem is still asked at ``open``."""
    return hasattr(os, "O_TMPFILE") and os.path.isdir(_PROC_FD)


def reserved_name() -> str:
    return f"{RESERVED_PREFIX}{os.urandom(8).hex()}.tmp"


def _no_space(shown: str) -> Refused:
    return Refused(ErrorCode.NO_SPACE, f"no space left on the server's disk for {shown}")


class Upload:
    """The state of one upload between "send it" and its final answer.

    ``request.digest`` is ``xxh3-128:<hex>`` and is checked before anything is renamed into
    place; ``None`` (a transport that carries no digest) checks the size alone.
    """

    __slots__ = ("digest", "error", "fd", "hasher", "name", "overwrite", "received", "shown", "size", "stalled",
                 "stalls", "temp", "ticket", "walk", "writeback")

    def __init__(self, root: ServedRoot, request: Put, max_size: int | None = None,
                 stalls: Stalls | None = None) -> None:
        """Check the target and create the file the body goes to; raises Refused. ``max_size``: the
        server's ``--max-upload`` (None: only the disk's free space bounds an upload). ``stalls``:
        where uploads in progress are listed, so that stalled ones give their disk space back to
        this one (stalls.py) when it finds too little room."""
        if max_size is not None and request.size > max_size:
            raise Refused(ErrorCode.TOO_LARGE, f"{request.path} is {request.size} bytes; this server takes uploads "
                                               f"of at most {max_size} bytes (--max-upload)")
        parts = split_request_path(request.path)
        if not parts:
            raise Refused(ErrorCode.IS_DIRECTORY, "the root is a directory; name a file to upload")
        self.shown = request.path
        self.name = parts[-1]
        self.size = request.size
        self.digest = request.digest
        self.overwrite = request.overwrite
        self.received = 0
        self.hasher = xxhash.xxh3_128()
        self.error: Refused | None = None
        self.fd = -1
        #: The file's name in the target's directory while it has one; "" while it is unnamed.
        self.temp = ""
        self.writeback: Writeback | None = None
        self.stalls = stalls
        self.ticket: Ticket | None = None
        #: Reclaimed while stalled (stalls.py): its client is told at once, not after the rest.
        self.stalled = False
        self.walk: Walk = root.open_directory("/".join(parts[:-1]))
        try:
            self._check_target()
            self._check_space()
            self.fd = self._create()
            self.writeback = Writeback(self.fd, 0)  # so the fsync in complete() has little left to wait for
            if stalls is not None:
                self.ticket = stalls.register(self.fd)
        except OSError as exc:
            self.abort()
            raise self._refusal(exc) from None
        except BaseException:
            self.abort()
            raise

    def _create(self) -> int:
        """The descriptor the body is written to: unnamed where possible, else a reserved name."""
        if unnamed_files_possible():
            try:
                return os.open(".", _WRITE_FLAGS | os.O_TMPFILE, 0o644, dir_fd=self.walk.here)
            except OSError as exc:
                if exc.errno not in _NO_TMPFILE:
                    raise
        self.temp = reserved_name()
        return os.open(self.temp, _WRITE_FLAGS | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644,
                       dir_fd=self.walk.here)

    def _refusal(self, exc: OSError) -> Refused:
        if exc.errno in _NO_SPACE:
            return _no_space(self.shown)
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return Refused(ErrorCode.NOT_PERMITTED, f"cannot write {self.shown}: {exc.strerror}")
        return Refused(ErrorCode.INTERNAL, f"cannot write {self.shown}: {exc.strerror}")

    def _check_target(self) -> None:
        try:
            info = os.stat(self.name, dir_fd=self.walk.here, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(info.st_mode):
            raise Refused(ErrorCode.IS_DIRECTORY, f"{self.shown} is a directory")
        if not (stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode)):
            raise Refused(ErrorCode.NOT_REGULAR, f"{self.shown} exists and is not a regular file")
        if not self.overwrite:
            raise Refused(ErrorCode.EXISTS, f"{self.shown} exists on the server; upload with --force to replace it")

    def _check_space(self) -> None:
        if self._free() < self.size and (self.stalls is None or not self.stalls.reclaim() or self._free() < self.size):
            raise _no_space(self.shown)

    def _free(self) -> int:
        fs = os.fstatvfs(self.walk.here)
        return fs.f_bavail * fs.f_frsize

    # -- the body -------------------------------------------------------------------------------
    @property
    def wanted(self) -> int:
        return self.size - self.received

    def feed(self, data: memoryview) -> None:
        """Body bytes (never more than ``wanted``); after an error they are counted and dropped."""
        self.received += len(data)
        if self.error is not None:
            return
        if self.ticket is not None and not self.stalls.progress(self.ticket):
            self.stalled = True
            self.error = Refused(ErrorCode.BUSY, f"upload of {self.shown} stalled: nothing came for "
                                                 f"{self.stalls.after:g} s and another upload needed the disk, so its "
                                                 "bytes were dropped; send it again")
            return
        self.hasher.update(data)
        try:
            self._write(data)
            self.writeback.advance(len(data))
        except OSError as exc:
            self.error = self._refusal(exc)

    def _write(self, data: memoryview) -> None:
        retried = False
        while data:
            try:
                written = os.write(self.fd, data)
            except OSError as exc:
                # The disk is full: uploads that stalled give their space back, then one more try.
                if exc.errno not in _NO_SPACE or retried or self.stalls is None or not self.stalls.reclaim():
                    raise
                retried = True
                continue
            data = data[written:]

    def complete(self) -> None:
        """Once every byte arrived: verify, fsync, put in place; raises Refused (nothing stored).
        Either way the upload is over and holds nothing afterwards."""
        try:
            if self.error is not None:
                raise self.error
            if self.received != self.size:
                raise Refused(ErrorCode.CORRUPT, f"upload of {self.shown} ended after {self.received} of "
                                                 f"{self.size} bytes; nothing was stored")
            actual = f"{DIGEST_ALGORITHM}:{self.hasher.hexdigest()}"
            if self.digest is not None and actual != self.digest:
                raise Refused(ErrorCode.CORRUPT, f"upload of {self.shown} arrived damaged (digest {actual}); "
                                                 "nothing was stored")
            try:
                os.fsync(self.fd)
                self._put_in_place()
                os.fsync(self.walk.here)
            except OSError as exc:
                raise self._refusal(exc) from None
        finally:
            self.abort()

    def _put_in_place(self) -> None:
        here = self.walk.here
        if not self.temp:  # unnamed: the only name it ever gets is chosen here
            if not self.overwrite:
                self._link_unnamed(self.name)
                return
            self.temp = reserved_name()
            self._link_unnamed(self.temp)
        if self.overwrite:
            try:
                os.rename(self.temp, self.name, src_dir_fd=here, dst_dir_fd=here)
            except IsADirectoryError:
                raise Refused(ErrorCode.IS_DIRECTORY, f"{self.shown} is a directory") from None
            self.temp = ""
            return
        try:
            # link() refuses an existing name atomically: no window between "check" and "rename".
            os.link(self.temp, self.name, src_dir_fd=here, dst_dir_fd=here, follow_symlinks=False)
        except FileExistsError:
            raise self._appeared() from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            # A filesystem without hard links: check, then rename (a tiny window, documented).
            self._check_target()
            os.rename(self.temp, self.name, src_dir_fd=here, dst_dir_fd=here)
            self.temp = ""
            return
        os.unlink(self.temp, dir_fd=here)
        self.temp = ""

    def _link_unnamed(self, name: str) -> None:
        """Give the unnamed file ``name`` in its directory (fails if the name exists)."""
        try:
            os.link(f"{_PROC_FD}/{self.fd}", name, dst_dir_fd=self.walk.here, follow_symlinks=True)
        except FileExistsError:
            raise self._appeared() from None

    def _appeared(self) -> Refused:
        return Refused(ErrorCode.EXISTS, f"{self.shown} appeared on the server during the upload; nothing was "
                                         "replaced")

    def abort(self) -> None:
        """Remove the file (if it is not in place) and release every descriptor; idempotent."""
        ticket, self.ticket = self.ticket, None
        if ticket is not None:  # before the descriptor closes: its number may be reused at once
            self.stalls.forget(ticket)
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
        if self.temp and self.walk.fds:
            with contextlib.suppress(OSError):
                os.unlink(self.temp, dir_fd=self.walk.here)
        self.temp = ""
        self.walk.close()
