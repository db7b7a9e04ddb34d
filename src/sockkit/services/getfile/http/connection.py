"""One HTTP client's conversation on the getfile port: h11 events in, actions out.

Rules:
- h11 parses and frames everything; this module never reads a request byte itself. What h11
  refuses (bad syntax, oversized heads, bad chunking, conflicting Content-Length) is answered
  with h11's status hint and the connection closes; a request with both Content-Length and
  Transfer-Encoding (the shape of request smuggling) is refused too, as RFC 9112 6.3 permits.
- Requests are answered in order, each answer complete before the next request is looked at
  (h11's cycle). Pipelined requests are answered one at a time, as getfile's are: once
  ``ANSWER_BUDGET`` bytes of answers (a file counts its size) are made, the rest stays in h11's
  buffer behind a ``Wait(0, then)`` until those answers are out; a client that pipelines and
  never reads costs the server one answer.
- ``receive`` never raises: any failure is one error answer (when one can still be sent) and a
  close, logged once with the client's address.
- Files go to the model as SendFile (zero-copy), counted against the same transfer slots as
  getfile's own downloads (``Transfers``); bodies up to ``INLINE_BODY`` travel with their head in
  one Send, as getfile's do.
"""

from __future__ import annotations

import contextlib

import h11

from sockkit.protocols.getfile import ErrorCode
from sockkit.services.actions import CLOSE, Action, Peer, Send, SendFile, Wait
from sockkit.services.getfile.http.access import CHALLENGES, from_elsewhere, presented_token
from sockkit.services.getfile.http.answers import REASONS, Answer, Request, error_answer, status_for
from sockkit.services.getfile.http.resources import serve_read
from sockkit.services.getfile.http.target import BadTarget, parse_target
from sockkit.services.getfile.http.uploads import FormSink, PutSink, UploadRefused
from sockkit.services.getfile.root import Refused
from sockkit.services.getfile.throttle import Throttled
from sockkit.services.getfile.transfers import ANSWER_BUDGET, Transfers

#: Largest request head (request line and headers) h11 will buffer: nginx's default large buffers hold 4 x 8 KiB.
MAX_HEAD = 32 * 1024
#: Log lines per connection; past it refusals are counted and summed up in one line at close.
MAX_LOG_LINES = 20
ALLOWED_READ = ("GET", "HEAD")
ALLOWED_WRITE = ("PUT", "POST")


class _Span:
    """A SendFile passed through h11 as body data (h11 only needs its length)."""

    __slots__ = ("action",)

    def __init__(self, action: SendFile) -> None:
        self.action = action

    def __len__(self) -> int:
        return self.action.count


