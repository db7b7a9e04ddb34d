"""Work that may block, run in worker threads, reported to the Tk thread through a queue.

Rule: nothing here touches a widget (Tk is not thread-safe). A job puts plain messages on its
queue; the window drains the queue from an ``after()`` timer. The transfer itself is the client
library's (``sockkit.clients.getfile``) or the CLI's (``sockkit get``): there is no protocol code
in the GUI, so the window says exactly what the command line says. Like the chapter's ``getfile``
command, a download falls back to the chapter's protocol when the server closes without a word
(the chapter's own server), and says the copy is not verified.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import NamedTuple

from sockkit.clients import getfile
from sockkit.clients.getfile_legacy import UNVERIFIED_FALLBACK, download_or_legacy
from sockkit.commands.get import tls_context
from sockkit.errors import Cancelled, describe
from sockkit.protocols.getfile import Entry

# --- messages (worker -> Tk thread) ----------------------------------------------------------

@dataclass(frozen=True)
class Connected:
    """The connection is up; the server's answer is awaited."""


@dataclass(frozen=True)
class Progressed:
    done: int
    total: int
    speed: float          # bytes/s
    eta: float | None     # seconds, None when unknown


@dataclass(frozen=True)
class Finished:
    path: str
    size: int
    verified: bool
    resumed_from: int = 0   # bytes a kept .part already held (the subprocess mode cannot tell: 0)
    unchanged: bool = False  # the local file was already this version: nothing was transferred
    warning: str = ""  # what the user must know about this copy (the chapter's protocol: not verified)


@dataclass(frozen=True)
class Failed:
    message: str          # exactly sockkit.errors.describe(exc): the CLI's words


@dataclass(frozen=True)
class Stopped:
    """The user cancelled; the partial copy (``.part``) is kept for a resume."""


@dataclass(frozen=True)
class Listed:
    directory: str
    entries: list[Entry]


Message = Connected | Progressed | Finished | Failed | Stopped | Listed


@dataclass(frozen=True)
class Request:
    """One download, as the form described it."""

    remote: str
    host: str
    port: int
    folder: str
    limit_rate: float | None = None
    timeout: float = 30.0
    force: bool = False     # replace a different local file of the same name
    token: str | None = None
    tls: bool = False       # connect with TLS (certificate verified)
    cafile: str | None = None  # trust this CA / self-signed certificate (implies TLS)

    def connection(self) -> dict:
        """Keyword arguments for the client library: the same as ``sockkit get`` builds from its options."""
        tls = tls_context(argparse.Namespace(tls=self.tls, cafile=self.cafile))
        return {"host": self.host, "port": self.port, "timeout": self.timeout, "token": self.token or None,
                "tls": tls}


#: Where ``sockkit get`` looks for a token when --token is not given.
TOKEN_ENV = "SOCKKIT_TOKEN"


def destination(folder: str) -> str:
    # A trailing separator makes the client treat it as a directory that must exist: a mistyped
    # folder is reported ("no such directory") instead of becoming the downloaded file's name.
    return os.path.join(folder or ".", "")


class Job:
    """A worker thread with a cancel switch; subclasses define ``work()``."""

    def __init__(self) -> None:
        # One queue per job: a late message from an old job can never be taken for the current one's.
        self.inbox: queue.Queue[Message] = queue.Queue()
        self.cancel_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)

    def start(self) -> Job:
        self.thread.start()
        return self

    def cancel(self) -> None:
        self.cancel_event.set()

    def stop_now(self) -> None:
        """The window is closing: stop at once, whatever is lost (a ``.part`` is still kept)."""
        self.cancel()

    def running(self) -> bool:
        return self.thread.is_alive()

    def join(self, timeout: float) -> bool:
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def _run(self) -> None:
        try:
            self.work()
        except Exception as exc:  # the thread's error boundary: every failure becomes one line for the user
            self.inbox.put(Failed(describe(exc)))

    def work(self) -> None:
        raise NotImplementedError

    def messages(self, limit: int) -> list[Message]:
        """Up to ``limit`` waiting messages, without blocking (called from the Tk thread)."""
        found: list[Message] = []
        while len(found) < limit:
            try:
                found.append(self.inbox.get_nowait())
            except queue.Empty:
                break
        return found


class InProcessDownload(Job):
    """``getfile.download()`` called in this thread; progress callbacks become queue messages."""

    def __init__(self, request: Request) -> None:
        super().__init__()
        self.request = request

    def report(self, progress: getfile.Progress) -> None:
        self.inbox.put(Progressed(progress.done, progress.total, progress.speed, progress.eta))

    def work(self) -> None:
        r = self.request
        try:
            result = download_or_legacy(r.remote, dest=destination(r.folder), force=r.force, progress=self.report,
                                        cancel=self.cancel_event, limit_rate=r.limit_rate,
                                        connected=lambda: self.inbox.put(Connected()), **r.connection())
        except Cancelled:
            self.inbox.put(Stopped())
            return
        self.inbox.put(Finished(str(result.path), result.size, result.verified, result.resumed_from,
                                result.unchanged, "" if result.verified else UNVERIFIED_FALLBACK))


def get_command(request: Request) -> list[str]:
    """The ``sockkit get`` command line the subprocess mode runs (the chapter's first GUI did the same)."""
    command = [sys.executable, "-m", "sockkit", "get", request.remote, "--host", request.host,
               "--port", str(request.port), "-o", destination(request.folder), "--progress", "json",
               "--timeout", str(request.timeout)]
    if request.limit_rate:
        command += ["--limit-rate", str(int(request.limit_rate))]
    if request.force:
        command.append("--force")
    if request.tls:
        command.append("--tls")
    if request.cafile:
        command += ["--cafile", request.cafile]
    return command


