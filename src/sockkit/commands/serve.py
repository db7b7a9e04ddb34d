"""``sockkit serve SERVICE --model MODEL``: bind, print where, hand over to the model.

SERVICE is a built-in service, one an installed package registers (entry-point group
``sockkit.services``), or ``MODULE:ATTRIBUTE`` naming a user's ``Service`` or factory. All of them
get every model option; the running itself is ``sockkit.serving``'s, shared with ``sockkit.serve()``.
"""

from __future__ import annotations

import argparse
import sys

from sockkit import activation, affinity, catalog, plugins, serving
from sockkit.models.settings import (
    DEFAULT_IDLE_SECONDS,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MIN_RATE,
    DEFAULT_RATE_WINDOW,
    DEFAULT_REQUEST_SECONDS,
    Limits,
)
from sockkit.net import BindError
from sockkit.ports import listen_port
from sockkit.sizes import parse_size

# Service names are listed eagerly for argparse; their modules load only when chosen.


class _Services(argparse._SubParsersAction):
    """The SERVICE choice: a name registered above, or ``MODULE:ATTRIBUTE``, whose parser is made
    when it is named (a user's module is imported only when asked for)."""

    class _Names:
        """The choices argparse checks first: the registered names, plus every ``MODULE:ATTRIBUTE``."""

        def __init__(self, names: dict) -> None:
            self.names = names

        def __contains__(self, name: object) -> bool:
            return name in self.names or (isinstance(name, str) and plugins.is_target(name))

        def __iter__(self):
            return iter(self.names)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.choices = self._Names(self._name_parser_map)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        name = values[0]
        if name not in self._name_parser_map and plugins.is_target(name):
            try:
                target = plugins.load_target(name)
            except ValueError as exc:
                parser.error(str(exc))
            add_service_parser(self, plugins.spec_for(target, name, name))
        super().__call__(parser, namespace, values, option_string)


def register(subparsers) -> None:
    parser = subparsers.add_parser("serve", help="run a service under a server model",
                                   description="Run a service under one of the server models. SERVICE is one of "
                                               "those below, or MODULE:ATTRIBUTE naming your own (a Service, or a "
                                               "factory taking the parsed options).")
    parser.register("action", "services", _Services)
    parser.add_argument("--list", action=_ListServices, help="list every service (built in and installed) and exit")
    services = parser.add_subparsers(dest="service", metavar="SERVICE", required=True, action="services")
    for name in catalog.SERVICES:
        add_service_parser(services, catalog.service_spec(name))
    for name, point in plugins.installed().items():
        if name not in catalog.SERVICES:
            add_service_parser(services, _installed_spec(name, point))


def _installed_spec(name: str, point) -> catalog.ServiceSpec:
    where = f"{point.value} (from {plugins.origin(point)})"
    try:
        target = point.load()
    except Exception as exc:  # a broken plugin must not break `sockkit serve` for the others
        message = f"cannot load service {name} from {plugins.origin(point)}: {exc!r}"

        def broken(options):
            raise ValueError(message)

        return catalog.ServiceSpec(name=name, help=f"(broken: {exc!r})", default_port=0,
                                   add_arguments=lambda parser: None, build=broken)
    spec = plugins.spec_for(target, name, where)
    return catalog.ServiceSpec(name=spec.name, help=f"{spec.help} [{plugins.origin(point)}]",
                               default_port=spec.default_port, add_arguments=spec.add_arguments, build=spec.build)


def add_service_parser(services, spec: catalog.ServiceSpec) -> None:
    sub = services.add_parser(spec.name, help=spec.help, description=spec.help,
                              formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_models_epilog())
    add_server_arguments(sub, spec)
    spec.add_arguments(sub)
    sub.set_defaults(handler=run, spec=spec)


