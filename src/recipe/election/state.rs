//! An election as one instance sees it, and the decisions derived from it (pure logic, unit
//! tested): election order, eligibility, what the elector should write, and each candidate's
//! status.
//!
//! # Health hysteresis
//!
//! A candidacy may ask that its lease's health hold for a while before it counts: NOT_SERVING
//! for `unhealthy_for` before it deposes the candidate as leader, eligible for `healthy_for`
//! before the candidate may preempt. How long a state has held is measured by each elector on
//! its own monotonic clock, from when *it* read the lease record showing that state
//! ([`HealthSeen`]): no clock of another machine is trusted, and the state is the stored one,
//! which the lease's home writes and a claim carries over, so it does not matter which instance
//! the client heartbeats to or whether it moves. An elector notices a change it missed between
//! two reads by the record's `eligibility_changes` count, which every change of eligibility
//! bumps. Hence:
//! * **never early**: an elector acts only after it has itself seen the state for the whole
//!   duration, and it cannot see a state before it was written; its write is a transaction
//!   that also checks the lease record's version it judged on, so a change written meanwhile
//!   makes the write fail and the elector read again;
//! * **bounded lateness**: any elector that follows the election when the state is written sees
//!   it within a watch delivery and acts when the duration has run out on its clock. An
//!   instance that starts following later (a restart) counts from its first read: later,
//!   never earlier. Every instance holding a candidate's Campaign stream follows the election.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use tokio::time::Instant;

use super::record::{CandidateRecord, DeposeReason, Deposition, ElectionRecord, LeaderRecord};
use crate::recipe::health::Health;

/// What an elector last saw of a candidate's lease health: its eligibility and the lease
/// record's `eligibility_changes` (`None`: no lease record), and since when (its own clock).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthSeen {
    /// The eligibility and the change count; `None` while the lease record is missing.
    pub key: Option<(bool, u64)>,
    /// When this elector first read the record showing `key`.
    pub since: Instant,
}

impl HealthSeen {
    /// The state seen now, `key`, given what was seen before: the same state keeps its start.
    pub fn next(previous: Option<HealthSeen>, key: Option<(bool, u64)>, now: Instant) -> HealthSeen {
        match previous {
            Some(previous) if previous.key == key => previous,
            _ => HealthSeen { key, since: now },
        }
    }
}

/// One candidate with what the instance knows of its lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CandidateView {
    /// The candidate id.
    pub id: String,
    /// Its record.
    pub record: CandidateRecord,
    /// Creation zxid of its znode: ties in priority go to the earliest.
    pub czxid: i64,
    /// zxid of the last write of its record.
    pub mzxid: i64,
    /// Version of its record (an election names it leader only while this still holds).
    pub version: i32,
    /// Its lease's health (`None` when the lease record is gone or unknown).
    pub health: Option<Health>,
    /// Its lease's granted ttl (`None` when the lease record is gone or unknown).
    pub lease_ttl: Option<std::time::Duration>,
    /// The version of its lease record that `health` was read from.
    pub lease_version: Option<i32>,
    /// Since when this elector has seen its lease's health in its current state (see the module
    /// docs); `None`: not read yet.
    pub health_seen: Option<HealthSeen>,
}

impl CandidateView {
    /// Eligible for leadership: its lease exists and does not report NOT_SERVING, and its
    /// candidacy was not withdrawn.
    pub fn eligible(&self) -> bool {
        !self.record.withdrawn && self.healthy()
    }

    /// Its lease exists and does not report NOT_SERVING.
    fn healthy(&self) -> bool {
        self.health.as_ref().is_some_and(Health::is_eligible)
    }

    /// How long, as of `now`, this elector has seen its lease health in its current state.
    fn held_for(&self, now: Instant) -> Duration {
        self.health_seen.map_or(Duration::ZERO, |seen| now.saturating_duration_since(seen.since))
    }

    /// When its current health state will have held for `duration` (`None`: not read yet).
    fn held_at(&self, duration: Duration) -> Option<Instant> {
        self.health_seen.map(|seen| seen.since + duration)
    }

    /// Whether, as leader, it is to be deposed for its health as of `now`: not eligible, for
    /// at least its `unhealthy_for`.
    /// (A withdrawn leader is deposed by `Elections::withdraw`, not for its health.)
    fn unhealthy_long_enough(&self, now: Instant) -> bool {
        !self.healthy() && self.held_for(now) >= self.record.unhealthy_for()
    }

