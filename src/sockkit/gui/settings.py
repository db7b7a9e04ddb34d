"""What the getfile window remembers between runs: the last server, port and local folder.

Kept in ``$XDG_CONFIG_HOME/sockkit/gui.json`` (``~/.config`` when unset). A missing, unreadable or
malformed file means "nothing remembered", never a window that refuses to open; a write goes to a
temporary file renamed into place, so a crash mid-write cannot leave half a file behind.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from sockkit.protocols.getfile import DEFAULT_PORT

DEFAULT_HOST = "127.0.0.1"
#: A settings file larger than this is not ours (or is damaged): ignored rather than read.
MAX_SETTINGS_BYTES = 64 * 1024


@dataclass
class Remembered:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    folder: str = ""  # empty: the current directory when the window opens


def settings_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "sockkit" / "gui.json"


def load(path: Path | None = None) -> Remembered:
    path = path or settings_path()
    try:
        if path.stat().st_size > MAX_SETTINGS_BYTES:
            return Remembered()
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return Remembered()
    if not isinstance(data, dict):
        return Remembered()
    found = Remembered()
    if isinstance(data.get("host"), str) and data["host"]:
        found.host = data["host"]
    if isinstance(data.get("port"), int) and 0 < data["port"] < 65536:
        found.port = data["port"]
    if isinstance(data.get("folder"), str):
        found.folder = data["folder"]
    return found


def save(remembered: Remembered, path: Path | None = None) -> None:
    """Best effort: a read-only home must not stop a download, so failures are swallowed."""
    path = path or settings_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(asdict(remembered), indent=2) + "\n", encoding="utf-8")
        os.replace(temporary, path)
    except OSError:
        pass
