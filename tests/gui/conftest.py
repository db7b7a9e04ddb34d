"""GUI tests run the real windows on a virtual screen (Xvfb) and drive them with xdotool.

A session-wide Xvfb picks a free display itself and is stopped by PID at the end; one real
``sockkit serve getfile`` on loopback serves a small tree to every test. Each window gets its own
``$XDG_CONFIG_HOME`` (remembered settings stay inside the test) and its own ``--status-file``.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from sockkit.gui.harness import GuiProcess, VirtualScreen, missing_tools
from sockkit.testing import RunningServer, start_server

#: Big enough that a throttled download lasts seconds (1 MiB/s: ~4 s), small enough to be quick unthrottled.
BIG_SIZE = 4 * 1024 * 1024


@pytest.fixture(scope="session")
def screen() -> Iterator[VirtualScreen]:
    missing = missing_tools()
    if missing:
        pytest.skip(f"GUI tests need {', '.join(missing)}; .ci/run installs them (apt-get install xvfb xdotool)")
    virtual = VirtualScreen()
    saved = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = virtual.display  # for the in-process Tk tests
    try:
        yield virtual
    finally:
        if saved is None:
            os.environ.pop("DISPLAY", None)
        else:
            os.environ["DISPLAY"] = saved
        virtual.stop()


@pytest.fixture(scope="session")
def served_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("served")
    rng = random.Random(6)
    (root / "big.bin").write_bytes(rng.randbytes(BIG_SIZE))
    (root / "small.txt").write_text("hello from the getfile server\n")
    (root / "sub").mkdir()
    (root / "sub" / "inner.txt").write_bytes(rng.randbytes(70_000))
    return root


@pytest.fixture(scope="session")
def server(served_root: Path) -> Iterator[RunningServer]:
    running = start_server("getfile", "--root", str(served_root), "--port", "0")
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def launch(screen: VirtualScreen, tmp_path: Path) -> Iterator:
    """``launch(args...) -> GuiProcess``; every window started is stopped (by PID) after the test."""
    started: list[GuiProcess] = []
    config_home = tmp_path / "config"

    def start(*args: str, stdin=None, status: bool = True, program: list[str] | None = None) -> GuiProcess:
        """``program`` (default: sockkit) with ``args``; ``--status-file`` added unless ``status`` is False."""
        status_file = tmp_path / f"status-{len(started)}.jsonl"
        full = [*args, "--status-file", str(status_file)] if status else list(args)
        kwargs = {} if stdin is None else {"stdin": stdin}
        gui = GuiProcess(screen, full, status_file, config_home, cwd=tmp_path, program=program, **kwargs)
        started.append(gui)
        return gui

    yield start
    for gui in started:
        gui.stop()
