//! Observe: the leadership changes of one election as this instance reads them, numbered.
//!
//! An [`Observation`] follows the states its election's watch publishes
//! ([`ElectionWatch::subscribe`]): the current one, then each later one, in order. It reports a
//! state only when it is current (read on a live connection) and differs from the last one it
//! reported in term or leader view, so that no change is reported twice; the reports are
//! numbered 1, 2, 3, ... per observation. A consumer that falls more than the watch's state
//! history behind skips ahead to the latest state: the intermediate changes are lost, but no
//! term is reported twice and the numbers stay consecutive (`Changes` holds the rule, unit
//! tested without ZooKeeper).

use std::sync::Arc;

use tokio::sync::{
    broadcast::{self, error::RecvError},
    watch,
};

use super::{LeaderView, leader_view, state::ElectionState, watch::ElectionWatch};

/// One reported change: the term and its leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// Numbers the reports of one observation: 1, 2, 3, ...
    pub sequence: u64,
    /// The term.
    pub term: i64,
    /// The leader, if the election has one.
    pub leader: Option<LeaderView>,
}

/// The leadership changes of one election, from the state current when it began; the election
/// stays followed by this instance while the observation lasts.
#[derive(Debug)]
pub struct Observation {
    /// Keeps the election's watch (and its task) running.
    _watch: Arc<ElectionWatch>,
    feed: Feed,
}

impl Observation {
    /// Observes the election `watch` follows, from its current state on.
    pub(super) fn new(watch: Arc<ElectionWatch>) -> Self {
        let (states, current) = watch.subscribe();
        let feed = Feed::new(states, watch.state.clone(), current);
        Self { _watch: watch, feed }
    }

    /// The next change; `None` once the election's watch has stopped (the instance is shutting
    /// down).
    ///
    /// # Cancellation safety
    /// Cancellation safe: a cancelled call loses no change (it only ever waits for the next
    /// published state, which stays queued for the following call).
    pub async fn next(&mut self) -> Option<Observed> {
        self.feed.next().await
    }
}

/// The states published for one election and what was reported of them.
#[derive(Debug)]
struct Feed {
    /// Every published state, from the subscription on.
    states: broadcast::Receiver<Arc<ElectionState>>,
    /// The latest published state, to skip ahead to after falling behind.
    latest: watch::Receiver<Arc<ElectionState>>,
    /// A state received and not judged yet.
    pending: Option<Arc<ElectionState>>,
    changes: Changes,
}

impl Feed {
    fn new(
        states: broadcast::Receiver<Arc<ElectionState>>,
        latest: watch::Receiver<Arc<ElectionState>>,
        current: Arc<ElectionState>,
    ) -> Self {
        Self { states, latest, pending: Some(current), changes: Changes::default() }
    }

    /// See [`Observation::next`].
    async fn next(&mut self) -> Option<Observed> {
        loop {
            // Judged at once (no await in between): a cancelled call loses nothing.
            if let Some(state) = self.pending.take()
                && let Some(observed) = self.changes.judge(&state)
            {
                return Some(observed);
            }
            self.pending = Some(match self.states.recv().await {
                Ok(state) => state,
                // Too far behind: skip to the latest (no term is reported twice).
                Err(RecvError::Lagged(_)) => self.latest.borrow().clone(),
                Err(RecvError::Closed) => return None,
            });
        }
    }
}

/// What one observation has reported so far: the rule that numbers and de-duplicates changes.
#[derive(Debug, Default)]
struct Changes {
    /// The number of the last report.
    sequence: u64,
    /// The `sequence` of the latest state judged: states not above it are older.
    seen: u64,
    /// The term and leader last reported.
    last: Option<(i64, Option<LeaderView>)>,
}

