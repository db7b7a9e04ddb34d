"""The client against the real ``sockkit serve getfile`` (subprocess, loopback): bytes, kills, resume, busy."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sockkit.clients import getfile, getfile_tree, getfile_upload
from sockkit.errors import RemoteError, TransferInterrupted
from sockkit.testing import MODELS as ALL_MODELS
from sockkit.testing import running, start_server

SRC = str(Path(__file__).resolve().parents[2] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
ENV.pop("SOCKKIT_TOKEN", None)
MODELS = ["select", "thread", "fork", "asyncio"]
SIZES = [0, 1, 1023, 1024, 1025]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "root"
    (root / "sub dir" / "ünï").mkdir(parents=True)
    for size in SIZES:
        (root / f"f{size}.bin").write_bytes(os.urandom(size))
    (root / "sub dir" / "ünï" / "naïve file.txt").write_bytes(b"caf\xc3\xa9\n")
    big = root / "big.bin"
    with open(big, "wb") as out:
        for _ in range(64):
            out.write(os.urandom(1 << 20))
    return root


def wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


@pytest.mark.parametrize("model", ALL_MODELS)
def test_every_size_byte_for_byte(tmp_path, served, model):
    """0 B, 1 B, 1 KiB ± 1, 64 MiB and a non-ASCII name with spaces, under every model."""
    dest = tmp_path / "dest"
    dest.mkdir()
    with running("getfile", "--model", model, "--port", "0", "--root", str(served), "--quiet") as server:
        for name in [f"f{size}.bin" for size in SIZES] + ["big.bin", "sub dir/ünï/naïve file.txt"]:
            result = getfile.download(name, port=server.port, dest=dest)
            assert (dest / result.path.name).read_bytes() == (served / name).read_bytes()


def test_tree_ls_and_upload(tmp_path, served):
    dest = tmp_path / "dest"
    with running("getfile", "--port", "0", "--root", str(served), "--allow-upload", "--quiet") as server:
        tree = getfile_tree.download_tree(".", port=server.port, dest=dest)
        assert not tree.failed and len(tree.files) == len(SIZES) + 2
        for path in served.rglob("*"):
            if path.is_file():
                assert (dest / path.relative_to(served)).read_bytes() == path.read_bytes()
        names = {(e.kind, e.path) for e in getfile.list_remote("sub dir", port=server.port)}
        assert names == {("d", "ünï")}
        local = tmp_path / "up load.txt"
        local.write_bytes(b"uploaded")
        getfile_upload.upload(local, "sub dir", port=server.port)
        assert (served / "sub dir" / "up load.txt").read_bytes() == b"uploaded"
        with pytest.raises(RemoteError, match="already exists"):
            getfile_upload.upload(local, "sub dir", port=server.port)


def test_twenty_concurrent_clients(tmp_path, served):
    errors: list[BaseException] = []

    def fetch(index: int) -> None:
        dest = tmp_path / f"c{index}"
        dest.mkdir()
        try:
            getfile.download("big.bin", port=server.port, dest=dest)
        except BaseException as exc:
            errors.append(exc)

    with running("getfile", "--port", "0", "--root", str(served), "--quiet") as server:
        threads = [threading.Thread(target=fetch, args=(i,)) for i in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    assert not errors
    expected = sha(served / "big.bin")
    assert all(sha(tmp_path / f"c{i}" / "big.bin") == expected for i in range(20))


def test_server_killed_mid_transfer_then_resume(tmp_path, served):
    """SIGKILL the server halfway: TransferInterrupted, part kept; a restarted server completes it exactly."""
    dest = tmp_path / "dest"
    dest.mkdir()
    server = start_server("getfile", "--port", "0", "--root", str(served), "--quiet")
    halfway = threading.Event()

    def watch(progress: getfile.Progress) -> None:
        if progress.done >= 8 << 20:
            halfway.set()

    caught: list[BaseException] = []

    def fetch() -> None:
        try:
            getfile.download("big.bin", port=server.port, dest=dest, progress=watch, limit_rate=40 << 20, timeout=10)
        except BaseException as exc:
            caught.append(exc)

    thread = threading.Thread(target=fetch)
    thread.start()
    try:
        assert halfway.wait(60)
    finally:
        server.kill()
    thread.join(60)
    assert len(caught) == 1 and isinstance(caught[0], TransferInterrupted), caught
    assert not (dest / "big.bin").exists()
    with running("getfile", "--port", "0", "--root", str(served), "--quiet") as again:
        result = getfile.download("big.bin", port=again.port, dest=dest)
    assert result.resumed_from >= 8 << 20
    assert sha(dest / "big.bin") == sha(served / "big.bin")


def client_killed_midway(tmp_path: Path, dest: Path, port: int) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "sockkit", "get", "big.bin", "--port", str(port), "-o", str(dest),
                             "--limit-rate", "20M"], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: any(p.name.endswith(".part") and p.stat().st_size > 4 << 20 for p in dest.iterdir()))
    finally:
        proc.kill()
        proc.wait()


def test_client_killed_mid_transfer_then_resume(tmp_path, served):
    dest = tmp_path / "dest"
    dest.mkdir()
    with running("getfile", "--port", "0", "--root", str(served), "--quiet") as server:
        client_killed_midway(tmp_path, dest, server.port)
        assert not (dest / "big.bin").exists()
        done = subprocess.run([sys.executable, "-m", "sockkit", "get", "big.bin", "--port", str(server.port), "-o",
                               str(dest)], env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "resumed at" in done.stdout
    assert sha(dest / "big.bin") == sha(served / "big.bin")
    assert [p.name for p in dest.iterdir()] == ["big.bin"]


def test_file_changed_between_kill_and_resume_is_never_spliced(tmp_path, served):
    dest = tmp_path / "dest"
    dest.mkdir()
    with running("getfile", "--port", "0", "--root", str(served), "--quiet") as server:
        client_killed_midway(tmp_path, dest, server.port)
        (served / "big.bin").write_bytes(os.urandom(3 << 20))
        result = getfile.download("big.bin", port=server.port, dest=dest)
    assert result.resumed_from == 0
    assert sha(dest / "big.bin") == sha(served / "big.bin")
    assert [p.name for p in dest.iterdir()] == ["big.bin"]


def test_busy_answer(tmp_path, served):
    """Past --max-transfers the server says busy, and the client says so in one line."""
    started = threading.Event()
    cancel = threading.Event()

    def slow() -> None:
        dest = tmp_path / "slow"
        dest.mkdir()
        try:
            getfile.download("big.bin", port=server.port, dest=dest, limit_rate=1 << 20, cancel=cancel,
                             progress=lambda p: started.set())
        except BaseException:  # cancelled below
            return

    with running("getfile", "--port", "0", "--root", str(served), "--max-transfers", "1", "--quiet") as server:
        thread = threading.Thread(target=slow)
        thread.start()
        try:
            assert started.wait(30)
            with pytest.raises(RemoteError, match="busy") as caught:
                getfile.download("big.bin", port=server.port, dest=tmp_path)
            assert caught.value.code == "busy"
            assert not (tmp_path / "big.bin").exists()
        finally:
            cancel.set()
            thread.join(30)


def test_token(tmp_path, served):
    with running("getfile", "--port", "0", "--root", str(served), "--token", "s3cret", "--quiet") as server:
        getfile.download("f1.bin", port=server.port, dest=tmp_path, token="s3cret")
        with pytest.raises(RemoteError) as caught:
            getfile.download("f1.bin", port=server.port, dest=tmp_path / "x.bin", token="wrong")
        assert caught.value.code == "auth-required"
        with pytest.raises(RemoteError):
            getfile.download("f1.bin", port=server.port, dest=tmp_path / "y.bin")


def test_chapter_session(tmp_path, served):
    """10.5.1: `getfile -mode server` in one directory, `getfile -file testdir/...` in another."""
    server_dir = tmp_path / "server"
    (server_dir / "testdir").mkdir(parents=True)
    (server_dir / "testdir" / "python15.lib").write_bytes(os.urandom(300_000))
    (server_dir / "testdir" / "textfile").write_text("some text\n")
    client_dir = tmp_path / "client"
    client_dir.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "sockkit.commands.getfile_chapter", "-mode", "server", "-port",
                             "0"], cwd=server_dir, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)
    try:
        port = None
        for _ in range(50):
            line = proc.stdout.readline()
            match = re.search(r"listening on \S+:(\d+)", line)
            if match:
                port = int(match.group(1))
                break
        assert port, "the chapter's server did not start"
        for name in ["testdir/python15.lib", "testdir/textfile", "testdir/textfile"]:
            done = subprocess.run([sys.executable, "-m", "sockkit.commands.getfile_chapter", "-file", name, "-port",
                                   str(port)], cwd=client_dir, env=ENV, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
            assert done.stdout.startswith(f"Client got {name} at ")
        assert (client_dir / "python15.lib").read_bytes() == (server_dir / "testdir" / "python15.lib").read_bytes()
        assert (client_dir / "textfile").read_text() == "some text\n"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert len(re.findall(r"Server connected by \('127\.0\.0\.1', \d+\) at \w{3} \w{3}", out)) >= 2


def test_tree_of_many_large_files_stays_within_the_servers_pipeline_bounds(tmp_path):
    """40 files sent zero-copy and 300 small ones over one connection: no busy answer, every byte right."""
    root = tmp_path / "root"
    (root / "t" / "big").mkdir(parents=True)
    (root / "t" / "small").mkdir()
    for i in range(40):
        (root / "t" / "big" / f"{i}.bin").write_bytes(os.urandom(100_000))
    for i in range(300):
        (root / "t" / "small" / f"{i}.txt").write_bytes(os.urandom(4096))
    with running("getfile", "--port", "0", "--root", str(root), "--quiet") as server:
        result = getfile_tree.download_tree("t", port=server.port, dest=tmp_path / "dest")
    assert not result.failed and len(result.files) == 340
    for path in (root / "t").rglob("*.*"):
        assert (tmp_path / "dest" / path.relative_to(root)).read_bytes() == path.read_bytes()
