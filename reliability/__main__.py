"""``python -m reliability [--long] [--models a,b] [--scenarios x,y]``: run the suite, print the table."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reliability import (  # noqa: F401  (register scenarios)
    balancer_scenarios,
    client_scenarios,
    echo_hostile,
    getfile_hostile,
    getfile_scenarios,
    model_scenarios,
    proxy_scenarios,
    slot_hostile,
    tls_scenarios,
)
from reliability.suite import SCENARIOS, Scale, render, run_one, write


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make reliability", description=__doc__)
    parser.add_argument("--long", action="store_true", help="thousands of iterations, 5,000 idle connections")
    parser.add_argument("--models", default="", help="comma-separated subset of models")
    parser.add_argument("--scenarios", default="", help="comma-separated subset of scenarios")
    parser.add_argument("--out", type=Path, default=Path("reliability/results"))
    args = parser.parse_args(argv)
    scale = Scale(long=args.long)
    wanted_models = set(filter(None, args.models.split(",")))
    wanted = set(filter(None, args.scenarios.split(",")))
    rows = []
    for item in SCENARIOS.values():
        if wanted and item.name not in wanted:
            continue
        for model in item.models:
            if wanted_models and model not in wanted_models:
                continue
            row = run_one(item, model, scale)
            verdict = "skip" if row.skipped else ("PASS" if row.passed else "FAIL")
            print(f"{verdict:4} {row.scenario:<14} {row.model:<13} {row.figure}", flush=True)
            rows.append(row)
    print()
    print(render(rows))
    print(f"\nwritten to {write(rows, args.out, scale)}")
    return 0 if all(r.passed for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
