"""``sockkit gui``: the getfile download window, built on ``Form``, that never freezes.

The chapter's getfile GUI called the download from its Submit handler, so the window was dead
until the file arrived. Here the Tk thread only ever does quick work: Submit starts a worker
(``jobs.InProcessDownload``, or ``jobs.SubprocessDownload`` for ``--subprocess``) and returns;
an ``after()`` timer drains the worker's queue into the progress bar; Cancel sets the worker's
cancel switch. Errors are shown with ``describe(exc)``'s words, the ones ``sockkit get`` prints.
A server that closes without a word is the chapter's own: the worker speaks its protocol instead
and the window says the copy is not verified, as the ``getfile`` command does.
"""

from __future__ import annotations

import os
import tkinter as tk
from dataclasses import dataclass
from tkinter import filedialog, messagebox, ttk

from sockkit.clients.localfs import human_size
from sockkit.gui import settings
from sockkit.gui.browse import BrowseDialog
from sockkit.gui.form import Form
from sockkit.gui.jobs import (
    Connected,
    Failed,
    Finished,
    InProcessDownload,
    Job,
    Progressed,
    Request,
    Stopped,
    SubprocessDownload,
)
from sockkit.gui.status import StatusLog

TITLE = "sockkit getfile"
#: Dialog titles differ from the window's so a person (or xdotool --name) can tell them apart.
ERROR_TITLE = f"{TITLE}: error"
DONE_TITLE = f"{TITLE}: done"
SERVER, PORT, FILE, FOLDER = "Server", "Port", "File", "Local Dir"
LABELS = (SERVER, PORT, FILE, FOLDER)
#: Queue polling period: 20 redraws a second is smooth for a bar and costs nothing when idle.
POLL_MS = 50
#: Messages handled per poll at most, so a flood can never hold the Tk thread for long.
MAX_MESSAGES_PER_POLL = 200
#: Heartbeat period while a transfer runs; each tick is logged, proving the Tk loop is alive.
HEARTBEAT_MS = 100
#: How long closing the window waits for a cancelled worker (in-process cancel takes ~0.2 s).
CLOSE_WAIT_SECONDS = 2.0
#: After a cancel, Cancel turns back into Quit only once the pointer has left it, or after this long:
#: the second click of a double-click on Cancel (X and Tk count two clicks 500 ms apart as one
#: double-click) must not quit the window whose download it just cancelled.
QUIT_ARM_MS = 1000


@dataclass
class WindowOptions:
    host: str | None = None
    port: int | None = None
    folder: str | None = None
    file: str = ""
    subprocess: bool = False
    limit_rate: float | None = None
    timeout: float = 30.0
    status_file: str | None = None
    token: str | None = None
    tls: bool = False
    cafile: str | None = None


def format_progress(p: Progressed) -> str:
    if p.total <= 0:
        return f"{human_size(p.done)}"
    percent = 100 * p.done // p.total
    text = f"{human_size(p.done)} of {human_size(p.total)} ({percent}%)"
    if p.speed > 0:
        text += f"  ·  {human_size(p.speed)}/s"
    if p.eta is not None and p.done < p.total:
        text += f"  ·  {format_seconds(p.eta)} left"
    return text


