"""PUT1: one upload, from the request line to the file under its final name.

Rule: the final name only ever holds a complete, verified, fsynced file. The body goes to a
temporary file created ``O_EXCL|O_NOFOLLOW`` beside the target (through the parent's directory
descriptor, so it cannot land outside the root); only when SIZE bytes arrived, their digest
matches and ``fsync`` succeeded is it linked (no overwrite: ``link`` fails atomically if the name
exists) or renamed (overwrite) into place, then the directory is fsynced. Any failure, and any
disconnect, removes the temporary file. A server killed with SIGKILL mid-upload leaves a
``.sockkit-put-*.tmp`` file behind, never a partial file under the final name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

import xxhash

from sockkit.protocols.getfile import DIGEST_ALGORITHM, ErrorCode, Put, format_count, format_error
from sockkit.services.getfile.root import Refused, ServedRoot, Walk, split_request_path
from sockkit.writeback import Writeback

TEMP_PREFIX = ".sockkit-put-"
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _no_space(shown: str) -> Refused:
    return Refused(ErrorCode.NO_SPACE, f"no space left on the server's disk for {shown}")


class Upload:
    """The state of one PUT1 between its ``OK1 0`` and its final answer."""

    __slots__ = ("digest", "error", "fd", "hasher", "name", "overwrite", "received", "shown", "size", "temp", "walk",
                 "writeback")

    def __init__(self, root: ServedRoot, request: Put) -> None:
        """Check the target and create the temporary file; raises Refused."""
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
        self.temp = ""
        self.writeback: Writeback | None = None
        self.walk: Walk = root.open_directory("/".join(parts[:-1]))
        try:
            self._check_target()
            self._check_space()
            self.temp = f"{TEMP_PREFIX}{os.urandom(8).hex()}.tmp"
            self.fd = os.open(self.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                              0o644, dir_fd=self.walk.here)
            self.writeback = Writeback(self.fd, 0)  # so the fsync in finish() has little left to wait for
        except OSError as exc:
            self.abort()
            raise self._refusal(exc) from None
        except BaseException:
            self.abort()
            raise

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
        fs = os.fstatvfs(self.walk.here)
        if fs.f_bavail * fs.f_frsize < self.size:
            raise _no_space(self.shown)

    # -- the body -------------------------------------------------------------------------------
    @property
    def wanted(self) -> int:
        return self.size - self.received

    def feed(self, data: memoryview) -> None:
        """Body bytes (never more than ``wanted``); after an error they are counted and dropped."""
        self.received += len(data)
        if self.error is not None:
            return
        self.hasher.update(data)
        count = len(data)
        try:
            while data:
                written = os.write(self.fd, data)
                data = data[written:]
            self.writeback.advance(count)
        except OSError as exc:
            self.error = self._refusal(exc)

    def finish(self) -> bytes:
        """The final answer once every byte arrived: ``OK1 SIZE`` or the error."""
        try:
            if self.error is not None:
                raise self.error
            actual = f"{DIGEST_ALGORITHM}:{self.hasher.hexdigest()}"
            if actual != self.digest:
                raise Refused(ErrorCode.CORRUPT, f"upload of {self.shown} arrived damaged (digest {actual}); "
                                                 "nothing was stored")
            try:
                os.fsync(self.fd)
                os.close(self.fd)
                self.fd = -1
                self._put_in_place()
                os.fsync(self.walk.here)
            except OSError as exc:
                raise self._refusal(exc) from None
        except Refused as refused:
            self.abort()
            return format_error(refused.code, refused.message)
        self.temp = ""
        self.abort()  # releases the directory descriptor; nothing left to remove
        return format_count(self.size)

    def _put_in_place(self) -> None:
        here = self.walk.here
        if self.overwrite:
            try:
                os.rename(self.temp, self.name, src_dir_fd=here, dst_dir_fd=here)
            except IsADirectoryError:
                raise Refused(ErrorCode.IS_DIRECTORY, f"{self.shown} is a directory") from None
            return
        try:
            # link() refuses an existing name atomically: no window between "check" and "rename".
            os.link(self.temp, self.name, src_dir_fd=here, dst_dir_fd=here, follow_symlinks=False)
        except FileExistsError:
            raise Refused(ErrorCode.EXISTS,
                          f"{self.shown} appeared on the server during the upload; nothing was replaced") from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            # A filesystem without hard links: check, then rename (a tiny window, documented).
            self._check_target()
            os.rename(self.temp, self.name, src_dir_fd=here, dst_dir_fd=here)
            return
        os.unlink(self.temp, dir_fd=here)

    def abort(self) -> None:
        """Remove the temporary file (if any) and release every descriptor; idempotent."""
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
        if self.temp and self.walk.fds:
            with contextlib.suppress(OSError):
                os.unlink(self.temp, dir_fd=self.walk.here)
        self.temp = ""
        self.walk.close()
