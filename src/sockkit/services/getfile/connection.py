"""One getfile client's conversation: request lines in, answers and file bodies out.

Rules:
- Every request gets exactly one answer line (plus its body), in order. After a fatal error
  (``bad-request``, ``too-long``, ``busy``, ``auth-required``) nothing more is read and the
  connection closes.
- Pipelined requests are answered a few at a time: once ``ANSWER_BUDGET`` bytes of answers (a
  file counts its size) are made, the rest of what was read stays unparsed behind a
  ``Wait(0, then)`` until those answers are out. So a client that pipelines and never reads costs
  the server one answer, not one per request (its further requests wait in its own socket: the
  model reads no more meanwhile).
- ``receive`` never raises for anything a client sends: a service exception would cost the
  client its connection without a reason.
- What one connection can make the server hold is bounded: what one read brought (the model's
  read size), one partial request line of ``MAX_LINE`` bytes, one open file, and the answers made
  before the pause: ``ANSWER_BUDGET`` plus one answer (a listing is bounded by listing.py).
"""

from __future__ import annotations

import os

from sockkit.protocols.getfile import (
    FATAL,
    MAX_LINE,
    Auth,
    ErrorCode,
    FileHeader,
    Get,
    Legacy,
    List,
    ProtocolError,
    Put,
    Request,
    Tree,
    format_count,
    format_error,
    format_header,
    parse_request,
)
from sockkit.services.actions import CLOSE, Action, Peer, Reply, Send, SendFile, Wait, as_actions
from sockkit.services.getfile.digest import is_digest
from sockkit.services.getfile.http import looks_like_http, starts_like_http
from sockkit.services.getfile.http.connection import HttpConnection
from sockkit.services.getfile.listing import list_directory, list_tree
from sockkit.services.getfile.root import Refused, refusal_for
from sockkit.services.getfile.throttle import Throttled
from sockkit.services.getfile.transfers import ANSWER_BUDGET, INLINE_BODY, Transfers
from sockkit.services.getfile.upload import Upload

#: Log lines per connection; past it refusals are counted and summed up in one line at close.
MAX_LOG_LINES = 20


