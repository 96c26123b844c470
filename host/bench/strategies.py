#!/usr/bin/env python3
"""`make bench-s3` (part): lease renewals against a backend-disk node under each persistence
strategy, one after the other in one run, so `local` is the baseline of the same run.

For each strategy: a fresh node (release `marsh`, shares and strategy objects in the node's
local shares directory), `marsh-load` with RENEWALS renewals 4 at a time (after a handful of
small uploads to renew leases on), then the node is stopped (it hands its last changes over)
and the objects the strategy wrote are counted and sized.

Usage: strategies.py MARSH MARSH_LOAD SCRATCH_DIR [RENEWALS]
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time

MARSH, LOAD, SCRATCH = sys.argv[1:4]
RENEWALS = int(sys.argv[4]) if len(sys.argv) > 4 else 5000
PREFIXES = {"local": None, "records": "accounting", "stash": "stash"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*args):
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def objects(root):
    count = size = 0
    for d, _, files in os.walk(root):
        for f in files:
            count += 1
            size += os.path.getsize(os.path.join(d, f))
    return count, size


def bench(strategy):
    node = os.path.join(SCRATCH, f"node-{strategy}")
    run(MARSH, "init", "--dir", node, "--listen", f"127.0.0.1:{free_port()}", "--web-listen", "")
    run(MARSH, "config", "set", "persistence.plugin", strategy, "--dir", node)
    with open(os.path.join(SCRATCH, f"{strategy}.log"), "w") as log:
        proc = subprocess.Popen([MARSH, "run", "--dir", node], stdout=subprocess.PIPE, stderr=log)
        nurl = proc.stdout.readline().decode().strip().removeprefix("marsh: serving ")
        out = run(LOAD, "--nurl", nurl, "--pid", str(proc.pid), "--shares", "8", "--size", "4096",
                  "--chunk", "4096", "--concurrency", "4", "--mutable", "0", "--renewals", str(RENEWALS),
                  "--polls", "0")
        started = time.time()
        proc.terminate()
        proc.wait(timeout=120)
        stop = time.time() - started
    result = json.loads(out.strip().splitlines()[-1].removeprefix("RESULT "))
    lease = result["lease"]
    prefix = PREFIXES[strategy]
    count, size = objects(os.path.join(node + "-shares", prefix)) if prefix else (0, 0)
    return lease, count, size, stop


def main():
    if os.path.exists(SCRATCH):
        shutil.rmtree(SCRATCH)
    os.makedirs(SCRATCH)
    print(f"{RENEWALS} lease renewals, 4 at a time, backend-disk node, release build")
    print("| strategy | p50 ms | p99 ms | req/s | server CPU s | objects written | bytes | stop s |")
    print("|---|---|---|---|---|---|---|---|")
    for strategy in ["local", "records", "stash"]:
        lease, count, size, stop = bench(strategy)
        print(f"| {strategy} | {lease['p50_ms']:.2f} | {lease['p99_ms']:.2f} | {lease['rps']:.0f} | "
              f"{lease['cpu_s']} | {count} | {size} | {stop:.1f} |")


if __name__ == "__main__":
    main()
