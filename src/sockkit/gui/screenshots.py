"""Regenerate the GUI screenshots in docs/img: ``python -m sockkit.gui.screenshots [--out DIR]``.

Runs the real windows on a private Xvfb against a real ``sockkit serve getfile`` on loopback, types
into them with xdotool, and captures the screen when the window's event log says the moment has
come (a download near half way, an error dialog open). Needs Xvfb, xdotool and ImageMagick.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

from sockkit.gui.harness import GuiProcess, VirtualScreen, missing_tools, screenshot
from sockkit.testing import start_server

#: The pictures, in the order they are made.
NAMES = ("form.png", "download.png", "browse.png", "error.png")


def shoot_form(screen: VirtualScreen, work: Path, out: Path) -> Path:
    gui = GuiProcess(screen, ["form"], work / "form.jsonl", work / "config")
    try:
        gui.focus(gui.find("^sockkit form$"))
        gui.type("Bob")
        gui.key("Tab")
        gui.type("38")
        gui.key("Tab")
        gui.type("Educator, Entertainer")
        gui.key("Return")
        gui.wait_for_stdout(3)
        return screenshot(screen.display, out / "form.png")
    finally:
        gui.stop()


def open_getfile(screen: VirtualScreen, work: Path, name: str, port: int, *extra: str) -> GuiProcess:
    """``sockkit gui`` on the test server, saving into work/downloads, logging to work/NAME.jsonl."""
    folder = work / "downloads"
    folder.mkdir(exist_ok=True)
    status = work / f"{name}.jsonl"
    return GuiProcess(screen, ["gui", "--port", str(port), "--dir", str(folder), "--status-file", str(status),
                               *extra], status, work / "config")


def shoot_download(screen: VirtualScreen, work: Path, out: Path, port: int) -> Path:
    gui = open_getfile(screen, work, "download", port, "--limit-rate", "1M")
    try:
        gui.focus(gui.find("^sockkit getfile$"))
        gui.key("Tab", "Tab")
        gui.type("video/talk.mp4")
        gui.key("Return")
        gui.wait_for("progress", lambda e: e["percent"] >= 45, timeout=60)
        return screenshot(screen.display, out / "download.png")
    finally:
        gui.stop()


def shoot_browse(screen: VirtualScreen, work: Path, out: Path, port: int) -> Path:
    gui = open_getfile(screen, work, "browse", port)
    try:
        gui.focus(gui.find("^sockkit getfile$"))
        gui.key("ctrl+b")
        gui.wait_for("listing", timeout=30)
        gui.focus(gui.find("^sockkit getfile: browse "))
        gui.key("Down", "Down")
        return screenshot(screen.display, out / "browse.png")
    finally:
        gui.stop()


def shoot_error(screen: VirtualScreen, work: Path, out: Path, port: int) -> Path:
    gui = open_getfile(screen, work, "error", port)
    try:
        gui.focus(gui.find("^sockkit getfile$"))
        gui.key("Tab", "Tab")
        gui.type("reports/2024.pdf")
        gui.key("Return")
        gui.wait_for("dialog", lambda e: e["title"] == "sockkit getfile: error", timeout=30)
        gui.find("^sockkit getfile: error$")
        return screenshot(screen.display, out / "error.png")
    finally:
        gui.stop()


def populate(root: Path) -> None:
    rng = random.Random(10)
    (root / "video").mkdir()
    (root / "video" / "talk.mp4").write_bytes(rng.randbytes(12 * 1024 * 1024))
    (root / "reports").mkdir()
    (root / "reports" / "2023.pdf").write_bytes(rng.randbytes(300_000))
    (root / "notes.txt").write_text("getfile notes\n")
    (root / "python15.lib").write_bytes(rng.randbytes(1_200_000))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sockkit.gui.screenshots", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("docs/img"), help="where the PNGs go (default %(default)s)")
    args = parser.parse_args(argv)
    if missing := missing_tools():
        print(f"screenshots: missing {', '.join(missing)}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sockkit-shots-") as tmp:
        work = Path(tmp)
        (work / "served").mkdir()
        populate(work / "served")
        screen = VirtualScreen()
        server = start_server("getfile", "--root", str(work / "served"), "--port", "0")
        try:
            made = [shoot_form(screen, work, args.out), shoot_download(screen, work, args.out, server.port),
                    shoot_browse(screen, work, args.out, server.port), shoot_error(screen, work, args.out,
                                                                                    server.port)]
        finally:
            server.stop()
            screen.stop()
    for path in made:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
