"""The getfile client: ``download()`` is the one entry point for the CLI, the GUI and ``getfile``.

Rules (issue 3, "Safety (the client)"):
* The local name is the one the user asked for (the request's base name, or ``dest``), never a
  name, path or size from the server; sizes are checked against what arrives and against free space.
* Bytes go to ``<name>.<digest>.part`` (see localfs); the final name appears only by an atomic
  rename after size and xxh3-128 digest are verified and the file is fsync'ed. On any failure the
  final name is untouched and the part stays for a resume (unless it proved corrupt).
* A resume sends the part's size and the digest of the version it belongs to; a server answering
  offset 0 means the file changed: the part is discarded and the download starts over, never spliced.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import xxhash

from sockkit.clients import localfs
from sockkit.clients.getfile_session import Session
from sockkit.clients.transfer import Buffer, RateLimiter, receive_exactly, write_all
from sockkit.errors import (
    DestinationError,
    DestinationExists,
    IntegrityError,
    ProtocolViolation,
    SockkitError,
    describe_os_error,
    printable,
)
from sockkit.protocols import getfile as wire
from sockkit.writeback import Writeback, start_writeback

if TYPE_CHECKING:
    import ssl

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = wire.DEFAULT_PORT
#: In a tree, files smaller than this skip the per-file free-space check (the whole tree's size
#: was checked up front; a statvfs per 4 KiB file costs more than the file).
SPACE_CHECK_MIN = 1 << 20
#: Progress callbacks per second at most (plus one at the end): enough for a bar, cheap for a GUI queue.
PROGRESS_HZ = 10


class Progress(NamedTuple):
    done: int           # bytes of the file now on disk (resumed prefix included)
    total: int          # size of the whole file (or tree)
    resumed_from: int   # bytes that were already there when this run started
    elapsed: float      # seconds since this run started

    @property
    def speed(self) -> float:
        """Bytes/s received by this run (the resumed prefix does not count)."""
        return (self.done - self.resumed_from) / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        speed = self.speed
        return (self.total - self.done) / speed if speed > 0 else None


class DownloadResult(NamedTuple):
    path: Path
    size: int
    resumed_from: int
    digest: str
    seconds: float
    #: False only for the chapter's protocol, which carries no size or digest to check.
    verified: bool = True
    #: True when the destination already held exactly this version and nothing was transferred.
    unchanged: bool = False


class Reporter:
    """Calls ``progress`` at most PROGRESS_HZ times a second, from the downloading thread."""

    def __init__(self, callback: Callable[[Progress], None] | None, total: int, done: int, start: float) -> None:
        self.callback = callback
        self.total, self.done, self.resumed_from = total, done, done
        self.start = start
        self.last = 0.0

    def add(self, count: int) -> None:
        self.done += count
        if self.callback is not None:
            now = time.monotonic()
            if now - self.last >= 1 / PROGRESS_HZ:
                self.last = now
                self.callback(Progress(self.done, self.total, self.resumed_from, now - self.start))

    def finish(self) -> None:
        if self.callback is not None:
            self.callback(Progress(self.done, self.total, self.resumed_from, time.monotonic() - self.start))


def remote_basename(remote_path: str) -> str:
    """The last component of a remote path: the only name the client will write under."""
    name = remote_path.rstrip("/").rsplit("/", 1)[-1]
    if name in ("", ".", ".."):
        raise DestinationError(f"{printable(remote_path)!r} does not end in a file name; give one with -o")
    return name


class Target(NamedTuple):
    directory: Path
    name: str
    stream: Path | None = None  # a device or FIFO written straight through (/dev/null)

    @property
    def path(self) -> Path:
        return self.stream if self.stream is not None else self.directory / self.name


def resolve_destination(remote_path: str, dest: str | os.PathLike) -> Target:
    """dest an existing directory -> dest/<base name of the request>; otherwise dest is the file."""
    path = Path(dest)
    try:
        info = path.stat()
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise DestinationError(describe_os_error(exc)) from exc
    if info is not None and stat.S_ISDIR(info.st_mode):
        return Target(path, remote_basename(remote_path))
    if info is not None and (stat.S_ISCHR(info.st_mode) or stat.S_ISFIFO(info.st_mode)):
        return Target(path.parent, path.name, stream=path)
    if os.fspath(dest).endswith("/") or path.name in ("", ".", ".."):
        raise DestinationError(f"{os.fspath(dest)}: no such directory")
    return Target(path.parent, path.name)


class Plan(NamedTuple):
    """What one GET1 asks for: from scratch, or the rest of a part file."""

    part: localfs.PartFile | None

    @property
    def offset(self) -> int:
        return self.part.size if self.part else 0

    @property
    def version(self) -> str | None:
        return f"xxh3-128:{self.part.hex_digest}" if self.part else None


class Fetch(NamedTuple):
    """The shared state of one file being received (single download and each file of a tree)."""

    session: Session
    remote_path: str
    dirfd: int
    name: str
    display: Path
    plan: Plan
    force: bool
    buffer: Buffer
    reporter: Reporter
    cancel: threading.Event | None
    limiter: RateLimiter | None
    timeout: float
    #: None: fsync and rename now. A list: verified part names are appended; the caller renames later.
    deferred: list[str] | None = None
    #: False (``--no-fsync``): still verified and renamed atomically, but not forced to disk.
    durable: bool = True


def read_header(session: Session, remote_path: str) -> wire.FileHeader:
    fields = session.answer(f"fetching {remote_path}", path=remote_path)
    try:
        header = wire.parse_header(fields)
    except wire.ProtocolError as exc:
        raise ProtocolViolation(f"bad answer to GET1: {exc.message}") from None
    if localfs.digest_hex(header.digest) is None:
        raise ProtocolViolation(f"the server announced a malformed digest {printable(header.digest, 80)!r}")
    return header


def receive_file(job: Fetch, header: wire.FileHeader, *, last: bool) -> DownloadResult:
    """Body of one GET1 answer into its part file; verify; rename. The header is already read."""
    start = time.monotonic()
    hex_digest = localfs.digest_hex(header.digest)
    assert hex_digest is not None  # read_header checked it
    plan = job.plan
    if header.offset not in (0, plan.offset):
        raise ProtocolViolation(f"the server resumed at byte {header.offset}; we asked for {plan.offset} or 0")
    resume = plan.part is not None and header.offset == plan.offset > 0
    if resume and hex_digest != plan.part.hex_digest:
        raise ProtocolViolation("the server resumed a different version of the file than the one asked for")
    hasher = xxhash.xxh3_128()
    # How far the body had come when a failure happened: download_tree keeps the connection in
    # step by skipping a body not yet read, and must give up on one read halfway.
    stage = "before"
    fd = -1
    try:
        if resume:
            part = plan.part.name
            fd = localfs.open_part(job.dirfd, part, resume=True)
            if os.fstat(fd).st_size < header.offset:
                raise DestinationError(f"{part}: the partial copy shrank; run again")
            localfs.hash_file_prefix(fd, header.offset, hasher, job.buffer.view)
            os.ftruncate(fd, header.offset)
            os.lseek(fd, header.offset, os.SEEK_SET)
            localfs.check_space(job.dirfd, header.remaining, str(job.display.parent))
        else:
            if job.deferred is None or header.size >= SPACE_CHECK_MIN:
                localfs.check_space(job.dirfd, header.size, str(job.display.parent))
            part = localfs.part_name(job.name, hex_digest)
            fd = localfs.open_part(job.dirfd, part, resume=False)
            if plan.part is not None and plan.part.name != part:
                # The remote file changed since this partial copy: it can never be completed.
                localfs.remove_quietly(job.dirfd, plan.part.name)
        job.reporter.add(0)
        stage = "during"
        receive_body(job, fd, header, hasher)
        stage = "after"
        if last:
            job.session.expect_end()
        if hasher.hexdigest() != hex_digest:
            localfs.remove_quietly(job.dirfd, part)  # corrupt: resuming it could never succeed
            raise IntegrityError(f"{job.display}: the data received does not match the server's digest "
                                 "(corrupted in transit or the file changed); nothing was saved, run again")
        if job.deferred is None and not job.force and localfs.existing_kind(job.dirfd, job.name) is not None:
            raise DestinationExists(f"{job.display}: appeared while downloading; not replaced (use --force); "
                                    f"the verified copy is kept as {part}")
        if job.deferred is not None:
            # download_tree makes a whole batch durable at once, then renames (see CommitBatch).
            os.utime(fd, ns=(header.mtime_ns, header.mtime_ns))
            if job.durable:
                start_writeback(fd)  # so the batch's fsync of this file has little left to wait for
            job.deferred.append(part)
        else:
            localfs.commit(job.dirfd, part, job.name, force=job.force, fd=fd, mtime_ns=header.mtime_ns,
                           durable=job.durable)
    except SockkitError as exc:
        exc.body_stage = stage
        raise
    finally:
        if fd >= 0:
            os.close(fd)
    return DownloadResult(job.display, header.size, header.offset if resume else 0, header.digest,
                          time.monotonic() - start)


def receive_body(job: Fetch, fd: int, header: wire.FileHeader, hasher) -> None:
    """The body's bytes: those already buffered with the header line first, then the socket."""
    early = job.session.take_pending(header.remaining)
    if early:
        hasher.update(early)
        write_all(fd, early)
        job.reporter.add(len(early))
    receive_exactly(job.session.sock, fd, header.remaining - len(early), buffer=job.buffer, hasher=hasher,
                    idle_timeout=job.timeout, cancel=job.cancel, limiter=job.limiter, on_chunk=job.reporter.add,
                    writeback=Writeback(fd, header.offset + len(early)) if job.durable else None)


