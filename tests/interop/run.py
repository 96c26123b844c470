#!/usr/bin/env python3
"""Interop with the real Tahoe-LAFS 1.20 client (run by `make test`, after the Rust tests).

Starts marsh nodes on 127.0.0.1 from a fresh `marsh init`, points a stock `tahoe` client at
them through the `servers.yaml` entry `marsh announce` prints, and checks byte for byte:
immutable files (multi-MiB and small), directories with `cp -r` both ways, SDMF and MDMF
mutable files (overwrite, and an MDMF partial write through the web API), `check --verify`,
`deep-check --add-lease`; that the client spoke HTTP (marsh's request log); that nothing in
NODE_DIR outside cache/ changed. The whole workload runs twice: on a node with backend-disk
and on one with backend-s3 over the SeaweedFS that `make interop` starts (MARSH_TEST_S3_*).
Then disaster recovery with backend-s3 and each durable persistence strategy (`records`, and
`stash` with snapshots): accounts, attributes and leases come back through `marsh recover` (and
by themselves with `recovery.auto`) after NODE_DIR is replaced by its post-init backup, and the
client reads every file. Then a node listening only on a Unix socket, reached through a TCP
relay as a Tor onion service reaches it, serves the client, and its web listener's Tahoe and
Prometheus figures count that client's traffic. Last, a grid of three marsh nodes survives the
loss of one.

Usage: run.py MARSH_BINARY TAHOE_BINARY
Prints one line per check and a final "N passed, N failed"; exits 1 on any failure.
"""

import hashlib
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

MARSH, TAHOE = sys.argv[1], sys.argv[2]
WORK = tempfile.mkdtemp(prefix="marsh-interop-")
PROCS = []
RESULTS = []


def _ephemeral_range():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def free_port():
    """A port free now on 127.0.0.1, from below the kernel's ephemeral range. A port the kernel
    handed out for `bind(0)` is in that range, and between this call and the server's own bind
    any outgoing connection may take it as its local port (CI once saw a Tahoe node fail with
    "Address already in use" that way); below the range only explicit binds compete."""
    low, _ = _ephemeral_range()
    for _ in range(1000):
        port = random.randrange(10000, max(low, 10001))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def run(*args, input=None, check=True, timeout=300):
    p = subprocess.run(args, input=input, capture_output=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} exited {p.returncode}:\n{p.stdout.decode()}\n{p.stderr.decode()}")
    return p.stdout.decode()


def wait_for(what, predicate, timeout=90):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            if predicate():
                return
        except Exception as e:  # not ready yet
            last = e
        time.sleep(0.5)
    raise RuntimeError(f"timed out waiting for {what}: {last}")


def s3_settings(prefix):
    """`marsh config` settings for backend-s3 on the test S3 server (started by `make interop`)."""
    env = lambda k: os.environ.get(k) or sys.exit(f"{k} is not set: run through `make interop` (it starts SeaweedFS)")
    return [("backend.plugin", "s3"), ("store.shares", "s3"), ("s3.shares.endpoint", env("MARSH_TEST_S3_ENDPOINT")),
            ("s3.shares.bucket", env("MARSH_TEST_S3_BUCKET")), ("s3.shares.region", env("MARSH_TEST_S3_REGION")),
            ("s3.shares.prefix", prefix), ("s3.shares.path-style", "true"),
            ("s3.shares.access-key-id", env("MARSH_TEST_S3_ACCESS_KEY")),
            ("s3.shares.secret-access-key", env("MARSH_TEST_S3_SECRET_KEY"))]


