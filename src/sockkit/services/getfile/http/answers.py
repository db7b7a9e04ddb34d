"""Requests as this service reads them and answers as it builds them, before h11 writes them."""

from __future__ import annotations

from dataclasses import dataclass, field

import h11

from sockkit.protocols.getfile import ErrorCode
from sockkit.services.actions import SendFile
from sockkit.services.getfile.http.page import render_message

REASONS = {200: "OK", 201: "Created", 204: "No Content", 206: "Partial Content", 301: "Moved Permanently",
           303: "See Other", 304: "Not Modified", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
           404: "Not Found", 405: "Method Not Allowed", 409: "Conflict", 411: "Length Required",
           412: "Precondition Failed", 413: "Content Too Large", 414: "URI Too Long", 415: "Unsupported Media Type",
           416: "Range Not Satisfiable", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
           501: "Not Implemented", 503: "Service Unavailable", 507: "Insufficient Storage"}

#: getfile's refusals as HTTP statuses (the message travels unchanged).
_STATUS = {ErrorCode.NOT_FOUND: 404, ErrorCode.IS_DIRECTORY: 404, ErrorCode.NOT_REGULAR: 403,
           ErrorCode.NOT_PERMITTED: 403, ErrorCode.OUTSIDE_ROOT: 403, ErrorCode.BAD_REQUEST: 400,
           ErrorCode.TOO_LONG: 414, ErrorCode.BUSY: 503, ErrorCode.AUTH_REQUIRED: 401,
           ErrorCode.UPLOAD_DISABLED: 405, ErrorCode.EXISTS: 409, ErrorCode.CORRUPT: 400, ErrorCode.NO_SPACE: 507,
           ErrorCode.TOO_LARGE: 413, ErrorCode.INTERNAL: 500}
#: Seconds a client told "busy" is asked to wait.
RETRY_AFTER = "5"


def status_for(code: ErrorCode) -> int:
    return _STATUS.get(code, 500)


@dataclass(slots=True)
class Request:
    method: str
    #: Lower-case names; repeated fields joined with ", " (RFC 9110 5.3).
    headers: dict[str, str]
    path: str = "/"
    query: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_h11(cls, event: h11.Request) -> Request:
        headers: dict[str, str] = {}
        for name, value in event.headers:
            key = name.decode("ascii")
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        return cls(event.method.decode("ascii"), headers)

    @property
    def has_body(self) -> bool:
        return "transfer-encoding" in self.headers or self.headers.get("content-length", "0").strip() not in ("", "0")

    @property
    def wants_html(self) -> bool:
        return "text/html" in self.headers.get("accept", "")


@dataclass(slots=True)
class Answer:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    #: The body: bytes and zero-copy file ranges, in order.
    body: list[bytes | SendFile] = field(default_factory=list)
    #: Content-Length; None for answers that have none (304).
    length: int | None = None
    close: bool = False
    #: HEAD: the headers of the GET answer, no body.
    head_only: bool = False
    #: A line for the server's log (refusals), or None.
    log: str | None = None

    def discard(self) -> None:
        """Close the files of a body that will not be sent."""
        for part in self.body:
            if type(part) is SendFile:
                part.file.close()
        self.body = []


def error_answer(request: Request | None, status: int, message: str, *, close: bool = False, retry: bool = False,
                 logged: bool = True) -> Answer:
    """A short error page (HTML for browsers, one line of text otherwise)."""
    reason = REASONS.get(status, "Error")
    if request is not None and request.wants_html:
        back = "./" if request.path.endswith("/") else "."
        body = render_message(status, reason, message, back=back)
        kind = "text/html; charset=utf-8"
    else:
        body = f"{status} {reason}: {message}\n".encode()
        kind = "text/plain; charset=utf-8"
    answer = Answer(status, [("Content-Type", kind), ("X-Content-Type-Options", "nosniff"),
                             ("Cache-Control", "no-store")], [body], len(body), close=close)
    if request is not None:
        answer.head_only = request.method == "HEAD"
        if logged:
            answer.log = f"{status} {request.method} {request.path!r}: {message}"
    if retry:
        answer.headers.append(("Retry-After", RETRY_AFTER))
    return answer
