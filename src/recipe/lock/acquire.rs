//! One Lock or TryLock call: queue the request, wait until it holds every key, or give up and
//! leave nothing behind.
//!
//! Runs in its own task (see [`super::Locks::lock`]), so that whatever it queued is released
//! even when the caller goes away.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use zookeeper_client::WatchedEvent;

use super::{
    Acquired, CachedHold, LockRequest, LocksState,
    queue::{Queue, Standing},
    record::NodeRecord,
    zkops::{self, QueueError},
};
use crate::{
    error::{Error, LOCK_REQUEST_RELEASED, Result},
    validate::Name,
    zk::{RETRY_PAUSE, Zk, layout},
};

/// A waiting request re-reads its queues this often even without a watch event: a safety net
/// against a lost notification, never needed for correctness of what is granted.
const RECHECK: Duration = Duration::from_secs(5);
/// How long a request that must be withdrawn is retried in the background when ZooKeeper is
/// unreachable; after that only the lease's end withdraws it.
const CLEANUP_FOR: Duration = Duration::from_secs(60);
/// How long a request that had to wait holds its keys before its grant time is written to its
/// znodes (for Holders' `since_unix_ms`). Writing it at once cost one ZooKeeper write per
/// contended hand-off (a third of them: queue, grant time, release) for a figure nobody reads
/// of a hold that lasts milliseconds; a hold that lasts is the one an operator looks at.
const RECORD_GRANT_AFTER: Duration = Duration::from_secs(1);

/// How long a call may wait.
#[derive(Clone, Copy, Debug)]
pub enum Wait {
    /// TryLock: not at all.
    No,
    /// Lock: until the deadline (`None`: until cancelled or the lease ends).
    Until(Option<Instant>),
}

/// A key that blocked a TryLock, with its queue (without the TryLock's request).
#[derive(Clone, Debug)]
pub struct Blocked {
    /// The key.
    pub key: Name,
    /// Its queue.
    pub queue: Queue,
}

/// What a call ended with.
#[derive(Debug)]
pub enum Outcome {
    /// Every key is held.
    Acquired(Acquired, CachedHold),
    /// TryLock only: some keys are held by others; nothing was acquired.
    Blocked(Vec<Blocked>),
}

