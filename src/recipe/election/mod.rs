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
};

pub use self::{
    leadership::Leadership,
    observe::{Observation, Observed},
};
use self::{
    leadership::Leaderships,
    record::{CandidateRecord, DeposeReason, Deposition, ElectionRecord, Yielded},
    state::ElectionState,
    watch::{ElectionWatch, Registry},
};
use crate::{
    error::{
        CANDIDACY_CHANGED, CANDIDATE_ID_TAKEN, Error, LEADERSHIP_CHANGED, NO_LEADER, NO_TRANSFER_TARGET,
        NOT_A_CANDIDATE, NOT_CURRENT_TERM, NOT_LEADER, NOT_LEADER_OF_TERM, OTHER_PREEMPT_POLICY, Result, STILL_LEADS,
        TAKEN_OVER,
    },
    recipe::{health::Health, instance::Incarnation, lease},
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
    shutdown: CancellationToken,
    registry: Registry,
    leaderships: Leaderships,
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
    /// The election recipe for the instance `me`.
    pub fn new(session: ZkSession, me: Incarnation, shutdown: CancellationToken) -> Self {
        let leaderships = Leaderships::new(session.clone());
        let shared = Arc::new(ElectionContext { session, me, shutdown, registry: Registry::default(), leaderships });
        tokio::spawn(cleanup::run(shared.clone()));
        Self { shared }
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
                ElectionSummary { name, candidates: state.candidates.len(), has_leader: state.leader().is_some() }
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
    /// [`Error::Unavailable`].
    ///
    /// # Cancellation safety
    /// The candidacy is created in one transaction; a cancelled call either created it (it
    /// then lives with its lease, like any candidacy whose stream closed) or did nothing.
    pub async fn campaign(&self, request: CampaignRequest) -> Result<Campaign> {
        let client = self.shared.session.client()?;
        let key = &request.key;
        // The caller's lease and secret first: a refused call writes nothing (no election
        // znodes made for a caller without a lease).
        let mut verified = Some(lease::read_verified(&client, key.lease_id, &key.secret).await?);
        ensure_election(&client, self.shared.session.acls(), &key.election, request.preempt).await?;
        let candidate_path = layout::candidate(&key.election, &key.candidate_id);
        let binding_path = layout::binding(key.lease_id, &layout::candidacy_binding(&key.election, &key.candidate_id));
        let binding_data = record::candidacy_binding(&key.election, &key.candidate_id).encode();
        let record = CandidateRecord {
            lease_id: key.lease_id,
            priority: request.priority,
            value_hex: crate::id::hex(&request.value),
            stream: Some(self.shared.me.name.clone()),
        };
        let data = record::encode(&record);
        let persistent = CreateMode::Persistent.with_acls(self.shared.session.acls());
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
            match multi.commit().await? {
                Ok(_) => {
                    // A create inside a multi reports no usable stat: read the zxid back (a
                    // candidacy already gone again counts as "anything after this is news").
                    written_zxid = Some(client.check_stat(&candidate_path).await?.map_or(0, |stat| stat.mzxid));
                    break;
                }
                Err(OpFailed { index: 0, .. }) => continue, // the lease changed: verify again
                Err(OpFailed { index: 1, error: NoNode }) => {
                    // The election was removed (nobody left in it) since it was ensured: again.
                    ensure_election(&client, self.shared.session.acls(), &key.election, request.preempt).await?;
                    continue;
                }
                Err(OpFailed { index: 1, error: NodeExists }) => {
                    // Taking back an existing candidacy.
                    let Some((existing, stat)) = client.get_data(&candidate_path).await? else { continue };
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
        let watch = self.shared.registry.get(&self.shared, &key.election);
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
        // The three reads are in flight at once (one round trip), and judged in this order
        // (the lease and its secret first) before anything is written. With a term, the
        // election record must still be the one that says so when the candidacy is deleted.
        let (lease, version, leads) = tokio::join!(
            lease::read_verified(&client, key.lease_id, &key.secret),
            own_candidate(&client, &candidate_path, key.lease_id),
            async { if term != 0 { check_leads(&client, key, term).await.map(Some) } else { Ok(None) } },
        );
        lease?;
        let (version, leads) = (version?, leads?);
        let binding_path = layout::binding(key.lease_id, &layout::candidacy_binding(&key.election, &key.candidate_id));
        let mut multi = client.multi();
        if let Some(election_version) = leads {
            multi.add_check_version(&layout::election(&key.election), election_version)?;
        }
        multi.add_delete(&candidate_path, Some(version))?;
        multi.add_delete(&binding_path, None)?;
        match multi.commit().await? {
            Ok(_) => Ok(()),
            Err(OpFailed { index: 0, .. }) if leads.is_some() => Err(Error::FailedPrecondition(NOT_LEADER_OF_TERM)),
            Err(OpFailed { .. }) => Err(Error::FailedPrecondition(CANDIDACY_CHANGED)),
        }
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
        // Both reads in flight at once; judged in this order.
        let (lease, own) = tokio::join!(
            lease::read_verified(&client, key.lease_id, &key.secret),
            own_candidate(&client, &candidate_path, key.lease_id)
        );
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
        lease::read_verified(&client, key.lease_id, &key.secret).await?;
        let not_leader = Error::FailedPrecondition(NOT_LEADER_OF_TERM);
        let candidate_path = layout::candidate(&key.election, &key.candidate_id);
        for _ in 0..MAX_ATTEMPTS {
            let election_version = check_leads(&client, key, term).await?;
            let Some((data, stat)) = client.get_data(&candidate_path).await? else { return Err(not_leader) };
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
    /// [`Error::Unavailable`] when it cannot be read in time.
    pub async fn state(&self, name: &Name) -> Result<(Arc<ElectionWatch>, Arc<ElectionState>)> {
        let watch = self.shared.registry.get(&self.shared, name);
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
    /// [`Error::ShuttingDown`].
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
    /// [`Error::Unavailable`] when it cannot be read in time.
    pub async fn fresh_state(&self, name: &Name) -> Result<(Arc<ElectionWatch>, Arc<ElectionState>)> {
        let watch = self.shared.registry.get(&self.shared, name);
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
            lease::read_verified(&client, from.lease_id, &from.secret).await?;
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

/// Creates the election with `preempt` (off when unspecified) unless it exists; an explicit
/// policy must match an existing election's. An existing election costs one read. A new one
/// starts at the tenant's term floor ([`record::TermFloor`]), checked unchanged in the creating
/// transaction: an election removed by the cleanup ([`cleanup`]) and created again continues
/// its terms above its old ones, never repeating one.
async fn ensure_election(client: &Zk, acls: Acls<'_>, name: &Name, preempt: Option<bool>) -> Result<()> {
    let path = layout::election(name);
    let persistent = CreateMode::Persistent.with_acls(acls);
    for _ in 0..MAX_ATTEMPTS {
        if let Some((data, _)) = client.get_data(&path).await? {
            let existing: ElectionRecord = record::decode(&data)?;
            return match preempt {
                Some(wanted) if wanted != existing.preempt => Err(Error::FailedPrecondition(OTHER_PREEMPT_POLICY)),
                _ => Ok(()),
            };
        }
        let (floor, floor_version) = term_floor(client).await?;
        let record = ElectionRecord { preempt: preempt.unwrap_or(false), term: floor, ..Default::default() };
        let mut multi = client.multi();
        multi.add_check_version(layout::ELECTIONS, floor_version)?;
        multi.add_create(&path, &record::encode(&record), &persistent)?;
        multi.add_create(&layout::candidates(name), &[], &persistent)?;
        match multi.commit().await? {
            Ok(_) => return Ok(()),
            // The floor moved (an election was removed), or someone else created it: again.
            Err(OpFailed { index: 0, error: BadVersion } | OpFailed { index: 1, error: NodeExists }) => continue,
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
