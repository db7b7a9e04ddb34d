import json, statistics, sys
res = json.load(open(sys.argv[1]))
peer = {"uvloop": "bare-uvloop", "select": "bare-selectors", "asyncio": "bare-asyncio", "thread": "threading-tcpserver", "pool": "threading-tcpserver"}
for m, p in peer.items():
    if f"new-{m}" not in res: continue
    line = f"{m:8s}"
    for side in ("new", "old"):
        a = res[f"{side}-{m}"]; b = res[p]
        pr = [x["rps"] / y["rps"] for x, y in zip(a, b)]
        cr = [x["cpu_us"] / y["cpu_us"] for x, y in zip(a, b)]
        line += (f" | {side}: {statistics.median(x['rps'] for x in a):>8,.0f} req/s, ratio {statistics.median(pr):.3f} "
                 f"[{min(pr):.2f}-{max(pr):.2f}], cpu {statistics.median(x['cpu_us'] for x in a):.2f} us ({statistics.median(cr):.2f}x)")
    line += f" | peer {statistics.median(x['rps'] for x in res[p]):,.0f}, {statistics.median(x['cpu_us'] for x in res[p]):.2f} us"
    print(line)
print("load", min(x["load"] for v in res.values() for x in v), max(x["load"] for v in res.values() for x in v))
