"""Errors a person sees: every failure of a client becomes one line they can act on.

Rule: ``str(exc)`` of a :class:`SockkitError` is that line, already; :func:`describe` turns any
other exception (OSError, ssl errors, a bug) into one too. The CLI prints it after
``sockkit get:`` and the GUI shows it in its dialog, so both say exactly the same thing.
Text that came from a server is escaped before it goes into a message: a hostile server must not
be able to put terminal control sequences on the user's screen.
"""

from __future__ import annotations

import errno
import sys


def printable(text: str, limit: int = 300) -> str:
    """``text`` with control characters escaped and its length bounded (it may come from a server)."""
    clean = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)
    return clean if len(clean) <= limit else clean[: limit - 3] + "..."


class SockkitError(Exception):
    """Base of every error the clients raise on purpose; ``str()`` is one actionable line."""


class ConnectError(SockkitError):
    """The connection (or its TLS handshake, or the token) was refused or could not be made."""


class Unreachable(ConnectError):
    """The TCP connection itself failed (refused, reset, timed out, no route): worth another try."""


class RemoteError(SockkitError):
    """The server answered ``ERR1 CODE MESSAGE``; ``code`` is the protocol's ErrorCode value."""

    def __init__(self, code: str, message: str, path: str | None = None) -> None:
        self.code = code
        self.remote_message = printable(message)
        self.path = path
        where = f"{printable(path)}: " if path is not None else ""
        hint = _REMOTE_HINTS.get(code, code)
        said = self.remote_message
        # The server's own words add to the hint unless they only repeat it.
        extra = f" (server says: {said})" if said and said.lower() not in hint.lower() and \
            hint.lower() not in said.lower() else ""
        super().__init__(f"{where}{hint}{extra}")


_REMOTE_HINTS = {
    "not-found": "no such file on the server",
    "is-directory": "is a directory on the server (use -r to fetch a directory)",
    "not-regular": "not a regular file on the server",
    "not-permitted": "the server may not read it (permission denied)",
    "outside-root": "outside the directory the server shares",
    "bad-request": "the server did not understand the request",
    "too-long": "the name is too long for the server",
    "busy": "the server is busy; try again later",
    "auth-required": "the server wants a valid token (--token or SOCKKIT_TOKEN)",
    "upload-disabled": "the server does not accept uploads (start it with --allow-upload)",
    "exists": "already exists on the server (use --force to replace it)",
    "corrupt": "the server received a corrupt copy; try again",
    "no-space": "the server has no space left",
    "internal": "the server failed",
}


class ProtocolViolation(SockkitError):
    """The server said something protocol v1 does not allow (garbage, an impossible size, extra bytes)."""


class TransferInterrupted(SockkitError):
    """The connection ended or stalled before the whole file arrived; the ``.part`` file is kept."""


class NoAnswer(TransferInterrupted):
    """The server closed the connection without sending a single byte (the chapter's server does that)."""


class IntegrityError(SockkitError):
    """What arrived does not match the digest the server announced."""


class DestinationExists(SockkitError):
    """The local destination exists and ``force`` was not given."""


class DestinationError(SockkitError):
    """The local destination cannot be written: disk full, permission denied, unsafe path..."""


class NotEnoughSpace(DestinationError):
    """The file is larger than the free space at the destination (checked before any byte is written)."""


class Cancelled(SockkitError):
    """The caller's cancel event was set; the ``.part`` file is kept for a later resume."""


def describe_os_error(exc: OSError) -> str:
    where = f"{exc.filename}: " if exc.filename else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{where}disk full (free some space, then run again to resume)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"{where}permission denied"
    if exc.errno == errno.EROFS:
        return f"{where}read-only file system"
    if exc.errno == errno.ECONNRESET:
        return "the server reset the connection"
    return f"{where}{(exc.strerror or str(exc)).lower()}"


def loaded_ssl():
    """The ``ssl`` module if a TLS session imported it, else None (then no error can be a TLS error).

    A plain download never imports ssl: 12-17 ms of a command that takes 0.1 s in all.
    """
    return sys.modules.get("ssl")


def describe(exc: BaseException) -> str:
    """The one line the CLI prints after ``sockkit get:`` and the GUI shows in its dialog."""
    if isinstance(exc, SockkitError):
        return str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (the partial copy is kept; run the same command again to resume)"
    ssl = loaded_ssl()
    if ssl is not None and isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: the server's certificate was not accepted ({exc.verify_message}); use --cafile"
    if ssl is not None and isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    if isinstance(exc, TimeoutError):
        return "timed out waiting for the server"
    if isinstance(exc, OSError):
        return describe_os_error(exc)
    return f"{type(exc).__name__}: {printable(str(exc))}"
