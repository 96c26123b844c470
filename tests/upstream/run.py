#!/usr/bin/env python3
"""Runs Tahoe-LAFS 1.20's own HTTP storage tests against one fresh, live storage node.

Usage: run.py MARSH_BINARY TAHOE_VENV [TEST_PREFIX...]
       run.py --reference TAHOE_VENV [TEST_PREFIX...]

The first form starts one `marsh` node (from `marsh init`, so backend-disk; MARSH_PLUGIN_DIR as
the caller set it) on 127.0.0.1 in a temporary directory; `--reference` starts a stock Tahoe-LAFS
1.20 storage node from TAHOE_VENV instead, to check the harness itself (every selected test passes
against it). Then it runs, under TAHOE_VENV's Python, the upstream tests that marsh_upstream.py
selects (allmydata.test.test_storage_http and test_istorageserver, their fixtures pointed at the
node's NURL), stops the node with SIGTERM, and prints one line per test, the excluded tests with
their reasons, each failure's cause (exception and the last responses the test received), and last
"N passed, N failed". Exits 1 on any failure, including a node that died during the run, and 2 if
an input is missing. TEST_PREFIX limits the run to tests whose name starts with one of them.

The test modules need testtools, fixtures and hypothesis (Tahoe's `test` extra); they are
pip-installed into TAHOE_VENV, at the versions pinned below, if it lacks them.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TEST_DEPS = ["testtools==2.9.1", "fixtures==4.3.2", "hypothesis==6.170.17"]
RUN_TIMEOUT = 900  # seconds for the whole test run; it takes well under a minute normally


def die(message):
    """A missing or broken input: say so, count it as a failure, exit 2."""
    print(f"run.py: {message}", file=sys.stderr, flush=True)
    print("0 passed, 1 failed")
    sys.exit(2)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*args, cwd):
    p = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=cwd)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
    return p.stdout


def ensure_test_deps(python, work):
    probe = [python, "-c", "import testtools, fixtures, hypothesis, allmydata.test.test_storage_http"]
    if subprocess.run(probe, capture_output=True, cwd=work).returncode == 0:
        return
    print(f"installing {' '.join(TEST_DEPS)} into the Tahoe venv", flush=True)
    p = subprocess.run([python, "-m", "pip", "install", "--quiet", *TEST_DEPS], capture_output=True, text=True, cwd=work)
    if p.returncode != 0:
        die(f"could not install the test dependencies:\n{p.stdout}{p.stderr}")
    p = subprocess.run(probe, capture_output=True, text=True, cwd=work)
    if p.returncode != 0:
        die(f"the upstream test modules do not import:\n{p.stderr}")


class MarshNode:
    """One marsh node, started the way tests/interop/run.py does it."""

    def __init__(self, marsh, work):
        self.dir = os.path.join(work, "node")
        self.log_path = os.path.join(work, "node.log")
        port = free_port()
        run(marsh, "init", "--dir", self.dir, "--listen", f"127.0.0.1:{port}", "--nickname", "upstream", "--web-listen", "", cwd=work)
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([marsh, "run", "--dir", self.dir, "--verbose"], stdout=subprocess.PIPE,
                                     stderr=self.log, cwd=work)
        line = self.proc.stdout.readline().decode()
        if "serving pb://" not in line:
            self.proc.wait(timeout=60)
            raise RuntimeError(f"marsh did not start ({line!r}, exit {self.proc.returncode}):\n{self.log_text()}")
        self.nurl = line[line.index("pb://"):].split()[0]

    def log_text(self):
        with open(self.log_path) as f:
            return f.read()


class ReferenceNode:
    """One stock Tahoe-LAFS 1.20 storage node (no introducer, no web port)."""

    def __init__(self, venv, work):
        self.dir = os.path.join(work, "tahoe-node")
        self.log_path = os.path.join(work, "node.log")
        port = free_port()
        tahoe = os.path.join(venv, "bin", "tahoe")
        run(tahoe, "create-node", "--port", f"tcp:{port}:interface=127.0.0.1", "--location",
            f"tcp:127.0.0.1:{port}", "--webport", "none", "--nickname", "upstream", self.dir, cwd=work)
        self.log = open(self.log_path, "w")
        # `tahoe run` stops when its stdin closes; keep a pipe open for as long as it should run.
        self.proc = subprocess.Popen([tahoe, "run", self.dir], stdin=subprocess.PIPE, stdout=self.log,
                                     stderr=subprocess.STDOUT, cwd=work)
        furl = os.path.join(self.dir, "private", "storage.furl")
        deadline = time.time() + 60
        while not os.path.exists(furl):
            if time.time() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"tahoe did not start:\n{self.log_text()}")
            time.sleep(0.2)
        # The NURL 1.20 announces: same port as Foolscap, the Tub's certificate, the fURL's swissnum.
        self.nurl = run(os.path.join(venv, "bin", "python"), "-c", (
            "import sys\n"
            "from cryptography.x509 import load_pem_x509_certificate\n"
            "from allmydata.storage.http_server import build_nurl\n"
            "d, port = sys.argv[1], int(sys.argv[2])\n"
            "swissnum = open(d + '/private/storage.furl').read().strip().rsplit('/', 1)[1]\n"
            "cert = load_pem_x509_certificate(open(d + '/private/node.pem', 'rb').read())\n"
            "print(build_nurl('127.0.0.1', port, swissnum, cert).to_text())\n"), self.dir, str(port), cwd=work).strip()
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError(f"tahoe does not listen on {port}:\n{self.log_text()}")
                time.sleep(0.2)

    def log_text(self):
        with open(self.log_path) as f:
            return f.read()


def cause(record):
    """The last line of the exception, plus the responses the test got last."""
    lines = [line for line in record["detail"].strip().splitlines() if line.strip()]
    text = lines[-1] if lines else "(no detail)"
    for method, path, code, ctype in record.get("responses") or []:
        text += f"\n       response: {method} {path} -> {code}, Content-Type {ctype}"
    return text


def main(argv):
    if len(argv) < 2:
        die(__doc__.split("\n\n")[1])
    reference = argv[0] == "--reference"
    marsh, venv, only = argv[0], argv[1], argv[2:]
    python = os.path.join(venv, "bin", "python")
    if not reference and not (os.path.isfile(marsh) and os.access(marsh, os.X_OK)):
        die(f"marsh binary {marsh!r} does not exist or is not executable (build it first)")
    if not os.access(python, os.X_OK):
        die(f"no Python in the Tahoe venv {venv!r} (run `make tahoe`)")
    work = tempfile.mkdtemp(prefix="marsh-upstream-")
    ensure_test_deps(python, work)
    results_path = os.path.join(work, "results.json")
    node = None
    extra = []  # failures outside the tests themselves
    try:
        node = ReferenceNode(venv, work) if reference else MarshNode(marsh, work)
        print(f"node: {node.nurl}", flush=True)
        env = dict(os.environ, MARSH_UPSTREAM_NURL=node.nurl, PYTHONPATH=HERE, PYTHONDONTWRITEBYTECODE="1")
        child = subprocess.run([python, os.path.join(HERE, "marsh_upstream.py"), results_path, *only], env=env,
                               cwd=work, timeout=RUN_TIMEOUT)
        if child.returncode != 0 or not os.path.exists(results_path):
            extra.append(("test runner", f"exited {child.returncode} without results"))
        if node.proc.poll() is not None:
            extra.append(("node", f"exited {node.proc.returncode} during the run:\n{node.log_text()[-3000:]}"))
    except Exception as e:  # node start-up, or the test run timing out
        extra.append(("setup", str(e)))
    finally:
        if node is not None and node.proc.poll() is None:
            node.proc.terminate()
            try:
                node.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                extra.append(("node", "did not stop within 30 s of SIGTERM"))

    records = []
    if os.path.exists(results_path):
        with open(results_path) as f:
            records = json.load(f)
    passed = [r for r in records if r["status"] == "passed"]
    failed = [r for r in records if r["status"] == "failed"]
    excluded = [r for r in records if r["status"] == "excluded"]
    if not passed and not failed and not extra:
        extra.append(("selection", "no test ran"))

    classes = {}
    for r in excluded:
        if r["whole_class"]:
            classes.setdefault(r["name"].rsplit(".", 1)[0], []).append(r)
    print(f"\nexcluded ({len(excluded)}: {len(excluded) - sum(map(len, classes.values()))} single tests, "
          f"{sum(map(len, classes.values()))} in whole classes):")
    for r in excluded:
        if not r["whole_class"]:
            print(f"  {r['name']}: {r['detail']}")
    for name, rs in classes.items():
        print(f"  {name} (all {len(rs)}): {rs[0]['detail']}")
    if failed or extra:
        print(f"\nfailures ({len(failed) + len(extra)}):")
        for r in failed:
            print(f"  {r['name']}\n       {cause(r)}")
        for what, why in extra:
            print(f"  [{what}] {why}")
        with open(os.path.join(work, "failures.txt"), "w") as f:
            for r in failed:
                f.write(f"==== {r['name']}\n{r['detail']}\n{r.get('responses')}\n\n")
        print(f"\nfull tracebacks: {os.path.join(work, 'failures.txt')}; node log: {node.log_path if node else '-'}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{len(passed)} passed, {len(failed) + len(extra)} failed", flush=True)
    return 1 if failed or extra else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