class _ListServices(argparse.Action):
    """``--list``: every service by name with its one line, and who provides it."""

    def __init__(self, option_strings, dest, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        rows = [(name, catalog.service_spec(name).help, "built in") for name in catalog.SERVICES]
        for name, point in plugins.installed().items():
            if name in catalog.SERVICES:
                rows.append((name, f"not used: the built-in {name} comes first", plugins.origin(point)))
            else:
                rows.append((name, _installed_spec(name, point).help.rsplit(" [", 1)[0], plugins.origin(point)))
        width = max(len(name) for name, _, _ in [*rows, ("MODULE:ATTRIBUTE", "", "")])
        for name, text, where in rows:
            print(f"{name:<{width}}  {text}  ({where})")
        print(f"{'MODULE:ATTRIBUTE':<{width}}  your own service: a Service, or a factory taking the parsed options")
        parser.exit()


#: What a running server does on each signal, and where it may find its sockets (README: "Server models").
_SIGNALS = """
signals and sockets:
  SIGTERM, SIGINT  stop accepting, let requests in flight finish (--drain-timeout), exit 0;
                   a second signal ends the drain at once
  SIGHUP           restart without refusing anyone: a new server takes over the same listening
                   sockets, then this one drains as on SIGTERM (if the new one fails, this one stays)
  LISTEN_FDS       started with sockets (systemd socket activation, deploy/systemd/), serve those
                   instead of binding --host/--port"""


def _models_epilog() -> str:
    models = "\n".join(f"  {name:<13} {model.summary}" for name, model in catalog.MODELS.items())
    return f"models:\n{models}\n{_SIGNALS}"


def add_server_arguments(parser: argparse.ArgumentParser, spec: catalog.ServiceSpec) -> None:
    parser.add_argument("--model", choices=list(catalog.MODELS), default=None,
                        help="concurrency model (default: the fastest here, %(default)s)".replace(
                            "%(default)s", spec.default_model or catalog.fastest_model()))
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; '' or 0.0.0.0 or :: to expose)")
    parser.add_argument("--port", type=listen_port, action="append", metavar="PORT",
                        help="port to listen on, repeatable "
                             f"(default {spec.default_port or 'a free one'}; 0 picks a free one)")
    parser.add_argument("--idle-timeout", type=float, default=DEFAULT_IDLE_SECONDS, metavar="SECONDS",
                        help=f"close a connection silent this long (default {DEFAULT_IDLE_SECONDS:g})")
    parser.add_argument("--request-timeout", type=float, default=DEFAULT_REQUEST_SECONDS, metavar="SECONDS",
                        help="a started request must be complete within this long, however slowly it trickles "
                             f"(default {DEFAULT_REQUEST_SECONDS:g})")
    parser.add_argument("--min-rate", type=parse_size, default=DEFAULT_MIN_RATE, metavar="BYTES",
                        help="while a file is being sent, a client taking fewer than BYTES a second, averaged over "
                             "each --min-rate-window, is cut and logged (default 1k: 20 KiB per 20 s, slower "
                             "than any real link; 0: no minimum)")
    parser.add_argument("--min-rate-window", type=float, default=DEFAULT_RATE_WINDOW, metavar="SECONDS",
                        help=f"the window --min-rate is averaged over (default {DEFAULT_RATE_WINDOW:g})")
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
    parser.add_argument("--proxy-protocol", action="store_true",
                        help="every connection starts with a PROXY protocol header (v1 or v2, as HAProxy's "
                             "send-proxy/send-proxy-v2 writes it) naming the real client, which the log and the "
                             "service then see; a connection without a valid one is closed and logged. With --tls-cert "
                             "the header comes in clear before the TLS handshake (HAProxy's send-proxy-v2 ssl)")
    parser.add_argument("--trusted-proxy", action="append", metavar="ADDR[/PREFIX]",
                        help="with --proxy-protocol: who may send the header, repeatable (default: loopback only); "
                             "a connection from anywhere else is closed at once and logged")
    parser.add_argument("--insecure", action="store_true",
                        help="allow listening beyond loopback without TLS, token or not (prints a warning: anyone "
                             "on the way can read the traffic, and the token with it)")


def _cpus(text: str) -> str | frozenset[int]:
    try:
        return affinity.parse_cpus(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None  # argparse names the option


def run(args: argparse.Namespace) -> int:
    spec: catalog.ServiceSpec = args.spec
    try:
        service = spec.build(args)
        # Sockets passed by systemd (socket activation) or by the server this one replaces (SIGHUP).
        inherited = activation.inherited_listeners()
        chosen = serving.plan(service, model=args.model or spec.default_model, host=args.host, inherited=inherited,
                              port=args.port or spec.default_port or None, tls_cert=args.tls_cert,
                              tls_key=args.tls_key, cpus=args.cpus, insecure=args.insecure, quiet=args.quiet,
                              proxy_protocol=args.proxy_protocol, trusted_proxies=args.trusted_proxy,
                              idle_timeout=args.idle_timeout, request_timeout=args.request_timeout,
                              min_rate=args.min_rate, min_rate_window=args.min_rate_window,
                              max_connections=args.max_connections, drain_timeout=args.drain_timeout,
                              workers=args.workers, fork=args.fork)
    except (ValueError, OSError) as exc:
        print(f"sockkit: {exc}", file=sys.stderr)
        return 2
    try:
        listeners = serving.bind(chosen)
    except BindError as exc:
        print(f"sockkit: {exc.strerror}", file=sys.stderr)
        return 1
    serving.run(chosen, listeners, reload_argv=["serve", *_serve_arguments(args)])
    return 0


def _serve_arguments(args: argparse.Namespace) -> list[str]:
    """What followed ``serve`` on the command line, for the server a reload starts."""
    argv = getattr(args, "argv", None) or sys.argv[1:]
    return argv[argv.index("serve") + 1:] if "serve" in argv else argv
