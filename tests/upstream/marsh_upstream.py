"""Tahoe-LAFS 1.20's own HTTP storage tests, pointed at a live storage node.

This module runs under the Python of the Tahoe venv (see run.py, which starts the node). It
imports the installed test modules `allmydata.test.test_storage_http` and
`allmydata.test.test_istorageserver` and runs their test methods unchanged; only their
fixtures are replaced:

* `test_storage_http.HttpTestFixture` (an in-memory StubTreq over the Python server's
  resource, driven by a fake clock) becomes `LiveNodeFixture`: a real
  `allmydata.storage.http_client.StorageClient` made by 1.20's own `StorageClientFactory`
  from the node's NURL (real HTTPS, real SPKI pinning), and `result_of_with_flush` spins the
  real Twisted reactor until the request's Deferred fires.
* `test_istorageserver`'s `_SharedMixin` (a whole in-process grid) becomes `LiveNodeMixin`:
  `self.storage_client` is 1.20's `_HTTPStorageServer` (what a real client's storage broker
  hands out for an HTTP server) over that same kind of `StorageClient`.

Tests that need the Python server's internals cannot apply to a live node; every one of them is
listed in EXCLUDED below with its reason. Nothing is skipped anywhere else: `main()` counts a
skip as a failure, and fails if an EXCLUDED name no longer exists upstream.

The node is named by the environment: MARSH_UPSTREAM_NURL (its `pb://...#v=1` NURL).
`main(RESULT_JSON)` runs the selection and writes one record per test for run.py.
"""

import json
import os
import sys
import time
import traceback
import unittest

from attrs import evolve
from fixtures import Fixture
from hyperlink import DecodedURL
from hypothesis import settings as hypothesis_settings
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

# Hypothesis: a live node over the network is slower than hypothesis's default 200 ms deadline,
# and a standing test should be reproducible and leave no example database behind. `@given`
# takes the settings in force when the test module is imported, and importing `allmydata.test`
# loads the profile its environment variable names: so the profile is registered and named
# here, before any upstream module is imported. Upstream's explicit @settings (where present)
# still win for the fields they set.
hypothesis_settings.register_profile("marsh-upstream", deadline=None, database=None, derandomize=True)
os.environ["TAHOE_LAFS_HYPOTHESIS_PROFILE"] = "marsh-upstream"
hypothesis_settings.load_profile("marsh-upstream")

from allmydata.storage.http_client import StorageClientFactory  # noqa: E402 (after the profile)
from allmydata.storage.http_common import response_is_not_html
from allmydata.storage_client import _HTTPStorageServer
from allmydata.test import test_istorageserver as upstream_istorage
from allmydata.test import test_storage_http as upstream_http
from allmydata.test.common import AsyncTestCase
from allmydata.test.common_system import spin_until_cleanup_done

# The longest one request may take (the 50 MB mutable write in a debug build is the slowest).
SPIN_TIMEOUT = 180.0


