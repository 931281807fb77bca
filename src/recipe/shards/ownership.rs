//! Which shards a lease owns, as this instance can *prove* it now: what a lease's heartbeat
//! answer lists, and so what its owner may act on (see `KeepAliveResponse.shards` in
//! `proto/zkcoord/v1/lease.proto`).
//!
//! # Timing argument
//! One view per group record, proven current as [`crate::zk::proven`] describes: a heartbeat
//! answered at `c` lists a shard only from a view current as of a proof begun after
//! `c − window`. A shard is listed only while its slot is `Owned` by the lease's membership; a
//! revocation (the slot becomes `HandingOff`) written at `D` is in no answer given after
//! `D + window`, and the owner trusts the last answer listing it until that heartbeat's send
//! time (before `c`) + ttl. Assigners hand the shard on without a release only after seeing the
//! revocation for [`crate::recipe::lease::validity_grace`] (ttl + window + margin), which they
//! see no earlier than `D`.

use super::record::{self, GroupRecord};
use super::table::Table;
use crate::{
    validate::Name,
    zk::{Proof, ZkSession, layout, proven::ProvenViews},
};

/// The shards of one group a lease owns, proven current.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardOwnership {
    /// The group.
    pub group: String,
    /// The member id the lease owns them as.
    pub member_id: String,
    /// Ranges of consecutive shards owned with one epoch: `(first, last, epoch)`.
    pub ranges: Vec<(u32, u32, u64)>,
}

/// The ownership views of one instance (per tenant).
#[derive(Debug)]
pub struct Ownerships {
    views: ProvenViews<Table>,
}

impl Ownerships {
    /// Views over `session`.
    pub fn new(session: ZkSession) -> Self {
        Self { views: ProvenViews::new(session, |data, mzxid| record::decode::<GroupRecord>(data)?.table(mzxid)) }
    }

    /// The shards lease `lease_id` owns in `groups`, proven on `proof`; `None` when this
    /// instance cannot tell for one of them.
    ///
    /// # Cancellation safety
    /// Safe to cancel.
    pub async fn of(&self, lease_id: i64, groups: &[Name], proof: Proof) -> Option<Vec<ShardOwnership>> {
        let mut owned = Vec::new();
        for group in groups {
            let table = match self.views.current(&layout::shard_group(group), proof).await {
                Ok(table) => table,
                Err(err) => {
                    tracing::debug!(group = %group, error = %err, "cannot tell a group's owners for a heartbeat");
                    return None;
                }
            };
            let Some(table) = table else { continue };
            for owner in table.owners.iter().filter(|o| o.lease_id == lease_id) {
                let mut ranges: Vec<(u32, u32, u64)> = Vec::new();
                for (shard, epoch) in table.owned_by(owner) {
                    match ranges.last_mut() {
                        Some(last) if last.1 + 1 == shard && last.2 == epoch => last.1 = shard,
                        _ => ranges.push((shard, shard, epoch)),
                    }
                }
                if !ranges.is_empty() {
                    owned.push(ShardOwnership {
                        group: group.as_str().to_owned(),
                        member_id: owner.member.clone(),
                        ranges,
                    });
                }
            }
        }
        Some(owned)
    }
}
