//! Leader election with priorities, preemption, graceful transfer, fencing tokens, health
//! gating and leadership watches.
//!
//! * `/elections/<name>` holds the [`record::ElectionRecord`]: preemption policy, term, leader,
//!   and a deposition in progress. It is written only on leadership changes, so its `mzxid` is
//!   the sitting leader's fencing token.
//! * `/elections/<name>/candidates/<id>` holds each [`record::CandidateRecord`], bound to a
//!   lease by a binding child of the lease record ([`record::candidacy_binding`]: it owns the
//!   candidate znode): the candidacy ends with the lease, in the same transaction.
//! * Every instance that serves a Campaign, Observe, Leader, Candidates or Transfer call for an
//!   election runs one [`watch::ElectionWatch`] for it, which follows the election with O(1)
//!   reads per change and acts as an elector (compare-and-set writes; losing races is fine).
//!   Observe streams number and de-duplicate the states it publishes ([`observe`]).
//! * A leader whose lease lives on (Transfer, preemption, health gating) is deposed in two
//!   phases: the record first names it `deposed` with no leader (the instance holding its
//!   Campaign stream tells it DEPOSED); the successor is elected once it acknowledged
//!   ([`Elections::step_down`]), its candidacy ended, or the deposition was seen for
//!   [`watch::deposition_grace`] (its validity can no longer hold).
//! * Who may act as leader is decided by the lease's heartbeat answers, which list only
//!   leaderships proven current ([`leadership`]); Campaign streams only notify.

mod cleanup;
pub mod leadership;
pub mod observe;
pub mod record;
pub mod state;
pub mod watch;

use std::{sync::Arc, time::Duration};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use zookeeper_client::{
    Acls, CreateMode,
    Error::{BadVersion, NoNode, NodeExists},
    MultiWriteResult,
};

pub use self::{
    leadership::Leadership,
    observe::{Observation, Observed},
};
use self::{
    leadership::Leaderships,
    record::{CandidateRecord, DeposeReason, Deposition, ElectionRecord, Yielded},
    state::ElectionState,
    watch::{ElectionWatch, Registry, Written},
};
use crate::{
    error::{
        CANDIDACY_CHANGED, CANDIDATE_ID_TAKEN, Error, LEADERSHIP_CHANGED, NO_LEADER, NO_TRANSFER_TARGET,
        NOT_A_CANDIDATE, NOT_CURRENT_TERM, NOT_LEADER, NOT_LEADER_OF_TERM, OTHER_PREEMPT_POLICY, Result, STILL_LEADS,
        TAKEN_OVER,
    },
    limits::{self, InstanceLimits},
    recipe::{
        health::Health,
        instance::{Incarnation, now_unix_ms},
        lease,
    },
    validate::Name,
    zk::{OpFailed, Proof, Zk, ZkSession, layout},
};

/// How long a call waits for an election's state to be read.
const LOAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long Transfer waits for the successor to be elected, beyond the deposed leader's
/// deposition grace (see [`watch::deposition_grace`]).
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a campaign write retries after a concurrent change.
const MAX_ATTEMPTS: usize = 8;

/// Why a candidate is no longer (or not yet again) the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deposed {
    /// Resign.
    Resigned,
    /// The lease ended.
    LeaseExpired,
    /// A better candidate took over (preemption).
    Preempted,
    /// The lease reported NOT_SERVING.
    Unhealthy,
    /// Transfer.
    Transferred,
}

/// The leader as clients see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderView {
    /// Its candidate id.
    pub candidate_id: String,
    /// Its value.
    pub value: Vec<u8>,
    /// Its priority.
    pub priority: i32,
    /// The term.
    pub term: i64,
    /// The term's fencing token.
    pub token: u64,
    /// Its lease's health.
    pub health: Health,
    /// Its lease.
    pub lease_id: i64,
    /// When the term began.
    pub elected_unix_ms: i64,
}

/// The status of one candidacy, as its Campaign stream reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CandidateStatus {
    /// Waiting; `position` eligible candidates are ahead.
    Queued {
        /// Eligible candidates ahead.
        position: u32,
        /// The current leader.
        leader: Option<LeaderView>,
    },
    /// Leading.
    Elected {
        /// The leader (this candidate).
        leader: LeaderView,
    },
    /// Was leading, but this instance cannot currently confirm it.
    Unconfirmed {
        /// The term.
        term: i64,
        /// Its token.
        token: u64,
    },
    /// No longer leading. `last` says the candidacy itself has ended.
    Deposed {
        /// Why.
        reason: Deposed,
        /// The last term.
        term: i64,
        /// Whether the candidacy has ended (the stream ends after this).
        last: bool,
    },
    /// The stream ends without the candidacy ending.
    Ended(StreamEnd),
}

/// Why a Campaign stream ends while its candidacy lives on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// Another Campaign stream (on this or another instance) took the candidacy.
    TakenOver,
    /// This instance is shutting down.
    ShuttingDown,
    /// The client left more than [`watch::CAMPAIGN_BACKLOG`] statuses unread.
    FellBehind,
}

impl StreamEnd {
    /// The status the stream ends with.
    pub fn error(self) -> Error {
        match self {
            Self::TakenOver => Error::FailedPrecondition(TAKEN_OVER),
            Self::ShuttingDown => Error::ShuttingDown,
            Self::FellBehind => Error::FellBehind,
        }
    }
}

/// A validated candidacy key with the lease secret.
#[derive(Clone, Debug)]
pub struct CandidateKey {
    /// The election.
    pub election: Name,
    /// The candidate id.
    pub candidate_id: Name,
    /// The lease id.
    pub lease_id: i64,
    /// The lease secret.
    pub secret: String,
}

/// A new or taken-back candidacy.
#[derive(Clone, Debug)]
pub struct CampaignRequest {
    /// Who and where.
    pub key: CandidateKey,
    /// The candidate's value.
    pub value: Vec<u8>,
    /// 0 (best) to 1000.
    pub priority: i32,
    /// The preemption policy to require (`None`: accept the election's).
    pub preempt: Option<bool>,
    /// How long its lease must have been seen NOT_SERVING before it is deposed as leader for it.
    pub unhealthy_for: Duration,
    /// How long its lease must have been seen eligible before it may preempt.
    pub healthy_for: Duration,
}

