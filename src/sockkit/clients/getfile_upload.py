"""``sockkit put``: upload one local file (PUT1), zero-copy where the socket allows it.

The digest is computed first (one read of the file), then announced with the size; the server
writes to a temporary name and renames only when size and digest match. A file that changes while
it is being sent is caught by the server's check (``corrupt``), never stored.
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
from sockkit.clients.getfile import DEFAULT_HOST, DEFAULT_PORT, Progress, Reporter
from sockkit.clients.getfile_session import Session
from sockkit.clients.transfer import BUFFER_SIZE, Buffer, RateLimiter
from sockkit.errors import (
    Cancelled,
    DestinationError,
    ProtocolViolation,
    RemoteError,
    SockkitError,
    TransferInterrupted,
    describe_os_error,
)
from sockkit.protocols import getfile as wire

if TYPE_CHECKING:
    import ssl


class UploadResult(NamedTuple):
    remote_path: str
    size: int
    digest: str
    seconds: float


def upload(local_path: str | os.PathLike, remote_dir: str = ".", *, host: str = DEFAULT_HOST,
           port: int = DEFAULT_PORT, force: bool = False, progress: Callable[[Progress], None] | None = None,
           cancel: threading.Event | None = None, limit_rate: float | None = None, timeout: float = 30.0,
           token: str | None = None, tls: ssl.SSLContext | None = None) -> UploadResult:
    """Send ``local_path`` to ``remote_dir/<its base name>`` on the server."""
    start = time.monotonic()
    path = Path(local_path)
    remote_path = path.name if remote_dir.strip("/") in ("", ".") else f"{remote_dir.rstrip('/')}/{path.name}"
    try:
        file = open(path, "rb")  # noqa: SIM115  (closed below; the socket sends from it)
    except IsADirectoryError:
        raise DestinationError(f"{path}: is a directory; put uploads one file at a time") from None
    except OSError as exc:
        raise DestinationError(describe_os_error(exc)) from exc
    with file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise DestinationError(f"{path}: not a regular file")
        size = info.st_size
        hasher = xxhash.xxh3_128()
        localfs.hash_file_prefix(file.fileno(), size, hasher, Buffer().view)
        digest = f"xxh3-128:{hasher.hexdigest()}"
        limiter = RateLimiter(limit_rate) if limit_rate else None
        with Session(host, port, timeout=timeout, token=token, tls=tls) as session:
            session.request(wire.Put(remote_path, size, digest, force))
            session.answer(f"asking to upload {remote_path}", path=remote_path)
            reporter = Reporter(progress, size, 0, start)
            try:
                send_file(session, file, size, reporter, cancel, limiter)
            except TransferInterrupted as exc:
                raise server_reason(session, remote_path) or exc from None
            fields = session.answer(f"waiting for the server to store {remote_path}", path=remote_path)
            if fields != [str(size)]:
                raise ProtocolViolation(f"the server confirmed {' '.join(fields)!r} instead of {size} bytes")
            reporter.finish()
            session.expect_end()
    return UploadResult(remote_path, size, digest, time.monotonic() - start)


def server_reason(session: Session, remote_path: str) -> RemoteError | None:
    """The ERR1 a server sent before closing mid-upload (no space, ...), if it sent one."""
    session.timeout = min(session.timeout, 2.0)
    try:
        session.answer(f"uploading {remote_path}", path=remote_path)
    except RemoteError as exc:
        return exc
    except (SockkitError, OSError):
        return None
    return None


def send_file(session: Session, file, size: int, reporter: Reporter, cancel: threading.Event | None,
              limiter: RateLimiter | None) -> None:
    """socket.sendfile (zero-copy on plain TCP) in chunks, so progress, cancel and the rate apply."""
    chunk = BUFFER_SIZE * 8 if limiter is None else limiter.chunk
    offset = 0
    session.sock.settimeout(session.timeout)
    while offset < size:
        if cancel is not None and cancel.is_set():
            raise Cancelled("cancelled")
        try:
            sent = session.sock.sendfile(file, offset, min(chunk, size - offset))
        except OSError as exc:
            raise TransferInterrupted(f"the server closed the connection after {offset} of {size} bytes "
                                      f"({describe_os_error(exc)})") from exc
        if sent == 0:
            raise DestinationError("the local file shrank while being sent")
        offset += sent
        reporter.add(sent)
        if limiter is not None:
            limiter.pace(sent, cancel)