    /// Whether it may preempt as of `now`: eligible, for at least its `healthy_for`.
    fn healthy_long_enough(&self, now: Instant) -> bool {
        self.eligible() && self.held_for(now) >= self.record.healthy_for()
    }
}

/// The published state of one election.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ElectionState {
    /// Whether the election znode exists.
    pub exists: bool,
    /// The election record.
    pub record: ElectionRecord,
    /// Its version (for compare-and-set writes).
    pub version: i32,
    /// The record's mzxid: the fencing token while it names a leader.
    pub token: u64,
    /// The candidates by id; shared between the states that contain the same view, so that
    /// publishing a state (and keeping the last states for Observe streams) copies no
    /// candidate values.
    pub candidates: BTreeMap<String, Arc<CandidateView>>,
    /// The connection generation the state was read on; 0 when it is not current (the
    /// instance is disconnected from ZooKeeper).
    pub generation: u64,
    /// Numbers the states one instance publishes for one election: 1, 2, 3, ...
    pub sequence: u64,
    /// How many re-reads had been asked for (see `ElectionWatch::poke`) when this state's
    /// reading began: a state with `poked >= n` was read after the `n`-th request.
    pub poked: u64,
    /// The candidates directory's `pzxid` when it was listed: every candidate created or
    /// deleted up to that zxid is reflected in `candidates`.
    pub children_pzxid: i64,
}

/// What the elector should write, if anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to do.
    Nothing,
    /// Elect this candidate (a new term).
    Elect(String),
    /// No leader and nobody eligible: record that (keeps the term).
    Vacate,
    /// Depose the sitting leader (phase 1); someone is elected only after it was told.
    Depose(Deposition),
}

impl ElectionState {
    /// Whether candidacy `id` of lease `lease_id` exists with its Campaign stream recorded at
    /// instance `me`.
    pub fn streamed_at(&self, id: &str, lease_id: i64, me: &str) -> bool {
        self.candidates.get(id).is_some_and(|c| c.record.lease_id == lease_id && c.record.stream.as_deref() == Some(me))
    }

    /// Candidates in election order: priority, then the earliest.
    pub fn ordered(&self) -> Vec<&CandidateView> {
        let mut ordered: Vec<&CandidateView> = self.candidates.values().map(Arc::as_ref).collect();
        ordered.sort_by_key(|c| (c.record.priority, c.czxid));
        ordered
    }

    /// The best eligible candidate, other than `except`.
    pub fn best_eligible(&self, except: Option<&str>) -> Option<&CandidateView> {
        self.ordered().into_iter().find(|c| c.eligible() && Some(c.id.as_str()) != except)
    }

    /// The best eligible candidate that may preempt as of `now`: not the candidacy that
    /// yielded leadership through Transfer (see [`ElectionRecord::yielded`]), and eligible for
    /// its `healthy_for` at least.
    fn best_preempting(&self, now: Instant) -> Option<&CandidateView> {
        self.ordered().into_iter().find(|c| c.healthy_long_enough(now) && !self.yielded(c))
    }

    /// Whether `c` is the candidacy that yielded leadership through Transfer.
    fn yielded(&self, c: &CandidateView) -> bool {
        self.record.yielded.as_ref().is_some_and(|y| y.candidate_id == c.id && y.lease_id == c.record.lease_id)
    }

    /// The next moment a health hysteresis runs out that may change [`Self::decide`]'s answer
    /// (the sitting leader's `unhealthy_for`, or the `healthy_for` of a better candidate that
    /// may preempt it), if one lies after `now`: when the elector should decide again.
    pub fn hysteresis_deadline(&self, now: Instant) -> Option<Instant> {
        if self.record.deposed.is_some() {
            return None;
        }
        let (_, leader) = self.leader()?;
        let deposes = (!leader.eligible()).then(|| leader.held_at(leader.record.unhealthy_for())).flatten();
        let preempts = self
            .candidates
            .values()
            .filter(|c| {
                self.record.preempt
                    && c.eligible()
                    && c.record.priority < leader.record.priority
                    && !c.record.healthy_for().is_zero()
                    && !self.yielded(c)
            })
            .filter_map(|c| c.held_at(c.record.healthy_for()));
        deposes.into_iter().chain(preempts).filter(|at| *at > now).min()
    }

