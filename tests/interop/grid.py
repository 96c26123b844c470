#!/usr/bin/env python3
"""Joining a real grid (run by `make interop`): marsh nodes announce themselves to a stock
Tahoe-LAFS 1.20 introducer (`tahoe create-introducer`), and stock clients made with
`--introducer` and no `servers.yaml` find them there and store and read files over HTTPS.

Checks: three marsh nodes through one introducer with shares.happy=3; the introducer
restarted, after which the first client still uses marsh and a fresh client finds all three
(the nodes published again); a client that trusts a grid manager (`[grid_managers]`) places
shares only on the node whose announcement carries that manager's certificate
(`storage.grid-manager-certificates`), and cannot upload when no node carries one.

Usage: grid.py MARSH_BINARY TAHOE_BINARY
Prints one line per check and a final "N passed, N failed"; exits 1 on any failure.
"""

import json
import os
import subprocess
import sys
import time
import urllib.request

import run as interop
from run import Node, check, data, free_port, run, wait_for

TAHOE = interop.TAHOE
GRID_MANAGER = os.path.join(os.path.dirname(TAHOE), "grid-manager")


class Introducer:
    """A stock introducer on 127.0.0.1 with its web API on."""

    def __init__(self):
        self.dir = os.path.join(interop.WORK, "introducer")
        port = free_port()
        run(TAHOE, "create-introducer", "--port", f"tcp:{port}:interface=127.0.0.1",
            "--location", f"tcp:127.0.0.1:{port}", self.dir)
        self.web = free_port()
        cfg = os.path.join(self.dir, "tahoe.cfg")
        with open(cfg) as f:
            text = f.read()
        with open(cfg, "w") as f:
            f.write(text.replace("web.port = \n", f"web.port = tcp:{self.web}:interface=127.0.0.1\n"))
        self.start()
        with open(os.path.join(self.dir, "private", "introducer.furl")) as f:
            self.furl = f.read().strip()

    def start(self):
        self.log = open(os.path.join(interop.WORK, "introducer.log"), "a")
        self.proc = subprocess.Popen([TAHOE, "run", self.dir], stdin=subprocess.PIPE, stdout=self.log, stderr=subprocess.STDOUT)
        interop.PROCS.append(self.proc)
        wait_for("the introducer's web API", lambda: self.storage_announcements() >= 0)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)

    def storage_announcements(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.web}/?t=json", timeout=5) as r:
            return json.load(r)["announcement_summary"].get("storage", 0)


class GridClient(interop.Client):
    """A stock client that learns its servers from the introducer only."""

    def __init__(self, name, introducer, want, needed, happy, total, grid_managers=()):
        self.dir = os.path.join(interop.WORK, name)
        self.web = free_port()
        run(TAHOE, "create-client", "--introducer", introducer.furl, "--webport", f"tcp:{self.web}:interface=127.0.0.1",
            "--shares-needed", str(needed), "--shares-happy", str(happy), "--shares-total", str(total),
            "--nickname", name, self.dir)
        assert not os.path.exists(os.path.join(self.dir, "private", "servers.yaml"))
        if grid_managers:
            with open(os.path.join(self.dir, "tahoe.cfg"), "a") as f:
                f.write("\n[grid_managers]\n" + "".join(f"{n} = {key}\n" for n, key in grid_managers))
        self.log = open(os.path.join(interop.WORK, f"{name}.log"), "w")
        self.proc = subprocess.Popen([TAHOE, "run", self.dir], stdin=subprocess.PIPE, stdout=self.log, stderr=subprocess.STDOUT)
        interop.PROCS.append(self.proc)
        wait_for(f"{name}'s web API", lambda: urllib.request.urlopen(f"http://127.0.0.1:{self.web}/", timeout=5).status == 200)
        wait_for(f"{name} to connect to {want} marsh nodes", lambda: self.connected() >= want)

    def servers(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.web}/?t=json", timeout=5) as r:
            return json.load(r).get("servers", [])


