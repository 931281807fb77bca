//! An election as one instance sees it, and the decisions derived from it (pure logic, unit
//! tested): election order, eligibility, what the elector should write, and each candidate's
//! status.

use std::{collections::BTreeMap, sync::Arc};

use super::record::{CandidateRecord, DeposeReason, Deposition, ElectionRecord, LeaderRecord};
use crate::recipe::health::Health;

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
}

impl CandidateView {
    /// Eligible for leadership: its lease exists and does not report NOT_SERVING.
    pub fn eligible(&self) -> bool {
        self.health.as_ref().is_some_and(Health::is_eligible)
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

    /// The best eligible candidate that may preempt: not the candidacy that yielded
    /// leadership through Transfer (see [`ElectionRecord::yielded`]).
    fn best_preempting(&self) -> Option<&CandidateView> {
        let yielded = |c: &CandidateView| {
            self.record.yielded.as_ref().is_some_and(|y| y.candidate_id == c.id && y.lease_id == c.record.lease_id)
        };
        self.ordered().into_iter().find(|c| c.eligible() && !yielded(c))
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

    /// What the elector should write. `validity_over(candidate)` tells whether a deposed
    /// leader whose candidacy lives on can no longer act as leader: the deposition has been
    /// seen for longer than its lease's ttl plus the proof window and a margin (see
    /// `watch::deposition_grace`). Before that, only its acknowledgement (Resign) or the end
    /// of its candidacy completes a deposition.
    pub fn decide(&self, validity_over: impl Fn(&CandidateView) -> bool) -> Decision {
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
                if !candidate.eligible() {
                    return Decision::Depose(Deposition {
                        candidate_id: leader.candidate_id.clone(),
                        lease_id: leader.lease_id,
                        reason: DeposeReason::Unhealthy,
                        target: None,
                    });
                }
                if self.record.preempt
                    && let Some(best) = self.best_preempting()
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
            record: CandidateRecord { lease_id: czxid, priority, value_hex: String::new(), stream: None },
            czxid,
            mzxid: czxid,
            version: 0,
            health: health.map(|status| Health { status, checks: vec![] }),
            lease_ttl: Some(std::time::Duration::from_secs(1)),
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
        assert_eq!(s.decide(|_| false), Decision::Elect("c".into()));
        assert_eq!(s.position("a"), 1);
        assert_eq!(s.position("b"), 2);
        let s = state(vec![candidate("b", 1, 1, OK), candidate("a", 0, 3, OK)], Some("b"), false);
        assert_eq!((s.position("b"), s.position("a")), (0, 1), "the sitting leader is ahead of everyone");
    }

    #[test]
    fn unhealthy_candidates_are_skipped_and_unhealthy_leaders_deposed() {
        let s =
            state(vec![candidate("a", 0, 1, Some(HealthStatus::NotServing)), candidate("b", 1, 2, OK)], None, false);
        assert_eq!(s.decide(|_| false), Decision::Elect("b".into()));
        let s = state(
            vec![candidate("a", 0, 1, Some(HealthStatus::NotServing)), candidate("b", 1, 2, OK)],
            Some("a"),
            false,
        );
        assert!(matches!(s.decide(|_| false), Decision::Depose(Deposition { reason: DeposeReason::Unhealthy, .. })));
        let degraded = Some(HealthStatus::Degraded);
        let s = state(vec![candidate("a", 0, 1, degraded), candidate("b", 1, 2, OK)], Some("a"), false);
        assert_eq!(s.decide(|_| false), Decision::Nothing, "DEGRADED stays eligible");
    }

    #[test]
    fn preemption_only_when_on() {
        let candidates = || vec![candidate("a", 0, 2, OK), candidate("b", 1, 1, OK)];
        assert_eq!(state(candidates(), Some("b"), false).decide(|_| false), Decision::Nothing);
        let decision = state(candidates(), Some("b"), true).decide(|_| false);
        assert!(
            matches!(&decision, Decision::Depose(d) if d.reason == DeposeReason::Preempted && d.target.as_deref() == Some("a")),
            "{decision:?}"
        );
    }

    #[test]
    fn a_transferred_leader_does_not_preempt_back_until_it_campaigns_anew() {
        let mut s = state(vec![candidate("a", 0, 2, OK), candidate("b", 1, 1, OK)], Some("b"), true);
        s.record.yielded = Some(Yielded { candidate_id: "a".into(), lease_id: 2 });
        assert_eq!(s.decide(|_| false), Decision::Nothing, "a handed over to b on purpose");
        Arc::make_mut(s.candidates.get_mut("a").expect("a")).record.lease_id = 7;
        assert!(
            matches!(s.decide(|_| false), Decision::Depose(d) if d.reason == DeposeReason::Preempted),
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
        assert_eq!(s.decide(|_| false), Decision::Nothing, "its validity may still hold");
        assert_eq!(s.decide(|_| true), Decision::Elect("b".into()));
        s.candidates.remove("a");
        assert_eq!(s.decide(|_| false), Decision::Elect("b".into()), "a gone: it cannot act");
    }

    #[test]
    fn a_vanished_leader_is_replaced_at_once() {
        let mut s = state(vec![candidate("a", 0, 1, OK), candidate("b", 1, 2, OK)], Some("a"), false);
        s.candidates.remove("a");
        assert_eq!(s.decide(|_| false), Decision::Elect("b".into()));
        s.candidates.remove("b");
        assert_eq!(s.decide(|_| false), Decision::Vacate);
    }
}
