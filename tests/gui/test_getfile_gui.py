"""`sockkit gui` against a real getfile server, driven like a person: keystrokes and clicks on Xvfb.

Every test runs in both modes: the download as a function call in a worker thread (the default)
and as a `sockkit get` child process (`--subprocess`). What the window did is read from its
`--status-file` event log; the files are checked byte for byte.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sockkit.testing import sockkit_command

MODES = {"in-process": [], "subprocess": ["--subprocess"]}
WINDOW = "^sockkit getfile"  # the main window's title ("sockkit getfile" or "sockkit getfile (subprocess)")


@pytest.fixture(params=list(MODES))
def mode(request) -> list[str]:
    return MODES[request.param]


def open_window(launch, *args: str):
    gui = launch("gui", *args)
    gui.focus(gui.find(WINDOW + r"( \(subprocess\))?$"))
    ready = gui.wait_for("ready")
    return gui, ready


def fill_form(gui, host: str, port: int, remote: str, folder: Path) -> None:
    """Type every field (Tab selects the next field's text, so typing replaces it) and press Return."""
    gui.type(host)
    gui.key("Tab")
    gui.type(str(port))
    gui.key("Tab")
    gui.type(remote)
    gui.key("Tab")
    gui.type(str(folder))
    gui.key("Return")


def dismiss_dialog(gui, title: str) -> None:
    """The dialog is a real window with that title; Return presses its OK button."""
    gui.wait_for("dialog", lambda e: e["title"] == title)
    dialog = gui.find(f"^{title}$")
    gui.focus(dialog)
    gui.key("Return")
    gui.wait_for("dialog-closed", lambda e: e["title"] == title)


def quit_window(gui) -> None:
    gui.focus()
    gui.key("ctrl+q")
    assert gui.wait() == 0
    assert gui.events("closed")


def cli_get(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(sockkit_command("get", *args), capture_output=True, text=True, timeout=120)


def test_typed_download_arrives_intact_with_progress_to_100(launch, server, served_root, tmp_path, mode):
    """Server, Port, File and Local Dir typed, Return: the file arrives byte-identical, the bar reaches
    100%, the success dialog says path, size and "verified", and server/port/folder are remembered."""
    dest = tmp_path / "downloads"
    dest.mkdir()
    gui, _ready = open_window(launch, *mode)
    fill_form(gui, "127.0.0.1", server.port, "big.bin", dest)
    done = gui.wait_for("done", timeout=60)
    assert (dest / "big.bin").read_bytes() == (served_root / "big.bin").read_bytes()
    assert done == {**done, "path": str(dest / "big.bin"), "size": (served_root / "big.bin").stat().st_size,
                    "verified": True}
    assert max(e["percent"] for e in gui.events("progress")) == 100.0
    dialog = gui.wait_for("dialog", lambda e: e["title"] == "sockkit getfile: done")
    assert str(dest / "big.bin") in dialog["message"] and "verified" in dialog["message"]
    dismiss_dialog(gui, "sockkit getfile: done")
    quit_window(gui)
    remembered = json.loads((tmp_path / "config" / "sockkit" / "gui.json").read_text())
    assert remembered == {"host": "127.0.0.1", "port": server.port, "folder": str(dest)}

    again, ready = open_window(launch)
    assert ready["values"]["Server"] == "127.0.0.1"
    assert ready["values"]["Port"] == str(server.port)
    assert ready["values"]["Local Dir"] == str(dest)
    quit_window(again)


def test_window_answers_during_a_throttled_download(launch, server, served_root, tmp_path, mode):
    """At 1 MiB/s the 4 MiB download takes seconds; meanwhile the heartbeat keeps ticking, a resize
    by xdotool is laid out, and Submit stays disabled (a second Return starts nothing)."""
    gui, _ready = open_window(launch, "--limit-rate", "1M", *mode)
    fill_form(gui, "127.0.0.1", server.port, "big.bin", tmp_path)
    gui.wait_for("progress", lambda e: 0 < e["percent"] < 60, timeout=30)
    ticks_before = len(gui.events("tick"))
    xdotool_resize(gui, 700, 320)
    resized = gui.wait_for("configure", lambda e: (e["width"], e["height"]) == (700, 320), timeout=20)
    gui.key("Return")  # Submit is disabled while a download runs
    done = gui.wait_for("done", timeout=60)
    assert resized["t"] < done["t"], "the resize was handled while the download ran"
    ticks = [e for e in gui.events("tick") if e["t"] < done["t"]]
    assert len(ticks) > ticks_before >= 1
    assert len(ticks) >= 10, "a multi-second transfer gives the 100 ms heartbeat many chances to tick"
    gaps = [b["t"] - a["t"] for a, b in itertools.pairwise(ticks)]
    assert max(gaps) < 2.0, f"the Tk loop stalled for {max(gaps):.1f} s during the download"
    assert len(gui.events("start")) == 1
    assert (tmp_path / "big.bin").read_bytes() == (served_root / "big.bin").read_bytes()
    dismiss_dialog(gui, "sockkit getfile: done")
    quit_window(gui)


def xdotool_resize(gui, width: int, height: int) -> None:
    from sockkit.gui.harness import xdotool

    xdotool(gui.display, "windowsize", "--sync", gui.window, str(width), str(height))


def test_cancel_button_leaves_a_part_that_the_cli_resumes(launch, server, served_root, tmp_path, mode):
    """A click on Cancel mid-download: no file under the final name, a .part kept, the status says so;
    `sockkit get` then resumes from the part and ends with an identical file."""
    dest = tmp_path / "downloads"
    dest.mkdir()
    gui, ready = open_window(launch, "--limit-rate", "500K", *mode)
    fill_form(gui, "127.0.0.1", server.port, "big.bin", dest)
    gui.wait_for("progress", lambda e: e["percent"] >= 10, timeout=30)
    gui.click(*ready["buttons"]["cancel"])
    gui.wait_for("cancelled", timeout=30)
    assert not (dest / "big.bin").exists(), "a cancelled download must not appear under the final name"
    parts = list(dest.glob("big.bin*.part"))
    assert len(parts) == 1 and 0 < parts[0].stat().st_size < (served_root / "big.bin").stat().st_size
    assert not gui.events("error") and not gui.events("done")
    quit_window(gui)

    resumed = cli_get("big.bin", "--port", str(server.port), "-o", str(dest))
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed at" in resumed.stdout
    assert (dest / "big.bin").read_bytes() == (served_root / "big.bin").read_bytes()
    assert not list(dest.glob("*.part"))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens there once the socket is closed


ERROR_CASES = {  # case: (remote path, local folder under tmp_path or None for tmp_path itself)
    "not-found": ("missing.txt", None),
    "outside-root": ("../secret.txt", None),
    "refused": ("small.txt", None),
    "no-such-folder": ("small.txt", "nowhere"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_errors_show_the_cli_words_in_a_dialog(launch, server, tmp_path, mode, case):
    """Not found, outside the served root, connection refused, a missing local folder: the error
    dialog says exactly what `sockkit get` prints after "sockkit get: "."""
    port = closed_port() if case == "refused" else server.port
    remote, sub = ERROR_CASES[case]
    folder = tmp_path / sub if sub else tmp_path
    gui, _ready = open_window(launch, *mode)
    fill_form(gui, "127.0.0.1", port, remote, folder)
    error = gui.wait_for("error", timeout=60)
    cli = cli_get(remote, "--port", str(port), "-o", str(folder) + "/")
    assert cli.returncode != 0
    assert cli.stderr.splitlines()[-1] == f"sockkit get: {error['message']}"
    dialog = gui.wait_for("dialog", lambda e: e["title"] == "sockkit getfile: error")
    assert dialog["message"] == error["message"]
    dismiss_dialog(gui, "sockkit getfile: error")
    quit_window(gui)
    assert not (tmp_path / Path(remote).name).exists()


@pytest.fixture
def tiny_disk(tmp_path) -> Iterator[Path]:
    """A 1 MiB tmpfs: a real full disk (needs root and mount; skipped with the reason otherwise)."""
    where = tmp_path / "tiny"
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)], capture_output=True,
                             text=True, timeout=30)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False, timeout=30)