def same_as_remote(session: Session, remote_path: str, dirfd: int, name: str, buffer: Buffer) -> wire.FileHeader | None:
    """The header when the local file ``name`` is exactly the server's current version, else None.

    Asks to "resume" at the local file's size with its digest: a server holding the same version
    answers OFFSET == SIZE and sends no body. Otherwise the session is left mid-body (close it).
    """
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
    except OSError:
        return None
    try:
        size = os.fstat(fd).st_size
        hasher = xxhash.xxh3_128()
        localfs.hash_file_prefix(fd, size, hasher, buffer.view)
    finally:
        os.close(fd)
    session.request(wire.Get(remote_path, size, f"xxh3-128:{hasher.hexdigest()}"))
    header = read_header(session, remote_path)
    if header.offset == header.size == size and header.digest == f"xxh3-128:{hasher.hexdigest()}":
        return header
    return None


def download(remote_path: str, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
             dest: str | os.PathLike = ".", force: bool = False,
             progress: Callable[[Progress], None] | None = None, cancel: threading.Event | None = None,
             limit_rate: float | None = None, timeout: float = 30.0, token: str | None = None,
             tls: ssl.SSLContext | None = None, durable: bool = True,
             connected: Callable[[], None] | None = None) -> DownloadResult:
    """Fetch one remote file into ``dest`` (a directory, or the file's path), verified. See module doc.

    ``durable=False`` skips the fsyncs: the file is still complete and verified when its name
    appears, but a power cut soon after may lose it (what curl and rsync do by default).
    ``connected()`` is called once the connection is up, before the server's answer (a GUI's
    "Connecting..." turns into "waiting for the server")."""
    start = time.monotonic()
    target = resolve_destination(remote_path, dest)
    limiter = RateLimiter(limit_rate) if limit_rate else None
    buffer = Buffer()
    if target.stream is not None:
        return download_stream(remote_path, target.stream, host=host, port=port, progress=progress, cancel=cancel,
                               limiter=limiter, timeout=timeout, token=token, tls=tls, buffer=buffer)
    dirfd = localfs.open_directory(target.directory)
    try:
        kind = localfs.existing_kind(dirfd, target.name)
        if kind == "dir":
            raise DestinationError(f"{target.path}: a local directory has that name (give -o FILE)")
        if kind == "other" and not force:
            raise DestinationExists(f"{target.path}: exists and is not a regular file (use --force to replace it)")
        plan = Plan(localfs.newest_part(localfs.scan_parts(dirfd), target.name))
        with Session(host, port, timeout=timeout, token=token, tls=tls) as session:
            if connected is not None:
                connected()
            if kind == "file" and not force:
                header = same_as_remote(session, remote_path, dirfd, target.name, buffer)
                if header is None:
                    raise DestinationExists(f"{target.path}: already exists and differs from the server's copy "
                                            "(use --force to replace it)")
                reporter = Reporter(progress, header.size, header.size, start)
                reporter.finish()
                return DownloadResult(target.path, header.size, header.size, header.digest,
                                      time.monotonic() - start, unchanged=True)
            session.request(wire.Get(remote_path, plan.offset, plan.version))
            header = read_header(session, remote_path)
            reporter = Reporter(progress, header.size, header.offset, start)
            job = Fetch(session, remote_path, dirfd, target.name, target.path, plan, force, buffer, reporter,
                        cancel, limiter, timeout, durable=durable)
            result = receive_file(job, header, last=True)
            reporter.finish()
            result = result._replace(seconds=time.monotonic() - start)
            remove_stale_parts(dirfd, target.name)
            return result
    finally:
        os.close(dirfd)


