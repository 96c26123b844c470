"""`python-backend`: a marsh storage backend written in Python, built into a WebAssembly
component by componentize-py against `marsh:plugin@0.2.0`.

It keeps shares in one granted store (config `store`, default `shares`), using whole-object
operations only, so it runs on any store, S3 included:
- an upload's declared size is `incoming/<si>/<shnum>/size`, each write a chunk object
  `incoming/<si>/<shnum>/chunk-<offset, 20 digits>` (the digits make keys list in offset order);
- `finish` streams the chunks in order into `shares/<si>/<shnum>` (create-only), then deletes
  them, so a share is visible only once complete;
- a mutable share is read, changed and written back whole at `slots/<si>/<shnum>`.

Share bytes never enter Python: a write arrives as a host-held payload that goes straight to
`payloads.put`, `finish` moves chunks with `payloads.get_range` and `payloads.append`, and a read
answers with the payload `payloads.get_range` gave. Mutable shares are read and written as bytes.
"""

from typing import List, Optional

from wit_world import exports
from wit_world.exports import shares
from wit_world.imports import blobs, payloads, types
from wit_world.types import Err

NAME = "python-backend"
VERSION = "0.1.0"
# A mutable share is held whole in memory here: refuse ones past this, rather than grow
# until the host's memory cap stops the instance.
MAX_SLOT = 64 << 20

_STORE: Optional[blobs.Store] = None


def _blob_to_backend(e: types.BlobError) -> shares.BackendError:
    if isinstance(e, types.BlobError_NotFound):
        return shares.BackendError_NotFound()
    if isinstance(e, types.BlobError_Exists):
        return shares.BackendError_Exists()
    if isinstance(e, types.BlobError_NoSpace):
        return shares.BackendError_NoSpace()
    if isinstance(e, types.BlobError_TooLarge):
        return shares.BackendError_OutOfRange(f"{e.value} bytes in one call is too many")
    return shares.BackendError_Io(f"store: {e}")


def _backend_errors(method):
    """Run `method`, turning a store's error into the backend error the host expects."""

    def run(*args):
        try:
            return method(*args)
        except Err as e:
            if isinstance(e.value, tuple(types.BlobError.__args__)):
                raise Err(_blob_to_backend(e.value))
            raise

    return run


def _fail(error: shares.BackendError):
    raise Err(error)


def _store() -> blobs.Store:
    if _STORE is None:
        _fail(shares.BackendError_Io("plugin called before init"))
    return _STORE


def _share(si: str, n: int) -> str:
    return f"shares/{si}/{n}"


def _incoming(si: str, n: int) -> str:
    return f"incoming/{si}/{n}"


def _slot(si: str, n: int) -> str:
    return f"slots/{si}/{n}"


def _list_all(prefix: str) -> List[str]:
    keys, after = [], None
    while True:
        page = _store().list_keys(prefix, after, 1000)
        keys.extend(page.keys)
        if page.next is None:
            return keys
        after = page.next


def _numbers(prefix: str) -> List[int]:
    out = []
    for key in _list_all(prefix):
        tail = key.rsplit("/", 1)[-1]
        if tail.isdigit():
            out.append(int(tail))
    return sorted(out)


def _declared(si: str, n: int) -> Optional[int]:
    raw = _store().get(f"{_incoming(si, n)}/size")
    if raw is None:
        return None
    if len(raw) != 8:
        _fail(shares.BackendError_Corrupt("bad size record"))
    return int.from_bytes(raw, "big")


def _chunks(si: str, n: int):
    """(offset, key) of an upload's chunks, in offset order."""
    out = []
    for key in _list_all(f"{_incoming(si, n)}/chunk-"):
        tail = key.rsplit("chunk-", 1)[-1]
        if tail.isdigit():
            out.append((int(tail), key))
    return sorted(out)


def _discard_upload(si: str, n: int) -> None:
    for key in _list_all(f"{_incoming(si, n)}/"):
        _store().delete(key)