#: How long a cancelled child may take to stop after SIGINT before it is killed.
CHILD_STOP_SECONDS = 5.0
#: Stderr lines kept from the child: its error is one line; the rest is noise we need not hold.
MAX_STDERR_LINES = 50


class ChildOutcome(NamedTuple):
    code: int  # the child's exit status
    final: dict | None  # its last JSON record on success (``path``, ``total``)
    error: str | None  # its JSON error, if any
    silent: bool  # it failed because the server closed without a word (the chapter's server)


class SubprocessDownload(Job):
    """``sockkit get ... --progress json`` as a child process; its JSON lines become queue messages.

    Cancel sends the child SIGINT, by its PID: the CLI's own Ctrl-C path, which keeps the ``.part``
    and exits 130. A child that ignores it is killed after CHILD_STOP_SECONDS. A child whose server
    closed without a word is followed by a second one with ``--legacy``.
    """

    def __init__(self, request: Request, command: Callable[[Request], list[str]] = get_command) -> None:
        super().__init__()
        self.request = request
        self.command = command(request)
        self.proc: subprocess.Popen[str] | None = None
        self.lock = threading.Lock()
        self.interrupted = False
        # The last lines only: the error a failed `sockkit get` prints is its last line.
        self.stderr_lines: deque[str] = deque(maxlen=MAX_STDERR_LINES)

    def cancel(self) -> None:
        """Called from the Tk thread: never waits. The lock pairs with the one around Popen so the
        child is interrupted exactly once, whether it is already running or about to start."""
        with self.lock:
            super().cancel()
            self._interrupt()

    def _interrupt(self) -> None:
        if self.proc is not None and self.proc.poll() is None and not self.interrupted:
            self.interrupted = True
            with suppress(ProcessLookupError):  # it may have just finished on its own
                os.kill(self.proc.pid, signal.SIGINT)
            # The worker is blocked reading the child's stdout; if SIGINT is ignored, SIGKILL ends
            # both (the .part survives a SIGKILL too: it is only ever renamed once verified).
            timer = threading.Timer(CHILD_STOP_SECONDS, self._kill)
            timer.daemon = True
            timer.start()

    def _kill(self) -> None:
        with self.lock:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()

    def work(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        # The token goes through the environment, not argv, where any local user could read it (ps).
        env.pop(TOKEN_ENV, None)
        if self.request.token:
            env[TOKEN_ENV] = self.request.token
        legacy = False
        outcome = self._run_child(self.command, env)
        if outcome is not None and outcome.silent and not self.cancel_event.is_set():
            # Closed without a word: the chapter's own server. Its protocol, as the getfile command does.
            legacy = True
            outcome = self._run_child([*self.command, "--legacy"], env)
        if outcome is None or (self.cancel_event.is_set() and outcome.code != 0):
            self.inbox.put(Stopped())
        elif outcome.code == 0 and outcome.final is not None:
            self.inbox.put(Finished(str(outcome.final["path"]), int(outcome.final.get("total") or 0), not legacy,
                                    warning=UNVERIFIED_FALLBACK if legacy else ""))
        else:
            self.inbox.put(Failed(self.error_text(outcome.error, outcome.code)))

    def _run_child(self, command: list[str], env: dict[str, str]) -> ChildOutcome | None:
        """One ``sockkit get`` child, its JSON lines turned into messages; None if cancelled before it began."""
        with self.lock:
            if self.cancel_event.is_set():
                return None
            self.interrupted = False
            self.stderr_lines.clear()
            self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True, bufsize=1, env=env)
        # stderr is drained by its own thread so a chatty child can never block on a full pipe.
        drain = threading.Thread(target=self._read_stderr, daemon=True)
        drain.start()
        final: dict | None = None
        error: str | None = None
        silent = False
        for line in self.proc.stdout:
            record = parse_json_line(line)
            if record is None:
                continue
            if "error" in record:
                error, silent = str(record["error"]), bool(record.get("silent"))
            elif "path" in record:
                final = record
            elif "connected" in record:
                self.inbox.put(Connected())
            elif "done" in record:
                self.inbox.put(Progressed(int(record["done"]), int(record.get("total") or 0),
                                          float(record.get("speed") or 0.0), record.get("eta")))
        self.proc.stdout.close()
        code = self._wait()
        drain.join(CHILD_STOP_SECONDS)
        return ChildOutcome(code, final, error, silent and code != 0)

    def _wait(self) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(CHILD_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        with self.proc.stderr:
            for line in self.proc.stderr:
                self.stderr_lines.append(line.rstrip("\n"))

    def error_text(self, json_error: str | None, code: int) -> str:
        """The child's ``sockkit get: <message>`` line without its prefix: the same words as in-process."""
        prefix = "sockkit get: "
        for line in reversed(self.stderr_lines):
            if line.startswith(prefix):
                return line[len(prefix):]
        if json_error:
            return json_error
        last = self.stderr_lines[-1] if self.stderr_lines else ""
        return f"sockkit get exited with status {code}" + (f": {last}" if last else "")

    def stop_now(self) -> None:
        """On window close: the child must not outlive the window (SIGKILL still leaves the .part)."""
        self.cancel_event.set()
        self._kill()


def parse_json_line(line: str) -> dict | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


class Listing(Job):
    """``getfile.list_remote()`` of one directory, for the Browse dialog (``request`` says where and how)."""

    def __init__(self, request: Request, directory: str) -> None:
        super().__init__()
        self.request, self.directory = request, directory

    def work(self) -> None:
        entries = getfile.list_remote(self.directory, **self.request.connection())
        self.inbox.put(Listed(self.directory, entries))
