"""The served root: every path a client names is opened relative to one directory descriptor.

Rule: the descriptors are the check. Each component is opened with ``dir_fd`` and ``O_NOFOLLOW``
from the descriptor of its parent, so nothing can be swapped between "checking" and "opening": a
directory replaced by a symlink mid-request makes that ``openat`` fail (ELOOP/ENOTDIR), it is
never followed blindly. The final file is opened ``O_NOFOLLOW|O_NONBLOCK`` (a FIFO cannot hang
the server) and ``fstat`` on the open descriptor must say "regular file".

Symlink policy: a symlink is resolved here, by hand, with ``readlink(dir_fd=...)`` and the same
component walk, up to ``MAX_SYMLINKS`` links; its target is followed only while it stays inside
the root: a relative target whose ``..`` never climbs above the root, or an absolute target that
begins with the root's own absolute path (taken once at start-up), which is then walked from the
root descriptor like any other path. Anything else -- ``/etc/passwd``, ``../..``, ``/dev/zero`` --
is ``outside-root``. Even a stale start-up path cannot lead outside: the walk after it still
starts from the root descriptor.

Reserved names: a name beginning ``RESERVED_PREFIX`` belongs to an upload in progress (the name
an upload's file holds for the instant between being linked and renamed into place, or for its
whole life where the filesystem cannot create unnamed files). No request can name one: a client
path holding one is ``not-found``, a symlink target walking through one is ``not-found``, and
listings leave them out -- so no client can see, read, replace or write into another's upload.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections import deque

from sockkit.protocols.getfile import ErrorCode

#: Symlinks followed in one lookup (Linux's own MAXSYMLINKS is 40).
MAX_SYMLINKS = 40
#: errnos that mean "the server is short of resources", never "this entry is gone".
_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM})
#: Longest single name on Linux filesystems (NAME_MAX).
NAME_MAX = 255
#: Names the server keeps for uploads in progress; no request can reach them (module header).
RESERVED_PREFIX = ".sockkit-put-"


def is_reserved(name: str) -> bool:
    """True for a name that belongs to an upload in progress (see the module header)."""
    return name.startswith(RESERVED_PREFIX)


def _unknown(shown: str) -> Refused:
    # Exactly what a missing file gets: a client learns nothing about uploads in progress.
    return Refused(ErrorCode.NOT_FOUND, f"no such file: {shown}")

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
#: O_NOCTTY: a terminal device must never become our controlling terminal.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY


class Refused(Exception):
    """A path the server will not serve, with the protocol's code and a message for people."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def split_request_path(path: str) -> list[str]:
    """The components of a client's path; refuses absolute paths and any ``..``.

    ``..`` is refused outright in what clients send (even ``a/../b``, which stays inside): there
    is no honest reason to send it, and refusing it keeps the rule simple to state.
    """
    if path.startswith("/"):
        raise Refused(ErrorCode.OUTSIDE_ROOT, "absolute paths are not served; name a path relative to the root")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise Refused(ErrorCode.OUTSIDE_ROOT, "'..' is not allowed in paths")
    for part in parts:
        if len(part.encode("utf-8", "surrogateescape")) > NAME_MAX:
            raise Refused(ErrorCode.NOT_FOUND, f"a name is longer than {NAME_MAX} bytes")
        if is_reserved(part):
            raise _unknown(path)
    return parts


def refusal_for(exc: OSError, shown: str) -> Refused:
    """An OSError from a lookup, as a protocol error naming the path the client asked for."""
    if exc.errno == errno.ENOENT:
        return Refused(ErrorCode.NOT_FOUND, f"no such file: {shown}")
    if exc.errno == errno.ENOTDIR:
        return Refused(ErrorCode.NOT_FOUND, f"a component of {shown} is not a directory")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return Refused(ErrorCode.NOT_PERMITTED, f"permission denied: {shown}")
    if exc.errno == errno.ENAMETOOLONG:
        return Refused(ErrorCode.NOT_FOUND, f"name too long: {shown}")
    if exc.errno in _EXHAUSTED:
        return Refused(ErrorCode.BUSY, "server out of file descriptors; try again later")
    return Refused(ErrorCode.INTERNAL, f"cannot open {shown}: {exc.strerror}")