class Shares(exports.Shares):
    def info(self) -> types.PluginInfo:
        return types.PluginInfo(
            name=NAME,
            version=VERSION,
            description="example in Python: write-once objects in one store",
            concurrency=types.Concurrency.POOLED,
        )

    def init(self, config: List[types.ConfigEntry]) -> None:
        global _STORE
        name = "shares"
        for entry in config:
            if entry.key != "store":
                raise Err(types.InitError_BadConfig(f"unknown key `{entry.key}`: {NAME} knows only `store`"))
            name = entry.value
        try:
            _STORE = blobs.open(name)
        except Err as e:
            raise Err(types.InitError_Unavailable(f"cannot open the store `{name}`: {e.value}"))

    @_backend_errors
    def begin(self, si: str, shnum: int, size: int) -> None:
        if _store().head(_share(si, shnum)) is not None:
            _fail(shares.BackendError_Exists())
        _discard_upload(si, shnum)
        _store().put(f"{_incoming(si, shnum)}/size", size.to_bytes(8, "big"), blobs.PutMode.OVERWRITE)

    @_backend_errors
    def write(self, si: str, shnum: int, offset: int, data: payloads.Payload) -> None:
        size = _declared(si, shnum)
        if size is None:
            _fail(shares.BackendError_NotFound())
        if offset + data.len() > size:
            _fail(shares.BackendError_OutOfRange(f"write at {offset} past the declared size {size}"))
        # The payload goes to the store as it came: the bytes never enter Python.
        payloads.put(_store(), f"{_incoming(si, shnum)}/chunk-{offset:020}", data, blobs.PutMode.OVERWRITE)

    @_backend_errors
    def read_incoming(self, si: str, shnum: int, offset: int, length: int) -> bytes:
        size = _declared(si, shnum)
        if size is None:
            _fail(shares.BackendError_NotFound())
        end = min(offset + length, size)
        out = bytearray(max(0, end - offset))
        # Later chunks win where chunks overlap; the host only asks for ranges it wrote.
        for at, key in _chunks(si, shnum):
            clen = _store().head(key)
            if clen is None:
                continue
            lo, hi = max(at, offset), min(at + clen, end)
            if lo < hi:
                part = _store().get_range(key, lo - at, hi - lo) or b""
                out[lo - offset : lo - offset + len(part)] = part
        return bytes(out)

    @_backend_errors
    def finish(self, si: str, shnum: int) -> None:
        size = _declared(si, shnum)
        if size is None:
            _fail(shares.BackendError_NotFound())
        upload = _store().begin_upload(_share(si, shnum), blobs.PutMode.CREATE_ONLY)
        pos = 0
        for at, key in _chunks(si, shnum):
            clen = _store().head(key)
            if clen is None:
                continue
            if at > pos:
                _fail(shares.BackendError_OutOfRange(f"bytes {pos}..{at} were never written"))
            if at + clen > pos:
                part = payloads.get_range(_store(), key, pos - at, at + clen - pos)
                if part is None:
                    _fail(shares.BackendError_Corrupt(f"chunk {key} vanished"))
                payloads.append(upload, part)
                pos = at + clen
        if pos != size:
            _fail(shares.BackendError_OutOfRange(f"{pos} of {size} bytes written"))
        blobs.Upload.finish(upload)
        _discard_upload(si, shnum)

    @_backend_errors
    def abort(self, si: str, shnum: int) -> None:
        _discard_upload(si, shnum)

    @_backend_errors
    def read(self, si: str, shnum: int, offset: int, length: int) -> payloads.Payload:
        part = payloads.get_range(_store(), _share(si, shnum), offset, length)
        if part is None:
            _fail(shares.BackendError_NotFound())
        return part

    @_backend_errors
    def size(self, si: str, shnum: int) -> Optional[int]:
        return _store().head(_share(si, shnum))

    @_backend_errors
    def list_shares(self, si: str) -> List[int]:
        return _numbers(f"shares/{si}/")

    @_backend_errors
    def delete(self, si: str, shnum: int) -> bool:
        return _store().delete(_share(si, shnum))

    @_backend_errors
    def mutable_read(self, si: str, shnum: int, offset: int, length: int) -> bytes:
        return _store().get_range(_slot(si, shnum), offset, length) or b""

    @_backend_errors
    def mutable_write(self, si: str, shnum: int, writes: List[shares.WriteVector], new_length: Optional[int]) -> None:
        if new_length == 0:
            _store().delete(_slot(si, shnum))
            return
        data = bytearray(_store().get(_slot(si, shnum)) or b"")
        for w in writes:
            end = w.offset + len(w.data)
            if end > MAX_SLOT:
                _fail(shares.BackendError_NoSpace())
            if len(data) < end:
                data.extend(bytes(end - len(data)))
            data[w.offset : end] = w.data
        if new_length is not None and new_length < len(data):
            del data[new_length:]
        _store().put(_slot(si, shnum), bytes(data), blobs.PutMode.OVERWRITE)

    @_backend_errors
    def mutable_size(self, si: str, shnum: int) -> Optional[int]:
        return _store().head(_slot(si, shnum))

    @_backend_errors
    def mutable_list(self, si: str) -> List[int]:
        return _numbers(f"slots/{si}/")

    @_backend_errors
    def mutable_delete(self, si: str, shnum: int) -> bool:
        return _store().delete(_slot(si, shnum))

    @_backend_errors
    def list_indexes(self, start_after: Optional[str], limit: int) -> shares.IndexPage:
        # Simple and O(shares): fine for an example; a real backend pages the listing.
        found = set()
        for tree in ("shares/", "slots/"):
            for key in _list_all(tree):
                parts = key.split("/")
                if len(parts) > 1:
                    found.add(parts[1])
        ordered = sorted(s for s in found if start_after is None or s > start_after)
        limit = max(1, min(limit, 1000))
        page = ordered[:limit]
        return shares.IndexPage(indexes=page, next=page[-1] if len(ordered) > limit else None)

    @_backend_errors
    def usage(self) -> shares.SpaceUsage:
        return shares.SpaceUsage(available=_store().available(), used=None)

    def sweep(self, grace_seconds: int) -> shares.SweepReport:
        return shares.SweepReport(examined=0, removed=0, removed_bytes=0)
