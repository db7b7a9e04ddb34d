"""Client dangers: a scripted malicious getfile server against ``sockkit get`` (RELIABILITY.md, "Client dangers").

The server (tests/clients/fake_getfile_server.py) lies in one way per case: short and over-long
bodies, flipped bytes, a wrong digest, absurd sizes, stalls, drip-feeding, error answers, escaping
names in a listing; plus a full disk (1 MiB tmpfs) and EIO on fsync (strace). Every case runs with
an old file under the destination name (``force``), and the figure counts what must stay zero:
files created outside the destination, a file under the final name after a failure, an old file
changed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.clients.fake_getfile_server import FakeServer, Faults

from reliability.suite import Row, Scale, scenario
from sockkit.clients import getfile, getfile_tree
from sockkit.errors import SockkitError

DATA = os.urandom(2 << 20)
OLD = b"the old file, which must survive\n"

CASES: list[tuple[str, Faults]] = [
    ("short body", Faults(short_body=1000)),
    ("over-long body", Faults(extra_bytes=b"X" * 100)),
    ("flipped byte", Faults(flip_byte=12345)),
    ("wrong digest", Faults(wrong_digest=True)),
    ("absurd size", Faults(size_override=10**18)),
    ("size too small", Faults(size_override=100)),
    ("size too large", Faults(size_override=len(DATA) + 1)),
    ("stall mid-body", Faults(stall_after=50_000)),
    ("stall before answer", Faults(stall_before_header=True)),
    ("closes at once", Faults(close_without_answer=True)),
    ("error answer", Faults(error=("not-permitted", "no \x1b[2J"))),
    ("resumes another version", Faults(resume_anyway=True)),
]
TREES = [["f 1 0 ../escape"], ["f 1 0 /tmp/escape"], ["f 1 0 a/../../escape"], ["f 1 0 %2e%2e/escape"],
         ["f 1 0 ok", "f 1 0 ok"], ["d 0 0 ../escapedir"]]


def _outside(base: Path, known: list[Path]) -> int:
    """Paths under ``base`` that are neither a destination nor inside one."""
    return sum(1 for p in base.rglob("*") if not any(p == d or d in p.parents for d in known))


@scenario("hostile-server", "a scripted malicious server (short/long bodies, flipped bytes, absurd sizes, stalls, "
          "escaping names, errors, full disk, EIO on fsync): nothing outside the destination, nothing under the "
          "final name after a failure, the old file intact", ["client"])
def hostile_server(model: str, scale: Scale) -> Row:
    base = Path(tempfile.mkdtemp(prefix="sockkit-rel-client-"))
    wrong_final = old_changed = tried = refused = 0
    known: list[Path] = []
    try:
        for index, (_, faults) in enumerate(CASES * scale.pick(1, 10)):
            dest = base / f"d{index}"
            dest.mkdir()
            known.append(dest)
            (dest / "f.bin").write_bytes(OLD)
            with FakeServer({"f.bin": DATA}, faults=faults) as fake:
                if faults.resume_anyway:  # leave a part of another version for it to "resume"
                    (dest / f"f.bin.{'0' * 32}.part").write_bytes(DATA[:5000])
                tried += 1
                try:
                    getfile.download("f.bin", port=fake.port, dest=dest, force=True, timeout=0.5)
                except SockkitError:
                    refused += 1
            old_changed += (dest / "f.bin").read_bytes() != OLD
        for index, lines in enumerate(TREES):
            dest = base / f"t{index}"
            known.append(dest)
            with FakeServer({"t/ok": b"x"}, faults=Faults(tree=lines)) as fake:
                tried += 1
                try:
                    getfile_tree.download_tree("t", port=fake.port, dest=dest)
                except SockkitError:
                    refused += 1
            wrong_final += sum(1 for p in dest.rglob("*") if p.is_file())
        outside = _outside(base, known)
        disk_note = _full_disk(base) + "; " + _eio_on_fsync(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    ok = outside == 0 and wrong_final == 0 and old_changed == 0 and refused == tried and "FAIL" not in disk_note
    return Row("hostile-server", model, f"{tried} hostile answers, {refused} refused; files outside the destination "
                                        f"{outside}, final-name files after a failure {wrong_final}, old files "
                                        f"changed {old_changed}; {disk_note}", ok)


def _full_disk(base: Path) -> str:
    mount = base / "tiny"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        return "full disk skipped (mount needs root)"
    try:
        (mount / "f.bin").write_bytes(OLD)
        with FakeServer({"f.bin": DATA}) as fake:
            try:
                getfile.download("f.bin", port=fake.port, dest=mount, force=True)
                return "full disk FAIL (accepted)"
            except SockkitError:
                pass
        ok = (mount / "f.bin").read_bytes() == OLD
        return "full disk refused, old file intact" if ok else "full disk FAIL (old file changed)"
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _eio_on_fsync(base: Path) -> str:
    if not shutil.which("strace"):
        return "EIO on fsync skipped (no strace)"
    dest = base / "eio"
    dest.mkdir()
    with FakeServer({"f.bin": DATA}) as fake:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        done = subprocess.run(["strace", "-f", "-o", "/dev/null", "-e", "trace=fsync", "-e", "inject=fsync:error=EIO",
                               sys.executable, "-m", "sockkit", "get", "f.bin", "--port", str(fake.port), "-o",
                               str(dest)], env=env, capture_output=True, text=True, timeout=60)
    with contextlib.suppress(OSError):
        if (dest / "f.bin").exists():
            return "EIO on fsync FAIL (final name written)"
    return "EIO on fsync refused (exit 1), no final name" if done.returncode == 1 else \
        f"EIO on fsync FAIL (exit {done.returncode})"


#: Runs a command and prints its peak RSS (KiB) on stdout: the child's own, from its rusage.
_PEAK_RSS = ("import resource, subprocess, sys; done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, "
             "stderr=subprocess.PIPE); sys.stderr.buffer.write(done.stderr); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(done.returncode)")


def _get_tree(port: int, dest: Path, *extra: str) -> tuple[int, str, float, float]:
    """``sockkit get -r t`` as its own process: (exit code, stderr, peak RSS in MiB, seconds)."""
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-c", _PEAK_RSS, sys.executable, "-m", "sockkit", "get", "-r", "t",
                           "--port", str(port), "-o", str(dest), "--progress", "none", *extra],
                          capture_output=True, text=True, timeout=600)
    peak = int(done.stdout.strip() or 0) / 1024
    return done.returncode, done.stderr, peak, time.monotonic() - began


def _long_paths(count: int, length: int = 4000):
    for index in range(count):
        name = f"{index:08d}"
        yield f"f 1 0 {name}/{'p' * 200}/{'q' * (length - len(name) - 202)}"


@scenario("hostile-listing", "get -r against a server listing 100,000 paths of 4,000 bytes: refused with client "
          "peak RSS < 128 MiB; a path 1,500 directories deep: a one-line refusal, no traceback; one entry every "
          "0.5 s: given up at --timeout (2 s), not later", ["client"])
def hostile_listing(model: str, scale: Scale) -> Row:
    base = Path(tempfile.mkdtemp(prefix="sockkit-rel-listing-"))
    try:
        with FakeServer({}, faults=Faults(tree=_long_paths(100_000), tree_count=100_000)) as fake:
            big_code, big_err, big_peak, _ = _get_tree(fake.port, base / "big")
        deep = "a/" * 1500 + "x"
        with FakeServer({}, faults=Faults(tree=[f"f 1 0 {deep}"])) as fake:
            deep_code, deep_err, _, _ = _get_tree(fake.port, base / "deep")
        slow = Faults(tree=(f"f 1 0 n{i}" for i in range(100)), tree_count=100, tree_pause=0.5)
        with FakeServer({}, faults=slow) as fake:
            slow_code, slow_err, _, slow_took = _get_tree(fake.port, base / "slow", "--timeout", "2")
        created = sum(1 for p in base.rglob("*") if p.is_file())
    finally:
        shutil.rmtree(base, ignore_errors=True)
    tracebacks = sum("Traceback" in err for err in (big_err, deep_err, slow_err))
    ok = (big_code == 1 and big_peak < 128 and deep_code == 1 and "directories deep" in deep_err
          and slow_code == 1 and slow_took < 6 and tracebacks == 0 and created == 0)
    return Row("hostile-listing", model, f"huge listing: exit {big_code}, client peak RSS {big_peak:.0f} MiB; "
                                         f"1,500 deep: exit {deep_code}{_said(deep_err)}; trickled: exit {slow_code} "
                                         f"after {slow_took:.1f} s; tracebacks {tracebacks}, files created {created}",
               ok)


def _said(err: str) -> str:
    lines = err.strip().splitlines()
    return f" ({lines[-1][:90]!r})" if lines else ""
