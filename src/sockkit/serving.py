"""Run one service under one model, blocking until SIGTERM/SIGINT: what ``sockkit serve`` and
``sockkit.serve()`` both do, in three steps.

Rule: ``plan`` makes every check that can refuse (the model, TLS, exposure, what the service
needs) before anything is bound; ``bind`` opens the listeners (bind first, serve second); ``run``
prints the listening lines and hands over to the model. ``sockkit.background()`` plans and binds
in the caller and runs in a forked child, so the same three steps serve it too.
"""

from __future__ import annotations

import socket
import ssl
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sockkit import activation, affinity, catalog
from sockkit.lifecycle import Log, Reload, StopSignal
from sockkit.models.settings import Limits, Server
from sockkit.net import address_text, is_loopback, open_listeners
from sockkit.ports import parse_port
from sockkit.preface import TrustedProxies, preface_factory
from sockkit.procs import keep_receive_buffers_on_heap
from sockkit.services.actions import Service

#: The limits ``sockkit.serve(**limits)`` accepts, as the ``Limits`` fields they set (the command
#: line's ``--drain-timeout`` is ``drain_seconds`` there).
LIMIT_FIELDS = {"idle_timeout": "idle_timeout", "request_timeout": "request_timeout", "min_rate": "min_rate",
                "min_rate_window": "rate_window",
                "max_connections": "max_connections", "drain_timeout": "drain_seconds", "workers": "workers",
                "fork": "fork"}


@dataclass
class Plan:
    """A service and how to run it, checked and not yet bound."""

    service: Service
    #: The registry's entry, as configured (``socketserver --fork`` forks).
    model: catalog.Model
    host: str
    ports: list[int]
    limits: Limits
    quiet: bool
    #: CPUs to pin the server to (``--cpus``), or None.
    cpus: frozenset[int] | None
    #: The ``--cpus`` setting as given, to explain an automatic pinning.
    cpus_setting: str | frozenset[int]
    #: Listeners handed over (systemd socket activation, a reload), served instead of binding.
    inherited: list[socket.socket]
    #: ``--proxy-protocol``: who may send PROXY headers; None: connections start with the service.
    trusted: TrustedProxies | None = None


def tls_context(cert: str | None, key: str | None, model: catalog.Model) -> ssl.SSLContext | None:
    """The server's TLS context, or None; ValueError says what is wrong with the options."""
    if not (cert or key):
        return None
    if not (cert and key):
        raise ValueError("--tls-cert and --tls-key go together")
    if not model.tls:
        raise ValueError(f"the {model.name} model does not do TLS; use {_or(catalog.models_where(tls=True))}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        why = (f"not a PEM certificate chain and its private key ({exc.reason or exc})" if isinstance(exc, ssl.SSLError)
               else (exc.strerror or str(exc)).lower())
        raise ValueError(f"cannot load TLS certificate {cert} / key {key}: {why}") from None
    return context


def _or(names: list[str]) -> str:
    return ", ".join(names[:-1]) + " or " + names[-1]


def plan(service: Service, *, model: str | None = None, host: str = "127.0.0.1",
         inherited: list[socket.socket] | None = None, port: int | Iterable[int] | None = None,
         tls_cert: str | None = None, tls_key: str | None = None,
         cpus: str | frozenset[int] = "auto", insecure: bool = False, quiet: bool = False,
         proxy_protocol: bool = False, trusted_proxies: Iterable[str] | None = None,
         warn: Callable[..., object] = print, **limits: Any) -> Plan:
    """Every check before binding. ValueError (or TypeError for an unknown limit) says what is wrong.

    ``warn(text, file=sys.stderr)`` reports an exposure allowed by ``insecure``; ``inherited``:
    listening sockets handed over (``activation.inherited_listeners()``), whose addresses count.
    ``proxy_protocol``: each connection starts with a PROXY header from ``trusted_proxies`` (ADDR or
    ADDR/PREFIX; default loopback) naming the client (``sockkit.preface``).
    """
    inherited = inherited or []
    name = model or catalog.fastest_model()
    if name not in catalog.MODELS:
        raise ValueError(f"unknown model {name!r}; the models are {', '.join(catalog.MODELS)}")
    unknown = sorted(set(limits) - set(LIMIT_FIELDS))
    if unknown:
        raise TypeError(f"unknown limit {', '.join(unknown)}; the limits are {', '.join(LIMIT_FIELDS)}")
    settings = {LIMIT_FIELDS[name]: value for name, value in limits.items() if value is not None}
    check_limits(limits)
    configured = catalog.MODELS[name].configured(fork=bool(settings.get("fork")))
    tls = tls_context(tls_cert, tls_key, configured)
    refused = catalog.refusal(service, configured, tls=tls is not None)
    if refused:
        raise ValueError(refused)
    chosen_cpus = affinity.choose(cpus, configured, tls=tls is not None)
    trusted = proxies(proxy_protocol, trusted_proxies)
    hosts = [listener.getsockname()[0] for listener in inherited] or [host]
    exposed = next((address for address in hosts if not is_loopback(address)), None)
    if exposed is not None and tls is None:
        # Beyond loopback, clear text needs --insecure: with no token anyone could use the service,
        # and with one the token itself would cross the network for anyone on the way to read.
        where = exposed or "every interface"
        token = getattr(service, "token", None)
        if not insecure:
            if token:
                raise ValueError(f"refusing to serve {service.name} on {where} with a token but no TLS: the token "
                                 "would cross the network in clear text, for anyone on the way to read and reuse. "
                                 "Add --tls-cert/--tls-key, or --insecure to do it anyway.")
            raise ValueError(f"refusing to serve {service.name} on {where} in clear text with no token: anyone who "
                             "can reach this machine could use it. Add --tls-cert/--tls-key, or --insecure to do it "
                             "anyway.")
        exposed_what = "its token crosses the network in clear text" if token else "in clear text"
        warn(f"sockkit: warning: {service.name} on {where} is open to other machines, {exposed_what} (--insecure)",
             file=sys.stderr)
    if port is None:
        port = getattr(service, "default_port", 0)
    ports = [parse_port(number, listen=True) for number in ([port] if isinstance(port, int) else port)]
    return Plan(service, configured, host, ports or [0], Limits(tls=tls, **settings), quiet, chosen_cpus, cpus,
                inherited, trusted)