def remove_stale_parts(dirfd: int, name: str) -> None:
    """After a success, other versions' parts of the same name can never be used again."""
    for part in localfs.scan_parts(dirfd).get(localfs.part_stem(name), []):
        localfs.remove_quietly(dirfd, part.name)


def download_stream(remote_path: str, path: Path, *, host: str, port: int,
                    progress: Callable[[Progress], None] | None, cancel: threading.Event | None,
                    limiter: RateLimiter | None, timeout: float, token: str | None, tls: ssl.SSLContext | None,
                    buffer: Buffer) -> DownloadResult:
    """Into a device or FIFO (``-o /dev/null``): no part, no rename, still size- and digest-checked."""
    start = time.monotonic()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise DestinationError(describe_os_error(exc)) from exc
    try:
        with Session(host, port, timeout=timeout, token=token, tls=tls) as session:
            session.request(wire.Get(remote_path))
            header = read_header(session, remote_path)
            if header.offset != 0:
                raise ProtocolViolation(f"the server started at byte {header.offset}; we asked for 0")
            reporter = Reporter(progress, header.size, 0, start)
            hasher = xxhash.xxh3_128()
            early = session.take_pending(header.remaining)
            if early:
                hasher.update(early)
                write_all(fd, early)
                reporter.add(len(early))
            receive_exactly(session.sock, fd, header.remaining - len(early), buffer=buffer, hasher=hasher,
                            idle_timeout=timeout, cancel=cancel, limiter=limiter, on_chunk=reporter.add)
            session.expect_end()
            if f"xxh3-128:{hasher.hexdigest()}" != header.digest:
                raise IntegrityError(f"{path}: the data received does not match the server's digest")
            reporter.finish()
    finally:
        os.close(fd)
    return DownloadResult(path, header.size, 0, header.digest, time.monotonic() - start)