def test_disk_full_shows_the_cli_words(launch, server, tiny_disk, mode):
    """4 MiB into a 1 MiB file system: the dialog says what `sockkit get` says, and no file is left behind."""
    gui, _ready = open_window(launch, *mode)
    fill_form(gui, "127.0.0.1", server.port, "big.bin", tiny_disk)
    error = gui.wait_for("error", timeout=60)
    cli = cli_get("big.bin", "--port", str(server.port), "-o", str(tiny_disk) + "/")
    assert cli.returncode != 0
    assert cli.stderr.splitlines()[-1] == f"sockkit get: {error['message']}"
    assert "space" in error["message"] or "disk full" in error["message"]
    dismiss_dialog(gui, "sockkit getfile: error")
    quit_window(gui)
    assert not (tiny_disk / "big.bin").exists()


def test_submit_again_resumes_in_the_window(launch, server, served_root, tmp_path, mode):
    """Cancel (Escape), then Return: the window finishes from the kept .part to an identical file."""
    gui, _ready = open_window(launch, "--limit-rate", "1M", *mode)
    fill_form(gui, "127.0.0.1", server.port, "big.bin", tmp_path)
    gui.wait_for("progress", lambda e: e["percent"] >= 10, timeout=30)
    gui.key("Escape")
    gui.wait_for("cancelled", timeout=30)
    part = next(tmp_path.glob("big.bin*.part")).stat().st_size
    gui.key("Return")
    done = gui.wait_for("done", timeout=60)
    if not mode:  # in-process: the client library says where it resumed (the CLI's JSON does not)
        assert done["resumed_from"] >= part > 0
    assert (tmp_path / "big.bin").read_bytes() == (served_root / "big.bin").read_bytes()
    dismiss_dialog(gui, "sockkit getfile: done")
    quit_window(gui)


