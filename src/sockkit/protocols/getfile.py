"""The getfile wire format, version 1 (see docs/getfile-protocol.md): requests, answers, errors.

Shared by the server (``sockkit.services.getfile``) and the clients so both read and write
exactly the same lines. Pure: parsing and formatting only, no sockets and no files.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import NamedTuple

DEFAULT_PORT = 50001
#: Longest request or answer line, newline included. PATH_MAX on Linux is 4096; a longer line
#: cannot name a real file, so it is refused before it costs the server memory.
MAX_LINE = 4096
#: Longest path after decoding (bytes of UTF-8).
MAX_PATH = 4000
DIGEST_ALGORITHM = "xxh3-128"
#: Most entries, and most bytes of entry lines, in one LIST1/TREE1 answer: the server refuses a
#: directory past either (``not-permitted``), and the client refuses an answer past either, so a
#: hostile server cannot make it hold more (100,000 ordinary names are ~6 MiB).
MAX_LISTING_ENTRIES = 100_000
MAX_LISTING_BYTES = 32 << 20

VERBS = ("GET1", "LIST1", "TREE1", "PUT1", "AUTH1")


class ErrorCode(StrEnum):
    """Why a request failed; the first word after ``ERR1``."""

    NOT_FOUND = "not-found"
    IS_DIRECTORY = "is-directory"
    NOT_REGULAR = "not-regular"
    NOT_PERMITTED = "not-permitted"
    OUTSIDE_ROOT = "outside-root"
    BAD_REQUEST = "bad-request"
    TOO_LONG = "too-long"
    BUSY = "busy"
    AUTH_REQUIRED = "auth-required"
    UPLOAD_DISABLED = "upload-disabled"
    EXISTS = "exists"
    CORRUPT = "corrupt"
    NO_SPACE = "no-space"
    TOO_LARGE = "too-large"
    INTERNAL = "internal"


#: Errors after which the server closes the connection (the rest leave it open for more requests).
FATAL = frozenset({ErrorCode.BAD_REQUEST, ErrorCode.TOO_LONG, ErrorCode.BUSY, ErrorCode.AUTH_REQUIRED})


class ProtocolError(ValueError):
    """A line that does not follow the protocol (raised by the parsers here)."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --- paths ---------------------------------------------------------------------------------
# Paths travel as UTF-8 with '%', control characters and DEL percent-encoded, so a name holding a
# newline cannot split a line and a person reading `sockkit probe` output sees ordinary names.

_NEEDS_QUOTING = re.compile(rb"[\x00-\x1f\x7f%]")
_QUOTED = re.compile(rb"%([0-9A-Fa-f]{2})")


def quote_path(path: str) -> str:
    raw = path.encode("utf-8", "surrogateescape")
    return _NEEDS_QUOTING.sub(lambda m: b"%%%02X" % m.group()[0], raw).decode("utf-8", "surrogateescape")


def unquote_path(text: str) -> str:
    """The path a request names. Raises ProtocolError for NUL, bad escapes or non-UTF-8."""
    raw = text.encode("utf-8", "surrogateescape")
    if b"%" in raw and re.search(rb"%(?![0-9A-Fa-f]{2})", raw):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "bad %-escape in path")
    raw = _QUOTED.sub(lambda m: bytes([int(m.group(1), 16)]), raw)
    if b"\x00" in raw:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "NUL byte in path")
    if len(raw) > MAX_PATH:
        raise ProtocolError(ErrorCode.TOO_LONG, f"path longer than {MAX_PATH} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "path is not valid UTF-8") from None


# --- requests ------------------------------------------------------------------------------


class Get(NamedTuple):
    path: str
    offset: int = 0
    #: Digest of the file version the client holds the first ``offset`` bytes of; None: none.
    version: str | None = None


class List(NamedTuple):
    path: str


class Tree(NamedTuple):
    path: str


class Put(NamedTuple):
    path: str
    size: int
    digest: str
    overwrite: bool = False


class Auth(NamedTuple):
    token: str


class Legacy(NamedTuple):
    """The chapter's request: a bare path line, answered with raw bytes and then end of stream."""

    path: str


Request = Get | List | Tree | Put | Auth | Legacy


def _number(text: str, what: str) -> int:
    if not text.isdigit() or len(text) > 20:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"{what} must be a non-negative integer")
    return int(text)


