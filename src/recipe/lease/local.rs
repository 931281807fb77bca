//! A lease attached to this instance: its liveness (in memory only), and the task that
//! expires it, follows its record in ZooKeeper and writes health changes.
//!
//! # Why a confirmed heartbeat can be trusted for `ttl` from when it was sent
//!
//! A lease can be ended by three actors; each waits long enough that a client which trusts a
//! confirmed heartbeat only until `sent + ttl` (its own clock) never trusts an ended lease.
//!
//! 1. **Its home instance** (this task) deletes it at `last_heartbeat + ttl + EXPIRY_MARGIN`,
//!    where `last_heartbeat` is when the heartbeat was *received*, hence after it was sent.
//!    Heartbeats arriving after `last_heartbeat + ttl` are refused, never extended.
//! 2. **Another instance that claimed it** (the client moved its stream). The claim is a
//!    versioned write that starts the new home's clock at the claim; this instance's data
//!    watch fires and it stops confirming within the watch delivery delay δ. The new home
//!    cannot delete before `claim + ttl + EXPIRY_MARGIN`, so this is safe while
//!    δ < `EXPIRY_MARGIN`.
//! 3. **The janitor**, for a lease whose home instance is no longer registered: only after it
//!    has seen the home's registration ephemeral missing for `ttl + EXPIRY_MARGIN − lead`
//!    (`lead` = 0 unless it saw the home registered before; see `janitor`). The ephemeral
//!    vanishes when ZooKeeper expires the home's session, at `E`. A home confirms only on a
//!    session proof begun at most `window` earlier (see [`crate::zk::proof`]): a `sync` the
//!    ZooKeeper leader answered, which also touched the session; the home is active every
//!    `interval`, so `E ≥ t0 − interval − window + S` for its last proof `t0`, and its last
//!    confirmation came before `t0 + window ≤ E − lead`. The client trusts it until at most
//!    `E − lead + ttl`, before the janitor's deletion at `≥ E + ttl + EXPIRY_MARGIN − lead`.
//!    A connected socket would not do: a ZooKeeper follower cut off from its leader keeps
//!    answering pings while the leader expires the session.
//!    After a *new* session the home re-writes the record (bumping its version) before it
//!    confirms again, so a janitor that judged the lease orphaned during the gap fails its
//!    versioned delete.
//!
//! Confirmation therefore requires: a session proof that counts now (see
//! [`crate::zk::proof`]); in *this* session the record was written by this attachment (an
//! attachment number distinguishes two attachments of one lease to the same instance); and
//! on *this* connection (any reconnection withdraws confirmation until the record is checked
//! again) the record was seen to name this attachment as home, not `ending`, and is watched.
//! The record's watch is handled by this lease's task; an event that arrives before a proof
//! completes is handled within a scheduling delay, which `EXPIRY_MARGIN` covers (actor 2).
//!
//! # Health writes: coalesced, at most `health_writes_per_second` per lease
//!
//! A heartbeat only stores the health it carries in memory and wakes the task; it is answered
//! (and confirmed) without waiting for any write. The task writes the *latest* reported health
//! into the record, at most once per `interval = 1 s / health_writes_per_second` per lease:
//! a change arriving while the window is closed waits for it to open, and every change
//! reported meanwhile is folded into that one write (the latest wins; one that flapped back to
//! the stored health writes nothing). A client flapping at any rate so costs at most that many
//! writes per second (each a read and a versioned write, plus the `exists` that re-arms the
//! watch), counted in `zkcoord_lease_health_writes_total` and
//! `zkcoord_lease_health_changes_coalesced_total`.
//!
//! **What health gating may rely on.** A client that reports NOT_SERVING on every heartbeat
//! from `t` on has it stored by `t + interval + w` (`w`: one read and one write; plus retries
//! while ZooKeeper is unreachable, when no elector can act anyway): the window opens at most
//! `interval` after `t`, and the write then takes the latest health, which is NOT_SERVING.
//! Electors see it a watch delivery later and depose the leader at once (or after the
//! candidacy's `unhealthy_for`, counted from when they saw it; `docs/election.md`). So a leader
//! reported unhealthy is deposed by `t + interval + w + δ + unhealthy_for`, instead of
//! `t + w + δ` without coalescing: at most `interval` later (500 ms at the default of 2).
//! A state reported for less than `interval` may never be stored: only a state that lasts
//! is guaranteed to reach the record, which is what gating on it needs.
//!
//! **Confirmation does not depend on the write.** The write fires the record's one-shot watch
//! (this instance's own change). Right after a successful write the task arms a fresh watch
//! with one `exists` and keeps confirming if that shows the version it wrote: no change came
//! after its write, and the new watch reports the next one. ZooKeeper delivers the event of
//! the write before the write's answer, so the fresh watch is not consumed by it. A claim
//! committed after the write and before the `exists` makes the `exists` show a newer version:
//! the task then stops confirming on that answer, which arrives after the claim within the
//! same delay as a watch event would, so actor 2's argument is unchanged. Otherwise the old
//! watch's event is handled as before (confirmation withdrawn until the record is checked).

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::time::Instant as TokioInstant;

