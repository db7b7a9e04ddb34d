"""`make demo` runs `sockkit demo`: it must work end to end and say what it showed."""

from __future__ import annotations

import subprocess

from sockkit import netlab
from sockkit.testing import sockkit_command


def test_demo_runs_the_sessions_and_getfile():
    done = subprocess.run(sockkit_command("demo", "--models", "sequential,select"), capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "Client received: 'Echo=>spam'" in out
    # The chapter's own client (Example 10-2 ported), in a namespace of its own where one can be made.
    chapter = "Client received: b'Echo=>spam'\nClient received: b'Echo=>Spam'\nClient received: b'Echo=>SPAM'\n"
    assert chapter in out if netlab.unavailable() is None else "(skipped: it dials the fixed port 50007" in out
    assert "sequential" in out and "one after another" in out
    assert "in parallel" in out
    assert "get ../../etc/passwd: " in out and "outside the directory" in out
    assert "file identical to the original: True" in out
