//! One task per (instance, group) in use: it follows the group in ZooKeeper (the group record,
//! the member list, each member's record and lease record), publishes the state to Watch and
//! Observe streams, and acts as an assigner: it writes the next table ([`Table::plan`]) with a
//! compare-and-set on the record's version, so any number of instances may follow one group
//! and the one whose write lands decides (losing a race is fine: it reads again).
//!
//! # Timing argument (handoffs without a release)
//! A handoff written at `D` is seen by no task before `D`. A task completes it without the
//! owner's Release only after it has seen it for [`crate::recipe::lease::validity_grace`] of
//! the owner's ttl: by then no heartbeat answer has listed the shard for the owner since
//! `D + window` ([`super::ownership`]), and the owner trusted the last one only until its send
//! time + ttl.
//!
//! Reads per change, per instance: the record whose watch fired (group record, member list, one
//! member's record or lease record); members already known are not read again.
//!
//! # Figures for the metrics
//! Besides the state, each task keeps plain numbers the metrics read
//! ([`GroupWatch::unowned_shard_seconds`], [`GroupWatch::take_completed_handoffs`]):
//! when it first saw each handoff in progress, how long the handoffs its instance's writes
//! completed had taken since (first seen → the write that completed them), and the group's
//! unowned shard-seconds (time × shards unassigned or being handed off, by the table this task
//! last read) since the task started.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::{
    Shared,
    record::{self, GroupRecord, MemberRecord},
    table::{Candidate, Owner, Slot, Table},
};
use crate::{
    error::Result,
    recipe::{health::Health, lease::record::LeaseRecord},
    sync_util::lock,
    validate::Name,
    zk::{RETRY_PAUSE, Zk, ZkResult, foreign::Kind, layout},
};

/// How many of its own writes in a row a task acts on before reading again.
const OWN_WRITE_ROUNDS: usize = 4;
/// The most completed-handoff records kept between two [`GroupWatch::take_completed_handoffs`]
/// (each record is one write's handoffs first seen at one moment); later ones are not kept.
pub const MAX_COMPLETED_RECORDS: usize = 1_024;

/// A handoff in progress: (shard, owner's lease, epoch).
type HandoffKey = (u32, i64, u64);

/// A member as the task knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberView {
    /// The member id.
    pub id: String,
    /// Its record.
    pub record: MemberRecord,
    /// The record's version.
    pub version: i32,
    /// Its lease's health; `None` when the lease has ended (or is ending).
    pub health: Option<Health>,
    /// Its lease's ttl; `None` when the lease has ended.
    pub lease_ttl: Option<Duration>,
}

impl MemberView {
    /// Its membership.
    pub fn owner(&self) -> Owner {
        Owner { member: self.id.clone(), lease_id: self.record.lease_id }
    }

    /// Whether its lease lives.
    pub fn is_live(&self) -> bool {
        self.health.is_some()
    }
}

/// A group as one instance knows it.
#[derive(Clone, Debug, Default)]
pub struct GroupState {
    /// The connection generation it was read on; 0 when not current (a read failed).
    pub generation: u64,
    /// Whether the group exists.
    pub exists: bool,
    /// The table (epochs resolved).
    pub table: Option<Arc<Table>>,
    /// The group record's version and `mzxid`.
    pub version: i32,
    /// The `mzxid` of the group record.
    pub mzxid: u64,
    /// The members, by id.
    pub members: BTreeMap<String, Arc<MemberView>>,
    /// The member list's `pzxid`.
    pub members_pzxid: i64,
}

