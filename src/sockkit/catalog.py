"""The two registries: services and models. They are the only places that change when a
service or a model is added; entries name ``module:attribute`` so nothing is imported until used
(the thread model never loads asyncio, a client never loads a server).

Rule: whatever needs to know something about the models -- ``serve``'s choices and help, CPU
pinning, TLS refusal, the tests' model lists, the reliability suite, the benchmarks -- reads it
from a ``Model`` entry's traits here, never from a list of names of its own.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sockkit.services.actions import NEEDS_NOTHING, Needs, Service

SERVICES: dict[str, str] = {
    "echo": "sockkit.services.echo_spec:SPEC",
    "getfile": "sockkit.services.getfile.spec:SPEC",
}


@dataclass(frozen=True)
class Model:
    """One server model: where its entry point is, one line about it, and what it is like.

    Every model module's entry point is ``serve(server: Server, **options) -> None``; ``options``
    tell two models sharing a module apart (fork and fork-signal, asyncio and uvloop).
    """

    name: str
    #: ``module:function`` of the entry point.
    serve: str
    summary: str
    #: Clients are threads of one process, taking turns on its one GIL.
    threads: bool = False
    #: Clients are served in forked processes: one per client (fork), or a few workers (prefork).
    forks: bool = False
    #: One thread multiplexes many clients: an idle client costs a few KiB, not a thread or a process.
    event_loop: bool = False
    #: Serves more than one client at a time.
    concurrent: bool = True
    #: Carries TLS (``--tls-cert``/``--tls-key``).
    tls: bool = True
    #: Listens with SO_REUSEPORT (each worker process binds its own socket).
    reuse_port: bool = False
    #: ``--cpus auto`` keeps it on one CPU (threads sharing a GIL only gain hand-offs from a second);
    #: never under TLS, whose encryption runs outside the GIL.
    pin_cpu: bool = False
    #: What ``--workers N`` counts for it: "threads" (each holds one client at a time), "processes"
    #: (each serves many) or "" (it takes no --workers).
    workers: str = ""
    #: ``--fork`` turns it into a process per client (socketserver: ForkingTCPServer).
    fork_option: bool = False
    #: Keyword options its entry point is called with.
    options: tuple[tuple[str, Any], ...] = ()
    #: The reference server ``sockkit bench models`` holds it to (benchmarks/peers).
    bench_peer: str = ""

    @property
    def shares_memory(self) -> bool:
        """All its clients live in one process, so a service's state is shared among them (a room,
        a store). False where clients are spread over forked processes, each with its own copy."""
        return not self.forks

    @property
    def fork_per_client(self) -> bool:
        """Each client gets a process of its own (fork, fork-signal); such a parent starts no thread."""
        return self.forks and self.workers != "processes"

    def configured(self, *, fork: bool = False) -> Model:
        """These traits as run with ``--fork`` (only a model with ``fork_option`` changes)."""
        if not (fork and self.fork_option):
            return self
        return dataclasses.replace(self, threads=False, forks=True, pin_cpu=False)

    def run(self, server: Any) -> None:
        """Serve ``server`` (a ``models.settings.Server``) until it is stopped."""
        load(self.serve)(server, **dict(self.options))


MODELS: dict[str, Model] = {model.name: model for model in [
    Model("sequential", "sockkit.models.sequential:serve", "one client at a time",
          concurrent=False, bench_peer="threading-tcpserver"),
    Model("fork", "sockkit.models.forking:serve", "a process per client; children reaped with waitpid(WNOHANG)",
          forks=True, options=(("auto_reap", False),), bench_peer="threading-tcpserver"),
    Model("fork-signal", "sockkit.models.forking:serve", "a process per client; SIGCHLD set to SIG_IGN so no zombies",
          forks=True, options=(("auto_reap", True),), bench_peer="threading-tcpserver"),
    Model("thread", "sockkit.models.threaded:serve", "a thread per client",
          threads=True, pin_cpu=True, bench_peer="threading-tcpserver"),
    Model("socketserver", "sockkit.models.stdlib_socketserver:serve",
          "the standard library's socketserver (ThreadingTCPServer; --fork: ForkingTCPServer)",
          threads=True, pin_cpu=True, fork_option=True, bench_peer="threading-tcpserver"),
    Model("pool", "sockkit.models.pool:serve", "a bounded pool of worker threads (--workers N)",
          threads=True, pin_cpu=True, workers="threads", bench_peer="threading-tcpserver"),
    # Non-blocking TLS in a hand-written epoll loop is left undone.
    Model("select", "sockkit.models.selector:serve",
          "one thread multiplexing every socket with epoll (poll elsewhere); buffered non-blocking writes",
          event_loop=True, tls=False, bench_peer="bare-selectors"),
    Model("asyncio", "sockkit.models.event_loop:serve", "asyncio Protocols on asyncio's own event loop",
          event_loop=True, options=(("loop", "asyncio"),), bench_peer="bare-asyncio"),
    Model("uvloop", "sockkit.models.event_loop:serve", "asyncio Protocols on uvloop's event loop",
          event_loop=True, options=(("loop", "uvloop"),), bench_peer="bare-uvloop"),
    Model("prefork", "sockkit.models.prefork:serve",
          "N worker processes sharing the port with SO_REUSEPORT, each on uvloop/asyncio",
          forks=True, event_loop=True, reuse_port=True, workers="processes", bench_peer="bare-uvloop"),
]}


def models_where(**traits: Any) -> list[str]:
    """Names of the models whose traits all equal ``traits`` (``models_where(tls=False)``)."""
    return [name for name, model in MODELS.items()
            if all(getattr(model, trait) == value for trait, value in traits.items())]


def needs_of(service: Service) -> Needs:
    """What ``service`` declares it needs (nothing, if it declares nothing)."""
    return getattr(service, "needs", None) or NEEDS_NOTHING


def gives(model: Model, needs: Needs) -> bool:
    """``model`` (as configured) can give a service what it ``needs``."""
    return (model.shares_memory or not needs.shared_state) and (model.tls or not needs.tls)


def permitted_models(needs: Needs) -> list[str]:
    """The models that can run a service with these ``needs``, in the registry's order."""
    return [name for name, model in MODELS.items() if gives(model, needs)]


