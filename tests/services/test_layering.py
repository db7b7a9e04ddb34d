"""services/ is sans-IO: it imports nothing that does I/O or reads a clock (trio checks its
layering the same way)."""

from __future__ import annotations

import ast
from pathlib import Path

import sockkit.services

FORBIDDEN = {"socket", "selectors", "select", "asyncio", "threading", "time", "signal", "subprocess", "ssl", "uvloop"}
#: Files in services/ that are command-line glue, not protocol logic.
GLUE = {"echo_spec.py", "spec.py"}


def test_services_import_no_io_modules():
    root = Path(sockkit.services.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        if path.name in GLUE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {name}" for name in names if name.split(".")[0] in FORBIDDEN]
    assert offenders == []
