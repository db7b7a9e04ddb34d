"""Command-line face of the getfile service (glue: it may read the clock and the environment).

Exposure: ``sockkit serve`` itself refuses a non-loopback bind without TLS unless ``--insecure`` is
given, and says why from ``args.token`` (which ``build`` fills from ``$SOCKKIT_TOKEN`` when
``--token`` is absent): no token, anyone could use it; a token, it would travel in clear text.
"""

from __future__ import annotations

import argparse
import os
import time

from sockkit import ofd
from sockkit.catalog import ServiceSpec
from sockkit.lifecycle import Log, printable
from sockkit.protocols.getfile import DEFAULT_PORT
from sockkit.services.getfile.digest import DigestCache
from sockkit.services.getfile.root import ServedRoot
from sockkit.services.getfile.service import DEFAULT_MAX_TRANSFERS, GetfileService
from sockkit.services.getfile.slots import LocalSlots, make_slots
from sockkit.services.getfile.stalls import DEFAULT_STALL, Stalls
from sockkit.services.getfile.stalls import RECORD_SIZE as STALL_RECORD
from sockkit.services.getfile.throttle import RECORD_SIZE, SETS, Throttle
from sockkit.sizes import parse_size

TOKEN_ENV = "SOCKKIT_TOKEN"
#: Chosen by measurement (docs/getfile-server.md): a thread per client matches the event loops'
#: throughput (zero-copy ``socket.sendfile``) and, unlike them, keeps blocking filesystem work --
#: hashing a cold 1 GiB file, fsyncing an upload -- from stalling every other client (worst small
#: GET during a cold digest: ~2 ms vs 230-450 ms under select/asyncio). uvloop has no sendfile.
DEFAULT_MODEL = "thread"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", default=".", metavar="DIR",
                        help="directory whose regular files are served (default: the current directory)")
    parser.add_argument("--allow-upload", action="store_true",
                        help="accept uploads into the root: sockkit put, HTTP PUT and the listing page's form "
                             "(never overwriting unless the client asks)")
    parser.add_argument("--max-upload", type=parse_size, default=None, metavar="BYTES",
                        help="largest upload taken, in bytes or 500M, 2G ..., by sockkit put and HTTP alike "
                             "(default: no limit but the disk's free space)")
    parser.add_argument("--upload-stall", type=float, default=DEFAULT_STALL, metavar="SECONDS",
                        help="an upload whose client sends nothing for this long gives its disk space back (and is "
                             f"refused) when another upload needs room, in every model (default {DEFAULT_STALL:g})")
    parser.add_argument("--token", default=None, metavar="TOKEN",
                        help=f"require clients to present this shared token first (default: ${TOKEN_ENV} if set)")
    parser.add_argument("--max-transfers", type=int, default=DEFAULT_MAX_TRANSFERS, metavar="N",
                        help="file transfers at once across the whole server; more are answered 'busy' "
                             f"(default {DEFAULT_MAX_TRANSFERS}; 0: no limit)")


def build(args: argparse.Namespace) -> GetfileService:
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV)
    if args.max_upload is not None and args.max_upload < 0:
        raise ValueError("--max-upload must be zero or more bytes")
    if args.max_transfers < 0:
        raise ValueError("--max-transfers must be zero (no limit) or more")
    if args.upload_stall < 1:
        raise ValueError("--upload-stall must be 1 second or more")
    args.token = token  # serve's exposure rule reads args.token
    try:
        root = ServedRoot(args.root)
    except OSError as exc:  # missing, not a directory, not readable: say which, as a usage error
        raise ValueError(f"cannot serve --root {args.root}: {exc.strerror.lower()}") from None
    log = Log(quiet=args.quiet)
    slots = make_slots(args.max_transfers)
    if isinstance(slots, LocalSlots):
        log.line("getfile: OFD locks unavailable: --max-transfers applies per process")

    def log_refusal(text: str) -> None:
        log.line(f"{printable(text)} at {time.ctime()}")

    print(f"getfile: serving {printable(os.path.abspath(args.root))} (uploads {'on' if args.allow_upload else 'off'}"
          f", token {'required' if token else 'off'}, at most {args.max_transfers or 'unlimited'} transfers)",
          flush=True)
    throttle = None
    if token:  # wrong tokens counted per source, in records every process shares (made before any fork)
        store = ofd.records("sockkit-getfile-tokens", SETS, RECORD_SIZE)
        if isinstance(store, ofd.LocalRecords):
            log.line("getfile: OFD locks unavailable: wrong tokens are counted per process")
        throttle = Throttle(store, time.monotonic)
    stalls = None
    if args.allow_upload:  # uploads in progress listed for every process (each holds a transfer slot)
        stalls = Stalls(ofd.records("sockkit-getfile-uploads", args.max_transfers or 1024, STALL_RECORD),
                        time.monotonic, args.upload_stall)
    return GetfileService(root, allow_upload=args.allow_upload, token=token, slots=slots,
                          digests=DigestCache(clock=time.time), log=log_refusal, clock=time.time,
                          max_upload=args.max_upload, throttle=throttle, stalls=stalls)


SPEC = ServiceSpec(name="getfile",
                   help="serve files under a root directory (getfile protocol v1, the chapter's, and HTTP/1.1)",
                   default_port=DEFAULT_PORT, add_arguments=add_arguments, build=build, default_model=DEFAULT_MODEL)
