//! One task per (instance, election) in use: it follows the election in ZooKeeper with a
//! constant number of watches per change, publishes the state to Observe streams, drives the
//! instance's Campaign streams, and acts as an elector.
//!
//! Reads per leadership change, per instance: the election record, plus the children list and
//! the records of candidates that are *new*; existing candidates are cached and re-read only
//! when their own watch (candidate or lease record) fires. So a leadership change costs O(1)
//! reads and notifications per instance, whatever the number of candidates and observers.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures_util::{
    FutureExt,
    stream::{FuturesUnordered, StreamExt},
};
use tokio::sync::{OwnedSemaphorePermit, broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{
    CandidateStatus, ElectionContext,
    record::{self, CandidateRecord, Deposition, ElectionRecord},
    state::{CandidateView, Decision, ElectionState, HealthSeen},
};
use crate::{
    error::Result,
    recipe::{instance::now_unix_ms, lease::record::LeaseRecord},
    sync_util::lock,
    validate::Name,
    zk::{RETRY_PAUSE, Zk, ZkResult, foreign::Kind, layout},
};

/// States kept for streams that fall behind; a stream further behind than this skips ahead.
const STATE_HISTORY: usize = 1024;
/// Statuses a Campaign stream may have waiting for its client; a client further behind (it
/// does not read its stream) has its stream ended with [`super::StreamEnd::FellBehind`], so
/// that a stuck client cannot grow the instance's memory. Statuses are only sent when they
/// change, so this takes hundreds of leadership or leader-health changes.
pub(super) const CAMPAIGN_BACKLOG: usize = 256;
/// How long after it is first seen a deposition may complete without the deposed leader's
/// acknowledgement, for a leader whose lease has ttl `ttl`: by then its owner has surely
/// stopped acting as leader (see [`crate::recipe::lease::validity_grace`]; a heartbeat answer
/// lists a leadership only from a view current as of a proof begun at most
/// [`crate::zk::proof::MAX_WINDOW`] earlier, `leadership`).
pub fn deposition_grace(ttl: Duration) -> Duration {
    crate::recipe::lease::validity_grace(ttl)
}

/// How many of its own writes in a row an election task acts on before reading again.
const OWN_WRITE_ROUNDS: usize = 4;
/// How long a fired watch waits for the outcome of this instance's own write in flight before
/// re-reading anyway (see [`ElectionWatch::writing`]).
const OWN_WRITE_WAIT: Duration = Duration::from_millis(50);

/// This instance's writes to one election made outside its task and in flight (see
/// [`ElectionWatch::writing`]).
#[derive(Debug, Default)]
struct OwnWrites {
    count: AtomicUsize,
    done: tokio::sync::Notify,
}

/// One write of [`OwnWrites`] in flight; dropping it (after [`ElectionWatch::wrote`] or
/// [`ElectionWatch::poke`], or on cancellation) ends it.
#[derive(Debug)]
pub(super) struct OwnWrite(Arc<OwnWrites>);

impl Drop for OwnWrite {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::SeqCst);
        self.0.done.notify_one();
    }
}

/// What a watch is about (and, once fired, what to re-read).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Fired {
    Election,
    Children,
    Candidate(String),
    Lease(i64),
}

type WatchFuture = Pin<Box<dyn Future<Output = Fired> + Send>>;

/// A Campaign stream held by this instance.
#[derive(Debug)]
pub(super) struct Sink {
    pub candidate_id: String,
    pub lease_id: i64,
    /// zxid of the write that (re)made this candidacy for this stream: states older than
    /// that say nothing about it.
    pub written_zxid: i64,
    pub tx: mpsc::Sender<CandidateStatus>,
    pub last: Option<CandidateStatus>,
    /// Why the stream ends, when this instance ends it (read once the channel is drained).
    pub end: Arc<Mutex<Option<super::StreamEnd>>>,
}

impl Sink {
    /// Whether this is a stream of candidacy `candidate_id` with lease `lease_id`.
    fn is(&self, candidate_id: &str, lease_id: i64) -> bool {
        self.candidate_id == candidate_id && self.lease_id == lease_id
    }

    /// Ends the stream with `why` once its client has read what was sent; the caller drops
    /// the sink (and so the sender).
    fn end(&self, why: super::StreamEnd) {
        *lock(&self.end) = Some(why);
    }
}

/// Handle to the task of one election; the task stops when the last handle is dropped.
#[derive(Debug)]
pub struct ElectionWatch {
    /// The published state (the latest).
    pub state: watch::Receiver<Arc<ElectionState>>,
    /// Every published state, for streams that must see each change (see [`Self::subscribe`]).
    states: broadcast::Sender<Arc<ElectionState>>,
    sinks: Arc<Mutex<Vec<Sink>>>,
    poke: Arc<tokio::sync::Notify>,
    pokes: Arc<std::sync::atomic::AtomicU64>,
    /// States written by this instance outside the task (see [`Self::wrote`]).
    written: mpsc::UnboundedSender<Written>,
    /// Writes in flight whose outcome [`Self::wrote`] will tell (see [`Self::writing`]).
    own: Arc<OwnWrites>,
    stop: CancellationToken,
    /// Its place among the elections the instance may follow (`max_watched_elections`).
    _permit: OwnedSemaphorePermit,
}

