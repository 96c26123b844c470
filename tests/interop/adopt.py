#!/usr/bin/env python3
"""Moving a real Tahoe-LAFS 1.20 storage node to marsh and back (run by `make interop`).

A stock storage node (`tahoe create-node`) joins a stock introducer; a stock client stores
immutable files (small and multi-MiB), a directory, an SDMF and an MDMF mutable file on it
and adds leases (`deep-check --add-lease`). The node is stopped and `marsh adopt` takes it
over. Checks: the dry run says what it would take and makes nothing; the marsh node announces
the same server id and NURL at the introducer, and the Tahoe directory is byte for byte as it
was; the same client, with no change on its side, reads every file and writes both mutable
files (their write enablers came along); its lease renewal renews the adopted leases instead of
adding new ones; lease expiry sees the adopted leases' times; `marsh export-tahoe` writes a
directory a stock `tahoe run` serves, with the files marsh took in since, mutable files still
writable by their writers and leases its own renewal finds; adoption into S3 (SeaweedFS, which
`make interop` starts); a running Tahoe node is refused; and a grid of three Python nodes is
moved to marsh one node at a time while its client keeps reading and writing.

Usage: adopt.py MARSH_BINARY TAHOE_BINARY
Prints one line per check and a final "N passed, N failed"; exits 1 on any failure.
"""

import datetime
import json
import os
import re
import struct
import subprocess
import time

import run as interop
from grid import GridClient, Introducer
from run import check, data, free_port, run, tree_hash, wait_for

MARSH, TAHOE, WORK = interop.MARSH, interop.TAHOE, interop.WORK
MUTABLE_MAGIC = b"Tahoe mutable container v"


class TahoeStorage:
    """A stock Tahoe-LAFS storage node on 127.0.0.1, announcing itself to `introducer`."""

    def __init__(self, name, introducer, storage=""):
        self.name, self.dir, self.port = name, os.path.join(WORK, name), free_port()
        run(TAHOE, "create-node", f"--port=tcp:{self.port}:interface=127.0.0.1", f"--location=tcp:127.0.0.1:{self.port}",
            f"--nickname={name}", "--webport=none", f"--introducer={introducer.furl}", self.dir)
        cfg = os.path.join(self.dir, "tahoe.cfg")
        with open(cfg) as f:
            text = f.read()
        text = text.replace("reserved_space = 1G", "reserved_space = 0").replace("[storage]\n", "[storage]\n" + storage)
        with open(cfg, "w") as f:
            f.write(text)
        self.start()

    def start(self):
        self.log = open(os.path.join(WORK, f"{self.name}.log"), "a")
        self.proc = subprocess.Popen([TAHOE, "run", self.dir], stdin=subprocess.PIPE, stdout=self.log, stderr=subprocess.STDOUT)
        interop.PROCS.append(self.proc)
        wait_for(f"{self.name} to run", lambda: os.path.exists(os.path.join(self.dir, "running.process")))

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)
        wait_for(f"{self.name} to stop", lambda: not os.path.exists(os.path.join(self.dir, "running.process")))


class Marsh:
    """A marsh node made by `marsh adopt` (or anything else), run and stopped."""

    def __init__(self, name, dir):
        self.name, self.dir = name, dir
        self.log = open(os.path.join(WORK, f"{name}.log"), "a")

    def start(self):
        self.proc = subprocess.Popen([MARSH, "run", "--dir", self.dir, "--verbose"], stdout=subprocess.PIPE, stderr=self.log)
        interop.PROCS.append(self.proc)
        line = self.proc.stdout.readline().decode()
        assert "serving pb://" in line, (line, open(self.log.name).read()[-3000:])
        return line.split("serving ", 1)[1].split()[0]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)

    def leases(self):
        out = run(MARSH, "account", "show", "anonymous", "--dir", self.dir)
        return int(re.search(r"(\d+) leases", out).group(1))


