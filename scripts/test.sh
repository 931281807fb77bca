#!/usr/bin/env bash
# The whole zkcoord test suite: formatting, lints, unit tests, and the integration tests
# against real ZooKeeper servers (standalone and 3-node ensembles, started by the tests
# themselves on loopback ports) including the Python grpcio cross-language test.
# Installs what it needs when missing: ZooKeeper and a JRE, etcd (the benchmark's smoke test
# compares against it), libsqlite3-dev (the flow-workers example) — Debian packages — and a Python venv with grpcio (PyPI) in
# target/pyvenv. No protoc: every .proto is compiled by protox (pure Rust) at build time.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_zookeeper
ensure_etcd
ensure_sqlite
ZKCOORD_TEST_PYTHON="$(ensure_python_venv)"
export ZKCOORD_TEST_PYTHON

cargo fmt --all --check
cargo clippy --locked --workspace --all-targets -- -D warnings
cargo test --locked --workspace --doc
cargo test --locked --workspace --all-targets
