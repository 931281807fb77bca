//! Soft locks held by a guard: released by [`LockGuard::unlock`] or, in the background, when
//! the guard is dropped.

use std::{collections::BTreeMap, time::Duration};

use crate::{
    Client, Error, LeaseKeeper,
    pb::{self, lock_client::LockClient},
};

/// Exclusive (one holder) or shared (many holders, no exclusive one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    /// One holder per key.
    Exclusive,
    /// Any number of shared holders, while no exclusive one holds the key.
    Shared,
}

impl From<LockMode> for pb::LockMode {
    fn from(mode: LockMode) -> Self {
        match mode {
            LockMode::Exclusive => pb::LockMode::Exclusive,
            LockMode::Shared => pb::LockMode::Shared,
        }
    }
}

/// What to lock: a set of keys (all or nothing), a mode, and how long to wait.
#[derive(Clone, Debug)]
pub struct LockOptions {
    keys: Vec<String>,
    mode: LockMode,
    wait: Option<Duration>,
}

impl LockOptions {
    /// Exclusive locks on `keys`, waiting as long as it takes.
    pub fn exclusive<I, S>(keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self { keys: keys.into_iter().map(Into::into).collect(), mode: LockMode::Exclusive, wait: None }
    }

    /// Shared locks on `keys`, waiting as long as it takes.
    pub fn shared<I, S>(keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self { keys: keys.into_iter().map(Into::into).collect(), mode: LockMode::Shared, wait: None }
    }

    /// Gives up after `wait` ([`Error::LockWaitTimedOut`]), leaving nothing queued or held.
    pub fn timeout(mut self, wait: Duration) -> Self {
        self.wait = Some(wait);
        self
    }

    fn lock_request(&self, lease: &LeaseKeeper) -> pb::LockRequest {
        pb::LockRequest {
            keys: self.keys.clone(),
            lease: Some(lease.lease_ref()),
            mode: pb::LockMode::from(self.mode).into(),
            // 0 means "no timeout" on the wire; a zero Duration becomes 1 ms, not forever.
            wait_timeout_ms: self.wait.map_or(0, |w| i64::try_from(w.as_millis().max(1)).unwrap_or(i64::MAX)),
        }
    }
}

/// Held locks on a set of keys. Dropping the guard releases them in the background (on the
/// current tokio runtime); [`LockGuard::unlock`] releases them and reports the outcome. Either
/// way the locks also end with the lease.
#[derive(Debug)]
pub struct LockGuard {
    client: Client,
    lease: pb::LeaseRef,
    handle: String,
    tokens: BTreeMap<String, u64>,
    released: bool,
}

impl LockGuard {
    /// Acquires `options.keys` for `lease`, waiting for them (all or nothing).
    ///
    /// # Errors
    /// [`Error::LockWaitTimedOut`] when the timeout passed (nothing stays queued),
    /// INVALID_ARGUMENT for bad keys, PERMISSION_DENIED / NOT_FOUND for a bad or ended lease.
    ///
    /// # Cancellation
    /// Dropping the future cancels the call; zkcoord then withdraws the queued request.
    pub async fn acquire(client: &Client, lease: &LeaseKeeper, options: LockOptions) -> Result<Self, Error> {
        let request = options.lock_request(lease);
        // Retried on UNAVAILABLE: the instance that answered so withdrew the request, or died
        // holding it queued (then the lease's end, or Unlock by handle, clears it).
        let response = client
            .retrying(|channel| {
                let request = request.clone();
                async move { LockClient::new(channel).lock(request).await }
            })
            .await?
            .into_inner();
        Ok(Self::held(client, lease, response.handle, response.tokens))
    }

    /// Acquires `options.keys` only if that needs no waiting; otherwise returns who holds
    /// each key that blocked it (and nothing stays held or queued).
    ///
    /// # Errors
    /// As [`LockGuard::acquire`], without DEADLINE_EXCEEDED.
    pub async fn try_acquire(
        client: &Client,
        lease: &LeaseKeeper,
        options: LockOptions,
    ) -> Result<Result<Self, Vec<pb::KeyHolders>>, Error> {
        let request = pb::TryLockRequest {
            keys: options.keys.clone(),
            lease: Some(lease.lease_ref()),
            mode: pb::LockMode::from(options.mode).into(),
        };
        let response = client
            .retrying(|channel| {
                let request = request.clone();
                async move { LockClient::new(channel).try_lock(request).await }
            })
            .await?
            .into_inner();
        if response.acquired {
            Ok(Ok(Self::held(client, lease, response.handle, response.tokens)))
        } else {
            Ok(Err(response.blocked))
        }
    }

    fn held(client: &Client, lease: &LeaseKeeper, handle: String, tokens: Vec<pb::KeyToken>) -> Self {
        Self {
            client: client.clone(),
            lease: lease.lease_ref(),
            handle,
            tokens: tokens.into_iter().map(|t| (t.key, t.fencing_token)).collect(),
            released: false,
        }
    }

    /// The lock handle (what `Lock.Unlock` takes).
    pub fn handle(&self) -> &str {
        &self.handle
    }

    /// The fencing token of `key`: pass it with every write to the guarded records and have
    /// the store reject tokens lower than the highest it has seen.
    pub fn token(&self, key: &str) -> Option<u64> {
        self.tokens.get(key).copied()
    }

    /// Every key with its fencing token.
    pub fn tokens(&self) -> &BTreeMap<String, u64> {
        &self.tokens
    }

    /// Releases the locks now.
    ///
    /// # Errors
    /// NOT_FOUND when they were already released (the lease ended); UNAVAILABLE when no
    /// instance answered (they are then released when the lease ends).
    pub async fn unlock(mut self) -> Result<(), Error> {
        self.released = true;
        unlock(&self.client, &self.lease, &self.handle).await
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(handle = %self.handle, "lock guard dropped outside a tokio runtime; the locks end with the lease");
            return;
        };
        let (client, lease, handle) = (self.client.clone(), self.lease.clone(), std::mem::take(&mut self.handle));
        runtime.spawn(async move {
            if let Err(error) = unlock(&client, &lease, &handle).await {
                tracing::warn!(%handle, %error, "releasing a dropped lock guard failed");
            }
        });
    }
}

/// Unlock on the current endpoint and, on UNAVAILABLE, the others. A NOT_FOUND after an
/// UNAVAILABLE counts as released (the first attempt may have gone through).
async fn unlock(client: &Client, lease: &pb::LeaseRef, handle: &str) -> Result<(), Error> {
    let mut retried = false;
    client
        .retrying(|channel| {
            let request = pb::UnlockRequest { handle: handle.to_owned(), lease: Some(lease.clone()) };
            let first = !retried;
            retried = true;
            async move {
                match LockClient::new(channel).unlock(request).await {
                    Err(status) if status.code() == tonic::Code::NotFound && !first => Ok(()),
                    other => other.map(|_| ()),
                }
            }
        })
        .await
}