/// A Campaign stream's source: status updates, and the watch that keeps them coming.
#[derive(Debug)]
pub struct Campaign {
    statuses: mpsc::Receiver<CandidateStatus>,
    /// Why this instance ended the stream, once `statuses` is drained.
    end: Arc<std::sync::Mutex<Option<StreamEnd>>>,
    watch: Arc<ElectionWatch>,
    candidate_id: String,
    lease_id: i64,
    me: String,
}

impl Drop for Campaign {
    /// The candidacy outlives its stream. While it exists with its stream recorded here (and
    /// no newer Campaign stream of it runs here), this instance keeps following the election,
    /// so that at least one elector is there to complete a deposition of it once its grace
    /// has run out (nobody will acknowledge it), even when no other instance follows the
    /// election.
    fn drop(&mut self) {
        // This stream's own sink counts as gone from now on (see `has_sink` below).
        self.statuses.close();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (watch, id, me) =
            (self.watch.clone(), std::mem::take(&mut self.candidate_id), std::mem::take(&mut self.me));
        let lease_id = self.lease_id;
        runtime.spawn(async move {
            let mut states = watch.state.clone();
            loop {
                let streamless_here = {
                    let state = states.borrow_and_update();
                    // Not read yet: keep waiting for the first state.
                    state.generation == 0 || state.streamed_at(&id, lease_id, &me)
                };
                // A newer stream of the candidacy here keeps the watch itself (and ends this);
                // the task also ends (its sender dropped) at shutdown.
                if !streamless_here || watch.has_sink(&id, lease_id) || states.changed().await.is_err() {
                    return;
                }
            }
        });
    }
}

impl Campaign {
    /// The next status; after the statuses already sent, an [`CandidateStatus::Ended`] when
    /// this instance ended the stream, then `None`.
    ///
    /// # Cancellation safety
    /// Cancellation safe: no status is lost.
    pub async fn next(&mut self) -> Option<CandidateStatus> {
        match self.statuses.recv().await {
            Some(status) => Some(status),
            None => crate::sync_util::lock(&self.end).take().map(CandidateStatus::Ended),
        }
    }
}

/// A candidate as Candidates reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CandidateInfo {
    /// The candidate id.
    pub candidate_id: String,
    /// Its value.
    pub value: Vec<u8>,
    /// Its priority.
    pub priority: i32,
    /// Its lease's health (`None`: the lease is gone).
    pub health: Option<Health>,
    /// Eligible for leadership.
    pub eligible: bool,
    /// Its lease.
    pub lease_id: i64,
    /// Its place in election order.
    pub position: u32,
    /// Whether it leads.
    pub leader: bool,
}

/// What every election followed by one instance needs: the session, the instance, its
/// shutdown, the registry of election watches and the leadership proofs; shared by the clones
/// of [`Elections`] and the election watches' tasks.
#[derive(Debug)]
pub(crate) struct ElectionContext {
    session: ZkSession,
    me: Incarnation,
    /// Authenticates the callers of Resign, Proclaim and Transfer (see [`Elections::resign`]).
    leases: lease::Leases,
    shutdown: CancellationToken,
    registry: Registry,
    leaderships: Leaderships,
    /// The instance's limits: elections followed at once, candidacies per lease.
    limits: Arc<InstanceLimits>,
}

/// What one instance knows of one election it follows (for metrics).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElectionSummary {
    /// The election's name.
    pub name: String,
    /// Its candidates.
    pub candidates: usize,
    /// Whether it has a leader.
    pub has_leader: bool,
    /// Whether its znode exists (someone campaigned in it); an Observe or Leader of a name
    /// nobody uses follows an election that does not.
    pub exists: bool,
}

/// The election recipe of one instance. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Elections {
    shared: Arc<ElectionContext>,
}

/// The leader of `state`, if any, as clients see it.
pub fn leader_view(state: &ElectionState) -> Option<LeaderView> {
    let (leader, candidate) = state.leader()?;
    Some(LeaderView {
        candidate_id: leader.candidate_id.clone(),
        value: candidate.record.value(),
        priority: candidate.record.priority,
        term: state.record.term,
        token: state.token,
        health: candidate.health.clone().unwrap_or_default(),
        lease_id: leader.lease_id,
        elected_unix_ms: leader.elected_unix_ms,
    })
}

/// The status of candidate `id` (bound to `lease_id`) whose stream instance `me` holds.
/// `lease_gone` tells, for a vanished candidacy, whether its lease ended.
pub(crate) fn status_of(state: &ElectionState, id: &str, lease_id: i64, me: &str, lease_gone: bool) -> CandidateStatus {
    let term = state.record.term;
    let Some(candidate) = state.candidates.get(id).filter(|c| c.record.lease_id == lease_id) else {
        let reason = if lease_gone { Deposed::LeaseExpired } else { Deposed::Resigned };
        return CandidateStatus::Deposed { reason, term, last: true };
    };
    if candidate.record.stream.as_deref() != Some(me) {
        return CandidateStatus::Ended(StreamEnd::TakenOver);
    }
    if let Some(leader) = &state.record.leader
        && leader.candidate_id == id
        && leader.lease_id == lease_id
    {
        return match leader_view(state) {
            Some(leader) if state.generation != 0 => CandidateStatus::Elected { leader },
            _ => CandidateStatus::Unconfirmed { term, token: state.token },
        };
    }
    if let Some(Deposition { candidate_id, lease_id: deposed_lease, reason, .. }) = &state.record.deposed
        && candidate_id == id
        && *deposed_lease == lease_id
    {
        let reason = match reason {
            DeposeReason::Preempted => Deposed::Preempted,
            DeposeReason::Unhealthy => Deposed::Unhealthy,
            DeposeReason::Transferred => Deposed::Transferred,
        };
        return CandidateStatus::Deposed { reason, term, last: false };
    }
    CandidateStatus::Queued { position: state.position(id), leader: leader_view(state) }
}