def containers(storage_dir):
    """{(si, shnum): lease count} of every share container under a Tahoe storage directory."""
    out = {}
    root = os.path.join(storage_dir, "shares")
    for prefix in sorted(os.listdir(root)):
        if prefix == "incoming":
            continue
        for si in sorted(os.listdir(os.path.join(root, prefix))):
            for shnum in sorted(os.listdir(os.path.join(root, prefix, si))):
                with open(os.path.join(root, prefix, si, shnum), "rb") as f:
                    raw = f.read()
                if raw.startswith(MUTABLE_MAGIC):
                    extra = struct.unpack(">Q", raw[92:100])[0]
                    slots = sum(1 for i in range(4) if struct.unpack(">L", raw[100 + 92 * i:104 + 92 * i])[0] != 0)
                    out[(si, int(shnum))] = slots + struct.unpack(">L", raw[extra:extra + 4])[0]
                else:
                    out[(si, int(shnum))] = struct.unpack(">LLL", raw[:12])[2]
    return out


def announcement(client, server_id):
    """The announcement the client's introducer cache holds for `server_id` (read with Tahoe's
    Python), as a dict; empty if none."""
    python = os.path.join(os.path.dirname(TAHOE), "python")
    code = ("import sys, json, yaml\n"
            "for e in yaml.safe_load(open(sys.argv[1])) or []:\n"
            "    if e['key_s'] == sys.argv[2]: print(json.dumps(e['ann']))\n")
    path = os.path.join(client.dir, "private", "introducer_default_cache.yaml")
    out = run(python, "-c", code, path, server_id).strip()
    return json.loads(out) if out else {}


def cached(client, server_id):
    """The NURLs the client's introducer cache holds for `server_id`."""
    return announcement(client, server_id).get("anonymous-storage-NURLs", [])


def servers_entry(client, server_id):
    """A servers.yaml entry for `server_id` made from the announcement the client holds (read
    and written with Tahoe's own Python and YAML), indented to go under `storage:`."""
    python = os.path.join(os.path.dirname(TAHOE), "python")
    code = ("import sys, yaml\n"
            "for e in yaml.safe_load(open(sys.argv[1])) or []:\n"
            "    if e['key_s'] == sys.argv[2]:\n"
            "        print(yaml.safe_dump({e['key_s']: {'ann': e['ann']}}, default_flow_style=False))\n")
    path = os.path.join(client.dir, "private", "introducer_default_cache.yaml")
    return "\n".join("  " + line for line in run(python, "-c", code, path, server_id).splitlines() if line)


def backdate(share_file, expires):
    """Set every lease of an immutable share container to expire at `expires` (a lease made long
    ago), as the Python node's own lease records would say."""
    with open(share_file, "r+b") as f:
        raw = f.read()
        count = struct.unpack(">LLL", raw[:12])[2]
        for i in range(count):
            at = len(raw) - 72 * (count - i) + 68
            f.seek(at)
            f.write(struct.pack(">L", expires))


def share_files(storage_dir):
    root = os.path.join(storage_dir, "shares")
    return sorted(os.path.join(dp, f) for dp, _, fs in os.walk(root) if "incoming" not in dp for f in fs)


def server_ids(client):
    return {s["nodeid"] for s in client.servers()}


