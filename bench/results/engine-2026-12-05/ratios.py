import json, statistics, sys
PAIRS = [("uvloop", "bare-uvloop", 1.0), ("select", "bare-selectors", 1.0), ("asyncio", "bare-asyncio", 0.95),
         ("thread", "threading-tcpserver", 1.0), ("pool", "threading-tcpserver", 1.0)]
for d in sys.argv[1:]:
    s = json.load(open(f"{d}/summary.json"))
    for scen, rows in s["rows"].items():
        by = {r["target"]: r for r in rows}
        print(f"{d} {scen} (load max {s['environment']['loadavg_max']})")
        for m, p, goal in PAIRS:
            if m not in by or p not in by:
                continue
            a, b = by[m]["rps_runs"], by[p]["rps_runs"]
            paired = [x / y for x, y in zip(a, b) if x and y]
            ratio = by[m]["rps"] / by[p]["rps"]
            print(f"  {m:8s} {by[m]['rps']:>9,.0f} / {p:20s} {by[p]['rps']:>9,.0f} = {ratio:.3f}  "
                  f"paired median {statistics.median(paired):.3f} [{min(paired):.2f}-{max(paired):.2f}] n={len(paired)}  "
                  f"cost {by[m]['server_us_per_request']:.2f}/{by[p]['server_us_per_request']:.2f} us  goal {goal}"
                  + (f" held {by[m].get('idle_held')}/{by[p].get('idle_held')} p99 {by[m]['p99_ms']}/{by[p]['p99_ms']}" if by[m].get('idle_held') else ""))
