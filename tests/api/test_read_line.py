"""sockkit.testing.read_line takes one line and leaves what follows it in the socket."""

from __future__ import annotations

import socket
import threading

from sockkit.testing import read_line


def test_one_line_at_a_time_and_the_body_behind_it_stays_unread() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.settimeout(5)
        theirs.sendall(b"OK1 4 x\nsecond\nbody")  # one segment: a greedy reader would take it all
        assert read_line(ours) == b"OK1 4 x\n"
        assert read_line(ours) == b"second\n"
        assert ours.recv(100) == b"body"


def test_a_line_in_pieces_and_a_stream_that_ends_without_a_newline() -> None:
    ours, theirs = socket.socketpair()
    with ours:
        def trickle() -> None:
            with theirs:
                for piece in (b"Ech", b"o=>", b"hi\nrest", b" of it"):
                    theirs.sendall(piece)
        writer = threading.Thread(target=trickle)
        writer.start()
        ours.settimeout(5)
        assert read_line(ours) == b"Echo=>hi\n"
        writer.join()
        assert read_line(ours) == b"rest of it"
        assert read_line(ours) == b""
