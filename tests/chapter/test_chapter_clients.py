"""The chapter's own clients (Examples 10-2, 10-3, 10-10, ported to Python 3) against ``sockkit serve``
under every model: each session prints, line for line, what the book prints (``b''`` aside).

Each test runs in a private network namespace of its own, because the chapter's clients dial fixed
ports (50007, 50008, 50001). The chapter's 5-second servers (10.4.1.1) are served by every model at
once, each in its own namespace, with the session's three clients started together: the whole
matrix costs about one sequential model's 15 s, not ten times that.
"""

from __future__ import annotations

import re
import sys
from contextlib import ExitStack

import pytest

from sockkit.testing import MODELS as ALL_MODELS
from tests.chapter.peers import (
    CTIME,
    Together,
    finish,
    needs_namespace,
    output,
    private_net,
    py3,
    run_together,
    stamp_pattern,
    stamps_of,
    stop,
)
from tests.chapter.sessions import DELAY, DELAYED_SESSION, ECHO_SESSIONS, FILES, SELECT_SESSION, shared_folder

pytestmark = needs_namespace

#: sockkit's log line for each client: the chapter's, with the time its later servers add.
CONNECTED = re.compile(rf"Server connected by \('127\.0\.0\.1', \d+\) at {CTIME}")


@pytest.mark.parametrize("model", ALL_MODELS)
def test_echo_client_and_testecho(model):
    """10.3.1.3: echo-client.py against ``sockkit serve echo`` prints the book's lines; then testecho.py
    (10.3.1.6) starts eight of them at once, and all eight get their echo."""
    with private_net() as net:
        server = net.serve("echo", "--model", model, "--port", "50007")
        for args, book in ECHO_SESSIONS:
            assert output(net.chapter("echo-client.py", *args)) == [py3(line) for line in book]
        # testecho.py returns at once; its eight clients inherit its stdout, which ends when the last does.
        eight = output(net.chapter("testecho.py"))
        assert eight == [py3("Client received: 'Echo=>Hello network world'")] * 8
        code, log = stop(server)
    assert code == 0
    connected = [line for line in log if line.startswith("Server connected by")]
    assert len(connected) == len(ECHO_SESSIONS) + 8
    assert all(CONNECTED.fullmatch(line) for line in connected), connected


@pytest.fixture(scope="module")
def delayed_sessions() -> dict[str, tuple[Together, int | None]]:
    """The 10.4.1.1 session against ``serve echo --stamp --delay 5`` under every model at once, each
    model in its own namespace: model -> (the three clients, the server's exit status)."""
    with ExitStack() as stack:
        nets = {model: stack.enter_context(private_net()) for model in ALL_MODELS}
        servers = {model: net.serve("echo", "--model", model, "--stamp", "--delay", str(DELAY), "--port", "50007")
                   for model, net in nets.items()}
        runs = run_together({model: lambda net=net: [net.chapter("echo-client.py", *args)
                                                     for args, _ in DELAYED_SESSION] for model, net in nets.items()})
        return {model: (runs[model], stop(servers[model])[0]) for model in ALL_MODELS}


@pytest.mark.parametrize("model", ALL_MODELS)
def test_the_forking_servers_session(delayed_sessions, model):
    """10.4.1.1 with sockkit's server: three clients at once, each answered 5 s after it connected (one
    sleep per connection, as the chapter's servers), every reply stamped when sent, as the book prints
    them. Every parallel model serves the three at once; sequential, one after another."""
    session, server_exit = delayed_sessions[model]
    stamps = stamps_of(session, [[py3(line) for line in lines] for _, lines in DELAYED_SESSION])
    assert min(stamps) > session.wall + DELAY - 1 - 1e-3, (stamps, session.wall)
    if model == "sequential":
        assert session.seconds >= 3 * DELAY - 0.5  # the third client waits for the two before it
    else:
        assert session.seconds < 2 * DELAY + 2  # generous: a loaded 2-core machine, ten servers at once
    assert server_exit == 0


