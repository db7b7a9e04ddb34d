"""``sockkit get``, ``sockkit ls`` and ``sockkit put``: the getfile client's command line.

Exit status: 0 only for a complete, verified file (or tree); 1 for any failure, with one line on
stderr (``sockkit get: ...``, from sockkit.errors.describe); 130 after Ctrl-C (the ``.part`` is kept).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from typing import TYPE_CHECKING

from sockkit.cli import HelpFormatter
from sockkit.clients import getfile
from sockkit.clients.localfs import human_size
from sockkit.clients.retry import MAX_RETRIES, with_retries
from sockkit.commands.progress import ProgressPrinter
from sockkit.errors import NoAnswer, SockkitError, describe, printable
from sockkit.ports import connect_port

if TYPE_CHECKING:
    import ssl

    from sockkit.clients.getfile_tree import TreeResult

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgKMG]?)(?:i?[bB])?(?:/s)?\s*$")
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_rate(text: str) -> float:
    """``500K``, ``10M``, ``1.5G`` or plain bytes per second (K = 1024, as curl and wget count)."""
    match = _RATE.match(text)
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"not a rate: {text!r} (examples: 500K, 10M, 1G)")
    return float(match.group(1)) * _UNITS[match.group(2).lower()]


def parse_retries(text: str) -> int:
    if not text.isdigit() or int(text) > MAX_RETRIES:
        raise argparse.ArgumentTypeError(f"{text[:20]!r} is not a number of retries from 0 to {MAX_RETRIES}")
    return int(text)


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=getfile.DEFAULT_HOST, help="server (default %(default)s)")
    parser.add_argument("--port", type=connect_port, default=getfile.DEFAULT_PORT, help="port (default %(default)s)")
    add_session_arguments(parser)


def add_session_arguments(parser: argparse.ArgumentParser) -> None:
    """--timeout, --token, --tls, --cafile: shared by get/ls/put and the GUI."""
    parser.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                        help="give up on a silent server after this long (default %(default)s)")
    parser.add_argument("--token", default=os.environ.get("SOCKKIT_TOKEN"),
                        help="shared token the server requires (default: $SOCKKIT_TOKEN)")
    parser.add_argument("--tls", action="store_true", help="connect with TLS (the certificate is verified)")
    parser.add_argument("--cafile", metavar="PEM", help="trust this CA / self-signed certificate (implies --tls)")


def add_transfer_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true", help="replace an existing file")
    parser.add_argument("--limit-rate", type=parse_rate, metavar="RATE", help="at most RATE bytes/s (500K, 10M)")
    parser.add_argument("--progress", choices=("auto", "bar", "json", "none"), default="auto",
                        help="auto: a bar on a terminal, nothing otherwise; json: one object per line on stdout")


def register(subparsers) -> None:
    get = subparsers.add_parser("get", help="download a file (or -r a directory) from a getfile server",
                                description="Download from `sockkit serve getfile`, verified, resumable.",
                                formatter_class=HelpFormatter)
    get.add_argument("remote", metavar="REMOTE_PATH", help="path on the server, relative to its root")
    get.add_argument("-o", "--output", default=".", metavar="LOCAL_DIR_OR_FILE",
                     help="an existing directory (the file keeps its name) or the file to create (default .)")
    get.add_argument("-r", "--recursive", action="store_true", help="REMOTE_PATH is a directory: fetch it all")
    get.add_argument("--legacy", action="store_true",
                     help="speak the chapter's protocol (path line, raw bytes): no size or digest to verify")
    get.add_argument("--retry", type=parse_retries, default=0, metavar="N",
                     help="after a refused or reset connection, a transfer cut short or a busy server, try again "
                          "up to N times, waiting 0.5 s, 1 s, 2 s ... (at most 8 s) in between; each attempt resumes "
                          "from the verified partial copy (default 0)")
    get.add_argument("--no-fsync", dest="durable", action="store_false",
                     help="skip the fsyncs: still verified and renamed only when complete, but a power cut "
                          "soon after may lose the file (scratch data; what curl and rsync do)")
    add_connection_arguments(get)
    add_transfer_arguments(get)
    get.set_defaults(handler=run_get)

    ls = subparsers.add_parser("ls", help="list a directory on a getfile server", formatter_class=HelpFormatter)
    ls.add_argument("remote", nargs="?", default=".", metavar="REMOTE_DIR", help="default: the served root")
    add_connection_arguments(ls)
    ls.set_defaults(handler=run_ls)

    put = subparsers.add_parser("put", help="upload a file to a getfile server started with --allow-upload",
                                formatter_class=HelpFormatter)
    put.add_argument("local", metavar="LOCAL_PATH")
    put.add_argument("remote", nargs="?", default=".", metavar="REMOTE_DIR", help="default: the served root")
    add_connection_arguments(put)
    add_transfer_arguments(put)
    put.set_defaults(handler=run_put)


def tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if not (args.tls or args.cafile):
        return None
    import ssl  # only here: a plain download does not pay for importing it

    context = ssl.create_default_context(cafile=args.cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def connection(args: argparse.Namespace) -> dict:
    return {"host": args.host, "port": args.port, "timeout": args.timeout, "token": args.token or None,
            "tls": tls_context(args)}


def fail(command: str, exc: BaseException, printer: ProgressPrinter | None = None) -> int:
    if printer is not None:
        printer.error(describe(exc), silent=isinstance(exc, NoAnswer))
    print(f"sockkit {command}: {describe(exc)}", file=sys.stderr)
    return 130 if isinstance(exc, KeyboardInterrupt) else 1


def run_get(args: argparse.Namespace) -> int:
    if args.recursive and args.legacy:
        print("sockkit get: --legacy fetches single files only (the chapter's protocol has no listing)",
              file=sys.stderr)
        return 2
    printer = ProgressPrinter(args.progress)

    def retrying(exc: BaseException, retry: int, wait: float) -> None:
        printer.retrying(describe(exc), retry, args.retry, wait)

    def attempt():
        if args.recursive:
            from sockkit.clients.getfile_tree import download_tree  # loaded only for -r

            return download_tree(args.remote, dest=args.output, force=args.force, progress=printer,
                                 limit_rate=args.limit_rate, durable=args.durable, **connection(args))
        if args.legacy:
            from sockkit.clients.getfile_legacy import legacy_download  # loaded only for --legacy

            return legacy_download(args.remote, host=args.host, port=args.port, dest=args.output,
                                   force=args.force, progress=printer, limit_rate=args.limit_rate,
                                   timeout=args.timeout, connected=printer.connected)
        return getfile.download(args.remote, dest=args.output, force=args.force, progress=printer,
                                limit_rate=args.limit_rate, durable=args.durable, connected=printer.connected,
                                **connection(args))

    try:
        result = with_retries(attempt, args.retry, on_retry=retrying)
        if args.recursive:
            return finish_tree(args, printer, result)
    except (SockkitError, OSError, KeyboardInterrupt) as exc:  # ssl.SSLError is an OSError
        return fail("get", exc, printer)
    finally:
        printer.close()
    printer.done(result.size, result.size, str(result.path))
    printer.say(summary(result))
    return 0


def summary(result: getfile.DownloadResult) -> str:
    size = f"{result.size} bytes" if result.size < 10_000 else human_size(result.size)
    if result.unchanged:
        return f"{result.path} is already up to date ({size}, verified xxh3-128)"
    resumed = f", resumed at {human_size(result.resumed_from)}" if result.resumed_from else ""
    check = "verified xxh3-128" if result.verified else "NOT verified: the chapter's protocol has no size or digest"
    return f"got {result.path} ({size}{resumed}, {check}) in {result.seconds:.2f} s"


def finish_tree(args: argparse.Namespace, printer: ProgressPrinter, result: TreeResult) -> int:
    printer.close()
    printer.done(result.bytes, result.bytes, str(result.root))
    for path, reason in result.failed:
        print(f"sockkit get: {path}: {reason}", file=sys.stderr)
    count = len(result.files)
    fetched = (f"{count} file{'' if count == 1 else 's'} ({human_size(result.bytes)}, verified xxh3-128)" if count
               else "nothing fetched")
    skipped = f", {len(result.skipped)} already up to date" if result.skipped else ""
    failed = f", {len(result.failed)} FAILED" if result.failed else ""
    printer.say(f"got {result.root}/: {fetched}{skipped}{failed} in {result.seconds:.2f} s")
    return 1 if result.failed else 0


def run_ls(args: argparse.Namespace) -> int:
    try:
        entries = getfile.list_remote(args.remote, **connection(args))
    except (SockkitError, OSError, KeyboardInterrupt) as exc:  # ssl.SSLError is an OSError
        return fail("ls", exc)
    for entry in sorted(entries, key=lambda e: (e.kind != "d", e.path)):
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.mtime_ns / 1e9))
        size = "-" if entry.kind == "d" else str(entry.size)
        name = entry.path + ("/" if entry.kind == "d" else "")
        kind = "dir " if entry.kind == "d" else "file"
        print(f"{kind}  {size:>12}  {when}  {printable(name, 4096)}")
    return 0


def run_put(args: argparse.Namespace) -> int:
    from sockkit.clients.getfile_upload import upload  # loaded only for put

    printer = ProgressPrinter(args.progress)
    try:
        result = upload(args.local, args.remote, force=args.force, progress=printer,
                        limit_rate=args.limit_rate, **connection(args))
    except (SockkitError, OSError, KeyboardInterrupt) as exc:  # ssl.SSLError is an OSError
        return fail("put", exc, printer)
    finally:
        printer.close()
    printer.done(result.size, result.size, result.remote_path)
    printer.say(f"put {args.local} as {result.remote_path} ({human_size(result.size)}, verified xxh3-128 by the "
                f"server) in {result.seconds:.2f} s")
    return 0