def scrape(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return r.read().decode()


def connected_metric(port):
    lines = [l for l in scrape(port, "/metrics").splitlines() if l.startswith("marsh_introducer_connected{")]
    assert len(lines) == 1, lines
    return int(lines[0].rsplit(" ", 1)[1])


def published(node):
    return node.log_text().count("published the storage announcement")


def writes(node):
    return node.log_text().count("status=201")


def main():
    introducer = Introducer()
    grid = {}

    @check("three marsh nodes announce themselves to a stock introducer, and a client with no servers.yaml stores on all three (happy=3)")
    def _():
        grid["web"] = web = free_port()
        settings = [("introducer.furls", introducer.furl)]
        nodes = [Node("intro-0", settings=settings + [("web.listen", f"127.0.0.1:{web}")])]
        nodes += [Node(f"intro-{i}", settings=settings) for i in (1, 2)]
        grid["nodes"] = nodes
        wait_for("three storage announcements at the introducer", lambda: introducer.storage_announcements() == 3)
        client = grid["client"] = GridClient("intro-client", introducer, 3, needed=2, happy=3, total=3)
        ids = {s["nodeid"] for s in client.servers()}
        for n in nodes:
            server_id = n.entry().splitlines()[0].strip().rstrip(":")
            assert server_id in ids, (server_id, ids)
        content = data(1_200_000, 21)
        grid["cap"] = cap = client.tahoe("put", "-", input=content).strip()
        assert client.web_get(f"/uri/{cap}") == content
        for n in nodes:
            assert writes(n) >= 1, f"{n.name} got a share over HTTP"
        assert connected_metric(web) == 1
        page = scrape(web, "/")
        assert "Introducers" in page and introducer.furl.split("/")[2] in page, page
        assert introducer.furl.rsplit("/", 1)[1] not in page, "the swissnum is not shown"
        status = run(interop.MARSH, "status", "--dir", nodes[0].dir)
        assert "connected, announcement published" in status, status

    @check("after the introducer restarts, the nodes publish again: the first client still uses them and a fresh one finds all three")
    def _():
        introducer.stop()
        web = grid["web"]
        wait_for("the node to see the introducer gone", lambda: connected_metric(web) == 0)
        assert "introducer connection" in grid["nodes"][0].log_text()
        status = run(interop.MARSH, "status", "--dir", grid["nodes"][0].dir)
        assert "not connected" in status, status
        introducer.start()
        wait_for("the node to reconnect", lambda: connected_metric(web) == 1, timeout=120)
        wait_for("the nodes to publish again", lambda: introducer.storage_announcements() == 3, timeout=120)
        client = grid["client"]
        wait_for("the first client to hold all three", lambda: client.connected() >= 3, timeout=120)
        content = data(300_000, 22)
        cap = client.tahoe("put", "-", input=content).strip()
        fresh = GridClient("intro-fresh", introducer, 3, needed=2, happy=3, total=3)
        assert fresh.web_get(f"/uri/{cap}") == content
        assert fresh.web_get(f"/uri/{grid['cap']}") == data(1_200_000, 21)

    @check("a client that trusts a grid manager stores only on the node whose announcement carries its certificate")
    def _():
        gm = os.path.join(interop.WORK, "grid-manager")
        run(GRID_MANAGER, "--config", gm, "create")
        gm_key = run(GRID_MANAGER, "--config", gm, "public-identity").strip()
        certified = Node("gm-certified", settings=[("introducer.furls", introducer.furl)])
        key = run(interop.MARSH, "announce", "--public-key", "--dir", certified.dir).strip()
        assert key.startswith("pub-v0-"), key
        run(GRID_MANAGER, "--config", gm, "add", "certified", key)
        cert_file = os.path.join(interop.WORK, "certified.cert")
        with open(cert_file, "w") as f:
            f.write(run(GRID_MANAGER, "--config", gm, "sign", "certified", "30"))
        wait_for("the certified node's first publication", lambda: published(certified) == 1)
        certified.stop()
        run(interop.MARSH, "config", "set", "storage.grid-manager-certificates", cert_file, "--dir", certified.dir)
        os.remove(cert_file)  # the node keeps its own copy: a copy of NODE_DIR is a whole backup
        assert "serving pb://" in certified.start()
        uncertified = grid["nodes"]
        before = {n.name: writes(n) for n in uncertified}
        wait_for("the certified node's new announcement", lambda: published(certified) == 2)
        assert introducer.storage_announcements() == 4, "the new announcement replaced the old one"
        client = GridClient("gm-client", introducer, 4, needed=1, happy=1, total=2, grid_managers=[("gm", gm_key)])
        content = data(200_000, 23)
        cap = client.tahoe("put", "-", input=content).strip()
        assert client.web_get(f"/uri/{cap}") == content
        assert writes(certified) >= 1, "the certified node holds the shares"
        assert {n.name: writes(n) for n in uncertified} == before, "no share went to a node without a certificate"
        certified.stop()
        wait_for("the client to lose the certified node", lambda: client.connected() <= 3)
        refused = client.tahoe("put", "-", input=data(50_000, 24), check=False)
        assert "URI:CHK:" not in refused, refused
        assert {n.name: writes(n) for n in uncertified} == before, "still nothing on the uncertified nodes"

    failed = [r for r in interop.RESULTS if r[1] is not None]
    print(f"{len(interop.RESULTS) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    interop.finish(main)
