"""The reusable form: the chapter's self-test driven with real keystrokes, and the class used directly."""

from __future__ import annotations

import subprocess

import pytest

tk = pytest.importorskip("tkinter", reason="Python was built without Tk")

from sockkit.gui.form import DynamicForm, Form  # noqa: E402  (needs tkinter)


def test_form_self_test_prints_typed_values_and_stays_open(launch):
    """`sockkit form`: Name/Age/Job typed, Return prints one `Label => value` line each; the form stays open;
    Escape (Cancel) closes it."""
    gui = launch("form", status=False)
    gui.focus(gui.find("^sockkit form$"))
    gui.type("Bob")
    gui.key("Tab")
    gui.type("38")
    gui.key("Tab")
    gui.type("Educator, Entertainer")
    gui.key("Return")
    assert gui.wait_for_stdout(3) == ["Name => Bob", "Age => 38", "Job => Educator, Entertainer"]
    assert gui.proc.poll() is None, "the canned form must stay open after a submit"
    gui.key("Escape")  # Cancel
    assert gui.wait() == 0


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
    assert out.splitlines() == ["Enter field names: Field values...", "Name => mel", "Email => mel@example.org"]


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
    """The default on_submit prints `Label => value`; the default Cancel destroys the form's own toplevel."""
    top = tk.Toplevel(tk_root)
    form = Form(["Name"], top)
    form.set_value("Name", "Bob")
    form.submit()
    assert capsys.readouterr().out == "Name => Bob\n"
    form.cancel()
    assert not top.winfo_exists()


def test_dynamic_form_asks_through_the_given_function(tk_root, capsys):
    """DynamicForm(ask=...) builds its fields from the answer; its submit prints a heading and closes."""
    top = tk.Toplevel(tk_root)
    form = DynamicForm(parent=top, ask=lambda prompt: "Web Locale")
    assert form.labels == ["Web", "Locale"]
    form.set_value("Locale", "Colorado")
    form.submit()
    assert capsys.readouterr().out == "Field values...\nWeb => \nLocale => Colorado\n"


def test_a_form_needs_fields(tk_root):
    with pytest.raises(ValueError):
        Form([], tk_root)
