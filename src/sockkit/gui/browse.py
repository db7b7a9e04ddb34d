"""The Browse dialog: the server's files (getfile ``LIST1``), one directory at a time, to pick from.

Listing runs in a worker thread (``jobs.Listing``) and the dialog polls it, so a slow or dead
server never freezes the window. Names come from the server: they are shown with control
characters escaped, but the path handed back is the real one, so it can be requested as is.
"""

from __future__ import annotations

import tkinter as tk
from collections.abc import Callable
from tkinter import messagebox, ttk

from sockkit.clients.localfs import human_size
from sockkit.errors import printable
from sockkit.gui.jobs import Failed, Listed, Listing, Request
from sockkit.gui.status import StatusLog
from sockkit.protocols.getfile import Entry

POLL_MS = 50
ROOT = "."
ERROR_TITLE = "sockkit getfile: error"


def join(directory: str, name: str) -> str:
    return name if directory in ("", ROOT) else f"{directory.rstrip('/')}/{name}"


def parent_of(directory: str) -> str:
    head, _, _ = directory.rstrip("/").rpartition("/")
    return head or ROOT


def rows_for(directory: str, entries: list[Entry]) -> list[tuple[str, str, str]]:
    """(kind, remote path, text shown) per row: ``..`` first below the root, then folders, then files."""
    rows = [("up", parent_of(directory), "../")] if directory not in ("", ROOT) else []
    ordered = sorted(entries, key=lambda e: (e.kind != "d", e.path))
    for entry in ordered:
        shown = printable(entry.path)
        if entry.kind == "d":
            rows.append(("d", join(directory, entry.path), shown + "/"))
        else:
            rows.append(("f", join(directory, entry.path), f"{shown}    ({human_size(entry.size)})"))
    return rows


class BrowseDialog:
    """A Toplevel listing the server ``request`` names; ``on_pick(remote_path)`` gets the chosen file."""

    def __init__(self, parent: tk.Misc, request: Request, on_pick: Callable[[str], None],
                 status: StatusLog, title: str = "sockkit getfile: browse", start: str = ROOT) -> None:
        self.request, self.on_pick, self.status = request, on_pick, status
        self.host, self.port = request.host, request.port
        self.window = tk.Toplevel(parent)
        self.window.title(f"{title} {self.host}:{self.port}")
        owner = parent.winfo_toplevel()
        self.window.transient(owner)
        # Offset from the main window, so both stay visible (a window manager may still move it).
        self.window.geometry(f"+{owner.winfo_rootx() + 60}+{owner.winfo_rooty() + 80}")
        frame = ttk.Frame(self.window, padding=8)
        frame.pack(expand=True, fill=tk.BOTH)
        self.where = ttk.Label(frame, text="")
        self.where.pack(side=tk.TOP, anchor=tk.W)
        body = ttk.Frame(frame)
        body.pack(side=tk.TOP, expand=True, fill=tk.BOTH, pady=4)
        self.listbox = tk.Listbox(body, width=44, height=10, selectmode=tk.BROWSE, activestyle="dotbox")
        scroll = ttk.Scrollbar(body, orient=tk.VERTICAL, command=self.listbox.yview)
        self.listbox.configure(yscrollcommand=scroll.set)
        self.listbox.pack(side=tk.LEFT, expand=True, fill=tk.BOTH)
        scroll.pack(side=tk.RIGHT, fill=tk.Y)
        buttons = ttk.Frame(frame)
        buttons.pack(side=tk.TOP, anchor=tk.E)
        ttk.Button(buttons, text="Cancel", command=self.close).pack(side=tk.RIGHT)
        self.open_button = ttk.Button(buttons, text="Open", command=self.activate)
        self.open_button.pack(side=tk.RIGHT, padx=(0, 6))
        self.listbox.bind("<Double-Button-1>", lambda _e: self.activate())
        self.window.bind("<Return>", lambda _e: self.activate())
        self.window.bind("<Escape>", lambda _e: self.close())
        self.window.protocol("WM_DELETE_WINDOW", self.close)
        self.rows: list[tuple[str, str, str]] = []
        self.job: Listing | None = None
        self.after_id: str | None = None
        self.listbox.focus_set()
        self.show(start)

    def show(self, directory: str) -> None:
        """Ask for a listing; the answer arrives through ``poll``."""
        if self.job is not None:
            self.job.cancel()  # its late answer is ignored: the queue goes with the job
        self.where.configure(text=f"{self.host}:{self.port}  {directory}/  (listing...)")
        self.listbox.delete(0, tk.END)
        self.rows = []
        self.job = Listing(self.request, directory).start()
        if self.after_id is None:
            self.after_id = self.window.after(POLL_MS, self.poll)

    def poll(self) -> None:
        self.after_id = None
        job = self.job
        if job is None:
            return
        for message in job.messages(limit=10):
            if isinstance(message, Listed):
                self.fill(message.directory, message.entries)
                self.job = None
            elif isinstance(message, Failed):
                self.job = None
                self.fail(message.message)
                return
        if self.job is not None:
            self.after_id = self.window.after(POLL_MS, self.poll)

    def fill(self, directory: str, entries: list[Entry]) -> None:
        self.rows = rows_for(directory, entries)
        self.where.configure(text=f"{self.host}:{self.port}  {directory}/")
        for _kind, _path, shown in self.rows:
            self.listbox.insert(tk.END, shown)
        if self.rows:
            self.listbox.selection_set(0)
            self.listbox.activate(0)
        self.listbox.focus_force()  # keyboard users (and xdotool) can move and pick at once
        self.status.emit("listing", directory=directory, items=[shown for _k, _p, shown in self.rows])

    def fail(self, message: str) -> None:
        self.status.emit("error", message=message, during="browse")
        parent = self.window.master
        self.close()
        self.status.emit("dialog", title=ERROR_TITLE, message=message)
        messagebox.showerror(ERROR_TITLE, message, parent=parent)
        self.status.emit("dialog-closed", title=ERROR_TITLE)

    def activate(self) -> None:
        chosen = self.listbox.curselection()
        if not chosen or self.job is not None:
            return
        kind, path, _shown = self.rows[chosen[0]]
        if kind == "f":
            self.status.emit("picked", path=path)
            self.close()
            self.on_pick(path)
        else:
            self.show(path)

    def close(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self.job = None
        if self.after_id is not None:
            self.window.after_cancel(self.after_id)
            self.after_id = None
        self.window.destroy()
