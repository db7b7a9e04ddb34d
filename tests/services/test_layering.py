"""What a service may do, checked on the source (trio checks its layering the same way).

The rule, as it really is: a service never touches the network, a thread, a process, a signal or a
clock -- the models do all of that, and the clock is handed in. File-system I/O is allowed only where
files are what the service serves (``services/getfile/``: it opens, lists and writes files under its
root on descriptors it owns); the echo service and the action contract do no I/O at all. From sockkit
itself a service imports only ``sockkit.services`` and ``sockkit.protocols`` (pure parsing and
formatting, held to the same rules), so nothing with I/O comes in by way of a sockkit module either;
the file service may also use sockkit's file helpers (``sockkit.ofd``, ``sockkit.writeback``).
The two ``*spec.py`` files are exempt: command-line glue that builds a service from parsed options
(they read the clock and the environment and make the shared records before any fork).
"""

from __future__ import annotations

import ast
from pathlib import Path

import sockkit.services

ROOT = Path(sockkit.services.__file__).parent
PROTOCOLS = ROOT.parent / "protocols"
#: What a service may import from sockkit: other services, and the wire formats.
PURE_SOCKKIT = ("sockkit.services", "sockkit.protocols")
#: sockkit's own file helpers, which count as file I/O (allowed only under FILE_SERVICES): records shared
#: across processes in a memfd under OFD locks, and early writeback (sync_file_range) of uploads.
SOCKKIT_FILE_IO = {"sockkit.ofd", "sockkit.writeback"}
#: Reading the clock by way of datetime (``datetime.now()``, ``date.today()``): the clock is handed in.
CLOCK_CALLS = {"now", "utcnow", "today"}
#: Modules (and their submodules) that would bring in the network, concurrency, process control or a
#: clock. (``http`` itself is allowed: ``http.HTTPStatus`` is only names and numbers.)
FORBIDDEN = {"socket", "selectors", "select", "asyncio", "threading", "multiprocessing", "concurrent", "time",
             "signal", "subprocess", "ssl", "uvloop", "http.client", "http.server", "urllib.request"}
#: ``os`` functions that are the models' business, not a service's (processes, signals, the network's sendfile).
_VARIANTS = ("l", "le", "lp", "lpe", "v", "ve", "vp", "vpe")
FORBIDDEN_OS = {"fork", "kill", "killpg", "waitpid", "wait", "system", "popen", "sendfile", "times",
                "sched_setaffinity", "set_blocking",
                *(f"exec{v}" for v in _VARIANTS), *(f"spawn{v}" for v in _VARIANTS)}
#: Modules that touch files, allowed only under FILE_SERVICES.
FILE_IO = {"os", "fcntl", "io", "shutil", "tempfile", "pathlib", "mmap"}
FILE_SERVICES = ROOT / "getfile"
#: Files in services/ that are command-line glue, not protocol logic: they build a service from the
#: parsed options and may read the clock or the environment.
GLUE = {"echo_spec.py", "spec.py"}


def modules_imported(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
    return names


def sources():
    for folder in (ROOT, PROTOCOLS):
        for path in sorted(folder.rglob("*.py")):
            if path.name not in GLUE:
                yield path, ast.parse(path.read_text())


def os_functions_used(tree: ast.AST) -> list[tuple[int, str]]:
    """``os.NAME`` attributes and ``from os import NAME`` names, with their lines."""
    used = [(node.lineno, node.attr) for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os"]
    used += [(node.lineno, alias.name) for node in ast.walk(tree)
             if isinstance(node, ast.ImportFrom) and node.module == "os" and not node.level for alias in node.names]
    return used


def clock_reads(tree: ast.AST) -> list[int]:
    """Lines calling ``now()``, ``utcnow()`` or ``today()`` on ``datetime`` or ``date`` (``datetime.datetime``
    too), not on an object that was handed the clock (``self.site.now()``)."""
    def named(node: ast.AST) -> str:
        return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""

    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr in CLOCK_CALLS and named(node.func.value) in ("datetime", "date")]


def test_services_import_no_network_concurrency_or_clock_modules():
    offenders = [f"{path.name}: {name}" for path, tree in sources()
                 for name in modules_imported(tree) if forbidden(name)]
    assert offenders == []


def forbidden(module: str) -> bool:
    parts = module.split(".")
    return any(".".join(parts[:n]) in FORBIDDEN for n in range(1, len(parts) + 1))


def test_services_call_no_process_or_network_functions_of_os():
    offenders = [f"{path.name}:{line}: os.{name}" for path, tree in sources()
                 for line, name in os_functions_used(tree) if name in FORBIDDEN_OS]
    assert offenders == []


def test_services_read_no_clock_through_datetime():
    offenders = [f"{path.name}:{line}" for path, tree in sources() for line in clock_reads(tree)]
    assert offenders == []


def test_services_import_from_sockkit_only_services_and_protocols():
    offenders = [f"{path.name}: {name}" for path, tree in sources() for name in modules_imported(tree)
                 if name.split(".")[0] == "sockkit" and not name.startswith(PURE_SOCKKIT)
                 and not (name in SOCKKIT_FILE_IO and FILE_SERVICES in path.parents)]
    assert offenders == []


def test_only_the_file_service_touches_files():
    offenders = []
    for path, tree in sources():
        if FILE_SERVICES in path.parents:  # (protocols/ is not under it: no files there either)
            continue
        offenders += [f"{path.name}: {name}" for name in modules_imported(tree)
                      if name.split(".")[0] in FILE_IO or name in SOCKKIT_FILE_IO]
        offenders += [f"{path.name}:{node.lineno}: open()" for node in ast.walk(tree)
                      if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open"]
    assert offenders == []


def test_the_checks_see_what_they_forbid():
    """The walkers find an import, an os call and an open() where they are (guards the checks above)."""
    tree = ast.parse("import socket\nfrom os import path\nos.fork()\nopen('x')\n")
    assert modules_imported(tree) == ["socket", "os"]
    sneaky = ast.parse("from os import fork\nfrom sockkit import ofd\nimport datetime\nt = datetime.now()\n"
                       "d = date.today()\nfine = self.site.now()\ne = datetime.datetime.now()\n")
    assert [name for _, name in os_functions_used(sneaky)] == ["fork"]
    assert clock_reads(sneaky) == [4, 5, 7]
    assert [n for n in modules_imported(sneaky) if not n.startswith(PURE_SOCKKIT)] == ["os", "sockkit", "datetime"]
    assert forbidden("socket") and forbidden("http.client") and forbidden("asyncio.events")
    assert not forbidden("http") and not forbidden("hmac")
    assert [n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)] == ["fork"]
