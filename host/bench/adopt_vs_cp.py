#!/usr/bin/env python3
"""`make bench-adopt`: how long `marsh adopt` takes to take in a Tahoe storage node, against
`cp -a` of the same share tree on the same disk in the same run.

A Tahoe 1.20 node directory (`tahoe_tree.py`: the fixture node's identity) is made with SMALL
immutable shares of SMALL_BYTES and LARGE of LARGE_MIB each, in Tahoe's schema-2 container
format, one lease each.
Then, each after `sync` and, where this process may, dropping the page cache:
`cp -a shares/ COPY` followed by `sync` (cp leaves its writes in the page cache; adopt makes each
share durable before recording it, so the fair comparison includes the sync), and
`marsh adopt` into the default disk backend. Prints seconds, shares/s, MiB/s and adopt's peak
RSS, and the ratio.

Usage: adopt_vs_cp.py MARSH_BINARY WORK_DIR [SMALL [SMALL_BYTES [LARGE [LARGE_MIB]]]]
Defaults: 100000 shares of 2048 bytes, 3 of 1024 MiB.
"""

import os
import shutil
import subprocess
import sys
import time

from tahoe_tree import make_node


def quiet():
    """Flush dirty pages and, if this process may, drop the page cache: each run starts cold."""
    subprocess.run(["sync"], check=True)
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def timed(args):
    start = time.monotonic()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.monotonic() - start
    err = proc.stderr.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(args)} failed:\n{err}")
    return elapsed, usage.ru_maxrss  # KiB on Linux


def main():
    marsh, work = sys.argv[1], sys.argv[2]
    small = int(sys.argv[3]) if len(sys.argv) > 3 else 100_000
    small_bytes = int(sys.argv[4]) if len(sys.argv) > 4 else 2048
    large = int(sys.argv[5]) if len(sys.argv) > 5 else 3
    large_mib = int(sys.argv[6]) if len(sys.argv) > 6 else 1024
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    tahoe = os.path.join(work, "tahoe")
    start = time.monotonic()
    shares = make_node(tahoe, small, small_bytes, large, large_mib)
    total = small * small_bytes + large * (large_mib << 20)
    print(f"made {small} shares of {small_bytes} B and {large} of {large_mib} MiB ({total / 2**30:.2f} GiB of data) "
          f"in {time.monotonic() - start:.0f} s", flush=True)

    cold = quiet()
    start = time.monotonic()
    cp, _ = timed(["cp", "-a", shares, os.path.join(work, "copy")])
    subprocess.run(["sync"], check=True)
    cp_sync = time.monotonic() - start
    # The copy stays until the end: removing a tree just before a run slows the next run's
    # inode allocation (ext4 passes over recently freed inodes), which would count against adopt.

    quiet()
    node = os.path.join(work, "node")
    adopt, rss = timed([marsh, "adopt", tahoe, "--dir", node, "--set", "web.listen="])
    n = small + large
    print(f"page cache dropped before each run: {'yes' if cold else 'no (not permitted here)'}")
    print(f"{'':22} {'seconds':>8} {'shares/s':>9} {'MiB/s':>7}")
    for name, secs in [("cp -a", cp), ("cp -a, then sync", cp_sync), ("marsh adopt", adopt)]:
        print(f"{name:22} {secs:8.1f} {n / secs:9.0f} {total / 2**20 / secs:7.1f}")
    print(f"marsh adopt / (cp -a, then sync): {adopt / cp_sync:.2f}x; adopt's peak RSS {rss / 1024:.0f} MiB")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