/// What one transaction of this instance wrote: the election record (replacing the version
/// before `version`) and the deletion of one candidacy.
#[derive(Debug)]
pub(super) struct Written {
    /// The record written.
    pub record: ElectionRecord,
    /// Its version after the write.
    pub version: i32,
    /// The transaction's zxid (the record's `mzxid`, and the candidates' last change).
    pub zxid: i64,
    /// The connection generation it was written on.
    pub generation: u64,
    /// The candidate id whose candidacy the transaction deleted.
    pub removed: String,
}

impl Drop for ElectionWatch {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl ElectionWatch {
    pub(super) fn start(shared: Arc<ElectionContext>, name: Name, permit: OwnedSemaphorePermit) -> Self {
        let (tx, state) = watch::channel(Arc::new(ElectionState::default()));
        let (states, _) = broadcast::channel(STATE_HISTORY);
        let sinks = Arc::new(Mutex::new(Vec::new()));
        let poke = Arc::new(tokio::sync::Notify::new());
        let pokes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = shared.shutdown.child_token();
        let (written, written_rx) = mpsc::unbounded_channel();
        let own = Arc::new(OwnWrites::default());
        let task = WatchTask {
            shared,
            name,
            tx,
            states: states.clone(),
            sinks: sinks.clone(),
            poke: poke.clone(),
            pokes: pokes.clone(),
            own: own.clone(),
            stop: stop.clone(),
            sequence: 0.into(),
        };
        tokio::spawn(task.run(written_rx));
        Self { state, states, sinks, poke, pokes, written, own, stop, _permit: permit }
    }

    /// Adds a Campaign stream; it gets its status now and at every change. An older stream of
    /// the same candidacy on this instance ends (taken over).
    pub(super) fn add_sink(
        &self,
        candidate_id: String,
        lease_id: i64,
        written_zxid: i64,
    ) -> (mpsc::Receiver<CandidateStatus>, Arc<Mutex<Option<super::StreamEnd>>>) {
        let (tx, rx) = mpsc::channel(CAMPAIGN_BACKLOG);
        let end = Arc::new(Mutex::new(None));
        let mut sinks = lock(&self.sinks);
        sinks.retain(|old| {
            let replaced = old.is(&candidate_id, lease_id);
            if replaced {
                old.end(super::StreamEnd::TakenOver);
            }
            !replaced
        });
        sinks.push(Sink { candidate_id, lease_id, written_zxid, tx, last: None, end: end.clone() });
        drop(sinks);
        self.poke.notify_one();
        (rx, end)
    }

    /// Whether a Campaign stream of candidacy `candidate_id` (with `lease_id`) runs here.
    pub(super) fn has_sink(&self, candidate_id: &str, lease_id: i64) -> bool {
        lock(&self.sinks).iter().any(|s| s.is(candidate_id, lease_id) && !s.tx.is_closed())
    }

    /// Every state from now on: a receiver of the published states and the current one. A
    /// state received later with a `sequence` not above the current one's is older: skip it.
    /// Together they miss nothing: the latest state is published before it is broadcast.
    pub fn subscribe(&self) -> (broadcast::Receiver<Arc<ElectionState>>, Arc<ElectionState>) {
        let receiver = self.states.subscribe();
        (receiver, self.state.borrow().clone())
    }

    /// Publishes `written` (a state this instance's own transaction produced: a resignation
    /// that elected its successor) at once, telling local Campaign streams without waiting for
    /// the write's watch events and a re-read, which follow and change nothing. Ignored unless
    /// the published state is still the one it was computed from (same connection, the
    /// record's previous version).
    pub(super) fn wrote(&self, written: Written) {
        let _ = self.written.send(written);
    }

    /// Marks a write of this instance in flight, whose outcome the caller will tell with
    /// [`Self::wrote`] (or [`Self::poke`]) before dropping the returned guard. Meanwhile the
    /// task, woken by the write's own watch events (ZooKeeper sends them before the write's
    /// answer), waits for that outcome (at most [`OWN_WRITE_WAIT`]) instead of re-reading first:
    /// so the successor is told as soon as the write is answered, not after a round of reads.
    ///
    /// # Cancellation safety
    /// A caller cancelled while holding the guard drops it, which ends the wait.
    pub(super) fn writing(&self) -> OwnWrite {
        self.own.count.fetch_add(1, Ordering::SeqCst);
        OwnWrite(self.own.clone())
    }

