"""Is ``sockkit load`` a trustworthy load client? Compare it with the simplest good Python clients.

Against the bare uvloop echo peer (benchmarks/peers/asyncio_protocol.py --loop uvloop), 10
connections x 1 KiB raw echo, closed loop, the same duration, runs interleaved so noise spreads
evenly, medians reported. Clients:

* ``sockkit-load``    ``python -m sockkit load --raw --json``
* ``ref-protocol``    the most direct fast client: a uvloop ``asyncio.Protocol`` per connection,
                      ``data_received`` counts bytes, ``perf_counter`` latencies into a list
* ``ref-streams``     the most direct common client: asyncio streams on uvloop,
                      ``write`` + ``readexactly`` per request
* ``echoload``        the C yardstick (/tmp/echoload, built from /work/shared/tools/echoload.c
                      when gcc and the source are there), for the server's real ceiling

Client CPU is the child's user+system time from ``wait4`` (interpreter start included, the same
for every Python client), and the client's own figure for its measured window where it has one.

Usage: python benchmarks/compare_clients.py [--duration 3] [--runs 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ECHOLOAD_SOURCE = Path("/work/shared/tools/echoload.c")
ECHOLOAD = Path("/tmp/echoload")
PEER_ENV = {"MALLOC_MMAP_THRESHOLD_": "1048576", "MALLOC_TRIM_THRESHOLD_": "4194304"}


# -- the reference clients (run in a child: python compare_clients.py --client NAME ...) -----------------
def ref_protocol(port: int, conns: int, size: int, duration: float) -> dict:
    import resource

    import uvloop

    payload = b"x" * size
    latencies: list[float] = []
    state = {"stop": False}

    class Client(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            self.got = 0
            self.t0 = time.perf_counter()
            transport.write(payload)

        def data_received(self, data):
            self.got += len(data)
            if self.got >= size:
                now = time.perf_counter()
                latencies.append(now - self.t0)
                self.got = 0
                if not state["stop"]:
                    self.t0 = now
                    self.transport.write(payload)

    async def main():
        loop = asyncio.get_running_loop()
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        clients = [(await loop.create_connection(Client, "127.0.0.1", port))[1] for _ in range(conns)]
        await asyncio.sleep(duration)
        state["stop"] = True
        await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - start
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        for c in clients:
            c.transport.close()
        return elapsed, (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)

    elapsed, cpu = uvloop.run(main())
    latencies.sort()
    return {"requests": len(latencies), "rps": len(latencies) / elapsed, "cpu_window_s": cpu,
            "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3 if latencies else 0}


def ref_streams(port: int, conns: int, size: int, duration: float) -> dict:
    import resource

    import uvloop

    payload = b"x" * size
    latencies: list[float] = []

    async def one(deadline: float) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            writer.write(payload)
            await reader.readexactly(size)
            latencies.append(time.perf_counter() - t0)
        writer.close()

    async def main():
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        await asyncio.gather(*(one(start + duration) for _ in range(conns)))
        elapsed = time.perf_counter() - start
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        return elapsed, (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)

    elapsed, cpu = uvloop.run(main())
    latencies.sort()
    return {"requests": len(latencies), "rps": len(latencies) / elapsed, "cpu_window_s": cpu,
            "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3 if latencies else 0}


REFERENCE = {"ref-protocol": ref_protocol, "ref-streams": ref_streams}


# -- the harness ----------------------------------------------------------------------------------------
def start_peer() -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, str(HERE / "peers" / "asyncio_protocol.py"), "--loop", "uvloop"],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, **PEER_ENV})
    line = proc.stdout.readline()
    match = re.search(r":(\d+)\s*$", line)
    if not match:
        proc.kill()
        raise SystemExit(f"peer did not start: {line!r}")
    return proc, int(match.group(1))


def client_command(name: str, port: int, args: argparse.Namespace) -> list[str] | None:
    if name == "sockkit-load":
        return [sys.executable, "-m", "sockkit", "load", f"127.0.0.1:{port}", "--raw", "--json",
                "-c", str(args.connections), "-s", str(args.size), "-d", str(args.duration)]
    if name == "echoload":
        if not ECHOLOAD.exists() and ECHOLOAD_SOURCE.exists() and shutil.which("gcc"):
            subprocess.run(["gcc", "-O2", "-o", str(ECHOLOAD), str(ECHOLOAD_SOURCE)], check=True)
        if not ECHOLOAD.exists():
            return None
        return [str(ECHOLOAD), "-a", "127.0.0.1", "-p", str(port), "-c", str(args.connections),
                "-m", str(args.size), "-d", str(args.duration)]
    return [sys.executable, __file__, "--client", name, "--port", str(port), "-c", str(args.connections),
            "-s", str(args.size), "--duration", str(args.duration)]


def measure(command: list[str], timeout: float) -> dict:
    """Run one client to completion; its JSON plus the CPU the child used in total (from wait4)."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    chunks = []
    os.set_blocking(proc.stdout.fileno(), True)
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            _, status, usage = os.wait4(proc.pid, 0)
            return {"error": "timed out"}
        time.sleep(0.05)
    chunks.append(proc.stdout.read())
    proc.stdout.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    doc = json.loads("".join(chunks).strip().splitlines()[-1])
    doc["cpu_total_s"] = usage.ru_utime + usage.ru_stime
    return doc


