"""``sockkit get -r``: a whole remote directory over one connection, GET1 requests pipelined.

Rules this module keeps:
* Every path in the TREE1 answer is checked before anything is fetched: relative, no empty, ``.``
  or ``..`` component, no duplicate, at most ``MAX_DEPTH`` components. One bad path and nothing is
  fetched (the server is hostile). The listing itself is bounded in entries, bytes and time
  (``read_listing``); a path's components are kept only while its file is being fetched.
* Local directories are created and entered one component at a time with ``O_NOFOLLOW`` relative
  to the destination's descriptor, so a symlink in the local tree never leads a write outside it.
* Each file gets every rule of a single download (part file, digest, fsync, no-replace rename).
* Pipelining: up to ``WINDOW`` GET1 requests are sent ahead of the answers (at most
  ``WINDOW_BYTES`` of request text, so our sends can never block while the server waits on us).
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from sockkit.clients import localfs
from sockkit.clients.getfile import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    DownloadResult,
    Fetch,
    Plan,
    Progress,
    Reporter,
    read_header,
    read_listing,
    receive_file,
    remote_basename,
)
from sockkit.clients.getfile_session import Session
from sockkit.clients.transfer import Buffer, RateLimiter, receive_exactly
from sockkit.errors import (
    DestinationError,
    DestinationExists,
    IntegrityError,
    NotEnoughSpace,
    ProtocolViolation,
    RemoteError,
    SockkitError,
    describe_os_error,
    printable,
)
from sockkit.protocols import getfile as wire

if TYPE_CHECKING:
    import ssl

#: GET1 requests in flight at once, and the request bytes they may add up to (well under any
#: socket buffer, so sendall never waits on a server that is itself waiting for us to read).
WINDOW = 128
WINDOW_BYTES = 32 * 1024
#: Of those, requests for files big enough to be sent zero-copy (the server pins a descriptor for
#: each and answers ``busy`` past 32 per connection); the listed size decides, with a margin for
#: files that grow between the listing and the request.
WINDOW_LARGE = 16
LARGE = 32 * 1024
#: Verified files waiting for their final name. An fsync right after each file costs a journal
#: commit per file (1,000 x 4 KiB: ~400-1,200 files/s). Instead each file's writeback is started
#: as soon as it is verified, and the batch is fsync'ed file by file at the end, when the data is
#: already on its way and one journal commit covers many files (1,000 files: 0.035 s), then renamed,
#: then each directory fsync'ed once. Not syncfs: it also waits for every other program's dirty data
#: on the filesystem (1,000 files after another writer's 512 MiB: 0.30 s, and unbounded).
BATCH_FILES = 2048
BATCH_BYTES = 256 << 20
#: Directory descriptors kept open at once (a deep or wide tree must not exhaust the fd limit).
DIR_CACHE = 64
#: Deepest path accepted in a tree, in components: twice what a sockkit server lists (TREE1 stops
#: at 64 levels). A path 1,500 directories deep is refused with a message, never walked.
MAX_DEPTH = 128


class TreeResult:
    """What ``download_tree`` did, filled in as it goes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: list[DownloadResult] = []
        #: Local files already identical by size and modification time (rsync's quick check).
        self.skipped: list[str] = []
        #: (relative path, one-line reason) for every file not fetched.
        self.failed: list[tuple[str, str]] = []
        self.bytes = 0
        self.seconds = 0.0

    def __repr__(self) -> str:
        return (f"TreeResult(root={self.root!r}, files={len(self.files)}, skipped={len(self.skipped)}, "
                f"failed={len(self.failed)}, bytes={self.bytes}, seconds={self.seconds:.3f})")


def safe_components(path: str) -> list[str]:
    """The components of a server-supplied relative path; ProtocolViolation if it could escape."""
    parts = path.split("/")
    if path.startswith("/") or any(part in ("", ".", "..") for part in parts) or "\x00" in path:
        raise ProtocolViolation(f"the server listed an unsafe path {printable(path, 120)!r}; nothing was fetched")
    if any(len(part.encode("utf-8", "surrogateescape")) > localfs.NAME_MAX for part in parts):
        raise ProtocolViolation(f"the server listed a name too long for a file {printable(path, 120)!r}")
    if len(parts) > MAX_DEPTH:
        raise ProtocolViolation(f"the server listed a path {len(parts)} directories deep (more than {MAX_DEPTH}): "
                                f"{printable(path, 60)!r}...; nothing was fetched")
    return parts