# Every upstream test that is NOT run, with why. Keys are "module.Class" (whole class) or
# "module.Class.test_method". `main()` fails if a key names nothing upstream.
EXCLUDED = {
    # test_storage_http: classes that never talk to a storage server.
    "test_storage_http.HTTPUtilities": "unit test of a client-side helper (get_content_type); no server involved",
    "test_storage_http.ExtractSecretsTests": "unit tests of the Python server's _extract_secrets(); no HTTP",
    "test_storage_http.RouteConverterTests": "unit tests of the Python server's StorageIndexConverter; no HTTP",
    "test_storage_http.CustomHTTPServerTests": "tests a test-only Klein app (TestApp) in memory, not the storage server",
    # test_storage_http: methods that reach into the in-process Python server.
    "test_storage_http.GenericHTTPAPITests.test_missing_authentication":
        "sends through RequestTraversalAgent over self.http.http_server.get_resource() (in-process Python server)",
    "test_storage_http.GenericHTTPAPITests.test_bad_authentication":
        "builds a StubTreq over self.http.http_server.get_resource() with the fake clock (in-process Python server)",
    "test_storage_http.GenericHTTPAPITests.test_version":
        "expected value is self.http.storage_server.get_version() of the in-process Python StorageServer",
    "test_storage_http.ImmutableHTTPAPITests.test_timed_out_upload_allows_reupload":
        "advances the server-side fake clock 30 minutes to time the upload out; a live node's clock can't be advanced",
    "test_storage_http.ImmutableSharedTests.test_advise_corrupt_share":
        "replaces self.http.storage_server.advise_corrupt_share to observe the server-side call",
    "test_storage_http.MutableSharedTests.test_advise_corrupt_share":
        "replaces self.http.storage_server.advise_corrupt_share to observe the server-side call",
    "test_storage_http.ImmutableSharedTests.test_lease_renew_and_add":
        "reads leases via self.http.storage_server.get_leases() and advances the server-side fake clock",
    "test_storage_http.MutableSharedTests.test_lease_renew_and_add":
        "reads leases via self.http.storage_server.get_slot_leases() and advances the server-side fake clock",
    # test_istorageserver: the Foolscap variants (marsh speaks only HTTP).
    "test_istorageserver.FoolscapSharedAPIsTests": "Foolscap transport; the node under test speaks only HTTP",
    "test_istorageserver.FoolscapImmutableAPIsTests": "Foolscap transport; the node under test speaks only HTTP",
    "test_istorageserver.FoolscapMutableAPIsTests": "Foolscap transport; the node under test speaks only HTTP",
    # test_istorageserver: methods that read the in-process server's leases or fake its clock.
    "test_istorageserver.HTTPImmutableAPIsTests.test_allocate_buckets_creates_lease":
        "reads self.server.get_leases() and the server-side fake clock (self.fake_time())",
    "test_istorageserver.HTTPImmutableAPIsTests.test_add_lease_non_existent":
        "reads self.server.get_leases() of the in-process Python StorageServer",
    "test_istorageserver.HTTPImmutableAPIsTests.test_add_lease_renewal":
        "reads self.server.get_leases() and advances the server-side fake clock (self.fake_sleep())",
    "test_istorageserver.HTTPImmutableAPIsTests.test_add_new_lease":
        "reads self.server.get_leases() and advances the server-side fake clock (self.fake_sleep())",
    "test_istorageserver.HTTPMutableAPIsTests.test_STARAW_create_lease":
        "reads self.server.get_slot_leases() and the server-side fake clock (self.fake_time())",
    "test_istorageserver.HTTPMutableAPIsTests.test_STARAW_renews_lease":
        "reads self.server.get_slot_leases() and advances the server-side fake clock (self.fake_sleep())",
    "test_istorageserver.HTTPMutableAPIsTests.test_STARAW_new_lease":
        "reads self.server.get_slot_leases() and advances the server-side fake clock (self.fake_sleep())",
    "test_istorageserver.HTTPMutableAPIsTests.test_add_lease_renewal":
        "reads self.server.get_slot_leases() and advances the server-side fake clock (self.fake_sleep())",
    "test_istorageserver.HTTPMutableAPIsTests.test_add_new_lease":
        "reads self.server.get_slot_leases() and advances the server-side fake clock (self.fake_sleep())",
}


# ---------------------------------------------------------------------------------------------
# Driving the real reactor from synchronous tests.

def spin(d, timeout=SPIN_TIMEOUT):
    """Run the global reactor until `d` (a Deferred or coroutine) fires; return or raise its result.

    The upstream synchronous tests call this (as `result_of_with_flush`) from outside the
    reactor. Stopping uses `reactor.crash()`, which lets the next call run the reactor again,
    the way trial and testtools spin it.
    """
    d = ensureDeferred(d)
    box = []

    def fired(result):
        box.append(result)
        if reactor.running:
            reactor.crash()

    d.addBoth(fired)
    if not box:
        timer = reactor.callLater(timeout, reactor.crash)
        reactor.run(installSignalHandlers=False)
        if timer.active():
            timer.cancel()
    if not box:
        raise TimeoutError(f"no answer from the node within {timeout:.0f} s")
    if isinstance(box[0], Failure):
        box[0].raiseException()
    return box[0]


# ---------------------------------------------------------------------------------------------
# The client side: 1.20's own client, made from the NURL, with every response recorded.

# (method, path, status, content-type) of the responses the current test received; run.py
# prints the last few of a failing test's.
RESPONSES = []


def _record_response(response):
    """`analyze_response` hook: remember the response, then apply upstream's test-mode check."""
    request = getattr(response, "request", None)
    method = getattr(request, "method", b"?")
    uri = getattr(request, "absoluteURI", b"?")
    path = DecodedURL.from_text(uri.decode("ascii", "replace")).path if uri != b"?" else ("?",)
    RESPONSES.append((
        method.decode("ascii", "replace"),
        "/" + "/".join(path),
        response.code,
        (response.headers.getRawHeaders("content-type") or [None])[0],
    ))
    response_is_not_html(response)


