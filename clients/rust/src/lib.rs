//! A Rust client for [zkcoord](https://github.com/zkcoord/zkcoord): leases kept alive in the
//! background with health checks riding on the heartbeats, leader election as a stream of
//! events, and soft locks released when their guard is dropped.
//!
//! ```no_run
//! use std::time::Duration;
//! use zkcoord_client::{
//!     CampaignOptions, Client, LeaderElector, LeadershipEvent, LeaseKeeper, LeaseOptions, LockGuard, LockOptions,
//! };
//!
//! # async fn run() -> Result<(), zkcoord_client::Error> {
//! let client = Client::new(["127.0.0.1:7710", "127.0.0.1:7711"])?;
//! let options = LeaseOptions::new("ledger-node-a", Duration::from_secs(3)).check("database", || async {
//!     Ok(()) // e.g. `SELECT 1`; Err("why".into()) reports NOT_SERVING
//! });
//! let lease = LeaseKeeper::grant(&client, options).await?;
//!
//! // Reserve two records for a job, waiting at most 5 s; released when `guard` is dropped.
//! let guard = LockGuard::acquire(&client, &lease, LockOptions::exclusive(["order-17", "order-18"]).timeout(Duration::from_secs(5))).await?;
//! let _token = guard.token("order-17"); // pass it with every write to order-17
//! drop(guard);
//!
//! let mut elector = LeaderElector::campaign(&client, &lease, CampaignOptions::new("ledger-master", "node-a")).await?;
//! while let Some(event) = elector.next().await {
//!     match event {
//!         LeadershipEvent::BecameLeader { fencing_token, .. } => { /* start working, fenced */ }
//!         LeadershipEvent::LostLeadership { .. } => { /* stop working at once */ }
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! # Safety rule
//! An application acts as leader (or on locked records) only while the lease is **confirmed**:
//! until the send time of its last confirmed heartbeat plus its ttl, on the application's own
//! monotonic clock. [`LeaseKeeper::is_confirmed`] and [`LeaderElector`] apply that rule, so a
//! leader stops before zkcoord could have given its leadership away.

mod client;
mod election;
mod error;
mod lease;
mod lock;

pub use client::{Client, TENANT_HEADER, TenantHeader, Tls, Transport, endpoint_of};
pub use election::{CampaignOptions, LeaderElector, LeadershipEvent, LossReason};
pub use error::{Error, LOCK_WAIT_TIMEOUT, REASON_METADATA};
pub use lease::{CheckResult, LeaseKeeper, LeaseOptions, LeaseStatus};
pub use lock::{LockGuard, LockMode, LockOptions};

/// Generated protobuf and gRPC client code for `zkcoord.v1`, for calls this crate does not
/// wrap.
#[allow(missing_docs, clippy::all, clippy::pedantic, clippy::unwrap_used)]
pub mod pb {
    tonic::include_proto!("zkcoord.v1");
}
