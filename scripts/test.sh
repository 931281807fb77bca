#!/usr/bin/env bash
# The whole zkcoord test suite: formatting, lints, unit tests, and the integration tests
# against real ZooKeeper servers (standalone and 3-node ensembles, started by the tests
# themselves on loopback ports) including the Python grpcio cross-language test and the Java
# client's tests.
# Installs what it needs when missing: ZooKeeper and a JRE, etcd (the benchmark's smoke test
# compares against it), libsqlite3-dev (the flow-workers example), a JDK with Debian's grpc-java,
# protobuf-java, protoc and kotlin (the Java client, built by clients/java/build.sh into
# target/java) — Debian packages — and a Python venv with grpcio (PyPI) in target/pyvenv. The
# Rust build needs no protoc (protox, pure Rust); only the Java client's stubs come from protoc.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_zookeeper
ensure_etcd
ensure_sqlite
ZKCOORD_TEST_PYTHON="$(ensure_python_venv)"
export ZKCOORD_TEST_PYTHON
ZKCOORD_TEST_JAVA_CLASSPATH="$(ensure_java_client)"
export ZKCOORD_TEST_JAVA_CLASSPATH

cargo fmt --all --check
cargo clippy --locked --workspace --all-targets -- -D warnings
cargo test --locked --workspace --doc
cargo test --locked --workspace --all-targets