    /// Asks the task to re-read the election (after this instance wrote something). Returns
    /// the request's number: states with `poked` at least that were read after it.
    pub(super) fn poke(&self) -> u64 {
        let n = self.pokes.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        self.poke.notify_one();
        n
    }
}

/// The task behind an [`ElectionWatch`]: follows one election and publishes its states.
struct WatchTask {
    shared: Arc<ElectionContext>,
    name: Name,
    tx: watch::Sender<Arc<ElectionState>>,
    states: broadcast::Sender<Arc<ElectionState>>,
    sequence: std::sync::atomic::AtomicU64,
    sinks: Arc<Mutex<Vec<Sink>>>,
    poke: Arc<tokio::sync::Notify>,
    pokes: Arc<std::sync::atomic::AtomicU64>,
    own: Arc<OwnWrites>,
    stop: CancellationToken,
}

/// What the task keeps between rounds.
#[derive(Default)]
struct Cache {
    candidates: BTreeMap<String, Arc<CandidateView>>,
    /// Candidate znodes whose data is not a candidate record (written behind zkcoord's back),
    /// with the `mzxid` of the data last read: skipped (not eligible, not counted), logged once
    /// per version, and read again only when their watch fires.
    undecodable: HashMap<String, i64>,
    dirty: HashSet<String>,
    lease_dirty: HashSet<String>,
    /// Watches armed and not fired yet.
    pending: HashSet<Fired>,
    /// The election record's watch fired while a round was reading (see
    /// [`WatchTask::absorb_fired`]): read it again next round.
    election_refired: bool,
    generation: u64,
}

impl WatchTask {
    async fn run(self, mut written: mpsc::UnboundedReceiver<Written>) {
        let mut cache = Cache::default();
        let mut watches: FuturesUnordered<WatchFuture> = FuturesUnordered::new();
        let mut status = self.shared.session.watch_status();
        let mut election_dirty = true;
        let mut children_dirty = true;
        // The deposition in progress and when this task first saw it (its grace runs from then).
        let mut deposition_seen: Option<(Deposition, tokio::time::Instant)> = None;
        loop {
            let generation = self.shared.session.status().generation();
            if generation != cache.generation {
                // A new connection: events may have been missed; read everything again.
                cache.generation = generation;
                election_dirty = true;
                children_dirty = true;
                cache.dirty.extend(cache.candidates.keys().cloned());
                cache.dirty.extend(cache.undecodable.keys().cloned());
                cache.lease_dirty.extend(cache.candidates.keys().cloned());
            }
            if election_dirty || children_dirty {
                self.await_own_writes(&mut written, &mut cache, &mut deposition_seen).await;
            }
            let poked = self.pokes.load(std::sync::atomic::Ordering::SeqCst);
            let round = match self.shared.session.client() {
                Ok(client) if generation != 0 => {
                    self.refresh(&client, &mut cache, &mut watches, election_dirty, children_dirty).await
                }
                _ => Err(crate::Error::Unavailable),
            };
            match round {
                Ok(state) => {
                    election_dirty = std::mem::take(&mut cache.election_refired);
                    children_dirty = false;
                    let mut state = self.publish(ElectionState { generation, poked, ..state });
                    note_deposition(&mut deposition_seen, &state);
                    // A successful write of this instance is the election's next state: act on
                    // it at once rather than after its watch event and a re-read (which follow,
                    // and then change nothing). Each round follows a successful compare-and-set
                    // write; a deposition takes at most three (depose, tell and elect, settle).
                    for _ in 0..OWN_WRITE_ROUNDS {
                        self.drive_sinks(&state).await;
                        let written = match self.shared.session.client() {
                            Ok(client) => self.elect(&client, &state, deposition_seen.as_ref()).await,
                            Err(_) => None,
                        };
                        let Some(written) = written else { break };
                        if self.shared.session.status().generation() != written.generation {
                            break; // the connection changed: read again before telling anyone
                        }
                        state = self.publish(written);
                        note_deposition(&mut deposition_seen, &state);
                    }
                }
                Err(err) => {
                    tracing::debug!(election = %self.name, error = %err, "election state unavailable");
                    // Not current: leaders must hear UNCONFIRMED now.
                    let stale = ElectionState { generation: 0, ..(**self.tx.borrow()).clone() };
                    let stale = self.publish(stale);
                    // A stale state writes nothing (no elector acts on it).
                    let _ = self.drive_sinks(&stale).await;
                    election_dirty = true;
                    children_dirty = true;
                }
            }
            if election_dirty && !round_failed(&self.tx) {
                continue; // the record's watch fired while the round read it: read it again now
            }
            let retry = round_failed(&self.tx).then(|| tokio::time::sleep(RETRY_PAUSE));
            // Wake when a deposition's grace runs out, to complete it.
            let grace = deposition_seen.as_ref().and_then(|(deposed, seen)| {
                let ttl = self.tx.borrow().candidates.get(&deposed.candidate_id).and_then(|c| c.lease_ttl)?;
                Some(tokio::time::sleep_until(*seen + deposition_grace(ttl)))
            });
            // Wake when a health hysteresis runs out, to decide again (see `state`).
            let hysteresis = (!round_failed(&self.tx))
                .then(|| self.tx.borrow().hysteresis_deadline(tokio::time::Instant::now()))
                .flatten()
                .map(tokio::time::sleep_until);
            tokio::select! {
                () = self.stop.cancelled() => break,
                fired = watches.next(), if !watches.is_empty() => if let Some(fired) = fired {
                    self.absorb_fired(fired, &mut cache, &mut election_dirty, &mut children_dirty);
                },
                _ = status.changed() => {}
                () = self.poke.notified() => { election_dirty = true; children_dirty = true; }
                Some(written) = written.recv() => self.apply_written(written, &mut cache, &mut deposition_seen).await,
                () = async { retry.expect("guarded").await }, if retry.is_some() => {}
                () = async { grace.expect("guarded").await }, if grace.is_some() => {}
                () = async { hysteresis.expect("guarded").await }, if hysteresis.is_some() => {}
            }
        }
        for sink in lock(&self.sinks).drain(..) {
            sink.end(super::StreamEnd::ShuttingDown);
        }
    }

