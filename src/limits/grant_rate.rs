//! Grants per second per tenant and caller identity (`max_grants_per_second`).
//!
//! A Grant is the one call a client can repeat at will that leaves a znode behind (a lease
//! record of up to ~9 KiB, living up to its ttl) and costs ZooKeeper a logged, fsync'd write.
//! Flooded, it saturates the ensemble's write pipeline, and every `sync` this instance sends
//! to prove its session (see [`crate::zk::proof`]) waits behind it: every heartbeat of every
//! other client is then answered late or unconfirmed. Measured with bench scenario 11 on one
//! 2-core machine: a flood of ~2,100 Grants a second (32 in flight) raised the other clients'
//! heartbeat p99 from 2 ms to 751 ms and left 2,286 heartbeats unconfirmed in 30 s.
//!
//! So Grants are paced per `(tenant, identity)` (callers without a client certificate share
//! their tenant's turn) by a generic cell rate algorithm: `max_grants_per_second` a second on
//! average, with a burst of one second's worth (a fleet restarting at once is served at once).
//! A Grant past that waits for its turn — up to [`MAX_GRANT_WAIT`] (5 s); one that would wait longer
//! is refused with RESOURCE_EXHAUSTED (`too many grants: retry later`) and reserves nothing.
//! The pace is per instance: a client spreading its Grants over `n` instances gets `n` times
//! it (`max_leases_per_tenant` still bounds what they leave behind).

use std::{collections::HashMap, sync::Arc, sync::Mutex, time::Duration};

use tokio::time::Instant;

use crate::{
    error::{self, Error, Result},
    sync_util::lock,
};

/// How long a Grant waits for its turn at most; one that would wait longer is refused. Long
/// enough that a fleet restarting at once behind one identity (1,000 nodes at the default pace)
/// is served by waiting rather than refused; waiting Grants cost no ZooKeeper request.
pub const MAX_GRANT_WAIT: Duration = Duration::from_secs(5);

/// Callers remembered before the idle ones (whose turn has come already) are forgotten.
const PRUNE_AT: usize = 10_000;

/// Whose turn: the tenant (`None`: the default tenant) and the caller's identity.
type Caller = (Option<String>, Option<Arc<str>>);

/// The pace of Grants (see the module docs).
#[derive(Debug)]
pub struct GrantRate {
    /// Time between two Grants of one caller on average.
    interval: Duration,
    /// How far ahead of the average pace a caller may be (the burst, less one interval).
    tolerance: Duration,
    /// Each caller's next turn at the average pace (the theoretical arrival time).
    next: Mutex<HashMap<Caller, Instant>>,
}

impl GrantRate {
    /// `per_second` Grants a second per caller (at least 1).
    pub fn new(per_second: usize) -> Self {
        let per_second = u32::try_from(per_second.max(1)).unwrap_or(u32::MAX);
        let interval = Duration::from_secs(1) / per_second;
        Self { interval, tolerance: Duration::from_secs(1).saturating_sub(interval), next: Mutex::default() }
    }

    /// Waits for the turn of a Grant by `identity` in `tenant`.
    ///
    /// # Errors
    /// [`Error::LimitReached`] ([`error::TOO_MANY_GRANTS`]) at once when the turn is more than
    /// [`MAX_GRANT_WAIT`] away; nothing is reserved then.
    ///
    /// # Cancellation safety
    /// A cancelled wait keeps its turn reserved: the caller's pace counts it as a Grant.
    pub async fn turn(&self, tenant: Option<&str>, identity: Option<Arc<str>>) -> Result<()> {
        let wait = self.reserve((tenant.map(str::to_owned), identity), Instant::now())?;
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }

    /// Reserves `caller`'s next turn as of `now`; how long until it comes.
    fn reserve(&self, caller: Caller, now: Instant) -> Result<Duration> {
        let mut next = lock(&self.next);
        if next.len() >= PRUNE_AT {
            next.retain(|_, at| *at > now);
        }
        let at = next.get(&caller).map_or(now, |at| (*at).max(now));
        let wait = at.saturating_duration_since(now).saturating_sub(self.tolerance);
        if wait > MAX_GRANT_WAIT {
            return Err(Error::LimitReached(error::TOO_MANY_GRANTS));
        }
        next.insert(caller, at + self.interval);
        Ok(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(tenant: Option<&str>, identity: Option<&str>) -> Caller {
        (tenant.map(str::to_owned), identity.map(Arc::from))
    }

    #[test]
    fn a_burst_of_one_second_then_the_pace_then_refusals() {
        let rate = GrantRate::new(5); // one every 200 ms, 5 at once
        let now = Instant::now();
        let waits: Vec<_> = (0..32).map(|_| rate.reserve(caller(None, None), now)).collect();
        for (k, wait) in waits.iter().enumerate().take(30) {
            let expected = Duration::from_millis(200 * (k.saturating_sub(4) as u64));
            assert_eq!(wait.as_ref().ok(), Some(&expected), "grant {k}");
        }
        for wait in &waits[30..] {
            assert!(matches!(wait, Err(Error::LimitReached(m)) if *m == error::TOO_MANY_GRANTS), "{wait:?}");
        }
        // A refusal reserved nothing: the next turn is still 5.2 s away, then comes again.
        assert!(rate.reserve(caller(None, None), now + Duration::from_millis(100)).is_err());
        assert!(rate.reserve(caller(None, None), now + Duration::from_millis(200)).is_ok());
        assert_eq!(rate.reserve(caller(None, None), now + Duration::from_secs(30)).ok(), Some(Duration::ZERO));
    }

    #[test]
    fn each_tenant_and_identity_has_its_own_pace() {
        let rate = GrantRate::new(1);
        let now = Instant::now();
        for who in
            [caller(None, None), caller(Some("t"), None), caller(None, Some("alice")), caller(Some("t"), Some("alice"))]
        {
            for second in 0..6 {
                assert_eq!(rate.reserve(who.clone(), now).ok(), Some(Duration::from_secs(second)), "{who:?}");
            }
            assert!(rate.reserve(who, now).is_err());
        }
    }

    #[test]
    fn idle_callers_are_forgotten_past_the_bound() {
        let rate = GrantRate::new(1000);
        let now = Instant::now();
        for i in 0..PRUNE_AT {
            rate.reserve(caller(Some(&format!("t{i}")), None), now).expect("a turn");
        }
        rate.reserve(caller(None, None), now + Duration::from_secs(2)).expect("a turn");
        assert_eq!(lock(&rate.next).len(), 1);
    }
}
