"""A reusable input form: labelled entries in a grid, Submit and Cancel, Return submits.

The chapter's ``Form`` and ``DynamicForm`` (Example 10-13), rebuilt: the grid keeps each label on
the row of its entry whatever the fonts, the hooks are plain callables so a window can *use* a
form instead of inheriting from it, and Cancel closes this form's own window (the chapter's
``Tk().quit()`` made a second, empty root window to do it). No networking here.
"""

from __future__ import annotations

import sys
import tkinter as tk
from collections.abc import Callable, Iterable
from tkinter import ttk

#: Entry width in characters: room for a host name or a path without making the window huge.
ENTRY_WIDTH = 40

Values = dict[str, str]


class Form:
    """Labels and entries on a grid inside ``parent``, with Submit and Cancel buttons.

    ``on_submit(values)`` runs on Submit or Return; ``on_cancel()`` on Cancel or Escape. Without
    them the form prints its values (one ``Label \\t=>\\t value`` line each, as the chapter's
    ``print key, '\\t=>\\t', value``) and Cancel closes its window.
    """

    def __init__(self, labels: Iterable[str], parent: tk.Misc | None = None, *,
                 defaults: Values | None = None, on_submit: Callable[[Values], None] | None = None,
                 on_cancel: Callable[[], None] | None = None) -> None:
        self.labels = list(labels)
        if not self.labels:
            raise ValueError("a form needs at least one field")
        self.master = parent if parent is not None else tk.Tk()
        self.submit_hook = on_submit
        self.cancel_hook = on_cancel
        self.frame = ttk.Frame(self.master, padding=8)
        self.frame.pack(side=tk.TOP, expand=True, fill=tk.BOTH)
        self.frame.columnconfigure(1, weight=1)  # entries take the extra width, labels do not
        self.entries: dict[str, ttk.Entry] = {}
        defaults = defaults or {}
        for row, label in enumerate(self.labels):
            ttk.Label(self.frame, text=label).grid(row=row, column=0, sticky=tk.W, padx=(0, 6), pady=2)
            entry = ttk.Entry(self.frame, width=ENTRY_WIDTH)
            entry.insert(0, defaults.get(label, ""))
            entry.grid(row=row, column=1, sticky=tk.EW, pady=2)
            # Tab selects a field's text; leaving it must not leave that highlight behind.
            entry.bind("<FocusOut>", lambda _e, widget=entry: widget.selection_clear())
            self.entries[label] = entry
        self.buttons = ttk.Frame(self.frame)
        self.buttons.grid(row=len(self.labels), column=0, columnspan=2, sticky=tk.E, pady=(6, 0))
        # Packed right to left: Submit ends up left of Cancel, as the chapter's form has them.
        self.cancel_button = ttk.Button(self.buttons, text="Cancel", command=self.cancel)
        self.cancel_button.pack(side=tk.RIGHT)
        self.submit_button = ttk.Button(self.buttons, text="Submit", command=self.submit)
        self.submit_button.pack(side=tk.RIGHT, padx=(0, 6))
        # Bound on the toplevel so Return works whichever entry (or button) has the focus.
        toplevel = self.frame.winfo_toplevel()
        toplevel.bind("<Return>", lambda _event: self.submit())
        toplevel.bind("<KP_Enter>", lambda _event: self.submit())
        toplevel.bind("<Escape>", lambda _event: self.cancel())
        first = self.entries[self.labels[0]]
        first.focus_set()
        first.select_range(0, tk.END)  # typing replaces a default, as Tab into a field does

    def values(self) -> Values:
        """What each field holds now, keyed by label, in the order the fields were given."""
        return {label: self.entries[label].get() for label in self.labels}

    def set_value(self, label: str, text: str) -> None:
        entry = self.entries[label]
        entry.delete(0, tk.END)
        entry.insert(0, text)

    def add_button(self, text: str, command: Callable[[], None]) -> ttk.Button:
        """Another button in the button row, left of the others."""
        button = ttk.Button(self.buttons, text=text, command=command)
        button.pack(side=tk.RIGHT, padx=(0, 6))
        return button

    def submit(self) -> None:
        # A disabled Submit button must also mean a dead Return key.
        if self.submit_button.instate(["disabled"]):
            return
        if self.submit_hook is not None:
            self.submit_hook(self.values())
        else:
            self.on_submit(self.values())

    def cancel(self) -> None:
        if self.cancel_hook is not None:
            self.cancel_hook()
        else:
            self.on_cancel()

    # Overridable defaults, for subclasses in the chapter's style.
    def on_submit(self, values: Values) -> None:
        print_values(values)

    def on_cancel(self) -> None:
        self.frame.winfo_toplevel().destroy()


class DynamicForm(Form):
    """A form whose field names are asked for first (``ask``: the console by default), gone after one submit."""

    def __init__(self, labels: Iterable[str] | None = None, parent: tk.Misc | None = None, *,
                 ask: Callable[[str], str] = input) -> None:
        if labels is None:
            labels = ask("Enter field names: ").split()
        super().__init__(labels, parent)

    def on_submit(self, values: Values) -> None:
        print("Field values...")
        print_values(values)
        self.on_cancel()


def print_values(values: Values, out=None) -> None:
    """One line per field, exactly as the chapter's form prints them: ``Name \\t=>\\t Bob``."""
    out = out or sys.stdout
    for label, value in values.items():
        print(label, "\t=>\t", value, file=out)
    out.flush()  # a pipe reader (a test, a script) sees each submit at once


#: The chapter's canned self-test fields.
SELF_TEST_FIELDS = ("Name", "Age", "Job")


def run_self_test(dynamic: bool = False, title: str = "sockkit form") -> int:
    """The chapter's self-test: canned fields that stay after a submit, or asked-for fields that go."""
    if dynamic:
        try:
            labels = input("Enter field names: ").split()
        except EOFError:
            labels = []
        if not labels:
            print("sockkit form: no field names given", file=sys.stderr)
            return 1
        root = tk.Tk()
        root.title(title)
        DynamicForm(labels, root)
    else:
        root = tk.Tk()
        root.title(title)
        Form(SELF_TEST_FIELDS, root)
    root.mainloop()
    return 0
