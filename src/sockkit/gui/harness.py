"""Drive the real windows on a virtual screen: Xvfb, xdotool and the window's ``--status-file``.

Used by tests/gui and by ``python -m sockkit.gui.screenshots``. Nothing here guesses with sleeps:
Xvfb says which display it took (``-displayfd``) once it accepts clients, ``xdotool search
--sync`` waits for a window to exist, and the window itself logs what it did (sockkit.gui.status),
which ``GuiProcess.wait_for`` reads with a bounded wait. Every process started here is stopped by
its PID.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import IO, Any

from sockkit.testing import descendants

#: Tools the GUI tests drive; the Debian packages that hold them (``.ci/run`` installs these).
TOOLS = {"Xvfb": "xvfb", "xdotool": "xdotool"}
SCREEN = "1024x768x24"


def missing_tools() -> list[str]:
    """What is missing for running windows on a virtual screen, as ``tool (package)`` strings."""
    missing = [f"{tool} (Debian package {package})" for tool, package in TOOLS.items() if not shutil.which(tool)]
    try:
        import tkinter  # noqa: F401
    except ImportError:
        missing.append("tkinter (Python built without Tk)")
    return missing


def stop_pid(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL if it lingers; children it left (a ``sockkit get``) are killed by PID too."""
    kids = descendants(proc.pid) if proc.poll() is None else set()
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    for pid in kids:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class VirtualScreen:
    """An Xvfb server on a display number it picks itself (``-displayfd``), stopped by PID."""

    def __init__(self, black_root: bool = True) -> None:
        read_end, write_end = os.pipe()
        command = ["Xvfb", "-displayfd", str(write_end), "-screen", "0", SCREEN, "-nolisten", "tcp"]
        if black_root:
            command.append("-br")  # a black background lets screenshots be trimmed to the windows
        self.proc = subprocess.Popen(command, pass_fds=(write_end,), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        os.close(write_end)
        try:
            number = self._read_display(read_end, timeout=20.0)
        finally:
            os.close(read_end)
        self.display = f":{number}"

    def _read_display(self, fd: int, timeout: float) -> str:
        import select

        data = b""
        deadline = time.monotonic() + timeout
        while not data.endswith(b"\n"):
            left = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(0.0, left))
            chunk = os.read(fd, 64) if ready else b""
            if not chunk:
                err = b""
                if self.proc.poll() is not None and self.proc.stderr is not None:
                    err = self.proc.stderr.read()[-500:]
                stop_pid(self.proc)
                raise RuntimeError(f"Xvfb did not start: {err.decode(errors='replace').strip() or 'timed out'}")
            data += chunk
        return data.decode().strip()

    def env(self, **extra: str) -> dict[str, str]:
        return dict(os.environ, DISPLAY=self.display, **extra)

    def stop(self) -> None:
        stop_pid(self.proc)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def xdotool(display: str, *args: str, timeout: float = 20.0) -> str:
    """Run xdotool on ``display``; its stdout. Bounded: a hung X call fails the caller, never hangs it."""
    result = subprocess.run(["xdotool", *args], env=dict(os.environ, DISPLAY=display), capture_output=True,
                            text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"xdotool {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def find_window(display: str, title_regex: str, timeout: float = 20.0) -> str:
    """The id of a window whose title matches, waiting (bounded) for it to appear."""
    out = xdotool(display, "search", "--sync", "--onlyvisible", "--name", title_regex, timeout=timeout)
    return out.split()[0]


def screenshot(display: str, path: Path, trim: bool = True) -> Path:
    """The whole screen as a PNG (``import -window root``), trimmed to what is drawn on the black root."""
    path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, DISPLAY=display)
    subprocess.run(["import", "-window", "root", str(path)], env=env, check=True, timeout=30)
    if trim:
        subprocess.run(["convert", str(path), "-trim", "+repage", str(path)], check=True, timeout=30)
    return path


