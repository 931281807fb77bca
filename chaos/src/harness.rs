//! The integration tests' ZooKeeper ensembles and proxies (`tests/support/`), shared as-is.

#[allow(dead_code, clippy::unwrap_used)]
#[path = "../../tests/support/proxy.rs"]
pub mod proxy;
#[allow(dead_code)]
#[path = "../../tests/support/zk.rs"]
pub mod zk;