impl GroupState {
    /// The planner's view of the members: live ones, by id.
    pub fn candidates(&self) -> Vec<Candidate> {
        self.members
            .values()
            .filter(|m| m.is_live())
            .map(|m| Candidate {
                owner: m.owner(),
                weight: m.record.weight.max(1),
                eligible: !m.record.leaving && m.health.as_ref().is_some_and(Health::is_eligible),
            })
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Fired {
    Group,
    Members,
    Member(String),
    Lease(i64),
}

type WatchFuture = Pin<Box<dyn Future<Output = Fired> + Send>>;

/// Handoffs completed by one write of this instance, first seen by its task at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompletedHandoffs {
    /// From when this instance's task first saw them to the write that completed them.
    pub duration: Duration,
    /// How many shards.
    pub shards: u32,
}

/// What a task measures of its group (see the module docs), shared with its handle.
#[derive(Debug)]
struct Timing {
    /// Handoffs in progress and when this task first saw them.
    seen: HashMap<HandoffKey, tokio::time::Instant>,
    /// Handoffs completed by this instance's writes, not yet taken (at most
    /// [`MAX_COMPLETED_RECORDS`]).
    completed: Vec<CompletedHandoffs>,
    /// Shard-seconds unowned until `since`.
    unowned_total: f64,
    /// Shards unowned since `since`.
    unowned_now: u32,
    since: tokio::time::Instant,
}

impl Timing {
    fn new() -> Self {
        Self {
            seen: HashMap::new(),
            completed: Vec::new(),
            unowned_total: 0.0,
            unowned_now: 0,
            since: tokio::time::Instant::now(),
        }
    }

    /// Counts the shards unowned in `state` from now on.
    fn unowned_from_now(&mut self, state: &GroupState) {
        let now = tokio::time::Instant::now();
        self.unowned_total += now.duration_since(self.since).as_secs_f64() * f64::from(self.unowned_now);
        self.since = now;
        self.unowned_now = state.table.as_ref().filter(|_| state.exists).map_or(0, |t| {
            let counts = t.counts();
            counts.handing_off + counts.unassigned
        });
    }

    /// Records the handoffs of `before` that `after`, just written by this instance, completed
    /// (those this task saw; the others are not timed).
    fn completed(&mut self, before: &Table, after: &Table) {
        let now = tokio::time::Instant::now();
        let mut by_seen: BTreeMap<tokio::time::Instant, u32> = BTreeMap::new();
        for (shard, owner, epoch) in before.handoffs_completed_by(after) {
            if let Some(seen) = self.seen.get(&(shard, owner.lease_id, epoch)) {
                *by_seen.entry(*seen).or_default() += 1;
            }
        }
        for (seen, shards) in by_seen {
            if self.completed.len() >= MAX_COMPLETED_RECORDS {
                break;
            }
            self.completed.push(CompletedHandoffs { duration: now.saturating_duration_since(seen), shards });
        }
    }
}

/// Handle to the task of one group; the task stops when the last handle is dropped.
#[derive(Debug)]
pub struct GroupWatch {
    /// The published state (the latest).
    pub state: watch::Receiver<Arc<GroupState>>,
    poke: Arc<tokio::sync::Notify>,
    releases: Arc<Releases>,
    stop: CancellationToken,
    timing: Arc<Mutex<Timing>>,
    id: u64,
}

impl Drop for GroupWatch {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl GroupWatch {
    fn start(shared: Arc<Shared>, name: Name) -> Self {
        static STARTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let (tx, state) = watch::channel(Arc::new(GroupState::default()));
        let poke = Arc::new(tokio::sync::Notify::new());
        let stop = shared.shutdown.child_token();
        let timing = Arc::new(Mutex::new(Timing::new()));
        let releases = Arc::new(Releases::default());
        let task = Task {
            shared,
            name,
            tx,
            poke: poke.clone(),
            releases: releases.clone(),
            stop: stop.clone(),
            timing: timing.clone(),
        };
        tokio::spawn(task.run());
        Self { state, poke, releases, stop, timing, id: STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) }
    }

