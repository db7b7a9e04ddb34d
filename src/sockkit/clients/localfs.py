"""The client's side of the disk: where a download may write, ``.part`` files, the final rename.

Rules this module keeps:
* Nothing is ever opened by a path the server chose. Every file is opened relative to a directory
  descriptor, one component at a time, with ``O_NOFOLLOW``: a symlink planted in the local tree
  cannot lead a write out of the destination (rsync's SECURITY.md advice).
* A download is written to ``<name>.<32 hex digits>.part`` next to its destination. The hex digits
  are the xxh3-128 digest of the remote file version the bytes belong to, so the next run can ask
  the server to resume exactly that version (``GET1 <part size> xxh3-128:<hex> PATH``) and a part
  from another version is never continued.
* The final name appears only by an atomic rename of a complete, verified, fsync'ed file, and never
  replaces an existing file unless asked (``renameat2(RENAME_NOREPLACE)``; fallback ``link``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import stat
from typing import NamedTuple

import xxhash

from sockkit import libc
from sockkit.errors import DestinationError, DestinationExists, NotEnoughSpace, describe_os_error

PART_SUFFIX = ".part"
#: Linux NAME_MAX: a part name must fit in one directory entry.
NAME_MAX = 255
_PART = re.compile(r"^(?P<stem>.+)\.(?P<hex>[0-9a-f]{32})\.part$", re.DOTALL)
_DIGEST = re.compile(r"^xxh3-128:([0-9a-f]{32})$")
_RENAME_NOREPLACE = 1
_AT_FDCWD = -100


def digest_hex(digest: str) -> str | None:
    """The 32 hex digits of a well-formed ``xxh3-128:...`` digest, else None (never trust the text)."""
    match = _DIGEST.match(digest)
    return match.group(1) if match else None


def part_stem(name: str) -> str:
    """The part-file prefix for ``name``; shortened (with a hash of the full name) when too long."""
    room = NAME_MAX - 1 - 32 - len(PART_SUFFIX)
    if len(name) * 4 <= room or len(name.encode("utf-8", "surrogateescape")) <= room:  # UTF-8: <= 4 bytes a char
        return name
    tag = xxhash.xxh64(name.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    cut = name.encode("utf-8", "surrogateescape")[: room - 9].decode("utf-8", "ignore")
    return f"{cut}~{tag}"


def part_name(name: str, hex_digest: str) -> str:
    return f"{part_stem(name)}.{hex_digest}{PART_SUFFIX}"


class PartFile(NamedTuple):
    name: str
    hex_digest: str
    size: int
    mtime_ns: int


def scan_parts(dirfd: int) -> dict[str, list[PartFile]]:
    """Every part file in a directory, by the stem of the name it belongs to (one listing per directory)."""
    found: dict[str, list[PartFile]] = {}
    with os.scandir(dirfd) as entries:
        for entry in entries:
            match = _PART.match(entry.name)
            if not match:
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode):
                found.setdefault(match["stem"], []).append(
                    PartFile(entry.name, match["hex"], info.st_size, info.st_mtime_ns))
    return found


def newest_part(parts: dict[str, list[PartFile]], name: str) -> PartFile | None:
    candidates = parts.get(part_stem(name), [])
    return max(candidates, key=lambda p: (p.mtime_ns, p.size)) if candidates else None


def open_directory(path: str | os.PathLike) -> int:
    """A descriptor for a directory the user named (their own path: symlinks in it are theirs)."""
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise DestinationError(f"{os.fspath(path)}: no such directory") from None
    except NotADirectoryError:
        raise DestinationError(f"{os.fspath(path)}: not a directory") from None
    except OSError as exc:
        raise DestinationError(describe_os_error(exc)) from exc


def open_subdirectory(dirfd: int, name: str, create: bool) -> int:
    """``name`` inside ``dirfd`` as a descriptor; never follows a symlink; creates it if asked."""
    for _ in range(2):  # bounded: at most one mkdir between two attempts
        try:
            return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
        except FileNotFoundError:
            if not create:
                raise
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o777, dir_fd=dirfd)
        except (NotADirectoryError, OSError) as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise DestinationError(f"{name}: exists locally and is not a directory (a symlink is never "
                                       "followed)") from None
            raise DestinationError(describe_os_error(exc)) from exc
    raise DestinationError(f"{name}: cannot create the directory")


def existing_kind(dirfd: int, name: str) -> str | None:
    """'file', 'dir', 'other' or None for what ``name`` is now (symlinks count as 'other')."""
    try:
        info = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if stat.S_ISREG(info.st_mode):
        return "file"
    if stat.S_ISDIR(info.st_mode):
        return "dir"
    return "other"


def open_part(dirfd: int, name: str, *, resume: bool) -> int:
    """Open (resume) or create-and-empty (fresh) a part file, locked against a second downloader."""
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
    if not resume:
        # The usual case: a brand-new file is plain, empty and ours, so no fstat or truncate.
        try:
            fd = os.open(name, flags | os.O_CREAT | os.O_EXCL, 0o666, dir_fd=dirfd)
        except FileExistsError:
            pass
        except OSError as exc:
            raise DestinationError(describe_os_error(exc)) from exc
        else:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a later run resuming it must wait its turn
            return fd
    try:
        fd = os.open(name, flags, 0o666, dir_fd=dirfd)
    except OSError as exc:
        raise DestinationError(describe_os_error(exc)) from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            # A hard link would make our writes land in some other file too.
            raise DestinationError(f"{name}: not a plain file; remove it and run again")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DestinationError(f"{name}: another download is writing this file") from None
        if not resume:
            os.ftruncate(fd, 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def remove_quietly(dirfd: int, name: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(name, dir_fd=dirfd)


def check_space(dirfd: int, needed: int, where: str) -> None:
    """NotEnoughSpace before a byte is written when the file cannot fit."""
    info = os.fstatvfs(dirfd)
    free = info.f_bavail * info.f_frsize
    if needed > free:
        raise NotEnoughSpace(f"not enough space in {where}: the file needs {human_size(needed)} more, "
                             f"{human_size(free)} free")


def human_size(count: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count} bytes"


def hash_file_prefix(fd: int, size: int, hasher, buffer: memoryview) -> None:
    """Feed the first ``size`` bytes of ``fd`` to ``hasher`` (a resumed part, read back from disk)."""
    offset = 0
    while offset < size:
        got = os.preadv(fd, [buffer[: min(len(buffer), size - offset)]], offset)
        if got <= 0:
            raise DestinationError("the partial copy shrank while being read")
        hasher.update(buffer[:got])
        offset += got


def rename_noreplace(dirfd: int, source: str, target: str) -> None:
    """Atomically give ``source`` the name ``target``; FileExistsError if ``target`` exists."""
    renameat2 = libc.function("renameat2")
    if renameat2 is not None:
        result = renameat2(dirfd, os.fsencode(source), dirfd, os.fsencode(target), _RENAME_NOREPLACE)
        if result == 0:
            return
        import ctypes  # loaded already, by libc.function

        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise OSError(code, os.strerror(code), target)
    # The filesystem has no RENAME_NOREPLACE: link() also refuses an existing target, atomically.
    os.link(source, target, src_dir_fd=dirfd, dst_dir_fd=dirfd, follow_symlinks=False)
    os.unlink(source, dir_fd=dirfd)


def rename_into_place(dirfd: int, part: str, name: str, *, force: bool) -> None:
    """Give the (already durable) part its final name: replace only with ``force``, never a directory."""
    try:
        if force:
            try:
                os.rename(part, name, src_dir_fd=dirfd, dst_dir_fd=dirfd)
            except IsADirectoryError:  # rename(2) never puts a file over a directory
                raise DestinationError(f"{name}: is a directory; not replaced") from None
        else:
            try:
                rename_noreplace(dirfd, part, name)
            except FileExistsError:
                raise DestinationExists(f"{name}: already exists (use --force to replace it; the verified "
                                        f"copy is kept as {part})") from None
    except OSError as exc:
        raise DestinationError(describe_os_error(exc)) from exc


def commit(dirfd: int, part: str, name: str, *, force: bool, fd: int, mtime_ns: int | None,
           durable: bool = True) -> None:
    """fsync the part, give it its final name (replacing only with ``force``), fsync the directory
    (``durable=False``: the same without the fsyncs)."""
    try:
        if mtime_ns is not None:
            os.utime(fd, ns=(mtime_ns, mtime_ns))
        if durable:
            os.fsync(fd)
    except OSError as exc:
        raise DestinationError(describe_os_error(exc)) from exc
    rename_into_place(dirfd, part, name, force=force)
    if not durable:
        return
    try:
        os.fsync(dirfd)
    except OSError as exc:
        raise DestinationError(describe_os_error(exc)) from exc


def fsync_entry(dirfd: int, name: str) -> None:
    """fsync the regular file ``name`` in ``dirfd`` (reopened: a batch does not keep every file open)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise DestinationError(describe_os_error(exc)) from exc