impl Changes {
    /// The report `state` makes, if any: none for a state not newer than one already judged
    /// (received after skipping ahead), one that is not current, or one that changes neither
    /// the term nor the leader view.
    fn judge(&mut self, state: &ElectionState) -> Option<Observed> {
        if state.sequence <= self.seen {
            return None;
        }
        self.seen = state.sequence;
        if state.generation == 0 {
            return None;
        }
        let current = (state.record.term, leader_view(state));
        if self.last.as_ref() == Some(&current) {
            return None;
        }
        self.sequence += 1;
        let observed = Observed { sequence: self.sequence, term: current.0, leader: current.1.clone() };
        self.last = Some(current);
        Some(observed)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::recipe::{
        election::{
            record::{CandidateRecord, ElectionRecord, LeaderRecord},
            state::CandidateView,
        },
        health::{Health, HealthStatus},
    };

    /// State number `sequence` of an election in `term`, led by `leader` (`None`: no leader),
    /// read on connection `generation` (0: not current).
    fn state(sequence: u64, term: i64, leader: Option<&str>, generation: u64) -> Arc<ElectionState> {
        let candidates: BTreeMap<String, Arc<CandidateView>> = ["a", "b"]
            .into_iter()
            .zip(1..)
            .map(|(id, lease_id)| {
                let view = CandidateView {
                    id: id.into(),
                    record: CandidateRecord { lease_id, ..Default::default() },
                    czxid: lease_id,
                    mzxid: lease_id,
                    version: 0,
                    health: Some(Health { status: HealthStatus::Serving, checks: vec![] }),
                    lease_ttl: None,
                    lease_version: None,
                    health_seen: None,
                };
                (id.to_owned(), Arc::new(view))
            })
            .collect();
        let leader = leader.map(|id| LeaderRecord {
            candidate_id: id.into(),
            lease_id: candidates[id].record.lease_id,
            elected_unix_ms: 0,
        });
        Arc::new(ElectionState {
            exists: true,
            record: ElectionRecord { term, leader, ..Default::default() },
            candidates,
            generation,
            sequence,
            ..Default::default()
        })
    }

    fn told(observed: Option<Observed>) -> Option<(u64, i64, Option<String>)> {
        observed.map(|o| (o.sequence, o.term, o.leader.map(|l| l.candidate_id)))
    }

    #[test]
    fn reports_are_numbered_and_never_repeat_a_term_and_leader() {
        let mut changes = Changes::default();
        assert_eq!(told(changes.judge(&state(3, 1, Some("a"), 1))), Some((1, 1, Some("a".into()))));
        assert_eq!(told(changes.judge(&state(4, 1, Some("a"), 1))), None, "nothing changed");
        assert_eq!(told(changes.judge(&state(5, 1, Some("a"), 0))), None, "not current");
        assert_eq!(told(changes.judge(&state(6, 1, Some("a"), 2))), None, "current again, unchanged");
        assert_eq!(told(changes.judge(&state(7, 1, None, 2))), Some((2, 1, None)), "deposed");
        assert_eq!(told(changes.judge(&state(8, 2, Some("b"), 2))), Some((3, 2, Some("b".into()))));
    }

    #[test]
    fn states_older_than_one_judged_are_skipped() {
        let mut changes = Changes::default();
        assert_eq!(told(changes.judge(&state(10, 4, Some("b"), 1))), Some((1, 4, Some("b".into()))));
        for older in 1..=10 {
            assert_eq!(told(changes.judge(&state(older, 3, Some("a"), 1))), None, "state {older}");
        }
        assert_eq!(told(changes.judge(&state(11, 5, Some("a"), 1))), Some((2, 5, Some("a".into()))));
    }

    /// A consumer that fell behind the broadcast skips to the latest state, then ignores the
    /// older states still queued; the numbers stay consecutive.
    #[tokio::test]
    async fn a_lagging_observation_skips_ahead_to_the_latest_state() {
        let (states, receiver) = broadcast::channel(2);
        let (latest, latest_rx) = watch::channel(state(1, 1, Some("a"), 1));
        let mut feed = Feed::new(receiver, latest_rx, state(1, 1, Some("a"), 1));
        assert_eq!(told(feed.next().await), Some((1, 1, Some("a".into()))));
        for (sequence, term) in (2..=6).zip(2..) {
            let published = state(sequence, term, Some(if term % 2 == 0 { "b" } else { "a" }), 1);
            latest.send_replace(published.clone());
            let _ = states.send(published);
        }
        // States 2 to 4 were dropped from the history: the latest (6, term 6) comes instead, and
        // 5 and 6, still queued, are older or the same.
        assert_eq!(told(feed.next().await), Some((2, 6, Some("b".into()))));
        latest.send_replace(state(7, 7, Some("a"), 1));
        let _ = states.send(state(7, 7, Some("a"), 1));
        assert_eq!(told(feed.next().await), Some((3, 7, Some("a".into()))));
        drop(states);
        assert_eq!(feed.next().await, None, "the watch stopped");
    }
}
