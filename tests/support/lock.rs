//! A lock client bound to one lease, with the calls tests make.

use std::time::Duration;

use tonic::{Status, transport::Channel};
use zkcoord::pb::v1::{self as pb, lock_client::LockClient};

use super::lease::{grant, lease_ref};

pub const EXCLUSIVE: pb::LockMode = pb::LockMode::Exclusive;
pub const SHARED: pb::LockMode = pb::LockMode::Shared;

/// A lease and a Lock client on one instance.
#[derive(Clone, Debug)]
pub struct Locker {
    pub client: LockClient<Channel>,
    pub lease: (i64, String),
}

impl Locker {
    /// A locker with a fresh lease of `ttl` granted through `channel` (not kept alive: long
    /// enough ttls only).
    pub async fn granted(channel: &Channel, owner: &str, ttl: Duration) -> Self {
        let granted = grant(channel, owner, ttl).await;
        Self::with_lease(channel, (granted.lease_id, granted.secret))
    }

    /// A locker for an existing lease.
    pub fn with_lease(channel: &Channel, lease: (i64, String)) -> Self {
        Self { client: LockClient::new(channel.clone()), lease }
    }

    fn lease_ref(&self) -> Option<pb::LeaseRef> {
        lease_ref(self.lease.0, &self.lease.1)
    }

    /// Lock; `timeout_ms` 0 waits indefinitely.
    pub async fn lock(&self, keys: &[&str], mode: pb::LockMode, timeout_ms: i64) -> Result<pb::LockResponse, Status> {
        let request = pb::LockRequest {
            keys: keys.iter().map(|k| (*k).to_owned()).collect(),
            lease: self.lease_ref(),
            mode: mode.into(),
            wait_timeout_ms: timeout_ms,
        };
        self.client.clone().lock(request).await.map(tonic::Response::into_inner)
    }

    /// TryLock.
    pub async fn try_lock(&self, keys: &[&str], mode: pb::LockMode) -> Result<pb::TryLockResponse, Status> {
        let request = pb::TryLockRequest {
            keys: keys.iter().map(|k| (*k).to_owned()).collect(),
            lease: self.lease_ref(),
            mode: mode.into(),
        };
        self.client.clone().try_lock(request).await.map(tonic::Response::into_inner)
    }

    /// Unlock.
    pub async fn unlock(&self, handle: &str) -> Result<(), Status> {
        let request = pb::UnlockRequest { handle: handle.to_owned(), lease: self.lease_ref() };
        self.client.clone().unlock(request).await.map(|_| ())
    }

    /// Holders of `key` (or of every key with prefix `key`).
    pub async fn holders(&self, key: &str, prefix: bool) -> Vec<pb::KeyHolders> {
        let request = pb::HoldersRequest { key: key.to_owned(), prefix, ..Default::default() };
        self.client.clone().holders(request).await.expect("holders").into_inner().keys
    }
}