class DirectoryCache:
    """Descriptors of local directories under the root, opened with O_NOFOLLOW, LRU-bounded."""

    def __init__(self, root_fd: int) -> None:
        self.root_fd = root_fd
        self.open: collections.OrderedDict[tuple[str, ...], int] = collections.OrderedDict()
        self.parts: dict[tuple[str, ...], dict[str, list[localfs.PartFile]]] = {}

    def get(self, components: tuple[str, ...]) -> int:
        """The descriptor of the directory ``components`` names, created if missing.

        A loop, not recursion: from the deepest directory already open, one level at a time (each
        just opened is the newest entry, so evicting the oldest never closes the one in use)."""
        if not components:
            return self.root_fd
        have = len(components)
        while have and components[:have] not in self.open:
            have -= 1
        fd = self.root_fd
        if have:
            fd = self.open[components[:have]]
            self.open.move_to_end(components[:have])
        for depth in range(have + 1, len(components) + 1):
            fd = localfs.open_subdirectory(fd, components[depth - 1], create=True)
            self.open[components[:depth]] = fd
            if len(self.open) > DIR_CACHE:
                _, old = self.open.popitem(last=False)
                os.close(old)
        return fd

    def parts_in(self, components: tuple[str, ...]) -> dict[str, list[localfs.PartFile]]:
        if components not in self.parts:
            self.parts[components] = localfs.scan_parts(self.get(components))
        return self.parts[components]

    def close(self) -> None:
        for fd in self.open.values():
            os.close(fd)
        self.open.clear()


class Pending(NamedTuple):
    entry: wire.Entry
    components: list[str]
    plan: Plan
    request_bytes: int
    remote: str  # the path asked for


class Verified(NamedTuple):
    where: tuple[str, ...]
    part: str
    name: str
    path: str
    done: DownloadResult


class CommitBatch:
    """Renames verified parts into place, a batch at a time, once the batch's files are fsync'ed."""

    def __init__(self, dirs: DirectoryCache, result: TreeResult, force: bool, durable: bool = True) -> None:
        self.dirs, self.result, self.force, self.durable = dirs, result, force, durable
        self.items: list[Verified] = []
        self.bytes = 0

    def add(self, item: Verified) -> None:
        self.items.append(item)
        self.bytes += item.done.size
        if len(self.items) >= BATCH_FILES or self.bytes >= BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self.items:
            return
        items, self.items, self.bytes = self.items, [], 0
        if self.durable:
            for item in items:
                localfs.fsync_entry(self.dirs.get(item.where), item.part)
        touched: set[tuple[str, ...]] = set()
        for item in items:
            try:
                localfs.rename_into_place(self.dirs.get(item.where), item.part, item.name, force=self.force)
            except (DestinationError, DestinationExists) as exc:
                self.result.failed.append((item.path, str(exc)))
                continue
            self.result.files.append(item.done)
            self.result.bytes += item.done.size
            touched.add(item.where)
        if not self.durable:
            return
        for where in touched:
            try:
                os.fsync(self.dirs.get(where))
            except OSError as exc:
                raise DestinationError(describe_os_error(exc)) from exc


def resolve_root(remote_dir: str, dest: str | os.PathLike) -> tuple[Path, str | None]:
    """(parent directory, name of the tree's root in it, or None for the parent itself).

    ``dest`` is always the directory the tree goes *into* (created if missing), so running the
    same command again finds the same files and resumes or skips them: ``get -r docs -o out``
    fills ``out/docs/``; ``get -r .`` fills ``out/`` itself.
    """
    path = Path(dest)
    if path.name == "..":
        raise DestinationError(f"{os.fspath(dest)}: not a usable directory name")
    if not path.exists() and path.name not in ("", "."):
        try:
            path.mkdir()
        except OSError as exc:
            raise DestinationError(f"{os.fspath(dest)}: cannot create it ({exc.strerror})") from None
    base = remote_dir.rstrip("/").rsplit("/", 1)[-1]
    if base in ("", "."):
        return path, None
    return path, remote_basename(remote_dir)


