"""The two registries: services and models. They are the only places that change when a
service or a model is added; entries are ``module:attribute`` so nothing is imported until used
(the thread model never loads asyncio, a client never loads a server).
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sockkit.services.actions import Service

SERVICES: dict[str, str] = {
    "echo": "sockkit.services.echo_spec:SPEC",
    "getfile": "sockkit.services.getfile.spec:SPEC",
}

MODELS: dict[str, str] = {
    "sequential": "sockkit.models.sequential:serve",
    "fork": "sockkit.models.forking:serve_fork",
    "fork-signal": "sockkit.models.forking:serve_fork_signal",
    "thread": "sockkit.models.threaded:serve_threads",
    "socketserver": "sockkit.models.stdlib_socketserver:serve",
    "pool": "sockkit.models.threaded:serve_pool",
    "select": "sockkit.models.selector:serve",
    "asyncio": "sockkit.models.event_loop:serve_asyncio",
    "uvloop": "sockkit.models.event_loop:serve_uvloop",
    "prefork": "sockkit.models.prefork:serve",
}

#: Models that cannot carry TLS (non-blocking TLS in a hand-written select loop is left undone).
MODELS_WITHOUT_TLS = frozenset({"select"})

#: One line describing each model, for ``--help`` and the README.
MODEL_SUMMARIES = {
    "sequential": "one client at a time",
    "fork": "a process per client; children reaped with waitpid(WNOHANG)",
    "fork-signal": "a process per client; SIGCHLD set to SIG_IGN so no zombies",
    "thread": "a thread per client",
    "socketserver": "the standard library's socketserver (ThreadingTCPServer; --fork: ForkingTCPServer)",
    "pool": "a bounded pool of worker threads (--workers N)",
    "select": "one thread multiplexing every socket with epoll (poll elsewhere); buffered non-blocking writes",
    "asyncio": "asyncio Protocols on asyncio's own event loop",
    "uvloop": "asyncio Protocols on uvloop's event loop",
    "prefork": "N worker processes sharing the port with SO_REUSEPORT, each on uvloop/asyncio",
}


@dataclass(frozen=True)
class ServiceSpec:
    """How the command line builds a service."""

    name: str
    help: str
    default_port: int
    add_arguments: Callable[[argparse.ArgumentParser], None]
    build: Callable[[argparse.Namespace], Service]
    #: None: the fastest model on this machine.
    default_model: str | None = None


def load(ref: str) -> Any:
    module, _, attribute = ref.partition(":")
    return getattr(importlib.import_module(module), attribute)


def fastest_model() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def service_spec(name: str) -> ServiceSpec:
    return load(SERVICES[name])