use tokio::sync::{Notify, watch};
use zookeeper_client::EventType;

use super::{
    End, LeasesState,
    record::LeaseRecord,
    zkops::{self, DeleteOutcome},
};
use crate::{
    error::{Error, Result},
    recipe::health::Health,
    sync_util::lock,
    zk::{Proof, RETRY_PAUSE, Zk, layout},
};

/// How long past `ttl` the home waits before deleting an expired lease. Covers watch delivery
/// delay (see the module docs) and stays well inside the promised `ttl + 500 ms`.
pub const EXPIRY_MARGIN: Duration = Duration::from_millis(200);

/// The health heartbeats reported last, and how many changes of it are not written yet.
#[derive(Debug)]
struct Reported {
    health: Health,
    unwritten_changes: u64,
}

/// Counts of health writes of one instance's leases (see the module docs), for metrics.
#[derive(Debug, Default)]
pub struct HealthWriteStats {
    /// Health writes to lease records.
    pub written: AtomicU64,
    /// Health changes reported on heartbeats that were not written on their own: a later
    /// change replaced them before the window opened, or the health flapped back to the stored
    /// one.
    pub coalesced: AtomicU64,
}

/// Liveness of a lease attached here.
#[derive(Debug)]
struct Liveness {
    last_heartbeat: Instant,
    /// Set once the task has decided to expire the lease; no heartbeat extends it after that.
    expiring: bool,
}

/// A lease attached to this instance.
#[derive(Debug)]
pub struct LocalLease {
    /// The lease id.
    pub id: i64,
    /// The granted ttl.
    pub ttl: Duration,
    /// Hex SHA-256 of the secret.
    pub secret_sha256: String,
    /// The lease's owner.
    pub owner: String,
    /// This attachment's number (see [`LeaseRecord::attachment`]): a record naming another is
    /// not this attachment's to confirm, expire or write.
    pub attachment: u64,
    /// The client identity (mTLS) whose Grant or KeepAlive attached the lease here, for
    /// `max_leases_per_identity`.
    pub identity: Option<Arc<str>>,
    /// Lock requests of this lease taken through this instance since their number was last
    /// read from ZooKeeper (then: that number), for `max_lock_requests_per_lease` (see
    /// [`crate::limits`]). An estimate: requests through other instances are not in it.
    pub lock_requests: AtomicUsize,
    /// The elections and shard groups its heartbeats named recently (see [`super::named`]).
    pub named: super::named::NamedRecently,
    liveness: Mutex<Liveness>,
    /// The health heartbeats reported last; written to the record when it differs, coalesced
    /// (see the module docs).
    health: Mutex<Reported>,
    health_changed: Notify,
    /// The connection generation (see [`crate::zk::SessionStatus::Connected`]) on which the record was
    /// checked to name this instance, written by this instance in this session, and watched;
    /// 0 when none. Any reconnection changes the generation and so withdraws confirmation
    /// until the record is checked again.
    confirmed_generation: AtomicU64,
    end: watch::Sender<Option<End>>,
}

/// The answer to one heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeartbeatAck {
    /// Remaining ttl, from the heartbeat's receipt.
    pub remaining: Duration,
    /// Whether this instance could vouch for the lease (see the module docs).
    pub confirmed: bool,
}