/// Acquires `request` for `owner` (authenticated, with the lease's secret `digest`).
///
/// # Errors
/// [`Error::DeadlineExceeded`] when the wait timed out, [`Error::Cancelled`] when `cancel`
/// fired, [`Error::LeaseNotFound`] when the lease ended, [`Error::FailedPrecondition`] when an
/// Unlock with the request's handle released it (message [`LOCK_REQUEST_RELEASED`]), [`Error::ShuttingDown`],
/// [`Error::Unavailable`]. In every error case the request has been withdrawn, or its
/// withdrawal goes on in the background (ZooKeeper unreachable), bounded by the lease.
///
/// # Cancellation safety
/// Not cancellation safe: run it in its own task and signal `cancel` instead.
pub(super) async fn run(
    inner: Arc<LocksState>,
    request: LockRequest,
    owner: String,
    digest: String,
    wait: Wait,
    cancel: CancellationToken,
) -> Result<Outcome> {
    if inner.shutdown.is_cancelled() {
        return Err(Error::ShuttingDown);
    }
    let client = inner.session.client()?;
    let LockRequest { keys, lease_id, exclusive, .. } = request;
    if matches!(wait, Wait::No) {
        // A TryLock that would wait anyway fails without writing anything.
        let queues = zkops::read_queues(&client, &keys).await?;
        let blocked = blocked(&keys, queues, |q| q.would_block(exclusive));
        if !blocked.is_empty() {
            return Ok(Outcome::Blocked(blocked));
        }
    }
    let hold = layout::hold_id(crate::id::random_u64());
    let node = NodeRecord { lease_id, owner, instance: inner.me.name.clone(), acquired_unix_ms: None };
    let queued = match zkops::queue(&client, inner.session.acls(), &hold, lease_id, &keys, exclusive, &node).await {
        Ok(queued) => queued,
        Err(QueueError::Failed(err)) => return Err(err),
        Err(QueueError::Ambiguous(err)) => {
            withdraw(&inner, lease_id, &hold, None).await;
            return Err(err);
        }
    };
    // The queues were listed in the transaction's round trip (`zkops::queue`); the token is
    // read back only when the commit did not report it, while the queues are read if they
    // could not be then: in flight on the session at once, one round trip.
    let (token, result) = tokio::join!(
        zkops::read_token(&client, &queued),
        wait_for_grant(&inner, &hold, lease_id, &keys, wait, &cancel, queued.queues.clone())
    );
    match token.and_then(|token| result.map(|grant| (grant, token))) {
        Ok((Grant::All { waited }, token)) => {
            if waited {
                // For Holders' "since"; off the hand-off's critical path, and only for a hold
                // still held here after `RECORD_GRANT_AFTER` (not released through this
                // instance; one released through another fails its write harmlessly).
                let node = NodeRecord { acquired_unix_ms: Some(crate::recipe::instance::now_unix_ms()), ..node };
                let nodes = queued.nodes.clone();
                let (state, hold) = (inner.clone(), hold.clone());
                inner.tasks.spawn(async move {
                    tokio::select! {
                        () = tokio::time::sleep(RECORD_GRANT_AFTER) => {}
                        () = state.shutdown.cancelled() => return,
                    }
                    if state.cached(&hold).is_some() {
                        zkops::mark_acquired(&client, &nodes, &node).await;
                    }
                });
            }
            let cached = CachedHold { lease_id, digest, nodes: queued.nodes.into() };
            Ok(Outcome::Acquired(Acquired { hold, token }, cached))
        }
        Ok((Grant::Blocked(blocked), _)) => {
            withdraw(&inner, lease_id, &hold, Some(&queued.nodes)).await;
            Ok(Outcome::Blocked(blocked))
        }
        Err(err) => {
            withdraw(&inner, lease_id, &hold, Some(&queued.nodes)).await;
            Err(err)
        }
    }
}

/// How waiting ended.
enum Grant {
    /// Every key is held; `waited` tells whether the request had to wait.
    All { waited: bool },
    /// [`Wait::No`] only: the keys that blocked.
    Blocked(Vec<Blocked>),
}

type EventFuture = Pin<Box<dyn Future<Output = WatchedEvent> + Send>>;

