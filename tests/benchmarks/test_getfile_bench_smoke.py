"""The getfile benchmark runs end to end at tiny sizes: a table and a JSON file come out.

No timing is asserted (the machine is shared and noisy); peers that are not installed are
reported as missing by the benchmark itself and their rows skipped.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_quick_run_prints_table_and_writes_json(tmp_path: Path) -> None:
    """--quick finishes, prints the table header and a row per peer, writes getfile.json."""
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "getfile.py"), "--quick", "--models", "select",
         "--cases", "devnull,small", "--out", str(out), "--tmp", str(tmp_path)],
        capture_output=True, text=True, timeout=240, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "srv peak RSS MiB" in proc.stdout
    result = json.loads((out / "getfile.json").read_text())
    peers = {row["peer"] for row in result["rows"]}
    assert "sockkit select" in peers
    measured = [row for row in result["rows"] if row["rate"]]
    assert any(row["peer"] == "sockkit select" for row in measured), result["table"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("sockkit-bench-getfile-")], "temp dir left"