class Walk:
    """The chain of open directories from the root down to where a lookup stands.

    ``fds[0]`` is a duplicate of the root descriptor; ``..`` met inside a symlink target pops one
    level and popping the root itself means the target left the tree. Closing the walk closes
    every descriptor it holds.
    """

    __slots__ = ("fds", "links", "root_parts", "shown")

    def __init__(self, root_fd: int, shown: str, root_parts: tuple[str, ...] | None = None) -> None:
        self.fds = [os.dup(root_fd)]
        self.links = 0
        self.shown = shown
        #: The root's absolute path as components, for absolute symlink targets; None: refuse them.
        self.root_parts = root_parts

    @property
    def here(self) -> int:
        return self.fds[-1]

    def close(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds.clear()

    def __enter__(self) -> Walk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- moving -----------------------------------------------------------------------------------
    def _follow(self, name: str, todo: deque[str]) -> None:
        """``name`` in the current directory is a symlink: splice its target into the walk."""
        self.links += 1
        if self.links > MAX_SYMLINKS:
            raise Refused(ErrorCode.NOT_FOUND, f"too many symlinks while resolving {self.shown}")
        try:
            target = os.readlink(name, dir_fd=self.here)
        except OSError as exc:
            if exc.errno == errno.EINVAL:  # no longer a symlink: it changed under us
                raise Refused(ErrorCode.NOT_FOUND, f"{self.shown} changed while being looked up") from None
            raise refusal_for(exc, self.shown) from None
        parts = target.split("/")
        if target.startswith("/"):
            parts = self._under_root(parts)
            while len(self.fds) > 1:  # an absolute target is walked from the root itself
                os.close(self.fds.pop())
        todo.extendleft(reversed(parts))

    def _under_root(self, parts: list[str]) -> list[str]:
        """The rest of an absolute target after the root's own path; refuses any other target."""
        parts = [part for part in parts if part not in ("", ".")]
        prefix = self.root_parts
        if prefix is None or ".." in parts[:len(prefix)] or tuple(parts[:len(prefix)]) != prefix:
            raise Refused(ErrorCode.OUTSIDE_ROOT, f"{self.shown} is a symlink pointing outside the root")
        return parts[len(prefix):]

    def _up(self) -> None:
        if len(self.fds) == 1:
            raise Refused(ErrorCode.OUTSIDE_ROOT, f"{self.shown} is a symlink pointing outside the root")
        os.close(self.fds.pop())

    def _is_symlink(self, name: str) -> bool:
        try:
            return stat.S_ISLNK(os.stat(name, dir_fd=self.here, follow_symlinks=False).st_mode)
        except OSError:
            return False

    def clone(self) -> Walk:
        """An independent walk standing at the same place (every descriptor duplicated)."""
        twin = Walk.__new__(Walk)
        twin.fds = []
        try:
            for fd in self.fds:
                twin.fds.append(os.dup(fd))
        except OSError:
            twin.close()
            raise
        twin.links = 0
        twin.shown = self.shown
        twin.root_parts = self.root_parts
        return twin

    def enter(self, name: str) -> None:
        """Step into the real (not symlinked) subdirectory ``name``."""
        self.fds.append(os.open(name, _DIR_FLAGS, dir_fd=self.here))

    def leave(self) -> None:
        os.close(self.fds.pop())

    def target_of(self, name: str) -> os.stat_result | None:
        """What the symlink ``name`` here resolves to, if it stays inside the root and is a
        regular file or a directory; None otherwise. For listings only: nothing is opened for
        reading, and a GET of the same name does its own race-free lookup."""
        twin = self.clone()  # EMFILE here propagates: see below
        try:
            todo = deque([name])
            while todo:
                part = todo.popleft()
                if part in ("", "."):
                    continue
                if part == "..":
                    twin._up()
                    continue
                if is_reserved(part):
                    return None
                info = os.stat(part, dir_fd=twin.here, follow_symlinks=False)
                if stat.S_ISLNK(info.st_mode):
                    twin._follow(part, todo)
                elif not todo:
                    return info if stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode) else None
                elif stat.S_ISDIR(info.st_mode):
                    twin.enter(part)
                else:
                    return None
            return os.fstat(twin.here)  # the link led to a directory ("." or "dir/")
        except OSError as exc:
            if exc.errno in _EXHAUSTED:
                raise  # short of descriptors: the listing must fail, not omit this entry
            return None
        except Refused:
            return None
        finally:
            twin.close()

    def descend(self, parts: list[str]) -> None:
        """Walk into the directory ``parts`` names (relative to where the walk stands)."""
        todo = deque(parts)
        while todo:
            self._step(todo, want_dir=True)

    def _step(self, todo: deque[str], want_dir: bool) -> int | None:
        """Take the next component off ``todo``.

        Returns the open descriptor of the final regular file when ``want_dir`` is False and this
        was the last component; None after moving (into a directory, up, or through a link).
        """
        name = todo.popleft()
        if name in ("", "."):
            return None
        if name == "..":
            self._up()
            return None
        if is_reserved(name):  # reached through a symlink: client paths were checked already
            raise _unknown(self.shown)
        if not todo and not want_dir:
            return self._open_final(name, todo)
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=self.here)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR) and self._is_symlink(name):
                self._follow(name, todo)
                return None
            if exc.errno == errno.ENOTDIR and not todo:
                raise Refused(ErrorCode.NOT_FOUND, f"{self.shown} is not a directory") from None
            raise refusal_for(exc, self.shown) from None
        self.fds.append(fd)
        return None

    def _open_final(self, name: str, todo: deque[str]) -> int | None:
        try:
            info = os.stat(name, dir_fd=self.here, follow_symlinks=False)
        except OSError as exc:
            raise refusal_for(exc, self.shown) from None
        if stat.S_ISLNK(info.st_mode):
            self._follow(name, todo)
            return None
        if stat.S_ISDIR(info.st_mode):
            raise Refused(ErrorCode.IS_DIRECTORY, f"{self.shown} is a directory (use LIST1 or TREE1)")
        if not stat.S_ISREG(info.st_mode):
            # Checked before opening so a device is never even opened; fstat below is the real check.
            raise Refused(ErrorCode.NOT_REGULAR, f"{self.shown} is not a regular file")
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=self.here)
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # swapped for a symlink since the stat: look again
                todo.appendleft(name)
                return None
            raise refusal_for(exc, self.shown) from None
        try:
            info = os.fstat(fd)
        except OSError as exc:
            os.close(fd)
            raise refusal_for(exc, self.shown) from None
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            if stat.S_ISDIR(info.st_mode):
                raise Refused(ErrorCode.IS_DIRECTORY, f"{self.shown} is a directory (use LIST1 or TREE1)")
            raise Refused(ErrorCode.NOT_REGULAR, f"{self.shown} is not a regular file")
        return fd

    def open_file(self, parts: list[str]) -> int:
        """The open descriptor of the regular file ``parts`` names."""
        if not parts:
            raise Refused(ErrorCode.IS_DIRECTORY, "the root is a directory (use LIST1 or TREE1)")
        todo = deque(parts)
        # A link count bound also bounds this loop: every turn consumes a component or a link.
        while True:
            fd = self._step(todo, want_dir=False)
            if fd is not None:
                return fd
            if not todo:  # the path ended on "..", "." or a link to a directory
                raise Refused(ErrorCode.IS_DIRECTORY, f"{self.shown} is a directory (use LIST1 or TREE1)")


class ServedRoot:
    """The directory a server serves, held open for the server's lifetime."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        real = os.path.realpath(path)
        self.parts = tuple(part for part in real.split("/") if part)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)

    def walk(self, shown: str) -> Walk:
        try:
            return Walk(self.fd, shown, self.parts)
        except OSError as exc:  # EMFILE: answered busy, not as a server fault
            raise refusal_for(exc, shown) from None

    def open_file(self, path: str) -> int:
        """A descriptor of the regular file at ``path`` under the root; raises Refused."""
        parts = split_request_path(path)
        with self.walk(path or ".") as walk:
            return walk.open_file(parts)

    def open_directory(self, path: str) -> Walk:
        """A walk standing in the directory ``path`` names; the caller closes it."""
        parts = split_request_path(path)
        walk = self.walk(path or ".")
        try:
            walk.descend(parts)
        except BaseException:
            walk.close()
            raise
        return walk
