"""``sockkit echo`` reading replies that carry no end marker (the chapter's servers), however TCP cuts them.

A scripted server sends each reply in pieces, a byte or a few at a time with pauses between
(TCP_NODELAY, so each piece is a segment of its own): the client must still print each reply whole
and in its place -- the stamp of one reply never lost nor carried into the next.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from contextlib import suppress

import pytest

from sockkit.testing import sockkit_command

STAMP = " at Sun Jun 18 19:37:56 2000"


def serve_once(pieces_for) -> tuple[int, threading.Thread]:
    """A one-client server on a free port: for each chunk received, send ``pieces_for(chunk)`` one by one."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def run() -> None:
        with listener:
            listener.settimeout(20)
            conn, _ = listener.accept()
        with conn, suppress(OSError):  # a client that gave up may have closed: that is its verdict
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.settimeout(20)
            while chunk := conn.recv(1024):
                for piece in pieces_for(chunk):
                    conn.sendall(piece)
                    time.sleep(0.02)  # a segment of its own (the server's pacing, not the test's sync)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return port, thread


def echo(port: int, *messages: str) -> list[str]:
    done = subprocess.run(sockkit_command("echo", f"127.0.0.1:{port}", *messages, "--timeout", "20"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


@pytest.mark.parametrize("cut", [1, 3, 7], ids=["bytewise", "by-3", "by-7"])
def test_stamped_replies_cut_anywhere_print_whole(cut):
    """Each stamped reply, sent ``cut`` bytes at a time, is printed whole: stamps stay with their reply."""
    def pieces(chunk: bytes) -> list[bytes]:
        reply = b"Echo=>" + chunk + STAMP.encode()
        return [reply[i:i + cut] for i in range(0, len(reply), cut)]

    port, server = serve_once(pieces)
    assert echo(port, "The", "Meaning", "of", "Life") == [
        f"Client received: 'Echo=>{word}{STAMP}'" for word in ("The", "Meaning", "of", "Life")]
    server.join(20)


def test_unstamped_replies_cut_anywhere_print_whole():
    port, server = serve_once(lambda chunk: [b"Ech", b"o=>", chunk[:1], chunk[1:]])
    assert echo(port, "spam", "Spam", "SPAM") == [f"Client received: 'Echo=>{m}'" for m in ("spam", "Spam", "SPAM")]
    server.join(20)


def test_a_reply_that_is_not_an_echo_is_a_clear_error():
    """A raw echo server (no ``Echo=>``): one line saying so, not a hang."""
    port, server = serve_once(lambda chunk: [chunk])
    done = subprocess.run(sockkit_command("echo", f"127.0.0.1:{port}", "hello there", "--timeout", "20"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "does not start with 'Echo=>'" in done.stderr and "--raw" in done.stderr
    server.join(20)


def test_a_lines_server_is_named_early_and_a_slow_one_still_answered(monkeypatch, capsys):
    """``sockkit echo`` (the chapter's way: no newline) against ``serve echo --lines`` hears nothing, ever:
    it says so on stderr once the first reply is SILENCE_HINT late (6 s: past the chapter's 5 s sleep),
    not only at the timeout, and keeps waiting -- a server that is merely slow is still answered and
    printed, and one that answers at once prompts no hint."""
    from sockkit import cli
    from sockkit.clients import echo as echo_client
    from sockkit.testing import running

    monkeypatch.setattr(echo_client, "SILENCE_HINT", 0.3)
    with running("echo", "--lines", "--port", "0", "--quiet") as lines:
        began = time.monotonic()
        assert cli.main(["echo", f"127.0.0.1:{lines.port}", "spam", "--timeout", "2"]) == 1
        assert time.monotonic() - began >= 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"sockkit echo: no reply from 127.0.0.1:{lines.port} after 0 s, still waiting (up to 2 s); "
                   "a server started with --lines answers whole lines only: use sockkit echo --lines",
                   f"sockkit echo: 127.0.0.1:{lines.port}: no reply within 2 s (a server started with --lines "
                   "answers whole lines only: use sockkit echo --lines)"]
    with running("echo", "--delay", "1", "--port", "0", "--quiet") as slow:
        assert cli.main(["echo", f"127.0.0.1:{slow.port}", "spam", "Spam", "--timeout", "20"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == ["Client received: 'Echo=>spam'", "Client received: 'Echo=>Spam'"]
    assert err.count("still waiting") == 1
    with running("echo", "--port", "0", "--quiet") as quick:
        assert cli.main(["echo", f"127.0.0.1:{quick.port}", "spam", "--timeout", "20"]) == 0
    assert capsys.readouterr() == ("Client received: 'Echo=>spam'\n", "")


@pytest.mark.parametrize("framing", [[], ["--lines"]], ids=["chapter", "lines"])
def test_a_busy_server_is_said_once_not_as_an_errno(framing):
    """Past ``--max-connections`` the server answers its busy line and closes: ``sockkit echo`` prints that
    reply, says the server is busy, exits 1 -- not ``[Errno 107] Transport endpoint is not connected`` (one
    message) or a reset that lost the reply (several)."""
    from sockkit.testing import running

    with running("echo", *framing, "--max-connections", "1", "--port", "0", "--quiet") as server, \
            socket.create_connection(("127.0.0.1", server.port), timeout=10) as holder:
        holder.sendall(b"x\n")
        assert holder.recv(100).startswith(b"Echo=>x")  # the one slot is taken
        for messages in (["spam"], ["spam", "Spam", "SPAM"]):
            done = subprocess.run(sockkit_command("echo", f"127.0.0.1:{server.port}", *messages, *framing),
                                  capture_output=True, text=True, timeout=60)
            assert done.returncode == 1
            assert done.stdout.startswith("Client received: 'Echo=>server busy, try again later"), done.stdout
            assert done.stderr == (f"sockkit echo: 127.0.0.1:{server.port}: the server is busy (past its "
                                   "--max-connections); try again later\n")
