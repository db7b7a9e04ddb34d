"""docs/writing-a-service.md shows the example package's code, all of it, in order: the blocks
titled with a file's path, read one after the other, are that file (blank lines aside)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
TUTORIAL = REPO / "docs" / "writing-a-service.md"
EXAMPLE = REPO / "examples" / "minredis"
BLOCK = re.compile(r'```\w+ title="([^"]+)"\n(.*?)```', re.S)


def shown() -> dict[str, str]:
    files: dict[str, list[str]] = {}
    for path, code in BLOCK.findall(TUTORIAL.read_text()):
        files.setdefault(path, []).append(code)
    return {path: "\n".join(parts) for path, parts in files.items()}


def without_blank_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_every_source_file_of_the_package_is_in_the_tutorial():
    sources = {str(path.relative_to(EXAMPLE)) for path in (EXAMPLE / "src").rglob("*.py")} | {"pyproject.toml"}
    assert sources <= set(shown())


@pytest.mark.parametrize("path", sorted(shown()))
def test_the_tutorials_code_is_the_packages_code(path):
    assert without_blank_lines(shown()[path]) == without_blank_lines((EXAMPLE / path).read_text())