impl LocalLease {
    /// Marks the lease confirmed on connection `generation` (its watch is armed there).
    pub(super) fn set_confirmed(&self, generation: u64) {
        self.confirmed_generation.store(generation, Ordering::Release);
    }

    pub(super) fn new(id: i64, record: &LeaseRecord, identity: Option<Arc<str>>) -> Self {
        Self {
            id,
            ttl: record.ttl(),
            secret_sha256: record.secret_sha256.clone(),
            owner: record.owner.clone(),
            attachment: record.attachment,
            identity,
            lock_requests: AtomicUsize::new(0),
            named: super::named::NamedRecently::default(),
            liveness: Mutex::new(Liveness { last_heartbeat: Instant::now(), expiring: false }),
            health: Mutex::new(Reported { health: record.health.clone(), unwritten_changes: 0 }),
            health_changed: Notify::new(),
            confirmed_generation: AtomicU64::new(0),
            end: watch::channel(None).0,
        }
    }

    /// Records a heartbeat carrying `health`.
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`] when its ttl ran out before this heartbeat (a late heartbeat
    /// never extends a lease); when the lease has ended here, the error for why (see
    /// [`End::error`]).
    pub fn heartbeat(&self, health: &Health, proof: Option<Proof>) -> Result<HeartbeatAck> {
        if let Some(end) = *self.end.borrow() {
            return Err(end.error());
        }
        {
            let mut liveness = lock(&self.liveness);
            let now = Instant::now();
            if liveness.expiring || now > liveness.last_heartbeat + self.ttl {
                return Err(Error::LeaseNotFound);
            }
            liveness.last_heartbeat = now;
        }
        let changed = {
            let mut reported = lock(&self.health);
            let changed = reported.health != *health;
            if changed {
                reported.health = health.clone();
                reported.unwritten_changes += 1;
            }
            changed
        };
        if changed {
            self.health_changed.notify_one();
        }
        Ok(HeartbeatAck { remaining: self.ttl, confirmed: self.is_confirmed(proof) })
    }

    /// Whether this instance can vouch for the lease now, given the session's latest valid
    /// proof (see [`crate::zk::proof`]; `None`: no proof counts now, so nothing is confirmed).
    pub fn is_confirmed(&self, proof: Option<Proof>) -> bool {
        proof.is_some_and(|proof| {
            proof.generation != 0
                && self.end.borrow().is_none()
                && self.confirmed_generation.load(Ordering::Acquire) == proof.generation
        })
    }

    /// This attachment, on instance `me`.
    pub(super) fn home<'a>(&self, me: &'a str) -> Home<'a> {
        Home { me, attachment: self.attachment }
    }

    /// Time since the last heartbeat (or the grant or claim).
    pub fn since_heartbeat(&self) -> Duration {
        lock(&self.liveness).last_heartbeat.elapsed()
    }

    /// Time left before the lease expires unless kept alive.
    pub fn remaining(&self) -> Duration {
        self.ttl.saturating_sub(self.since_heartbeat())
    }

    /// The health reported last.
    pub fn health(&self) -> Health {
        lock(&self.health).health.clone()
    }

    /// The health reported last, and how many changes of it were reported since the last
    /// call; they count as written from now on.
    fn take_reported(&self) -> (Health, u64) {
        let mut reported = lock(&self.health);
        (reported.health.clone(), std::mem::take(&mut reported.unwritten_changes))
    }

    /// Counts `changes` (from [`Self::take_reported`]) as unwritten again: their write failed.
    fn requeue_changes(&self, changes: u64) {
        lock(&self.health).unwritten_changes += changes;
    }

    /// Resolves when the lease has ended here, with why. Cancellation safe.
    pub async fn ended(&self) -> End {
        let mut end = self.end.subscribe();
        match end.wait_for(Option::is_some).await {
            Ok(end) => end.unwrap_or(End::Gone),
            Err(_) => End::Gone,
        }
    }

    /// Marks the lease ended (first reason wins).
    pub(super) fn finish(&self, why: End) {
        self.confirmed_generation.store(0, Ordering::Release);
        self.end.send_if_modified(|end| {
            if end.is_none() {
                *end = Some(why);
                true
            } else {
                false
            }
        });
    }

    /// Whether the lease has ended here.
    pub fn is_finished(&self) -> bool {
        self.end.borrow().is_some()
    }

    /// The moment the lease expires unless a heartbeat comes first; `None` when that moment
    /// has passed, in which case the lease is marked expiring and no heartbeat can extend it.
    fn deadline_or_expire(&self) -> Option<Instant> {
        let mut liveness = lock(&self.liveness);
        let deadline = liveness.last_heartbeat + self.ttl + EXPIRY_MARGIN;
        if Instant::now() >= deadline {
            liveness.expiring = true;
            None
        } else {
            Some(deadline)
        }
    }
}

/// The task of one local lease. `version` is the record version this instance last wrote,
/// in session `written_session`; `watcher`, when given, is already armed in that session.
pub(super) async fn run(
    inner: Arc<LeasesState>,
    lease: Arc<LocalLease>,
    mut version: i32,
    mut written_session: i64,
    watcher: Option<zookeeper_client::OneshotWatcher>,
) {
    let path = layout::lease(lease.id);
    let mut status = inner.session.watch_status();
    type Watch = std::pin::Pin<Box<dyn std::future::Future<Output = zookeeper_client::WatchedEvent> + Send>>;
    let mut watcher: Option<Watch> = watcher.map(|w| Box::pin(w.changed()) as Watch);
    // Health writes: the next may start at `next_write`; one is due at `write_at`.
    let interval = inner.health_write_interval;
    let mut next_write = TokioInstant::now();
    let mut write_at: Option<TokioInstant> = None;
    let why = loop {
        if lease.is_finished() {
            break None;
        }
        // (Re-)arm the watch and re-validate the record whenever none is armed in the current
        // session. Failures for lack of a connection are retried below after a pause.
        if watcher.is_none()
            && let Ok(client) = inner.session.client()
        {
            // Read before arming: if the connection changes meanwhile, this generation is
            // stale and confirms nothing.
            let generation = inner.session.status().generation();
            // The ZooKeeper calls below are boxed: this task lives as long as its lease and
            // idles in the `select!`; unboxed, their state would size every lease's task.
            let home = lease.home(&inner.me.name);
            match Box::pin(arm(home, &lease.health(), &client, &path, &mut version, &mut written_session)).await {
                Ok(Some(w)) => {
                    lease.set_confirmed(generation);
                    watcher = Some(Box::pin(w.changed()));
                }
                Ok(None) => break Some(End::Moved),
                Err(Error::LeaseNotFound) => break Some(End::Gone),
                Err(err) => tracing::debug!(lease = lease.id, error = %err, "cannot watch lease record yet"),
            }
        }
        let Some(deadline) = lease.deadline_or_expire() else {
            break Box::pin(expire(&inner, &lease, &path, version)).await;
        };
        let retry = watcher.is_none().then(|| tokio::time::sleep(RETRY_PAUSE));
        tokio::select! {
            () = tokio::time::sleep_until(deadline.into()) => {}
            event = async { watcher.as_mut().expect("guarded").await }, if watcher.is_some() => {
                lease.confirmed_generation.store(0, Ordering::Release);
                watcher = None;
                if event.event_type == EventType::NodeDeleted {
                    break Some(End::Gone);
                }
            }
            () = lease.health_changed.notified() => {
                // Coalesced: a write already due takes this change too (it writes the latest).
                write_at.get_or_insert(next_write.max(TokioInstant::now()));
            }
            () = async { tokio::time::sleep_until(write_at.expect("guarded")).await }, if write_at.is_some() => {
                write_at = None;
                let started = TokioInstant::now();
                match Box::pin(write_health(&inner, &lease, &path, &mut version, &mut written_session)).await {
                    HealthWrite::Written(rearmed) => {
                        next_write = started + interval;
                        if let Some(rearmed) = rearmed {
                            // The old watch fired for our own write only: replaced, still confirmed.
                            watcher = Some(Box::pin(rearmed.changed()));
                        }
                    }
                    HealthWrite::Retry => write_at = Some(started + RETRY_PAUSE),
                    HealthWrite::Done => {}
                }
            }
            changed = status.changed() => {
                if changed.is_err() {
                    break Some(End::ShuttingDown);
                }
                let current = status.borrow_and_update().generation();
                if current != lease.confirmed_generation.load(Ordering::Acquire) {
                    // Disconnected, or connected again: events missed meanwhile may still be
                    // on their way, so nothing is confirmed until the record has been
                    // checked again on this connection (one `exists`). A new session has
                    // lost the old watch anyway.
                    lease.confirmed_generation.store(0, Ordering::Release);
                    watcher = None;
                }
            }
            () = inner.shutdown.cancelled() => break Some(End::ShuttingDown),
            () = async { retry.expect("guarded").await }, if retry.is_some() => {}
        }
    };
    if let Some(why) = why {
        tracing::debug!(lease = lease.id, ?why, "lease ended here");
        lease.finish(why);
    }
    inner.forget(&lease);
}

/// Which attachment a task acts for: this instance and the attachment number it wrote.
#[derive(Clone, Copy, Debug)]
pub(super) struct Home<'a> {
    /// This instance's incarnation.
    pub me: &'a str,
    /// The attachment number.
    pub attachment: u64,
}

impl Home<'_> {
    /// Whether `record` belongs to this attachment.
    pub fn owns(&self, record: &LeaseRecord) -> bool {
        record.home == self.me && record.attachment == self.attachment
    }
}

/// Arms a watch on the record and makes sure it still names this attachment as home; returns
/// `None` when another instance is its home now. Costs one `exists` when nothing changed
/// since this instance's last write in this session. In a session other than the one this
/// instance last wrote the record in, it first re-writes the record (see the module docs,
/// actor 3).
pub(super) async fn arm(
    home: Home<'_>,
    health: &Health,
    client: &Zk,
    path: &str,
    version: &mut i32,
    written_session: &mut i64,
) -> Result<Option<zookeeper_client::OneshotWatcher>> {
    let session_id = client.session_id().0;
    loop {
        let (stat, watcher) = client.check_and_watch_stat(path).await?;
        let stat = stat.ok_or(Error::LeaseNotFound)?;
        if stat.version == *version && *written_session == session_id {
            return Ok(Some(watcher));
        }
        // Changed since our last write, or a new session: look at the record itself. The watch
        // is already armed, so no later change goes unnoticed.
        let (data, stat) = client.get_data(path).await?.ok_or(Error::LeaseNotFound)?;
        let mut record = LeaseRecord::decode(&data)?;
        if !home.owns(&record) {
            return Ok(None);
        }
        if record.ending {
            // Being deleted in batches (see `zkops::delete_lease`): some of its holds may be
            // released already. Never confirm it again.
            return Err(Error::LeaseNotFound);
        }
        if *written_session == session_id {
            *version = stat.version;
            return Ok(Some(watcher));
        }
        record.set_health(health); // the latest, in case a health write was lost
        match client.set_data(path, &record.encode(), Some(stat.version)).await {
            Ok(Some(stat)) => {
                *version = stat.version;
                *written_session = session_id;
                // The watch just armed fires for this write; the loop arms a fresh one.
            }
            Ok(None) => return Err(Error::LeaseNotFound),
            Err(zookeeper_client::Error::BadVersion) => {}
            Err(err) => return Err(err.into()),
        }
    }
}

/// What a health write did.
enum HealthWrite {
    /// Written; with a watch armed right after it that saw no later change (see the module
    /// docs): it replaces the watch the write fired, and confirmation goes on. `None`: the
    /// fired watch is handled as any change.
    Written(Option<zookeeper_client::OneshotWatcher>),
    /// Failed for a reason worth another attempt (no connection, a concurrent write).
    Retry,
    /// Nothing (more) to write: the stored health is the latest, or the record is not this
    /// attachment's any more (its watch tells), or it is being deleted.
    Done,
}

/// Writes the latest reported health into the record (versioned: a claim by another instance
/// wins and is noticed through the watch).
async fn write_health(
    inner: &LeasesState,
    lease: &LocalLease,
    path: &str,
    version: &mut i32,
    written_session: &mut i64,
) -> HealthWrite {
    let Ok(client) = inner.session.client() else { return HealthWrite::Retry };
    let (data, stat) = match client.get_data(path).await {
        Ok(Some(found)) => found,
        Ok(None) => return HealthWrite::Done,
        Err(_) => return HealthWrite::Retry,
    };
    let Ok(mut record) = LeaseRecord::decode(&data) else { return HealthWrite::Done };
    let home = lease.home(&inner.me.name);
    // Not ours any more (the watch handles that), or being deleted: a write would only make
    // the batched deletion start over.
    if !home.owns(&record) || record.ending {
        return HealthWrite::Done;
    }
    let (health, changes) = lease.take_reported();
    let stats = &inner.health_writes;
    if !record.set_health(&health) {
        stats.coalesced.fetch_add(changes, Ordering::Relaxed);
        return HealthWrite::Done;
    }
    // Read before the write: a connection that changes meanwhile confirms nothing of this.
    let generation = inner.session.status().generation();
    match client.set_data(path, &record.encode(), Some(stat.version)).await {
        Ok(Some(stat)) => {
            stats.written.fetch_add(1, Ordering::Relaxed);
            stats.coalesced.fetch_add(changes.saturating_sub(1), Ordering::Relaxed);
            *version = stat.version;
            *written_session = client.session_id().0;
            let confirmed = generation != 0 && lease.confirmed_generation.load(Ordering::Acquire) == generation;
            if !confirmed {
                return HealthWrite::Written(None);
            }
            match client.check_and_watch_stat(path).await {
                Ok((Some(now), rearmed)) if now.version == stat.version => HealthWrite::Written(Some(rearmed)),
                _ => HealthWrite::Written(None),
            }
        }
        Ok(None) => HealthWrite::Done,
        Err(err) => {
            tracing::debug!(lease = lease.id, error = %err, "health write failed; retrying");
            lease.requeue_changes(changes);
            HealthWrite::Retry
        }
    }
}

/// Deletes the expired lease and what is bound to it. Retries while ZooKeeper is unreachable
/// (the lease is already dead for its owner: heartbeats are refused).
async fn expire(inner: &LeasesState, lease: &LocalLease, path: &str, mut version: i32) -> Option<End> {
    lease.confirmed_generation.store(0, Ordering::Release);
    // A negative version is one we never saw written (an ambiguous claim): look first, since
    // a delete with version -1 would delete any version — another home's live lease included.
    let mut known = version >= 0;
    let home = lease.home(&inner.me.name);
    loop {
        if inner.shutdown.is_cancelled() {
            return Some(End::ShuttingDown);
        }
        // Replaced by a newer attachment of the same lease here (the client came back after a
        // claim elsewhere): that one's record is not ours to delete.
        if lease.is_finished() {
            return None;
        }
        if !known {
            match inner.session.client() {
                Ok(client) => match client.get_data(path).await {
                    Ok(Some((data, stat))) => match LeaseRecord::decode(&data) {
                        Ok(record) if home.owns(&record) => {
                            version = stat.version;
                            known = true;
                        }
                        _ => return Some(End::Moved),
                    },
                    Ok(None) => return Some(End::Gone),
                    Err(_) => tokio::time::sleep(RETRY_PAUSE).await,
                },
                Err(_) => tokio::time::sleep(RETRY_PAUSE).await,
            }
            continue;
        }
        let outcome = match inner.session.client() {
            Ok(client) => zkops::delete_lease(&client, path, Some(version)).await,
            Err(err) => Err(err),
        };
        match outcome {
            Ok(DeleteOutcome::Deleted) => {
                tracing::info!(lease = lease.id, "lease expired");
                return Some(End::Expired);
            }
            Ok(DeleteOutcome::Missing) => return Some(End::Gone),
            // Written since we last knew its version: a claim by another instance (not ours to
            // expire), or one of our own writes whose answer was lost. Look.
            Ok(DeleteOutcome::VersionChanged) => known = false,
            Err(err) => {
                tracing::debug!(lease = lease.id, error = %err, "cannot expire lease yet");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}
