#!/usr/bin/env python3
"""`make bench-fleet`: what accounting on PostgreSQL costs per GBS request, against the same
node on SQLite in the same run.

Two fresh release nodes (backend-disk), one with `accounting.engine sqlite`, one with
`postgres` on a throwaway cluster on this machine (as `tests/interop/pg.py` makes one: the
database is local, so the figures are round trips and CPU, not network latency). For each
request kind, `marsh-load` runs that phase alone against the PostgreSQL node and the count of
messages its pool sent (`marsh_accounting_round_trips_total` on `/metrics`) is divided by the
requests: allocation (with a one-chunk upload), a 1 MiB PATCH, a lease renewal, a mutable
read-test-write. Then one whole `marsh-load` run against each node: rates and server CPU side by
side.

Usage: fleet.py MARSH MARSH_LOAD SCRATCH_DIR
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "interop"))
from pg import Postgres  # noqa: E402

MARSH, LOAD, SCRATCH = sys.argv[1:4]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*args):
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


class Node:
    def __init__(self, name, settings):
        self.dir = os.path.join(SCRATCH, name)
        self.web = free_port()
        run(MARSH, "init", "--dir", self.dir, "--listen", f"127.0.0.1:{free_port()}",
            "--web-listen", f"127.0.0.1:{self.web}")
        for key, value in settings:
            run(MARSH, "config", "set", key, value, "--dir", self.dir)
        self.log = open(os.path.join(SCRATCH, f"{name}.log"), "w")
        self.proc = subprocess.Popen([MARSH, "run", "--dir", self.dir], stdout=subprocess.PIPE, stderr=self.log)
        self.nurl = self.proc.stdout.readline().decode().strip().removeprefix("marsh: serving ")

    def round_trips(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.web}/metrics", timeout=10) as r:
            text = r.read().decode()
        return int(float(re.search(r"^marsh_accounting_round_trips_total (\S+)$", text, re.M).group(1)))

    def load(self, *args):
        out = run(LOAD, "--nurl", self.nurl, "--pid", str(self.proc.pid), *args)
        return json.loads(out.strip().splitlines()[-1].removeprefix("RESULT "))

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=120)


NOTHING = ["--shares", "0", "--mutable", "0", "--renewals", "0", "--polls", "0"]


def phase(**overrides):
    args = dict(zip(NOTHING[::2], NOTHING[1::2]))
    args.update({f"--{k}": str(v) for k, v in overrides.items()})
    return [x for kv in args.items() for x in kv]


def main():
    shutil.rmtree(SCRATCH, ignore_errors=True)
    os.makedirs(SCRATCH)
    pg = Postgres(free_port())
    nodes = []
    try:
        lite = Node("sqlite", [])
        nodes.append(lite)
        post = Node("postgres", [("accounting.engine", "postgres"), ("accounting.postgres", pg.url())])
        nodes.append(post)
        # Round trips per request, each kind alone, after a warm-up run of the same kind (each
        # pooled connection prepares a statement once; the figures are the steady state).
        def measured(args):
            post.load(*args)
            before = post.round_trips()
            result = post.load(*args)
            return post.round_trips() - before, result

        n = 64
        one, _ = measured(phase(shares=n, size=1 << 20, chunk=1 << 20, concurrency=4))
        two, _ = measured(phase(shares=n, size=2 << 20, chunk=1 << 20, concurrency=4))
        small, _ = measured(phase(shares=1, size=4096, chunk=4096))
        renewals, _ = measured(phase(shares=1, size=4096, chunk=4096, renewals=2000))
        rtw, result = measured(phase(mutable=500))
        per = {
            "allocation, and the 1 MiB PATCH that completes the share": one / n,
            "1 MiB PATCH before the last": (two - one) / n,
            "lease renewal": (renewals - small) / 2000,
            "mutable read-test-write (marsh-load's mix of writes and reads)": rtw / result["mutable"]["requests"],
        }
        print("database round trips per request (accounting.engine postgres):")
        for kind, value in per.items():
            print(f"  {kind}: {value:.1f}")
        # The same whole workload against each node.
        workload = ["--shares", "32", "--size", str(8 << 20), "--chunk", str(1 << 20), "--concurrency", "4",
                    "--mutable", "2000", "--renewals", "5000", "--polls", "2000"]
        results = {node: node.load(*workload) for node in (lite, post)}
        print("marsh-load, the same workload against each engine (rates per second; server CPU seconds):")
        keys = sorted({k for r in results.values() for k in r if isinstance(r[k], dict)})
        for key in keys:
            cells = []
            for node, name in ((lite, "sqlite"), (post, "postgres")):
                r = results[node].get(key, {})
                cells.append(f"{name} {r.get('rps', '-')}/s, p99 {r.get('p99_ms', '-')} ms, server CPU {r.get('cpu_s', '-')} s")
            print(f"  {key}: " + "; ".join(cells))
        print("RESULT " + json.dumps({"round_trips": per, "sqlite": results[lite], "postgres": results[post]}))
    finally:
        for node in nodes:
            node.stop()
        pg.stop()


if __name__ == "__main__":
    main()
