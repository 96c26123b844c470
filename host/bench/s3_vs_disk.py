#!/usr/bin/env python3
"""`make bench-s3`: 100 MiB through the real Tahoe-LAFS 1.20 client to a marsh node with
backend-disk and to one with backend-s3 on SeaweedFS (127.0.0.1), one after the other in one
run. For each: upload and download throughput (wall clock of `tahoe put` / `tahoe get`, 1-of-1
encoding so the node stores exactly the file's share), and for S3 the requests and bytes marsh
sent to the S3 server during each phase (marsh prints its counts when it stops, so the node is
restarted between the phases).

Run under tests/s3/with-s3.sh (it provides MARSH_TEST_S3_*).
Usage: s3_vs_disk.py MARSH TAHOE SCRATCH_DIR [MiB]
"""

import os
import random
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import json

MARSH, TAHOE, SCRATCH = sys.argv[1:4]
MIB = int(sys.argv[4]) if len(sys.argv) > 4 else 100


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*args, stdin=None):
    return subprocess.run(args, check=True, capture_output=True, text=True, stdin=stdin).stdout


def wait_for(what, predicate, timeout=90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if predicate():
                return
        except Exception:
            pass
        time.sleep(0.3)
    sys.exit(f"timed out waiting for {what}")


class Node:
    def __init__(self, name, backend):
        self.dir = os.path.join(SCRATCH, name)
        self.log_path = os.path.join(SCRATCH, f"{name}.log")
        run(MARSH, "init", "--dir", self.dir, "--listen", f"127.0.0.1:{free_port()}", "--nickname", name, "--web-listen", "")
        if backend == "s3":
            e = os.environ
            for k, v in [("backend.plugin", "s3"), ("store.shares", "s3"), ("s3.shares.endpoint", e["MARSH_TEST_S3_ENDPOINT"]),
                         ("s3.shares.bucket", e["MARSH_TEST_S3_BUCKET"]), ("s3.shares.region", e["MARSH_TEST_S3_REGION"]),
                         ("s3.shares.prefix", f"bench-{os.getpid()}-{int(time.time())}/"), ("s3.shares.path-style", "true"),
                         ("s3.shares.access-key-id", e["MARSH_TEST_S3_ACCESS_KEY"]),
                         ("s3.shares.secret-access-key", e["MARSH_TEST_S3_SECRET_KEY"])]:
                run(MARSH, "config", "set", k, v, "--dir", self.dir)
        announce = run(MARSH, "announce", "--dir", self.dir).splitlines()
        self.entry = "\n".join(announce[announce.index("storage:") + 1:])
        self.proc = None

    def start(self):
        self.log = open(self.log_path, "a")
        self.proc = subprocess.Popen([MARSH, "run", "--dir", self.dir], stdout=subprocess.PIPE, stderr=self.log)
        line = self.proc.stdout.readline().decode()
        assert "serving pb://" in line, line

    def stop(self):
        """Stop; the S3 request counts marsh printed, if any."""
        self.proc.terminate()
        self.proc.wait(timeout=60)
        self.log.close()
        lines = [l for l in open(self.log_path).read().splitlines() if "store `shares` (s3://" in l]
        if not lines:
            return None
        m = re.search(r"(\d+) requests \(GET (\d+), HEAD (\d+), PUT (\d+), POST (\d+), DELETE (\d+)\), (\d+) bytes sent, (\d+) bytes received", lines[-1])
        keys = ["requests", "get", "head", "put", "post", "delete", "sent", "received"]
        return dict(zip(keys, map(int, m.groups())))


class Client:
    def __init__(self, name, node):
        self.dir = os.path.join(SCRATCH, name)
        self.web = free_port()
        run(TAHOE, "create-client", "--webport", f"tcp:{self.web}:interface=127.0.0.1", "--shares-needed", "1",
            "--shares-happy", "1", "--shares-total", "1", "--nickname", name, self.dir)
        with open(os.path.join(self.dir, "private", "servers.yaml"), "w") as f:
            f.write("storage:\n" + node.entry + "\n")
        self.proc = subprocess.Popen([TAHOE, "run", self.dir], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_for("the client's web API", lambda: urllib.request.urlopen(f"http://127.0.0.1:{self.web}/", timeout=5))
        self.wait_connected()

    def wait_connected(self):
        def connected():
            with urllib.request.urlopen(f"http://127.0.0.1:{self.web}/?t=json", timeout=5) as r:
                return any(s.get("connection_status", "").lower().startswith("connected") for s in json.load(r)["servers"])
        wait_for("the client to connect", connected)

    def tahoe(self, *args):
        return run(TAHOE, "-d", self.dir, *args)


def measure(backend, source):
    node = Node(f"node-{backend}", backend)
    node.start()
    client = Client(f"client-{backend}", node)
    t = time.monotonic()
    cap = client.tahoe("put", source).strip()
    up = time.monotonic() - t
    up_stats = node.stop()
    node.start()
    client.wait_connected()
    out = os.path.join(SCRATCH, f"out-{backend}")
    t = time.monotonic()
    client.tahoe("get", cap, out)
    down = time.monotonic() - t
    down_stats = node.stop()
    client.proc.terminate()
    assert open(out, "rb").read() == open(source, "rb").read(), f"{backend}: the download differs"
    os.remove(out)
    return up, down, up_stats, down_stats


def main():
    shutil.rmtree(SCRATCH, ignore_errors=True)
    os.makedirs(SCRATCH)
    source = os.path.join(SCRATCH, "source.bin")
    with open(source, "wb") as f:
        f.write(random.Random(1).randbytes(MIB << 20))
    results = {b: measure(b, source) for b in ["disk", "s3"]}
    print(f"\n{MIB} MiB through the Tahoe-LAFS 1.20 client (1-of-1), one node, 127.0.0.1")
    print(f"{'backend':<14}{'upload MiB/s':>14}{'download MiB/s':>16}")
    for b, (up, down, _, _) in results.items():
        print(f"{b:<14}{MIB / up:>14.1f}{MIB / down:>16.1f}")
    d, s = results["disk"], results["s3"]
    print(f"s3/disk       {d[0] / s[0]:>14.2f}{d[1] / s[1]:>16.2f}")
    for phase, stats in [("upload", s[2]), ("download", s[3])]:
        per = 100 / MIB
        print(f"\nS3 requests during the {phase}, per 100 MiB of file: {stats['requests'] * per:.0f} "
              f"(GET {stats['get'] * per:.0f}, HEAD {stats['head'] * per:.0f}, PUT {stats['put'] * per:.0f}, "
              f"POST {stats['post'] * per:.0f}, DELETE {stats['delete'] * per:.0f}); "
              f"sent {stats['sent'] * per / 2**20:.1f} MiB, received {stats['received'] * per / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
