#!/usr/bin/env python3
"""`make bench`, second half: the same GBS workload against marsh (backend-disk as a wasm
plugin), marsh (the same backend linked natively), the Python tahoe-lafs 1.20 storage node,
and `marsh-floor` (marsh's TLS and HTTP stack with nothing behind it but files: the least any
server on this stack costs), one after the other on this machine, plus the disk's own fsync'd
write bandwidth, in one run. Prints a table of medians with ratios against the Python server,
wasm against native and wasm against the floor, then the spread of the main rows. The floor
serves only uploads, downloads and `version`: its mutable and lease cells stay empty.

After the tables it prints issue 31's targets (marsh against the floor and against the Python
node, each met or not) and, given MARSH_BENCH_CIPHER, the floor's user-space CPU per GiB beside
what the TLS record cipher alone costs on this CPU. Each run's medians are kept in
SCRATCH_DIR/../bench-last.json and the previous run's are printed beside the targets.

Run with the tahoe venv's python (it needs `cryptography` to read the reference node's
certificate). Usage: side_by_side.py MARSH MARSH_LOAD TAHOE SCRATCH_DIR MARSH_FLOOR [MARSH_BENCH_CIPHER]
Every server listens on 127.0.0.1; every request goes there. Each marsh node is started once
before it is measured, so its compiled plugin comes from its cache, as after any restart.

Two things keep the comparison fair on a shared VM:
- Rounds. The whole sequence runs ROUNDS times (default 3, `MARSH_BENCH_ROUNDS` to change),
  each round starting with a different server, and every cell is the median over rounds; the
  spread of the main rows is printed under the table.
- Recycled page cache. On this kind of VM the first touch of guest memory that was never used
  costs a hypervisor fault: writing 1 GiB into fresh page cache took 1.75 s of kernel time
  here, 0.30 s when the pages had been used before (`dd ... conv=fsync`, three runs). A server
  that has run for a while writes into recycled pages, so before the disk measurement and
  before each server the harness writes and deletes as many bytes as the workload will write.
"""

import base64
import hashlib
import json
import os
import resource
import shutil
import statistics
import socket
import subprocess
import sys
import time

MARSH, LOAD, TAHOE, SCRATCH, FLOOR = sys.argv[1:6]
CIPHER = sys.argv[6] if len(sys.argv) > 6 else None
# 4 shares of 256 MiB: 1 GiB each way, so one tick of the kernel's CPU clock (10 ms) is about 1%
# of the floor's CPU per GiB and a 5% target is not lost in rounding.
SHARES, CHUNK, CONCURRENCY = 4, 1 << 20, 4
SIZE = int(os.environ.get("MARSH_BENCH_SHARE_MIB", "256")) << 20
IDLE_CLIENTS, IDLE_SECONDS = 1000, 10
MANY, MANY_SIZE = 32, 8 << 20
ROUNDS = max(1, int(os.environ.get("MARSH_BENCH_ROUNDS", "3")))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*args):
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def write_fsynced(path, buf, count):
    """Write `buf` `count` times to a new file at `path`, then fsync it."""
    with open(path, "wb") as f:
        for _ in range(count):
            f.write(buf)
        f.flush()
        os.fsync(f.fileno())


def disk_bandwidth(directory):
    """MiB/s of plain 1 MiB writes to SHARES files of SIZE bytes, each fsynced: the physical limit."""
    buf = os.urandom(CHUNK)
    start = time.time()
    for i in range(SHARES):
        write_fsynced(os.path.join(directory, f"disk-{i}"), buf, SIZE // CHUNK)
    elapsed = time.time() - start
    for i in range(SHARES):
        os.remove(os.path.join(directory, f"disk-{i}"))
    return SHARES * SIZE / (1 << 20) / elapsed


def recycle_page_cache(directory):
    """Write, fsync and delete as many bytes as one server's workload writes, so the pages the
    next measurement writes into have been used before (see the module doc)."""
    path = os.path.join(directory, "recycle")
    write_fsynced(path, bytes(CHUNK), (SHARES * SIZE + MANY * MANY_SIZE) // CHUNK)
    os.remove(path)


def load(nurl, pid, extra):
    out = run(LOAD, "--nurl", nurl, "--pid", str(pid), *extra)
    for line in out.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):]), out
    raise RuntimeError(f"no RESULT line from marsh-load:\n{out}")


def workloads(nurl, pid, small_writes=True):
    per_kind = "200" if small_writes else "0"
    main, text = load(nurl, pid, ["--shares", str(SHARES), "--size", str(SIZE), "--chunk", str(CHUNK),
                                  "--concurrency", str(CONCURRENCY), "--mutable", per_kind, "--renewals", per_kind,
                                  "--polls", "1000", "--idle-clients", str(IDLE_CLIENTS), "--idle-seconds", str(IDLE_SECONDS)])
    many, _ = load(nurl, pid, ["--shares", str(MANY), "--size", str(MANY_SIZE), "--chunk", str(CHUNK), "--concurrency", str(MANY),
                               "--mutable", "0", "--renewals", "0", "--polls", "0"])
    main["peak_rss_32_kib"] = many["peak_rss_kib"]
    return main, text


