//! Which elections a lease leads, as this instance can *prove* it now: what a lease's
//! heartbeat answer lists, and so what its owner may act on (see `KeepAliveResponse` in
//! `proto/zkcoord/v1/lease.proto` for the client rule).
//!
//! # Timing argument
//!
//! One view per election record, proven current as [`crate::zk::proven`] describes: a
//! heartbeat answered at `c` lists a leadership only from a view current as of a proof begun
//! after `c − window` (`window ≤ 1 s`). So if the leadership was withdrawn (a deposition, or a
//! resignation) by a write committed at `D`, no answer given after `D + window` lists it, and
//! the owner, trusting an answer only until its heartbeat's send time (before `c`) + ttl,
//! stops acting before `D + window + ttl`. Electors complete a deposition without the leader's
//! acknowledgement only after they have seen it for `ttl + window` plus a margin
//! (`watch::deposition_grace`), which they can see no earlier than `D`.
//!
//! # Cost
//!
//! No ZooKeeper request per heartbeat: one read when a view is first used or its watch fired
//! (a leadership change), one watch per election that a lease homed here campaigns in.

use super::record::{self, ElectionRecord};
use crate::{
    validate::Name,
    zk::{Proof, ZkSession, layout, proven::ProvenViews},
};

/// A leadership held by a lease, proven current.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leadership {
    /// The election.
    pub election: String,
    /// The leading candidate.
    pub candidate_id: String,
    /// The term.
    pub term: i64,
    /// The term's fencing token.
    pub token: u64,
}

/// The leadership views of one instance (per tenant): each election's record and its `mzxid`
/// (the token while it names a leader), proven current.
#[derive(Debug)]
pub struct Leaderships {
    views: ProvenViews<(ElectionRecord, u64)>,
}

impl Leaderships {
    /// Views over `session`.
    pub fn new(session: ZkSession) -> Self {
        Self { views: ProvenViews::new(session, |data, mzxid| Ok((record::decode(data)?, mzxid))) }
    }

    /// The leaderships of lease `lease_id` among `elections`, as this instance can prove them
    /// on `proof` (the session proof the heartbeat's answer stands on): `None` when it cannot
    /// tell for one of them (a read failed, a view is not current within the proof's window),
    /// so that an answer never says "not the leader" without knowing. Costs a ZooKeeper read
    /// only for a view used for the first time or whose watch fired.
    ///
    /// # Cancellation safety
    /// Safe to cancel: a cancelled read leaves the view to be read again.
    pub async fn of(&self, lease_id: i64, elections: &[Name], proof: Proof) -> Option<Vec<Leadership>> {
        let mut led = Vec::new();
        for election in elections {
            let current = match self.views.current(&layout::election(election), proof).await {
                Ok(current) => current,
                Err(err) => {
                    tracing::debug!(election = %election, error = %err, "cannot tell an election's leader for a heartbeat");
                    return None;
                }
            };
            if let Some(current) = current
                && let (record, token) = &*current
                && let Some(leader) = &record.leader
                && leader.lease_id == lease_id
            {
                led.push(Leadership {
                    election: election.as_str().to_owned(),
                    candidate_id: leader.candidate_id.clone(),
                    term: record.term,
                    token: *token,
                });
            }
        }
        Some(led)
    }
}
