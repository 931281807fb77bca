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
//! One rule for every ownership: an application acts as the owner of something — the leader of
//! a term, the holder of a lock — only while the **last confirmed heartbeat** of its lease
//! covered it, and only until that heartbeat's send time plus the lease's ttl, on the
//! application's own monotonic clock. A leadership is covered when the heartbeat's answer
//! listed it; a lock hold by every confirmed heartbeat from its grant until it is unlocked.
//! [`LeaderElector::leadership`], [`LockGuard::valid_until`] and [`LeaseKeeper::valid_until`]
//! apply that rule: check them right before each action, and pass the fencing token along.
//! The Campaign stream only notifies (an ELECTED makes the keeper send a heartbeat at once; a
//! DEPOSED ends the leadership at once and is acknowledged, so the successor need not wait).
//! An answer that is not confirmed suspends acting until the next confirmed one; after a third
//! of the ttl of such answers the keeper moves to another instance.

mod client;
mod election;
mod error;
mod lease;
mod list;
mod lock;
mod shards;

pub use client::{Client, TENANT_HEADER, TenantHeader, Tls, Transport, endpoint_of};
pub use election::{CampaignOptions, LeaderElector, Leadership, LeadershipEvent, LossReason};
pub use error::{Error, LOCK_WAIT_TIMEOUT, REASON_METADATA};
pub use lease::{CheckResult, ConfirmedBeat, LeaseKeeper, LeaseOptions, LeaseStatus};
pub use lock::{LockGuard, LockMode, LockOptions};
pub use shards::{OwnedShard, ShardEvent, ShardMember, ShardOptions};

/// Generated protobuf and gRPC client code for `zkcoord.v1`, for calls this crate does not
/// wrap.
#[allow(missing_docs, clippy::all, clippy::pedantic, clippy::unwrap_used)]
pub mod pb {
    tonic::include_proto!("zkcoord.v1");
}

/// Locks a mutex whose data stays consistent even if a holder panicked.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