impl Elections {
    /// The election recipe for the instance `me`, whose leases are `leases`, within `limits`
    /// (shared by every tenant's).
    pub fn new(
        session: ZkSession,
        me: Incarnation,
        leases: lease::Leases,
        shutdown: CancellationToken,
        limits: Arc<InstanceLimits>,
    ) -> Self {
        let leaderships = Leaderships::new(session.clone());
        let registry = Registry::default();
        let shared = Arc::new(ElectionContext { session, me, leases, shutdown, registry, leaderships, limits });
        tokio::spawn(cleanup::run(shared.clone()));
        Self { shared }
    }

    /// Authenticates a call acting for lease `key.lease_id` with its secret, as Lock does
    /// ([`lease::Leases::authenticate`]): from memory when the lease is attached to this
    /// instance, else by reading its record. Enough for a call that only deletes or updates
    /// what is bound to the lease: a lease's secret never changes (its digest, held in memory
    /// since the grant or claim here, is the record's), and what the call then writes is bound
    /// to the lease in ZooKeeper, checked in the same transaction (a binding under the lease
    /// record, or the election record naming the lease), so a lease deleted meanwhile fails
    /// that write instead of being acted for. Past its ttl a lease attached here is not found,
    /// even before its deletion.
    async fn authenticate(&self, key: &CandidateKey) -> Result<()> {
        self.shared.leases.authenticate(key.lease_id, &key.secret).await.map(|_| ())
    }

    /// The leaderships of lease `lease_id` among `elections` that this instance can prove on
    /// session proof `proof` (see [`leadership`]): what the lease's heartbeat answer lists;
    /// `None` when it cannot tell (the answer is then not confirmed).
    ///
    /// # Cancellation safety
    /// Safe to cancel.
    pub async fn leaderships(&self, lease_id: i64, elections: &[Name], proof: Proof) -> Option<Vec<Leadership>> {
        self.shared.leaderships.of(lease_id, elections, proof).await
    }

    /// The elections this instance follows now (because it serves a Campaign, Observe,
    /// Leader, Candidates or Transfer call for them), from its cache: no ZooKeeper reads.
    pub fn summaries(&self) -> Vec<ElectionSummary> {
        let mut summaries: Vec<ElectionSummary> = self
            .shared
            .registry
            .all()
            .into_iter()
            .map(|(name, watch)| {
                let state = watch.state.borrow().clone();
                ElectionSummary {
                    name,
                    candidates: state.candidates.len(),
                    has_leader: state.leader().is_some(),
                    exists: state.exists,
                }
            })
            .collect();
        summaries.sort_by(|a, b| a.name.cmp(&b.name));
        summaries
    }