    /// Waits for this instance's own writes in flight (see [`ElectionWatch::writing`]), at most
    /// [`OWN_WRITE_WAIT`], applying their outcomes as they come.
    ///
    /// Delaying the task's reads this way delays no heartbeat answer: leaderships are proven
    /// from views of their own (`super::leadership`); it only orders what Campaign and Observe
    /// streams hear (the written state first, then the re-read, which changes nothing), and
    /// an elector's view of a deposition comes later, never sooner (its grace counts from then).
    async fn await_own_writes(
        &self,
        written: &mut mpsc::UnboundedReceiver<Written>,
        cache: &mut Cache,
        deposition_seen: &mut Option<(Deposition, tokio::time::Instant)>,
    ) {
        if self.own.count.load(Ordering::SeqCst) == 0 {
            return;
        }
        let deadline = tokio::time::sleep(OWN_WRITE_WAIT);
        tokio::pin!(deadline);
        while self.own.count.load(Ordering::SeqCst) > 0 {
            tokio::select! {
                biased;
                Some(outcome) = written.recv() => self.apply_written(outcome, cache, deposition_seen).await,
                () = self.own.done.notified() => {}
                () = &mut deadline => return,
                () = self.stop.cancelled() => return,
            }
        }
        // An outcome is told before its guard is dropped: it is queued now.
        while let Ok(outcome) = written.try_recv() {
            self.apply_written(outcome, cache, deposition_seen).await;
        }
    }

    /// Publishes a state this instance wrote (see [`ElectionWatch::wrote`]) and tells the
    /// local Campaign streams, if it follows the published one.
    async fn apply_written(
        &self,
        written: Written,
        cache: &mut Cache,
        deposition_seen: &mut Option<(Deposition, tokio::time::Instant)>,
    ) {
        let current = self.tx.borrow().clone();
        let follows = current.generation != 0
            && current.generation == written.generation
            && current.generation == self.shared.session.status().generation()
            && current.version.checked_add(1) == Some(written.version);
        if !follows {
            return; // the record changed otherwise meanwhile: the task's own reads tell
        }
        // The candidates as this task knows them now (one that joined since the writer's view
        // stays), less the one the transaction deleted — not a candidacy of the same id created
        // after it (a resigned candidate campaigning again at once, already listed here).
        let deleted = |c: &Arc<CandidateView>| c.czxid <= written.zxid;
        let mut state = ElectionState::clone(&current);
        if state.candidates.get(&written.removed).is_some_and(deleted) {
            state.candidates.remove(&written.removed);
        }
        if cache.candidates.get(&written.removed).is_some_and(deleted) {
            cache.candidates.remove(&written.removed);
        }
        state.record = written.record;
        state.version = written.version;
        state.token = u64::try_from(written.zxid).unwrap_or(0);
        state.children_pzxid = state.children_pzxid.max(written.zxid);
        let state = self.publish(state);
        note_deposition(deposition_seen, &state);
        self.drive_sinks_knowing(&state, Some(&written.removed)).await;
    }

    /// Notes what a fired watch says is to be read again.
    fn absorb_fired(&self, fired: Fired, cache: &mut Cache, election_dirty: &mut bool, children_dirty: &mut bool) {
        tracing::trace!(election = %self.name, ?fired, "watch fired");
        cache.pending.remove(&fired);
        match fired {
            Fired::Election => *election_dirty = true,
            Fired::Children => *children_dirty = true,
            Fired::Candidate(id) => {
                cache.dirty.insert(id);
            }
            Fired::Lease(lease_id) => {
                let ids = cache.candidates.values().filter(|c| c.record.lease_id == lease_id).map(|c| c.id.clone());
                cache.lease_dirty.extend(ids);
            }
        }
    }

