//! Soft locks: advisory reservations of keys (e.g. records), exclusive or shared, several keys
//! at once, bound to a lease and fenced.
//!
//! # Design
//! * Each key has a queue: the container znode `/locks/<key>`, whose sequential children
//!   `<m>-<hold>-<seq>` are requests, held or waiting ([`queue`] says which).
//! * A Lock call queues its request on **all** its keys in one transaction, together with a
//!   binding under its lease record ([`zkops::queue`]). The request leaves in one transaction
//!   too: Unlock, withdrawal on timeout or cancellation, or the deletion of its lease (which
//!   deletes everything bound to it).
//! * Because a request joins every queue in one transaction, two requests are in the same
//!   order in every queue they share. A request waits only for earlier ones, so overlapping
//!   multi-key requests never deadlock, and all-or-nothing holds hold: a request is granted
//!   when it is granted in every queue, and a granted request stays granted.
//! * The fencing token of every key of a request is the zxid of the transaction that queued
//!   it. Requests are granted in queue order, which is zxid order, so a key's token grows
//!   with every hold (shared holders granted together have different tokens, all greater than
//!   any earlier exclusive holder's).
//! * A waiting call watches only the request just ahead of it (the nearest it conflicts with)
//!   and its lease binding: a release wakes one waiter, not the whole queue.
//! * An uncontended Lock + Unlock cycle costs **two ZooKeeper writes** (the queueing and the
//!   release transactions) plus one read per key; the first use of a key also creates its
//!   container, which ZooKeeper deletes some time after it empties.
//!
//! # Failure cases
//! * The holder's client dies: its lease ends, and the hold with it; the next request is
//!   granted within the lease's expiry time plus one ZooKeeper round trip.
//! * The instance serving a Lock call dies: holds stay (they belong to the lease, not to the
//!   instance). A request that was still waiting stays queued until its lease ends or it is
//!   unlocked with its handle, which its lease's bindings (Lease.TimeToLive) show; the clients
//!   do that before they retry (`docs/locks.md`, "Client rules after an ambiguous answer").
//! * ZooKeeper connection lost mid-call (a member died, a reset, no response in time): the
//!   call answers UNAVAILABLE, never INTERNAL ([`Error`]'s mapping): its outcome is unknown.
//! * The lease's ttl ran out but its home has not deleted it yet: Lock and TryLock answer
//!   NOT_FOUND "lease not found" at once ([`Leases::authenticate`]).
//! * ZooKeeper unreachable while waiting: the call keeps waiting (until its deadline); a
//!   TryLock answers UNAVAILABLE at once instead. Withdrawing a request is retried in the
//!   background for a minute, then left to the lease.
//! * The instance shuts down gracefully: waiting calls withdraw their requests and answer
//!   UNAVAILABLE; the shutdown waits for that ([`Locks::drain`]) before it closes the session.

mod acquire;
pub mod queue;
pub mod record;
pub mod zkops;

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::{StreamExt, TryStreamExt};
use tokio::sync::oneshot;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use self::acquire::{Outcome, Wait};
use crate::{
    error::{Error, Result, TOO_MANY_LOCK_REQUESTS},
    limits,
    recipe::{
        instance::Incarnation,
        lease::{Authenticated, Leases, secret},
    },
    sync_util::lock,
    validate::Name,
    zk::{Zk, ZkSession, foreign::Skipped, layout},
};

/// How many recently acquired holds an instance remembers for a fast Unlock. A forgotten hold
/// is found in ZooKeeper instead (from its binding, one read per key).
const CACHED_HOLDS: usize = 65_536;
/// How many request znode paths the remembered holds may have in all: the cache's memory
/// bound (a path is a few hundred bytes at most, typically under 100: ~25 MiB typically, under
/// 100 MiB at worst).
const CACHED_NODES: usize = 262_144;
/// Holds with more keys than this are not remembered: their Unlock reads ZooKeeper.
const CACHED_NODES_PER_HOLD: usize = 256;
/// How many keys a Holders call reads at once (each: its queue, then its holders' nodes).
const HOLDERS_READ_AHEAD: usize = 32;