def list_remote(remote_dir: str = ".", *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                timeout: float = 30.0, token: str | None = None, tls: ssl.SSLContext | None = None
                ) -> list[wire.Entry]:
    """The entries of one remote directory (LIST1)."""
    with Session(host, port, timeout=timeout, token=token, tls=tls) as session:
        session.request(wire.List(remote_dir))
        entries = read_listing(session, remote_dir)
        session.expect_end()
    return entries


def read_listing(session: Session, remote_dir: str) -> list[wire.Entry]:
    """The entries of a LIST1/TREE1 answer, read under three bounds a hostile server cannot lift:
    the protocol's entry count and bytes of entry lines (what an honest server never exceeds), so
    the memory a listing costs is bounded, and ``--timeout`` for the whole answer, so a server
    trickling one entry at a time cannot keep us past it."""
    deadline = time.monotonic() + session.timeout
    what = f"listing {remote_dir}"
    fields = session.answer(what, path=remote_dir, deadline=deadline)
    if len(fields) != 1 or not fields[0].isdigit():
        raise ProtocolViolation("a listing must start with OK1 COUNT")
    count = int(fields[0])
    if count > wire.MAX_LISTING_ENTRIES:
        raise ProtocolViolation(f"the server announced {count} entries (more than {wire.MAX_LISTING_ENTRIES})")
    entries = []
    size = 0
    for _ in range(count):
        line = session.read_line(what, deadline=deadline)
        size += len(line) + 1
        if size > wire.MAX_LISTING_BYTES:
            raise ProtocolViolation(f"the server's listing of {printable(remote_dir)} is longer than "
                                    f"{wire.MAX_LISTING_BYTES >> 20} MiB; nothing was fetched")
        try:
            entries.append(wire.parse_entry(line))
        except (wire.ProtocolError, UnicodeDecodeError) as exc:
            raise ProtocolViolation(f"bad listing line {printable(repr(line), 80)}: {exc}") from None
    return entries


__all__ = ["DownloadResult", "Progress", "download", "list_remote"]