def refusal(service: Service, model: Model, *, tls: bool) -> str | None:
    """The sentence refusing to run ``service`` under ``model`` (as configured: ``configured(fork=)``),
    or None if it can; ``tls``: a certificate was given."""
    needs = needs_of(service)
    names = [f"{name} without --fork" if MODELS[name].fork_option and model.forks and name == model.name else name
             for name in permitted_models(needs)]
    instead = ", ".join(names[:-1]) + " or " + names[-1]
    if needs.shared_state and not model.shares_memory:
        how = ("runs its clients in several worker processes" if model.workers == "processes" else
               "with --fork runs each client in its own process" if model.fork_option else
               "runs each client in its own process")
        return (f"the {service.name} service keeps state shared by all its clients, but the {model.name} model {how}, "
                f"where each would see a different copy of it; run it under {instead}")
    if needs.tls and not model.tls:
        return (f"the {service.name} service needs TLS, and the {model.name} model does not do TLS; "
                f"run it under {instead}")
    if needs.tls and not tls:
        return f"the {service.name} service needs TLS: give it a certificate and its key (--tls-cert, --tls-key)"
    return None


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


def uvloop_installed() -> bool:
    """uvloop can be imported here (looked up without importing it)."""
    return importlib.util.find_spec("uvloop") is not None


def fastest_model() -> str:
    return "uvloop" if uvloop_installed() else "asyncio"


def service_spec(name: str) -> ServiceSpec:
    return load(SERVICES[name])