def summarize(name: str, docs: list[dict]) -> dict:
    ok = [d for d in docs if "error" not in d]
    if not ok:
        return {"client": name, "runs": 0}
    rps = statistics.median(d["rps"] for d in ok)
    window_cpu = [d.get("client_cpu_s", d.get("cpu_window_s")) for d in ok]
    requests = [d.get("requests", d.get("messages")) for d in ok]
    per_req = statistics.median(c / r * 1e6 for c, r in zip(window_cpu, requests, strict=True) if r)
    return {"client": name, "runs": len(ok), "rps": rps,
            "cpu_total_s": statistics.median(d["cpu_total_s"] for d in ok),
            "cpu_window_s": statistics.median(window_cpu),
            "cpu_us_per_request": per_req,
            "p99_ms": statistics.median(d.get("p99_ms", d.get("p99", d.get("latency_ms", {}).get("p99", 0)))
                                        for d in ok)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--client", choices=list(REFERENCE), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("-c", "--connections", type=int, default=10)
    parser.add_argument("-s", "--size", type=int, default=1024)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args()
    if args.client:
        print(json.dumps(REFERENCE[args.client](args.port, args.connections, args.size, args.duration)))
        return 0
    names = ["sockkit-load", "ref-protocol", "ref-streams", "echoload"]
    results: dict[str, list[dict]] = {name: [] for name in names}
    proc, port = start_peer()
    try:
        for _ in range(args.runs):
            for name in names:
                command = client_command(name, port, args)
                if command is None:
                    continue
                results[name].append(measure(command, timeout=args.duration + 30))
    finally:
        proc.terminate()
        proc.wait(10)
    rows = [summarize(name, docs) for name, docs in results.items() if docs]
    print(f"bare uvloop echo peer, {args.connections} connections x {args.size} B, {args.duration:g} s, "
          f"median of {args.runs}")
    print(f"{'client':<14}{'req/s':>10}{'p99 ms':>9}{'CPU us/req':>12}{'CPU window s':>14}{'CPU total s':>13}")
    for row in rows:
        if row["runs"]:
            print(f"{row['client']:<14}{row['rps']:>10,.0f}{row['p99_ms']:>9.3f}{row['cpu_us_per_request']:>12.1f}"
                  f"{row['cpu_window_s']:>14.2f}{row['cpu_total_s']:>13.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"connections": args.connections, "size": args.size,
                                         "duration": args.duration, "runs": args.runs, "clients": rows,
                                         "raw": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
