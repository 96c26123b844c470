//! Benchmarks of marsh; the binaries under `src/bin/` are run by `make bench`.
