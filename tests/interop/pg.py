"""A throwaway PostgreSQL cluster, made as `host/pgtest` makes one: Debian's server package
(`initdb` and `pg_ctl` under /usr/lib/postgresql/<version>/bin), initdb into a temporary
directory as an unprivileged user under root, started on a given port of 127.0.0.1 with one
database, `fleet`. Used by `tests/interop/fleet.py` and `host/bench/fleet.py`; no side effects
on import.
"""

import glob
import os
import shutil
import subprocess
import sys
import tempfile


class Postgres:
    """A PostgreSQL cluster of its own, stopped and removed by `stop`."""

    def __init__(self, port):
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
        if not found:
            sys.exit("no PostgreSQL server found in /usr/lib/postgresql: install it with `make postgres`")
        self.bin = os.path.dirname(found[-1])
        self.dir = tempfile.mkdtemp(prefix="marsh-pg-")
        self.user = "nobody" if os.getuid() == 0 else None
        if self.user:
            self.group = subprocess.run(["id", "-gn", self.user], capture_output=True, text=True).stdout.strip() or "nogroup"
            shutil.chown(self.dir, self.user, self.group)
        self.data = os.path.join(self.dir, "data")
        self.port = port
        self.cmd("initdb", "-D", self.data, "-U", "marsh", "--auth=trust", "--encoding=UTF8", "--no-sync", "--no-instructions")
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.dir} -c fsync=off"
        self.cmd("pg_ctl", "-D", self.data, "-l", os.path.join(self.dir, "server.log"), "-o", options, "-w", "start")
        self.cmd("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "marsh", "fleet")

    def cmd(self, program, *args):
        argv = [os.path.join(self.bin, program), *args]
        if self.user:
            argv = ["setpriv", "--reuid", self.user, "--regid", self.group, "--clear-groups", "--", *argv]
        p = subprocess.run(argv, capture_output=True, cwd=self.dir)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {p.returncode}: {p.stdout.decode()}{p.stderr.decode()}")

    def url(self):
        return f"host=127.0.0.1 port={self.port} user=marsh dbname=fleet"

    def stop(self):
        try:
            self.cmd("pg_ctl", "-D", self.data, "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
