"""A synthetic Tahoe-LAFS 1.20 storage node for the benchmarks that adopt one (`adopt_vs_cp.py`,
`scale.py`): the fixture node's identity (`host/tahoe/tests/fixtures/node-made-by-1.20`) and share
files written in Tahoe's own container formats, as `allmydata/storage/immutable.py` (schema 2:
BLAKE2b-hashed lease secrets) and `allmydata/storage/mutable.py` (schema 1) lay them out.

Every share has one lease; `expired` of them ran out a day ago, the rest run 31 days from now.
Storage indexes are derived from the share's number, so two runs make the same tree.
"""

import base64
import hashlib
import os
import shutil
import struct
import time

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE = os.path.join(HERE, "..", "tahoe", "tests", "fixtures", "node-made-by-1.20")
MUTABLE_MAGIC = b"Tahoe mutable container v1\n" + b"\x75\x09\x44\x03\x8e"
NODE_ID = b"\x01" * 20


def si_of(i, kind):
    """A base32 storage index (26 characters) derived from a number."""
    digest = hashlib.sha256(f"{kind}-{i}".encode()).digest()[:16]
    return base64.b32encode(digest).decode().lower().rstrip("=")


def expiry(expired):
    return int(time.time()) + (-86400 if expired else 31 * 86400)


def immutable(size, expired):
    """The header and the one lease of an immutable schema-2 container of `size` data bytes (the
    data goes between them)."""
    lease = struct.pack(">L", 0) + hashlib.blake2b(b"r", digest_size=32).digest() + \
        hashlib.blake2b(b"c", digest_size=32).digest() + struct.pack(">L", expiry(expired))
    return struct.pack(">LLL", 2, min(size, 0xFFFFFFFF), 1), lease


def mutable(i, data, expired):
    """A mutable schema-1 container holding `data`, its write enabler and one lease."""
    enabler = hashlib.sha256(b"we-%d" % i).digest()
    # Owner 1: in a mutable container owner 0 marks an empty lease slot (allmydata/storage/mutable.py).
    lease = struct.pack(">LL32s32s20s", 1, expiry(expired), hashlib.sha256(b"mr-%d" % i).digest(),
                        hashlib.sha256(b"mc-%d" % i).digest(), NODE_ID)
    blank = b"\0" * 92 * 3
    extra = 468 + len(data)
    return (struct.pack(">32s20s32sQQ", MUTABLE_MAGIC, NODE_ID, enabler, len(data), extra) + lease + blank
            + data + struct.pack(">L", 0))


def make_node(at, small, small_bytes, large=0, large_mib=0, mutables=0, expired=0):
    """A Tahoe node directory at `at` holding `small` immutable shares of `small_bytes`, `large`
    of `large_mib` MiB and `mutables` mutable shares of `small_bytes`; every `expired`-th share
    of the small and mutable ones (0: none) holds only an expired lease. Returns the shares
    directory."""
    shutil.copytree(FIXTURE, at, ignore=shutil.ignore_patterns("shares"))
    shares = os.path.join(at, "storage", "shares")
    block = os.urandom(1 << 20)
    for i in range(small + large + mutables):
        kind = "small" if i < small else "large" if i < small + large else "mutable"
        si = si_of(i, kind)
        d = os.path.join(shares, si[:2], si)
        os.makedirs(d, exist_ok=True)
        gone = expired > 0 and kind != "large" and i % expired == 0
        with open(os.path.join(d, "0"), "wb") as f:
            if kind == "mutable":
                f.write(mutable(i, hashlib.sha256(si.encode()).digest() * (small_bytes // 32), gone))
                continue
            size = (large_mib << 20) if kind == "large" else small_bytes
            head, tail = immutable(size, gone)
            f.write(head)
            if kind == "large":
                for j in range(large_mib):
                    # Each MiB differs a little, so no two files are alike.
                    f.write(struct.pack(">QQ", i, j) + block[16:])
            else:
                f.write(hashlib.sha256(si.encode()).digest() * (small_bytes // 32) + b"\0" * (small_bytes % 32))
            f.write(tail)
    return shares