/// A validated Lock or TryLock request.
#[derive(Clone, Debug)]
pub struct LockRequest {
    /// The keys, 1 to 1,000 distinct names.
    pub keys: Vec<Name>,
    /// The lease to bind the hold to.
    pub lease_id: i64,
    /// The lease's secret.
    pub secret: String,
    /// Exclusive or shared.
    pub exclusive: bool,
}

/// An acquired hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acquired {
    /// The hold id: the handle for Unlock.
    pub hold: String,
    /// The fencing token, the same for every key of the hold.
    pub token: u64,
}

/// One holder of a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HolderInfo {
    /// The lease's owner.
    pub owner: String,
    /// The lease.
    pub lease_id: i64,
    /// Whether it holds the key exclusively.
    pub exclusive: bool,
    /// When the key was acquired, Unix epoch milliseconds.
    pub since_unix_ms: i64,
    /// The hold's fencing token.
    pub token: u64,
}

/// The holders and waiters of one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyHolders {
    /// The key.
    pub key: String,
    /// Its holders.
    pub holders: Vec<HolderInfo>,
    /// The number of waiting requests.
    pub waiters: usize,
}

/// The outcome of a TryLock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TryOutcome {
    /// Every key was acquired.
    Acquired(Acquired),
    /// Nothing was acquired; these keys blocked it.
    Blocked(Vec<KeyHolders>),
}

/// What an instance remembers of a hold it granted.
#[derive(Clone, Debug)]
pub struct CachedHold {
    lease_id: i64,
    digest: String,
    nodes: Arc<[String]>,
}

/// The holds an instance remembers, oldest forgotten first, bounded in holds and in nodes.
#[derive(Debug)]
struct HoldCache {
    holds: HashMap<String, CachedHold>,
    /// Hold ids in the order remembered; forgotten ones stay until they reach the front.
    order: VecDeque<String>,
    /// The number of nodes of the holds in `holds`.
    nodes: usize,
    max_holds: usize,
    max_nodes: usize,
    max_nodes_per_hold: usize,
}

impl Default for HoldCache {
    fn default() -> Self {
        Self::new(CACHED_HOLDS, CACHED_NODES, CACHED_NODES_PER_HOLD)
    }
}

impl HoldCache {
    fn new(max_holds: usize, max_nodes: usize, max_nodes_per_hold: usize) -> Self {
        Self {
            holds: HashMap::new(),
            order: VecDeque::new(),
            nodes: 0,
            max_holds,
            max_nodes,
            max_nodes_per_hold: max_nodes_per_hold.min(max_nodes),
        }
    }

    /// Remembers `cached` under its id `hold`, forgetting the oldest holds to make room; a hold with
    /// more than `max_nodes_per_hold` nodes is not remembered.
    fn remember(&mut self, hold: &str, cached: CachedHold) {
        let size = cached.nodes.len();
        if size > self.max_nodes_per_hold {
            return;
        }
        while self.order.len() >= self.max_holds || self.nodes + size > self.max_nodes {
            let Some(old) = self.order.pop_front() else { break };
            self.forget(&old);
        }
        self.order.push_back(hold.to_owned());
        if let Some(replaced) = self.holds.insert(hold.to_owned(), cached) {
            self.nodes -= replaced.nodes.len();
        }
        self.nodes += size;
    }

    fn get(&self, hold: &str) -> Option<CachedHold> {
        self.holds.get(hold).cloned()
    }

    fn forget(&mut self, hold: &str) {
        if let Some(forgotten) = self.holds.remove(hold) {
            self.nodes -= forgotten.nodes.len();
        }
    }
}

