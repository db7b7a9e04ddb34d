"""A short real run of ``sockkit bench models --quick``: servers start, get measured, stop; files appear."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from sockkit.testing import sockkit_command


def test_bench_models_quick_writes_results(tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = subprocess.run(sockkit_command("bench", "models", "--quick", "--models", "uvloop,select",
                                          "--peers", "bare-uvloop", "--duration", "0.3", "--warmup", "0",
                                          "--out", str(out)),
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in ("short.json", "summary.json", "results.md", "short.png", "scenarios-rps.png", "scenarios-p99.png"):
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    rows = {row["target"]: row for row in summary["rows"]["short"]}
    assert set(rows) == {"uvloop", "select", "bare-uvloop"}
    assert all(row["rps"] > 0 for row in rows.values())
    assert rows["uvloop"]["peer"] == "bare-uvloop"
    assert "| uvloop |" in (out / "results.md").read_text()
    assert (out / "short.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_rejects_unknown_model(tmp_path: Path) -> None:
    proc = subprocess.run(sockkit_command("bench", "models", "--models", "nosuch", "--out", str(tmp_path)),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "unknown model" in proc.stderr
