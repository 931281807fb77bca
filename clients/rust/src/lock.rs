//! Soft locks held by a guard: released by [`LockGuard::unlock`] or, in the background, when
//! the guard is dropped.
//!
//! # After an ambiguous answer
//! A Lock answered UNAVAILABLE or broken off by a transport error (the instance may have died
//! with the request queued), or cut
//! short by the client's own deadline may have left its request queued — or granted — under
//! the lease. Retrying blindly would wait behind that orphan forever (it is the lease's own),
//! so [`LockGuard::acquire`] first releases it: it lists the lease's lock bindings
//! (Lease.TimeToLive) and Unlocks every request on exactly the call's keys that no guard of
//! this process holds, retrying until that succeeds or the lease is gone. A concurrent
//! `acquire` of the same keys under the same lease in this process cannot be told from the
//! orphan: its request may be released too, and that call then queues again.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    sync::{
        LazyLock, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use crate::{
    Client, Error, LeaseKeeper,
    pb::{self, lease_client::LeaseClient, lock_client::LockClient},
};

/// How much longer than its wait a Lock call may take before the client gives up on it (a
/// frozen instance); without a wait, the call has no deadline.
const CALL_MARGIN: Duration = Duration::from_secs(10);
/// Pause between attempts to release an orphaned request while no instance answers.
const RELEASE_PAUSE: Duration = Duration::from_millis(200);
/// The message of a Lock whose queued request was released by an Unlock with its handle.
const RELEASED: &str = "lock request was released";

/// The handles held by this process's guards, per lease: never taken for orphans.
static HELD: LazyLock<Mutex<HashMap<i64, HashSet<String>>>> = LazyLock::new(Mutex::default);
/// How many orphan clean-ups released something: a Lock whose request was released while it
/// waited queues again if one did meanwhile (it was taken for an orphan).
static CLEANUPS: AtomicU64 = AtomicU64::new(0);

fn held_handles() -> std::sync::MutexGuard<'static, HashMap<i64, HashSet<String>>> {
    HELD.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn remember(lease_id: i64, handle: &str) {
    held_handles().entry(lease_id).or_default().insert(handle.to_owned());
}

