"""sockkit's clients (``sockkit echo``, ``sockkit spawn``, ``sockkit get --legacy``, ``getfile``) against the
chapter's own servers (Examples 10-1, 10-4, 10-6, 10-7, 10-8, 10-9, 10-10, ported to Python 3): each
session prints what the book prints, byte for byte but for the servers' clock.

Each runs in a private network namespace of its own: the chapter's servers bind fixed ports. The four
5-second servers run at once, each in its own namespace, with the session's three clients together.
"""

from __future__ import annotations

import json
import re
from contextlib import ExitStack

import pytest

from sockkit.testing import sockkit_command
from tests.chapter.peers import (
    CTIME,
    Together,
    finish,
    needs_namespace,
    output,
    private_net,
    run_together,
    stamp_pattern,
    stamps_of,
    stop,
)
from tests.chapter.sessions import DELAY, DELAYED_SESSION, ECHO_SESSIONS, FILES, shared_folder

pytestmark = needs_namespace

#: How the chapter's first server logs a client (10.3.1.3).
CONNECTED = re.compile(r"Server connected by \('127\.0\.0\.1', \d+\)")


def test_sockkit_echo_against_the_echo_server():
    """10.3.1.3 with Example 10-1 as the server: ``sockkit echo`` prints the book's lines exactly, and
    ``sockkit spawn 8 -- sockkit echo`` (testecho) gets eight answers."""
    with private_net() as net:
        server = net.server("echo-server.py", port=50007)
        for args, book in ECHO_SESSIONS:
            assert output(net.sockkit("echo", *args)) == book
        (summary,) = output(net.sockkit("spawn", "8", "--", *sockkit_command("echo")))
        assert summary.startswith("8 of 8 clients succeeded")
        _, log = stop(server)
    assert len(log) == len(ECHO_SESSIONS) + 8 and all(CONNECTED.fullmatch(line) for line in log), log


#: The chapter's servers that sleep 5 s per client and stamp their replies.
STAMPED_SERVERS = ["fork-server.py", "fork-server-signal.py", "thread-server.py", "class-server.py"]


@pytest.fixture(scope="module")
def stamped_sessions() -> dict[str, tuple[Together, list[str]]]:
    """The 10.4.1.1 session with ``sockkit echo`` as the three clients, against each stamped server at
    once: server -> (the three clients, what the server printed)."""
    with ExitStack() as stack:
        nets = {name: stack.enter_context(private_net()) for name in STAMPED_SERVERS}
        servers = {name: net.server(name, port=50007) for name, net in nets.items()}
        runs = run_together({name: lambda net=net: [net.sockkit("echo", *args) for args, _ in DELAYED_SESSION]
                             for name, net in nets.items()})
        return {name: (runs[name], stop(servers[name])[1]) for name in STAMPED_SERVERS}


@pytest.mark.parametrize("server", STAMPED_SERVERS)
def test_sockkit_echo_against_the_stamped_servers(stamped_sessions, server):
    """10.4.1.1 / 10.4.2 / 10.4.3 with the chapter's forking, threading and SocketServer servers:
    ``sockkit echo`` prints each stamped reply whole, in its place (``'Echo=>The at <time>'``, never a
    stamp carried into the next reply), all three clients served at once after the 5 s sleep."""
    session, log = stamped_sessions[server]
    stamps = stamps_of(session, [lines for _, lines in DELAYED_SESSION])
    assert min(stamps) > session.wall + DELAY - 1 - 1e-3, (stamps, session.wall)
    assert session.seconds < 2 * DELAY + 2  # in parallel: about one sleep, not three
    connected = [line for line in log if "127.0.0.1" in line]
    assert len(connected) == 3, log


