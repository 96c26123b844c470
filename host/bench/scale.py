#!/usr/bin/env python3
"""`make bench-scale`: how marsh's costs grow with what a node holds.

For each share count N: a Tahoe 1.20 storage node holding N shares (`tahoe_tree.py`: 98% small
immutable shares of 1 KiB, 2% mutable, one lease each, 1% of them expired a day ago) is taken in
by `marsh adopt` into the default disk backend, the seeding route this measures too (each share
copied through the backend and recorded in the accountant, as any adopted node is). Then, on the
release build:

- start-up: `marsh run` to its serving line;
- idle RSS, 3 s after the serving line;
- `/`, `/storage?t=json` and `/metrics` on the web listener, and `marsh status`: median of 5;
- allocation (upload of a 4 KiB share) and lease renewal rates, `marsh-load`, 4 at a time;
- accounting database bytes per share (`cache/accountant.sqlite` and its log);
- the node stopped, one `marsh gc` pass (expiry on, by each lease's own date): the 1% expired;
- `marsh recover` with the node's strategy (`local`: the database checked and kept).

Usage: scale.py MARSH MARSH_LOAD WORK_DIR [N ...]   (default N: 1000 100000 1000000)
"""

import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

from tahoe_tree import make_node


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*args):
    start = time.monotonic()
    out = subprocess.run(args, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{out.stdout}{out.stderr}")
    return time.monotonic() - start, out.stdout + out.stderr


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def median_ms(call, times=5):
    samples = []
    for _ in range(times):
        start = time.monotonic()
        call()
        samples.append((time.monotonic() - start) * 1000)
    return statistics.median(samples)


def get(url):
    with urllib.request.urlopen(url, timeout=60) as r:
        r.read()


def database_bytes(node):
    """The accounting database's bytes, its write-ahead log included."""
    total = 0
    for name in os.listdir(os.path.join(node, "cache")):
        if name.startswith("accountant.sqlite"):
            total += os.path.getsize(os.path.join(node, "cache", name))
    return total


def one(marsh, load, work, n):
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    tahoe, node = os.path.join(work, "tahoe"), os.path.join(work, "node")
    mutables = n // 50
    start = time.monotonic()
    make_node(tahoe, n - mutables, 1024, mutables=mutables, expired=100)
    made = time.monotonic() - start
    port, web = free_port(), free_port()
    adopt, _ = run(marsh, "adopt", tahoe, "--dir", node, "--listen", f"127.0.0.1:{port}",
                   "--public-host", "127.0.0.1", "--public-port", str(port),
                   "--set", f"web.listen=127.0.0.1:{web}", "--set", "expire.enabled=true")
    subprocess.run(["rm", "-rf", tahoe], check=True)  # faster than shutil at a million files
    row = {"n": n, "made_s": made, "adopt_s": adopt}

    start = time.monotonic()
    proc = subprocess.Popen([marsh, "run", "--dir", node], stdout=subprocess.PIPE,
                            stderr=open(os.path.join(work, "node.log"), "w"))
    line = proc.stdout.readline().decode().strip()
    row["start_s"] = time.monotonic() - start
    if not line.startswith("marsh: serving "):
        sys.exit(f"marsh run did not serve: {line!r}; see {work}/node.log")
    nurl = line.removeprefix("marsh: serving ")
    try:
        time.sleep(3)
        row["rss_mib"] = rss_mib(proc.pid)
        base = f"http://127.0.0.1:{web}"
        row["web_ms"] = median_ms(lambda: get(base + "/"))
        row["json_ms"] = median_ms(lambda: get(base + "/storage?t=json"))
        row["metrics_ms"] = median_ms(lambda: get(base + "/metrics"))
        row["status_ms"] = median_ms(lambda: run(marsh, "status", "--dir", node))
        _, out = run(load, "--nurl", nurl, "--pid", str(proc.pid), "--shares", "400", "--size", "4096",
                     "--chunk", "4096", "--concurrency", "4", "--mutable", "0", "--renewals", "2000",
                     "--polls", "0")
        result = out.strip().splitlines()[-1]
        row["alloc_rps"] = float(re.search(r'"upload":\{[^}]*"rps":([0-9.]+)', result).group(1))
        row["renew_rps"] = float(re.search(r'"lease":\{[^}]*"rps":([0-9.]+)', result).group(1))
    finally:
        proc.terminate()
        proc.wait(timeout=300)
    row["db_bytes_per_share"] = database_bytes(node) / n
    row["gc_s"], out = run(marsh, "gc", "--dir", node)
    row["gc_out"] = out.strip().splitlines()[-1] if out.strip() else ""
    row["recover_s"], _ = run(marsh, "recover", "--dir", node)
    subprocess.run(["rm", "-rf", work], check=True)
    return row


def main():
    marsh, load, work = sys.argv[1:4]
    counts = [int(a) for a in sys.argv[4:]] or [1000, 100_000, 1_000_000]
    rows = []
    for n in counts:
        row = one(marsh, load, os.path.join(work, str(n)), n)
        print(f"{n} shares: {row}", flush=True)
        rows.append(row)
    print()
    print("| shares | adopt s | start-up s | idle RSS MiB | `/` ms | `/storage?t=json` ms | `/metrics` ms "
          "| `marsh status` ms | allocations/s | renewals/s | DB bytes/share | gc pass s | recover s |")
    print("|" + "---|" * 13)
    for r in rows:
        print(f"| {r['n']:,} | {r['adopt_s']:.1f} | {r['start_s']:.2f} | {r['rss_mib']:.0f} | {r['web_ms']:.1f} "
              f"| {r['json_ms']:.1f} | {r['metrics_ms']:.1f} | {r['status_ms']:.0f} | {r['alloc_rps']:.0f} "
              f"| {r['renew_rps']:.0f} | {r['db_bytes_per_share']:.0f} | {r['gc_s']:.2f} | {r['recover_s']:.2f} |")
    for r in rows:
        print(f"gc at {r['n']:,}: {r['gc_out']}")


if __name__ == "__main__":
    main()