def test_replace_checkbox_overwrites_a_different_local_file(launch, server, served_root, tmp_path, mode):
    """A different small.txt exists: the error says so (the CLI's words); ticking "Replace" then replaces it."""
    (tmp_path / "small.txt").write_text("my own notes\n")
    gui, ready = open_window(launch, *mode)
    fill_form(gui, "127.0.0.1", server.port, "small.txt", tmp_path)
    error = gui.wait_for("error", timeout=60)
    assert "already exists" in error["message"]
    assert (tmp_path / "small.txt").read_text() == "my own notes\n"
    dismiss_dialog(gui, "sockkit getfile: error")
    gui.click(*ready["buttons"]["force"])
    gui.focus()
    gui.key("Return")
    gui.wait_for("done", timeout=60)
    assert (tmp_path / "small.txt").read_bytes() == (served_root / "small.txt").read_bytes()
    dismiss_dialog(gui, "sockkit getfile: done")
    quit_window(gui)


def test_browse_lists_the_server_and_picks_a_file(launch, server, served_root, tmp_path, mode):
    """Ctrl-B opens Browse: folders first, into sub/, pick inner.txt with the keyboard; Return downloads it."""
    gui, _ready = open_window(launch, "--port", str(server.port), "--dir", str(tmp_path), *mode)
    gui.key("ctrl+b")
    top = gui.wait_for("listing", lambda e: e["directory"] == ".")
    assert top["items"][0] == "sub/"
    assert [item.split()[0] for item in top["items"][1:]] == ["big.bin", "small.txt"]
    browse = gui.find("^sockkit getfile: browse ")
    gui.focus(browse)
    gui.key("Return")  # the first row, sub/, is selected
    inner = gui.wait_for("listing", lambda e: e["directory"] == "sub")
    assert inner["items"][0] == "../"
    gui.key("Down", "Return")
    assert gui.wait_for("picked")["path"] == "sub/inner.txt"
    gui.focus()
    gui.key("Return")
    gui.wait_for("done", timeout=60)
    assert (tmp_path / "inner.txt").read_bytes() == (served_root / "sub" / "inner.txt").read_bytes()
    dismiss_dialog(gui, "sockkit getfile: done")
    quit_window(gui)


