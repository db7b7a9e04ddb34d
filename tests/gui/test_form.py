"""The reusable form: the chapter's self-test driven with real keystrokes, and the class used directly."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.chapter.peers import PROGRAMS

tk = pytest.importorskip("tkinter", reason="Python was built without Tk")

from sockkit.gui.form import DynamicForm, Form  # noqa: E402  (needs tkinter)

#: 10.5.2.3: what the chapter's form self-test printed (Python 2's dict put Job first; the fields are
#: Name, Age, Job). ``print key, '\t=>\t', value`` puts a space on each side of the tabs.
BOOK_FORM_LINES = ["Job \t=>\t Educator, Entertainer", "Age \t=>\t 38", "Name \t=>\t Bob"]


def type_bob(gui, first_tab: bool = False) -> None:
    """Name, Age and Job as the book's session typed them, then Return."""
    if first_tab:
        gui.key("Tab")  # the chapter's form gives no entry the focus: Tab reaches the first
    gui.type("Bob")
    gui.key("Tab")
    gui.type("38")
    gui.key("Tab")
    gui.type("Educator, Entertainer")
    gui.key("Return")


def test_form_self_test_prints_typed_values_and_stays_open(launch):
    """`sockkit form`: Name/Age/Job typed, Return prints the chapter's `Name \t=>\t Bob` lines; the form
    stays open; Escape (Cancel) closes it."""
    gui = launch("form", status=False)
    gui.focus(gui.find("^sockkit form$"))
    type_bob(gui)
    assert gui.wait_for_stdout(3) == ["Name \t=>\t Bob", "Age \t=>\t 38", "Job \t=>\t Educator, Entertainer"]
    assert gui.proc.poll() is None, "the canned form must stay open after a submit"
    gui.key("Escape")  # Cancel
    assert gui.wait() == 0


def test_form_self_test_prints_what_the_chapters_form_prints(launch):
    """The same keystrokes into the chapter's own form.py (Example 10-13, Python 3) and into `sockkit form`:
    the same lines, byte for byte, and the book's lines (in Python 2's order)."""
    chapter = launch(status=False, program=[sys.executable, str(PROGRAMS / "form.py")])
    chapter.focus(chapter.find("^tk$"))  # the default root the chapter's Frame(None) makes
    type_bob(chapter, first_tab=True)
    theirs = chapter.wait_for_stdout(3)
    ours = launch("form", status=False)
    ours.focus(ours.find("^sockkit form$"))
    type_bob(ours)
    assert ours.wait_for_stdout(3) == theirs
    assert sorted(theirs) == sorted(BOOK_FORM_LINES)


def test_dynamic_form_asks_for_fields_then_goes_away_after_submit(launch):
    """`sockkit form --dynamic`: field names read from the console, values printed once, then the window closes."""
    gui = launch("form", "--dynamic", stdin=subprocess.PIPE, status=False)
    gui.proc.stdin.write("Name Email\n")
    gui.proc.stdin.close()
    gui.focus(gui.find("^sockkit form$"))
    gui.type("mel")
    gui.key("Tab")
    gui.type("mel@example.org")
    gui.key("Return")
    assert gui.wait() == 0
    out, _err = gui.output()
    assert out.splitlines() == ["Enter field names: Field values...", "Name \t=>\t mel", "Email \t=>\t mel@example.org"]


@pytest.fixture
def tk_root(screen):
    root = tk.Tk()
    try:
        yield root
    finally:
        root.destroy()


def test_form_lays_out_labels_in_order_and_reports_values(tk_root):
    """values() keeps the labels' order; defaults fill the entries; set_value replaces a field."""
    form = Form(["Server", "Port"], tk_root, defaults={"Port": "50001"})
    assert form.values() == {"Server": "", "Port": "50001"}
    form.set_value("Server", "localhost")
    assert form.values() == {"Server": "localhost", "Port": "50001"}
    rows = {int(w.grid_info()["row"]) for w in form.entries.values()}
    assert rows == {0, 1}


def test_submit_hook_gets_values_and_a_disabled_submit_ignores_return(tk_root):
    """on_submit(values) runs on submit(); with Submit disabled, submit() (Return's action) does nothing."""
    got = []
    form = Form(["A"], tk_root, on_submit=got.append)
    form.set_value("A", "x")
    form.submit()
    form.submit_button.state(["disabled"])
    form.submit()
    assert got == [{"A": "x"}]


def test_form_without_hooks_prints_and_cancel_closes_its_window(tk_root, capsys):
    """The default on_submit prints `Label \\t=>\\t value`; the default Cancel destroys the form's own toplevel."""
    top = tk.Toplevel(tk_root)
    form = Form(["Name"], top)
    form.set_value("Name", "Bob")
    form.submit()
    assert capsys.readouterr().out == "Name \t=>\t Bob\n"
    form.cancel()
    assert not top.winfo_exists()


def test_dynamic_form_asks_through_the_given_function(tk_root, capsys):
    """DynamicForm(ask=...) builds its fields from the answer; its submit prints a heading and closes."""
    top = tk.Toplevel(tk_root)
    form = DynamicForm(parent=top, ask=lambda prompt: "Web Locale")
    assert form.labels == ["Web", "Locale"]
    form.set_value("Locale", "Colorado")
    form.submit()
    assert capsys.readouterr().out == "Field values...\nWeb \t=>\t \nLocale \t=>\t Colorado\n"


def test_a_form_needs_fields(tk_root):
    with pytest.raises(ValueError):
        Form([], tk_root)