    /// Enters a candidacy, or takes back an existing one of the same lease, and returns its
    /// status updates.
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`], [`Error::WrongSecret`], [`Error::FailedPrecondition`] (the
    /// candidate id belongs to another lease, or the preemption policy differs),
    /// [`Error::LimitReached`] (the lease has `max_candidacies_per_lease` other candidacies, or
    /// the election is not followed here and `max_watched_elections` others are; nothing is
    /// written), [`Error::Unavailable`].
    ///
    /// # Cancellation safety
    /// The candidacy is created in one transaction; a cancelled call either created it (it
    /// then lives with its lease, like any candidacy whose stream closed) or did nothing.
    pub async fn campaign(&self, request: CampaignRequest) -> Result<Campaign> {
        let client = self.shared.session.client()?;
        let key = &request.key;
        // The caller's lease and secret first: a refused call writes nothing (no election
        // znodes made for a caller without a lease). Then the election: known to exist, with
        // its policy, when this instance follows it (a policy never changes once written);
        // else its record is read together with the lease (one round trip). Only a missing
        // election is created: a create that fails because the election exists is still a
        // logged transaction (a zxid), on every Campaign after the first.
        let known = self.shared.registry.peek(&key.election).and_then(|watch| {
            let state = watch.state.borrow();
            (state.generation != 0 && state.exists).then_some(state.record.preempt)
        });
        let (lease, policy) = match known {
            Some(policy) => (lease::read_verified_stat(&client, key.lease_id, &key.secret).await, Ok(Some(policy))),
            None => tokio::join!(
                lease::read_verified_stat(&client, key.lease_id, &key.secret),
                election_policy(&client, &key.election)
            ),
        };
        let (record, stat) = lease?;
        let mut verified = Some((record, stat.version));
        let binding_name = layout::candidacy_binding(&key.election, &key.candidate_id);
        // The record's child count bounds the lease's candidacies: count them exactly only
        // when it reaches the limit (see `crate::limits`).
        let max = self.shared.limits.quotas.candidacies_per_lease;
        if usize::try_from(stat.num_children).unwrap_or(0) >= max {
            let children = client.list_children(&layout::lease(key.lease_id)).await?.ok_or(Error::LeaseNotFound)?;
            let (candidacies, own) =
                limits::bindings_of_kind(&children, layout::CANDIDACY_BINDING_PREFIX, Some(&binding_name));
            if !own {
                limits::below(candidacies, max, crate::error::TOO_MANY_CANDIDACIES)?;
            }
        }
        // The election's watch before any write: past `max_watched_elections` nothing is made.
        let watch = self.shared.registry.get(&self.shared, &key.election)?;
        let acls = self.shared.session.acls();
        match policy? {
            Some(existing) => check_policy(existing, request.preempt)?,
            None => ensure_election(&client, acls, &key.election, request.preempt).await?,
        }
        let candidate_path = layout::candidate(&key.election, &key.candidate_id);
        let binding_path = layout::binding(key.lease_id, &binding_name);
        let binding_data = record::candidacy_binding(&key.election, &key.candidate_id).encode();
        let record = CandidateRecord {
            lease_id: key.lease_id,
            priority: request.priority,
            value_hex: crate::id::hex(&request.value),
            stream: Some(self.shared.me.name.clone()),
            unhealthy_for_ms: request.unhealthy_for.as_millis() as u64,
            healthy_for_ms: request.healthy_for.as_millis() as u64,
            withdrawn: false,
        };
        let data = record::encode(&record);
        let persistent = CreateMode::Persistent.with_acls(acls);
        let mut written_zxid = None;
        for _ in 0..MAX_ATTEMPTS {
            let (_, lease_version) = match verified.take() {
                Some(verified) => verified,
                None => lease::read_verified(&client, key.lease_id, &key.secret).await?,
            };
            let mut multi = client.multi();
            multi.add_check_version(&layout::lease(key.lease_id), lease_version)?;
            multi.add_create(&candidate_path, &data, &persistent)?;
            multi.add_create(&binding_path, &binding_data, &persistent)?;
            // The candidate znode is read back in the same round trip: the read is sent right
            // behind the transaction on the session's one connection, and ZooKeeper answers a
            // session's requests in order, each after the ones sent before it took effect. It
            // tells the zxid of a create (a create inside a multi reports no usable stat:
            // ZOOKEEPER-4026), or what a candidacy being taken back holds.
            let commit = multi.commit();
            let read_back = client.get_data(&candidate_path);
            let (committed, read_back) = tokio::join!(commit, read_back);
            match committed? {
                Ok(_) => {
                    // A candidacy already gone again counts as "anything after this is news".
                    let stat = match read_back {
                        Ok(read) => read.map(|(_, stat)| stat),
                        // Not answered (the connection changed after the commit): ask again.
                        Err(_) => client.check_stat(&candidate_path).await?,
                    };
                    written_zxid = Some(stat.map_or(0, |stat| stat.mzxid));
                    break;
                }
                Err(OpFailed { index: 0, .. }) => continue, // the lease changed: verify again
                Err(OpFailed { index: 1, error: NoNode }) => {
                    // The election was removed (nobody left in it) since it was seen: again.
                    ensure_election(&client, self.shared.session.acls(), &key.election, request.preempt).await?;
                    continue;
                }
                Err(OpFailed { index: 1, error: NodeExists }) => {
                    // Taking back an existing candidacy.
                    let Some((existing, stat)) = read_back? else { continue };
                    // A znode that is no candidate record (written behind zkcoord's back) is not
                    // this lease's either.
                    let ours = record::decode::<CandidateRecord>(&existing).is_ok_and(|e| e.lease_id == key.lease_id);
                    if !ours {
                        return Err(Error::FailedPrecondition(CANDIDATE_ID_TAKEN));
                    }
                    match client.set_data(&candidate_path, &data, Some(stat.version)).await {
                        Ok(Some(stat)) => {
                            written_zxid = Some(stat.mzxid);
                            break;
                        }
                        Ok(None) | Err(BadVersion) => continue,
                        Err(err) => return Err(err.into()),
                    }
                }
                Err(OpFailed { error, .. }) => return Err(error.into()),
            }
        }
        let written_zxid = written_zxid.ok_or(Error::Unavailable)?;
        watch.poke();
        let (statuses, end) = watch.add_sink(key.candidate_id.as_str().to_owned(), key.lease_id, written_zxid);
        Ok(Campaign {
            statuses,
            end,
            watch,
            candidate_id: key.candidate_id.as_str().to_owned(),
            lease_id: key.lease_id,
            me: self.shared.me.name.clone(),
        })
    }

    /// Withdraws a candidacy; with `term` non-zero, only if it leads that term.
    ///
    /// # Errors
    /// [`Error::FailedPrecondition`] when it is not a candidate (or not the leader of `term`),
    /// plus the lease errors.
    ///
    /// # Cancellation safety
    /// One transaction: done entirely or not at all.
    pub async fn resign(&self, key: &CandidateKey, term: i64) -> Result<()> {
        let client = self.shared.session.client()?;
        let candidate_path = layout::candidate(&key.election, &key.candidate_id);
        // No read of the candidate first: the lease's binding of this candidacy, deleted in the
        // same transaction, exists exactly while the candidate znode exists bound to this lease
        // (both are created and deleted together, `lease::zkops::delete_lease`). So the
        // transaction deletes this lease's candidacy, or fails with `NoNode` and deletes
        // nothing: no such candidacy, or one of another lease.
        let binding_path = layout::binding(key.lease_id, &layout::candidacy_binding(&key.election, &key.candidate_id));
        // A leader resigning through an instance that follows the election: the lease first,
        // then one transaction electing its successor, conditional on the record this
        // instance's view shows leading (in `term`), so no read of the record is needed.
        let view_leads = self.shared.registry.peek(&key.election).is_some_and(|watch| {
            let state = watch.state.borrow();
            state.generation != 0
                && (term == 0 || state.record.term == term)
                && state
                    .record
                    .leader
                    .as_ref()
                    .is_some_and(|l| l.candidate_id == key.candidate_id.as_str() && l.lease_id == key.lease_id)
        });
        if view_leads {
            self.authenticate(key).await?;
            if self.resign_and_elect(&client, key, term, &candidate_path, &binding_path).await? {
                return Ok(());
            }
        }
        // The lease (from memory when attached here, unless judged above) and, with a term,
        // the election record are in flight at once, and judged in this order (the lease and
        // its secret first) before anything is written. With a term, the election record must
        // still be the one that says so when the candidacy is deleted.
        let (lease, leads) =
            tokio::join!(async { if view_leads { Ok(()) } else { self.authenticate(key).await } }, async {
                if term != 0 { check_leads(&client, key, term).await.map(Some) } else { Ok(None) }
            });
        lease?;
        let leads = leads?;
        let mut multi = client.multi();
        if let Some(election_version) = leads {
            multi.add_check_version(&layout::election(&key.election), election_version)?;
        }
        multi.add_delete(&candidate_path, None)?;
        multi.add_delete(&binding_path, None)?;
        match multi.commit().await? {
            Ok(_) => Ok(()),
            Err(OpFailed { index: 0, .. }) if leads.is_some() => Err(Error::FailedPrecondition(NOT_LEADER_OF_TERM)),
            Err(OpFailed { error: NoNode, .. }) => Err(Error::FailedPrecondition(NOT_A_CANDIDATE)),
            Err(OpFailed { .. }) => Err(Error::FailedPrecondition(CANDIDACY_CHANGED)),
        }
    }

    /// The fast path of a leader's resignation: when this instance follows the election and
    /// its view shows `key` leading (in `term`, unless 0), one
    /// transaction deletes the candidacy and writes the election record electing the successor
    /// ([`ElectionState::succession`]) — one zxid, and the successor is elected when the
    /// resignation commits instead of after a watch notification, a listing and a second write
    /// by an elector. The resignation is the leader's acknowledgement that it stopped acting
    /// (the client rule), so electing at once keeps the two-phase handoff, as the elector's
    /// "candidacy gone: elect at once" does. Returns `false` (nothing written) when the view
    /// does not allow it or was stale (the transaction failed on a version): the plain
    /// resignation then judges, and its errors tell why.
    ///
    /// # Cancellation safety
    /// One transaction: done entirely or not at all.
    async fn resign_and_elect(
        &self,
        client: &Zk,
        key: &CandidateKey,
        term: i64,
        candidate_path: &str,
        binding_path: &str,
    ) -> Result<bool> {
        let Some(watch) = self.shared.registry.peek(&key.election) else { return Ok(false) };
        let (succession, view) = {
            let state = watch.state.borrow();
            if term != 0 && state.record.term != term {
                return Ok(false); // another term: the plain path tells
            }
            let now = tokio::time::Instant::now();
            (state.succession(key.candidate_id.as_str(), key.lease_id, now, now_unix_ms()), Arc::clone(&state))
        };
        let Some((record, successor)) = succession else { return Ok(false) };
        let mut multi = client.multi();
        multi.add_set_data(&layout::election(&key.election), &record::encode(&record), Some(view.version))?;
        multi.add_delete(candidate_path, None)?;
        multi.add_delete(binding_path, None)?;
        if let Some((id, version)) = &successor {
            multi.add_check_version(&layout::candidate(&key.election, id), *version)?;
        }
        // Held until the outcome is told (`wrote` or `poke` below), or the call is cancelled.
        let _writing = watch.writing();
        let Ok(results) = multi.commit().await? else { return Ok(false) };
        tracing::debug!(election = %key.election, term = record.term, leader = ?record.leader.as_ref().map(|l| &l.candidate_id), "resigned and elected in one transaction");
        let written = results.into_iter().find_map(|result| match result {
            MultiWriteResult::SetData { stat } => Some(stat),
            _ => None,
        });
        match written {
            // The successor is told now, by this instance, from what its transaction wrote: the
            // record (its mzxid, the new term's token, is also the candidates' last change).
            Some(stat) => watch.wrote(Written {
                record,
                version: stat.version,
                zxid: stat.mzxid,
                generation: view.generation,
                removed: key.candidate_id.as_str().to_owned(),
            }),
            None => {
                watch.poke();
            }
        }
        Ok(true)
    }

    /// Ends candidacy `key` on zkcoord's own initiative (its client's identity may no longer
    /// campaign in the election: the `authz_file` changed), without ever letting two leaders
    /// act. First its record is marked `withdrawn` (compare-and-set of its version): no elector
    /// elects it again (an Elect is conditional on the candidate's version, so one deciding on
    /// the unmarked record fails and reads again). A candidacy that does not lead is then
    /// deleted, in a transaction that checks the election record still does not name it. A
    /// leader is first deposed (phase 1, as by Transfer: the record names it `deposed`, so
    /// heartbeat answers stop listing the leadership), and its candidacy is deleted once the
    /// deposition has been seen for its [`watch::deposition_grace`] (its validity can no longer
    /// hold), or at once when the deposition completed otherwise (its acknowledgement, the
    /// grace run out at an elector, which then elects someone else or nobody — never it).
    /// A candidacy taken back by a Campaign meanwhile (rights granted again) is left alone.
    /// Does not need the lease secret: zkcoord acts, not the client.
    ///
    /// # Errors
    /// [`Error::Unavailable`] after repeated concurrent changes, or when ZooKeeper is.
    ///
    /// # Cancellation safety
    /// Each write is one transaction; a cancelled call leaves the candidacy, possibly deposed
    /// (an elector completes the deposition after its grace, like any other).
    pub async fn withdraw(&self, key: &CandidateKey) -> Result<()> {
        let client = self.shared.session.client()?;
        let election_path = layout::election(&key.election);
        let candidate_path = layout::candidate(&key.election, &key.candidate_id);
        let binding_path = layout::binding(key.lease_id, &layout::candidacy_binding(&key.election, &key.candidate_id));
        let ours = |id: &str, lease_id: i64| id == key.candidate_id.as_str() && lease_id == key.lease_id;
        let mut deposition_seen: Option<tokio::time::Instant> = None;
        // The version of the candidate record this call marked withdrawn.
        let mut marked: Option<i32> = None;
        for _ in 0..MAX_ATTEMPTS * 2 {
            let (watch, state) = self.fresh_state(&key.election).await?;
            let Some(candidate) =
                state.candidates.get(key.candidate_id.as_str()).filter(|c| c.record.lease_id == key.lease_id)
            else {
                return Ok(()); // ended already
            };
            // The watch re-reads a candidate record when its data watch fires, which may come
            // after a re-read asked for: a view older than our mark lags.
            let candidate_version = match marked {
                Some(version) if candidate.version <= version => version,
                _ if candidate.record.withdrawn => candidate.version,
                Some(_) => return Ok(()), // taken back by a Campaign its caller was allowed again
                None => {
                    let mut record = candidate.record.clone();
                    record.withdrawn = true;
                    match client.set_data(&candidate_path, &record::encode(&record), Some(candidate.version)).await {
                        Ok(Some(stat)) => {
                            marked = Some(stat.version);
                            watch.poke();
                        }
                        Ok(None) => return Ok(()),
                        Err(BadVersion) => {}
                        Err(err) => return Err(err.into()),
                    }
                    continue;
                }
            };
            if state.record.leader.as_ref().is_some_and(|l| ours(&l.candidate_id, l.lease_id)) {
                let mut record: ElectionRecord = state.record.clone();
                record.deposed = Some(Deposition {
                    candidate_id: key.candidate_id.as_str().to_owned(),
                    lease_id: key.lease_id,
                    reason: DeposeReason::Transferred,
                    target: None,
                });
                record.leader = None;
                match client.set_data(&election_path, &record::encode(&record), Some(state.version)).await {
                    Ok(Some(_)) => {
                        tracing::info!(election = %key.election, candidate = %key.candidate_id, "leader deposed: its rights were withdrawn");
                        deposition_seen = Some(tokio::time::Instant::now());
                        watch.poke();
                    }
                    Ok(None) => return Ok(()),
                    Err(BadVersion) => {}
                    Err(err) => return Err(err.into()),
                }
                continue;
            }
            if state.record.deposed.as_ref().is_some_and(|d| ours(&d.candidate_id, d.lease_id)) {
                let grace = candidate.lease_ttl.map_or(Duration::ZERO, watch::deposition_grace);
                let seen = *deposition_seen.get_or_insert_with(tokio::time::Instant::now);
                if seen.elapsed() < grace {
                    tokio::time::sleep_until(seen + grace).await;
                    continue; // read again: the deposition may have completed meanwhile
                }
            }
            // Not the leader, or deposed with its validity over: its end lets nobody act early.
            let mut multi = client.multi();
            multi.add_check_version(&election_path, state.version)?;
            multi.add_delete(&candidate_path, Some(candidate_version))?;
            multi.add_delete(&binding_path, None)?;
            if multi.commit().await?.is_ok() {
                tracing::info!(election = %key.election, candidate = %key.candidate_id, "candidacy withdrawn: its rights were withdrawn");
                watch.poke();
                return Ok(());
            }
        }
        Err(Error::Unavailable)
    }

    /// Acknowledges that candidacy `key` has stopped acting as leader of `term` and stays a
    /// candidate: a deposition of it from `term` completes now (its successor is elected) instead
    /// of after its validity ran out. Succeeds too when the candidacy does not lead `term` any
    /// more (the deposition completed meanwhile).
    ///
    /// # Errors
    /// [`Error::FailedPrecondition`] while it still leads `term` undeposed, or when it is not
    /// a candidate; the lease errors; [`Error::Unavailable`].
    ///
    /// # Cancellation safety
    /// Each write is one compare-and-set request; a cancelled call completed the deposition or
    /// left it to its grace.
    pub async fn step_down(&self, key: &CandidateKey, term: i64) -> Result<()> {
        let client = self.shared.session.client()?;
        let candidate_path = layout::candidate(&key.election, &key.candidate_id);
        // The lease (from memory when attached here: `Elections::authenticate`) and the
        // candidacy in flight at once; judged in this order.
        let (lease, own) = tokio::join!(self.authenticate(key), own_candidate(&client, &candidate_path, key.lease_id));
        lease?;
        own?;
        for attempt in 0..MAX_ATTEMPTS {
            // The cached state first: the write is a compare-and-set of the record's version,
            // so a stale cache costs a failed write, never a wrong one; then read afresh.
            let (watch, state) =
                if attempt == 0 { self.state(&key.election).await? } else { self.fresh_state(&key.election).await? };
            let ours = |id: &str, lease_id: i64| id == key.candidate_id.as_str() && lease_id == key.lease_id;
            let deposed_here = state.record.term == term
                && state.record.deposed.as_ref().is_some_and(|d| ours(&d.candidate_id, d.lease_id));
            if attempt == 0 && !deposed_here {
                continue; // the cache may lag: judge only on a fresh read
            }
            if state.record.term != term {
                return Ok(()); // that term is over
            }
            if let Some(leader) = &state.record.leader
                && ours(&leader.candidate_id, leader.lease_id)
            {
                return Err(Error::FailedPrecondition(STILL_LEADS));
            }
            let Some(deposed) = state.record.deposed.clone().filter(|d| ours(&d.candidate_id, d.lease_id)) else {
                return Ok(()); // deposed and succeeded already
            };
            let decision = state.successor(&deposed);
            if attempt == 0 && decision == state::Decision::Vacate {
                continue; // nobody eligible in the cache: make sure on a fresh read
            }
            if watch::write(&client, &key.election, &state, decision).await.is_some() {
                tracing::debug!(election = %key.election, candidate = %key.candidate_id, term, "deposition acknowledged");
                watch.poke();
                return Ok(());
            }
        }
        Err(Error::Unavailable)
    }

    /// Changes the leader's value; only the leader of `term` may.
    ///
    /// # Errors
    /// [`Error::FailedPrecondition`] when the key does not lead `term`, plus the lease errors.
    pub async fn proclaim(&self, key: &CandidateKey, term: i64, value: &[u8]) -> Result<()> {
        let client = self.shared.session.client()?;
        let not_leader = Error::FailedPrecondition(NOT_LEADER_OF_TERM);
        let candidate_path = layout::candidate(&key.election, &key.candidate_id);
        // From memory when the lease is attached here (see `Elections::authenticate`); first,
        // so that a refused call reads nothing more.
        self.authenticate(key).await?;
        for _ in 0..MAX_ATTEMPTS {
            // The election record and the candidacy in flight at once (one round trip); the
            // transaction below writes only while both are still as read.
            let (leads, candidate) = tokio::join!(check_leads(&client, key, term), client.get_data(&candidate_path));
            let election_version = leads?;
            let Some((data, stat)) = candidate? else { return Err(not_leader) };
            let mut record: CandidateRecord = record::decode(&data)?;
            record.value_hex = crate::id::hex(value);
            // Written only while the election record still names this leader of `term`.
            let mut multi = client.multi();
            multi.add_check_version(&layout::election(&key.election), election_version)?;
            multi.add_set_data(&candidate_path, &record::encode(&record), Some(stat.version))?;
            match multi.commit().await? {
                Ok(_) => return Ok(()),
                // The election or the candidacy changed: look again (a deposition is then seen
                // by `check_leads`, a vanished candidacy by the read).
                Err(OpFailed { .. }) => continue,
            }
        }
        Err(Error::Unavailable)
    }

    /// The state of election `name` as this instance follows it (started on first use).
    ///
    /// # Errors
    /// [`Error::Unavailable`] when it cannot be read in time; [`Error::LimitReached`] when it
    /// is not followed yet and `max_watched_elections` others are.
    pub async fn state(&self, name: &Name) -> Result<(Arc<ElectionWatch>, Arc<ElectionState>)> {
        let watch = self.shared.registry.get(&self.shared, name)?;
        let mut receiver = watch.state.clone();
        let state = tokio::time::timeout(LOAD_TIMEOUT, receiver.wait_for(|s| s.generation != 0))
            .await
            .map_err(|_| Error::Unavailable)?
            .map_err(|_| Error::ShuttingDown)?
            .clone();
        Ok((watch, state))
    }

    /// Observes the leadership of `name`: its current term and leader, then each change (see
    /// [`observe`]).
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the election cannot be read in time,
    /// [`Error::ShuttingDown`], [`Error::LimitReached`] as for [`Elections::state`].
    ///
    /// # Cancellation safety
    /// Safe to cancel: it only reads (the election stays followed while an observation of it
    /// or another user lasts).
    pub async fn observe(&self, name: &Name) -> Result<Observation> {
        let (watch, _) = self.state(name).await?;
        Ok(Observation::new(watch))
    }

    /// Like [`Elections::state`], but read after this call began: the watch re-reads the
    /// election record and candidate list first (a few reads), so decisions taken on it do not
    /// lag changes made through other instances.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when it cannot be read in time; [`Error::LimitReached`] as for
    /// [`Elections::state`].
    pub async fn fresh_state(&self, name: &Name) -> Result<(Arc<ElectionWatch>, Arc<ElectionState>)> {
        let watch = self.shared.registry.get(&self.shared, name)?;
        let request = watch.poke();
        let mut receiver = watch.state.clone();
        let state = tokio::time::timeout(LOAD_TIMEOUT, receiver.wait_for(|s| s.generation != 0 && s.poked >= request))
            .await
            .map_err(|_| Error::Unavailable)?
            .map_err(|_| Error::ShuttingDown)?
            .clone();
        Ok((watch, state))
    }

    /// Hands leadership of `name` over: to `target`, or the next eligible candidate. With
    /// `from`, only if it is the leader; with `term` non-zero, only in that term. Returns the
    /// new leader once elected.
    ///
    /// # Errors
    /// [`Error::FailedPrecondition`] (no leader, `from` is not it, wrong term, target unknown,
    /// ineligible or already leading), [`Error::Unavailable`].
    pub async fn transfer(
        &self,
        name: &Name,
        target: Option<&Name>,
        from: Option<&CandidateKey>,
        term: i64,
    ) -> Result<LeaderView> {
        let client = self.shared.session.client()?;
        if let Some(from) = from {
            // Enough: the deposition written below is a compare-and-set of a record that names
            // `from` as the leader (see `Elections::authenticate`).
            self.authenticate(from).await?;
        }
        let (watch, state) = self.fresh_state(name).await?;
        let Some((leader, _)) = state.leader() else {
            return Err(Error::FailedPrecondition(NO_LEADER));
        };
        if from.is_some_and(|f| f.candidate_id.as_str() != leader.candidate_id || f.lease_id != leader.lease_id) {
            return Err(Error::FailedPrecondition(NOT_LEADER));
        }
        if term != 0 && term != state.record.term {
            return Err(Error::FailedPrecondition(NOT_CURRENT_TERM));
        }
        let next = match target {
            Some(target) => state
                .candidates
                .get(target.as_str())
                .map(Arc::as_ref)
                .filter(|c| c.eligible() && c.id != leader.candidate_id),
            None => state.best_eligible(Some(&leader.candidate_id)),
        }
        .ok_or(Error::FailedPrecondition(NO_TRANSFER_TARGET))?;
        let mut record: ElectionRecord = state.record.clone();
        record.deposed = Some(Deposition {
            candidate_id: leader.candidate_id.clone(),
            lease_id: leader.lease_id,
            reason: DeposeReason::Transferred,
            target: Some(next.id.clone()),
        });
        record.leader = None;
        record.yielded = Some(Yielded { candidate_id: leader.candidate_id.clone(), lease_id: leader.lease_id });
        let (old_term, next_id) = (state.record.term, next.id.clone());
        // Without the leader's acknowledgement the successor waits for its validity to run out.
        let wait = TRANSFER_TIMEOUT
            + state
                .candidates
                .get(&leader.candidate_id)
                .and_then(|c| c.lease_ttl)
                .map_or(Duration::ZERO, watch::deposition_grace);
        let path = layout::election(name);
        match client.set_data(&path, &record::encode(&record), Some(state.version)).await {
            Ok(Some(_)) => {}
            Ok(None) => return Err(NoNode.into()),
            Err(BadVersion) => return Err(Error::FailedPrecondition(LEADERSHIP_CHANGED)),
            Err(err) => return Err(err.into()),
        }
        watch.poke();
        let mut receiver = watch.state.clone();
        let elected = tokio::time::timeout(
            wait,
            receiver.wait_for(|s| s.generation != 0 && s.record.term > old_term && s.record.leader.is_some()),
        )
        .await
        .map_err(|_| Error::Unavailable)?
        .map_err(|_| Error::ShuttingDown)?
        .clone();
        let leader = leader_view(&elected).ok_or(Error::Unavailable)?;
        if leader.candidate_id != next_id {
            tracing::info!(election = %name, wanted = %next_id, got = %leader.candidate_id, "transfer went elsewhere");
        }
        Ok(leader)
    }

    /// One page of the candidates of `name` in election order (priority, then the earliest):
    /// the first `size` whose order key (`(priority, czxid)`) is greater than `after` (from the
    /// first when `None`), with the policy and term, and the order key to continue after when
    /// more candidates follow. Positions are those in the whole election order.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    ///
    /// # Cancellation safety
    /// Read-only: safe to cancel.
    pub async fn candidates(&self, name: &Name, after: Option<(i32, i64)>, size: usize) -> Result<CandidatesPage> {
        let (_, state) = self.state(name).await?;
        let leader = state.leader().map(|(l, _)| l.candidate_id.clone());
        let ordered = state.ordered();
        let start = after.map_or(0, |after| ordered.partition_point(|c| (c.record.priority, c.czxid) <= after));
        let rest = ordered.get(start..).unwrap_or_default();
        let page = rest.get(..size).unwrap_or(rest);
        let next = if rest.len() > page.len() { page.last().map(|c| (c.record.priority, c.czxid)) } else { None };
        let candidates = page
            .iter()
            .enumerate()
            .map(|(i, c)| CandidateInfo {
                candidate_id: c.id.clone(),
                value: c.record.value(),
                priority: c.record.priority,
                health: c.health.clone(),
                eligible: c.eligible(),
                lease_id: c.record.lease_id,
                position: u32::try_from(start + i).unwrap_or(u32::MAX),
                leader: leader.as_deref() == Some(c.id.as_str()),
            })
            .collect();
        Ok(CandidatesPage { candidates, preempt: state.record.preempt, term: state.record.term, next })
    }
}

/// One page of an election's candidates ([`Elections::candidates`]).
#[derive(Clone, Debug)]
pub struct CandidatesPage {
    /// The page's candidates, in election order.
    pub candidates: Vec<CandidateInfo>,
    /// The election's preemption policy.
    pub preempt: bool,
    /// The current term.
    pub term: i64,
    /// The order key (`(priority, czxid)`) of the page's last candidate, when more follow.
    pub next: Option<(i32, i64)>,
}

/// Creates the election with `preempt` (off when unspecified), to be called for an election
/// seen missing (a create that fails because the election exists still takes a zxid); when
/// it was created meanwhile, an explicit policy must match its. A new election starts at the tenant's term floor ([`record::TermFloor`]), checked unchanged in the creating
/// transaction: an election removed by the cleanup ([`cleanup`]) and created again continues
/// its terms above its old ones, never repeating one.
async fn ensure_election(client: &Zk, acls: Acls<'_>, name: &Name, preempt: Option<bool>) -> Result<()> {
    let path = layout::election(name);
    let persistent = CreateMode::Persistent.with_acls(acls);
    for _ in 0..MAX_ATTEMPTS {
        let (floor, floor_version) = term_floor(client).await?;
        let record = ElectionRecord { preempt: preempt.unwrap_or(false), term: floor, ..Default::default() };
        let mut multi = client.multi();
        multi.add_check_version(layout::ELECTIONS, floor_version)?;
        multi.add_create(&path, &record::encode(&record), &persistent)?;
        multi.add_create(&layout::candidates(name), &[], &persistent)?;
        match multi.commit().await? {
            Ok(_) => return Ok(()),
            // Created meanwhile by another Campaign.
            Err(OpFailed { index: 1, error: NodeExists }) => match election_policy(client, name).await? {
                Some(existing) => return check_policy(existing, preempt),
                None => continue, // and removed again since
            },
            // The floor moved (an election was removed): again.
            Err(OpFailed { index: 0, error: BadVersion }) => continue,
            Err(OpFailed { error, .. }) => return Err(error.into()),
        }
    }
    Err(Error::Unavailable)
}

/// The tenant's term floor and the version of the directory that holds it.
///
/// # Errors
/// [`Error::Internal`] when the directory holds something else than a floor (written behind
/// zkcoord's back): no election can be created safely then.
async fn term_floor(client: &Zk) -> Result<(i64, i32)> {
    let (data, stat) = client.get_data(layout::ELECTIONS).await?.ok_or(NoNode)?;
    let floor = record::TermFloor::decode(&data).ok_or_else(|| Error::Internal("undecodable term floor".into()))?;
    Ok((floor.term_floor, stat.version))
}

/// The preemption policy of election `name`; `None` if it does not exist.
async fn election_policy(client: &Zk, name: &Name) -> Result<Option<bool>> {
    let Some((data, _)) = client.get_data(&layout::election(name)).await? else { return Ok(None) };
    let existing: ElectionRecord = record::decode(&data)?;
    Ok(Some(existing.preempt))
}

/// Checks a Campaign's `wanted` policy (`None`: any) against an election's `existing` one.
fn check_policy(existing: bool, wanted: Option<bool>) -> Result<()> {
    match wanted {
        Some(wanted) if wanted != existing => Err(Error::FailedPrecondition(OTHER_PREEMPT_POLICY)),
        _ => Ok(()),
    }
}

/// The version of the candidate znode, if it is bound to `lease_id`.
async fn own_candidate(client: &Zk, path: &str, lease_id: i64) -> Result<i32> {
    let not_a_candidate = || Error::FailedPrecondition(NOT_A_CANDIDATE);
    let (data, stat) = client.get_data(path).await?.ok_or_else(not_a_candidate)?;
    // A znode that is no candidate record (written behind zkcoord's back) is no candidacy.
    if !record::decode::<CandidateRecord>(&data).is_ok_and(|record| record.lease_id == lease_id) {
        return Err(not_a_candidate());
    }
    Ok(stat.version)
}

/// Checks that `key` leads `term` now; returns the election record's version, for a write that
/// must happen only while that holds.
async fn check_leads(client: &Zk, key: &CandidateKey, term: i64) -> Result<i32> {
    let not_leader = Error::FailedPrecondition(NOT_LEADER_OF_TERM);
    let path = layout::election(&key.election);
    let Some((data, stat)) = client.get_data(&path).await? else { return Err(not_leader) };
    let record: ElectionRecord = record::decode(&data)?;
    match record.leader {
        Some(leader)
            if leader.candidate_id == key.candidate_id.as_str()
                && leader.lease_id == key.lease_id
                && record.term == term =>
        {
            Ok(stat.version)
        }
        _ => Err(not_leader),
    }
}