def test_browse_error_uses_the_cli_words(launch, tmp_path, mode):
    """Browse against a port where nothing listens: the dialog says what `sockkit ls` says."""
    port = closed_port()
    gui, _ready = open_window(launch, "--port", str(port), *mode)
    gui.key("ctrl+b")
    error = gui.wait_for("error", lambda e: e["during"] == "browse", timeout=60)
    cli = subprocess.run(sockkit_command("ls", "--port", str(port)), capture_output=True, text=True, timeout=60)
    assert cli.stderr.splitlines()[-1] == f"sockkit ls: {error['message']}"
    dismiss_dialog(gui, "sockkit getfile: error")
    quit_window(gui)


@pytest.fixture
def token_server(served_root: Path) -> Iterator:
    from sockkit.testing import running

    env = {k: v for k, v in os.environ.items() if k != "SOCKKIT_TOKEN"}
    with running("getfile", "--root", str(served_root), "--port", "0", "--token", "s3cret", env=env) as srv:
        yield srv


def test_token_from_the_option_or_the_environment(launch, token_server, served_root, tmp_path, mode, monkeypatch):
    """A server wanting a token: without one the dialog says so in the CLI's words; --token gets the file."""
    monkeypatch.delenv("SOCKKIT_TOKEN", raising=False)
    gui, _ready = open_window(launch, *mode)
    fill_form(gui, "127.0.0.1", token_server.port, "small.txt", tmp_path)
    error = gui.wait_for("error", timeout=60)
    cli = cli_get("small.txt", "--port", str(token_server.port), "-o", str(tmp_path) + "/")
    assert cli.stderr.splitlines()[-1] == f"sockkit get: {error['message']}"
    dismiss_dialog(gui, "sockkit getfile: error")
    quit_window(gui)

    for how in ("option", "environment"):
        (tmp_path / "small.txt").unlink(missing_ok=True)
        if how == "environment":
            monkeypatch.setenv("SOCKKIT_TOKEN", "s3cret")
        gui, _ready = open_window(launch, *(["--token", "s3cret"] if how == "option" else []), *mode)
        fill_form(gui, "127.0.0.1", token_server.port, "small.txt", tmp_path)
        gui.wait_for("done", timeout=60)
        assert (tmp_path / "small.txt").read_bytes() == (served_root / "small.txt").read_bytes()
        dismiss_dialog(gui, "sockkit getfile: done")
        quit_window(gui)


def test_browse_against_a_silent_server_never_freezes_the_window(launch, tmp_path, mode):
    """A server that accepts but never answers: while Browse waits (--timeout 3) the window still
    lays out a resize; then the timeout is reported in `sockkit ls`'s words."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # connections complete in the backlog; nobody ever reads or answers them
        port = silent.getsockname()[1]
        gui, _ready = open_window(launch, "--port", str(port), "--timeout", "3", *mode)
        gui.key("ctrl+b")
        gui.wait_for("browse")
        xdotool_resize(gui, 620, 300)
        resized = gui.wait_for("configure", lambda e: (e["width"], e["height"]) == (620, 300), timeout=20)
        error = gui.wait_for("error", lambda e: e["during"] == "browse", timeout=60)
        assert resized["t"] < error["t"], "the window answered while the listing waited"
        cli = subprocess.run(sockkit_command("ls", "--port", str(port), "--timeout", "3"), capture_output=True,
                             text=True, timeout=60)
        assert cli.stderr.splitlines()[-1] == f"sockkit ls: {error['message']}"
        dismiss_dialog(gui, "sockkit getfile: error")
        quit_window(gui)


def test_falls_back_to_the_chapters_server(launch, served_root, tmp_path, mode):
    """Against the chapter's own getfile server (Example 10-10, Python 3), which closes without a word on
    sockkit's request line: the window speaks the chapter's protocol instead, as the ``getfile`` command
    does, and says the copy is not verified (status line, dialog); the file arrives whole."""
    from tests.chapter.peers import chapter_getfile_server

    with chapter_getfile_server(served_root) as port:
        gui, _ready = open_window(launch, *mode)
        fill_form(gui, "127.0.0.1", port, "sub/inner.txt", tmp_path)
        done = gui.wait_for("done", timeout=60)
    assert done["verified"] is False
    assert done["warning"] == "the server speaks only the chapter's protocol; the copy is not verified"
    assert (tmp_path / "inner.txt").read_bytes() == (served_root / "sub" / "inner.txt").read_bytes()
    dialog = gui.wait_for("dialog", lambda e: e["title"] == "sockkit getfile: done")
    assert done["warning"] in dialog["message"] and "NOT verified" in dialog["message"]
    dismiss_dialog(gui, "sockkit getfile: done")
    quit_window(gui)


def test_says_connected_while_it_waits_for_the_answer(launch, tmp_path, mode):
    """A server that accepts and never answers: once connected the window says so (not "Connecting to..."
    for the whole wait), then reports the timeout."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # connections complete in the backlog; nobody ever answers them
        gui, _ready = open_window(launch, "--timeout", "3", *mode)
        fill_form(gui, "127.0.0.1", silent.getsockname()[1], "small.txt", tmp_path)
        connected = gui.wait_for("connected", timeout=30)
        error = gui.wait_for("error", timeout=60)
    assert connected["t"] < error["t"]
    dismiss_dialog(gui, "sockkit getfile: error")
    quit_window(gui)