/// Waits until request `hold` is granted on every key. With [`Wait::Until`], retries after
/// retryable errors (ZooKeeper unreachable) until the deadline; with [`Wait::No`], returns them.
/// `listed`: the keys' queues, read after the request was queued, for the first look.
///
/// Correctness rests on two facts: a granted request stays granted until it leaves its queues
/// (requests only join at the end), so the keys need not be read at one instant; and a request
/// waits only for requests queued before it, by earlier transactions, on every key alike, so
/// the waits form no cycle (no deadlock, whatever the key order of overlapping requests).
async fn wait_for_grant(
    inner: &LocksState,
    hold: &str,
    lease_id: i64,
    keys: &[Name],
    wait: Wait,
    cancel: &CancellationToken,
    mut listed: Option<Vec<Queue>>,
) -> Result<Grant> {
    let deadline = match wait {
        Wait::Until(deadline) => deadline,
        Wait::No => None,
    };
    let binding = zkops::binding_path(lease_id, hold);
    let mut lease_watch: Option<EventFuture> = None;
    let mut waited = false;
    loop {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        if inner.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Error::DeadlineExceeded);
        }
        let first = listed.take();
        let step = async {
            let client = inner.session.client()?;
            let queues = match first {
                Some(queues) => queues,
                None => zkops::read_queues(&client, keys).await?,
            };
            let mut blocker = None;
            let mut blocked_at = Vec::new();
            for (at, (key, queue)) in keys.iter().zip(&queues).enumerate() {
                match queue.standing(hold) {
                    Standing::Granted => {}
                    // Deleted with its lease, or released by another call with its handle.
                    Standing::Missing => return Err(gone(&client, lease_id).await),
                    Standing::Blocked { behind } => {
                        blocker.get_or_insert_with(|| format!("{}/{behind}", layout::lock(key)));
                        blocked_at.push(at);
                    }
                }
            }
            let Some(blocker) = blocker else { return Ok(Step::Granted) };
            if matches!(wait, Wait::No) {
                let blocked = blocked_at
                    .into_iter()
                    .map(|at| Blocked { key: keys[at].clone(), queue: queues[at].clone().without(hold) })
                    .collect();
                return Ok(Step::Blocked(blocked));
            }
            let (stat, watcher) = client.check_and_watch_stat(&blocker).await?;
            if stat.is_none() {
                return Ok(Step::Again); // released meanwhile
            }
            let lease = match lease_watch.take() {
                Some(armed) => armed,
                None => match client.check_and_watch_stat(&binding).await? {
                    (Some(_), watcher) => Box::pin(watcher.changed()),
                    (None, _) => return Err(gone(&client, lease_id).await),
                },
            };
            Ok(Step::Wait(Box::pin(watcher.changed()), lease))
        };
        let (blocker, mut lease) = match step.await {
            Ok(Step::Granted) => return Ok(Grant::All { waited }),
            Ok(Step::Blocked(blocked)) => return Ok(Grant::Blocked(blocked)),
            Ok(Step::Again) => continue,
            Ok(Step::Wait(blocker, lease)) => (blocker, lease),
            // A TryLock does not wait for ZooKeeper to come back: it gives up (and its request
            // is withdrawn, in the background if need be).
            Err(err) if err.is_retryable() && !inner.shutdown.is_cancelled() && !matches!(wait, Wait::No) => {
                pause(deadline, cancel).await;
                continue;
            }
            Err(err) => return Err(err),
        };
        waited = true;
        let sleep_until = deadline.map_or(Instant::now() + RECHECK, |d| d.min(Instant::now() + RECHECK));
        tokio::select! {
            _ = blocker => lease_watch = Some(lease),
            _ = &mut lease => {} // the binding changed (deleted with the lease) or the session broke: re-arm
            () = tokio::time::sleep_until(sleep_until) => lease_watch = Some(lease),
            () = cancel.cancelled() => {}
            () = inner.shutdown.cancelled() => {}
        }
    }
}

/// Why a queued request is no longer queued, as the error of its call: its lease ended
/// ([`Error::LeaseNotFound`]; the lease record goes in the same transaction as its requests), or
/// the lease lives and the request was released by an Unlock with its handle (FAILED_PRECONDITION
/// "lock request was released"); a read error when it cannot tell.
async fn gone(client: &Zk, lease_id: i64) -> Error {
    let lease = layout::lease(lease_id);
    match client.check_stat(&lease).await {
        Ok(Some(_)) => Error::FailedPrecondition(LOCK_REQUEST_RELEASED),
        Ok(None) => Error::LeaseNotFound,
        Err(err) => err.into(),
    }
}

enum Step {
    Granted,
    Blocked(Vec<Blocked>),
    Again,
    Wait(EventFuture, EventFuture),
}

/// The keys whose queue satisfies `blocks`, with that queue.
fn blocked(keys: &[Name], queues: Vec<Queue>, blocks: impl Fn(&Queue) -> bool) -> Vec<Blocked> {
    keys.iter().zip(queues).filter(|(_, q)| blocks(q)).map(|(key, queue)| Blocked { key: key.clone(), queue }).collect()
}