/// The state of one instance's lock recipe (remembered holds, counts, call tasks), shared by
/// the clones of [`Locks`] and the tasks of its calls.
#[derive(Debug)]
pub(crate) struct LocksState {
    session: ZkSession,
    me: Incarnation,
    leases: Leases,
    shutdown: CancellationToken,
    cache: Mutex<HoldCache>,
    stats: Stats,
    /// The tasks of this instance's lock calls and of their background clean-ups, so that a
    /// graceful shutdown can wait until what they queued is withdrawn ([`Locks::drain`]).
    tasks: TaskTracker,
    /// `max_lock_requests_per_lease`.
    max_requests_per_lease: usize,
}

/// Counts of this instance's lock calls (for metrics).
#[derive(Debug, Default)]
struct Stats {
    in_progress: AtomicU64,
    acquired: AtomicU64,
    released: AtomicU64,
}

/// What one instance's lock calls amount to (for metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LockStats {
    /// Lock and TryLock calls being served now (most of them waiting for their keys).
    pub in_progress: u64,
    /// Requests that acquired their keys through this instance, since it started.
    pub acquired: u64,
    /// Holds released through this instance (Unlock), since it started.
    pub released: u64,
}

/// Counts a call as in progress until dropped.
struct InProgress<'a>(&'a AtomicU64);

impl<'a> InProgress<'a> {
    fn new(counter: &'a AtomicU64) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for InProgress<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl LocksState {
    fn remember(&self, hold: &str, cached: CachedHold) {
        lock(&self.cache).remember(hold, cached);
    }

    fn cached(&self, hold: &str) -> Option<CachedHold> {
        lock(&self.cache).get(hold)
    }

    fn forget(&self, hold: &str) {
        // Its place in `order` goes when it reaches the front.
        lock(&self.cache).forget(hold);
    }
}

/// The lock recipe of one instance. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Locks {
    inner: Arc<LocksState>,
}

impl Locks {
    /// The lock recipe for the instance `me`, allowing each lease `max_requests_per_lease`
    /// holds and queued requests.
    pub fn new(
        session: ZkSession,
        me: Incarnation,
        leases: Leases,
        shutdown: CancellationToken,
        max_requests_per_lease: usize,
    ) -> Self {
        Self {
            inner: Arc::new(LocksState {
                session,
                me,
                leases,
                shutdown,
                cache: Mutex::default(),
                stats: Stats::default(),
                tasks: TaskTracker::new(),
                max_requests_per_lease,
            }),
        }
    }

    /// Acquires every key of `request`, waiting up to `wait` (`None`: until cancelled or the
    /// lease ends).
    ///
    /// # Errors
    /// [`Error::DeadlineExceeded`] when `wait` ran out, [`Error::LeaseNotFound`],
    /// [`Error::WrongSecret`], [`Error::FailedPrecondition`] ("lock request was released": an
    /// Unlock with the request's handle, from its lease's bindings, released it while it waited;
    /// the lease lives), [`Error::ShuttingDown`] (the instance's shutdown began; the
    /// request has been withdrawn), [`Error::LimitReached`] (the lease has
    /// `max_lock_requests_per_lease` holds and queued requests; nothing was queued),
    /// [`Error::Unavailable`]. After an error nothing is held and no request is left queued.
    ///
    /// # Cancellation safety
    /// The work runs in its own task: cancelling the call withdraws the request (or releases
    /// the hold, if it was acquired just then), leaving nothing behind. [`Locks::drain`] waits
    /// for that task.
    pub async fn lock(&self, request: LockRequest, wait: Option<Duration>) -> Result<Acquired> {
        let deadline = wait.map(|w| tokio::time::Instant::now() + w);
        match self.run(request, Wait::Until(deadline)).await? {
            Outcome::Acquired(acquired, _) => Ok(acquired),
            Outcome::Blocked(_) => Err(Error::Internal("a waiting lock reported blocked".into())),
        }
    }