def parse_request(line: bytes) -> Request:
    """One request line (with or without its ``\\n``/``\\r\\n``) as a Request.

    A line that does not start with a known verb and a space is the chapter's legacy protocol.
    """
    if len(line) > MAX_LINE:
        raise ProtocolError(ErrorCode.TOO_LONG, f"request line longer than {MAX_LINE} bytes")
    line = line.removesuffix(b"\n").removesuffix(b"\r")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "request is not valid UTF-8") from None
    verb, space, rest = text.partition(" ")
    if text in ("LIST1", "TREE1"):
        space = " "  # a person typing into `sockkit probe` may leave out the root's empty path
    if verb not in VERBS or not space:
        if "\x00" in text:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "NUL byte in path")
        return Legacy(text)
    if verb == "GET1":
        fields = rest.split(" ", 2)
        if len(fields) != 3:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "usage: GET1 OFFSET VERSION|- PATH")
        offset, version, path = fields
        return Get(unquote_path(path), _number(offset, "offset"), None if version == "-" else version)
    if verb == "LIST1":
        return List(unquote_path(rest))
    if verb == "TREE1":
        return Tree(unquote_path(rest))
    if verb == "PUT1":
        fields = rest.split(" ", 3)
        if len(fields) != 4 or fields[2] not in ("0", "1"):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "usage: PUT1 SIZE DIGEST 0|1 PATH")
        size, digest, overwrite, path = fields
        return Put(unquote_path(path), _number(size, "size"), digest, overwrite == "1")
    return Auth(rest)


def format_request(request: Request) -> bytes:
    if isinstance(request, Get):
        line = f"GET1 {request.offset} {request.version or '-'} {quote_path(request.path)}"
    elif isinstance(request, List):
        line = f"LIST1 {quote_path(request.path)}"
    elif isinstance(request, Tree):
        line = f"TREE1 {quote_path(request.path)}"
    elif isinstance(request, Put):
        line = f"PUT1 {request.size} {request.digest} {int(request.overwrite)} {quote_path(request.path)}"
    elif isinstance(request, Auth):
        line = f"AUTH1 {request.token}"
    else:
        line = request.path
    data = line.encode("utf-8") + b"\n"
    if len(data) > MAX_LINE:
        raise ProtocolError(ErrorCode.TOO_LONG, f"request line longer than {MAX_LINE} bytes")
    return data


# --- answers -------------------------------------------------------------------------------


class FileHeader(NamedTuple):
    """``OK1 SIZE OFFSET MTIME_NS DIGEST``: the body that follows is bytes OFFSET..SIZE."""

    size: int
    offset: int
    mtime_ns: int
    digest: str

    @property
    def remaining(self) -> int:
        return self.size - self.offset


class Entry(NamedTuple):
    """One line of a LIST1/TREE1 answer: ``f|d SIZE MTIME_NS PATH``."""

    kind: str
    size: int
    mtime_ns: int
    path: str


class Error(NamedTuple):
    code: ErrorCode
    message: str


def format_header(header: FileHeader) -> bytes:
    return f"OK1 {header.size} {header.offset} {header.mtime_ns} {header.digest}\n".encode()


def format_count(count: int) -> bytes:
    """Header of a listing (``OK1 COUNT``) or of a finished upload/auth (``OK1 0``)."""
    return f"OK1 {count}\n".encode()


def format_entry(entry: Entry) -> bytes:
    return f"{entry.kind} {entry.size} {entry.mtime_ns} {quote_path(entry.path)}\n".encode()


def format_error(code: ErrorCode, message: str) -> bytes:
    # One line, whatever the message holds.
    clean = " ".join(message.split())
    return f"ERR1 {code.value} {clean}\n".encode("utf-8", "replace")[:MAX_LINE - 1].rstrip(b"\n") + b"\n"


def parse_answer(line: bytes) -> list[str] | Error:
    """The fields after ``OK1``, or the Error an ``ERR1`` line carries."""
    try:
        text = line.removesuffix(b"\n").removesuffix(b"\r").decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "answer is not valid UTF-8") from None
    verb, _, rest = text.partition(" ")
    if verb == "OK1":
        return rest.split(" ") if rest else []
    if verb == "ERR1":
        code, _, message = rest.partition(" ")
        try:
            return Error(ErrorCode(code), message)
        except ValueError:
            return Error(ErrorCode.INTERNAL, f"{code} {message}".strip())
    raise ProtocolError(ErrorCode.BAD_REQUEST, f"unexpected answer {text[:80]!r}")


def parse_header(fields: list[str]) -> FileHeader:
    if len(fields) != 4:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "file header must be OK1 SIZE OFFSET MTIME_NS DIGEST")
    size, offset, mtime = _number(fields[0], "size"), _number(fields[1], "offset"), _number(fields[2], "mtime")
    if offset > size:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "offset beyond the end of the file")
    return FileHeader(size, offset, mtime, fields[3])


def parse_entry(line: bytes) -> Entry:
    fields = line.removesuffix(b"\n").decode("utf-8", "strict").split(" ", 3)
    if len(fields) != 4 or fields[0] not in ("f", "d"):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "listing line must be f|d SIZE MTIME_NS PATH")
    return Entry(fields[0], _number(fields[1], "size"), _number(fields[2], "mtime"), unquote_path(fields[3]))