class Node:
    def __init__(self, name, backend="disk", settings=()):
        self.name = name
        self.dir = os.path.join(WORK, name)
        self.port = free_port()
        run(MARSH, "init", "--dir", self.dir, "--listen", f"127.0.0.1:{self.port}", "--nickname", name, "--web-listen", "")
        if backend == "s3":
            settings = s3_settings(f"interop-{os.getpid()}-{int(time.time())}/{name}/") + list(settings)
        for key, value in settings:
            run(MARSH, "config", "set", key, value, "--dir", self.dir)
        # The operator's backup: NODE_DIR right after init and config.
        shutil.copytree(self.dir, self.dir + ".backup", symlinks=True)
        self.log = open(os.path.join(WORK, f"{name}.log"), "w+")
        line = self.start()
        if "serving pb://" not in line:
            raise RuntimeError(f"{name} did not start: {line!r}, log:\n{self.log_text()}")
        self.announce = run(MARSH, "announce", "--dir", self.dir)

    def start(self):
        """Run the node; the first line it printed (or its exit status and stderr if it stopped)."""
        self.log_mark = os.path.getsize(self.log.name)  # where this run's log begins
        self.proc = subprocess.Popen([MARSH, "run", "--dir", self.dir, "--verbose"], stdout=subprocess.PIPE, stderr=self.log)
        PROCS.append(self.proc)
        line = self.proc.stdout.readline().decode()
        if not line:
            self.proc.wait(timeout=60)
            return f"exit {self.proc.returncode}"
        return line

    def lose_machine(self):
        """Replace NODE_DIR with the backup taken after init: no cache/, nothing runtime-made."""
        shutil.rmtree(self.dir)
        shutil.copytree(self.dir + ".backup", self.dir, symlinks=True)

    def entry(self):
        """The servers.yaml lines for this node (everything under `storage:`)."""
        lines = self.announce.splitlines()
        return "\n".join(lines[lines.index("storage:") + 1:])

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)

    def log_text(self):
        with open(self.log.name) as f:
            return f.read()

    def log_since_start(self):
        """What the node logged since its last start."""
        with open(self.log.name) as f:
            f.seek(self.log_mark)
            return f.read()

    def wait_polled(self, clients):
        """Wait until the clients have asked this (re)started process for its version.

        A 1.20 client polls each server's version once a second and counts a failed poll as a
        disconnection; across a quick restart, a poll over the old process's connection can fail
        after the client already looked connected, and a read in that second finds no server.
        Two answered polls per client span a poll interval of each: every client has replaced
        the old connection by then, and `wait_connected` waits out one whose poll failed."""
        wait_for(f"{len(clients)} clients to poll {self.name}",
                 lambda: self.log_since_start().count('path="/storage/v1/version" status=200') >= 2 * len(clients))
        for c in clients:
            c.wait_connected()