def format_seconds(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class GetfileWindow:
    """The form (Server, Port, File, Local Dir), a progress bar, a status line, Browse/Submit/Cancel."""

    def __init__(self, root: tk.Tk, options: WindowOptions) -> None:
        self.root = root
        self.options = options
        self.status = StatusLog(options.status_file)
        remembered = settings.load()
        defaults = {
            SERVER: options.host or remembered.host,
            PORT: str(options.port or remembered.port),
            FILE: options.file,
            FOLDER: options.folder or remembered.folder or os.getcwd(),
        }
        mode = "subprocess" if options.subprocess else "in-process"
        root.title(f"{TITLE} ({mode})" if options.subprocess else TITLE)
        root.minsize(460, 0)
        self.form = Form(LABELS, root, defaults=defaults, on_submit=self.start, on_cancel=self.cancel_or_quit)
        self.form.cancel_button.configure(text="Quit")
        self.folder_button = self.form.add_button("Folder...", self.choose_folder)
        self.browse_button = self.form.add_button("Browse...", self.browse)
        below = ttk.Frame(root, padding=(8, 0, 8, 8))
        below.pack(side=tk.TOP, fill=tk.X)
        self.force = tk.BooleanVar(root, value=False)
        self.force_button = ttk.Checkbutton(below, text="Replace a different local file of the same name",
                                            variable=self.force)
        self.force_button.pack(side=tk.TOP, anchor=tk.W, pady=(0, 4))
        self.bar = ttk.Progressbar(below, orient=tk.HORIZONTAL, mode="determinate", maximum=100)
        self.bar.pack(side=tk.TOP, fill=tk.X)
        # width=1: the status text must never resize the window as it changes; it wraps instead.
        self.line = ttk.Label(below, text=f"Ready ({mode}).", anchor=tk.W, width=1)
        self.line.pack(side=tk.TOP, fill=tk.X, pady=(4, 0))
        self.line.bind("<Configure>", lambda e: self.line.configure(wraplength=max(100, e.width - 4)))
        self.job: Job | None = None
        self.cancelling = False
        self.quit_held = False  # Quit stays disabled after a cancel (QUIT_ARM_MS)
        self.form.cancel_button.bind("<Leave>", lambda _e: self.arm_quit(), add="+")
        self.size = (0, 0)
        # Escape cancels a transfer but never closes the window: Quit (or Ctrl-Q) does that.
        root.bind("<Escape>", lambda _e: self.cancel())
        root.bind("<Control-q>", lambda _e: self.quit())
        root.bind("<Control-b>", lambda _e: self.browse())
        root.bind("<Configure>", self.on_configure)
        root.protocol("WM_DELETE_WINDOW", self.quit)
        root.after(POLL_MS, self.poll)
        root.after(0, self.announce)

    # --- state ---------------------------------------------------------------------------------

    def busy(self) -> bool:
        return self.job is not None

    def set_busy(self, busy: bool) -> None:
        state = ["disabled"] if busy else ["!disabled"]
        self.form.submit_button.state(state)
        self.browse_button.state(state)
        self.folder_button.state(state)
        self.form.cancel_button.state(["!disabled"])
        self.form.cancel_button.configure(text="Cancel" if busy else "Quit")
        self.quit_held = False

    def hold_quit(self) -> None:
        """Cancel has just become Quit under the pointer: keep it disabled until the pointer leaves
        it or QUIT_ARM_MS pass, so a double-click on Cancel does not quit."""
        self.quit_held = True
        self.form.cancel_button.state(["disabled"])
        self.root.after(QUIT_ARM_MS, self.arm_quit)

    def arm_quit(self) -> None:
        if self.quit_held and not self.busy():
            self.quit_held = False
            self.form.cancel_button.state(["!disabled"])
            self.status.emit("quit-armed")

    def announce(self, attempts: int = 250) -> None:
        """Once the window is on screen, log where its buttons are, so a test can click them as a person would."""
        if not self.root.winfo_viewable() and attempts > 0:
            self.root.after(20, self.announce, attempts - 1)  # not mapped yet: positions would be wrong
            return
        self.root.update_idletasks()
        buttons = {}
        for name, button in (("submit", self.form.submit_button), ("cancel", self.form.cancel_button),
                             ("browse", self.browse_button), ("force", self.force_button)):
            buttons[name] = [button.winfo_rootx() + button.winfo_width() // 2,
                             button.winfo_rooty() + button.winfo_height() // 2]
        self.status.emit("ready", title=self.root.title(), buttons=buttons,
                         values=self.form.values(), subprocess=self.options.subprocess)

    def on_configure(self, event: tk.Event) -> None:
        if event.widget is self.root and (event.width, event.height) != self.size:
            self.size = (event.width, event.height)
            self.status.emit("configure", width=event.width, height=event.height)

    # --- actions -------------------------------------------------------------------------------

    def request_from(self, values: dict[str, str], force: bool = False) -> Request | str:
        """The download the form asks for, or why it cannot be one (a one-line message)."""
        host = values[SERVER].strip()
        remote = values[FILE].strip()
        try:
            port = int(values[PORT].strip())
        except ValueError:
            port = 0
        if not host:
            return "Server is empty: type a host name or address"
        if not 0 < port < 65536:
            return f"Port must be a number from 1 to 65535, not {values[PORT].strip()!r}"
        if not remote:
            return "File is empty: type a path on the server, or use Browse"
        folder = os.path.expanduser(values[FOLDER].strip()) or os.getcwd()
        o = self.options
        return Request(remote, host, port, folder, o.limit_rate, o.timeout, force, o.token, o.tls, o.cafile)

    def start(self, values: dict[str, str]) -> None:
        if self.busy():
            return
        request = self.request_from(values, force=self.force.get())
        if isinstance(request, str):
            self.show_error(request)
            return
        settings.save(settings.Remembered(request.host, request.port, os.path.abspath(request.folder)))
        job_type = SubprocessDownload if self.options.subprocess else InProcessDownload
        self.job = job_type(request).start()
        self.cancelling = False
        self.set_busy(True)
        self.bar.configure(value=0)
        self.line.configure(text=f"Connecting to {request.host}:{request.port}...")
        self.status.emit("start", file=request.remote, host=request.host, port=request.port,
                         folder=request.folder, subprocess=self.options.subprocess)
        self.root.after(HEARTBEAT_MS, self.heartbeat, 1)

    def heartbeat(self, count: int) -> None:
        if not self.busy():
            return
        self.status.emit("tick", n=count)
        self.root.after(HEARTBEAT_MS, self.heartbeat, count + 1)

    def cancel(self) -> None:
        if self.job is None or self.cancelling:
            return
        self.cancelling = True
        self.job.cancel()
        self.form.cancel_button.state(["disabled"])
        self.line.configure(text="Cancelling...")
        self.status.emit("cancel-requested")

    def cancel_or_quit(self) -> None:
        if self.busy():
            self.cancel()
        else:
            self.quit()

    def quit(self) -> None:
        if self.job is not None:
            self.job.stop_now()
            self.job.join(CLOSE_WAIT_SECONDS)
            self.job = None
        self.status.emit("closed")
        self.status.close()
        self.root.destroy()

    def browse(self) -> None:
        if self.busy():
            return
        request = self.request_from({**self.form.values(), FILE: "-"})
        if isinstance(request, str):
            self.show_error(request)
            return
        self.status.emit("browse", host=request.host, port=request.port)
        BrowseDialog(self.root, request, self.picked, self.status)

    def picked(self, remote_path: str) -> None:
        self.form.set_value(FILE, remote_path)
        self.form.entries[FILE].focus_set()

    def choose_folder(self) -> None:
        chosen = filedialog.askdirectory(parent=self.root, initialdir=self.form.values()[FOLDER] or os.getcwd(),
                                         mustexist=True, title=f"{TITLE}: local folder")
        if chosen:
            self.form.set_value(FOLDER, chosen)

    # --- the worker's messages -----------------------------------------------------------------

    def poll(self) -> None:
        job = self.job
        if job is not None:
            messages = job.messages(MAX_MESSAGES_PER_POLL)
            latest = None
            for message in messages:
                if isinstance(message, Progressed):
                    latest = message  # only the newest is worth drawing
                elif isinstance(message, Connected):
                    self.show_connected()
                else:
                    if latest is not None:
                        self.show_progress(latest)
                        latest = None
                    self.finish(message)
                    break
            if latest is not None:
                self.show_progress(latest)
        self.root.after(POLL_MS, self.poll)

    def show_connected(self) -> None:
        request: Request | None = getattr(self.job, "request", None)
        where = f"{request.host}:{request.port}" if request is not None else "the server"
        if not self.cancelling:
            self.line.configure(text=f"Connected to {where}; waiting for the server's answer...")
        self.status.emit("connected")

    def show_progress(self, p: Progressed) -> None:
        percent = 100.0 * p.done / p.total if p.total > 0 else 0.0
        self.bar.configure(value=percent)
        if not self.cancelling:
            self.line.configure(text=format_progress(p))
        self.status.emit("progress", done=p.done, total=p.total, percent=round(percent, 1),
                         speed=round(p.speed), eta=p.eta)

    def finish(self, message: Finished | Failed | Stopped) -> None:
        request: Request | None = getattr(self.job, "request", None)
        self.job = None
        self.set_busy(False)
        if isinstance(message, Finished):
            self.bar.configure(value=100)
            size = f"{message.size} bytes" if message.size < 10_000 else \
                f"{human_size(message.size)} ({message.size} bytes)"
            check = "verified" if message.verified else "NOT verified (no digest)"
            if message.unchanged:
                what, how = "Already up to date:", f"{size}, {check}"
            else:
                resumed = f", resumed at {human_size(message.resumed_from)}" if message.resumed_from else ""
                what, how = "Downloaded", f"{size}{resumed}, {check}"
            warning = f" Warning: {message.warning}." if message.warning else ""
            self.line.configure(text=f"{what} {message.path}, {how}.{warning}")
            self.status.emit("done", path=message.path, size=message.size, verified=message.verified,
                             resumed_from=message.resumed_from, unchanged=message.unchanged, warning=message.warning)
            lines = [f"{what} {message.path}", f"{how} (xxh3-128)" if message.verified else how]
            self.show_info("\n".join([*lines, message.warning] if message.warning else lines))
        elif isinstance(message, Stopped):
            folder = request.folder if request is not None else ""
            self.line.configure(text=f"Cancelled. The partial copy (.part) is kept in {folder}: "
                                     "Submit again to resume.")
            self.hold_quit()
            self.status.emit("cancelled", folder=folder)
        else:
            self.line.configure(text=f"Failed: {message.message}")
            self.status.emit("error", message=message.message, during="download")
            self.show_error(message.message)

    # Dialogs run their own nested event loop; they are opened from a fresh after() callback so
    # poll() has finished and rescheduled itself first, and the heartbeat keeps going meanwhile.

    def show_error(self, message: str) -> None:
        self.open_dialog(messagebox.showerror, ERROR_TITLE, message)

    def show_info(self, message: str) -> None:
        self.open_dialog(messagebox.showinfo, DONE_TITLE, message)

    def open_dialog(self, show, title: str, message: str) -> None:
        def run_dialog() -> None:
            self.status.emit("dialog", title=title, message=message)
            show(title, message, parent=self.root)
            self.status.emit("dialog-closed", title=title)

        self.root.after(0, run_dialog)


def run(options: WindowOptions) -> int:
    root = tk.Tk()
    GetfileWindow(root, options)
    root.mainloop()
    return 0
