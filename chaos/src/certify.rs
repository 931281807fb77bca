//! "May I act now, with which token, until when": the one place the workload decides whether
//! it is owner. Everything else (recording, writing to the store) follows this decision.
//!
//! The client rule (README, *The client rule*): act as owner only while the lease's last
//! confirmed heartbeat covered it, until that heartbeat's send time + ttl.
//! `LeaderElector::leadership()` is that for a leadership (listed by the last confirmed
//! answer), `LockGuard::valid_until()` for a lock hold (covered by every confirmed heartbeat
//! of its lease), `ShardMember::owned()` for shards (listed by the last confirmed answer, and
//! not released).
//!
//! The broken mode (`--broken`, for testing the checker) ignores validity: once certified, it
//! keeps certifying until `grace` past the last real confirmation's end (a broken shard member
//! also ignores Revoke events: it keeps acting on shards the library released).

use std::{
    collections::{BTreeMap, HashSet},
    time::Duration,
};

use tokio::time::Instant;
use zkcoord_client::{LeaderElector, LeaseKeeper, LockGuard, ShardMember};

/// A passing check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Certificate {
    /// The term (0 for a lock hold).
    pub term: i64,
    /// The fencing token to write with (for a lock hold: one key's, see [`Certifier::hold`]).
    pub token: u64,
    /// When the check passed.
    pub checked: Instant,
    /// Until when acting is allowed.
    pub valid_until: Instant,
}

/// Certifies one owner's leadership or holds, remembering the last certificate.
#[derive(Debug, Default)]
pub struct Certifier {
    broken_grace: Option<Duration>,
    last: Option<Certificate>,
}

impl Certifier {
    /// An honest certifier.
    pub fn honest() -> Self {
        Self::default()
    }

    /// A broken one: keeps certifying the last certificate until `grace` past its end.
    pub fn broken(grace: Duration) -> Self {
        Self { broken_grace: Some(grace), last: None }
    }

    /// Whether this candidate may act as leader now.
    pub fn leadership(&mut self, lease: &LeaseKeeper, elector: &LeaderElector) -> Option<Certificate> {
        let now = Instant::now();
        let _ = lease; // the elector applies the lease's heartbeats itself
        let honest = elector.leadership().map(|leadership| Certificate {
            term: leadership.term,
            token: leadership.fencing_token,
            checked: now,
            valid_until: leadership.valid_until,
        });
        self.apply(now, honest)
    }

    /// Whether this holder may act on the keys of `guard` now (every key's token is
    /// `guard.token(key)`; the certificate's `token` is the first key's).
    pub fn hold(&mut self, lease: &LeaseKeeper, guard: &LockGuard) -> Option<Certificate> {
        let now = Instant::now();
        let token = guard.tokens().values().next().copied().unwrap_or_default();
        let _ = lease; // the guard follows its lease's heartbeats itself
        let honest = guard.valid_until().map(|until| Certificate { term: 0, token, checked: now, valid_until: until });
        self.apply(now, honest)
    }

    /// Forgets the last certificate (a new hold or candidacy begins).
    pub fn reset(&mut self) {
        self.last = None;
    }

    fn apply(&mut self, now: Instant, honest: Option<Certificate>) -> Option<Certificate> {
        match (honest, self.broken_grace, self.last) {
            (Some(c), _, _) => {
                self.last = Some(c);
                Some(c)
            }
            (None, Some(grace), Some(last)) if now < last.valid_until + grace => {
                Some(Certificate { checked: now, valid_until: last.valid_until + grace, ..last })
            }
            _ => None,
        }
    }
}

/// How a shard member treats its shards: which of them it acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardMode {
    /// Stops working on a shard as soon as a Revoke event for it is handled (and never works on
    /// it again); the library releases it when the next event is asked for.
    Prompt,
    /// Ignores Revoke events and never releases: acts on whatever [`ShardMember::owned`] lists,
    /// so its ownerships end only by validity (the server's timeout path).
    Deaf,
    /// Broken (for testing the checker): ignores Revoke events and validity, acting on each
    /// `(shard, epoch)` it owned until `grace` past the end of its last real validity.
    Broken(Duration),
}

/// A passing check of one shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardCertificate {
    /// The shard.
    pub shard: u32,
    /// Its epoch (the fencing token).
    pub epoch: u64,
    /// When the check passed.
    pub checked: Instant,
    /// Until when acting on it is allowed.
    pub valid_until: Instant,
}

/// Certifies one membership's shards, remembering revocations (and, broken, past validity).
#[derive(Debug)]
pub struct ShardCertifier {
    mode: ShardMode,
    /// `(shard, epoch)` whose Revoke the application handled ([`ShardMode::Prompt`]).
    revoked: HashSet<(u32, u64)>,
    /// The last real certificate of each shard ([`ShardMode::Broken`]).
    last: BTreeMap<u32, ShardCertificate>,
}

impl ShardCertifier {
    /// A certifier for a new membership.
    pub fn new(mode: ShardMode) -> Self {
        Self { mode, revoked: HashSet::new(), last: BTreeMap::new() }
    }

    /// The application handled a Revoke of `(shard, epoch)`.
    pub fn revoked(&mut self, shard: u32, epoch: u64) {
        if self.mode == ShardMode::Prompt {
            self.revoked.insert((shard, epoch));
        }
    }

    /// The shards this member may act on now (`now` is the check's time), by shard.
    pub fn owned(&mut self, member: &ShardMember, now: Instant) -> BTreeMap<u32, ShardCertificate> {
        let mut out: BTreeMap<u32, ShardCertificate> = member
            .owned()
            .into_iter()
            .filter(|o| !self.revoked.contains(&(o.shard, o.epoch)))
            .map(|o| (o.shard, ShardCertificate { shard: o.shard, epoch: o.epoch, checked: now, valid_until: o.until }))
            .collect();
        if let ShardMode::Broken(grace) = self.mode {
            self.last.extend(out.iter().map(|(&shard, &c)| (shard, c)));
            self.last.retain(|_, c| now < c.valid_until + grace);
            for (&shard, c) in &self.last {
                out.entry(shard).or_insert(ShardCertificate { checked: now, valid_until: c.valid_until + grace, ..*c });
            }
        }
        out
    }
}