def tree_hash(root, skip):
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if os.path.join(dirpath, d) != skip)
        for f in sorted(filenames):
            p = os.path.join(dirpath, f)
            st = os.stat(p)
            h.update(p.encode())
            h.update(str(st.st_mtime_ns).encode())
            with open(p, "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()


class Client:
    def __init__(self, name, nodes, needed, happy, total, entry=None):
        self.dir = os.path.join(WORK, name)
        self.web = free_port()
        run(TAHOE, "create-client", "--webport", f"tcp:{self.web}:interface=127.0.0.1", "--shares-needed", str(needed),
            "--shares-happy", str(happy), "--shares-total", str(total), "--nickname", name, self.dir)
        with open(os.path.join(self.dir, "private", "servers.yaml"), "w") as f:
            f.write("storage:\n" + (entry or "\n".join(n.entry() for n in nodes)) + "\n")
        self.log = open(os.path.join(WORK, f"{name}.log"), "w")
        # `tahoe run` stops when its stdin closes; keep a pipe open for as long as it should run.
        self.proc = subprocess.Popen([TAHOE, "run", self.dir], stdin=subprocess.PIPE, stdout=self.log, stderr=subprocess.STDOUT)
        PROCS.append(self.proc)
        wait_for(f"{name}'s web API", lambda: urllib.request.urlopen(f"http://127.0.0.1:{self.web}/", timeout=5).status == 200)
        want = len(nodes)
        wait_for(f"{name} to connect to {want} marsh nodes", lambda: self.connected() >= want)

    def wait_connected(self):
        wait_for(f"{self.dir} to connect", lambda: self.connected() >= 1)

    def connected(self):
        import json
        with urllib.request.urlopen(f"http://127.0.0.1:{self.web}/?t=json", timeout=5) as r:
            servers = json.load(r).get("servers", [])
        return sum(1 for s in servers if s.get("connection_status", "").lower().startswith("connected"))

    def tahoe(self, *args, input=None, check=True):
        return run(TAHOE, "-d", self.dir, *args, input=input, check=check)

    def put_and_get(self, content):
        """Store `content` as an immutable file and read it back through the web API; its cap."""
        cap = self.tahoe("put", "-", input=content).strip()
        assert cap.startswith("URI:CHK:"), cap
        assert self.web_get(f"/uri/{cap}") == content
        return cap

    def web_put(self, path, data):
        req = urllib.request.Request(f"http://127.0.0.1:{self.web}{path}", data=data, method="PUT")
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.read().decode()

    def web_get(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.web}{path}", timeout=300) as r:
            return r.read()


def check(name):
    def wrap(fn):
        start = time.time()
        try:
            fn()
            RESULTS.append((name, None))
            print(f"ok   {name} ({time.time() - start:.1f} s)", flush=True)
        except Exception as e:
            RESULTS.append((name, e))
            print(f"FAIL {name}: {e}", flush=True)
    return wrap


def data(n, seed):
    return random.Random(seed).randbytes(n)


def write(path, content):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(content)


def single_node_workload(backend):
    """The client's whole workload against one node with `backend` (disk or s3)."""
    node = Node(f"marsh-{backend}", backend)
    client = Client(f"client-{backend}", [node], needed=1, happy=1, total=1)
    time.sleep(3)  # the node's start-up window; the invariant holds from here on
    before = tree_hash(node.dir, os.path.join(node.dir, "cache"))
    caps = {}
    work = os.path.join(WORK, f"files-{backend}")
    os.makedirs(work)
    check = lambda name: globals()["check"](f"[{backend}] {name}")

    @check("immutable multi-MiB file: put and get byte for byte")
    def _():
        content = data(5 * 1024 * 1024 + 123, 1)
        write(os.path.join(work, "big.bin"), content)
        cap = client.tahoe("put", os.path.join(work, "big.bin")).strip()
        assert cap.startswith("URI:CHK:"), cap
        out = os.path.join(work, "big.out")
        client.tahoe("get", cap, out)
        assert open(out, "rb").read() == content
        caps["big"] = cap

    @check("immutable small (non-literal) file: put and get")
    def _():
        client.put_and_get(data(100, 2))

    @check("mkdir and cp -r of a tree, there and back")
    def _():
        src = os.path.join(work, "tree")
        for rel, n in [("a.txt", 1000), ("sub/b.bin", 70_000), ("sub/deeper/c.bin", 300), ("empty-ish.txt", 60)]:
            write(os.path.join(src, rel), data(n, hash(rel) & 0xffff))
        client.tahoe("create-alias", "marsh")
        client.tahoe("mkdir", "marsh:made")
        client.tahoe("cp", "-r", src, "marsh:")  # creates marsh:tree
        back = os.path.join(work, "back")
        os.makedirs(back)
        client.tahoe("cp", "-r", "marsh:tree", back)  # creates back/tree
        for rel in ["a.txt", "sub/b.bin", "sub/deeper/c.bin", "empty-ish.txt"]:
            assert open(os.path.join(src, rel), "rb").read() == open(os.path.join(back, "tree", rel), "rb").read(), rel
        assert "made" in client.tahoe("ls", "marsh:")

    @check("SDMF mutable file: create, read, overwrite, read")
    def _():
        first, second = data(2000, 3), data(3500, 4)
        cap = client.tahoe("put", "--mutable", "-", input=first).strip()
        assert cap.startswith("URI:SSK:"), cap
        assert client.web_get(f"/uri/{cap}") == first
        client.tahoe("put", "-", cap, input=second)
        assert client.web_get(f"/uri/{cap}") == second
        caps["sdmf"] = cap

    @check("MDMF mutable file: create, overwrite, partial write at an offset")
    def _():
        content = bytearray(data(300_000, 5))
        cap = client.tahoe("put", "--format=MDMF", "-", input=bytes(content)).strip()
        assert cap.startswith("URI:MDMF:"), cap
        assert client.web_get(f"/uri/{cap}") == content
        patch = data(5000, 6)
        client.web_put(f"/uri/{cap}?offset=100000", patch)
        content[100000:105000] = patch
        assert client.web_get(f"/uri/{cap}") == bytes(content)
        new = data(120_000, 7)
        client.tahoe("put", "-", cap, input=new)
        assert client.web_get(f"/uri/{cap}") == new
        caps["mdmf"] = cap

    @check("check --verify reports healthy files")
    def _():
        for key in ["big", "sdmf", "mdmf"]:
            out = client.tahoe("check", "--verify", caps[key])
            assert "Healthy" in out, f"{key}: {out}"

    @check("deep-check --add-lease renews leases over HTTP")
    def _():
        out = client.tahoe("deep-check", "--add-lease", "marsh:")
        assert "done:" in out, out
        log = node.log_text()
        assert "PUT" in log and "/storage/v1/lease/" in log and "status=204" in log, "no lease renewals in marsh's log"

    @check("the client used HTTP: marsh logged its uploads, reads and writes")
    def _():
        log = node.log_text()
        for needle in ["/storage/v1/version", "/storage/v1/immutable/", "status=201", "/read-test-write", "status=206"]:
            assert needle in log, f"{needle} not in marsh's request log"

    @check("NODE_DIR outside cache/ is unchanged by the workload")
    def _():
        after = tree_hash(node.dir, os.path.join(node.dir, "cache"))
        assert after == before, "files outside cache/ changed while the node ran"

    if backend == "disk":
        @check("a named account's own NURL works with the client until it is revoked")
        def _():
            run(MARSH, "account", "create", "bob", "--quota", "10MiB", "--dir", node.dir)
            announce = run(MARSH, "announce", "--account", "bob", "--dir", node.dir).splitlines()
            entry = "\n".join(announce[announce.index("storage:") + 1:])
            assert entry != node.entry(), "bob's entry carries bob's NURL"
            bob = Client("client-bob", [node], needed=1, happy=1, total=1, entry=entry)
            content = data(50_000, 9)
            cap = bob.tahoe("put", "-", input=content).strip()
            assert bob.web_get(f"/uri/{cap}") == content
            assert "bob: active" in run(MARSH, "account", "list", "--dir", node.dir)
            run(MARSH, "account", "revoke", "bob", "--dir", node.dir)
            refused = run(TAHOE, "-d", bob.dir, "put", "-", input=data(50_000, 10), check=False)
            assert not refused.strip().startswith("URI:"), f"a revoked account uploaded: {refused}"
            bob.proc.terminate()

    node.stop()
    client.proc.terminate()
    if backend == "s3":
        @check("the shares went to S3: marsh counted its requests at shutdown")
        def _():
            line = next((l for l in node.log_text().splitlines() if "store `shares` (s3://" in l), None)
            assert line is not None, "no S3 request counts in marsh's log"
            put = int(line.split("PUT ")[1].split(",")[0])
            assert put > 10, line


def leases(node):
    import sqlite3
    db = sqlite3.connect(os.path.join(node.dir, "cache", "accountant.sqlite"))
    try:
        return db.execute("SELECT si, shnum, renew_hash, expires, account FROM leases ORDER BY si, shnum, renew_hash").fetchall()
    finally:
        db.close()


def disaster_recovery(strategy, settings=()):
    """backend-s3 + a durable persistence strategy: the machine is lost after uploads and lease
    renewals; `marsh run` asks for `marsh recover`; afterwards accounts, attributes and leases are
    back and the client reads every file; the same again with recovery.auto and no operator step."""
    node = Node(f"marsh-dr-{strategy}", "s3",
                [("persistence.plugin", strategy), ("persistence.max-delay", "1"), *settings])
    run(MARSH, "account", "create", "carol", "--quota", "50MiB", "--nickname", "Carol", "--dir", node.dir)
    run(MARSH, "account", "create", "dave", "--read-only", "--dir", node.dir)
    announce = run(MARSH, "announce", "--account", "carol", "--dir", node.dir).splitlines()
    carol = Client(f"client-carol-{strategy}", [node], needed=1, happy=1, total=1,
                   entry="\n".join(announce[announce.index("storage:") + 1:]))
    anon = Client(f"client-dr-{strategy}", [node], needed=1, happy=1, total=1)
    files = {}
    for i, (who, size) in enumerate([(carol, 1_200_000), (carol, 3000), (anon, 700_000)]):
        content = data(size, 100 + i)
        files[who.tahoe("put", "-", input=content).strip()] = content
    anon.tahoe("create-alias", "dr")
    anon.tahoe("mkdir", "dr:dir")
    files["dir"] = None
    out = anon.tahoe("deep-check", "--add-lease", "dr:")
    assert "done:" in out, out
    node.stop()
    accounts, held = run(MARSH, "account", "list", "--dir", node.dir), leases(node)
    assert "carol: active" in accounts and "dave: active" in accounts and len(held) >= 4, (accounts, held)

    def reads_everything():
        node.wait_polled([carol, anon])
        for cap, content in files.items():
            if content is not None:
                assert anon.web_get(f"/uri/{cap}") == content, cap
        assert "dir" in anon.tahoe("ls", "dr:")

    @check(f"disaster recovery ({strategy}): after losing the machine `marsh run` asks for `marsh recover`")
    def _():
        node.lose_machine()
        status = node.start()
        assert status == "exit 3", status
        assert f"marsh recover --dir {node.dir}" in node.log_text()

    @check(f"disaster recovery ({strategy}): `marsh recover` brings back accounts, attributes and leases")
    def _():
        out = run(MARSH, "recover", "--dir", node.dir)
        assert "accounts" in out and "change records read" in out, out
        if strategy == "stash":
            assert " 1 snapshots," in out, out
        assert run(MARSH, "account", "list", "--dir", node.dir) == accounts
        assert leases(node) == held, "same leases, same expiry, same accounts"

    @check(f"disaster recovery ({strategy}): the client reads every file through the recovered node")
    def _():
        assert "serving pb://" in node.start()
        reads_everything()
        node.stop()

    @check(f"disaster recovery ({strategy}): with recovery.auto the node recovers by itself")
    def _():
        node.lose_machine()
        run(MARSH, "config", "set", "recovery.auto", "true", "--dir", node.dir)
        assert "serving pb://" in node.start()
        assert leases(node) == held
        reads_everything()
        node.stop()

    carol.proc.terminate()
    anon.proc.terminate()


class Relay:
    """A TCP port that forwards every connection to a Unix socket, as Tor forwards the
    connections of an onion service to its `HiddenServicePort unix:PATH`."""

    def __init__(self, path):
        self.path = path
        self.port = free_port()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(16)
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            outside, _ = self.sock.accept()
            inside = socket.socket(socket.AF_UNIX)
            inside.connect(self.path)
            for a, b in ((outside, inside), (inside, outside)):
                threading.Thread(target=self.pump, args=(a, b), daemon=True).start()

    @staticmethod
    def pump(a, b):
        try:
            while chunk := a.recv(65536):
                b.sendall(chunk)
            b.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def metric(text, name):
    """The value of sample `name` (labels included) in Prometheus or OpenMetrics text."""
    for line in text.splitlines():
        key, _, value = line.rpartition(" ")
        if key == name:
            return float(value)
    raise AssertionError(f"no {name} in:\n{text}")


def behind_a_unix_socket():
    path = os.path.join(WORK, "onion.sock")
    relay = Relay(path)
    web = free_port()
    node = Node("marsh-unix", settings=[("node.listen", f"unix:{path}"), ("node.public-host", "127.0.0.1"),
                                        ("node.public-port", str(relay.port)), ("web.listen", f"127.0.0.1:{web}")])
    client = Client("client-unix", [node], needed=1, happy=1, total=1)
    scrape = lambda path: urllib.request.urlopen(f"http://127.0.0.1:{web}{path}", timeout=30).read().decode()

    @check("a node on a Unix socket only, through a TCP relay: put and get byte for byte")
    def _():
        assert f":{relay.port}/" in node.announce, node.announce
        client.put_and_get(data(2_000_000, 9))

    @check("its web listener counts the real client's traffic in Tahoe's names and marsh's")
    def _():
        tahoe = scrape("/statistics?t=openmetrics")
        assert tahoe.endswith("# EOF\n"), tahoe[-200:]
        for name in ["allocate", "write", "close", "read"]:
            assert metric(tahoe, f"tahoe_counters_storage_server_{name}") >= 1, name
        own = scrape("/metrics")
        assert metric(own, 'marsh_shares{kind="immutable"}') == 1
        assert metric(own, "marsh_held_bytes") > 2_000_000
        assert metric(own, "marsh_received_bytes_total") > 2_000_000
        assert metric(own, 'marsh_requests_total{endpoint="write",status="201"}') >= 1
        assert scrape("/health") == "ok\n"


def signed_announcement():
    @check("the node's signed storage announcement verifies with Tahoe's own introducer code")
    def _():
        node = Node("marsh-signed")
        signed = run(MARSH, "announce", "--signed", "--dir", node.dir)
        python = os.path.join(os.path.dirname(TAHOE), "python")
        script = """
import json, sys
from allmydata.introducer.common import unsign_from_foolscap
d = json.loads(sys.stdin.read())
ann, key = unsign_from_foolscap((d["msg"].encode(), d["sig"].encode(), d["key"].encode()))
print(json.dumps({"key": key.decode(), "ann": ann}))
try:
    unsign_from_foolscap(((d["msg"] + " ").encode(), d["sig"].encode(), d["key"].encode()))
    print("TAMPERED ACCEPTED")
except Exception:
    pass
"""
        out = run(python, "-c", script, input=signed.encode()).splitlines()
        import json
        verified = json.loads(out[0])
        assert len(out) == 1, out
        assert f"  {verified['key']}:" in node.announce, (verified["key"], node.announce)
        ann = verified["ann"]
        assert ann["service-name"] == "storage" and ann["nickname"] == "marsh-signed", ann
        assert ann["anonymous-storage-NURLs"][0] in node.announce, ann
        node.stop()


def plugin_serves_the_client(title, file, seed, expect_abi=None):
    """A node whose backend is the plugin `file` (from `make plugins`) serves the real client:
    an immutable file put and read back, and a mutable directory entry written and read."""
    plugin_dir = os.environ.get("MARSH_PLUGIN_DIR") or sys.exit("MARSH_PLUGIN_DIR is not set: run through `make interop`")
    wasm = os.path.join(plugin_dir, file)
    name = file.removesuffix(".wasm").replace("_", "-")

    @check(title)
    def _():
        if expect_abi:
            inspected = run(MARSH, "plugin", "inspect", wasm)
            assert f"abi:         marsh:plugin@{expect_abi}" in inspected, inspected
        node = Node(f"marsh-{name}", settings=[("backend.plugin", wasm)])
        client = Client(f"client-{name}", [node], needed=1, happy=1, total=1)
        client.put_and_get(data(2 * 1024 * 1024 + seed, seed))
        client.tahoe("create-alias", "plug")
        client.tahoe("put", "-", "plug:note.txt", input=f"kept by {name}".encode())
        assert client.tahoe("get", "plug:note.txt") == f"kept by {name}"
        assert "status=201" in node.log_text(), f"{name} stored the shares"


def main():
    # Built against the frozen 0.1.0 (backend-disk's source, the SDK's `abi-0-1` feature), served
    # by a host whose own plugins are 0.2.0.
    plugin_serves_the_client("a 0.1.0 plugin: inspected as 0.1.0, serves put and get of immutable and mutable files",
                             "abi_0_1_backend.wasm", 11, expect_abi="0.1.0")
    # Written in Python (componentize-py): share bytes travel as payloads it never holds.
    plugin_serves_the_client("a backend written in Python serves put and get of immutable and mutable files",
                             "python_backend.wasm", 12)
    single_node_workload("disk")
    single_node_workload("s3")
    disaster_recovery("records")
    disaster_recovery("stash", [("persistence.config.snapshot-changes", "5")])
    behind_a_unix_socket()

    signed_announcement()

    @check("a grid of three marsh nodes (2-of-3) survives losing one")
    def _():
        nodes = [Node(f"grid-{i}") for i in range(3)]
        grid = Client("client-grid", nodes, needed=2, happy=3, total=3)
        content = data(1_500_000, 8)
        cap = grid.tahoe("put", "-", input=content).strip()
        for n in nodes:
            assert "status=201" in n.log_text(), "every node got a share"
        nodes[2].stop()
        assert grid.web_get(f"/uri/{cap}") == content

    failed = [r for r in RESULTS if r[1] is not None]
    print(f"{len(RESULTS) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def finish(main):
    """Run `main`, stop every process it started, keep the logs if anything failed, and exit."""
    code = 1
    try:
        code = main()
    except Exception as e:
        print(f"FAIL setup: {e}")
        print(f"{sum(1 for r in RESULTS if r[1] is None)} passed, {1 + sum(1 for r in RESULTS if r[1] is not None)} failed")
    finally:
        for p in PROCS:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
        if code == 0:
            shutil.rmtree(WORK, ignore_errors=True)
        else:
            print(f"logs kept in {WORK}")
    sys.exit(code)


if __name__ == "__main__":
    finish(main)