    /// The sitting leader's candidate, if it is still a candidate.
    pub fn leader(&self) -> Option<(&LeaderRecord, &CandidateView)> {
        let leader = self.record.leader.as_ref()?;
        let candidate = self.candidates.get(&leader.candidate_id)?;
        (candidate.record.lease_id == leader.lease_id).then_some((leader, candidate))
    }

    /// Number of candidates ahead of `id`: the leader (if it is another), then the eligible
    /// candidates before `id` in election order.
    pub fn position(&self, id: &str) -> u32 {
        let leader = self.leader().map(|(l, _)| l.candidate_id.as_str());
        if leader == Some(id) {
            return 0;
        }
        let ahead = self
            .ordered()
            .into_iter()
            .take_while(|c| c.id != id)
            .filter(|c| c.eligible() && Some(c.id.as_str()) != leader)
            .count()
            + usize::from(leader.is_some());
        u32::try_from(ahead).unwrap_or(u32::MAX)
    }

    /// What the elector should write as of `now`. `validity_over(candidate)` tells whether a
    /// deposed leader whose candidacy lives on can no longer act as leader: the deposition has
    /// been seen for longer than its lease's ttl plus the proof window and a margin (see
    /// `watch::deposition_grace`). Before that, only its acknowledgement (Resign) or the end
    /// of its candidacy completes a deposition. A leader is deposed for its health, and a
    /// better candidate preempts, only once their health held long enough (see the module
    /// docs); an election without a leader elects the best eligible candidate at once.
    pub fn decide(&self, now: Instant, validity_over: impl Fn(&CandidateView) -> bool) -> Decision {
        if !self.exists {
            return Decision::Nothing;
        }
        if let Some(deposed) = &self.record.deposed {
            // Phase 2 follows the deposed leader's acknowledgement (Resign, which writes it), or
            // the end of its candidacy (it resigned, or its lease ended: either way it cannot
            // act as leader any more), or the end of its validity.
            let can_complete = match self.candidates.get(&deposed.candidate_id) {
                None => true,
                Some(candidate) => candidate.record.lease_id != deposed.lease_id || validity_over(candidate),
            };
            return if can_complete { self.successor(deposed) } else { Decision::Nothing };
        }
        match (&self.record.leader, self.leader()) {
            (None, _) => self.best_eligible(None).map_or(Decision::Nothing, |c| Decision::Elect(c.id.clone())),
            // The leader's candidacy ended (resigned, lease expired): it knows, or can no
            // longer act. The next one may be elected at once.
            (Some(_), None) => self.best_eligible(None).map_or(Decision::Vacate, |c| Decision::Elect(c.id.clone())),
            (Some(leader), Some((_, candidate))) => {
                if candidate.unhealthy_long_enough(now) {
                    return Decision::Depose(Deposition {
                        candidate_id: leader.candidate_id.clone(),
                        lease_id: leader.lease_id,
                        reason: DeposeReason::Unhealthy,
                        target: None,
                    });
                }
                if self.record.preempt
                    && let Some(best) = self.best_preempting(now)
                    && best.id != candidate.id
                    && best.record.priority < candidate.record.priority
                {
                    return Decision::Depose(Deposition {
                        candidate_id: leader.candidate_id.clone(),
                        lease_id: leader.lease_id,
                        reason: DeposeReason::Preempted,
                        target: Some(best.id.clone()),
                    });
                }
                Decision::Nothing
            }
        }
    }

    /// The election record that the resignation of its leader `candidate_id` (of lease
    /// `lease_id`) may write in its own transaction, electing its successor at once as the
    /// elector would once the candidacy is gone (`decide`): the record electing the best
    /// eligible other candidate (with that candidate's id and record version, which the
    /// transaction must check unchanged), or naming no leader when nobody is eligible. `None`
    /// when this state does not show it leading undeposed on a live connection: then the
    /// resignation only deletes the candidacy and an elector decides.
    ///
    /// A candidate whose Campaign commits between this view and the transaction is not
    /// considered for this term (a transaction cannot check a directory's children); with
    /// preemption on, a better one then preempts the successor, two-phase, as it would any
    /// leader.
    pub fn succession(
        &self,
        candidate_id: &str,
        lease_id: i64,
        now: Instant,
        elected_unix_ms: i64,
    ) -> Option<(ElectionRecord, Option<(String, i32)>)> {
        let leads =
            self.record.leader.as_ref().is_some_and(|l| l.candidate_id == candidate_id && l.lease_id == lease_id);
        if !self.exists || self.generation == 0 || !leads || self.record.deposed.is_some() {
            return None;
        }
        let mut after = self.clone();
        after.candidates.remove(candidate_id)?;
        let mut record = self.record.clone();
        record.deposed = None;
        match after.decide(now, |_| false) {
            Decision::Elect(id) => {
                let successor = after.candidates.get(&id)?;
                record.elect(id.clone(), successor.record.lease_id, elected_unix_ms);
                Some((record, Some((id, successor.version))))
            }
            Decision::Vacate => {
                record.leader = None;
                Some((record, None))
            }
            Decision::Nothing | Decision::Depose(_) => None,
        }
    }

