"""sockkit: socket servers and clients, one service under every concurrency model.

The public API is exactly ``__all__`` below (and ``sockkit.testing.__all__``, the test kit); it is
listed in docs/api.md and a test fails if a name disappears. Every other module and name is
internal and may change. Names load on first use, so ``import sockkit`` (and every ``sockkit``
command) pays for none of them until asked.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "CLOSE",
    "Action",
    "Close",
    "Connection",
    "Needs",
    "Peer",
    "Reply",
    "RunningServer",
    "Send",
    "SendFile",
    "Service",
    "Wait",
    "__version__",
    "background",
    "serve",
]

#: Where each public name lives.
_HOMES = {
    "CLOSE": "sockkit.services.actions",
    "Action": "sockkit.services.actions",
    "Close": "sockkit.services.actions",
    "Connection": "sockkit.services.actions",
    "Needs": "sockkit.services.actions",
    "Peer": "sockkit.services.actions",
    "Reply": "sockkit.services.actions",
    "Send": "sockkit.services.actions",
    "SendFile": "sockkit.services.actions",
    "Service": "sockkit.services.actions",
    "Wait": "sockkit.services.actions",
    "RunningServer": "sockkit.testing",
    "background": "sockkit.api",
    "serve": "sockkit.api",
}

if TYPE_CHECKING:
    from sockkit.api import background, serve
    from sockkit.services.actions import (
        CLOSE,
        Action,
        Close,
        Connection,
        Needs,
        Peer,
        Reply,
        Send,
        SendFile,
        Service,
        Wait,
    )
    from sockkit.testing import RunningServer


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'sockkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