    /// Publishes a state: first as the latest, then to every subscriber.
    fn publish(&self, state: ElectionState) -> Arc<ElectionState> {
        let sequence = self.sequence.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let state = Arc::new(ElectionState { sequence, ..state });
        tracing::trace!(election = %self.name, sequence, term = state.record.term, leader = ?state.record.leader.as_ref().map(|l| &l.candidate_id), deposed = ?state.record.deposed.as_ref().map(|d| &d.candidate_id), generation = state.generation, "state");
        self.tx.send_replace(state.clone());
        let _ = self.states.send(state.clone());
        state
    }

    /// Re-reads what changed and returns the new state.
    async fn refresh(
        &self,
        client: &Zk,
        cache: &mut Cache,
        watches: &mut FuturesUnordered<WatchFuture>,
        election_dirty: bool,
        children_dirty: bool,
    ) -> Result<ElectionState> {
        let path = layout::election(&self.name);
        let previous = self.tx.borrow().clone();
        let mut state = ElectionState { candidates: BTreeMap::new(), ..(*previous).clone() };
        if election_dirty || !previous.exists {
            match read_data(client, &path, Fired::Election, cache, watches).await {
                Ok(Some((data, stat))) => {
                    state.exists = true;
                    state.record = record::decode(&data)?;
                    state.version = stat.version;
                    state.token = u64::try_from(stat.mzxid).unwrap_or(0);
                }
                Ok(None) => {
                    arm_exists(client, &path, Fired::Election, cache, watches).await?;
                    cache.candidates.clear();
                    return Ok(ElectionState::default());
                }
                Err(err) => return Err(err.into()),
            }
        }
        // One transaction may change the record and the candidates together (a resignation
        // electing its successor): their watch events were all delivered before the record's
        // read answered (ZooKeeper sends a session's watch events before its later replies), so
        // take in every event fired by now, lest the new record be published with the old
        // candidates (a resigned candidacy told QUEUED behind its successor).
        let mut children_dirty = children_dirty;
        let mut refired = false;
        while let Some(Some(fired)) = watches.next().now_or_never() {
            self.absorb_fired(fired, cache, &mut refired, &mut children_dirty);
        }
        cache.election_refired |= refired;
        // A record naming a leader (or deposed leader) this task has not listed may be newer
        // than its candidate list: list again rather than take "not listed" for "its candidacy
        // ended" (which would elect someone else while it leads). Only when the listing is older
        // than the record: a candidacy named by a record existed when the record was written
        // (Elect checks it in the same transaction), so a listing whose last child change
        // (`pzxid`) is at or after the record's write, and lacks it, saw it end.
        let named = [
            state.record.leader.as_ref().map(|l| &l.candidate_id),
            state.record.deposed.as_ref().map(|d| &d.candidate_id),
        ];
        let record_zxid = i64::try_from(state.token).unwrap_or(i64::MAX);
        let unknown_named = state.children_pzxid < record_zxid
            && named.into_iter().flatten().any(|id| !cache.candidates.contains_key(id));
        if children_dirty || !previous.exists || unknown_named {
            let dir = layout::candidates(&self.name);
            let listed = if cache.pending.contains(&Fired::Children) {
                client.get_children(&dir).await
            } else {
                client.get_and_watch_children(&dir).await.map(|listed| {
                    listed.map(|(children, stat, watcher)| {
                        cache.pending.insert(Fired::Children);
                        watches.push(Box::pin(async move {
                            watcher.changed().await;
                            Fired::Children
                        }));
                        (children, stat)
                    })
                })
            };
            let children = match listed {
                Ok(Some((children, stat))) => {
                    state.children_pzxid = stat.pzxid;
                    children
                }
                Ok(None) => {
                    arm_exists(client, &dir, Fired::Children, cache, watches).await?;
                    Vec::new()
                }
                Err(err) => return Err(err.into()),
            };
            let present: HashSet<&String> = children.iter().collect();
            cache.candidates.retain(|id, _| present.contains(id));
            cache.undecodable.retain(|id, _| present.contains(id));
            // A candidate whose own watch fired because it was deleted is not listed any more:
            // nothing to read (its znode is gone as of this listing).
            cache.dirty.retain(|id| present.contains(id));
            for id in children {
                if !cache.candidates.contains_key(&id) && !cache.undecodable.contains_key(&id) {
                    cache.dirty.insert(id.clone());
                    cache.lease_dirty.insert(id);
                }
            }
        }
        for id in std::mem::take(&mut cache.dirty) {
            let Ok(candidate_id) = Name::parse("candidate", &id) else { continue };
            let candidate_path = layout::candidate(&self.name, &candidate_id);
            match read_data(client, &candidate_path, Fired::Candidate(id.clone()), cache, watches).await {
                Ok(Some((data, stat))) => {
                    // A znode zkcoord did not write must not wedge the election: it is no
                    // candidate (its watch, armed by the read, tells when it changes).
                    let record: CandidateRecord = match record::decode(&data) {
                        Ok(record) => record,
                        Err(err) => {
                            if cache.undecodable.insert(id.clone(), stat.mzxid) != Some(stat.mzxid) {
                                self.shared.session.skipped().skip(Kind::Candidate, &candidate_path, &err);
                            }
                            cache.candidates.remove(&id);
                            continue;
                        }
                    };
                    cache.undecodable.remove(&id);
                    let health = cache.candidates.get(&id).and_then(|c| c.health.clone());
                    let lease_ttl = cache.candidates.get(&id).and_then(|c| c.lease_ttl);
                    let changed_lease = cache.candidates.get(&id).is_none_or(|c| c.record.lease_id != record.lease_id);
                    if changed_lease {
                        cache.lease_dirty.insert(id.clone());
                    }
                    // Another lease's health starts its own hysteresis.
                    let (lease_version, health_seen) = match cache.candidates.get(&id) {
                        Some(c) if !changed_lease => (c.lease_version, c.health_seen),
                        _ => (None, None),
                    };
                    let view = CandidateView {
                        id: id.clone(),
                        record,
                        czxid: stat.czxid,
                        mzxid: stat.mzxid,
                        version: stat.version,
                        health,
                        lease_ttl,
                        lease_version,
                        health_seen,
                    };
                    cache.candidates.insert(id.clone(), Arc::new(view));
                }
                Ok(None) => {
                    cache.candidates.remove(&id);
                    cache.undecodable.remove(&id);
                }
                Err(err) => {
                    cache.dirty.insert(id);
                    return Err(err.into());
                }
            }
        }
        for id in std::mem::take(&mut cache.lease_dirty) {
            let Some(lease_id) = cache.candidates.get(&id).map(|c| c.record.lease_id) else { continue };
            let read = read_data(client, &layout::lease(lease_id), Fired::Lease(lease_id), cache, watches).await;
            let Some(candidate) = cache.candidates.get_mut(&id).map(Arc::make_mut) else { continue };
            let now = tokio::time::Instant::now();
            match read {
                Ok(Some((data, stat))) => {
                    let record = LeaseRecord::decode(&data).ok();
                    let key = record.as_ref().map(|r| (r.health.is_eligible(), r.eligibility_changes));
                    candidate.health_seen = Some(HealthSeen::next(candidate.health_seen, key, now));
                    candidate.lease_version = Some(stat.version);
                    candidate.lease_ttl = record.as_ref().map(LeaseRecord::ttl);
                    candidate.health = record.map(|r| r.health);
                }
                Ok(None) => {
                    candidate.health_seen = Some(HealthSeen::next(candidate.health_seen, None, now));
                    candidate.lease_version = None;
                    candidate.health = None;
                    candidate.lease_ttl = None;
                }
                Err(err) => {
                    cache.lease_dirty.insert(id);
                    return Err(err.into());
                }
            }
        }
        state.candidates = cache.candidates.clone();
        Ok(state)
    }