def test_double_click_on_cancel_does_not_quit(launch, server, tmp_path, mode):
    """Cancel double-clicked mid-download: the first click cancels; the second lands on the button that
    now reads Quit, and must not close the window whose download it just cancelled."""
    from sockkit.gui.harness import xdotool

    gui, ready = open_window(launch, "--limit-rate", "500K", *mode)
    fill_form(gui, "127.0.0.1", server.port, "big.bin", tmp_path)
    gui.wait_for("progress", lambda e: e["percent"] >= 5, timeout=30)
    gui.click(*ready["buttons"]["cancel"])
    gui.wait_for("cancelled", timeout=30)
    xdotool(gui.display, "click", "1")  # the second click, the pointer where the first left it
    # An X event sent after the click: once the window has laid out this resize, it has seen the click.
    xdotool_resize(gui, 640, 330)
    gui.wait_for("configure", lambda e: (e["width"], e["height"]) == (640, 330), timeout=20)
    assert gui.proc.poll() is None and not gui.events("closed"), "the second click quit the window"
    assert list(tmp_path.glob("big.bin*.part")), "the cancelled download keeps its part"
    quit_window(gui)


def test_the_chapters_getfilegui_against_sockkit(launch, server, served_root, tmp_path):
    """The chapter's own GUI client (Example 10-14 with its form, 10-13, and getfile, 10-10, in Python 3)
    against ``sockkit serve getfile``: it prints its form as the book's session does, then the book's
    ``Client got`` line, and the file (named as the book names it: ``sub\\inner.txt``) arrives whole."""
    import sys

    from tests.chapter.peers import CTIME, PROGRAMS

    gui = launch(status=False, program=[sys.executable, str(PROGRAMS / "getfilegui.py")])
    gui.focus(gui.find("^getfilegui$"))
    gui.key("Tab")  # the chapter's form gives no entry the focus: Tab reaches the first
    fill_form(gui, "127.0.0.1", server.port, "sub\\inner.txt", tmp_path)
    lines = gui.wait_for_stdout(5, timeout=60)
    assert sorted(lines[:4]) == sorted(["Server Name \t=>\t 127.0.0.1", f"Port Number \t=>\t {server.port}",
                                        "File Name \t=>\t sub\\inner.txt", f"Local Dir? \t=>\t {tmp_path}"])
    assert re.fullmatch(rf"Client got sub\\inner\.txt at {CTIME}", lines[4]), lines[4]
    assert (tmp_path / "sub\\inner.txt").read_bytes() == (served_root / "sub" / "inner.txt").read_bytes()
