"""The GUI's non-graphical parts: worker jobs against a real server, remembered settings, formatting.

No display is needed here: the jobs are what the window runs, checked through the messages they
queue for the Tk thread.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("tkinter", reason="Python was built without Tk")

from sockkit.gui import settings
from sockkit.gui.browse import join, parent_of, rows_for
from sockkit.gui.getfile_window import format_progress, format_seconds
from sockkit.gui.jobs import (
    CHILD_STOP_SECONDS,
    Connected,
    Failed,
    Finished,
    InProcessDownload,
    Job,
    Listed,
    Listing,
    Progressed,
    Request,
    Stopped,
    SubprocessDownload,
    destination,
    get_command,
)
from sockkit.protocols.getfile import Entry


def drain(job: Job, timeout: float = 60.0) -> list:
    """Every message of a job until its last one (Finished, Failed, Stopped or Listed)."""
    got: list = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got += job.messages(100)
        if got and not isinstance(got[-1], Progressed | Connected):
            return got
        time.sleep(0.02)
    raise AssertionError(f"job did not finish within {timeout} s: {got[-3:]}")


JOBS = {"in-process": InProcessDownload, "subprocess": SubprocessDownload}


@pytest.fixture(params=list(JOBS))
def job_type(request):
    return JOBS[request.param]


def test_download_job_reports_progress_then_finished(server, served_root, tmp_path, job_type):
    """Connected first, then progress messages climb to the full size, then one Finished with the local
    path, verified."""
    job = job_type(Request("big.bin", "127.0.0.1", server.port, str(tmp_path))).start()
    messages = drain(job)
    assert job.join(10)
    assert messages[0] == Connected() and messages.count(Connected()) == 1
    size = (served_root / "big.bin").stat().st_size
    assert messages[-1] == Finished(str(tmp_path / "big.bin"), size, True)
    progress = [m for m in messages if isinstance(m, Progressed)]
    assert progress and progress[-1].done == progress[-1].total == size
    assert [m.done for m in progress] == sorted(m.done for m in progress)
    assert (tmp_path / "big.bin").read_bytes() == (served_root / "big.bin").read_bytes()


def test_cancelled_job_stops_and_keeps_the_part(server, tmp_path, job_type):
    """cancel() mid-transfer: a Stopped message, no final file, a .part left for a resume."""
    job = job_type(Request("big.bin", "127.0.0.1", server.port, str(tmp_path), limit_rate=512 * 1024)).start()
    deadline = time.monotonic() + 30
    seen: list = []
    while not any(isinstance(m, Progressed) and m.done > 0 for m in seen) and time.monotonic() < deadline:
        seen += job.messages(100)
        time.sleep(0.02)
    job.cancel()
    assert isinstance(drain(job)[-1], Stopped)
    assert job.join(10)
    assert not (tmp_path / "big.bin").exists()
    assert list(tmp_path.glob("big.bin*.part"))


def test_a_child_ignoring_sigint_is_killed_and_reported_stopped():
    """Cancel in subprocess mode: SIGINT first; a child that ignores it is killed after CHILD_STOP_SECONDS."""
    script = ("import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
              "print('{\"done\": 0, \"total\": 10, \"speed\": 0, \"eta\": null}', flush=True); time.sleep(120)")
    job = SubprocessDownload(Request("f", "127.0.0.1", 1, "."), command=lambda _r: [sys.executable, "-c", script])
    job.start()
    first = drain_until(job, Progressed)
    job.cancel()
    assert isinstance(drain(job, timeout=CHILD_STOP_SECONDS + 15)[-1], Stopped)
    assert first.total == 10
    assert job.proc is not None and job.proc.returncode == -signal.SIGKILL


def drain_until(job: Job, kind: type, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in job.messages(100):
            if isinstance(message, kind):
                return message
        time.sleep(0.02)
    raise AssertionError(f"no {kind.__name__} within {timeout} s")


def test_failed_job_carries_the_describe_text(server, tmp_path, job_type):
    job = job_type(Request("missing.txt", "127.0.0.1", server.port, str(tmp_path))).start()
    last = drain(job)[-1]
    assert isinstance(last, Failed)
    assert last.message.startswith("missing.txt: no such file on the server")


def test_listing_job(server):
    last = drain(Listing(Request("-", "127.0.0.1", server.port, "."), "sub").start())[-1]
    assert isinstance(last, Listed) and last.directory == "sub"
    assert [(e.kind, e.path) for e in last.entries] == [("f", "inner.txt")]


def test_the_subprocess_command_is_sockkit_get_with_json_progress():
    command = get_command(Request("a b.txt", "::1", 5, "/tmp/x", limit_rate=1024.0, timeout=3.0))
    assert command[1:4] == ["-m", "sockkit", "get"]
    assert command[4:] == ["a b.txt", "--host", "::1", "--port", "5", "-o", "/tmp/x/", "--progress", "json",
                           "--timeout", "3.0", "--limit-rate", "1024"]


def test_destination_is_always_a_directory():
    """A trailing separator: a mistyped folder is an error, never the new file's name."""
    assert destination("") == "." + os.sep
    assert destination("/tmp/d") == "/tmp/d/"
    assert destination("/tmp/d/") == "/tmp/d/"


