"""`make demo` runs `sockkit demo`: it must work end to end and say what it showed."""

from __future__ import annotations

import subprocess

from sockkit.testing import sockkit_command


def test_demo_runs_the_sessions_and_getfile():
    done = subprocess.run(sockkit_command("demo", "--models", "sequential,select"), capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "Client received: 'Echo=>spam'" in out
    assert "sequential" in out and "one after another" in out
    assert "in parallel" in out
    assert "get ../../etc/passwd: " in out and "outside the directory" in out
    assert "file identical to the original: True" in out
