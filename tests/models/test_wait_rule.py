"""``actions.Wait``'s rule under every model: no input reaches the service while a Wait runs, and
``Wait.then``'s reply is made when the Wait ends -- so a stamp is the time the reply was sent.

The echo service's ``--delay`` (one Wait per connection, before the first read) and
``--delay-each`` (a Wait per message, the reply made by ``then``) are the probes; the stamp
(`` at <ctime>``, whole seconds) says when the service made the reply.
"""

from __future__ import annotations

import socket
import time

from sockkit.testing import running

DELAY = 2.0


def stamp_of(reply: bytes, echoed: bytes) -> float:
    """The server time in ``Echo=><echoed> at <ctime>``, as seconds since the epoch."""
    head = b"Echo=>" + echoed + b" at "
    assert reply.startswith(head), reply
    return time.mktime(time.strptime(reply[len(head):].decode().strip(), "%a %b %d %H:%M:%S %Y"))


def read_to_end(sock: socket.socket) -> bytes:
    data = bytearray()
    while chunk := sock.recv(65536):
        data += chunk
    return bytes(data)


def test_input_sent_during_the_wait_is_answered_after_it(model):
    """--delay 2 --stamp: a client that sends at once and half-closes (its end of stream also arrives
    inside the Wait) gets exactly one reply, made after the Wait, then the server's close."""
    with running("echo", "--model", model, "--port", "0", "--delay", str(DELAY), "--stamp", "--quiet") as server, \
            socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        began = time.time()
        sock.sendall(b"spam")
        sock.shutdown(socket.SHUT_WR)
        reply = read_to_end(sock)
        waited = time.time() - began
    assert waited >= DELAY - 0.1
    # Whole seconds: a stamp made after the Wait is at least began + DELAY - 1.
    assert stamp_of(reply, b"spam") > began + DELAY - 1.0 - 1e-3, (reply, began)


def test_delay_each_reply_is_made_when_its_wait_ends(model):
    """--delay-each 2 --stamp: the reply (and its stamp) comes from ``Wait.then``, at the end of the wait."""
    with running("echo", "--model", model, "--port", "0", "--delay-each", str(DELAY), "--stamp",
                 "--quiet") as server, socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        began = time.time()
        sock.sendall(b"Bruce")
        sock.shutdown(socket.SHUT_WR)
        reply = read_to_end(sock)
        waited = time.time() - began
    assert waited >= DELAY - 0.1
    assert stamp_of(reply, b"Bruce") > began + DELAY - 1.0 - 1e-3, (reply, began)
