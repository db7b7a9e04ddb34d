"""The client against a failing disk: full (small tmpfs), read-only, permission denied, EIO on fsync.

These need root (mount, setpriv, strace); each skips with the reason when that is not available.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sockkit.clients import getfile
from sockkit.clients.transfer import PIPELINE_MIN
from sockkit.errors import DestinationError, NotEnoughSpace, describe
from tests.clients.fake_getfile_server import FakeServer

SRC = str(Path(__file__).resolve().parents[2] / "src")
ROOT = str(Path(__file__).resolve().parents[2])


def mount_tmpfs(path: Path, options: str) -> None:
    path.mkdir(exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {done.stderr.strip()}")


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs: a 2 MiB download cannot fit."""
    mount = tmp_path / "small"
    mount_tmpfs(mount, "size=1m")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def read_only_disk(tmp_path):
    mount = tmp_path / "ro"
    mount_tmpfs(mount, "size=1m,ro")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_too_big_for_the_disk_is_refused_up_front(small_disk):
    with FakeServer({"big": os.urandom(2 * 1024 * 1024)}) as fake, pytest.raises(NotEnoughSpace) as caught:
        getfile.download("big", port=fake.port, dest=small_disk)
    assert "not enough space" in describe(caught.value)
    assert list(small_disk.iterdir()) == []


@pytest.mark.parametrize("size_kib", [600, (PIPELINE_MIN >> 10) + 2048], ids=["one-thread", "writer-thread"])
def test_disk_filling_up_during_the_download(tmp_path, size_kib):
    """ENOSPC halfway: one clear line, no final file, the part kept for a resume."""
    disk = tmp_path / "disk"
    mount_tmpfs(disk, f"size={size_kib + 400}k")
    data = os.urandom(size_kib * 1024)

    def fill_the_disk(progress: getfile.Progress) -> None:
        filler = disk / "filler"
        if not filler.exists():
            fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
            with contextlib.suppress(OSError):  # it fills what is left, then hits ENOSPC itself
                os.write(fd, b"\0" * (size_kib * 1024))
            os.close(fd)

    try:
        with FakeServer({"f": data}) as fake, pytest.raises(DestinationError, match="disk full"):
            getfile.download("f", port=fake.port, dest=disk, progress=fill_the_disk)
        assert not (disk / "f").exists()
        assert any(p.name.endswith(".part") for p in disk.iterdir())
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_read_only_destination(read_only_disk):
    with FakeServer({"f": b"data"}) as fake, pytest.raises(DestinationError, match="read-only"):
        getfile.download("f", port=fake.port, dest=read_only_disk)