    /// Sends each local Campaign stream its status, if it changed. A deposed leader held here
    /// hears DEPOSED; its successor is elected once it acknowledged (Resign), its candidacy
    /// ended, or its validity ran out (see [`deposition_grace`]) — never merely because it was
    /// told.
    async fn drive_sinks(&self, state: &ElectionState) {
        self.drive_sinks_knowing(state, None).await;
    }

    /// [`Self::drive_sinks`], knowing that candidacy `resigned` (if any) vanished because it
    /// resigned (this instance's own transaction deleted it), not because its lease ended: no
    /// read to tell.
    async fn drive_sinks_knowing(&self, state: &ElectionState, resigned: Option<&str>) {
        // For candidacies that vanished, whether their lease ended (one read each, only then).
        let vanished: Vec<i64> = lock(&self.sinks)
            .iter()
            .filter(|sink| Some(sink.candidate_id.as_str()) != resigned)
            .filter(|sink| state.candidates.get(&sink.candidate_id).is_none_or(|c| c.record.lease_id != sink.lease_id))
            .map(|sink| sink.lease_id)
            .collect();
        let mut gone_leases = HashSet::new();
        if !vanished.is_empty()
            && let Ok(client) = self.shared.session.client()
        {
            for lease_id in vanished {
                let path = layout::lease(lease_id);
                if matches!(client.check_stat(&path).await, Ok(None)) {
                    gone_leases.insert(lease_id);
                }
            }
        }
        let mut sinks = lock(&self.sinks);
        sinks.retain_mut(|sink| {
            // A state read before this stream's own write knows nothing of it yet.
            let fresh = match state.candidates.get(&sink.candidate_id) {
                Some(candidate) => candidate.mzxid >= sink.written_zxid,
                None => state.children_pzxid >= sink.written_zxid,
            };
            if !fresh {
                return true;
            }
            let lease_gone = gone_leases.contains(&sink.lease_id);
            let status = super::status_of(state, &sink.candidate_id, sink.lease_id, &self.shared.me.name, lease_gone);
            if sink.last.as_ref() != Some(&status) {
                match sink.tx.try_send(status.clone()) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        tracing::trace!(election = %self.name, candidate = %sink.candidate_id, "stream gone");
                        return false;
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::warn!(election = %self.name, candidate = %sink.candidate_id, "campaign stream fell behind; ending it");
                        sink.end(super::StreamEnd::FellBehind);
                        return false;
                    }
                }
                sink.last = Some(status.clone());
            }
            let keep = !matches!(status, CandidateStatus::Ended(_) | CandidateStatus::Deposed { last: true, .. });
            if !keep {
                tracing::trace!(election = %self.name, candidate = %sink.candidate_id, ?status, written = sink.written_zxid, pzxid = state.children_pzxid, candidates = state.candidates.len(), sequence = state.sequence, "stream ends");
            }
            keep
        });
    }

    /// The elector: writes what [`ElectionState::decide`] asks for; the state after its write,
    /// if it wrote. `deposition_seen` is the deposition in progress and when this task first
    /// saw it.
    async fn elect(
        &self,
        client: &Zk,
        state: &ElectionState,
        deposition_seen: Option<&(Deposition, tokio::time::Instant)>,
    ) -> Option<ElectionState> {
        if state.generation == 0 {
            return None;
        }
        let now = tokio::time::Instant::now();
        let decision = state.decide(now, |candidate| {
            deposition_seen.is_some_and(|(deposed, seen)| {
                deposed.candidate_id == candidate.id
                    && candidate.lease_ttl.is_none_or(|ttl| now >= *seen + deposition_grace(ttl))
            })
        });
        if matches!(decision, Decision::Elect(_) | Decision::Vacate) && state.record.deposed.is_some() {
            tracing::debug!(election = %self.name, deposed = ?state.record.deposed, "deposition completes without acknowledgement");
        }
        write(client, &self.name, state, decision).await
    }
}

