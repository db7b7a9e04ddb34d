"""GET and HEAD: a file (whole, ranges, conditional), a folder's page or JSON, a folder's archive.

Rules: every path is opened through the getfile service's ``ServedRoot`` (the same jail, walked
from the root's descriptor), and a file's headers describe the very descriptor whose bytes are
sent. Preconditions come before ranges (RFC 9110 13.2.2); a Range on anything but a file is
ignored. Bodies up to ``INLINE_BODY`` are read and sent with their head; larger ones go to the
model as SendFile, each a transfer counted against the server's slots.
"""

from __future__ import annotations

import os
import posixpath
from urllib.parse import quote

from sockkit.protocols.getfile import ErrorCode
from sockkit.services.actions import SendFile
from sockkit.services.getfile.http.answers import Answer, Request
from sockkit.services.getfile.http.archive import Plan
from sockkit.services.getfile.http.conditional import Validators, http_date, precondition, range_applies, validators_for
from sockkit.services.getfile.http.media import ACTIVE_TYPES, content_type, media_type
from sockkit.services.getfile.http.page import POLICY, SORT_KEYS, render_json, render_page
from sockkit.services.getfile.http.ranges import UNSATISFIABLE, Span, content_range, ranges_for
from sockkit.services.getfile.listing import directory_entries, tree_entries
from sockkit.services.getfile.root import Refused, refusal_for
from sockkit.services.getfile.transfers import INLINE_BODY, Transfers

#: Separates the parts of a multipart/byteranges answer (never found in a header we write).
BOUNDARY = "sockkit-byteranges-3d6b9f0c2a"
#: Documents a browser could run script in are sent sandboxed (see media.ACTIVE_TYPES).
SANDBOX = "sandbox"


def serve_read(service, request: Request, transfers: Transfers) -> Answer:
    """The answer to a GET or HEAD of ``request.path``; raises Refused for getfile's refusals."""
    rel = request.path.lstrip("/")
    if request.path.endswith("/"):
        return _folder(service, request, transfers, rel.rstrip("/"))
    try:
        fd = service.root.open_file(rel)
    except Refused as refused:
        if refused.code is not ErrorCode.IS_DIRECTORY:
            raise
        return _redirect(request, quote(request.path, safe="/") + "/")
    return _file(service, request, transfers, fd, posixpath.basename(rel))


def _redirect(request: Request, location: str) -> Answer:
    query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" if v else quote(k, safe='')
                     for k, v in request.query.items())
    target = location + (f"?{query}" if query else "")
    answer = Answer(301, [("Location", target), ("Content-Type", "text/plain; charset=utf-8")],
                    [b"moved\n"], 6)
    answer.head_only = request.method == "HEAD"
    return answer


# -- files ---------------------------------------------------------------------------------------
def _file(service, request: Request, transfers: Transfers, fd: int, name: str) -> Answer:
    """The answer for the open file ``fd``, which this closes or hands to the model on every path."""
    try:
        info = os.fstat(fd)
        site = service.http
        current = validators_for(info, site.now())
        headers = _file_headers(current, name, request)
        digest = site.repr_digest(fd, info, request.headers.get("want-repr-digest"))
        if digest is not None:
            headers.append(("Repr-Digest", digest))
        head = request.method == "HEAD"
        decided = precondition(request.method, request.headers, current)
        size = info.st_size
        spans = None
        if decided is None and request.method == "GET" and "range" in request.headers \
                and range_applies(request.headers, current):
            spans = ranges_for(request.headers["range"], size)
    except BaseException:
        os.close(fd)
        raise
    if decided is not None:
        os.close(fd)
        answer = Answer(decided, headers if decided == 304 else [], length=None if decided == 304 else 0)
        answer.head_only = head
        return answer
    if spans is UNSATISFIABLE:
        os.close(fd)
        return Answer(416, [*headers, ("Content-Range", f"bytes */{size}")], length=0)
    headers.append(("Content-Type", content_type(name)))
    if not spans:
        return _body(Answer(200, headers, head_only=head), transfers, fd, [(b"", Span(0, size - 1))], size,
                     request.path)
    if len(spans) == 1:
        headers.append(("Content-Range", content_range(spans[0], size)))
        return _body(Answer(206, headers), transfers, fd, [(b"", spans[0])], spans[0].length, request.path)
    # Several ranges: multipart/byteranges (RFC 9110 14.6), each part with its own head.
    kind = headers.pop()[1]
    headers.append(("Content-Type", f"multipart/byteranges; boundary={BOUNDARY}"))
    parts = [(f"\r\n--{BOUNDARY}\r\nContent-Type: {kind}\r\nContent-Range: {content_range(span, size)}\r\n\r\n"
              .encode("ascii"), span) for span in spans]
    tail = f"\r\n--{BOUNDARY}--\r\n".encode("ascii")
    length = sum(len(head) + span.length for head, span in parts) + len(tail)
    answer = _body(Answer(206, headers), transfers, fd, parts, length, request.path)
    answer.body.append(tail)
    return answer


