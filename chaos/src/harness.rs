//! The integration tests' ZooKeeper ensembles, proxies and four-letter-word client
//! (`tests/support/`), shared as-is.

#[path = "../../tests/support/four_letter.rs"]
pub mod four_letter;
#[allow(dead_code, clippy::unwrap_used)]
#[path = "../../tests/support/proxy.rs"]
pub mod proxy;
#[allow(dead_code)]
#[path = "../../tests/support/zk.rs"]
pub mod zk;