@pytest.mark.parametrize("model", ALL_MODELS)
def test_the_select_servers_session(model):
    """10.4.4.2 with ``serve echo --stamp --port 50007 --port 50008``: echo-client.py twice,
    echo-client-50008.py on the second port, then testecho.py's eight, as the book prints them."""
    with private_net() as net:
        server = net.serve("echo", "--model", model, "--stamp", "--port", "50007", "--port", "50008")
        for program, args, book in SELECT_SESSION:
            lines = output(net.chapter(program, *args))
            assert len(lines) == len(book), lines
            assert all(stamp_pattern(py3(want)).fullmatch(got) for got, want in zip(lines, book, strict=True)), lines
        eight = output(net.chapter("testecho.py"))
        pattern = stamp_pattern(py3("Client received: 'Echo=>Hello network world at Sun Aug 13 22:52:03 2000'"))
        assert len(eight) == 8 and all(pattern.fullmatch(line) for line in eight), eight
        assert stop(server)[0] == 0


#: The client's command lines and the line the book prints for each (``\\`` kept: on Linux the
#: chapter's client names its copy with the whole request, backslash and all, as os.path.split does).
GETFILE_SESSION = [
    (["-file", "testdir\\python15.lib", "-port", "50001"],
     "Client got testdir\\python15.lib at Thu Mar 16 11:54:21 2000", "testdir\\python15.lib", "testdir/python15.lib"),
    (["-file", "testdir\\textfile"], "Client got testdir\\textfile at Thu Mar 16 11:54:37 2000",
     "testdir\\textfile", "testdir/textfile"),
    (["-mode", "client", "-host", "localhost", "-port", "50001", "-file", "python15.lib"],
     "Client got python15.lib at Thu Mar 16 14:07:37 2000", "python15.lib", "python15.lib"),
    (["-host", "localhost", "-file", "textfile"], "Client got textfile at Thu Mar 16 14:02:29 2000",
     "textfile", "textfile"),
    (["-host", "localhost", "-file", "index.html"], "Client got index.html at Thu Mar 16 14:06:22 2000",
     "index.html", "index.html"),
    (["-file", "testdir/textfile"], "Client got testdir/textfile at Thu Mar 16 11:54:37 2000",
     "textfile", "testdir/textfile"),
]


def run_getfile_session(net, here) -> None:
    """The chapter's client, each command line in turn; each copy compared with the original (its ``fc /B``)."""
    for args, book, local, remote in GETFILE_SESSION:
        lines = output(net.chapter("getfile.py", *args, cwd=here))
        assert len(lines) == 1 and stamp_pattern(book).fullmatch(lines[0]), (lines, book)
        assert (here / local).read_bytes() == FILES[remote], local
        (here / local).unlink()  # the next command line may fetch the same name from another path


@pytest.mark.parametrize("model", ALL_MODELS)
def test_getfile_client_against_sockkit(model, tmp_path):
    """10.5.1 with ``sockkit serve getfile``: getfile.py's client (the chapter's protocol: a path line,
    then bytes to end of stream) gets each file whole, and prints the book's line; the chapter's
    Windows names (``testdir\\python15.lib``) are served too."""
    root, here = tmp_path / "server", tmp_path / "client"
    root.mkdir()
    here.mkdir()
    shared_folder(root)
    with private_net() as net:
        server = net.serve("getfile", "--model", model, "--port", "50001", "--root", str(root))
        run_getfile_session(net, here)
        assert stop(server)[0] == 0


def test_getfile_client_against_sockkits_getfile_command(tmp_path):
    """``getfile -mode server`` (sockkit's console script, the book's server command line) serves the
    chapter's client the same way."""
    root, here = tmp_path / "server", tmp_path / "client"
    root.mkdir()
    here.mkdir()
    shared_folder(root)
    with private_net() as net:
        server = net.popen([sys.executable, "-m", "sockkit.commands.getfile_chapter", "-mode", "server"], cwd=root,
                           server=True)
        while "listening on" not in (line := server.stdout.readline()):
            assert line, f"getfile -mode server did not start: {finish(server)[1][-500:]}"
        run_getfile_session(net, here)
        assert stop(server)[0] == 0
