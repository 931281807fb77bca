//! What ZooKeeper stores about an election and its candidates (JSON).
//!
//! The election record is written **only** when leadership changes (a leader elected, or a
//! leader deposed), so while it names a leader its `mzxid` is the zxid of the write that
//! elected that leader: the term's fencing token. zxids only grow, so tokens grow across terms,
//! instances, restarts, and even re-creation of the election.
//!
//! A candidacy's binding `/leases/<id>/e~<election>~<candidate>` holds a
//! [`BindingRecord`] ([`candidacy_binding`]): it owns the candidate znode, which so ends with
//! the lease.

use serde::{Deserialize, Serialize};

use crate::{
    error::{Error, Result},
    recipe::lease::binding::{BindingRecord, Owned, Shown},
    validate::Name,
    zk::layout,
};

/// The kind TimeToLive shows a candidacy as (named by the election, with the candidate id).
pub const BINDING_KIND: &str = "candidacy";

/// The record of the binding that ties candidacy `candidate_id` in `election` to its lease
/// (named [`layout::candidacy_binding`]): it owns the candidate znode.
pub fn candidacy_binding(election: &Name, candidate_id: &Name) -> BindingRecord {
    BindingRecord {
        owns: vec![Owned::Node { path: layout::candidate(election, candidate_id) }],
        shows: vec![Shown { kind: BINDING_KIND.into(), name: election.to_string(), id: candidate_id.to_string() }],
    }
}

/// Why a leader was deposed while its lease lives on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeposeReason {
    /// A better-priority candidate became eligible (preemption on).
    Preempted,
    /// Its lease reported NOT_SERVING.
    Unhealthy,
    /// Transfer.
    Transferred,
}

/// A deposition in progress: the successor is elected once the deposed leader acknowledged,
/// its candidacy ended, or its validity can no longer hold (see `watch::deposition_grace`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deposition {
    /// The deposed leader's candidate id.
    pub candidate_id: String,
    /// Its lease.
    pub lease_id: i64,
    /// Why.
    pub reason: DeposeReason,
    /// Who is to lead next, if chosen (Transfer, preemption); else the best eligible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// The sitting leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderRecord {
    /// Its candidate id.
    pub candidate_id: String,
    /// Its lease.
    pub lease_id: i64,
    /// When the term began, Unix epoch milliseconds.
    pub elected_unix_ms: i64,
}

/// `/elections/<name>`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElectionRecord {
    /// Preemption policy, chosen by the first campaign.
    pub preempt: bool,
    /// The current (or last) term; before the first leader, the term floor the election was
    /// created with ([`TermFloor`]: 0 unless an election was removed before).
    pub term: i64,
    /// The leader, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<LeaderRecord>,
    /// A deposition waiting for the deposed leader to be told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deposed: Option<Deposition>,
    /// The last leader transferred away: it does not preempt its successor for as long as it
    /// campaigns with the same lease, so that an operator's Transfer (a rolling upgrade) is not
    /// undone at once by preemption. Campaigning again with a new lease (the upgraded process)
    /// lifts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yielded: Option<Yielded>,
}

impl ElectionRecord {
    /// Elects candidate `candidate_id` of lease `lease_id` for the next term, at
    /// `elected_unix_ms`, ending any deposition: the record an elector's Elect and a
    /// resignation electing its successor both write.
    pub fn elect(&mut self, candidate_id: String, lease_id: i64, elected_unix_ms: i64) {
        self.term += 1;
        self.leader = Some(LeaderRecord { candidate_id, lease_id, elected_unix_ms });
        self.deposed = None;
    }
}

/// A candidacy (candidate id and lease) that yielded leadership through Transfer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Yielded {
    /// Its candidate id.
    pub candidate_id: String,
    /// Its lease.
    pub lease_id: i64,
}