def node_nurl():
    nurl = os.environ.get("MARSH_UPSTREAM_NURL")
    if not nurl:
        raise RuntimeError("MARSH_UPSTREAM_NURL is not set: run tests/upstream/run.py")
    return DecodedURL.from_text(nurl)


async def make_storage_client():
    """A `StorageClient` for the node, exactly as 1.20's storage broker makes one (plain TCP).

    Must be called in test mode (StorageClientFactory.start_test_mode), which hands the
    connection pool to the caller's cleanup and turns on upstream's response_is_not_html check;
    the check is kept, with the recorder in front of it.
    """
    factory = StorageClientFactory({"tcp": "tcp"}, None)
    client = await factory.create_storage_client(node_nurl(), reactor)
    return evolve(client, analyze_response=_record_response)


async def close_connections(pools):
    """Close a test's kept-alive connections and wait until the reactor has none left.

    A response whose body the client never reads (e.g. advise_corrupt_share's) hands its
    connection back to the pool a little later, hence the short wait first. The final wait is
    upstream's own (it is what its grid tests end with).
    """
    await deferLater(reactor, 0.05, lambda: None)
    await gatherResults([pool.closeCachedConnections() for pool in pools])
    await spin_until_cleanup_done()


# ---------------------------------------------------------------------------------------------
# test_storage_http: the fixture.

class _NotAvailable:
    """Stands for a part of the in-process Python server that a live node doesn't have."""

    def __init__(self, what):
        self._what = what

    def __getattr__(self, name):
        raise AttributeError(f"{self._what}.{name}: the node under test is a live process; "
                             "this test belongs in EXCLUDED")


class LiveNodeFixture(Fixture):
    """Replaces `HttpTestFixture`: `.client` talks HTTPS to the live node.

    `.clock`, `.storage_server`, `.http_server` and `.treq` exist only to fail loudly if a test
    that needs them was not excluded.
    """

    def _setUp(self):
        pools = []  # (a plain function would be bound as a method: the hook is stored on the class)
        StorageClientFactory.start_test_mode(pools.append)
        self.addCleanup(StorageClientFactory.stop_test_mode)
        self.client = spin(make_storage_client())
        self.addCleanup(lambda: spin(close_connections(pools)))
        self.clock = _NotAvailable("server-side fake clock")
        self.storage_server = _NotAvailable("in-process StorageServer")
        self.http_server = _NotAvailable("in-process HTTPServer")
        self.treq = _NotAvailable("in-memory StubTreq")

    def result_of_with_flush(self, d):
        """Upstream's way to wait for a request: here, spin the real reactor."""
        return spin(d)


# The upstream classes build their fixture from this module-level name in their setUp.
upstream_http.HttpTestFixture = LiveNodeFixture


# ---------------------------------------------------------------------------------------------
# test_istorageserver: the IStorageServer under test.

class LiveNodeMixin:
    """Replaces `_SharedMixin`: `self.storage_client` is 1.20's `_HTTPStorageServer` for the node."""

    def setUp(self):
        AsyncTestCase.setUp(self)
        # (A plain function would be bound as a method: the hook is stored on the class.)
        pools = []
        StorageClientFactory.start_test_mode(pools.append)
        self.addCleanup(StorageClientFactory.stop_test_mode)
        self.addCleanup(lambda: ensureDeferred(close_connections(pools)))
        self.server = _NotAvailable("in-process StorageServer")
        d = ensureDeferred(make_storage_client())
        d.addCallback(lambda client: setattr(self, "storage_client", _HTTPStorageServer.from_http_client(client)))
        return d

    def fake_time(self):
        raise AttributeError("server-side fake clock: not available on a live node")

    fake_sleep = fake_time


class HTTPSharedAPIsTests(LiveNodeMixin, upstream_istorage.IStorageServerSharedAPIsTestsMixin, AsyncTestCase):
    """Upstream's HTTPSharedAPIsTests, against the live node."""


class HTTPImmutableAPIsTests(LiveNodeMixin, upstream_istorage.IStorageServerImmutableAPIsTestsMixin, AsyncTestCase):
    """Upstream's HTTPImmutableAPIsTests, against the live node."""


