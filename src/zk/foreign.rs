//! Znodes in zkcoord's namespace that zkcoord cannot read as its own: undecodable data, or a
//! name zkcoord never gives (written behind its back, e.g. while `zookeeper_auth` is off, or by
//! a newer version). Every reader skips them — they never wedge an election, a lock queue, a
//! shard group or a lease list — logs them and counts them here, per [`Kind`], for the metric
//! `zkcoord_undecodable_znodes_total{kind}`.

use std::sync::atomic::{AtomicU64, Ordering};

/// What a skipped znode was read as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A child of `/leases` (Lease.List, the janitor).
    Lease,
    /// A child of an election's `candidates` directory.
    Candidate,
    /// A node in a lock key's queue.
    LockNode,
    /// A child of a shard group's `members` directory.
    ShardMember,
}

impl Kind {
    /// Every kind, in label order.
    pub const ALL: [Kind; 4] = [Kind::Lease, Kind::Candidate, Kind::LockNode, Kind::ShardMember];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Lease => "lease",
            Kind::Candidate => "candidate",
            Kind::LockNode => "lock_node",
            Kind::ShardMember => "shard_member",
        }
    }
}

/// Counts of skipped znodes of one instance (all tenants), by [`Kind`].
#[derive(Debug, Default)]
pub struct Skipped {
    counts: [AtomicU64; Kind::ALL.len()],
}

impl Skipped {
    /// Logs and counts one skip of the znode at `path` (relative to the tenant's root), read as
    /// `kind`, for `why`.
    pub fn skip(&self, kind: Kind, path: &str, why: &dyn std::fmt::Display) {
        tracing::warn!(kind = kind.label(), znode = path, error = %why, "skipping a znode that zkcoord did not write");
        self.counts[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// How many znodes of `kind` were skipped so far.
    pub fn count(&self, kind: Kind) -> u64 {
        self.counts[kind as usize].load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_kind() {
        let skipped = Skipped::default();
        skipped.skip(Kind::Lease, "/leases/1", &"bad");
        skipped.skip(Kind::Lease, "/leases/2", &"bad");
        skipped.skip(Kind::ShardMember, "/shards/g/members/m", &"bad");
        let counts: Vec<u64> = Kind::ALL.iter().map(|k| skipped.count(*k)).collect();
        assert_eq!(counts, [2, 0, 0, 1]);
    }
}
