"""The contract between services and server models.

A service turns bytes received into a list of *actions*; a model carries them out over a real
socket. Rule: nothing under ``services/`` touches the network, a thread, a process, a signal or a
clock (the clock is handed in); file-system I/O happens only where files are what is served
(``services/getfile/``). tests/services/test_layering.py checks exactly this.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, Protocol


@dataclass(slots=True)  # not frozen: a frozen dataclass costs twice as much to build, once per message
class Send:
    """Bytes to send, in order after every earlier action (treat as immutable)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class SendFile:
    """``count`` bytes of ``file`` from ``offset``; the driver picks the fastest path.

    Ownership of ``file`` passes to the driver: it closes the file once the bytes are sent or the
    connection ends, whichever comes first (the service must not touch it again).
    """

    file: BinaryIO
    offset: int
    count: int
    #: What the file is, for the server's log if reading it fails (the path the client asked for).
    name: str = ""


@dataclass(frozen=True, slots=True)
class Wait:
    """Hold this connection for ``seconds``; other clients never wait.

    The rule every model keeps: while a Wait is pending, the connection's later actions wait, and
    so does its input -- nothing the client sends meanwhile (end of stream included) reaches
    ``receive`` before the Wait is over; it stays unread in the kernel, or in the model's buffer if
    it was already read, and is handed over in order afterwards. So a reply the service makes from
    that input (a time stamp) is made when it is sent, whoever runs the connection: the chapter's
    servers sleep first, then read and answer.

    ``then``, if given, is called once the Wait is over; the reply it returns is carried out before
    any action queued behind this Wait (a delay per message whose reply is made at send time).
    A Wait starts once every earlier action is done (its bytes handed to the kernel), so
    ``Wait(0, then)`` means "make the next answer once this one is out": a service holding more
    pipelined requests answers them one at a time that way, and a client that never reads costs
    the server one answer, not all of them.
    """

    seconds: float
    then: Callable[[], Reply] | None = None


@dataclass(frozen=True, slots=True)
class Close:
    """Flush what is queued, half-close, then close the connection."""


Action = Send | SendFile | Wait | Close
CLOSE = Close()
#: What ``receive`` returns: a list of actions, or -- the common answer made cheap -- a non-empty
#: ``bytes`` object, which means exactly ``[Send(that)]``. Models take the bytes straight to the
#: socket: no list, no ``Send`` per message (with 10 client threads under the GIL, building them
#: cost the thread model 15-25 % of its requests per second).
Reply = list[Action] | bytes


def as_actions(reply: Reply) -> list[Action]:
    """``reply`` as a list of actions (for the paths where speed does not matter)."""
    return [Send(reply)] if type(reply) is bytes else reply


class Connection(Protocol):
    """One client's conversation, with no sockets in it."""

    def start(self) -> list[Action]:
        """Actions to run as soon as the client is accepted (a banner); usually ``[]``."""
        ...

    def receive(self, data: bytes) -> Reply:
        """Actions answering ``data`` (or bytes: see ``Reply``); ``b""`` means the peer closed its side
        (as ``socket.recv``)."""
        ...

    def close(self) -> None:
        """Release what the conversation holds; called exactly once when the connection ends."""
        ...

    # Optional: ``mirrors: bool`` -- True when, until the end of the stream, ``receive(data)`` is
    # exactly ``data`` for every chunk and ``[CLOSE]`` for ``b""`` (RFC 862 echo). A model may then
    # send each chunk back itself without calling ``receive``: the blocking driver, select and
    # the event loops do (under the GIL, that call and its bookkeeping were most of what
    # separated the thread model from a bare two-line echo loop). A model that ignores it stays
    # correct, since ``receive`` gives the same answer.
    #
    # Optional: ``pending_request() -> bool`` -- True while part of a request has arrived and
    # the rest has not. Models then hold the client to an absolute deadline (``--request-timeout``)
    # as well as the idle timeout, so a client trickling one byte at a time is still cut off.


@dataclass(frozen=True, slots=True)
class Peer:
    """Who is on the other end, as the model learned it from ``accept``."""

    host: str
    port: int


@dataclass(frozen=True, slots=True)
class Needs:
    """What a service needs from the model that runs it; a model that cannot give it refuses at
    start, with a sentence saying why, before any port is bound."""

    #: One state shared by all clients (a room, a store): every connection must live in one
    #: process, so the models that fork a process per client or per worker are refused (each
    #: process would get its own copy and clients would silently disagree).
    shared_state: bool = False
    #: Clients must arrive over TLS: refused under a model without TLS, or without a certificate.
    tls: bool = False


#: What a service that declares nothing needs: any model runs it.
NEEDS_NOTHING = Needs()


class Service(Protocol):
    """A protocol that any server model can run.

    Optional attributes, read with ``getattr`` so a service may leave them out:
    ``needs: Needs`` (default ``NEEDS_NOTHING``) and ``default_port: int`` (the port
    ``sockkit serve`` and ``sockkit.serve()`` listen on when none is given; without it, a free one).
    """

    name: str

    def connect(self, peer: Peer) -> Connection:
        """A fresh conversation for a client just accepted."""
        ...

    def busy_reply(self) -> bytes:
        """What a client is told when the server is at its connection limit."""
        ...


class Preface(Protocol):
    """A stage before the service (e.g. a PROXY protocol header): it reads a connection's first bytes
    and says who the peer really is. The model's engine starts the service only once it has."""

    def feed(self, data: bytes) -> tuple[Peer, bytes] | None:
        """None while more is needed; then the real peer and the bytes after the preface (which go to
        the service). Raises ValueError, with a message for the log, to refuse the connection."""
        ...


#: A clock handed to services that need the time; injected so services stay pure.
Clock = Callable[[], float]
