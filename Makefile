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
PLUGINS := backend-disk backend-memory minimal-backend \
           hostile-trap hostile-spin hostile-hog hostile-flood hostile-wrong-abi

.PHONY: setup plugins build test lint run bench

setup:
	@command -v rustup >/dev/null || { echo "rustup is required (https://rustup.rs)"; exit 1; }
	rustup target add wasm32-wasip2

plugins: setup
	@for p in $(PLUGINS); do \
	  cargo build --locked --profile plugin --target wasm32-wasip2 -p $$p || exit 1; \
	done

build: plugins
	cargo build --locked --workspace --all-targets

lint: setup
	cargo fmt --all --check
	cargo clippy --locked --workspace --all-targets -- -D warnings

test: plugins lint
	cargo test --locked --workspace

run: plugins
	@echo "marsh run arrives with the GBS server; for now try: marsh plugin test $(MARSH_PLUGIN_DIR)/backend_disk.wasm"
	cargo run --locked -p marsh -- plugin test $(MARSH_PLUGIN_DIR)/backend_disk.wasm

bench: plugins
	cargo build --locked --release -p marsh --bin marsh-bench-plugin
	$(CARGO_TARGET_DIR)/release/marsh-bench-plugin $(MARSH_PLUGIN_DIR) $(CURDIR)/target