/// Remembers when this task first saw the deposition in `state` (a new one restarts the clock;
/// none clears it).
fn note_deposition(seen: &mut Option<(Deposition, tokio::time::Instant)>, state: &ElectionState) {
    match &state.record.deposed {
        None => *seen = None,
        Some(deposed) => {
            if seen.as_ref().is_none_or(|(known, _)| known != deposed) {
                *seen = Some((deposed.clone(), tokio::time::Instant::now()));
            }
        }
    }
}

/// One compare-and-set write of election `name`'s record; losing the race is fine (the
/// winner's write fires our watch). Returns the state after the write when it succeeded:
/// `state` with the record written, its version and, as token, the write's zxid.
///
/// # Cancellation safety
/// One request: a cancelled write happened entirely or not at all (the watch then tells).
pub(super) async fn write(
    client: &Zk,
    name: &Name,
    state: &ElectionState,
    decision: Decision,
) -> Option<ElectionState> {
    let mut record: ElectionRecord = state.record.clone();
    // Versions the write is conditional on, besides the election record's.
    // Elect writes only while the elected candidacy is still the one read: the state
    // published after the write then names a candidacy that existed at the write's zxid
    // (not one resigned or expired meanwhile, which would be told ELECTED).
    let mut checks: Vec<(String, i32)> = Vec::new();
    match decision {
        Decision::Nothing => return None,
        Decision::Elect(id) => {
            let candidate = state.candidates.get(&id)?;
            checks.push((layout::candidate(name, &id), candidate.version));
            record.elect(id, candidate.record.lease_id, now_unix_ms());
        }
        Decision::Vacate => {
            if record.leader.is_none() && record.deposed.is_none() {
                return None;
            }
            record.leader = None;
            record.deposed = None;
        }
        Decision::Depose(deposition) => {
            // A deposition decided on a lease's health (the leader's for UNHEALTHY, the
            // preempting candidate's) happens only while that lease record is the one judged:
            // a health change written meanwhile fails the write, and the elector reads again
            // (health hysteresis never acts on a stale view; see `state`).
            let judged = match deposition.reason {
                record::DeposeReason::Unhealthy => Some(deposition.candidate_id.as_str()),
                record::DeposeReason::Preempted => deposition.target.as_deref(),
                record::DeposeReason::Transferred => None,
            };
            if let Some(candidate) = judged.and_then(|id| state.candidates.get(id))
                && let Some(version) = candidate.lease_version
            {
                checks.push((layout::lease(candidate.record.lease_id), version));
            }
            record.leader = None;
            record.deposed = Some(deposition);
        }
    }
    let path = layout::election(name);
    let data = record::encode(&record);
    let written = match checks.is_empty() {
        true => match client.set_data(&path, &data, Some(state.version)).await {
            Ok(Some(stat)) => Ok(stat),
            Ok(None) => Err(zookeeper_client::Error::NoNode.to_string()),
            Err(err) => Err(err.to_string()),
        },
        false => {
            let written = async {
                let mut multi = client.multi();
                multi.add_set_data(&path, &data, Some(state.version)).map_err(|e| e.to_string())?;
                for (checked, version) in &checks {
                    multi.add_check_version(checked, *version).map_err(|e| e.to_string())?;
                }
                let results = multi
                    .commit()
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|failed| format!("operation at index {} failed: {}", failed.index, failed.error))?;
                results
                    .into_iter()
                    .find_map(|r| match r {
                        zookeeper_client::MultiWriteResult::SetData { stat } => Some(stat),
                        _ => None,
                    })
                    .ok_or_else(|| "no stat for the election record".to_owned())
            };
            written.await
        }
    };
    match written {
        Ok(stat) => {
            tracing::debug!(election = %name, term = record.term, leader = ?record.leader, deposed = ?record.deposed, "election written");
            let token = u64::try_from(stat.mzxid).unwrap_or(0);
            Some(ElectionState { exists: true, record, version: stat.version, token, ..state.clone() })
        }
        Err(err) => {
            tracing::debug!(election = %name, error = %err, "election write lost or failed");
            None
        }
    }
}