    /// Who follows a deposed leader: the chosen target if still eligible, else the best
    /// eligible candidate other than the deposed one (which may lead again later).
    pub fn successor(&self, deposed: &Deposition) -> Decision {
        let target =
            deposed.target.as_ref().and_then(|t| self.candidates.get(t)).map(Arc::as_ref).filter(|c| c.eligible());
        match target.or_else(|| self.best_eligible(Some(&deposed.candidate_id))) {
            Some(next) => Decision::Elect(next.id.clone()),
            None => Decision::Vacate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{super::record::Yielded, *};
    use crate::recipe::health::HealthStatus;

    fn candidate(id: &str, priority: i32, czxid: i64, health: Option<HealthStatus>) -> CandidateView {
        CandidateView {
            id: id.into(),
            record: CandidateRecord { lease_id: czxid, priority, ..Default::default() },
            czxid,
            mzxid: czxid,
            version: 0,
            health: health.map(|status| Health { status, checks: vec![] }),
            lease_ttl: Some(std::time::Duration::from_secs(1)),
            lease_version: Some(0),
            health_seen: health
                .map(|status| HealthSeen { key: Some((status != HealthStatus::NotServing, 0)), since: Instant::now() }),
        }
    }

    fn state(candidates: Vec<CandidateView>, leader: Option<&str>, preempt: bool) -> ElectionState {
        let leader = leader.map(|id| {
            let c = candidates.iter().find(|c| c.id == id).expect("leader is a candidate");
            LeaderRecord { candidate_id: id.into(), lease_id: c.record.lease_id, elected_unix_ms: 0 }
        });
        ElectionState {
            exists: true,
            record: ElectionRecord { preempt, term: 1, leader, deposed: None, yielded: None },
            candidates: candidates.into_iter().map(|c| (c.id.clone(), Arc::new(c))).collect(),
            generation: 1,
            ..Default::default()
        }
    }

    const OK: Option<HealthStatus> = Some(HealthStatus::Serving);

    #[test]
    fn best_priority_then_earliest_leads() {
        let s = state(vec![candidate("b", 1, 1, OK), candidate("a", 0, 3, OK), candidate("c", 0, 2, OK)], None, false);
        assert_eq!(s.decide(Instant::now(), |_| false), Decision::Elect("c".into()));
        assert_eq!(s.position("a"), 1);
        assert_eq!(s.position("b"), 2);
        let s = state(vec![candidate("b", 1, 1, OK), candidate("a", 0, 3, OK)], Some("b"), false);
        assert_eq!((s.position("b"), s.position("a")), (0, 1), "the sitting leader is ahead of everyone");
    }

    #[test]
    fn unhealthy_candidates_are_skipped_and_unhealthy_leaders_deposed() {
        let s =
            state(vec![candidate("a", 0, 1, Some(HealthStatus::NotServing)), candidate("b", 1, 2, OK)], None, false);
        assert_eq!(s.decide(Instant::now(), |_| false), Decision::Elect("b".into()));
        let s = state(
            vec![candidate("a", 0, 1, Some(HealthStatus::NotServing)), candidate("b", 1, 2, OK)],
            Some("a"),
            false,
        );
        assert!(matches!(
            s.decide(Instant::now(), |_| false),
            Decision::Depose(Deposition { reason: DeposeReason::Unhealthy, .. })
        ));
        let degraded = Some(HealthStatus::Degraded);
        let s = state(vec![candidate("a", 0, 1, degraded), candidate("b", 1, 2, OK)], Some("a"), false);
        assert_eq!(s.decide(Instant::now(), |_| false), Decision::Nothing, "DEGRADED stays eligible");
    }

    #[test]
    fn preemption_only_when_on() {
        let candidates = || vec![candidate("a", 0, 2, OK), candidate("b", 1, 1, OK)];
        assert_eq!(state(candidates(), Some("b"), false).decide(Instant::now(), |_| false), Decision::Nothing);
        let decision = state(candidates(), Some("b"), true).decide(Instant::now(), |_| false);
        assert!(
            matches!(&decision, Decision::Depose(d) if d.reason == DeposeReason::Preempted && d.target.as_deref() == Some("a")),
            "{decision:?}"
        );
    }

    #[test]
    fn a_transferred_leader_does_not_preempt_back_until_it_campaigns_anew() {
        let mut s = state(vec![candidate("a", 0, 2, OK), candidate("b", 1, 1, OK)], Some("b"), true);
        s.record.yielded = Some(Yielded { candidate_id: "a".into(), lease_id: 2 });
        assert_eq!(s.decide(Instant::now(), |_| false), Decision::Nothing, "a handed over to b on purpose");
        Arc::make_mut(s.candidates.get_mut("a").expect("a")).record.lease_id = 7;
        assert!(
            matches!(s.decide(Instant::now(), |_| false), Decision::Depose(d) if d.reason == DeposeReason::Preempted),
            "a campaigns with a new lease (restarted after its upgrade): it preempts again"
        );
    }

    #[test]
    fn a_deposition_completes_only_once_the_leaders_validity_is_over_or_it_is_gone() {
        let mut s = state(vec![candidate("a", 0, 1, OK), candidate("b", 1, 2, OK)], None, false);
        s.record.deposed = Some(Deposition {
            candidate_id: "a".into(),
            lease_id: 1,
            reason: DeposeReason::Transferred,
            target: Some("b".into()),
        });
        assert_eq!(s.decide(Instant::now(), |_| false), Decision::Nothing, "its validity may still hold");
        assert_eq!(s.decide(Instant::now(), |_| true), Decision::Elect("b".into()));
        s.candidates.remove("a");
        assert_eq!(s.decide(Instant::now(), |_| false), Decision::Elect("b".into()), "a gone: it cannot act");
    }

    #[test]
    fn a_resigning_leader_names_its_successor_as_the_elector_would() {
        let now = Instant::now();
        let mut s =
            state(vec![candidate("a", 0, 1, OK), candidate("b", 2, 2, OK), candidate("c", 1, 3, OK)], Some("a"), false);
        s.generation = 1;
        let (record, check) = s.succession("a", 1, now, 77).expect("a leads");
        assert_eq!(record.term, s.record.term + 1);
        assert_eq!(record.leader, Some(LeaderRecord { candidate_id: "c".into(), lease_id: 3, elected_unix_ms: 77 }));
        assert_eq!(check, Some(("c".into(), 0)), "the successor's record version is checked");
        assert_eq!(s.succession("a", 9, now, 77), None, "another lease's candidacy of that id");
        assert_eq!(s.succession("b", 2, now, 77), None, "not the leader");
        let mut unhealthy = s.clone();
        for id in ["b", "c"] {
            Arc::make_mut(unhealthy.candidates.get_mut(id).expect("a candidate")).health = None;
        }
        let (record, check) = unhealthy.succession("a", 1, now, 77).expect("a leads");
        assert_eq!((record.leader, record.term, check), (None, s.record.term, None), "nobody eligible: no leader");
        let mut deposed = s.clone();
        deposed.record.deposed =
            Some(Deposition { candidate_id: "a".into(), lease_id: 1, reason: DeposeReason::Transferred, target: None });
        assert_eq!(deposed.succession("a", 1, now, 77), None, "a deposition completes its own way");
        s.generation = 0;
        assert_eq!(s.succession("a", 1, now, 77), None, "a view of a lost connection");
    }

    #[test]
    fn a_withdrawn_candidacy_is_never_elected_again() {
        let withdrawn = |mut c: CandidateView| {
            c.record.withdrawn = true;
            c
        };
        let s = state(vec![withdrawn(candidate("a", 0, 1, OK)), candidate("b", 1, 2, OK)], None, false);
        assert_eq!(s.decide(Instant::now(), |_| false), Decision::Elect("b".into()));
        let mut s = state(vec![withdrawn(candidate("a", 0, 1, OK))], None, false);
        assert_eq!(s.decide(Instant::now(), |_| false), Decision::Nothing, "nobody else: no leader");
        s.record.deposed =
            Some(Deposition { candidate_id: "a".into(), lease_id: 1, reason: DeposeReason::Transferred, target: None });
        assert_eq!(s.decide(Instant::now(), |_| true), Decision::Vacate, "its deposition completes without it");
        let s = state(vec![withdrawn(candidate("a", 0, 1, OK))], Some("a"), true);
        assert_eq!(s.decide(Instant::now(), |_| false), Decision::Nothing, "withdraw deposes it, not its health");
    }

    #[test]
    fn a_vanished_leader_is_replaced_at_once() {
        let mut s = state(vec![candidate("a", 0, 1, OK), candidate("b", 1, 2, OK)], Some("a"), false);
        s.candidates.remove("a");
        assert_eq!(s.decide(Instant::now(), |_| false), Decision::Elect("b".into()));
        s.candidates.remove("b");
        assert_eq!(s.decide(Instant::now(), |_| false), Decision::Vacate);
    }

    /// `c` as if this elector had seen its current health state for `held` as of `now`.
    fn seen_for(mut c: CandidateView, held: std::time::Duration, now: Instant) -> CandidateView {
        c.health_seen = c.health_seen.map(|seen| HealthSeen { since: now - held, ..seen });
        c
    }

    #[test]
    fn an_unhealthy_leader_is_deposed_only_once_unhealthy_for_its_unhealthy_for() {
        use std::time::Duration;
        let now = Instant::now() + Duration::from_secs(3600);
        let sick = |held| {
            let mut a = candidate("a", 0, 1, Some(HealthStatus::NotServing));
            a.record.unhealthy_for_ms = 3000;
            seen_for(a, held, now)
        };
        let s = state(vec![sick(Duration::from_secs(1)), candidate("b", 1, 2, OK)], Some("a"), false);
        assert_eq!(s.decide(now, |_| false), Decision::Nothing, "a flap shorter than unhealthy_for");
        assert_eq!(s.hysteresis_deadline(now), Some(now + Duration::from_secs(2)), "decide again when it runs out");
        let s = state(vec![sick(Duration::from_secs(3)), candidate("b", 1, 2, OK)], Some("a"), false);
        assert!(matches!(s.decide(now, |_| false), Decision::Depose(d) if d.reason == DeposeReason::Unhealthy));
        assert_eq!(s.hysteresis_deadline(now), None);
        // Not eligible for a new term meanwhile: an election without a leader skips it.
        let s = state(vec![sick(Duration::from_secs(1)), candidate("b", 1, 2, OK)], None, false);
        assert_eq!(s.decide(now, |_| false), Decision::Elect("b".into()));
    }

    #[test]
    fn a_better_candidate_preempts_only_once_healthy_for_its_healthy_for() {
        use std::time::Duration;
        let now = Instant::now() + Duration::from_secs(3600);
        let recovered = |held| {
            let mut a = candidate("a", 0, 1, OK);
            a.record.healthy_for_ms = 3000;
            seen_for(a, held, now)
        };
        let s = state(vec![recovered(Duration::from_secs(1)), candidate("b", 5, 2, OK)], Some("b"), true);
        assert_eq!(s.decide(now, |_| false), Decision::Nothing, "healthy for less than healthy_for");
        assert_eq!(s.hysteresis_deadline(now), Some(now + Duration::from_secs(2)));
        let s = state(vec![recovered(Duration::from_secs(3)), candidate("b", 5, 2, OK)], Some("b"), true);
        assert!(
            matches!(s.decide(now, |_| false), Decision::Depose(d) if d.reason == DeposeReason::Preempted && d.target.as_deref() == Some("a"))
        );
        // Without a leader it is elected at once: healthy_for delays preemption only.
        let s = state(vec![recovered(Duration::ZERO), candidate("b", 5, 2, OK)], None, true);
        assert_eq!(s.decide(now, |_| false), Decision::Elect("a".into()));
        // Preemption off: nothing to wait for.
        let s = state(vec![recovered(Duration::from_secs(1)), candidate("b", 5, 2, OK)], Some("b"), false);
        assert_eq!(s.hysteresis_deadline(now), None);
    }

    #[test]
    fn a_health_state_keeps_its_start_until_it_changes() {
        let t0 = Instant::now();
        let t1 = t0 + std::time::Duration::from_secs(1);
        let seen = HealthSeen::next(None, Some((false, 1)), t0);
        assert_eq!(HealthSeen::next(Some(seen), Some((false, 1)), t1).since, t0);
        assert_eq!(HealthSeen::next(Some(seen), Some((false, 3)), t1).since, t1, "it changed and back in between");
        assert_eq!(HealthSeen::next(Some(seen), None, t1).since, t1);
    }
}
