"""What ``sockkit bench models`` can measure: sockkit's models and reference servers with no sockkit code.

Every target is a raw echo server started as its own process on a free port, ready when it prints
``listening on HOST:PORT``. Peers live in ``benchmarks/peers/`` (outside the package: they must not
import sockkit) and are looked up next to the source tree or in the current directory.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from sockkit import catalog

#: The glibc tuning sockkit's servers apply to themselves (procs.keep_receive_buffers_on_heap), given
#: to the Python peers through the environment so the comparison is about the serving loop.
PEER_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "1048576", "MALLOC_TRIM_THRESHOLD_": "4194304"}


@dataclass(frozen=True)
class Target:
    name: str
    kind: str  # "model" or "peer"
    #: The command without --port/--host; scenario options are added by ``command``.
    base: tuple[str, ...]
    #: The peer a model is compared with ("" for peers and for models with no like-for-like peer).
    peer: str = ""
    env: dict[str, str] = field(default_factory=dict)
    #: Only peers that implement --delay-each can run the slow-request scenario (none do: they are bare echoes).
    delay: bool = False

    def command(self, *, delay: float = 0.0, max_connections: int = 0, workers: int = 0) -> list[str]:
        args = [*self.base, "--port", "0"]
        if self.kind == "model":
            if delay:
                args += ["--delay-each", f"{delay:g}"]  # per request: a slow request, not a slow connect
            if max_connections:
                args += ["--max-connections", str(max_connections)]
            if workers and catalog.MODELS[self.name].workers == "threads":
                args += ["--workers", str(workers)]
        return args


def peers_dir() -> Path | None:
    here = Path(__file__).resolve()
    for candidate in (here.parents[3] / "benchmarks" / "peers", Path.cwd() / "benchmarks" / "peers"):
        if (candidate / "asyncio_protocol.py").exists():
            return candidate
    return None


def model_targets() -> list[Target]:
    return [Target(name, "model", (sys.executable, "-m", "sockkit", "serve", "echo", "--raw", "--quiet",
                                   "--model", name), peer=model.bench_peer, delay=True)
            for name, model in catalog.MODELS.items()]


def peer_targets() -> list[Target]:
    folder = peers_dir()
    if folder is None:
        return []
    env = dict(PEER_MALLOC_ENV)
    py = sys.executable
    peers = [
        Target("bare-uvloop", "peer", (py, str(folder / "asyncio_protocol.py"), "--loop", "uvloop"), env=env),
        Target("bare-asyncio", "peer", (py, str(folder / "asyncio_protocol.py"), "--loop", "asyncio"), env=env),
        Target("asyncio-streams", "peer", (py, str(folder / "asyncio_streams.py")), env=env),
        Target("threading-tcpserver", "peer", (py, str(folder / "threading_tcpserver.py")), env=env),
        Target("bare-selectors", "peer", (py, str(folder / "selectors_loop.py")), env=env),
    ]
    if hasattr(os, "sched_setaffinity"):
        # The same on one CPU, as sockkit's thread models run by default (serve --cpus): no target's
        # peer; shown so the tables say how much of the thread models' lead is the pinning alone.
        peers.append(Target("threading-tcpserver-1cpu", "peer",
                            (py, str(folder / "threading_tcpserver.py"), "--one-cpu"), env=env))
    node = shutil.which("node")
    if node:
        peers.append(Target("node-net", "peer", (node, str(folder / "node_net.js"))))
    return peers


def all_targets() -> dict[str, Target]:
    return {t.name: t for t in [*model_targets(), *peer_targets()]}


def environment(target: Target) -> dict[str, str]:
    env = dict(os.environ)
    env.update(target.env)
    return env
