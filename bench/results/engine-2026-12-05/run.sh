#!/bin/bash
# Paired rounds: post-engine (main) and pre-engine (3555a60) alternate; each a single `sockkit bench models` run.
set -u
M=uvloop,select,asyncio,thread,pool
P=bare-uvloop,bare-asyncio,bare-selectors,threading-tcpserver
OUT=/tmp/benchruns
for round in 1 2; do
  for side in new old; do
    if [ $side = new ]; then W=/work/wt-bench; else W=/work/wt-bench-old; fi
    echo "=== round $round $side start $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)"
    (cd $W && timeout 900 .venv/bin/python -m sockkit bench models --scenarios short,hundred --models $M --peers $P \
       --runs 7 --other-runs 3 --out $OUT/$side-$round > $OUT/$side-$round.log 2>&1)
    echo "=== round $round $side end $(date -u +%T) rc $?"
  done
done
for side in new old; do
  if [ $side = new ]; then W=/work/wt-bench; else W=/work/wt-bench-old; fi
  echo "=== idle $side start $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)"
  (cd $W && timeout 1200 .venv/bin/python -m sockkit bench models --scenarios idle10k --models uvloop,select,asyncio \
     --peers bare-uvloop,bare-asyncio,bare-selectors --other-runs 3 --out $OUT/$side-idle > $OUT/$side-idle.log 2>&1)
  echo "=== idle $side end $(date -u +%T) rc $?"
done
