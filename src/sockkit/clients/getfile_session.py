"""One client connection speaking getfile protocol v1: connect (TLS, token), requests, answer lines.

Rule: every answer line is bounded (``MAX_LINE``) and every read has a timeout, so a server that
sends an endless line or nothing at all costs bounded memory and bounded time. Bytes that arrive
after an answer line are kept in ``pending`` and handed to the body reader first.
"""

from __future__ import annotations

import errno
import socket
import time
from typing import TYPE_CHECKING

from sockkit.clients.connect import ConnectFailed, connect
from sockkit.errors import (
    ConnectError,
    NoAnswer,
    ProtocolViolation,
    RemoteError,
    TransferInterrupted,
    Unreachable,
    printable,
)
from sockkit.protocols import getfile as wire

if TYPE_CHECKING:
    import ssl

#: How long to wait for the server to close after we half-close, when checking that nothing
#: follows the last body (a correct server closes at once).
DRAIN_SECONDS = 2.0


#: OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH.
_NAME_MISMATCH = {62, 64}


def handshake(raw: socket.socket, tls: ssl.SSLContext, host: str, port: int) -> ssl.SSLSocket:
    """TLS over ``raw`` (closed on failure). ``ssl`` is imported here, by the context's maker, only
    when TLS is asked for."""
    import ssl

    try:
        sock = tls.wrap_socket(raw, server_hostname=host, do_handshake_on_connect=False)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raw.close()
        raise ConnectError(f"TLS to {host}:{port}: {exc}") from None
    try:
        sock.do_handshake()
        return sock
    except ssl.SSLCertVerificationError as exc:
        sock.close()
        if exc.verify_code in _NAME_MISMATCH:  # trusted, but issued for another name: --cafile won't help
            raise ConnectError(f"TLS to {host}:{port}: certificate not accepted ({exc.verify_message}); "
                               "connect with --host set to a name or address it was issued for") from None
        raise ConnectError(f"TLS to {host}:{port}: certificate not accepted ({exc.verify_message}); "
                           "pass the server's CA with --cafile") from None
    except (ssl.SSLError, OSError) as exc:
        busy = _plain_busy_reply(sock)
        sock.close()
        if busy is not None:
            # A fork-model server over its --max-connections (or a threaded one with every
            # refusal thread taken) refuses before any handshake, in plain text: OpenSSL took
            # "ERR1 " for a record header and the rest is still here.
            raise RemoteError("busy", busy) from None
        raise ConnectError(f"TLS handshake with {host}:{port} failed: "
                           f"{getattr(exc, 'reason', None) or exc} (is the server started with TLS?)") from None


def _plain_busy_reply(sock: socket.socket) -> str | None:
    """The message of a plain-text ``ERR1 busy ...`` line left in the socket after a failed
    handshake, else None."""
    try:
        sock.settimeout(0.5)
        rest = socket.socket.recv(sock, 512)  # the plain socket underneath: TLS never began
    except OSError:
        return None
    line = rest.split(b"\n", 1)[0]
    if not line.startswith(b"busy "):
        return None
    return line[len(b"busy "):].decode("utf-8", "replace")