    /// Hands `owner`'s release of `shards` (`(shard, epoch)`) to the group's task, which writes
    /// it — with every other release waiting then, and the assignment of the released shards —
    /// in its next compare-and-set write. The answer comes once that write landed, or the
    /// release was refused (all or nothing: [`super::NO_SUCH_SHARD`], [`super::NOT_REVOKED`],
    /// [`super::OLD_EPOCH`]).
    ///
    /// # Cancellation safety
    /// Dropping the receiver does not withdraw the release: it is written anyway (its owner has
    /// given the shards up already).
    pub(super) fn release(&self, owner: Owner, shards: Vec<(u32, u64)>) -> oneshot::Receiver<Result<()>> {
        let (reply, answer) = oneshot::channel();
        lock(&self.releases.pending).push(PendingRelease { owner, shards, reply });
        self.releases.ready.notify_one();
        answer
    }

    /// Asks the task to read the group again (after this instance wrote something).
    pub fn poke(&self) {
        self.poke.notify_one();
    }

    /// Distinguishes the watches this process started: a group followed again gets a new id
    /// (and its figures start again from zero).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The group's unowned shard-seconds since this watch started: time × shards unassigned or
    /// being handed off, by the table its task last read (0 while the group does not exist).
    /// Each instance following a group counts it on its own.
    pub fn unowned_shard_seconds(&self) -> f64 {
        let timing = lock(&self.timing);
        let open = tokio::time::Instant::now().saturating_duration_since(timing.since).as_secs_f64();
        timing.unowned_total + open * f64::from(timing.unowned_now)
    }