def test_sockkit_echo_against_the_select_server():
    """10.4.4.2 with Example 10-9: ``sockkit echo`` twice, on the second port, and eight at once; the
    server's own trace shows it got exactly what the chapter's client sends (no newline added)."""
    with private_net() as net:
        server = net.server("select-server.py", port=50008)
        for _ in range(2):
            (line,) = output(net.sockkit("echo"))
            assert stamp_pattern("Client received: 'Echo=>Hello network world at Sun Aug 13 22:52:01 2000'"
                                 ).fullmatch(line), line
        lines = output(net.sockkit("echo", "localhost:50008", "Sir", "Lancelot"))
        assert [stamp_pattern(book).fullmatch(line) is not None for line, book in zip(lines, [
            "Client received: 'Echo=>Sir at Sun Aug 13 22:52:57 2000'",
            "Client received: 'Echo=>Lancelot at Sun Aug 13 22:52:57 2000'"], strict=True)] == [True, True]
        (summary,) = output(net.sockkit("spawn", "8", "--", *sockkit_command("echo")))
        assert summary.startswith("8 of 8 clients succeeded")
        _, trace = stop(server)
    assert trace[0] == "select-server loop starting"
    got = [line.split(" on ")[0] for line in trace if line.startswith("\tgot")]
    assert got.count("\tgot b'Hello network world'") == 10
    assert "\tgot b'Sir'" in got and "\tgot b'Lancelot'" in got
    assert got.count("\tgot b''") == 11  # every client closed its side
    assert len(got) == 10 + 2 + 11  # and sent nothing else


@pytest.fixture
def chapter_getfile_server(tmp_path):
    """Example 10-10 as the server (``getfile.py -mode server``) sharing FILES; (net, the client's folder)."""
    root, here = tmp_path / "server", tmp_path / "client"
    root.mkdir()
    here.mkdir()
    shared_folder(root)
    with private_net() as net:
        server = net.server("getfile.py", "-mode", "server", port=50001, cwd=root)
        yield net, here
        stop(server)


GOT = re.compile(rf"Client got (.+) at {CTIME}")


def test_getfile_command_against_the_chapters_server(chapter_getfile_server):
    """10.5.1 with sockkit's ``getfile`` client and the chapter's server: it falls back to the chapter's
    protocol (saying the copy is not verified), takes the book's Windows names (``testdir\\python15.lib``),
    and accepts the ``--force`` its own error suggests."""
    net, here = chapter_getfile_server
    sessions = [
        (["-file", "testdir\\python15.lib", "-port", "50001"], "testdir\\python15.lib", "python15.lib",
         "testdir/python15.lib"),
        (["-file", "testdir\\textfile"], "testdir\\textfile", "textfile", "testdir/textfile"),
        (["-mode", "client", "-host", "localhost", "-port", "50001", "-file", "index.html"], "index.html",
         "index.html", "index.html"),
    ]
    for args, shown, local, remote in sessions:
        proc = net.getfile(*args, cwd=here)
        out, err = finish(proc)
        assert proc.returncode == 0, err
        match = GOT.fullmatch(out.rstrip("\n"))
        assert match and match.group(1) == shown, out
        assert "the server speaks only the chapter's protocol; the copy is not verified" in err
        assert (here / local).read_bytes() == FILES[remote]
    # A different local file of that name is kept, and the error says how to replace it...
    (here / "textfile").write_bytes(b"mine")
    proc = net.getfile("-file", "textfile", cwd=here)
    _, err = finish(proc)
    assert proc.returncode == 1 and "use --force" in err
    assert (here / "textfile").read_bytes() == b"mine"
    # ... which the getfile command takes, wherever it comes on the line.
    for args in (["-file", "textfile", "--force"], ["--force", "-file", "textfile"]):
        (here / "textfile").write_bytes(b"mine")
        proc = net.getfile(*args, cwd=here)
        out, err = finish(proc)
        assert proc.returncode == 0, err
        assert GOT.fullmatch(out.rstrip("\n")).group(1) == "textfile"
        assert (here / "textfile").read_bytes() == FILES["textfile"]


def test_sockkit_get_against_the_chapters_server(chapter_getfile_server):
    """``sockkit get --legacy`` fetches from the chapter's server, unverified and saying so; without
    ``--legacy`` it writes nothing and says to use it."""
    net, here = chapter_getfile_server
    proc = net.sockkit("get", "testdir/python15.lib", "--port", "50001", "--progress", "json", cwd=here)
    out, err = finish(proc)
    assert proc.returncode == 1 and "--legacy" in err
    assert list(here.iterdir()) == []
    # For programs (the GUI's --subprocess mode): connected, then an error marked as a silent close.
    records = [json.loads(line) for line in out.splitlines()]
    assert records[0] == {"connected": True} and records[-1]["silent"] is True
    lines = output(net.sockkit("get", "--legacy", "testdir/python15.lib", "--port", "50001", cwd=here))
    assert "NOT verified" in lines[-1]
    assert (here / "python15.lib").read_bytes() == FILES["testdir/python15.lib"]