    /// Acquires every key of `request` if none is held by a conflicting request (or waited
    /// for by an earlier one); else acquires nothing and says who holds the blocking keys.
    ///
    /// # Errors
    /// As [`Locks::lock`], without [`Error::DeadlineExceeded`]. [`Error::Unavailable`] comes at
    /// once when ZooKeeper cannot be reached: a TryLock never waits for it to come back.
    ///
    /// # Cancellation safety
    /// As [`Locks::lock`].
    pub async fn try_lock(&self, request: LockRequest) -> Result<TryOutcome> {
        match self.run(request, Wait::No).await? {
            Outcome::Acquired(acquired, _) => Ok(TryOutcome::Acquired(acquired)),
            Outcome::Blocked(blocked) => {
                let client = self.inner.session.client()?;
                let reads =
                    blocked.iter().map(|b| key_holders(&client, &b.key, &b.queue, self.inner.session.skipped()));
                let keys = futures_util::future::try_join_all(reads).await?;
                Ok(TryOutcome::Blocked(keys))
            }
        }
    }

    /// Runs one call in its own task; see [`acquire::run`].
    async fn run(&self, request: LockRequest, wait: Wait) -> Result<Outcome> {
        let _in_progress = InProgress::new(&self.inner.stats.in_progress);
        let authenticated = self.inner.leases.authenticate(request.lease_id, &request.secret).await?;
        self.check_requests(request.lease_id, &authenticated).await?;
        let Authenticated { owner, digest, attached, .. } = authenticated;
        let cancel = CancellationToken::new();
        let _cancel_on_drop = cancel.clone().drop_guard();
        let (sender, receiver) = oneshot::channel();
        let inner = self.inner.clone();
        let lease_id = request.lease_id;
        self.inner.tasks.spawn(tracing::Instrument::in_current_span(async move {
            let outcome = acquire::run(inner.clone(), request, owner, digest, wait, cancel).await;
            if let Ok(Outcome::Acquired(acquired, cached)) = &outcome {
                inner.stats.acquired.fetch_add(1, Ordering::Relaxed);
                inner.remember(&acquired.hold, cached.clone());
            }
            if let Err(Ok(Outcome::Acquired(acquired, cached))) = sender.send(outcome) {
                // The caller went away just as the keys were acquired: nobody has the handle.
                inner.forget(&acquired.hold);
                acquire::withdraw(&inner, lease_id, &acquired.hold, Some(&cached.nodes)).await;
            }
        }));
        let outcome = receiver.await.map_err(|_| Error::Internal("lock task ended without an answer".into()))?;
        if let (Ok(Outcome::Acquired(..)), Some(lease)) = (&outcome, &attached) {
            lease.lock_requests.fetch_add(1, Ordering::Relaxed);
        }
        outcome
    }

    /// Refuses a new request of lease `lease_id` when it has `max_lock_requests_per_lease`
    /// already (see [`crate::limits`]): counted exactly (one read of its bindings) only when
    /// the estimate at hand reaches the limit — the child count of its record when the call
    /// read it, else the requests counted in memory for a lease attached here.
    ///
    /// # Errors
    /// [`Error::LimitReached`], [`Error::LeaseNotFound`], [`Error::Unavailable`].
    async fn check_requests(&self, lease_id: i64, authenticated: &Authenticated) -> Result<()> {
        let max = self.inner.max_requests_per_lease;
        let estimate = match (authenticated.stored_bindings, &authenticated.attached) {
            (Some(bindings), _) => bindings,
            (None, Some(lease)) => lease.lock_requests.load(Ordering::Relaxed),
            (None, None) => 0,
        };
        if estimate < max {
            return Ok(());
        }
        let names = self.inner.leases.binding_names(lease_id).await?;
        let (requests, _) = limits::bindings_of_kind(&names, layout::HOLD_BINDING_PREFIX, None);
        if let Some(lease) = &authenticated.attached {
            lease.lock_requests.store(requests, Ordering::Relaxed);
        }
        limits::below(requests, max, TOO_MANY_LOCK_REQUESTS)
    }

