//! What ZooKeeper stores about a shard group (JSON).
//!
//! * `/shards/<group>` holds the [`GroupRecord`]: the shard count, the drained member ids and
//!   the table as runs of equal slots — `[first, last, state, owner, epoch, target]`, state 0
//!   unassigned, 1 owned, 2 handing off; `owner`/`target` index `owners`
//!   (`4294967295` for none); epoch [`super::table::NEW`] for slots this version assigned. A
//!   sticky, contiguous assignment ([`super::assign`]) keeps the runs few: a few bytes per member,
//!   not per shard.
//! * `/shards/<group>/members/<member>` holds each [`MemberRecord`], bound to its lease.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::table::{Owner, Slot, Table};
use crate::error::{Error, Result};

/// Encoded group records larger than this are refused (ZooKeeper's default limit is 1 MiB).
pub const MAX_RECORD_BYTES: usize = 1_000_000;

const UNASSIGNED: u8 = 0;
const OWNED: u8 = 1;
const HANDING_OFF: u8 = 2;
const NONE: u32 = u32::MAX;

/// A group's record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    /// The number of shards.
    pub shards: u32,
    /// Drained member ids.
    #[serde(default)]
    pub drained: Vec<String>,
    /// The memberships the runs refer to: `[member, lease]`.
    #[serde(default)]
    pub owners: Vec<(String, i64)>,
    /// The table, as runs of equal slots.
    #[serde(default)]
    pub runs: Vec<(u32, u32, u8, u32, u64, u32)>,
}

/// A member's record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// The lease the membership is bound to.
    pub lease_id: i64,
    /// Its weight.
    pub weight: u32,
    /// Its labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Set by Leave: it gets no shards and its membership ends once it owns none.
    #[serde(default)]
    pub leaving: bool,
}

impl GroupRecord {
    /// The record of `table`.
    pub fn of(table: &Table) -> Self {
        let mut runs: Vec<(u32, u32, u8, u32, u64, u32)> = Vec::new();
        for (shard, slot) in table.slots.iter().enumerate() {
            let (state, owner, epoch, target) = match *slot {
                Slot::Unassigned => (UNASSIGNED, NONE, 0, NONE),
                Slot::Owned { owner, epoch } => (OWNED, owner, epoch, NONE),
                Slot::HandingOff { owner, epoch, target } => (HANDING_OFF, owner, epoch, target),
            };
            let shard = shard as u32;
            match runs.last_mut() {
                Some(run) if (run.2, run.3, run.4, run.5) == (state, owner, epoch, target) && run.1 + 1 == shard => {
                    run.1 = shard;
                }
                _ => runs.push((shard, shard, state, owner, epoch, target)),
            }
        }
        Self {
            shards: table.slots.len() as u32,
            drained: table.drained.iter().cloned().collect(),
            owners: table.owners.iter().map(|o| (o.member.clone(), o.lease_id)).collect(),
            runs,
        }
    }

    /// The table this record describes, epochs resolved against `mzxid` (the version's zxid).
    ///
    /// # Errors
    /// [`Error::Internal`] for a record zkcoord did not write (runs that do not cover the
    /// shards exactly, owners out of range).
    pub fn table(&self, mzxid: u64) -> Result<Table> {
        let bad = || Error::Internal(format!("undecodable shard group record ({} shards)", self.shards));
        let mut slots = Vec::with_capacity(self.shards as usize);
        let owners = self.owners.len() as u32;
        for &(first, last, state, owner, epoch, target) in &self.runs {
            if first as usize != slots.len() || last < first || last >= self.shards {
                return Err(bad());
            }
            let slot = match state {
                UNASSIGNED => Slot::Unassigned,
                OWNED if owner < owners => Slot::Owned { owner, epoch },
                HANDING_OFF if owner < owners && (target < owners || target == NONE) => {
                    Slot::HandingOff { owner, epoch, target }
                }
                _ => return Err(bad()),
            };
            slots.extend(std::iter::repeat_n(slot, (last - first + 1) as usize));
        }
        if slots.len() != self.shards as usize {
            return Err(bad());
        }
        let mut table = Table {
            drained: self.drained.iter().cloned().collect(),
            owners: self
                .owners
                .iter()
                .map(|(member, lease_id)| Owner { member: member.clone(), lease_id: *lease_id })
                .collect(),
            slots,
        };
        table.resolve(mzxid);
        Ok(table)
    }
}

/// Encodes a record as JSON.
///
/// # Errors
/// [`Error::FailedPrecondition`] when the group record would exceed [`MAX_RECORD_BYTES`].
pub fn encode<T: Serialize>(record: &T) -> Result<Vec<u8>> {
    let data = serde_json::to_vec(record).map_err(|e| Error::Internal(format!("encoding a shard record: {e}")))?;
    if data.len() > MAX_RECORD_BYTES {
        return Err(Error::FailedPrecondition("the shard group's table is too fragmented to store"));
    }
    Ok(data)
}

/// Decodes a JSON record.
///
/// # Errors
/// [`Error::Internal`] for data zkcoord did not write.
pub fn decode<T: for<'de> Deserialize<'de>>(data: &[u8]) -> Result<T> {
    serde_json::from_slice(data).map_err(|e| Error::Internal(format!("undecodable shard record: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::shards::table::{Candidate, NEW};

    #[test]
    fn a_table_round_trips_in_few_runs() {
        let members: Vec<Candidate> = (0..4)
            .map(|i| Candidate { owner: Owner { member: format!("m{i}"), lease_id: i }, weight: 1, eligible: true })
            .collect();
        let mut table = Table::new(65_536).plan(&members, |_, _, _| false).expect("assigned");
        table.drained.insert("x".into());
        let record = GroupRecord::of(&table);
        assert_eq!(record.runs.len(), 4);
        assert!(record.runs.iter().all(|r| r.4 == NEW));
        let data = encode(&record).expect("small");
        assert!(data.len() < 400, "{} bytes", data.len());
        let back: GroupRecord = decode(&data).expect("decodes");
        let mut expected = table.clone();
        expected.resolve(77);
        assert_eq!(back.table(77).expect("valid"), expected);
    }

    #[test]
    fn foreign_records_are_refused() {
        for bad in [
            GroupRecord { shards: 2, drained: vec![], owners: vec![], runs: vec![(0, 0, 0, NONE, 0, NONE)] },
            GroupRecord { shards: 2, drained: vec![], owners: vec![], runs: vec![(0, 1, 1, 0, 5, NONE)] },
            GroupRecord { shards: 2, drained: vec![], owners: vec![], runs: vec![(1, 1, 0, NONE, 0, NONE)] },
            GroupRecord { shards: 1, drained: vec![], owners: vec![], runs: vec![(0, 0, 9, NONE, 0, NONE)] },
        ] {
            assert!(bad.table(1).is_err(), "{bad:?}");
        }
    }
}