    /// Takes the handoffs this instance's writes completed since the last call (one consumer:
    /// the metrics), with how long each took from when this instance first saw it. Handoffs it
    /// never saw in progress are not recorded; past [`MAX_COMPLETED_RECORDS`] records between
    /// two calls, later ones are dropped.
    pub fn take_completed_handoffs(&self) -> Vec<CompletedHandoffs> {
        std::mem::take(&mut lock(&self.timing).completed)
    }
}

/// Releases waiting for the group's task (see [`GroupWatch::release`]).
#[derive(Debug, Default)]
struct Releases {
    pending: Mutex<Vec<PendingRelease>>,
    ready: tokio::sync::Notify,
}

/// One Release call waiting for its write.
#[derive(Debug)]
struct PendingRelease {
    owner: Owner,
    shards: Vec<(u32, u64)>,
    reply: oneshot::Sender<Result<()>>,
}

impl PendingRelease {
    /// Applies the release to `table`, all or nothing.
    fn apply(&self, table: &mut Table) -> Result<()> {
        let mut scratch = table.clone();
        for &(shard, epoch) in &self.shards {
            if shard as usize >= scratch.slots.len() {
                return Err(crate::Error::FailedPrecondition(super::NO_SUCH_SHARD));
            }
            scratch.release(&self.owner, shard, epoch).map_err(|refused| match refused {
                super::table::ReleaseRefused::NotRevoked => crate::Error::FailedPrecondition(super::NOT_REVOKED),
                super::table::ReleaseRefused::NotOwner => crate::Error::FailedPrecondition(super::OLD_EPOCH),
            })?;
        }
        *table = scratch;
        Ok(())
    }
}

struct Task {
    shared: Arc<Shared>,
    name: Name,
    tx: watch::Sender<Arc<GroupState>>,
    poke: Arc<tokio::sync::Notify>,
    releases: Arc<Releases>,
    stop: CancellationToken,
    timing: Arc<Mutex<Timing>>,
}

/// What the task keeps between rounds.
#[derive(Default)]
struct Cache {
    dirty: HashSet<String>,
    lease_dirty: HashSet<String>,
    /// Member znodes that are no member record (written behind zkcoord's back), with the
    /// mzxid they were read at: skipped until they change (their watch tells).
    undecodable: HashMap<String, i64>,
    pending: HashSet<Fired>,
    generation: u64,
}

impl Task {
    async fn run(self) {
        let mut cache = Cache::default();
        let mut watches: FuturesUnordered<WatchFuture> = FuturesUnordered::new();
        let mut status = self.shared.session.watch_status();
        let mut group_dirty = true;
        let mut members_dirty = true;
        loop {
            let generation = self.shared.session.status().generation();
            if generation != cache.generation {
                cache.generation = generation;
                group_dirty = true;
                members_dirty = true;
                let known: Vec<String> = self.tx.borrow().members.keys().cloned().collect();
                cache.dirty.extend(known.iter().cloned());
                cache.lease_dirty.extend(known);
            }
            let round = match self.shared.session.client() {
                Ok(client) if generation != 0 => {
                    self.refresh(&client, &mut cache, &mut watches, group_dirty, members_dirty).await
                }
                _ => Err(crate::Error::Unavailable),
            };
            match round {
                Ok(state) => {
                    group_dirty = false;
                    members_dirty = false;
                    let mut state = self.publish(GroupState { generation, ..state });
                    for _ in 0..OWN_WRITE_ROUNDS {
                        let Ok(client) = self.shared.session.client() else { break };
                        match self.act(&client, &state).await {
                            Ok(Some(next)) if self.shared.session.status().generation() == generation => {
                                state = self.publish(next);
                            }
                            Ok(_) => break,
                            Err(err) => {
                                tracing::debug!(group = %self.name, error = %err, "shard assignment write failed");
                                group_dirty = true;
                                members_dirty = true;
                                break;
                            }
                        }
                    }
                }
                Err(err) => {
                    tracing::debug!(group = %self.name, error = %err, "shard group state unavailable");
                    let stale = GroupState { generation: 0, ..(**self.tx.borrow()).clone() };
                    self.publish(stale);
                    group_dirty = true;
                    members_dirty = true;
                }
            }
            let retry = (self.tx.borrow().generation == 0).then(|| tokio::time::sleep(RETRY_PAUSE));
            let grace = self.next_grace().map(tokio::time::sleep_until);
            tokio::select! {
                () = self.stop.cancelled() => break,
                fired = watches.next(), if !watches.is_empty() => if let Some(fired) = fired {
                    cache.pending.remove(&fired);
                    match fired {
                        Fired::Group => group_dirty = true,
                        Fired::Members => members_dirty = true,
                        Fired::Member(id) => { cache.dirty.insert(id); }
                        Fired::Lease(lease_id) => {
                            let ids = self.tx.borrow().members.values().filter(|m| m.record.lease_id == lease_id).map(|m| m.id.clone()).collect::<Vec<_>>();
                            cache.lease_dirty.extend(ids);
                        }
                    }
                },
                _ = status.changed() => {}
                () = self.poke.notified() => { group_dirty = true; members_dirty = true; }
                // Releases are written on the state as it is: a stale one fails its
                // compare-and-set and is read again.
                () = self.releases.ready.notified() => {}
                () = async { retry.expect("guarded").await }, if retry.is_some() => {}
                () = async { grace.expect("guarded").await }, if grace.is_some() => {}
            }
        }
    }

    /// Publishes `state`, after noting its handoffs and unowned shards (so that a handoff is
    /// timed from before anyone could see it here).
    fn publish(&self, state: GroupState) -> Arc<GroupState> {
        {
            let mut timing = lock(&self.timing);
            note_handoffs(&mut timing.seen, &state);
            timing.unowned_from_now(&state);
        }
        let state = Arc::new(state);
        self.tx.send_replace(state.clone());
        state
    }

    /// When the earliest handoff in progress runs out.
    fn next_grace(&self) -> Option<tokio::time::Instant> {
        let state = self.tx.borrow();
        let timing = lock(&self.timing);
        timing.seen.iter().filter_map(|((_, lease_id, _), seen)| Some(*seen + grace(&state, *lease_id)?)).min()
    }