class Session:
    """A connected socket plus the bytes received but not yet consumed."""

    def __init__(self, host: str, port: int, *, timeout: float = 30.0, token: str | None = None,
                 tls: ssl.SSLContext | None = None) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        try:
            raw = connect(host, port, timeout)
        except ConnectFailed as exc:
            raise Unreachable(str(exc)) from None
        self.tls = tls is not None
        self.sock = raw if tls is None else handshake(raw, tls, host, port)
        self.sock.settimeout(timeout)
        self.pending = bytearray()
        self.received_any = False
        self.unanswered_auth = False
        if token:
            self.send(wire.format_request(wire.Auth(token)))
            self.unanswered_auth = True

    # -- context manager ---------------------------------------------------------------------
    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    # -- sending -------------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise TransferInterrupted(f"the server closed the connection ({errno.errorcode.get(exc.errno or 0, exc)})"
                                      ) from exc

    def request(self, request: wire.Request) -> None:
        self.send(wire.format_request(request))

    # -- receiving -----------------------------------------------------------------------------
    def _fill(self, what: str, deadline: float | None = None) -> None:
        """More bytes into ``pending``, within ``timeout`` and before ``deadline`` (monotonic; for
        an answer that must arrive whole in time). ``what`` (raw: it may hold a server-supplied
        path) is escaped only when it goes into a message, so the common path pays nothing for it."""
        wait = self.timeout
        if deadline is not None:
            wait = min(wait, deadline - time.monotonic())
            if wait <= 0:
                raise self._late(what)
        self.sock.settimeout(wait)
        try:
            chunk = self.sock.recv(1 << 16)
        except TimeoutError:
            if deadline is not None and wait < self.timeout:
                raise self._late(what) from None
            raise TransferInterrupted(
                f"no answer from the server within {self.timeout:g} s ({printable(what)})") from None
        except OSError as exc:
            # A TLS server resets a plain client whose request it took for a broken hello.
            hint = "" if self.tls or self.received_any else "; if it serves TLS use --tls"
            raise TransferInterrupted(f"the server reset the connection ({printable(what)}){hint}") from exc
        if not chunk:
            if self.received_any:
                raise TransferInterrupted(f"the server closed the connection ({printable(what)})")
            hint = "" if self.tls else "; if it serves TLS use --tls, if it is the chapter's server use --legacy"
            raise NoAnswer(f"the server closed the connection without answering ({printable(what)}){hint}")
        self.received_any = True
        self.pending += chunk

    def _late(self, what: str) -> TransferInterrupted:
        return TransferInterrupted(f"the server did not finish within {self.timeout:g} s ({printable(what)}); "
                                   "a slow but honest server needs a longer --timeout")

    def read_line(self, what: str = "waiting for an answer", deadline: float | None = None) -> bytes:
        """One answer line without its newline; bounded by MAX_LINE (and ``deadline``: see _fill)."""
        for _ in range(wire.MAX_LINE + 2):  # bounded: each turn adds at least one byte or raises
            end = self.pending.find(b"\n", 0, wire.MAX_LINE)
            if end >= 0:
                line = bytes(self.pending[:end])
                del self.pending[: end + 1]
                return line.removesuffix(b"\r")
            if len(self.pending) >= wire.MAX_LINE:
                raise ProtocolViolation(f"the server sent a line longer than {wire.MAX_LINE} bytes ({printable(what)})")
            self._fill(what, deadline)
        raise ProtocolViolation("the server's answer never ended")

    def answer(self, what: str, path: str | None = None, deadline: float | None = None) -> list[str]:
        """The fields of the next ``OK1`` answer; an ``ERR1`` becomes RemoteError."""
        if self.unanswered_auth:
            self.unanswered_auth = False
            self.answer("presenting the token", deadline=deadline)
        line = self.read_line(what, deadline)
        try:
            parsed = wire.parse_answer(line)
        except wire.ProtocolError:
            raise ProtocolViolation(f"the server does not speak getfile v1 (it answered {printable(repr(line), 80)}"
                                    f"; for the chapter's server use --legacy)") from None
        if isinstance(parsed, wire.Error):
            raise RemoteError(parsed.code.value, parsed.message, path)
        return parsed

    def take_pending(self, limit: int) -> memoryview:
        """Up to ``limit`` already-received bytes (the start of a body), removed from ``pending``."""
        count = min(limit, len(self.pending))
        piece = memoryview(bytes(self.pending[:count]))
        del self.pending[:count]
        return piece

    def expect_end(self) -> None:
        """After the last answer: the server must send nothing more. Half-close and wait for its close.

        Bytes before the close mean the server sent more than it announced: ProtocolViolation.
        """
        if self.pending:
            raise ProtocolViolation(f"the server sent {len(self.pending)} bytes more than it announced")
        if self.tls:
            return  # a TLS half-close is not possible without ending the session; checked via pending only
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            return
        deadline = time.monotonic() + min(DRAIN_SECONDS, self.timeout)
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(4096)
            except (TimeoutError, OSError):
                return
            if not chunk:
                return
            raise ProtocolViolation("the server sent more than it announced")
