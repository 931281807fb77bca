//! ZooKeeper access: the session zkcoord keeps (re-established after expiry), its credentials,
//! the ACL of what it creates, and the layout of zkcoord's znodes under its namespace.

pub mod acl;
pub mod auth;
pub mod layout;
pub mod proof;
pub mod proven;
pub mod session;

pub use auth::ZkAuth;
pub use proof::{Proof, ProofTiming};
pub use session::{SessionStatus, ZkConfig, ZkSession};

/// Runs one ZooKeeper request (`op` on `path`) inside its own `zookeeper` span, a child of the
/// current span (the RPC's, when there is one), so traces show each request below its call.
/// Adds no other behaviour: the request's outcome and cancellation are the request's own.
pub async fn traced<F: std::future::Future>(op: &'static str, path: &str, request: F) -> F::Output {
    use tracing::Instrument;
    request.instrument(tracing::info_span!("zookeeper", otel.name = op, zk.op = op, zk.path = path)).await
}
