"""Paired A/B with the C client: post-engine (main), pre-engine (3555a60) and the bare peers, rotating rounds.

Usage: ab.py MODELS ROUNDS SECONDS CONNS [OUT]; with --count, the third argument is a number of requests per
connection (echoload -n, 20 s cap) instead of seconds (the abn-c10.json run)."""
import json, os, re, statistics, subprocess, sys, time
NEW, OLD = "/work/wt-bench/.venv/bin/python", "/work/wt-bench-old/.venv/bin/python"
PEERS = "/work/wt-bench/benchmarks/peers"
ENV = dict(os.environ, MALLOC_MMAP_THRESHOLD_="1048576", MALLOC_TRIM_THRESHOLD_="4194304")
by_count = "--count" in sys.argv
if by_count:
    sys.argv.remove("--count")
models = sys.argv[1].split(",")
rounds, dur, conns = int(sys.argv[2]), sys.argv[3], sys.argv[4]
targets = {}
for m in models:
    extra = ["--workers", "16"] if m == "pool" else []
    targets[f"new-{m}"] = ([NEW, "-m", "sockkit", "serve", "echo", "--raw", "--quiet", "--model", m, "--port", "0", *extra], None)
    targets[f"old-{m}"] = ([OLD, "-m", "sockkit", "serve", "echo", "--raw", "--quiet", "--model", m, "--port", "0", *extra], None)
peer_of = {"uvloop": ("bare-uvloop", [NEW, f"{PEERS}/asyncio_protocol.py", "--loop", "uvloop"]),
           "asyncio": ("bare-asyncio", [NEW, f"{PEERS}/asyncio_protocol.py", "--loop", "asyncio"]),
           "select": ("bare-selectors", [NEW, f"{PEERS}/selectors_loop.py"]),
           "thread": ("threading-tcpserver", [NEW, f"{PEERS}/threading_tcpserver.py"]),
           "pool": ("threading-tcpserver", [NEW, f"{PEERS}/threading_tcpserver.py"])}
for m in models:
    name, cmd = peer_of[m]
    targets[name] = (cmd, ENV)
procs = {}
for name, (cmd, env) in targets.items():
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    while line := p.stdout.readline():
        mm = re.search(r"listening on \S*:(\d+)", line)
        if mm:
            break
    procs[name] = (p, int(mm.group(1)))
def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
names = list(procs)
res = {n: [] for n in names}
try:
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            p, port = procs[n]
            c0 = cpu(p.pid)
            out = subprocess.run(["/tmp/echoload", "-a", "127.0.0.1", "-p", str(port), "-c", conns, "-m", "1024",
                                  *(["-d", "20", "-n", dur] if by_count else ["-d", dur])],
                                 capture_output=True, text=True, timeout=60).stdout
            c1 = cpu(p.pid)
            d = json.loads(out.strip().splitlines()[-1])
            rps = d.get("rps") or d.get("req_per_s") or d.get("requests_per_sec")
            res[n].append({"rps": rps, "cpu_us": (c1 - c0) * 1e6 / max(1, d["messages"]),
                           "load": os.getloadavg()[0]})
        print(f"round {r+1}: " + ", ".join(f"{n} {res[n][-1]['rps']:,.0f}" for n in names), flush=True)
finally:
    for p, _ in procs.values():
        p.terminate()
    for p, _ in procs.values():
        p.wait()
json.dump(res, open(sys.argv[5], "w"), indent=1)