def download_tree(remote_dir: str, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                  dest: str | os.PathLike = ".", force: bool = False,
                  progress: Callable[[Progress], None] | None = None, cancel: threading.Event | None = None,
                  limit_rate: float | None = None, timeout: float = 30.0, token: str | None = None,
                  tls: ssl.SSLContext | None = None, durable: bool = True) -> TreeResult:
    """Fetch every file under ``remote_dir`` into ``dest/<base name of remote_dir>`` (see resolve_root);
    ``durable=False`` skips the syncs, as in ``download``."""
    start = time.monotonic()
    parent, root_name = resolve_root(remote_dir, dest)
    parent_fd = localfs.open_directory(parent)
    try:
        root_fd = localfs.open_subdirectory(parent_fd, root_name, create=True) if root_name else os.dup(parent_fd)
    finally:
        os.close(parent_fd)
    result = TreeResult(parent / root_name if root_name else parent)
    dirs = DirectoryCache(root_fd)
    limiter = RateLimiter(limit_rate) if limit_rate else None
    try:
        with Session(host, port, timeout=timeout, token=token, tls=tls) as session:
            session.request(wire.Tree(remote_dir))
            entries = read_listing(session, remote_dir)
            for entry in entries:  # every path checked before anything is done; components not kept
                safe_components(entry.path)
            if len({entry.path for entry in entries}) != len(entries):
                raise ProtocolViolation("the server listed the same path twice; nothing was fetched")
            for entry in entries:
                if entry.kind == "d":
                    with contextlib.suppress(SockkitError):
                        dirs.get(tuple(safe_components(entry.path)))
            files = [entry for entry in entries if entry.kind == "f"]
            total = sum(entry.size for entry in files)
            localfs.check_space(root_fd, total, str(result.root))
            reporter = Reporter(progress, total, 0, start)
            batch = CommitBatch(dirs, result, force, durable)
            try:
                fetch_all(session, remote_dir, files, dirs, batch, reporter, force=force, cancel=cancel,
                          limiter=limiter, timeout=timeout)
                session.expect_end()
            except BaseException:
                with contextlib.suppress(Exception):  # keep what was verified; report the first failure
                    batch.flush()
                raise
            batch.flush()
            reporter.finish()
    finally:
        dirs.close()
        os.close(root_fd)
    result.seconds = time.monotonic() - start
    return result


def remote_join(remote_dir: str, relative: str) -> str:
    base = remote_dir.rstrip("/")
    return relative if base in ("", ".") else f"{base}/{relative}"


def fetch_all(session: Session, remote_dir: str, files: list[wire.Entry], dirs: DirectoryCache,
              batch: CommitBatch, reporter: Reporter, *, force: bool, cancel: threading.Event | None,
              limiter: RateLimiter | None, timeout: float) -> None:
    buffer = Buffer()
    queue = iter(files)
    in_flight: collections.deque[Pending] = collections.deque()
    in_flight_bytes = 0
    in_flight_large = 0
    exhausted = False
    for _ in range(2 * len(files) + 2):  # bounded: each turn sends a batch or handles one answer
        outgoing = bytearray()
        # Refill only when half the window has drained: requests then go out in batches of
        # ~WINDOW/2 per sendall instead of one syscall per answer.
        refill = len(in_flight) <= WINDOW // 2
        while (refill and not exhausted and len(in_flight) < WINDOW and in_flight_bytes + len(outgoing) < WINDOW_BYTES
               and in_flight_large < WINDOW_LARGE):
            entry = next(queue, None)
            if entry is None:
                exhausted = True
                break
            components = safe_components(entry.path)
            plan = prepare(entry, components, dirs, batch.result, reporter, force=force)
            if plan is None:
                continue
            remote = remote_join(remote_dir, entry.path)
            request = wire.format_request(wire.Get(remote, plan.offset, plan.version))
            outgoing += request
            in_flight.append(Pending(entry, components, plan, len(request), remote))
            in_flight_large += entry.size > LARGE
        if outgoing:
            session.send(bytes(outgoing))
            in_flight_bytes += len(outgoing)
        if not in_flight:
            if exhausted:
                return
            continue
        pending = in_flight.popleft()
        in_flight_bytes -= pending.request_bytes
        in_flight_large -= pending.entry.size > LARGE
        handle_answer(session, pending, dirs, batch, reporter, buffer, force=force, cancel=cancel,
                      limiter=limiter, timeout=timeout)
    raise ProtocolViolation("internal: tree download did not finish")  # unreachable by the bound above


