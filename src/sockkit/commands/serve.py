"""``sockkit serve SERVICE --model MODEL``: bind, print where, hand over to the model."""

from __future__ import annotations

import argparse
import ssl
import sys

from sockkit import activation, affinity, catalog
from sockkit.lifecycle import Log, Reload, StopSignal
from sockkit.models.settings import (
    DEFAULT_IDLE_SECONDS,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_REQUEST_SECONDS,
    Limits,
    Server,
)
from sockkit.net import BindError, address_text, is_loopback, open_listeners
from sockkit.ports import listen_port
from sockkit.procs import keep_receive_buffers_on_heap

# Service names are listed eagerly for argparse; their modules load only when chosen.


def register(subparsers) -> None:
    parser = subparsers.add_parser("serve", help="run a service under a server model",
                                   description="Run a service under one of the server models.")
    services = parser.add_subparsers(dest="service", metavar="SERVICE", required=True)
    for name in catalog.SERVICES:
        spec = catalog.service_spec(name)
        sub = services.add_parser(name, help=spec.help, description=spec.help,
                                  formatter_class=argparse.RawDescriptionHelpFormatter,
                                  epilog=_models_epilog())
        add_server_arguments(sub, spec)
        spec.add_arguments(sub)
        sub.set_defaults(handler=run, spec=spec)


def _models_epilog() -> str:
    return "models:\n" + "\n".join(f"  {name:<13} {model.summary}" for name, model in catalog.MODELS.items())


