//! The gRPC services: each handler validates its request, calls the coordination logic and
//! copies the result into protobuf. Nothing here talks to ZooKeeper directly.

mod check;
mod convert;
pub mod election;
pub mod lease;
pub mod lock;

use std::pin::Pin;

use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;

use crate::{
    recipe::{election::Elections, lease::Leases, lock::Locks},
    zk::ZkSession,
};

/// What every service needs: the ZooKeeper session and the shutdown signal.
#[derive(Clone, Debug)]
pub struct Context {
    /// The instance's ZooKeeper session.
    pub session: ZkSession,
    /// Cancelled when the instance starts shutting down; streams end with UNAVAILABLE.
    pub shutdown: CancellationToken,
    /// This instance's id.
    pub instance_id: String,
    /// The lease recipe.
    pub leases: Leases,
    /// The election recipe.
    pub elections: Elections,
    /// The lock recipe.
    pub locks: Locks,
}

/// A server-streaming response.
pub type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, tonic::Status>> + Send + 'static>>;