class GuiProcess:
    """``sockkit gui`` (or ``sockkit form``, or ``program`` -- another Tk program, such as the chapter's
    own) as a child process on a virtual screen, with its event log."""

    def __init__(self, screen: VirtualScreen, args: list[str], status_file: Path, config_home: Path,
                 stdin: IO | int | None = subprocess.DEVNULL, cwd: Path | None = None,
                 program: list[str] | None = None) -> None:
        self.display = screen.display
        self.status_file = status_file
        status_file.unlink(missing_ok=True)
        env = screen.env(XDG_CONFIG_HOME=str(config_home), PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]),
                                                            env.get("PYTHONPATH", "")]))
        command = [*program, *args] if program is not None else [sys.executable, "-m", "sockkit", *args]
        self.proc = subprocess.Popen(command, env=env, stdin=stdin,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd)
        self.window: str | None = None
        # Read by threads so a chatty child can never block on a full pipe, and a test can wait
        # for a line without a read that might never return.
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        self.readers = [threading.Thread(target=_collect, args=(stream, into), daemon=True)
                        for stream, into in ((self.proc.stdout, self.stdout_lines),
                                             (self.proc.stderr, self.stderr_lines))]
        for reader in self.readers:
            reader.start()

    def wait_for_stdout(self, count: int, timeout: float = 20.0) -> list[str]:
        """The first ``count`` lines the process printed, waiting (bounded) for them."""
        deadline = time.monotonic() + timeout
        while len(self.stdout_lines) < count and time.monotonic() < deadline and self.proc.poll() is None:
            time.sleep(0.05)
        for reader in self.readers if self.proc.poll() is not None else []:
            reader.join(5)
        if len(self.stdout_lines) < count:
            raise AssertionError(f"expected {count} lines on stdout, got {self.stdout_lines}; "
                                 f"stderr: {self.stderr_lines[-5:]}")
        return self.stdout_lines[:count]

    # --- the event log -------------------------------------------------------------------------

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        try:
            lines = self.status_file.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        found = []
        for line in lines:
            with suppress(ValueError):  # a line being written right now
                record = json.loads(line)
                if name is None or record.get("event") == name:
                    found.append(record)
        return found

    def wait_for(self, name: str, where: Callable[[dict[str, Any]], bool] = lambda _e: True,
                 timeout: float = 30.0) -> dict[str, Any]:
        """The first ``name`` event for which ``where`` holds; fails after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events(name):
                if where(event):
                    return event
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        tail = [json.dumps(e) for e in self.events() if e.get("event") != "tick"][-8:]
        raise AssertionError(f"no {name!r} event within {timeout} s (exit status {self.proc.poll()}); "
                             f"last events: {tail}")

    # --- the keyboard and mouse ----------------------------------------------------------------

    def find(self, title_regex: str, timeout: float = 20.0) -> str:
        """A window of this process by title; the first one found becomes ``self.window`` (the main one)."""
        found = find_window(self.display, title_regex, timeout)
        if self.window is None:
            self.window = found
        return found

    def focus(self, window: str | None = None) -> None:
        # No window manager on Xvfb: give the window the X input focus ourselves.
        xdotool(self.display, "windowfocus", "--sync", window or self.window or "")

    def key(self, *keys: str) -> None:
        xdotool(self.display, "key", "--delay", "30", *keys)

    def type(self, text: str) -> None:
        xdotool(self.display, "type", "--delay", "20", text)

    def click(self, x: int, y: int) -> None:
        # Come in from outside, as a hand would: a window mapped under a pointer that never moves
        # gets no Enter event, and Tk then drops the click (seen when a test clicks where the last
        # window's button was).
        xdotool(self.display, "mousemove", "0", "767")  # no --sync: it stalls when already there
        xdotool(self.display, "mousemove", "--sync", str(x), str(y), "click", "1")

    # --- the end -------------------------------------------------------------------------------

    def wait(self, timeout: float = 20.0) -> int:
        return self.proc.wait(timeout)

    def output(self) -> tuple[str, str]:
        """Everything printed on stdout and stderr, once the process has ended."""
        self.proc.wait(10)
        for reader in self.readers:
            reader.join(5)
        return "\n".join(self.stdout_lines), "\n".join(self.stderr_lines)

    def stop(self) -> None:
        stop_pid(self.proc)
        for reader in self.readers:
            reader.join(5)
        if self.proc.stdin is not None:
            with suppress(OSError):
                self.proc.stdin.close()


def _collect(stream: IO[str], into: list[str]) -> None:
    with stream:
        for line in stream:
            into.append(line.rstrip("\n"))