def add_server_arguments(parser: argparse.ArgumentParser, spec: catalog.ServiceSpec) -> None:
    parser.add_argument("--model", choices=list(catalog.MODELS), default=None,
                        help="concurrency model (default: the fastest here, %(default)s)".replace(
                            "%(default)s", spec.default_model or catalog.fastest_model()))
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; '' or 0.0.0.0 or :: to expose)")
    parser.add_argument("--port", type=listen_port, action="append", metavar="PORT",
                        help=f"port to listen on, repeatable (default {spec.default_port}; 0 picks a free one)")
    parser.add_argument("--idle-timeout", type=float, default=DEFAULT_IDLE_SECONDS, metavar="SECONDS",
                        help=f"close a connection silent this long (default {DEFAULT_IDLE_SECONDS:g})")
    parser.add_argument("--request-timeout", type=float, default=DEFAULT_REQUEST_SECONDS, metavar="SECONDS",
                        help="a started request must be complete within this long, however slowly it trickles "
                             f"(default {DEFAULT_REQUEST_SECONDS:g})")
    parser.add_argument("--max-connections", type=int, default=DEFAULT_MAX_CONNECTIONS, metavar="N",
                        help=f"clients served at once; more get a busy reply (default {DEFAULT_MAX_CONNECTIONS})")
    parser.add_argument("--drain-timeout", type=float, default=Limits.drain_seconds, metavar="SECONDS",
                        help="after SIGTERM/SIGINT, how long in-flight clients may finish (default %(default)s)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="threads (pool) or processes (prefork); default: the number of CPUs")
    parser.add_argument("--fork", action="store_true", help="socketserver model: ForkingTCPServer")
    parser.add_argument("--quiet", action="store_true", help="no log line per client")
    parser.add_argument("--tls-cert", metavar="PEM", help="serve TLS with this certificate chain (needs --tls-key)")
    parser.add_argument("--tls-key", metavar="PEM", help="private key for --tls-cert")
    parser.add_argument("--cpus", type=_cpus, default="auto", metavar="auto|all|LIST",
                        help="CPUs the server may run on: auto (default) keeps the thread, pool and socketserver "
                             "models, whose threads share one GIL, on one CPU (1.1-2.2x the requests per second "
                             "here), unless serving TLS; all: wherever the system puts them; or a list like 0,2-3")
    parser.add_argument("--insecure", action="store_true",
                        help="allow listening beyond loopback with neither TLS nor a token (prints a warning)")


def _cpus(text: str) -> str | frozenset[int]:
    try:
        return affinity.parse_cpus(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None  # argparse names the option


def tls_context(args: argparse.Namespace, model: catalog.Model) -> ssl.SSLContext | None:
    """The server's TLS context, or None; ValueError says what is wrong with the options."""
    if not (args.tls_cert or args.tls_key):
        return None
    if not (args.tls_cert and args.tls_key):
        raise ValueError("--tls-cert and --tls-key go together")
    if not model.tls:
        raise ValueError(f"the {model.name} model does not do TLS; use {_or(catalog.models_where(tls=True))}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(args.tls_cert, args.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load TLS certificate/key: {exc}") from None
    return context


def _or(names: list[str]) -> str:
    return ", ".join(names[:-1]) + " or " + names[-1]


def run(args: argparse.Namespace) -> int:
    spec: catalog.ServiceSpec = args.spec
    model = catalog.MODELS[args.model or spec.default_model or catalog.fastest_model()].configured(fork=args.fork)
    try:
        tls = tls_context(args, model)
        cpus = affinity.choose(args.cpus, model, tls=tls is not None)
        service = spec.build(args)
    except (ValueError, OSError) as exc:
        print(f"sockkit: {exc}", file=sys.stderr)
        return 2
    try:
        # Sockets passed by systemd (socket activation) or by the server this one replaces (SIGHUP).
        inherited = activation.inherited_listeners()
    except activation.ActivationError as exc:
        print(f"sockkit: {exc}", file=sys.stderr)
        return 2
    hosts = [listener.getsockname()[0] for listener in inherited] or [args.host]
    exposed = next((host for host in hosts if not is_loopback(host)), None)
    if exposed is not None and tls is None:
        # Beyond loopback, clear text needs --insecure: with no token anyone could use the service,
        # and with one the token itself would cross the network for anyone on the way to read.
        where = exposed or "every interface"
        token = getattr(args, "token", None)
        if not args.insecure:
            if token:
                print(f"sockkit: refusing to serve {spec.name} on {where} with a token but no TLS: the token would "
                      "cross the network in clear text, for anyone on the way to read and reuse. Add "
                      "--tls-cert/--tls-key, or --insecure to do it anyway.", file=sys.stderr)
            else:
                print(f"sockkit: refusing to serve {spec.name} on {where} in clear text with no token: anyone who "
                      "can reach this machine could use it. Add --tls-cert/--tls-key, or --insecure to do it anyway.",
                      file=sys.stderr)
            return 2
        exposed_what = "its token crosses the network in clear text" if token else "in clear text"
        print(f"sockkit: warning: {spec.name} on {where} is open to other machines, {exposed_what} (--insecure)",
              file=sys.stderr)
    ports = args.port or [spec.default_port]
    limits = Limits(idle_timeout=args.idle_timeout, request_timeout=args.request_timeout,
                    max_connections=args.max_connections, drain_seconds=args.drain_timeout, fork=args.fork,
                    tls=tls)
    if args.workers:
        limits.workers = args.workers
    try:
        listeners = inherited or open_listeners(args.host, ports, reuse_port=model.reuse_port)
    except BindError as exc:
        print(f"sockkit: {exc.strerror}", file=sys.stderr)
        return 1
    keep_receive_buffers_on_heap()
    if cpus is not None:
        affinity.pin(cpus)
        why = "" if isinstance(args.cpus, frozenset) else \
            f" (the {model.name} model's threads share one GIL; --cpus all spreads them)"
        print(f"sockkit: running on CPU {affinity.describe(cpus)}{why}", file=sys.stderr, flush=True)
    stop = StopSignal().install()
    Reload(["serve", *_serve_arguments(args)], listeners, stop).install()
    log = Log(quiet=args.quiet)
    for listener in listeners:
        print(f"sockkit {spec.name} server ({model.name}) listening on {address_text(listener)}", flush=True)
    # Serving from here on (clients wait in the listen queue until the model accepts them): the
    # server this one replaces may stop, and a service manager may count us as started. The
    # model's code is loaded first, so that the queue waits for a loop to start, not for imports.
    catalog.load(model.serve)
    activation.take_over()
    try:
        model.run(Server(service, listeners, limits, log, stop))
    finally:
        stop.close()
    return 0


def _serve_arguments(args: argparse.Namespace) -> list[str]:
    """What followed ``serve`` on the command line, for the server a reload starts."""
    argv = getattr(args, "argv", None) or sys.argv[1:]
    return argv[argv.index("serve") + 1:] if "serve" in argv else argv