/// `/elections/<name>/candidates/<id>`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CandidateRecord {
    /// The lease the candidacy is bound to.
    pub lease_id: i64,
    /// 0 (best) to 1000.
    pub priority: i32,
    /// The candidate's value, hex-encoded.
    pub value_hex: String,
    /// The incarnation of the instance holding the candidate's Campaign stream, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// How long its lease must have been seen NOT_SERVING before it is deposed as leader for
    /// it, in milliseconds (health hysteresis; 0: at once).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unhealthy_for_ms: u64,
    /// How long its lease must have been seen eligible before it may preempt a leader, in
    /// milliseconds (0: at once).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub healthy_for_ms: u64,
    /// Set by zkcoord when its client's rights to campaign were withdrawn (`authz_file`
    /// reload): never elected again, deleted once it can no longer act as leader
    /// (`Elections::withdraw`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub withdrawn: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl CandidateRecord {
    /// See [`CandidateRecord::unhealthy_for_ms`].
    pub fn unhealthy_for(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.unhealthy_for_ms)
    }

    /// See [`CandidateRecord::healthy_for_ms`].
    pub fn healthy_for(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.healthy_for_ms)
    }

    /// The value's bytes.
    pub fn value(&self) -> Vec<u8> {
        (0..self.value_hex.len() / 2)
            .filter_map(|i| u8::from_str_radix(self.value_hex.get(2 * i..2 * i + 2)?, 16).ok())
            .collect()
    }
}

/// The data of the elections directory `/elections`: the **term floor**, the largest term of
/// any election the cleanup removed ([`super::cleanup`]). An election created (or created
/// again after its removal) starts its terms above it, so an election's terms only grow, even
/// across its removal. Empty data (a directory no cleanup wrote yet) is a floor of 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TermFloor {
    /// No election of this tenant had a larger term when it was removed.
    pub term_floor: i64,
}

impl TermFloor {
    /// Parses the directory's data; `None` when it is neither empty nor a floor (written behind
    /// zkcoord's back): then no election may be removed.
    pub fn decode(data: &[u8]) -> Option<Self> {
        if data.is_empty() {
            return Some(Self::default());
        }
        serde_json::from_slice(data).ok()
    }
}

/// Encodes a record as znode data.
pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    serde_json::to_vec(record).unwrap_or_default()
}

/// Decodes znode data.
///
/// # Errors
/// [`Error::Internal`] when the data is not such a record.
pub fn decode<T: for<'de> Deserialize<'de>>(data: &[u8]) -> Result<T> {
    serde_json::from_slice(data).map_err(|e| Error::Internal(format!("undecodable election data: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn term_floors_decode_from_empty_or_their_own_data_only() {
        assert_eq!(TermFloor::decode(b""), Some(TermFloor { term_floor: 0 }));
        let floor = TermFloor { term_floor: 7 };
        assert_eq!(TermFloor::decode(&encode(&floor)), Some(floor));
        assert_eq!(TermFloor::decode(b"garbage"), None, "no removal on a floor zkcoord did not write");
    }

    #[test]
    fn values_round_trip_through_hex() {
        let value = vec![0u8, 1, 127, 128, 255];
        let record = CandidateRecord {
            lease_id: 1,
            priority: 0,
            value_hex: crate::id::hex(&value),
            stream: None,
            unhealthy_for_ms: 1500,
            healthy_for_ms: 0,
            withdrawn: false,
        };
        let json = String::from_utf8(encode(&record)).expect("utf-8");
        assert!(json.contains(r#""unhealthy_for_ms":1500"#) && !json.contains("healthy_for_ms\":0"), "{json}");
        assert!(!json.contains("withdrawn"), "records of older instances stay as they were: {json}");
        let decoded: CandidateRecord = decode(&encode(&record)).expect("decodes");
        assert_eq!(decoded.value(), value);
        let election = ElectionRecord {
            preempt: true,
            term: 3,
            leader: None,
            deposed: Some(Deposition {
                candidate_id: "a".into(),
                lease_id: 2,
                reason: DeposeReason::Transferred,
                target: Some("b".into()),
            }),
            yielded: Some(Yielded { candidate_id: "a".into(), lease_id: 2 }),
        };
        assert_eq!(decode::<ElectionRecord>(&encode(&election)).expect("decodes"), election);
    }

    /// A candidacy's binding means the same to the lease as the name-only binding of versions
    /// before the binding record, and older versions, which go by the name, still find the
    /// candidate from it.
    #[test]
    fn candidacy_bindings_own_their_candidate_as_older_versions_read_them() {
        use crate::recipe::lease::binding;
        let (election, candidate) = (Name::parse("e", "e-1").expect("valid"), Name::parse("c", "c:1").expect("valid"));
        let name = layout::candidacy_binding(&election, &candidate);
        let record = candidacy_binding(&election, &candidate);
        assert_eq!(binding::decode(&name, &record.encode()).expect("decodes"), Some(record.clone()));
        assert_eq!(binding::decode(&name, b"").expect("decodes"), Some(record));
    }
}
