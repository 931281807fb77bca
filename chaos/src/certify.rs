//! "May I act now, with which token, until when": the one place the workload decides whether
//! it is owner. Everything else (recording, writing to the store) follows this decision.
//!
//! The client rule (README, *The client rule*): act as owner only while the lease's last
//! confirmed heartbeat covered it, until that heartbeat's send time + ttl.
//! `LeaderElector::leadership()` is that for a leadership (listed by the last confirmed
//! answer), `LockGuard::valid_until()` for a lock hold (covered by every confirmed heartbeat
//! of its lease).
//!
//! The broken mode (`--broken`, for testing the checker) ignores validity: once certified, it
//! keeps certifying until `grace` past the last real confirmation's end.

use std::time::Duration;

use tokio::time::Instant;
use zkcoord_client::{LeaderElector, LeaseKeeper, LockGuard};

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