    /// Writes the group's next table, or ends a leaving member that owns nothing; returns the
    /// state after the write, or `None` when there was nothing to do (or a race was lost).
    async fn act(&self, client: &Zk, state: &GroupState) -> Result<Option<GroupState>> {
        let Some(table) = state.table.as_ref().filter(|_| state.exists && state.generation != 0) else {
            if state.generation != 0 && !state.exists {
                for release in std::mem::take(&mut *lock(&self.releases.pending)) {
                    let _ = release.reply.send(Err(crate::Error::NotFound(super::GROUP_NOT_FOUND)));
                }
            }
            return Ok(None);
        };
        // Releases waiting now go into this write, each all or nothing.
        let mut base = (**table).clone();
        let mut applied = Vec::new();
        for release in std::mem::take(&mut *lock(&self.releases.pending)) {
            match release.apply(&mut base) {
                Ok(()) => applied.push(release),
                Err(err) => {
                    let _ = release.reply.send(Err(err));
                }
            }
        }
        let now = tokio::time::Instant::now();
        let planned = {
            let timing = lock(&self.timing);
            let handoff_over = |shard: u32, owner: &Owner, epoch: u64| {
                timing
                    .seen
                    .get(&(shard, owner.lease_id, epoch))
                    .zip(grace(state, owner.lease_id))
                    .is_some_and(|(seen, grace)| now >= *seen + grace)
            };
            base.plan(&state.candidates(), handoff_over)
        };
        let next = match planned {
            Some(next) => Some(next),
            None if !applied.is_empty() => Some(base),
            None => None,
        };
        if let Some(next) = next {
            let path = layout::shard_group(&self.name);
            let written = match record::encode(&GroupRecord::of(&next)) {
                Ok(data) => client.set_data(&path, &data, Some(state.version)).await,
                Err(err) => {
                    for release in applied {
                        let refusal = match &err {
                            crate::Error::FailedPrecondition(message) => crate::Error::FailedPrecondition(message),
                            _ => crate::Error::Unavailable,
                        };
                        let _ = release.reply.send(Err(refusal));
                    }
                    return Err(err);
                }
            };
            return match written {
                Ok(Some(stat)) => {
                    for release in applied {
                        let _ = release.reply.send(Ok(()));
                    }
                    let mzxid = u64::try_from(stat.mzxid).unwrap_or(0);
                    let mut next = next;
                    next.resolve(mzxid);
                    lock(&self.timing).completed(table, &next);
                    Ok(Some(GroupState { table: Some(Arc::new(next)), version: stat.version, mzxid, ..state.clone() }))
                }
                Ok(None) => {
                    for release in applied {
                        let _ = release.reply.send(Err(crate::Error::NotFound(super::GROUP_NOT_FOUND)));
                    }
                    Ok(None)
                }
                Err(err) => {
                    // Written on a stale state, or not at all: the releases wait for the next
                    // write (after a read).
                    lock(&self.releases.pending).extend(applied);
                    match err {
                        zookeeper_client::Error::BadVersion => Ok(None),
                        err => Err(err.into()),
                    }
                }
            };
        }
        // Leaving members that own nothing any more end their membership; so do members whose
        // lease has ended (their binding is gone; an instance of an older version, which does not
        // know shard bindings, may have deleted it alone).
        for member in state.members.values() {
            let owner = member.owner();
            let ended = !member.is_live() && member.lease_ttl.is_none();
            if ended
                || (member.record.leaving && table.owned_by(&owner).is_empty() && table.revoking(&owner).is_empty())
            {
                super::end_membership(client, &self.name, member).await?;
            }
        }
        Ok(None)
    }