def test_permission_denied(tmp_path):
    """As an unprivileged user (root ignores permissions), writing into a root-owned directory fails clearly."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to run the client as nobody")
    target = tmp_path / "locked"
    target.mkdir(mode=0o755)
    os.chmod(tmp_path, 0o755)
    probe = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable, "-c",
                            "import sockkit"], env={**os.environ, "PYTHONPATH": SRC}, capture_output=True)
    if probe.returncode != 0:
        pytest.skip("user nobody cannot read the source tree or the interpreter")
    with FakeServer({"f": b"data"}) as fake:
        done = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable,
                               "-m", "sockkit", "get", "f", "--port", str(fake.port), "-o", str(target)],
                              env={**os.environ, "PYTHONPATH": SRC}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("sockkit get: ")
    assert "permission denied" in done.stderr
    assert list(target.iterdir()) == []


@pytest.mark.parametrize("recursive", [False, True], ids=["file", "tree"])
def test_eio_on_fsync_leaves_no_final_file(tmp_path, recursive):
    """strace makes every fsync fail with EIO: no file may get its final name (for -r too, where
    the fsyncs come in a batch before the renames)."""
    if not shutil.which("strace"):
        pytest.skip("strace is not installed")
    files = {"d/f": b"data" * 1000, "d/g": b"more" * 1000}
    remote = ["d", "-r"] if recursive else ["d/f"]
    with FakeServer(files) as fake:
        done = subprocess.run(["strace", "-f", "-o", "/dev/null", "-e", "trace=fsync", "-e", "inject=fsync:error=EIO",
                               sys.executable, "-m", "sockkit", "get", *remote, "--port", str(fake.port), "-o",
                               str(tmp_path)], env={**os.environ, "PYTHONPATH": SRC}, capture_output=True, text=True,
                              timeout=60)
    if "ptrace" in done.stderr and done.returncode != 1:
        pytest.skip(f"strace cannot trace here: {done.stderr.strip()[:200]}")
    assert done.returncode == 1, done.stderr
    assert "input/output error" in done.stderr
    finals = [p for p in tmp_path.rglob("*") if p.is_file() and not p.name.endswith(".part")]
    assert finals == []


def _traced_get(argv: list[str], syscalls: str, trace: Path) -> list[str]:
    """Run ``sockkit get ARGV`` under strace (``-e trace=SYSCALLS``), expect success; the trace lines."""
    if not shutil.which("strace"):
        pytest.skip("strace is not installed")
    done = subprocess.run(["strace", "-f", "-o", str(trace), "-e", f"trace={syscalls}", sys.executable, "-m",
                           "sockkit", "get", *argv], env={**os.environ, "PYTHONPATH": SRC}, capture_output=True,
                          text=True, timeout=60)
    if "ptrace" in done.stderr and done.returncode != 0:
        pytest.skip(f"strace cannot trace here: {done.stderr.strip()[:200]}")
    assert done.returncode == 0, done.stderr
    return trace.read_text().splitlines()


@pytest.mark.parametrize("recursive", [False, True])
def test_no_fsync_skips_every_sync_and_still_verifies(tmp_path, recursive):
    """--no-fsync: no fsync/syncfs at all, yet the file arrives complete under its final name;
    without it, the same download syncs (so the strace check can see them)."""
    files = {"d/a": b"alpha" * 5000, "d/b": b"beta" * 7000}
    with FakeServer(files) as fake:
        remote = ["d", "-r"] if recursive else ["d/a"]
        for durable in (True, False):
            out = tmp_path / ("durable" if durable else "fast")
            out.mkdir()
            flags = [] if durable else ["--no-fsync"]
            trace = _traced_get([*remote, "--port", str(fake.port), "-o", str(out), *flags],
                                "fsync,fdatasync,syncfs", tmp_path / "strace.out")
            calls = [line for line in trace if "sync(" in line]
            got = out / "d" / "a" if recursive else out / "a"
            assert got.read_bytes() == files["d/a"]
            assert not [p for p in out.rglob("*") if p.name.endswith(".part")]
            if durable:
                assert calls, "a durable download made no fsync (the check would prove nothing)"
            else:
                assert calls == []


def _whole_calls(trace: list[str]) -> list[str]:
    """strace -f splits a call another thread interrupts ("<unfinished ...>", then "<... resumed>");
    joined here, each call sits where it returned (the client may use threads: the writer)."""
    started: dict[str, str] = {}
    calls = []
    for line in trace:
        pid, _, rest = line.partition(" ")
        rest = rest.lstrip()
        if rest.endswith("<unfinished ...>"):
            started[pid] = rest.removesuffix("<unfinished ...>").rstrip()
        elif (match := re.match(r"<\.\.\. \w+ resumed>(.*)", rest)) and pid in started:
            calls.append(started.pop(pid) + match.group(1))
        else:
            calls.append(rest)
    return calls


def test_tree_fsyncs_every_part_before_it_gets_its_name(tmp_path):
    """Durability order for -r, read from the system calls themselves: each part is fsync'ed
    (through a descriptor opened on that part, or a duplicate of one) and that fsync has returned
    0 before the rename that gives the part its final name."""
    files = {f"d/sub{i % 3}/f{i:03d}.txt": f"file {i}\n".encode() * (i + 1) for i in range(40)}
    out = tmp_path / "out"
    out.mkdir()
    with FakeServer(files) as fake:
        trace = _traced_get(["d", "-r", "--port", str(fake.port), "-o", str(out)],
                            "openat,dup,fcntl,fsync,close,renameat2,renameat,rename,linkat", tmp_path / "trace.out")
    open_fds: dict[str, str] = {}
    synced: set[str] = set()
    named: list[str] = []
    for call in _whole_calls(trace):
        if (match := re.search(r'openat\(\d+, "([^"]+\.part)", .*\)\s+= (\d+)$', call)):
            open_fds[match.group(2)] = match.group(1)
        elif ((match := re.search(r"(?:dup\((\d+)|fcntl\((\d+), F_DUPFD\w*, \d+)\)\s+= (\d+)", call))
              and (match.group(1) or match.group(2)) in open_fds):
            open_fds[match.group(3)] = open_fds[match.group(1) or match.group(2)]
        elif (match := re.search(r"fsync\((\d+)\)\s+= 0", call)) and match.group(1) in open_fds:
            synced.add(open_fds[match.group(1)])
        elif (match := re.search(r"close\((\d+)\)", call)):
            open_fds.pop(match.group(1), None)
        elif (match := re.search(r'(?:renameat2?|rename|linkat)\(.*?"([^"]+\.part)"', call)):
            named.append(match.group(1))
            assert match.group(1) in synced, f"{match.group(1)} got its final name before its fsync returned"
    assert len(named) == len(files)
    for path, data in files.items():
        assert (out / path).read_bytes() == data
