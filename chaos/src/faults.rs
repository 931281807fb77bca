//! The faults a run injects, and the schedule a seed makes of them.

use std::{fmt, str::FromStr, time::Duration};

use crate::rng::Rng;

/// One kind of fault. The names (`Display`/`FromStr`) are what `--faults` takes and what the
/// history records; ZooKeeper faults start with `zk-`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// kill -9 of a zkcoord instance, restarted after a while (same port).
    InstanceKill,
    /// SIGSTOP of a zkcoord instance past its ZooKeeper session timeout, then SIGCONT.
    InstanceFreeze,
    /// A zkcoord instance cut off from ZooKeeper (its client links stall).
    InstanceZkCut,
    /// SIGSTOP of a client process past its ttl, then SIGCONT.
    ClientPause,
    /// A client↔instance connection that stalls silently (one or both directions).
    ClientLinkStall,
    /// kill -9 of the ZooKeeper leader, restarted after a while.
    ZkLeaderKill,
    /// kill -9 of a ZooKeeper follower, restarted after a while.
    ZkFollowerKill,
    /// A ZooKeeper follower cut off from its quorum peers; zkcoord instances stay connected.
    ZkFollowerIsolate,
    /// Election.Transfer to the next eligible candidate.
    Transfer,
    /// A better-priority candidate joins for a few seconds (preemption).
    Preempt,
    /// A candidate (the leader, mostly) or a shard member reports NOT_SERVING for a while.
    HealthFlip,
    /// Election.Transfer while the leader's client process is paused.
    TransferWhilePaused,
    /// Preemption while the leader's client process is paused.
    PreemptWhilePaused,
}

/// Every kind, in a fixed order.
pub const ALL: [FaultKind; 13] = [
    FaultKind::InstanceKill,
    FaultKind::InstanceFreeze,
    FaultKind::InstanceZkCut,
    FaultKind::ClientPause,
    FaultKind::ClientLinkStall,
    FaultKind::ZkLeaderKill,
    FaultKind::ZkFollowerKill,
    FaultKind::ZkFollowerIsolate,
    FaultKind::Transfer,
    FaultKind::Preempt,
    FaultKind::HealthFlip,
    FaultKind::TransferWhilePaused,
    FaultKind::PreemptWhilePaused,
];

impl FaultKind {
    /// The kind's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::InstanceKill => "instance-kill",
            Self::InstanceFreeze => "instance-freeze",
            Self::InstanceZkCut => "instance-zk-cut",
            Self::ClientPause => "client-pause",
            Self::ClientLinkStall => "client-link-stall",
            Self::ZkLeaderKill => "zk-leader-kill",
            Self::ZkFollowerKill => "zk-follower-kill",
            Self::ZkFollowerIsolate => "zk-follower-isolate",
            Self::Transfer => "transfer",
            Self::Preempt => "preempt",
            Self::HealthFlip => "health-flip",
            Self::TransferWhilePaused => "transfer-while-paused",
            Self::PreemptWhilePaused => "preempt-while-paused",
        }
    }

    /// How long the fault lasts (ms range) before it is healed.
    fn hold_ms(self) -> (u64, u64) {
        match self {
            Self::InstanceKill => (1000, 4000),
            // Past the 2 s session timeout.
            Self::InstanceFreeze => (3000, 5000),
            Self::InstanceZkCut => (3000, 6000),
            // Past the largest ttl (3 s).
            Self::ClientPause => (4000, 6000),
            Self::ClientLinkStall => (3000, 8000),
            Self::ZkLeaderKill | Self::ZkFollowerKill => (1000, 3000),
            // Past syncLimit (2 s): the follower notices and stops serving.
            Self::ZkFollowerIsolate => (4000, 8000),
            Self::Transfer => (0, 0),
            Self::Preempt => (2000, 5000),
            Self::HealthFlip => (2000, 4000),
            Self::TransferWhilePaused | Self::PreemptWhilePaused => (3000, 5000),
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FaultKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        ALL.iter().copied().find(|k| k.name() == s).ok_or_else(|| {
            format!("unknown fault {s:?}; known: {}", ALL.iter().map(|k| k.name()).collect::<Vec<_>>().join(", "))
        })
    }
}

/// One planned fault: its kind, how long it lasts, the gap after it, and random bits for
/// choosing its target at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Planned {
    /// The kind.
    pub kind: FaultKind,
    /// How long before it heals.
    pub hold: Duration,
    /// Pause after healing.
    pub gap: Duration,
    /// Random bits for target choices.
    pub pick: u64,
}

/// The schedule of `seed` over `kinds`: rounds of every kind in a shuffled order (so every
/// kind comes up once per round), `count` faults in all.
pub fn schedule(seed: u64, kinds: &[FaultKind], count: usize) -> Vec<Planned> {
    let mut rng = Rng::new(seed ^ 0x00C0_FFEE);
    let mut out = Vec::with_capacity(count);
    while out.len() < count && !kinds.is_empty() {
        let mut round = kinds.to_vec();
        for i in (1..round.len()).rev() {
            round.swap(i, rng.below(i + 1));
        }
        for kind in round {
            let (lo, hi) = kind.hold_ms();
            out.push(Planned {
                kind,
                hold: Duration::from_millis(rng.range(lo, hi)),
                gap: Duration::from_millis(rng.range(500, 2500)),
                pick: rng.next_u64(),
            });
        }
    }
    out.truncate(count);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_the_same_schedule_and_every_kind_comes_up() {
        let a = schedule(7, &ALL, 40);
        assert_eq!(a, schedule(7, &ALL, 40));
        assert_ne!(a, schedule(8, &ALL, 40));
        for kind in ALL {
            assert!(a[..ALL.len()].iter().any(|p| p.kind == kind), "{kind} in the first round");
            assert_eq!(kind.name().parse::<FaultKind>(), Ok(kind));
        }
    }
}