#: The least each limit may be, and why (``--max-connections 0`` would turn every client away, a zero
#: deadline would close every connection at once); NaN fails every comparison, so it is refused too.
_LEAST = {"idle_timeout": (0.0, False), "request_timeout": (0.0, False), "drain_timeout": (0.0, True),
          "min_rate": (0, True), "min_rate_window": (0.0, False),
          "max_connections": (1, True), "workers": (1, True)}


def check_limits(limits: dict[str, Any]) -> None:
    """ValueError naming the option, for a limit that would make the server useless."""
    for name, (least, inclusive) in _LEAST.items():
        value = limits.get(name)
        if value is None or (value >= least if inclusive else value > least):
            continue
        option = "--" + name.replace("_", "-")
        bound = f"at least {least:g}" if inclusive else f"more than {least:g}"
        raise ValueError(f"{option} must be {bound}, not {value!r}")


def proxies(proxy_protocol: bool, trusted_proxies: Iterable[str] | None) -> TrustedProxies | None:
    """Who may send PROXY headers (``--proxy-protocol``), or None; ValueError says why not."""
    if not proxy_protocol:
        if trusted_proxies:
            raise ValueError("--trusted-proxy says who may send PROXY headers: it needs --proxy-protocol")
        return None
    return TrustedProxies.parse(trusted_proxies)


def bind(chosen: Plan) -> list[socket.socket]:
    """The plan's listeners (the inherited ones, else new ones: all or none; ``net.BindError`` says why not)."""
    return chosen.inherited or open_listeners(chosen.host, chosen.ports, reuse_port=chosen.model.reuse_port)


def run(chosen: Plan, listeners: list[socket.socket], *, reload_argv: list[str] | None = None,
        announce: bool = True) -> None:
    """Serve on ``listeners`` until SIGTERM/SIGINT, then drain; must run in the main thread.

    ``reload_argv``: what follows ``sockkit`` to start this server again, for SIGHUP (``lifecycle.Reload``:
    a new server on the same sockets, then this one drains); None: no reload. ``announce``: once
    serving, tell a service manager and the server a reload replaces (``activation.take_over``).
    """
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("sockkit.serve() handles SIGTERM and SIGINT, so it runs in the main thread; "
                           "to serve from another thread or in the background, use sockkit.background()")
    keep_receive_buffers_on_heap()
    if chosen.cpus is not None:
        affinity.pin(chosen.cpus)
        why = "" if isinstance(chosen.cpus_setting, frozenset) else \
            f" (the {chosen.model.name} model's threads share one GIL; --cpus all spreads them)"
        print(f"sockkit: running on CPU {affinity.describe(chosen.cpus)}{why}", file=sys.stderr, flush=True)
    stop = StopSignal().install()
    if reload_argv is not None:
        Reload(reload_argv, listeners, stop).install()
    log = Log(quiet=chosen.quiet)
    preface = None
    if chosen.trusted is not None:
        preface = preface_factory(chosen.trusted)  # the engine's preface: the header names the client
        print(f"sockkit: every connection must start with a PROXY header, from {chosen.trusted.describe()} only",
              flush=True)
    for listener in listeners:
        print(f"sockkit {chosen.service.name} server ({chosen.model.name}) listening on {address_text(listener)}",
              flush=True)
    # Serving from here on (clients wait in the listen queue until the model accepts them): the
    # server this one replaces may stop, and a service manager may count us as started. The
    # model's code is loaded first, so that the queue waits for a loop to start, not for imports.
    catalog.load(chosen.model.serve)
    if announce:
        activation.take_over()
    try:
        chosen.model.run(Server(chosen.service, listeners, chosen.limits, log, stop, preface=preface))
    finally:
        stop.close()
