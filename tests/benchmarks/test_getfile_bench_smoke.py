"""The getfile benchmark runs end to end at tiny sizes: a table and a JSON file come out.

No timing is asserted (the machine is shared and noisy); peers that are not installed are
reported as missing by the benchmark itself and their rows skipped.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def quick_run(tmp_path: Path, cases: str) -> tuple[subprocess.CompletedProcess, dict]:
    """``benchmarks/getfile.py --quick`` of ``cases`` against the select model: its output and JSON."""
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "getfile.py"), "--quick", "--models", "select",
         "--cases", cases, "--out", str(out), "--tmp", str(tmp_path)],
        capture_output=True, text=True, timeout=240, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc, json.loads((out / "getfile.json").read_text())


def test_quick_run_prints_table_and_writes_json(tmp_path: Path) -> None:
    """--quick finishes, prints the table header and a row per peer, writes getfile.json."""
    proc, result = quick_run(tmp_path, "devnull,concurrent,small")
    assert "srv peak RSS MiB" in proc.stdout
    peers = {row["peer"] for row in result["rows"]}
    assert "sockkit select" in peers
    measured = [row for row in result["rows"] if row["rate"]]
    assert {row["case"] for row in measured if row["peer"] == "sockkit select"} == {
        "1 file to /dev/null", "4 clients x 1 MiB", "20 files x 4 KiB"}, result["table"]
    # Installed peers are measured too, also with --tmp inside pytest's private (0700) directory.
    for peer, tool in (("nginx + curl", "nginx"), ("rsync daemon", "rsync")):
        if shutil.which(tool) and shutil.which("curl"):
            assert any(row["peer"] == peer for row in measured), result["table"]
    # The --no-fsync row is judged against the same target, like for like, apart from the default.
    assert "like for like: no peer here fsyncs; target" in proc.stdout
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("sockkit-bench-getfile-")], "temp dir left"


def test_quick_run_of_the_http_cases(tmp_path: Path) -> None:
    """The HTTP rows (curl, wrk, the folder archive) run against sockkit's HTTP face and the peers."""
    _, result = quick_run(tmp_path, "http,keepalive,archive")
    measured = {(row["case"], row["peer"]) for row in result["rows"] if row["rate"]}
    assert ("1 file to /dev/null, HTTP", "sockkit select + curl") in measured, result["table"]
    assert ("folder of 20 x 4 KiB as one tar, HTTP", "sockkit select + curl") in measured, result["table"]
    if shutil.which("wrk"):
        assert ("4 KiB requests, keep-alive (wrk)", "sockkit select") in measured, result["table"]
        assert ("4 KiB requests, keep-alive (wrk)", "http.server + wrk") in measured, result["table"]
