#!/usr/bin/env python3
"""A fleet of marsh nodes on one PostgreSQL database with the real Tahoe-LAFS 1.20 client (run
by `make interop`): three nodes with `accounting.engine postgres`, one account made on one of
them, and a stock client configured with nothing but that account's `servers.yaml` (printed
by `marsh account servers` on another node).

Checks: the client uploads with shares.happy=3 (a share on every node) and reads back; the
account's usage, shown by every node, is the sum of what the three hold; the next upload past
the account's quota is refused by every node (the client cannot place its shares anywhere);
after `marsh account revoke` on one node, every node refuses the account within a second.

The database is a throwaway PostgreSQL cluster made as `host/pgtest` makes one: Debian's
`initdb` into a temporary directory, as an unprivileged user under root, on a free port.

Usage: fleet.py MARSH_BINARY TAHOE_BINARY
Prints one line per check and a final "N passed, N failed"; exits 1 on any failure.
"""

import os
import re
import subprocess
import time
import urllib.error

import run as interop
from pg import Postgres
from run import Client, Node, check, data, run

MARSH = interop.MARSH


def usage(node, account):
    out = run(MARSH, "account", "show", account, "--dir", node.dir)
    return int(re.search(r"usage (\d+) bytes", out).group(1))


def held(node):
    """Bytes of shares each node holds, as `marsh fleet status` (asked of `node`) shows them."""
    out = run(MARSH, "fleet", "status", "--dir", node.dir)
    return {line.split()[0]: int(re.search(r"(\d+) bytes$", line).group(1)) for line in out.splitlines()[1:]}


def main():
    pg = Postgres(interop.free_port())
    try:
        return fleet(pg)
    finally:
        for p in interop.PROCS:
            if p.poll() is None:
                p.terminate()
                p.wait(timeout=20)
        pg.stop()


def fleet(pg):
    settings = [("accounting.engine", "postgres"), ("accounting.postgres", pg.url())]
    nodes = [Node(f"fleet-{i}", settings=settings) for i in range(3)]
    quota = 3_000_000
    run(MARSH, "account", "create", "alice", "--quota", str(quota), "--dir", nodes[0].dir)
    servers = run(MARSH, "account", "servers", "alice", "--dir", nodes[1].dir)
    lines = servers.splitlines()
    client = Client("fleet-client", nodes, needed=1, happy=3, total=3,
                    entry="\n".join(lines[lines.index("storage:") + 1:]))
    state = {}

    @check("the real client, given one account's servers.yaml, stores with happy=3 on three nodes sharing one PostgreSQL database, and every node shows the account's usage as the sum of what the three hold")
    def _():
        content = data(700_000, 1)
        state["cap"] = client.put_and_get(content)
        on_each = held(nodes[2])
        assert len(on_each) == 3 and all(b > 0 for b in on_each.values()), on_each
        usages = [usage(n, "alice") for n in nodes]
        assert usages == [sum(on_each.values())] * 3, (usages, on_each)
        state["usage"] = usages[0]

    @check("the next upload past the account's quota is refused by every node; the account's usage does not move")
    def _():
        assert state["usage"] + 3 * 700_000 > quota, "the second upload is past the quota"
        marks = [os.path.getsize(n.log.name) for n in nodes]
        p = subprocess.run([interop.TAHOE, "-d", client.dir, "put", "-"], input=data(700_000, 2), capture_output=True)
        assert p.returncode != 0, p
        assert [usage(n, "alice") for n in nodes] == [state["usage"]] * 3
        for n, mark in zip(nodes, marks):
            with open(n.log.name) as f:
                f.seek(mark)
                since = f.read()
            # Asked to allocate, each node answered without allocating: no share was written.
            assert 'method=POST path="/storage/v1/immutable/' in since, (n.name, since[-2000:])
            assert 'method=PATCH' not in since, (n.name, since[-2000:])

    @check("after `marsh account revoke` on one node, all three refuse the account within a second")
    def _():
        marks = [os.path.getsize(n.log.name) for n in nodes]
        run(MARSH, "account", "revoke", "alice", "--dir", nodes[2].dir)
        time.sleep(1.5)
        try:
            client.web_get(f"/uri/{state['cap']}")
            raise AssertionError("the revoked account still reads")
        except urllib.error.HTTPError:
            pass
        for n, mark in zip(nodes, marks):
            with open(n.log.name) as f:
                f.seek(mark)
                since = f.read()
            assert "status=401" in since and "status=206" not in since, (n.name, since[-2000:])

    failed = [r for r in interop.RESULTS if r[1] is not None]
    print(f"{len(interop.RESULTS) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    interop.finish(main)