def test_subprocess_error_text_prefers_the_cli_line():
    job = SubprocessDownload(Request("f", "h", 1, "."))
    job.stderr_lines = ["Traceback? no", "sockkit get: the words"]
    assert job.error_text("json words", 1) == "the words"
    job.stderr_lines = []
    assert job.error_text("json words", 1) == "json words"
    assert job.error_text(None, 2) == "sockkit get exited with status 2"


def test_settings_round_trip_and_bad_files(tmp_path, monkeypatch):
    """Saved under $XDG_CONFIG_HOME/sockkit/gui.json; a damaged or foreign file means defaults."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    path = tmp_path / "sockkit" / "gui.json"
    assert settings.settings_path() == path
    assert settings.load() == settings.Remembered()
    settings.save(settings.Remembered("example.org", 6000, "/srv"))
    assert json.loads(path.read_text()) == {"host": "example.org", "port": 6000, "folder": "/srv"}
    assert settings.load() == settings.Remembered("example.org", 6000, "/srv")
    assert not [p for p in path.parent.iterdir() if p.name != "gui.json"], "no temporary file left"
    for junk in ("{not json", "[1, 2]", '{"host": 5, "port": 70000, "folder": null}'):
        path.write_text(junk)
        assert settings.load() == settings.Remembered()
    path.write_text(" " * (settings.MAX_SETTINGS_BYTES + 1))
    assert settings.load() == settings.Remembered()


def test_settings_save_never_raises(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(blocker))  # a file where a directory should be
    settings.save(settings.Remembered())


def test_browse_rows_folders_first_parent_below_root_names_escaped():
    entries = [Entry("f", 2048, 0, "b.txt"), Entry("d", 0, 0, "zdir"), Entry("f", 5, 0, "evil\x1b[2J")]
    assert rows_for(".", entries) == [("d", "zdir", "zdir/"), ("f", "b.txt", "b.txt    (2.0 KiB)"),
                                      ("f", "evil\x1b[2J", "evil\\x1b[2J    (5 bytes)")]
    assert rows_for("a/b", [])[0] == ("up", "a", "../")
    assert join(".", "x") == "x" and join("a/b", "x") == "a/b/x"
    assert parent_of("a/b") == "a" and parent_of("a") == "."


def test_progress_text():
    assert format_progress(Progressed(512, 1024, 256.0, 2.0)) == \
        "512 bytes of 1.0 KiB (50%)  ·  256 bytes/s  ·  2 s left"
    assert format_progress(Progressed(1024, 1024, 0.0, None)) == "1.0 KiB of 1.0 KiB (100%)"
    assert format_seconds(59.4) == "59 s" and format_seconds(61) == "1 min 01 s"
    assert format_seconds(3 * 3600 + 120) == "3 h 02 min"


def test_request_from_the_form_checks_fields(tmp_path):
    """Port and empty fields are checked before any connection; the folder defaults to the current one."""
    from sockkit.gui.getfile_window import FILE, FOLDER, PORT, SERVER, GetfileWindow, WindowOptions

    window = GetfileWindow.__new__(GetfileWindow)  # request_from reads only the options
    window.options = WindowOptions(limit_rate=100.0)
    good = {SERVER: " h ", PORT: "50001", FILE: "f", FOLDER: str(tmp_path)}
    assert window.request_from(good) == Request("f", "h", 50001, str(tmp_path), 100.0, 30.0)
    assert window.request_from(good, force=True).force
    assert window.request_from({**good, FOLDER: ""}).folder == os.getcwd()
    assert "Port must be a number" in window.request_from({**good, PORT: "http"})
    assert "Port must be a number" in window.request_from({**good, PORT: "70000"})
    assert "File is empty" in window.request_from({**good, FILE: " "})
    assert "Server is empty" in window.request_from({**good, SERVER: ""})


@pytest.mark.parametrize("command", ["gui", "form"])
def test_no_display_is_one_clear_line(command):
    """Without $DISPLAY the commands say so in one line and exit 1 (no traceback)."""
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    done = subprocess.run([sys.executable, "-m", "sockkit", command], env=env, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"sockkit {command}: cannot open a window: no display name and no $DISPLAY environment variable"]