/// Reads a znode's data, arming a watch on it unless one is already pending: a second watch
/// registered while one is pending could be consumed by the event the first one is waiting
/// for, and the next change would then go unnoticed.
async fn read_data(
    client: &Zk,
    path: &str,
    key: Fired,
    cache: &mut Cache,
    watches: &mut FuturesUnordered<WatchFuture>,
) -> ZkResult<Option<(Vec<u8>, zookeeper_client::Stat)>> {
    if cache.pending.contains(&key) {
        return client.get_data(path).await;
    }
    let Some((data, stat, watcher)) = client.get_and_watch_data(path).await? else { return Ok(None) };
    cache.pending.insert(key.clone());
    watches.push(Box::pin(async move {
        watcher.changed().await;
        key
    }));
    Ok(Some((data, stat)))
}

/// Arms an existence watch on a missing znode, unless a watch on it is pending.
async fn arm_exists(
    client: &Zk,
    path: &str,
    key: Fired,
    cache: &mut Cache,
    watches: &mut FuturesUnordered<WatchFuture>,
) -> Result<()> {
    if cache.pending.contains(&key) {
        return Ok(());
    }
    let (_, watcher) = client.check_and_watch_stat(path).await?;
    cache.pending.insert(key.clone());
    watches.push(Box::pin(async move {
        watcher.changed().await;
        key
    }));
    Ok(())
}

/// True when the last published state is not current (so the loop should retry soon).
fn round_failed(tx: &watch::Sender<Arc<ElectionState>>) -> bool {
    tx.borrow().generation == 0
}

/// A registry of election watches of one instance, shared by all streams.
#[derive(Debug, Default)]
pub(super) struct Registry {
    watches: Mutex<HashMap<String, std::sync::Weak<ElectionWatch>>>,
}

impl Registry {
    /// The watches running now, by election name.
    pub(super) fn all(&self) -> Vec<(String, Arc<ElectionWatch>)> {
        lock(&self.watches).iter().filter_map(|(name, w)| Some((name.clone(), w.upgrade()?))).collect()
    }

    /// The watch of election `name`, if one runs (none is started).
    pub(super) fn peek(&self, name: &Name) -> Option<Arc<ElectionWatch>> {
        lock(&self.watches).get(name.as_str()).and_then(std::sync::Weak::upgrade)
    }

    /// The watch of election `name`, started on first use. A watch lives while someone holds
    /// it (a Campaign or Observe stream, a call reading the election) and stops with its last
    /// user: idle elections are not followed.
    ///
    /// # Errors
    /// [`crate::Error::LimitReached`] when the election is not followed yet and the instance
    /// follows `max_watched_elections` already.
    pub(super) fn get(&self, shared: &Arc<ElectionContext>, name: &Name) -> Result<Arc<ElectionWatch>> {
        let mut watches = lock(&self.watches);
        if let Some(existing) = watches.get(name.as_str()).and_then(std::sync::Weak::upgrade) {
            return Ok(existing);
        }
        watches.retain(|_, w| w.strong_count() > 0);
        let permit = shared.limits.watched_election()?;
        let watch = Arc::new(ElectionWatch::start(shared.clone(), name.clone(), permit));
        watches.insert(name.as_str().to_owned(), Arc::downgrade(&watch));
        Ok(watch)
    }
}