    /// Re-reads what changed and returns the new state.
    async fn refresh(
        &self,
        client: &Zk,
        cache: &mut Cache,
        watches: &mut FuturesUnordered<WatchFuture>,
        group_dirty: bool,
        members_dirty: bool,
    ) -> Result<GroupState> {
        let previous = self.tx.borrow().clone();
        let mut state = (*previous).clone();
        let path = layout::shard_group(&self.name);
        if group_dirty || !previous.exists {
            match read_data(client, &path, Fired::Group, cache, watches).await {
                Ok(Some((data, stat))) => {
                    let mzxid = u64::try_from(stat.mzxid).unwrap_or(0);
                    let record: GroupRecord = record::decode(&data)?;
                    state.exists = true;
                    state.table = Some(Arc::new(record.table(mzxid)?));
                    state.version = stat.version;
                    state.mzxid = mzxid;
                }
                Ok(None) => {
                    arm_exists(client, &path, Fired::Group, cache, watches).await?;
                    return Ok(GroupState::default());
                }
                Err(err) => return Err(err.into()),
            }
        }
        // A table naming an owner this task has not listed may be newer than its member list:
        // list again rather than take "not listed" for "its membership ended" (see the election
        // watch for the same rule).
        let unknown_owner = state.members_pzxid < i64::try_from(state.mzxid).unwrap_or(i64::MAX)
            && state.table.as_ref().is_some_and(|t| t.owners.iter().any(|o| !state.members.contains_key(&o.member)));
        if members_dirty || !previous.exists || unknown_owner {
            let dir = layout::shard_members(&self.name);
            let listed = if cache.pending.contains(&Fired::Members) {
                client.get_children(&dir).await
            } else {
                client.get_and_watch_children(&dir).await.map(|listed| {
                    listed.map(|(children, stat, watcher)| {
                        cache.pending.insert(Fired::Members);
                        watches.push(Box::pin(async move {
                            watcher.changed().await;
                            Fired::Members
                        }));
                        (children, stat)
                    })
                })
            };
            let children = match listed {
                Ok(Some((children, stat))) => {
                    state.members_pzxid = stat.pzxid;
                    children
                }
                Ok(None) => Vec::new(),
                Err(err) => return Err(err.into()),
            };
            let present: HashSet<&String> = children.iter().collect();
            state.members.retain(|id, _| present.contains(id));
            cache.dirty.retain(|id| present.contains(id));
            cache.undecodable.retain(|id, _| present.contains(id));
            for id in children {
                if !state.members.contains_key(&id) && !cache.undecodable.contains_key(&id) {
                    cache.dirty.insert(id.clone());
                    cache.lease_dirty.insert(id);
                }
            }
        }
        for id in std::mem::take(&mut cache.dirty) {
            let Ok(member_id) = Name::parse("member", &id) else { continue };
            let member_path = layout::shard_member(&self.name, &member_id);
            match read_data(client, &member_path, Fired::Member(id.clone()), cache, watches).await {
                Ok(Some((data, stat))) => {
                    // A znode zkcoord did not write must not wedge the group: it is no member
                    // (its watch, armed by the read, tells when it changes).
                    let record: MemberRecord = match record::decode(&data) {
                        Ok(record) => record,
                        Err(err) => {
                            if cache.undecodable.insert(id.clone(), stat.mzxid) != Some(stat.mzxid) {
                                self.shared.session.skipped().skip(Kind::ShardMember, &member_path, &err);
                            }
                            state.members.remove(&id);
                            continue;
                        }
                    };
                    cache.undecodable.remove(&id);
                    let old = state.members.get(&id);
                    if old.is_none_or(|m| m.record.lease_id != record.lease_id) {
                        cache.lease_dirty.insert(id.clone());
                    }
                    let (health, lease_ttl) = old.map_or((None, None), |m| (m.health.clone(), m.lease_ttl));
                    let view = MemberView { id: id.clone(), record, version: stat.version, health, lease_ttl };
                    state.members.insert(id, Arc::new(view));
                }
                Ok(None) => {
                    state.members.remove(&id);
                    cache.undecodable.remove(&id);
                }
                Err(err) => {
                    cache.dirty.insert(id);
                    return Err(err.into());
                }
            }
        }
        for id in std::mem::take(&mut cache.lease_dirty) {
            let Some(lease_id) = state.members.get(&id).map(|m| m.record.lease_id) else { continue };
            let read = read_data(client, &layout::lease(lease_id), Fired::Lease(lease_id), cache, watches).await;
            let Some(member) = state.members.get_mut(&id).map(Arc::make_mut) else { continue };
            match read {
                Ok(Some((data, _))) => {
                    let record = LeaseRecord::decode(&data).ok().filter(|r| !r.ending);
                    member.lease_ttl = record.as_ref().map(LeaseRecord::ttl);
                    member.health = record.map(|r| r.health);
                }
                Ok(None) => {
                    member.health = None;
                    member.lease_ttl = None;
                }
                Err(err) => {
                    cache.lease_dirty.insert(id);
                    return Err(err.into());
                }
            }
        }
        Ok(state)
    }
}

/// How long after it is first seen a handoff from a member of lease `lease_id` may complete
/// without its release; `None` when the member is not known.
fn grace(state: &GroupState, lease_id: i64) -> Option<Duration> {
    let ttl = state.members.values().find(|m| m.record.lease_id == lease_id).and_then(|m| m.lease_ttl)?;
    Some(crate::recipe::lease::validity_grace(ttl))
}

/// Records when each handoff in `state` was first seen; forgets those no longer in progress.
fn note_handoffs(handoffs: &mut HashMap<HandoffKey, tokio::time::Instant>, state: &GroupState) {
    let Some(table) = state.table.as_ref() else {
        handoffs.clear();
        return;
    };
    let now = tokio::time::Instant::now();
    let mut current = HashSet::new();
    for (shard, slot) in table.slots.iter().enumerate() {
        if let Slot::HandingOff { owner, epoch, .. } = *slot
            && let Some(owner) = table.owner(owner)
        {
            current.insert((shard as u32, owner.lease_id, epoch));
        }
    }
    handoffs.retain(|key, _| current.contains(key));
    for key in current {
        handoffs.entry(key).or_insert(now);
    }
}

/// Reads a znode's data, arming a watch on it unless one is already pending (see the election
/// watch for why).
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

/// The group watches of one instance, shared by all streams and calls; groups named by
/// heartbeats are kept followed for a while after the last one (so that some instance assigns
/// while members live, even with no stream open).
#[derive(Debug, Default)]
pub(super) struct Registry {
    watches: Mutex<HashMap<String, std::sync::Weak<GroupWatch>>>,
    kept: Mutex<HashMap<String, (Arc<GroupWatch>, std::time::Instant)>>,
}

/// How long a group named by a heartbeat stays followed.
const KEEP: Duration = Duration::from_secs(60);

impl Registry {
    /// The watch of group `name`, started on first use.
    pub(super) fn get(&self, shared: &Arc<Shared>, name: &Name) -> Arc<GroupWatch> {
        let mut watches = lock(&self.watches);
        if let Some(existing) = watches.get(name.as_str()).and_then(std::sync::Weak::upgrade) {
            return existing;
        }
        watches.retain(|_, w| w.strong_count() > 0);
        let watch = Arc::new(GroupWatch::start(shared.clone(), name.clone()));
        watches.insert(name.as_str().to_owned(), Arc::downgrade(&watch));
        watch
    }

    /// The groups followed now (a watch alive), by name.
    pub(super) fn all(&self) -> Vec<(String, Arc<GroupWatch>)> {
        let watches = lock(&self.watches);
        let mut all: Vec<(String, Arc<GroupWatch>)> =
            watches.iter().filter_map(|(name, w)| Some((name.clone(), w.upgrade()?))).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Keeps group `name` followed for [`KEEP`] from now.
    pub(super) fn keep(&self, shared: &Arc<Shared>, name: &Name) {
        let watch = self.get(shared, name);
        let now = std::time::Instant::now();
        let mut kept = lock(&self.kept);
        kept.retain(|_, (_, at)| now < *at + KEEP);
        kept.insert(name.as_str().to_owned(), (watch, now));
    }
}