    /// Releases the hold `hold` (its id, the handle of Unlock) of lease `lease_id`.
    ///
    /// # Errors
    /// [`Error::HoldNotFound`] when no such hold exists (never acquired, released, or
    /// released with its lease), [`Error::LeaseNotFound`], [`Error::WrongSecret`],
    /// [`Error::Unavailable`].
    ///
    /// # Cancellation safety
    /// One transaction: a cancelled call released the hold or did nothing.
    pub async fn unlock(&self, lease_id: i64, secret: &str, hold: &str) -> Result<()> {
        if !layout::is_hold_id(hold) {
            return Err(Error::HoldNotFound);
        }
        let cached = self.inner.cached(hold).filter(|c| c.lease_id == lease_id);
        let nodes = match &cached {
            Some(cached) if secret::matches(secret, &cached.digest) => Some(cached.nodes.clone()),
            Some(_) => return Err(Error::WrongSecret),
            None => {
                self.inner.leases.authenticate(lease_id, secret).await?;
                None
            }
        };
        let client = self.inner.session.client()?;
        let released = zkops::release(&client, lease_id, hold, nodes.as_deref()).await?;
        self.inner.forget(hold);
        if !released {
            return Err(Error::HoldNotFound);
        }
        self.inner.stats.released.fetch_add(1, Ordering::Relaxed);
        if let Some(lease) = self.inner.leases.attached(lease_id) {
            let _ = lease.lock_requests.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
        Ok(())
    }

    /// Waits until every lock call's task has ended: each waiting call, once the shutdown
    /// token fired, withdraws its request and ends; a call whose caller went away withdraws
    /// its request or hold. Meant for graceful shutdown, before the ZooKeeper session closes
    /// (bound it with a timeout: a withdrawal may be waiting for ZooKeeper).
    ///
    /// # Cancellation safety
    /// Only waits: safe to cancel.
    pub async fn drain(&self) {
        // Closing only lets `wait` finish once nothing runs; tasks spawned later still count.
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    /// What this instance's lock calls amount to so far.
    pub fn stats(&self) -> LockStats {
        let stats = &self.inner.stats;
        LockStats {
            in_progress: stats.in_progress.load(Ordering::Relaxed),
            acquired: stats.acquired.load(Ordering::Relaxed),
            released: stats.released.load(Ordering::Relaxed),
        }
    }

    /// The holders and waiter counts of `key`, or of the keys starting with `key` when
    /// `prefix` is set, ordered by key: with `prefix`, one page of at most `size` keys greater
    /// than `after` (from the first when `None`), and the key to continue after when more keys
    /// follow. Keys with neither holders nor waiters are left out.
    ///
    /// Reads at most [`HOLDERS_READ_AHEAD`] keys at a time, and only as many as the page needs
    /// (plus that read-ahead).
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    ///
    /// # Cancellation safety
    /// Read-only: safe to cancel.
    pub async fn holders(
        &self,
        key: &str,
        prefix: bool,
        after: Option<&Name>,
        size: usize,
    ) -> Result<(Vec<KeyHolders>, Option<Name>)> {
        let client = self.inner.session.client()?;
        let keys: Vec<Name> = if prefix {
            let mut keys: Vec<Name> = client
                .list_children(layout::LOCKS)
                .await?
                .ok_or(zookeeper_client::Error::NoNode)?
                .iter()
                .filter(|k| k.starts_with(key))
                .filter_map(|k| Name::parse("key", k).ok())
                .filter(|k| after.is_none_or(|after| k > after))
                .collect();
            keys.sort();
            keys
        } else {
            vec![Name::parse("key", key)?]
        };
        let total = keys.len();
        let session = self.inner.session.clone();
        // Owned keys and clients: borrowed ones make the future not provably Send.
        let reads = keys.into_iter().map(|key| {
            let client = client.clone();
            let session = session.clone();
            async move {
                let queue = zkops::read_queue(&client, &key).await?;
                if queue.nodes.is_empty() {
                    return Ok((key, None));
                }
                let holders = key_holders(&client, &key, &queue, session.skipped()).await?;
                Ok::<_, Error>((key, Some(holders)))
            }
        });
        // `buffered` keeps the keys' order.
        let mut found = futures_util::stream::iter(reads).buffered(HOLDERS_READ_AHEAD);
        let mut page = Vec::new();
        let mut examined = 0;
        let mut last = None;
        while page.len() < size
            && let Some((key, holders)) = found.try_next().await?
        {
            examined += 1;
            if let Some(holders) = holders.filter(|k| !k.holders.is_empty() || k.waiters > 0) {
                page.push(holders);
            }
            last = Some(key);
        }
        Ok((page, last.filter(|_| examined < total)))
    }
}

/// Describes `key` with queue `queue`.
async fn key_holders(client: &Zk, key: &Name, queue: &queue::Queue, skipped: &Skipped) -> Result<KeyHolders> {
    let holders = zkops::read_holders(client, key, queue, skipped)
        .await?
        .into_iter()
        .map(|h| HolderInfo {
            owner: h.record.owner,
            lease_id: h.record.lease_id,
            exclusive: h.exclusive,
            since_unix_ms: h.record.acquired_unix_ms.unwrap_or(h.created_unix_ms),
            token: h.token,
        })
        .collect();
    Ok(KeyHolders { key: key.as_str().to_owned(), holders, waiters: queue.waiters() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(nodes: usize) -> CachedHold {
        CachedHold { lease_id: 1, digest: String::new(), nodes: (0..nodes).map(|n| format!("/locks/k{n}/x")).collect() }
    }

    /// The cache is bounded by holds and by nodes, forgets the oldest first, and does not
    /// remember a hold too big on its own.
    #[test]
    fn the_hold_cache_is_bounded_in_holds_and_nodes() {
        let mut cache = HoldCache::new(3, 10, 4);
        for id in ["a", "b", "c", "d"] {
            cache.remember(id, hold(1));
        }
        assert!(cache.get("a").is_none(), "the oldest is forgotten at the hold limit");
        assert!(["b", "c", "d"].iter().all(|h| cache.get(h).is_some()));
        assert_eq!(cache.nodes, 3);

        cache.remember("big", hold(5));
        assert!(cache.get("big").is_none(), "a hold over the per-hold limit is not remembered");
        assert!(cache.get("b").is_some(), "and forgets nothing");

        cache.forget("c");
        assert_eq!(cache.nodes, 2);
        // The hold limit counts c's place until it reaches the front: e makes b go.
        cache.remember("e", hold(4));
        assert!(cache.get("b").is_none());
        // f takes c's place; d, e, f have 1 + 4 + 4 nodes.
        cache.remember("f", hold(4));
        assert!(["d", "e", "f"].iter().all(|h| cache.get(h).is_some()));
        assert_eq!(cache.nodes, 9);
        // g: d goes for the hold limit, then e for the node limit (4 + 4 + 4 > 10).
        cache.remember("g", hold(4));
        assert!(cache.get("d").is_none() && cache.get("e").is_none(), "the oldest go until it fits");
        assert!(cache.get("f").is_some() && cache.get("g").is_some());
        assert_eq!(cache.nodes, 8);
        assert!(cache.order.len() <= 3 && cache.holds.len() <= 3);

        // Filling it with many small holds never passes either bound.
        for n in 0..1000 {
            cache.remember(&format!("h{n}"), hold(1 + n % 4));
            assert!(cache.nodes <= 10 && cache.order.len() <= 3);
            assert_eq!(cache.nodes, cache.holds.values().map(|h| h.nodes.len()).sum::<usize>());
        }
    }
}