fn forget(lease_id: i64, handle: &str) {
    let mut held = held_handles();
    if let Some(handles) = held.get_mut(&lease_id) {
        handles.remove(handle);
        if handles.is_empty() {
            held.remove(&lease_id);
        }
    }
}

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
/// current tokio runtime, retrying while no instance answers until they are released or the
/// lease is gone); [`LockGuard::unlock`] releases them and reports the outcome. Either way the
/// locks also end with the lease.
#[derive(Debug)]
pub struct LockGuard {
    client: Client,
    lease: pb::LeaseRef,
    handle: String,
    tokens: BTreeMap<String, u64>,
    released: bool,
    /// The lease's status: a hold is covered by its lease's confirmed heartbeats.
    validity: tokio::sync::watch::Receiver<crate::LeaseStatus>,
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
        let lease_ref = lease.lease_ref();
        let keys: BTreeSet<String> = options.keys.iter().cloned().collect();
        let deadline = options.wait.map(|wait| wait + CALL_MARGIN);
        let mut at = client.current();
        let mut unavailable = 0;
        loop {
            let cleanups = CLEANUPS.load(Ordering::Acquire);
            let mut locks = LockClient::new(client.channel(at));
            let call = locks.lock(request.clone());
            let answer = match deadline {
                Some(deadline) => tokio::time::timeout(deadline, call)
                    .await
                    .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("client deadline exceeded"))),
                None => call.await,
            };
            let error = match answer {
                Ok(response) => {
                    let response = response.into_inner();
                    return Ok(Self::held(client, lease, response.handle, response.tokens));
                }
                Err(status) => Error::from(status),
            };
            match &error {
                // The instance may have died with the request queued: release it, then try the
                // next instance (every one once).
                Error::Status(status) if unreachable(status) => {
                    release_orphans(client, &lease_ref, &keys).await?;
                    unavailable += 1;
                    if unavailable >= client.endpoints() {
                        return Err(error);
                    }
                    at = client.rotate(at);
                }
                // Our own deadline (not the server's wait): the request may still be queued.
                Error::Status(status) if status.code() == tonic::Code::DeadlineExceeded => {
                    release_orphans(client, &lease_ref, &keys).await?;
                    return Err(error);
                }
                // Taken for an orphan by a concurrent clean-up of this process: queue again.
                Error::Status(status)
                    if status.code() == tonic::Code::FailedPrecondition
                        && status.message() == RELEASED
                        && CLEANUPS.load(Ordering::Acquire) != cleanups => {}
                _ => return Err(error),
            }
        }
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
        let (lease_ref, keys) = (lease.lease_ref(), options.keys.iter().cloned().collect());
        let mut at = client.current();
        let mut unavailable = 0;
        let response = loop {
            match LockClient::new(client.channel(at)).try_lock(request.clone()).await {
                Ok(response) => break response.into_inner(),
                // The instance may have died between queueing and withdrawing the request.
                Err(status) if unreachable(&status) => {
                    release_orphans(client, &lease_ref, &keys).await?;
                    unavailable += 1;
                    if unavailable >= client.endpoints() {
                        return Err(status.into());
                    }
                    at = client.rotate(at);
                }
                Err(status) => return Err(status.into()),
            }
        };
        if response.acquired {
            Ok(Ok(Self::held(client, lease, response.handle, response.tokens)))
        } else {
            Ok(Err(response.blocked))
        }
    }

    fn held(client: &Client, lease: &LeaseKeeper, handle: String, tokens: Vec<pb::KeyToken>) -> Self {
        remember(lease.id(), &handle);
        Self {
            client: client.clone(),
            lease: lease.lease_ref(),
            handle,
            tokens: tokens.into_iter().map(|t| (t.key, t.fencing_token)).collect(),
            released: false,
            validity: lease.watch(),
        }
    }

    /// Until when the holds may be acted on (the crate's safety rule): the send time of the
    /// lease's last confirmed heartbeat + ttl, if still ahead; `None` when nothing may be done
    /// with them now. Check it right before each write, and pass the key's token along.
    pub fn valid_until(&self) -> Option<tokio::time::Instant> {
        match *self.validity.borrow() {
            crate::LeaseStatus::Confirmed { until } if tokio::time::Instant::now() < until => Some(until),
            _ => None,
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
        forget(self.lease.id, &self.handle);
        unlock(&self.client, &self.lease, &self.handle).await
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        forget(self.lease.id, &self.handle);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(handle = %self.handle, "lock guard dropped outside a tokio runtime; the locks end with the lease");
            return;
        };
        let (client, lease, handle) = (self.client.clone(), self.lease.clone(), std::mem::take(&mut self.handle));
        // Unwanted now: retried while no instance answers, until released or the lease is gone
        // (one attempt during an outage would leave the hold behind for the lease's lifetime).
        runtime.spawn(async move {
            loop {
                match unlock(&client, &lease, &handle).await {
                    Ok(()) => return,
                    Err(Error::Status(status)) if unreachable(&status) => tokio::time::sleep(RELEASE_PAUSE).await,
                    Err(error) if error.code() == Some(tonic::Code::NotFound) => return,
                    Err(error) => {
                        tracing::warn!(%handle, %error, "releasing a dropped lock guard failed");
                        return;
                    }
                }
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

/// Whether `status` says the instance could not be reached or failed mid-call: UNAVAILABLE, or
/// the transport error (UNKNOWN) of a connection that broke while the call was in flight (the
/// instance died): either way the call's outcome is unknown.
fn unreachable(status: &tonic::Status) -> bool {
    use std::error::Error as _;
    match status.code() {
        tonic::Code::Unavailable => true,
        tonic::Code::Unknown => status.source().is_some_and(|s| s.downcast_ref::<tonic::transport::Error>().is_some()),
        _ => false,
    }
}

/// Releases the lease's lock requests on exactly `keys` that no guard of this process holds:
/// what a Lock call answered UNAVAILABLE or cut short by its deadline may have left queued (or
/// granted). Lists them with Lease.TimeToLive and Unlocks each, retrying through every instance
/// until that succeeds or the lease is gone. Runs in its own task: dropping the caller does not
/// stop it.
///
/// # Errors
/// [`Error::LeaseLost`] when the lease is gone (nothing is left then either); a status other
/// than UNAVAILABLE.
async fn release_orphans(client: &Client, lease: &pb::LeaseRef, keys: &BTreeSet<String>) -> Result<(), Error> {
    let (client, lease, keys) = (client.clone(), lease.clone(), keys.clone());
    let task = tokio::spawn(async move {
        loop {
            let request = pb::TimeToLiveRequest { lease_id: lease.id };
            let listed =
                client.retrying(|channel| async move { LeaseClient::new(channel).time_to_live(request).await }).await;
            let bindings = match listed {
                Ok(response) => response.into_inner().bindings,
                Err(error) => match error.code() {
                    Some(tonic::Code::NotFound) => return Err(Error::LeaseLost),
                    Some(tonic::Code::Unavailable) => {
                        tokio::time::sleep(RELEASE_PAUSE).await;
                        continue;
                    }
                    _ => return Err(error),
                },
            };
            let mut requests: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for binding in bindings.into_iter().filter(|b| b.kind() == pb::binding::Kind::Lock) {
                requests.entry(binding.id).or_default().insert(binding.name);
            }
            let orphans: Vec<String> = {
                let held = held_handles();
                let held = held.get(&lease.id);
                requests
                    .into_iter()
                    .filter(|(handle, on)| *on == keys && !held.is_some_and(|h| h.contains(handle)))
                    .map(|(handle, _)| handle)
                    .collect()
            };
            for handle in &orphans {
                loop {
                    match unlock(&client, &lease, handle).await {
                        Ok(()) => break,
                        Err(error) => match error.code() {
                            // Gone already (withdrawn, or with its lease).
                            Some(tonic::Code::NotFound) => break,
                            Some(tonic::Code::Unavailable) => tokio::time::sleep(RELEASE_PAUSE).await,
                            _ => return Err(error),
                        },
                    }
                }
                tracing::debug!(%handle, lease = lease.id, "released an orphaned lock request");
            }
            if !orphans.is_empty() {
                CLEANUPS.fetch_add(1, Ordering::AcqRel);
            }
            return Ok(());
        }
    });
    task.await.unwrap_or_else(|e| Err(Error::Status(tonic::Status::cancelled(format!("orphan clean-up: {e}")))))
}