class GetfileConnection:
    """Sans-IO: bytes in, actions out; filesystem work goes through the service's ServedRoot."""

    __slots__ = ("authed", "batch_bytes", "buffer", "done", "first", "http", "logged", "peer", "service",
                 "transfers", "upload")

    def __init__(self, service, peer: Peer) -> None:
        self.service = service
        self.peer = peer
        self.buffer = bytearray()
        self.upload: Upload | None = None
        self.authed = service.token is None
        self.first = True  # no request seen yet: a bare path here is the chapter's protocol
        self.http: HttpConnection | None = None  # set when the first line was HTTP's
        self.done = False  # a Close was issued: nothing more is read
        self.transfers = Transfers(service.slots)  # files (and an upload) in flight, and their slot
        self.batch_bytes = 0
        self.logged = 0

    # -- the Connection protocol ------------------------------------------------------------------
    def start(self) -> list[Action]:
        return []

    def pending_request(self) -> bool:
        """Part of a request line is here and its newline is not (models enforce the deadline).

        An upload body in progress is not a pending request: its pace is the idle timeout's
        business, or a large upload would be cut off by the request deadline.
        """
        if self.http is not None:
            return self.http.pending_request()
        return bool(self.buffer) and self.upload is None and not self.done

    def receive(self, data: bytes) -> Reply:
        """Answers to the requests ``data`` completes; ``b""`` means the client closed its side."""
        if self.http is not None:
            return self.http.receive(data)
        return self._answering(self._take, data)

    def _resume(self) -> Reply:
        """``Wait.then``: the answers before are out; answer the next requests already read."""
        return self._answering(self._drain)

    def _answering(self, step, *args) -> list[Action]:
        """``step(*args, actions)`` under the rule that ``receive`` never raises."""
        actions: list[Action] = []
        if self.done:
            return actions
        self.batch_bytes = 0
        try:
            step(*args, actions)
        except Exception as exc:  # a bug here must still answer the client, not kill the connection silently
            self._log(f"internal error: {exc!r}")
            actions.append(Send(format_error(ErrorCode.INTERNAL, "server error; see the server's log")))
            self._finish(actions)
        return actions

    def _take(self, data: bytes, actions: list[Action]) -> None:
        if not data:
            self._at_end(actions)
            return
        view = memoryview(data)
        if self.upload is not None and not self.buffer:
            # The bulk of an upload skips the line buffer: no copy of the body.
            take = min(len(view), self.upload.wanted)
            self._feed_upload(view[:take], actions)
            view = view[take:]
        if view:
            self.buffer += view
        self._drain(actions)

    def close(self) -> None:
        if self.logged > MAX_LOG_LINES and self.service.log is not None:
            self.service.log(f"getfile {self.peer.host}:{self.peer.port}: {self.logged - MAX_LOG_LINES} more "
                             "refusals on this connection were not logged")
        if self.upload is not None:
            upload, self.upload = self.upload, None
            upload.abort()
        if self.http is not None:
            self.http.close()
        self.transfers.release()

    # -- reading requests -------------------------------------------------------------------------
    def _drain(self, actions: list[Action]) -> None:
        """Answer the complete requests in the buffer, feeding upload bodies as they come, until
        ``ANSWER_BUDGET`` is spent: then the rest waits for those answers to leave."""
        buffer = self.buffer
        while buffer and not self.done:
            if self.batch_bytes >= ANSWER_BUDGET:
                actions.append(Wait(0, self._resume))
                return
            if self.upload is not None:
                # A copy (only of body bytes that came in the same read as the PUT1 line): no view
                # of the buffer may outlive this call, or resizing it would fail.
                take = min(len(buffer), self.upload.wanted)
                chunk = bytes(buffer[:take])
                del buffer[:take]
                self._feed_upload(memoryview(chunk), actions)
                continue
            end = buffer.find(b"\n", 0, MAX_LINE)
            if self.first and (looks_like_http(buffer[:end + 1]) if end >= 0 else
                               len(buffer) >= MAX_LINE and starts_like_http(buffer)):
                self._become_http(actions)
                return
            if end < 0:
                if len(buffer) >= MAX_LINE:
                    self._refuse(actions, ErrorCode.TOO_LONG, f"request line longer than {MAX_LINE} bytes",
                                 "request", legacy=self.first and not buffer.startswith(_VERBS))
                return
            line = bytes(buffer[:end + 1])
            del buffer[:end + 1]
            self._answer_line(line, actions)

    def _become_http(self, actions: list[Action]) -> None:
        """The first line is HTTP's: the rest of this connection belongs to services/getfile/http."""
        self.first = False
        self.http = HttpConnection(self.service, self.peer, self.transfers)
        data, self.buffer = bytes(self.buffer), bytearray()
        actions.extend(as_actions(self.http.receive(data)))

    def _at_end(self, actions: list[Action]) -> None:
        """The client closed its side: a last line without a newline is still a request (a
        chapter client may send the path and shut down), then we close too."""
        if self.upload is not None:
            self._log(f"upload of {self.upload.shown!r} abandoned after {self.upload.received} of "
                      f"{self.upload.size} bytes")
            upload, self.upload = self.upload, None
            upload.abort()
            self.transfers.end()
        elif self.buffer and len(self.buffer) < MAX_LINE:
            line, self.buffer = bytes(self.buffer), bytearray()
            self._answer_line(line, actions)
        self._finish(actions)

    def _finish(self, actions: list[Action]) -> None:
        if not self.done:
            self.done = True
            self.buffer.clear()
            actions.append(CLOSE)

    def _answer_line(self, line: bytes, actions: list[Action]) -> None:
        first, self.first = self.first, False
        try:
            request = parse_request(line)
        except ProtocolError as exc:
            self._refuse(actions, exc.code, exc.message, "request", legacy=first and not line.startswith(_VERBS))
            return
        if isinstance(request, Legacy):
            if not first:
                self._refuse(actions, ErrorCode.BAD_REQUEST,
                             "unknown request; expected GET1, LIST1, TREE1, PUT1 or AUTH1", "request")
                return
            self._serve_legacy(request, actions)
            return
        if isinstance(request, Auth):
            self._authenticate(request, actions)
            return
        if not self.authed:
            self._refuse(actions, ErrorCode.AUTH_REQUIRED, "this server needs a token: send AUTH1 TOKEN first",
                         _describe(request))
            return
        try:
            if isinstance(request, Get):
                self._serve_get(request, actions)
            elif isinstance(request, List | Tree):
                self._serve_listing(request, actions)
            elif isinstance(request, Put):
                self._begin_upload(request, actions)
        except Refused as refused:
            self._refuse(actions, refused.code, refused.message, _describe(request))

    def _refuse(self, actions: list[Action], code: ErrorCode, message: str, what: str, legacy: bool = False) -> None:
        self._log(f"refused {what}: {code.value}: {message}")
        if legacy:
            self._finish(actions)  # the chapter's client stores whatever arrives: send it nothing
            return
        answer = format_error(code, message)
        self.batch_bytes += len(answer)
        actions.append(Send(answer))
        if code in FATAL:
            self._finish(actions)

    def _log(self, text: str) -> None:
        log = self.service.log
        if log is None:
            return
        if self.logged >= MAX_LOG_LINES:
            self.logged += 1  # a client sending thousands of bad requests must not flood the log
            return
        self.logged += 1
        log(f"getfile {self.peer.host}:{self.peer.port}: {text}")

    # -- answers ---------------------------------------------------------------------------------
    def _authenticate(self, request: Auth, actions: list[Action]) -> None:
        refusal = self.service.check_token(request.token, self.peer.host)
        if refusal is None:
            self.authed = True
            actions.append(Send(format_count(0)))
            return
        if isinstance(refusal, Throttled):  # not logged per connection: the service logs the source once
            actions.append(Send(format_error(refusal.code, refusal.message)))
            self._finish(actions)
            return
        self._refuse(actions, refusal.code, refusal.message, "AUTH1")

    def _serve_get(self, request: Get, actions: list[Action]) -> None:
        fd = self.service.root.open_file(request.path)
        try:
            info = os.fstat(fd)
            digest = self.service.digests.digest(fd, info)
            size = info.st_size
            offset = request.offset
            if (request.version is not None and request.version != digest) or offset > size:
                offset = 0  # the client's partial copy is of another version (or longer): start over
            header = format_header(FileHeader(size, offset, info.st_mtime_ns, digest))
            count = size - offset
            if count <= INLINE_BODY:
                body = os.pread(fd, count, offset) if count else b""
                if len(body) != count:
                    raise Refused(ErrorCode.INTERNAL, f"{request.path} shrank while being read; try again")
                os.close(fd)
                fd = -1
                self.batch_bytes += len(header) + count
                actions.append(Send(header + body))
                return
            file = self.transfers.hand_over(fd)
            fd = -1
        except OSError as exc:
            raise Refused(ErrorCode.INTERNAL, f"cannot read {request.path}: {exc.strerror}") from None
        finally:
            if fd >= 0:
                os.close(fd)
        self.batch_bytes += len(header) + count
        actions.append(Send(header))
        actions.append(SendFile(file, offset, count, request.path))

    def _serve_legacy(self, request: Legacy, actions: list[Action]) -> None:
        """The chapter's protocol: raw bytes of the file, then end of stream; errors: no bytes."""
        path = request.path.removesuffix("\r")
        if not self.authed:
            self._refuse(actions, ErrorCode.AUTH_REQUIRED, "this server needs a token", f"legacy {path!r}",
                         legacy=True)
            return
        # The chapter's own session names files with Windows separators (testdir\python15.lib).
        path = path.replace("\\", "/")
        try:
            fd = self.service.root.open_file(path)
            try:
                size = os.fstat(fd).st_size
                file = self.transfers.hand_over(fd)
            except BaseException:
                os.close(fd)
                raise
        except Refused as refused:
            self._refuse(actions, refused.code, refused.message, f"legacy {path!r}", legacy=True)
            return
        except OSError as exc:
            self._refuse(actions, ErrorCode.INTERNAL, exc.strerror or "error", f"legacy {path!r}", legacy=True)
            return
        actions.append(SendFile(file, 0, size, path))
        self._finish(actions)

    def _serve_listing(self, request: List | Tree, actions: list[Action]) -> None:
        shown = request.path or "."
        with self.service.root.open_directory(request.path) as walk:
            try:
                answer = list_directory(walk, shown) if isinstance(request, List) else list_tree(walk, shown)
            except OSError as exc:  # the directory vanished or descriptors ran out mid-listing
                raise refusal_for(exc, shown) from None
        self.batch_bytes += len(answer)
        actions.append(Send(answer))

    def _begin_upload(self, request: Put, actions: list[Action]) -> None:
        if not self.service.allow_upload:
            raise Refused(ErrorCode.UPLOAD_DISABLED, "this server does not accept uploads (start it with "
                                                     "--allow-upload)")
        if not is_digest(request.digest):
            self._refuse(actions, ErrorCode.BAD_REQUEST, "PUT1 digest must be xxh3-128:<32 hex digits>", "PUT1")
            return
        self.transfers.begin()
        try:
            self.upload = self.service.begin_upload(request)
        except BaseException:
            self.transfers.end()
            raise
        actions.append(Send(format_count(0)))
        if request.size == 0:
            self._complete_upload(actions)

    def _feed_upload(self, data: memoryview, actions: list[Action]) -> None:
        self.upload.feed(data)
        if self.upload.stalled:  # told now, not after the rest, which must then not be read as requests
            self._complete_upload(actions)
            self._finish(actions)
        elif self.upload.wanted == 0:
            self._complete_upload(actions)

    def _complete_upload(self, actions: list[Action]) -> None:
        upload, self.upload = self.upload, None
        try:
            upload.complete()
            answer = format_count(upload.size)
        except Refused as refused:
            self._log(f"refused PUT1 {upload.shown!r}: {refused.code.value}: {refused.message}")
            answer = format_error(refused.code, refused.message)
        self.transfers.end()
        actions.append(Send(answer))


_VERBS = (b"GET1 ", b"LIST1 ", b"TREE1 ", b"PUT1 ", b"AUTH1 ")


def _describe(request: Request) -> str:
    """A request for the log (paths shown as the client gave them; the log escapes controls)."""
    if isinstance(request, Get):
        return f"GET1 {request.path!r}"
    if isinstance(request, List):
        return f"LIST1 {request.path!r}"
    if isinstance(request, Tree):
        return f"TREE1 {request.path!r}"
    if isinstance(request, Put):
        return f"PUT1 {request.path!r}"
    return type(request).__name__
