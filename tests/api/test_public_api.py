"""The public API is what docs/api.md lists, nothing disappears from it, and everything else is
private by name."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from importlib import import_module, resources
from pathlib import Path

import pytest

import sockkit
import sockkit.testing
from sockkit import pytest_plugin

API_DOC = Path(__file__).parents[2] / "docs" / "api.md"

#: The promise. Adding a name is fine (add it here and to docs/api.md); removing one breaks users.
PUBLIC = {
    "sockkit": {"CLOSE", "Action", "Close", "Connection", "Needs", "Peer", "Reply", "RunningServer", "Send",
                "SendFile", "Service", "Wait", "__version__", "background", "serve"},
    "sockkit.testing": {"LISTENING", "MODELS", "PARALLEL_MODELS", "RunningServer", "alive", "cpu_seconds",
                        "descendants", "exchange_line", "ipv6_available", "models_for", "open_fds", "read_line",
                        "reload", "running", "sockkit_command", "start_server", "status_field", "stop_pid",
                        "worker_options", "zombies_of"},
}
FIXTURES = {"sockkit_service", "sockkit_options", "sockkit_model", "sockkit_server", "sockkit_certificate"}
#: Parameters each callable keeps (new ones may be added, with defaults).
PARAMETERS = {
    sockkit.serve: ["service", "model", "host", "port", "tls_cert", "tls_key", "cpus", "insecure", "quiet", "limits"],
    sockkit.background: ["service", "model", "host", "port", "tls_cert", "tls_key", "cpus", "insecure", "quiet",
                         "timeout", "limits"],
    sockkit.Needs: ["shared_state", "tls"],
    sockkit.Send: ["data"],
    sockkit.SendFile: ["file", "offset", "count"],
    sockkit.Wait: ["seconds"],
    sockkit.Peer: ["host", "port"],
    sockkit.testing.start_server: ["args", "timeout", "env", "cwd", "command"],
    sockkit.testing.exchange_line: ["port", "message", "host", "timeout"],
}
MEMBERS = {sockkit.Service: {"name", "connect", "busy_reply"}, sockkit.Connection: {"start", "receive", "close"},
           sockkit.RunningServer: {"host", "port", "ports", "address", "pid", "lines", "wait_for_log", "stop", "kill"}}


@pytest.mark.parametrize("module", PUBLIC)
def test_every_public_name_is_there(module):
    imported = import_module(module)
    assert PUBLIC[module] <= set(imported.__all__), "a public name disappeared from __all__"
    for name in PUBLIC[module]:
        assert getattr(imported, name) is not None


def test_the_promised_parameters_and_members_are_there():
    for function, names in PARAMETERS.items():
        assert set(names) <= set(inspect.signature(function).parameters), function
    for kind, names in MEMBERS.items():
        assert all(hasattr(kind, name) or name in kind.__annotations__ for name in names), kind


def test_the_fixtures_are_there():
    assert all(hasattr(getattr(pytest_plugin, name), "_pytestfixturefunction") or
               "fixture" in type(getattr(pytest_plugin, name)).__name__.lower() for name in FIXTURES)


def documented(section: str) -> set[str]:
    text = API_DOC.read_text()
    table = text.split(f"<!-- public: {section} -->")[1].split("<!-- end public -->")[0]
    names = set()
    for row in table.splitlines()[3:]:
        first = row.split("|")[1]
        names |= {re.match(r"\w+", code).group() for code in re.findall(r"`([^`]+)`", first)}
    return names


@pytest.mark.parametrize("module", PUBLIC)
def test_the_docs_list_exactly_the_public_names(module):
    assert documented(module) == set(import_module(module).__all__)


def test_the_docs_list_exactly_the_fixtures():
    assert documented("fixtures") == FIXTURES


@pytest.mark.parametrize("module", PUBLIC)
def test_everything_else_is_private_by_name(module):
    """A name defined in the module and not in ``__all__`` starts with an underscore."""
    imported = import_module(module)
    stray = [name for name, value in vars(imported).items()
             if not name.startswith("_") and name not in imported.__all__ and not inspect.ismodule(value)
             and getattr(value, "__module__", module) == module
             and name not in ("annotations", "TYPE_CHECKING")]
    assert stray == []


def test_import_sockkit_loads_nothing_else():
    """``import sockkit`` (which every command does) pays for no public name until one is used."""
    code = "import sys, sockkit; print(sorted(m for m in sys.modules if m.startswith('sockkit.')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_typed():
    assert resources.files("sockkit").joinpath("py.typed").is_file()
    for name in PUBLIC["sockkit"] - {"__version__", "CLOSE", "Action", "Reply"}:
        value = getattr(sockkit, name)
        if inspect.isfunction(value):
            assert "return" in value.__annotations__, name