def prepare(entry: wire.Entry, components: list[str], dirs: DirectoryCache, result: TreeResult, reporter: Reporter,
            *, force: bool) -> Plan | None:
    """How to ask for one file, or None when it is skipped (up to date) or refused locally."""
    where = tuple(components[:-1])
    name = components[-1]
    try:
        dirfd = dirs.get(where)
        kind = localfs.existing_kind(dirfd, name)
    except (SockkitError, OSError) as exc:
        result.failed.append((entry.path, str(exc) if isinstance(exc, SockkitError) else os.strerror(exc.errno or 0)))
        reporter.total -= entry.size
        return None
    if kind == "file" and not force:
        info = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
        if info.st_size == entry.size and info.st_mtime_ns == entry.mtime_ns:
            result.skipped.append(entry.path)
            reporter.total -= entry.size
            return None
    if kind == "dir" or (kind is not None and not force):
        reason = "is a local directory" if kind == "dir" else "exists locally and differs (use --force)"
        result.failed.append((entry.path, reason))
        reporter.total -= entry.size
        return None
    part = localfs.newest_part(dirs.parts_in(where), name)
    return Plan(part)


def handle_answer(session: Session, pending: Pending, dirs: DirectoryCache, batch: CommitBatch,
                  reporter: Reporter, buffer: Buffer, *, force: bool, cancel: threading.Event | None,
                  limiter: RateLimiter | None, timeout: float) -> None:
    entry = pending.entry
    result = batch.result
    remote = pending.remote
    try:
        header = read_header(session, remote)
    except RemoteError as exc:
        if exc.code in {code.value for code in wire.FATAL}:
            raise
        result.failed.append((entry.path, str(exc)))
        reporter.total -= entry.size
        return
    # The listing's size was only a hint for the progress bar; the header's is the one checked.
    reporter.total += header.size - entry.size
    if header.offset:
        reporter.resumed_from += header.offset
        reporter.done += header.offset
    where = tuple(pending.components[:-1])
    job = Fetch(session, remote, dirs.get(where), pending.components[-1], result.root / entry.path, pending.plan,
                force, buffer, reporter, cancel, limiter, timeout, deferred=[], durable=batch.durable)
    try:
        done = receive_file(job, header, last=False)
    except NotEnoughSpace:
        raise
    except (DestinationError, DestinationExists, IntegrityError) as exc:
        stage = getattr(exc, "body_stage", "during")
        if stage == "during":
            raise  # part of the body was read: the connection is out of step
        if stage == "before":
            # Keep the connection in step: the body is on its way whatever happened locally.
            skip_body(session, header, buffer, timeout, cancel)
        result.failed.append((entry.path, str(exc)))
        return
    dirs.parts.get(where, {}).pop(localfs.part_stem(job.name), None)
    if job.deferred:
        batch.add(Verified(where, job.deferred[0], job.name, entry.path, done))


def skip_body(session: Session, header: wire.FileHeader, buffer: Buffer, timeout: float,
              cancel: threading.Event | None) -> None:
    early = session.take_pending(header.remaining)
    receive_exactly(session.sock, None, header.remaining - len(early), buffer=buffer, idle_timeout=timeout,
                    cancel=cancel)
