"""``sockkit get --legacy``: the chapter's protocol (send ``path\\n``, read raw bytes to end of stream).

That protocol carries no size, no digest and no error: a clean close mid-file looks exactly like
the end of the file, and "missing file" looks like an empty one. The client can only count bytes.
What it still does: writes to ``<name>.legacy.part`` (never resumed: the protocol has no offset),
refuses an empty answer (the chapter's server sends nothing for a missing file), fsyncs and
renames without replacing an existing file unless ``force``.

``download_or_legacy`` is what the chapter's own command line and the GUI do: getfile v1, and
the chapter's protocol when the server closes without a word (the chapter's server does, on our
request line), with ``verified=False`` in the result to say so (say ``UNVERIFIED_FALLBACK``).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import xxhash

from sockkit.clients import localfs
from sockkit.clients.getfile import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    DownloadResult,
    Progress,
    Reporter,
    download,
    resolve_destination,
)
from sockkit.clients.getfile_session import Session
from sockkit.clients.transfer import Buffer, RateLimiter, receive_to_eof
from sockkit.errors import DestinationError, DestinationExists, NoAnswer, TransferInterrupted

LEGACY_SUFFIX = ".legacy.part"
#: What a client that fell back to the chapter's protocol tells its user.
UNVERIFIED_FALLBACK = "the server speaks only the chapter's protocol; the copy is not verified"


def legacy_download(remote_path: str, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                    dest: str | os.PathLike = ".", force: bool = False,
                    progress: Callable[[Progress], None] | None = None, cancel: threading.Event | None = None,
                    limit_rate: float | None = None, timeout: float = 30.0,
                    connected: Callable[[], None] | None = None) -> DownloadResult:
    """Fetch with the chapter's protocol; the result has ``verified=False`` and a locally computed digest."""
    start = time.monotonic()
    target = resolve_destination(remote_path, dest)
    if target.stream is not None:
        raise DestinationError(f"{target.stream}: --legacy writes regular files only")
    dirfd = localfs.open_directory(target.directory)
    try:
        if localfs.existing_kind(dirfd, target.name) is not None and not force:
            raise DestinationExists(f"{target.path}: already exists (use --force to replace it)")
        part = localfs.part_stem(target.name) + LEGACY_SUFFIX
        with Session(host, port, timeout=timeout) as session:
            if connected is not None:
                connected()
            session.send(remote_path.encode("utf-8") + b"\n")
            fd = localfs.open_part(dirfd, part, resume=False)
            try:
                reporter = Reporter(progress, 0, 0, start)
                hasher = xxhash.xxh3_128()
                count = receive_to_eof(session.sock, fd, buffer=Buffer(), hasher=hasher, idle_timeout=timeout,
                                       cancel=cancel, limiter=RateLimiter(limit_rate) if limit_rate else None,
                                       on_chunk=reporter.add)
                if count == 0:
                    localfs.remove_quietly(dirfd, part)
                    raise TransferInterrupted(
                        f"{remote_path}: the server sent nothing (a missing or unreadable file, or an empty one: "
                        "the chapter's protocol cannot say which); nothing was saved")
                reporter.total = count
                localfs.commit(dirfd, part, target.name, force=force, fd=fd, mtime_ns=None)
                reporter.finish()
            finally:
                os.close(fd)
    finally:
        os.close(dirfd)
    return DownloadResult(target.path, count, 0, f"xxh3-128:{hasher.hexdigest()}", time.monotonic() - start,
                          verified=False)


def download_or_legacy(remote_path: str, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                       dest: str | os.PathLike = ".", force: bool = False,
                       progress: Callable[[Progress], None] | None = None, cancel: threading.Event | None = None,
                       limit_rate: float | None = None, timeout: float = 30.0,
                       connected: Callable[[], None] | None = None, **v1_options) -> DownloadResult:
    """``download()``; if the server closes without answering (the chapter's server, which took our
    request line for a file name), ``legacy_download()`` of the same file: ``verified`` tells which."""
    common = {"host": host, "port": port, "dest": dest, "force": force, "progress": progress, "cancel": cancel,
              "limit_rate": limit_rate, "timeout": timeout, "connected": connected}
    try:
        return download(remote_path, **common, **v1_options)
    except NoAnswer:
        return legacy_download(remote_path, **common)
