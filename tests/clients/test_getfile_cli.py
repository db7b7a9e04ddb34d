"""``sockkit get/ls/put`` and the chapter's ``getfile`` command line, run as real subprocesses."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sockkit.clients.localfs import human_size
from sockkit.commands.get import parse_rate
from tests.clients.fake_getfile_server import FakeServer, Faults

SRC = str(Path(__file__).resolve().parents[2] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
ENV.pop("SOCKKIT_TOKEN", None)
BLOB = os.urandom(2 * 1024 * 1024)
HUGE = os.urandom(12 * 1024 * 1024)  # above the client's writer-thread threshold (8 MiB)


def sockkit(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sockkit", *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=60)


def chapter(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sockkit.commands.getfile_chapter", *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def server():
    with FakeServer({"notes.txt": b"hello world\n", "dir/big.bin": BLOB, "dir/huge.bin": HUGE,
                     "dir/n.txt": b"n"}) as fake:
        yield fake


def test_get_prints_one_summary_line(tmp_path, server):
    done = sockkit("get", "notes.txt", "--port", str(server.port), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"got notes\.txt \(12 bytes, verified xxh3-128\) in \d+\.\d\d s\n", done.stdout)
    assert (tmp_path / "notes.txt").read_bytes() == b"hello world\n"


def test_get_failures_are_one_line_and_exit_1(tmp_path, server):
    done = sockkit("get", "missing.txt", "--port", str(server.port), cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr == "sockkit get: missing.txt: no such file on the server\n"
    (tmp_path / "notes.txt").write_text("mine")
    done = sockkit("get", "notes.txt", "--port", str(server.port), cwd=tmp_path)
    assert done.returncode == 1 and "--force" in done.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_connection_refused(tmp_path):
    with FakeServer({}) as fake:
        port = fake.port
    done = sockkit("get", "x", "--port", str(port), cwd=tmp_path)
    assert done.returncode == 1 and "connection refused" in done.stderr and len(done.stderr.splitlines()) == 1


def test_json_progress(tmp_path, server):
    done = sockkit("get", "dir/big.bin", "--port", str(server.port), "--progress", "json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    objects = [json.loads(line) for line in done.stdout.splitlines()]
    assert objects[0] == {"connected": True}  # the connection is up; the server's answer comes next
    assert objects[-1] == {"done": len(BLOB), "total": len(BLOB), "path": "big.bin"}
    assert all({"done", "total", "speed", "eta"} <= set(obj) for obj in objects[1:-1])
    assert "got big.bin" in done.stderr


def test_json_error(tmp_path, server):
    done = sockkit("get", "nope", "--port", str(server.port), "--progress", "json", cwd=tmp_path)
    assert done.returncode == 1
    assert json.loads(done.stdout.splitlines()[-1])["error"].startswith("nope: no such file")


@pytest.mark.parametrize(("name", "data", "sent"), [("big.bin", BLOB, 100_000), ("huge.bin", HUGE, 9_000_000)],
                         ids=["one-thread", "writer-thread"])
def test_ctrl_c_keeps_the_part_and_exits_130(tmp_path, server, name, data, sent):
    server.faults = Faults(stall_after=sent)
    proc = subprocess.Popen([sys.executable, "-m", "sockkit", "get", f"dir/{name}", "--port", str(server.port)],
                            cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            parts = [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
            if parts and parts[0].stat().st_size == sent:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert "interrupted" in err and "resume" in err
    assert not (tmp_path / name).exists()
    assert [p.stat().st_size for p in tmp_path.iterdir()] == [sent]  # the part: every byte that came
    server.faults = Faults()
    done = sockkit("get", f"dir/{name}", "--port", str(server.port), cwd=tmp_path)
    assert done.returncode == 0 and "resumed at" in done.stdout
    assert (tmp_path / name).read_bytes() == data


def test_recursive_and_ls_and_put(tmp_path, server):
    done = sockkit("get", "-r", "dir", "--port", str(server.port), "-o", "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "dir" / "big.bin").read_bytes() == BLOB
    count = sum(path.is_file() for path in (tmp_path / "out" / "dir").rglob("*"))
    again = sockkit("get", "-r", "dir", "--port", str(server.port), "-o", "out", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert f": nothing fetched, {count} already up to date in " in again.stdout
    (tmp_path / "out" / "dir" / "big.bin").unlink()
    again = sockkit("get", "-r", "dir", "--port", str(server.port), "-o", "out", cwd=tmp_path)
    assert f": 1 file ({human_size(len(BLOB))}, verified xxh3-128), {count - 1} already up to date" in again.stdout
    listing = sockkit("ls", "--port", str(server.port), cwd=tmp_path)
    assert listing.returncode == 0
    lines = listing.stdout.splitlines()
    assert lines[0].startswith("dir ") and lines[0].endswith(" dir/")
    assert lines[1].split()[0:2] == ["file", "12"] and lines[1].endswith(" notes.txt")
    (tmp_path / "up.txt").write_text("upload me")
    done = sockkit("put", "up.txt", "inbox", "--port", str(server.port), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert server.uploads == {"inbox/up.txt": b"upload me"}


def test_token_from_the_environment(tmp_path):
    with FakeServer({"f": b"x"}, token="t0k") as fake:
        done = subprocess.run([sys.executable, "-m", "sockkit", "get", "f", "--port", str(fake.port)], cwd=tmp_path,
                              env={**ENV, "SOCKKIT_TOKEN": "t0k"}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(("text", "rate"), [("500K", 512000), ("10M", 10 * 2**20), ("1.5g", 1.5 * 2**30),
                                            ("100", 100), ("2MB/s", 2 * 2**20)])
def test_parse_rate(text, rate):
    assert parse_rate(text) == rate


def test_chapter_client_command_line(tmp_path, server):
    """``getfile -file dir/big.bin -port P``: the base name in the current directory, the chapter's line."""
    done = chapter("-file", "dir/big.bin", "-port", str(server.port), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"Client got dir/big\.bin at \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\n", done.stdout)
    assert (tmp_path / "big.bin").read_bytes() == BLOB
    # The chapter fetches the same file again and again: fine while it is unchanged.
    done = chapter("-mode", "client", "-host", "localhost", "-port", str(server.port), "-file", "dir/big.bin",
                   cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.startswith("Client got dir/big.bin at ")


def test_chapter_client_against_the_chapters_server(tmp_path):
    with FakeServer({"textfile": b"chapter bytes"}, legacy=True) as fake:
        done = chapter("-file", "textfile", "-port", str(fake.port), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Client got textfile at ") and "not verified" in done.stderr
    assert (tmp_path / "textfile").read_bytes() == b"chapter bytes"


@pytest.mark.parametrize("args", [[], ["-mode"], ["-mode", "client"], ["-port", "1234"]])
def test_chapter_usage(tmp_path, args):
    done = chapter(*args, cwd=tmp_path)
    assert "Usage..." in done.stdout and "client=> getfile [-mode client] -file fff" in done.stdout


def test_legacy_get(tmp_path):
    with FakeServer({"a/f": b"raw"}, legacy=True) as fake:
        done = sockkit("get", "--legacy", "a/f", "--port", str(fake.port), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "NOT verified" in done.stdout and (tmp_path / "f").read_bytes() == b"raw"