def marsh_server(name, native):
    node = os.path.join(SCRATCH, name)
    port = free_port()
    run(MARSH, "init", "--dir", node, "--listen", f"127.0.0.1:{port}", "--storage-dir", node + "-shares", "--web-listen", "")
    run(MARSH, "config", "set", "storage.reserved-space", "0", "--dir", node)
    # Every simulated client connects from 127.0.0.1: the per-address cap is for real grids.
    run(MARSH, "config", "set", "http.max-connections", str(2 * IDLE_CLIENTS), "--dir", node)
    run(MARSH, "config", "set", "http.max-connections-per-peer", str(2 * IDLE_CLIENTS), "--dir", node)
    if native:
        run(MARSH, "config", "set", "backend.plugin", "native:disk", "--dir", node)
    # Start once and stop, as any node that has been restarted once: the first start compiles
    # the plugin into cache/plugins, which leaves the compiler's freed memory in the heap.
    warm = subprocess.Popen([MARSH, "run", "--dir", node], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    warm.stdout.readline()
    stop(warm)
    proc = subprocess.Popen([MARSH, "run", "--dir", node], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    if "serving pb://" not in line:
        raise RuntimeError(f"{name} did not start: {line!r}")
    time.sleep(1)
    return proc, line.split("serving ", 1)[1].strip()


def python_server():
    node = os.path.join(SCRATCH, "tahoe-storage")
    port = free_port()
    run(TAHOE, "create-node", "--listen=tcp", f"--port=tcp:{port}:interface=127.0.0.1", f"--location=tcp:127.0.0.1:{port}",
        "--webport=none", "--nickname=reference", node)
    with open(os.path.join(node, "tahoe.cfg")) as f:
        cfg = f.read().replace("reserved_space = 1G", "reserved_space = 0")
    with open(os.path.join(node, "tahoe.cfg"), "w") as f:
        f.write(cfg)
    # `tahoe run` stops when its stdin closes: keep a pipe open.
    proc = subprocess.Popen([TAHOE, "run", node], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    furl_path = os.path.join(node, "private", "storage.furl")
    deadline = time.time() + 60
    while not os.path.exists(furl_path):
        if time.time() > deadline or proc.poll() is not None:
            raise RuntimeError("the Python storage node did not start")
        time.sleep(0.2)
    time.sleep(2)
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    with open(os.path.join(node, "private", "node.pem"), "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    spki_hash = base64.urlsafe_b64encode(hashlib.sha256(spki).digest()).rstrip(b"=").decode()
    with open(furl_path) as f:
        swissnum = f.read().strip().rsplit("/", 1)[1]
    return proc, f"pb://{spki_hash}@127.0.0.1:{port}/{swissnum}#v=1"


def floor_server():
    proc = subprocess.Popen([FLOOR, os.path.join(SCRATCH, "floor")], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    line = proc.stdout.readline()
    if "serving pb://" not in line:
        raise RuntimeError(f"marsh-floor did not start: {line!r}")
    time.sleep(1)
    return proc, line.split("serving ", 1)[1].strip()


def stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


SERVERS = ["marsh wasm", "marsh native", "python 1.20", "floor"]
STARTERS = {"marsh wasm": lambda: marsh_server("marsh-wasm", False),
            "marsh native": lambda: marsh_server("marsh-native", True),
            "python 1.20": python_server,
            "floor": floor_server}


def lookup(result, path):
    v = result
    for p in path:
        v = v.get(p) if isinstance(v, dict) else None
    return v


def negotiated_suite(nurl):
    """The TLS suite the 1.20 client's own context (Twisted's `CertificateOptions`, as
    `allmydata.storage.http_client` builds it, without its pinning check) agrees with `nurl`."""
    from OpenSSL import SSL
    from twisted.internet.ssl import CertificateOptions
    host, port = nurl.split("@", 1)[1].split("/", 1)[0].removeprefix("tcp:").rsplit(":", 1)
    with socket.create_connection((host, int(port))) as sock:
        conn = SSL.Connection(CertificateOptions().getContext(), sock)
        conn.set_connect_state()
        conn.do_handshake()
        suite, version = conn.get_cipher_name(), conn.get_protocol_version_name()
        conn.shutdown()
    return suite, version


def cipher_alone(marsh_nurl):
    """What the suite the client negotiates costs alone, from marsh-bench-cipher (run on an idle
    machine, before any server): {suite, open, seal} in s/GiB."""
    suite, version = negotiated_suite(marsh_nurl)
    result = json.loads(run(CIPHER).strip().splitlines()[-1].removeprefix("RESULT "))
    # OpenSSL's name for a TLS 1.3 suite is its IANA name; rustls prefixes it with TLS13_.
    figures = result["TLS13_" + suite.removeprefix("TLS_")]
    print(f"the 1.20 client's TLS context negotiates {suite} ({version}) with marsh")
    return {"suite": suite, "open": figures["open_s_per_gib"], "seal": figures["seal_s_per_gib"]}


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    if os.path.exists(SCRATCH):
        shutil.rmtree(SCRATCH)
    os.makedirs(SCRATCH)
    cipher = None
    if CIPHER:
        proc, nurl = STARTERS["marsh wasm"]()
        try:
            cipher = cipher_alone(nurl)
        finally:
            stop(proc)
            for d in os.listdir(SCRATCH):
                shutil.rmtree(os.path.join(SCRATCH, d), ignore_errors=True)
    disks = []
    runs = {name: [] for name in SERVERS}
    for r in range(ROUNDS):
        recycle_page_cache(SCRATCH)
        disks.append(disk_bandwidth(SCRATCH))
        order = SERVERS[r % len(SERVERS):] + SERVERS[:r % len(SERVERS)]
        for name in order:
            recycle_page_cache(SCRATCH)
            proc, nurl = STARTERS[name]()
            try:
                result, text = workloads(nurl, proc.pid, small_writes=name != "floor")
                runs[name].append(result)
                print(f"--- round {r + 1}/{ROUNDS}: {name} ---\n{text}", flush=True)
            finally:
                stop(proc)
                # Its shares go too, so every server runs beside the same data on disk.
                for d in os.listdir(SCRATCH):
                    shutil.rmtree(os.path.join(SCRATCH, d), ignore_errors=True)
    shutil.rmtree(SCRATCH, ignore_errors=True)
    disk = statistics.median(disks)

    short = []

    def values(name, path):
        # A phase that made no requests (the floor's mutable and lease phases) has no figures.
        ran = [res for res in runs[name] if len(path) == 1 or lookup(res, (path[0], "requests")) != 0]
        return [v for v in (lookup(res, path) for res in ran) if v is not None]

    def g(name, path):
        vals = values(name, path)
        if 0 < len(vals) < ROUNDS:
            short.append(f"{name}: {' '.join(path)} from {len(vals)} of {ROUNDS} rounds")
        return statistics.median(vals) if vals else None

    def spread(name, path):
        vals = values(name, path)
        return f"{min(vals):.2f}-{max(vals):.2f}" if vals else "-"

    rows = [
        (f"upload MiB/s ({SHARES} x {SIZE >> 20} MiB, {CONCURRENCY} at once)", ("upload", "mib_s")),
        ("download MiB/s (1 MiB ranged reads)", ("download", "mib_s")),
        ("server CPU s per GiB uploaded", ("upload", "cpu_s_per_gib")),
        ("server CPU s per GiB downloaded", ("download", "cpu_s_per_gib")),
        ("of it in the kernel, uploaded", ("upload", "kernel_cpu_s_per_gib")),
        ("of it in the kernel, downloaded", ("download", "kernel_cpu_s_per_gib")),
        ("load generator CPU s per GiB uploaded (same cores)", ("upload", "client_cpu_s_per_gib")),
        ("upload p50 ms per 1 MiB PATCH", ("upload", "p50_ms")),
        ("mutable read-test-write req/s", ("mutable", "rps")),
        ("mutable read-test-write p99 ms", ("mutable", "p99_ms")),
        ("lease renewal req/s", ("lease", "rps")),
        ("version p50 ms", ("version", "p50_ms")),
        (f"{IDLE_CLIENTS} idle clients polling version: % of one core", ("idle", "core_percent")),
        ("idle RSS MiB", ("idle_rss_kib",)),
        ("idle RSS MiB, anonymous (private) part", ("idle_anon_kib",)),
        ("peak RSS MiB (main run)", ("peak_rss_kib",)),
        (f"peak RSS MiB ({MANY} concurrent {MANY_SIZE >> 20} MiB uploads)", ("peak_rss_32_kib",)),
    ]
    print(f"\nSide by side, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, median of {ROUNDS} rounds; "
          f"disk's own fsync'd write bandwidth: {disk:.0f} MiB/s (rounds: {', '.join(f'{d:.0f}' for d in disks)})")
    print("| measure | marsh wasm | marsh native | python 1.20 | floor | wasm / python | native / python "
          "| wasm / native | wasm / floor |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, path in rows:
        vals = [g(n, path) for n in SERVERS]
        if path[-1].endswith("_kib"):
            vals = [v / 1024 if v is not None else None for v in vals]
        cells = [f"{v:.2f}" if v is not None else "-" for v in vals]
        ratio = lambda a, b: f"{a / b:.2f}" if a is not None and b not in (None, 0) else "-"
        print(f"| {label} | {' | '.join(cells)} | {ratio(vals[0], vals[2])} | "
              f"{ratio(vals[1], vals[2])} | {ratio(vals[0], vals[1])} | {ratio(vals[0], vals[3])} |")
    print(f"\nSpread over the {ROUNDS} rounds (min-max):")
    print("| measure | marsh wasm | marsh native | python 1.20 | floor |")
    print("|---|---|---|---|---|")
    spread_rows = {("upload", "mib_s"), ("download", "mib_s"), ("upload", "cpu_s_per_gib"),
                   ("download", "cpu_s_per_gib"), ("idle", "core_percent")}
    for label, path in [r for r in rows if r[1] in spread_rows]:
        print(f"| {label} | {' | '.join(spread(n, path) for n in SERVERS)} |")
    for line in dict.fromkeys(short):
        print(f"note: {line}")
    up = g("marsh wasm", ("upload", "mib_s"))
    print(f"\nmarsh wasm upload as a fraction of the disk's fsync'd bandwidth: {up / disk * 100:.0f}%")
    targets(g, runs, cipher)


# Issue 31's targets: (label, path, the server compared with, how the two must relate, words).
TARGETS = [
    ("server CPU s per GiB uploaded", ("upload", "cpu_s_per_gib"), "floor", lambda m, o: m <= o * 1.05,
     "within 5% of the floor"),
    ("server CPU s per GiB downloaded", ("download", "cpu_s_per_gib"), "floor", lambda m, o: m <= o * 1.10,
     "within 10% of the floor"),
    (f"{IDLE_CLIENTS} idle clients: % of one core", ("idle", "core_percent"), "floor", lambda m, o: m <= o + 1,
     "within 1 point of the floor"),
    ("mutable read-test-write req/s", ("mutable", "rps"), "python 1.20", lambda m, o: m >= 2 * o,
     "twice Python's in every round"),
    ("lease renewal req/s", ("lease", "rps"), "python 1.20", lambda m, o: m >= 3 * o, "three times Python's"),
    (f"peak RSS MiB, {MANY} concurrent {MANY_SIZE >> 20} MiB uploads", ("peak_rss_32_kib",), "python 1.20",
     lambda m, o: m <= o / 2, "half Python's"),
]


def targets(g, runs, cipher):
    last = os.path.join(os.path.dirname(os.path.abspath(SCRATCH)), "bench-last.json")
    previous = {}
    if os.path.exists(last):
        with open(last) as f:
            previous = json.load(f)
    now = {}
    print("\nIssue 31's targets (medians; in brackets the previous run's, from bench-last.json):")
    print("| measure | marsh wasm | against | its figure | target | met |")
    print("|---|---|---|---|---|---|")
    for label, path, other, ok, words in TARGETS:
        m, o = g("marsh wasm", path), g(other, path)
        if path[-1].endswith("_kib"):
            m, o = (v / 1024 if v is not None else None for v in (m, o))
        now[label] = [m, o]
        if m is None or o is None:
            print(f"| {label} | - | {other} | - | {words} | not measured |")
            continue
        met = ok(m, o)
        if "every round" in words:
            pairs = zip((r[path[0]][path[1]] for r in runs["marsh wasm"]), (r[path[0]][path[1]] for r in runs[other]))
            met = all(ok(a, b) for a, b in pairs)
        prev = previous.get(label)
        was = lambda i: f" ({prev[i]:.2f})" if prev and prev[i] is not None else ""
        print(f"| {label} | {m:.2f}{was(0)} | {other} | {o:.2f}{was(1)} | {words} | {'yes' if met else 'no'} |")
    if cipher:
        print("\nThe floor's user-space CPU (its CPU per GiB less its kernel part) beside the TLS record cipher alone "
              f"({cipher['suite']}, ring, marsh-bench-cipher):")
        print("| direction | floor, all | floor, kernel | floor, user space | cipher alone | user space less cipher |")
        print("|---|---|---|---|---|---|")
        for direction, op in [("upload", "open"), ("download", "seal")]:
            total, kernel = g("floor", (direction, "cpu_s_per_gib")), g("floor", (direction, "kernel_cpu_s_per_gib"))
            alone = cipher[op]
            user = total - kernel
            now[f"floor user {direction}"] = [user, alone]
            print(f"| {direction} | {total:.2f} | {kernel:.2f} | {user:.2f} | {alone:.2f} | {user - alone:.2f} |")
    with open(last, "w") as f:
        json.dump(now, f)


if __name__ == "__main__":
    main()