class HTTPMutableAPIsTests(LiveNodeMixin, upstream_istorage.IStorageServerMutableAPIsTestsMixin, AsyncTestCase):
    """Upstream's HTTPMutableAPIsTests, against the live node."""


# ---------------------------------------------------------------------------------------------
# Selection.

MODULES = {"test_storage_http": upstream_http, "test_istorageserver": upstream_istorage}
# Our stand-ins for upstream classes whose fixture is not reachable by patching a name.
REPLACED = {
    "test_istorageserver.HTTPSharedAPIsTests": HTTPSharedAPIsTests,
    "test_istorageserver.HTTPImmutableAPIsTests": HTTPImmutableAPIsTests,
    "test_istorageserver.HTTPMutableAPIsTests": HTTPMutableAPIsTests,
}


def upstream_test_classes():
    """Every concrete TestCase class in the two upstream modules, as {"module.Class": class}."""
    found = {}
    for modname, module in MODULES.items():
        for name, obj in vars(module).items():
            if (isinstance(obj, type) and issubclass(obj, unittest.TestCase)
                    and obj.__module__ == module.__name__):
                found[f"{modname}.{name}"] = obj
    return found


def selection():
    """([(name, TestCase)], [(name, reason, whole class?)]) over every upstream test, sorted by name."""
    loader = unittest.TestLoader()
    selected, excluded = [], []
    known = set()
    for cls_name, cls in sorted(upstream_test_classes().items()):
        known.add(cls_name)
        methods = loader.getTestCaseNames(cls)
        known.update(f"{cls_name}.{m}" for m in methods)
        if cls_name in EXCLUDED:
            excluded += [(f"{cls_name}.{m}", EXCLUDED[cls_name], True) for m in methods]
            continue
        runnable = REPLACED.get(cls_name, cls)
        for m in methods:
            name = f"{cls_name}.{m}"
            if name in EXCLUDED:
                excluded.append((name, EXCLUDED[name], False))
            else:
                selected.append((name, runnable(m)))
    stale = sorted(set(EXCLUDED) - known)
    if stale:
        raise RuntimeError(f"EXCLUDED names tests that upstream no longer has: {stale}")
    return selected, excluded


# ---------------------------------------------------------------------------------------------
# Running.

class _OneResult(unittest.TestResult):
    """Collects the outcome of one test as (status, detail)."""

    def __init__(self):
        super().__init__()
        self.outcome = ("passed", "")

    def _bad(self, status, err, test):
        kind, value, _tb = err
        detail = "".join(traceback.format_exception(kind, value, _tb))
        # testtools attaches details (e.g. logged errors) that explain more than the traceback.
        if self.outcome[0] == "passed":
            self.outcome = (status, detail)
        else:
            self.outcome = (self.outcome[0], self.outcome[1] + "\n" + detail)

    def addError(self, test, err):
        self._bad("failed", err, test)

    def addFailure(self, test, err):
        self._bad("failed", err, test)

    def addSkip(self, test, reason):
        self.outcome = ("failed", f"skipped ({reason}): a skip is not allowed; exclude it in EXCLUDED instead")

    def addExpectedFailure(self, test, err):
        self.outcome = ("failed", "expected failure: not allowed in this suite")

    def addUnexpectedSuccess(self, test):
        self.outcome = ("failed", "unexpected success: not allowed in this suite")


def main(argv):
    """Run the selection; write [{name, status, seconds, detail, responses}] to argv[0]."""
    out_path = argv[0]
    only = argv[1:]  # optional name prefixes, to run a subset by hand
    selected, excluded = selection()
    if only:
        selected = [(n, t) for n, t in selected if any(n.startswith(p) for p in only)]
    records = [{"name": n, "status": "excluded", "detail": why, "whole_class": whole} for n, why, whole in excluded]
    for name, test in selected:
        del RESPONSES[:]
        result = _OneResult()
        start = time.time()
        test.run(result)
        status, detail = result.outcome
        records.append({"name": name, "status": status, "seconds": round(time.time() - start, 2),
                        "detail": detail, "responses": RESPONSES[-4:] if status != "passed" else []})
        print(f"{'ok  ' if status == 'passed' else 'FAIL'} {name} ({time.time() - start:.1f} s)", flush=True)
    with open(out_path, "w") as f:
        json.dump(records, f, indent=1)
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    # The reactor's thread pool (started by the first spin) would keep the interpreter alive.
    os._exit(code)