def main():
    introducer = Introducer()
    state = {}
    py = TahoeStorage("py-storage", introducer,
                      storage="expire.enabled = false\nexpire.mode = cutoff-date\nexpire.cutoff_date = 2020-01-01\n")
    wait_for("the Tahoe node's announcement", lambda: introducer.storage_announcements() == 1)
    client = GridClient("adopt-client", introducer, 1, needed=1, happy=1, total=1)
    (server_id,) = server_ids(client)
    files = {}
    for i, size in enumerate([3_500_000, 2_000, 90_000]):
        content = data(size, 300 + i)
        files[client.tahoe("put", "-", input=content).strip()] = content
    client.tahoe("create-alias", "moved")
    client.tahoe("mkdir", "moved:docs")
    client.tahoe("put", "-", "moved:docs/readme", input=b"kept across the move\n" * 20)
    sdmf = client.tahoe("put", "--mutable", "-", input=b"sdmf version 1\n" * 100).strip()
    mdmf = client.tahoe("put", "--mutable", "--format=MDMF", "-", input=data(300_000, 310)).strip()
    out = client.tahoe("deep-check", "--add-lease", "moved:")
    assert "done:" in out, out
    nurls_before = cached(client, server_id)
    assert nurls_before, "the Tahoe node announced a NURL"
    # A second client that knows the node from servers.yaml alone (the Tahoe node's NURL, as
    # its announcement carried it), unchanged through the whole move.
    static = interop.Client("static-client", [py], needed=1, happy=1, total=1, entry=servers_entry(client, server_id))
    assert static.web_get(f"/uri/{next(iter(files))}") == files[next(iter(files))]
    py.stop()
    storage = os.path.join(py.dir, "storage")
    held = containers(storage)
    # Two immutable shares whose leases ran out long ago, as a node that has held shares for
    # years has: lease expiry must see exactly them.
    immutables = [f for f in share_files(storage) if not open(f, "rb").read(32).startswith(MUTABLE_MAGIC)]
    old = sorted(immutables)[:2]
    for f in old:
        backdate(f, 1_600_000_000)
    old_sis = {os.path.basename(os.path.dirname(f)) for f in old}
    before = tree_hash(py.dir, skip=None)
    node_dir = os.path.join(WORK, "adopted")
    marsh = Marsh("adopted", node_dir)

    @check("adopt --dry-run says what it would take (every share, lease and setting) and makes nothing")
    def _():
        out = run(MARSH, "adopt", py.dir, "--dir", node_dir, "--dry-run")
        immutable = sum(1 for s in held if not open(os.path.join(storage, "shares", s[0][:2], s[0], str(s[1])), "rb").read(25).startswith(MUTABLE_MAGIC))
        assert f"{immutable} immutable" in out and f"{len(held) - immutable} mutable" in out, out
        assert f"{sum(held.values())} leases" in out, out
        assert "expire.mode = cutoff-date" in out and "node.listen = 127.0.0.1:" in out, out
        assert "dry run: nothing was made" in out and not os.path.exists(node_dir), out

    @check("marsh adopt takes the node over: same server id and NURL at the introducer; the Tahoe directory is untouched")
    def _():
        out = run(MARSH, "adopt", py.dir, "--dir", node_dir, "--storage-dir", node_dir + "-shares", "--set", "web.listen=")
        assert f"taken in: " in out and "(the Tahoe node's)" in out, out
        assert tree_hash(py.dir, skip=None) == before, "the Tahoe directory changed"
        assert run(MARSH, "config", "get", "expire.cutoff-date", "--dir", node_dir).strip() == "2020-01-01"
        assert run(MARSH, "config", "get", "introducer.furls", "--dir", node_dir).strip() == introducer.furl
        nurl = marsh.start()
        assert nurl == nurls_before[0], (nurl, nurls_before)
        # The NURL alone cannot tell marsh's announcement from the Tahoe node's (it is the same);
        # until marsh's arrives, the client holds a server object it will replace, and a read
        # just after the replacement finds no connected server (410). Wait for marsh's own.
        wait_for("marsh's announcement to reach the client", lambda: cached(client, server_id) == nurls_before and
                 announcement(client, server_id).get("my-version", "").startswith("marsh/"))
        assert server_ids(client) == {server_id}
        client.wait_connected()
        static.wait_connected()

    @check("lease expiry sees the adopted leases' times: marsh gc --dry-run with a cutoff lists exactly the shares whose leases ran out before it")
    def _():
        run(MARSH, "config", "set", "expire.cutoff-date", "2021-01-01", "--dir", node_dir)
        out = run(MARSH, "gc", "--dry-run", "--dir", node_dir)
        listed = {line.split()[2] for line in out.splitlines() if line.startswith("would delete")}
        assert listed == old_sis, (listed, old_sis, out)
        tomorrow = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=2)).strftime("%Y-%m-%d")
        run(MARSH, "config", "set", "expire.cutoff-date", tomorrow, "--dir", node_dir)
        out = run(MARSH, "gc", "--dry-run", "--dir", node_dir)
        assert out.count("would delete") == len(held), out
        run(MARSH, "config", "set", "expire.cutoff-date", "2020-01-01", "--dir", node_dir)

    @check("both clients, config unchanged (introducer; servers.yaml with the old NURL), read every file from marsh; every mutable file and directory is written (their write enablers came along); deep-check: healthy")
    def _():
        for reader in (client, static):
            for cap, content in files.items():
                assert reader.web_get(f"/uri/{cap}") == content, cap
        assert b"kept across the move" in client.tahoe("get", "moved:docs/readme").encode()
        client.tahoe("put", "-", sdmf, input=b"sdmf version 2, on marsh\n")
        client.tahoe("put", "-", mdmf, input=b"mdmf version 2, on marsh\n" * 1000)
        client.tahoe("put", "-", "moved:docs/written-on-marsh", input=b"a directory written on marsh\n")
        client.tahoe("mkdir", "moved:made-on-marsh")
        assert static.web_get(f"/uri/{sdmf}") == b"sdmf version 2, on marsh\n"
        assert "status=200" in open(marsh.log.name).read()
        out = client.tahoe("deep-check", "moved:")
        done = re.search(r"done: (\d+) objects checked, (\d+) healthy", out)
        assert done and done.group(1) == done.group(2) and int(done.group(1)) >= 4, out

    @check("the client's lease renewal (deep-check --add-lease) renews the adopted leases instead of adding new ones")
    def _():
        before = marsh.leases()
        out = client.tahoe("deep-check", "--add-lease", "moved:")
        assert "done:" in out, out
        for cap in files:
            client.tahoe("check", "--add-lease", cap)
        assert marsh.leases() == before, (marsh.leases(), before)
        assert before == sum(held.values()) + 1, "the adopted leases, and the new directory's"

    @check("marsh export-tahoe moves it back: a stock Tahoe node serves every file, marsh's new ones too, and mutable files stay writable")
    def _():
        newer = data(1_100_000, 320)
        files[client.tahoe("put", "-", input=newer).strip()] = newer
        fresh = state["fresh"] = client.tahoe("put", "--mutable", "-", input=b"made on marsh\n").strip()
        marsh.stop()
        back = state["back"] = os.path.join(WORK, "back-to-tahoe")
        out = run(MARSH, "export-tahoe", "--dir", node_dir, back)
        assert "wrote " in out and "cannot change them" not in out, out
        py2 = state["py2"] = TahoeStorage.__new__(TahoeStorage)
        py2.name, py2.dir = "back-to-tahoe", back
        py2.start()
        # Each file is waited for, not read once: the introducer's client can still be switching
        # to the connection the Tahoe node's own announcement names after its first read (a read
        # in that instant finds no server and answers 410). A share that is not there times out.
        for reader in (client, static):
            for cap, content in files.items():
                wait_for(f"{cap} through the Tahoe node again", lambda: reader.web_get(f"/uri/{cap}") == content)
        assert client.web_get(f"/uri/{sdmf}") == b"sdmf version 2, on marsh\n"
        assert b"a directory written on marsh" in client.tahoe("get", "moved:docs/written-on-marsh").encode()
        client.tahoe("put", "-", sdmf, input=b"sdmf version 3, back on Tahoe\n")
        client.tahoe("put", "-", fresh, input=b"made on marsh, changed on Tahoe\n")
        assert client.web_get(f"/uri/{sdmf}") == b"sdmf version 3, back on Tahoe\n"
        assert client.web_get(f"/uri/{fresh}") == b"made on marsh, changed on Tahoe\n"

    @check("leases go back to Tahoe with Tahoe's hashes: its own renewal finds them (no lease added)")
    def _():
        back = os.path.join(state["back"], "storage")
        counts = containers(back)
        client.tahoe("deep-check", "--add-lease", "moved:")
        for cap in files:
            client.tahoe("check", "--add-lease", cap)
        client.tahoe("check", "--add-lease", state["fresh"])
        assert containers(back) == counts, (containers(back), counts)
        state["py2"].stop()

    @check("adopting into S3: the shares go to the bucket and the node serves them")
    def _():
        s3_dir = os.path.join(WORK, "adopted-s3")
        port = free_port()
        settings = [f"{k}={v}" for k, v in interop.s3_settings(f"adopt-{os.getpid()}-{int(time.time())}/")]
        args = [MARSH, "adopt", py.dir, "--dir", s3_dir, "--listen", f"127.0.0.1:{port}", "--public-port", str(port),
                "--set", "web.listen="]
        for s in settings:
            args += ["--set", s]
        out = run(*args)
        assert "taken in: " in out, out
        assert not os.path.exists(s3_dir + "-shares"), "nothing on disk"
        node = Marsh("adopted-s3", s3_dir)
        node.start()
        entry = run(MARSH, "announce", "--dir", s3_dir)
        reader = interop.Client("adopt-s3-client", [node], needed=1, happy=1, total=1,
                                entry="\n".join(entry.splitlines()[entry.splitlines().index("storage:") + 1:]))
        for cap, content in list(files.items())[:3]:
            assert reader.web_get(f"/uri/{cap}") == content, cap
        node.stop()
        reader.proc.terminate()

    @check("a running Tahoe node is refused, and so is adopting again into a node that finished adopting (it has served since)")
    def _():
        py.start()
        p = subprocess.run([MARSH, "adopt", py.dir, "--dir", os.path.join(WORK, "never")], capture_output=True)
        assert p.returncode != 0 and b"is running" in p.stderr and b"kill" in p.stderr, p
        assert not os.path.exists(os.path.join(WORK, "never"))
        py.stop()
        p = subprocess.run([MARSH, "adopt", py.dir, "--dir", node_dir], capture_output=True)
        assert p.returncode != 0 and b"finished adopting" in p.stderr, p

    @check("a grid of three Python nodes moves to marsh one node at a time; its client reads and writes throughout")
    def _():
        pys = [TahoeStorage(f"roll-{i}", introducer) for i in range(3)]
        wait_for("four storage announcements", lambda: introducer.storage_announcements() >= 4)
        # 1-of-3 over three servers: a file written while one node moves (its three shares on the
        # other two) still reads while the next one moves.
        roller = GridClient("roll-client", introducer, 3, needed=1, happy=2, total=3)
        stored = {}
        for i in range(2):
            content = data(800_000, 400 + i)
            stored[roller.tahoe("put", "-", input=content).strip()] = content
        for i, p in enumerate(pys):
            p.stop()
            # While the node moves, the other two serve: reads and a write go on.
            for cap, content in stored.items():
                assert roller.web_get(f"/uri/{cap}") == content, (i, "during the move", cap)
            content = data(300_000, 420 + i)
            stored[roller.tahoe("put", "-", input=content).strip()] = content
            m = Marsh(f"roll-{i}-marsh", os.path.join(WORK, f"roll-{i}-marsh"))
            run(MARSH, "adopt", p.dir, "--dir", m.dir, "--set", "web.listen=")
            m.start()
            wait_for(f"roll-{i} back as marsh", lambda: roller.connected() >= 3)
            for cap, content in stored.items():
                assert roller.web_get(f"/uri/{cap}") == content, (i, cap)
            content = data(500_000, 410 + i)
            stored[roller.tahoe("put", "-", input=content).strip()] = content
        for cap, content in stored.items():
            assert roller.web_get(f"/uri/{cap}") == content, cap

    failed = [r for r in interop.RESULTS if r[1] is not None]
    print(f"{len(interop.RESULTS) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    interop.finish(main)