/// Sleeps a little before a retry, less if the deadline or cancellation comes first.
async fn pause(deadline: Option<Instant>, cancel: &CancellationToken) {
    let until = deadline.map_or(Instant::now() + RETRY_PAUSE, |d| d.min(Instant::now() + RETRY_PAUSE));
    tokio::select! {
        () = tokio::time::sleep_until(until) => {}
        () = cancel.cancelled() => {}
    }
}

/// Withdraws request `hold` (its `nodes`, when known). Tries once inline, so that a caller
/// that sees the call fail sees nothing left behind; when ZooKeeper cannot be reached, keeps
/// trying in the background for [`CLEANUP_FOR`] or until the instance shuts down (after that
/// the lease's end withdraws it). The background task is one of the lock tasks
/// [`super::Locks::drain`] waits for.
pub(super) async fn withdraw(inner: &Arc<LocksState>, lease_id: i64, hold: &str, nodes: Option<&[String]>) {
    let attempt = async {
        let client = inner.session.client()?;
        zkops::release(&client, lease_id, hold, nodes).await
    };
    match attempt.await {
        Ok(_) => {}
        Err(err) if err.is_retryable() => {
            let hold = hold.to_owned();
            let tasks = &inner.tasks;
            let inner = inner.clone();
            tasks.spawn(async move {
                let give_up = Instant::now() + CLEANUP_FOR;
                while Instant::now() < give_up && !inner.shutdown.is_cancelled() {
                    tokio::time::sleep(RETRY_PAUSE * 5).await;
                    let Ok(client) = inner.session.client() else { continue };
                    match zkops::release(&client, lease_id, &hold, None).await {
                        Ok(_) => return,
                        Err(err) if err.is_retryable() => continue,
                        Err(err) => {
                            tracing::warn!(error = %err, lease = lease_id, "could not withdraw a lock request");
                            return;
                        }
                    }
                }
                tracing::warn!(lease = lease_id, "gave up withdrawing a lock request; its lease's end will");
            });
        }
        Err(err) => tracing::warn!(error = %err, lease = lease_id, "could not withdraw a lock request"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        recipe::{instance::Incarnation, lease::Leases, lock::Locks},
        zk::{ZkConfig, ZkSession},
    };

    /// A TryLock whose reads fail with a retryable error (here: no ZooKeeper at all) answers
    /// at once instead of retrying until ZooKeeper is back; a Lock keeps waiting.
    #[tokio::test]
    async fn a_try_lock_does_not_wait_for_zookeeper() {
        let config = ZkConfig {
            hosts: "127.0.0.1:1".into(),
            namespace: "/unreachable".into(),
            session_timeout: Duration::from_secs(2),
            auth: None,
            tenants: Vec::new(),
        };
        let session = ZkSession::start(config, None);
        let shutdown = CancellationToken::new();
        let me = Incarnation::new("test");
        let leases = Leases::start(session.clone(), me.clone(), shutdown.clone(), crate::limits::Quotas::default(), 2);
        let locks = Locks::new(session, me, leases, shutdown.clone(), crate::limits::DEFAULT_LOCK_REQUESTS_PER_LEASE);
        let keys = [Name::parse("key", "k").expect("a valid key")];
        let cancel = CancellationToken::new();
        let tried = tokio::time::timeout(
            Duration::from_secs(30),
            wait_for_grant(&locks.inner, "h", 1, &keys, Wait::No, &cancel, None),
        )
        .await
        .expect("a TryLock gives up at once");
        assert!(matches!(tried, Err(Error::Unavailable)), "a TryLock answers UNAVAILABLE");
        let waited = tokio::time::timeout(
            Duration::from_millis(300),
            wait_for_grant(&locks.inner, "h", 1, &keys, Wait::Until(None), &cancel, None),
        )
        .await;
        assert!(waited.is_err(), "a Lock keeps waiting for ZooKeeper");
        shutdown.cancel();
    }
}