class HttpConnection:
    """Sans-IO, like every connection: ``receive(bytes) -> actions``; ``b""`` means the client closed."""

    __slots__ = ("batch", "closed", "h11", "logged", "peer", "service", "sink", "site", "transfers")

    def __init__(self, service, peer: Peer, transfers: Transfers) -> None:
        self.service = service
        self.site = service.http
        self.peer = peer
        self.transfers = transfers
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self.sink = None  # where the current request's body goes (an upload); None: nowhere
        self.closed = False
        self.logged = 0
        self.batch = 0

    # -- the Connection protocol ----------------------------------------------------------------
    def start(self) -> list[Action]:
        return []

    def pending_request(self) -> bool:
        """Part of a request head is here and the rest is not (the model's request deadline)."""
        return not self.closed and self.h11.their_state is h11.IDLE and bool(self.h11.trailing_data[0])

    def receive(self, data: bytes) -> list[Action]:
        return self._answering(data)

    def _resume(self) -> list[Action]:
        """``Wait.then``: the answers before are out; answer the next requests already read."""
        return self._answering(None)

    def _answering(self, data: bytes | None) -> list[Action]:
        if self.closed:
            return []
        actions: list[Action] = []
        self.batch = 0
        try:
            if data is not None:
                self.h11.receive_data(data)
            self._events(actions)
        except h11.RemoteProtocolError as exc:
            self._fail(actions, exc.error_status_hint, f"bad request: {exc}")
        except Exception as exc:  # a bug here must still answer the client, not kill the connection silently
            self._log(f"internal error: {exc!r}")
            self._fail(actions, 500, "server error; see the server's log")
        return actions

    def close(self) -> None:
        if self.logged > MAX_LOG_LINES and self.service.log is not None:
            self.service.log(f"http {self.peer.host}:{self.peer.port}: {self.logged - MAX_LOG_LINES} more "
                             "refusals on this connection were not logged")
        self._drop_sink()
        self.transfers.release()

    # -- events ---------------------------------------------------------------------------------
    def _events(self, actions: list[Action]) -> None:
        conn = self.h11
        while not self.closed:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                return
            if event is h11.PAUSED:
                if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                    if self.batch >= ANSWER_BUDGET and conn.trailing_data[0]:
                        actions.append(Wait(0, self._resume))  # the next request once these answers are out
                        return
                    conn.start_next_cycle()
                    continue
                return
            kind = type(event)
            if kind is h11.Request:
                self._request(event, actions)
            elif kind is h11.Data:
                if self.sink is not None:
                    refusal = self.sink.feed(event.data)
                    if refusal is not None:  # refused before storing anything: answer, read no more of it
                        self._drop_sink()
                        refusal.close = True
                        self._send(refusal, actions)
            elif kind is h11.EndOfMessage:
                if self.sink is not None:
                    sink, self.sink = self.sink, None
                    self._send(sink.finish(), actions)
            elif kind is h11.ConnectionClosed:
                self._close(actions)
                return
            if conn.our_state is h11.MUST_CLOSE:
                self._close(actions)
                return

    def _request(self, event: h11.Request, actions: list[Action]) -> None:
        request = Request.from_h11(event)
        if len(event.target) + sum(len(name) + len(value) + 4 for name, value in event.headers) > MAX_HEAD:
            # h11 bounds a head that trickles in; one that came in a single read is bounded here.
            self._send(error_answer(request, 431, f"request head larger than {MAX_HEAD} bytes", close=True), actions)
            return
        if "transfer-encoding" in request.headers and "content-length" in request.headers:
            self._send(error_answer(request, 400, "Content-Length together with Transfer-Encoding", close=True),
                       actions)
            return
        try:
            path, query = parse_target(event.target)
        except BadTarget as bad:
            self._send(error_answer(request, bad.status, bad.message, close=True), actions)
            return
        request.path, request.query = path, query
        if not self._authorized(request, actions):
            return
        if request.method in ALLOWED_READ:
            try:
                answer = serve_read(self.service, request, self.transfers)
            except Refused as refused:
                answer = error_answer(request, status_for(refused.code), refused.message,
                                      retry=refused.code is ErrorCode.BUSY)
            self._send(answer, actions)
            return
        if request.method in ALLOWED_WRITE and self.service.allow_upload:
            self._begin_upload(request, actions)
            return
        allowed = ", ".join(self._allowed())
        why = ("this server does not accept uploads (start it with --allow-upload)" if request.method in ALLOWED_WRITE
               else f"{request.method} is not supported here; use {allowed}")
        answer = error_answer(request, 405, why, close=request.has_body)
        answer.headers.append(("Allow", allowed))
        self._send(answer, actions)

    def _allowed(self) -> tuple[str, ...]:
        return ALLOWED_READ + ALLOWED_WRITE if self.service.allow_upload else ALLOWED_READ

    def _begin_upload(self, request: Request, actions: list[Action]) -> None:
        """A PUT or the page's form: checked, then its body goes to getfile's Upload (uploads.py)."""
        why = from_elsewhere(request.headers)
        if why is not None:
            self._send(error_answer(request, 403, why, close=request.has_body), actions)
            return
        try:
            sink = (PutSink if request.method == "PUT" else FormSink)(self.service, request, self.transfers)
        except UploadRefused as refused:
            self._send(refused.answer, actions)
            return
        self.sink = sink
        if self.h11.they_are_waiting_for_100_continue:
            actions.append(Send(self.h11.send(h11.InformationalResponse(status_code=100, headers=[]))))

    def _authorized(self, request: Request, actions: list[Action]) -> bool:
        if self.service.token is None:
            return True
        offered = presented_token(request.headers.get("authorization"))
        refusal = None if offered is None else self.service.check_token(offered, self.peer.host)
        if offered is not None and refusal is None:
            return True
        why = "this server needs its token (HTTP basic with the token as password, or Bearer)"
        if refusal is not None:
            if not isinstance(refusal, Throttled):  # a throttled source is logged once, by the service
                self._log(f"wrong token for {request.method} {request.path!r}")
            why = refusal.message
        answer = error_answer(request, 401, why, close=request.has_body, logged=False)
        answer.headers.extend(("WWW-Authenticate", challenge) for challenge in CHALLENGES)
        self._send(answer, actions)
        return False

    # -- answers --------------------------------------------------------------------------------
    def _send(self, answer: Answer, actions: list[Action]) -> None:
        """The answer through h11 (which keeps the framing honest) and out as actions."""
        if answer.log is not None:
            self._log(answer.log)
        now = self.site.now()
        headers = [(b"Server", b"sockkit")]
        if now is not None:
            headers.append((b"Date", self.site.date(now).encode("ascii")))
        headers += [(name.encode("ascii"), value.encode("latin-1")) for name, value in answer.headers]
        if answer.length is not None:
            headers.append((b"Content-Length", str(answer.length).encode("ascii")))
        if answer.close:
            headers.append((b"Connection", b"close"))
        conn = self.h11
        try:
            pending = bytearray(conn.send(h11.Response(status_code=answer.status, headers=headers,
                                                               reason=REASONS.get(answer.status, ""))))
            if answer.head_only:
                answer.discard()
            else:
                for part in answer.body:
                    if type(part) is bytes:
                        pending += conn.send(h11.Data(data=part))
                        continue
                    if pending:
                        actions.append(Send(bytes(pending)))
                        self.batch += len(pending)
                        pending.clear()
                    for piece in conn.send_with_data_passthrough(h11.Data(data=_Span(part))):
                        if type(piece) is _Span:
                            self.batch += piece.action.count
                            actions.append(piece.action)
                        else:
                            pending += piece
            pending += conn.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            answer.discard()
            raise
        if pending:
            self.batch += len(pending)
            actions.append(Send(bytes(pending)))

    def _fail(self, actions: list[Action], status: int, message: str) -> None:
        """An error answer if h11 still lets us send one, then close."""
        self._drop_sink()
        if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            self._log(f"{status}: {message}")
            with contextlib.suppress(h11.LocalProtocolError):
                self._send(error_answer(None, status, message, close=True, logged=False), actions)
        self._close(actions)

    def _close(self, actions: list[Action]) -> None:
        if not self.closed:
            self.closed = True
            self._drop_sink()
            actions.append(CLOSE)

    def _drop_sink(self) -> None:
        sink, self.sink = self.sink, None
        if sink is not None:
            sink.abort()

    def _log(self, text: str) -> None:
        log = self.service.log
        if log is None:
            return
        self.logged += 1
        if self.logged <= MAX_LOG_LINES:  # a client sending thousands of bad requests must not flood the log
            log(f"http {self.peer.host}:{self.peer.port}: {text}")