def _file_headers(current: Validators, name: str, request: Request) -> list[tuple[str, str]]:
    headers = [("ETag", current.etag), ("Last-Modified", http_date(current.modified)), ("Accept-Ranges", "bytes"),
               ("X-Content-Type-Options", "nosniff")]
    if media_type(name) in ACTIVE_TYPES:
        headers.append(("Content-Security-Policy", SANDBOX))
    if "dl" in request.query:
        headers.append(("Content-Disposition", attachment(name)))
    return headers


def attachment(name: str) -> str:
    """Content-Disposition for a download: an ASCII fallback and the exact name (RFC 6266/8187)."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in name) or "download"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def _body(answer: Answer, transfers: Transfers, fd: int, parts: list[tuple[bytes, Span]], length: int,
          name: str = "") -> Answer:
    """Fill ``answer`` with ``parts`` of ``fd`` (inline when small, else zero-copy); closes or hands over ``fd``
    on every path, exceptions included."""
    answer.length = length
    if answer.head_only or length == 0:
        os.close(fd)
        return answer
    if length <= INLINE_BODY:
        try:
            chunks = [head + _read_exactly(fd, span) for head, span in parts]
        finally:
            os.close(fd)
        answer.body.append(b"".join(chunks))
        return answer
    try:
        for index, (head, span) in enumerate(parts):
            if head:
                answer.body.append(head)
            source = fd if index == len(parts) - 1 else os.dup(fd)
            try:
                file = transfers.hand_over(source)
            except BaseException:
                if source != fd:
                    os.close(source)
                raise
            if source == fd:
                fd = -1
            answer.body.append(SendFile(file, span.start, span.length, name))
    except BaseException:
        answer.discard()
        if fd >= 0:
            os.close(fd)
        raise
    return answer


def _read_exactly(fd: int, span: Span) -> bytes:
    data = os.pread(fd, span.length, span.start)
    if len(data) != span.length:
        raise Refused(ErrorCode.INTERNAL, "the file shrank while being read; try again")
    return data


# -- folders -------------------------------------------------------------------------------------
def _folder(service, request: Request, transfers: Transfers, rel: str) -> Answer:
    with service.root.open_directory(rel) as walk:
        try:
            if "tar" in request.query:
                return _archive(service, request, transfers, rel, tree_entries(walk, rel or "."))
            entries = directory_entries(walk, rel or ".")
        except OSError as exc:
            raise refusal_for(exc, rel or ".") from None
    if "json" in request.query or _prefers_json(request.headers.get("accept", "")):
        body = render_json(request.path, entries)
        kind = "application/json; charset=utf-8"
        headers = [("Content-Type", kind)]
    else:
        sort = request.query.get("sort", "name")
        body = render_page(request.path, _root_name(service), entries,
                           sort=sort if sort in SORT_KEYS else "name", descending=request.query.get("order") == "desc",
                           upload=service.allow_upload, notice=_notice(request), error=request.query.get("error", ""))
        # Not no-referrer: under it Chrome sends the form's POST with "Origin: null", which the
        # cross-site check must refuse.
        headers = [("Content-Type", "text/html; charset=utf-8"), ("Content-Security-Policy", POLICY),
                   ("Referrer-Policy", "same-origin")]
    headers += [("Vary", "Accept"), ("Cache-Control", "no-cache"), ("X-Content-Type-Options", "nosniff")]
    return Answer(200, headers, [body], len(body), head_only=request.method == "HEAD")


def _notice(request: Request) -> str:
    name = request.query.get("uploaded")
    return f"Uploaded {name}." if name else ""


def _prefers_json(accept: str) -> bool:
    """``Accept: application/json`` (and no HTML ahead of it): a script, not a browser."""
    lowered = accept.lower()
    position = lowered.find("application/json")
    if position < 0:
        return False
    html_at = lowered.find("text/html")
    return html_at < 0 or html_at > position


def _root_name(service) -> str:
    return os.path.basename(os.path.abspath(service.root.path)) or "/"


def _archive(service, request: Request, transfers: Transfers, rel: str, entries) -> Answer:
    top = posixpath.basename(rel) or _root_name(service).strip("/") or "files"
    try:
        plan = Plan(top, rel, entries)
    except ValueError as exc:
        raise Refused(ErrorCode.NOT_PERMITTED, f"{rel or 'the root'} holds {exc}") from None
    headers = [("Content-Type", "application/x-tar"), ("Content-Disposition", attachment(top + ".tar")),
               ("X-Content-Type-Options", "nosniff"), ("Cache-Control", "no-cache")]
    answer = Answer(200, headers, length=plan.length, head_only=request.method == "HEAD")
    if answer.head_only:
        return answer
    transfers.begin()
    answer.body = plan.parts(service.root, transfers.end)
    return answer
