//! Proofs that this instance's ZooKeeper session is alive *in the ensemble* and that what it
//! has read is current: the ground every confirmation stands on.
//!
//! # Why "connected" is not enough
//!
//! A ZooKeeper follower cut off from its leader keeps answering its clients — pings and
//! reads from its own, now frozen, copy — for up to `syncLimit × tickTime`, while the leader
//! expires the sessions it no longer hears of after their timeout `S`. An instance that
//! confirmed heartbeats because its socket was connected would vouch for leases another
//! instance's janitor is already expiring. Likewise an instance SIGSTOPped past `S` resumes
//! with buffered requests before its client library notices that the session is gone.
//!
//! # The proof
//!
//! Every [`ProofTiming::interval`] a task sends `sync` on the current connection. A `sync` is
//! forwarded to the ZooKeeper leader, which checks the session (an expired session fails it);
//! the follower answers only after it has applied everything the leader had committed when it
//! processed the `sync`. A `sync` begun at `t0` (this instance's monotonic clock, taken before
//! sending) and answered OK therefore proves, for `t0`:
//!
//! 1. **Liveness.** The session was alive at the leader at some moment after `t0`. The leader
//!    learns of this session's activity through the follower's pings, every half tick while the
//!    link is up; this instance is active at least every `interval` (the previous proof), so
//!    the leader's last touch is no older than `t0 − interval − (one round trip)`, and it
//!    cannot expire the session before `t0 − interval − rtt + S`. A proof is used only until
//!    `t0 + window` with `window + interval + rtt < S` (`window ≤ S/4`, `interval = window/4`,
//!    and a proof whose `sync` took longer than `window` is never published), so every
//!    confirmation based on it is given before the session can expire — before the janitor
//!    can even begin its `ttl + margin` wait (see `recipe::lease::local`).
//! 2. **Freshness.** Every change committed before `t0` has been applied by the follower and
//!    its watch notifications delivered on this connection *before* the `sync` answer (ZooKeeper
//!    sends a watch event before any later reply on the same connection, and zookeeper-client
//!    hands both out in that order). A view kept by a watch armed before `t0` whose event has
//!    not arrived when the proof arrives is therefore current as of `t0`; a read issued after
//!    the proof arrives is current as of `t0` too.
//!
//! So anything an instance vouches for at time `c` on the strength of a proof `t0 ≥ c − window`
//! was true in ZooKeeper no earlier than `window` before `c`. A deposed ZooKeeper leader that
//! has not yet noticed that it lost its quorum may still answer `sync` (ZOOKEEPER-1675); it
//! abdicates after `syncLimit` ticks without a quorum, about when the remaining members elect a
//! new leader, which then gives every session a fresh `S`: the liveness bound holds, and the
//! freshness bound is off by at most that overlap, which the election's hand-over margin covers.
//!
//! # Cost
//!
//! One `sync` per `interval` per instance (not per lease, stream or request): 4 a second with
//! the default 6 s session timeout.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::session::SessionStatus;

/// Longest `window` whatever the session timeout: bounds how stale a confirmed view may be, and
/// so how long a deposition without acknowledgement waits beyond the leader's ttl.
pub const MAX_WINDOW: Duration = Duration::from_secs(1);

/// One proof: a `sync` begun at `started` on connection `generation` was answered OK.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proof {
    /// The connection generation (see [`SessionStatus::Connected`]).
    pub generation: u64,
    /// When the `sync` was sent (before sending).
    pub started: Instant,
    /// The timing of the session it proves (from its *negotiated* timeout).
    pub timing: ProofTiming,
}

/// How often proofs are made and how long one counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProofTiming {
    /// Time between the starts of two proofs.
    pub interval: Duration,
    /// How long after its start a proof counts.
    pub window: Duration,
    /// The session timeout they are derived from.
    pub session_timeout: Duration,
}

impl ProofTiming {
    /// The timing for session timeout `session_timeout`: `window = min(S/4, 1 s)` and
    /// `interval = window/4` (see the module docs for why that fits inside `S`).
    pub fn for_session(session_timeout: Duration) -> Self {
        let window = (session_timeout / 4).min(MAX_WINDOW);
        Self { interval: window / 4, window, session_timeout }
    }

    /// [`ProofTiming::confirmation_lead`] of this timing's session.
    pub fn lead(&self) -> Duration {
        Self::confirmation_lead(self.session_timeout)
    }

    /// How long before its session can expire an instance with session timeout
    /// `session_timeout` has surely stopped confirming anything: its last confirmation came
    /// before `t0 + window` for its last proof `t0`, and the session cannot expire before
    /// `t0 − interval − window + S` (see the module docs), so the lead is
    /// `S − 2·window − interval`. Another instance that saw the session expire may count
    /// this much as already elapsed (the janitor does).
    pub fn confirmation_lead(session_timeout: Duration) -> Duration {
        let timing = Self::for_session(session_timeout);
        session_timeout.saturating_sub(timing.window * 2 + timing.interval)
    }
}

/// The latest proof; cheap to clone.
#[derive(Clone, Debug)]
pub struct Proofs {
    latest: watch::Receiver<Option<Proof>>,
    /// The timing for the configured session timeout, until a connection negotiates its own.
    configured: ProofTiming,
    /// When this instance last vouched for something on the strength of a proof.
    vouched: Arc<Mutex<Option<Instant>>>,
}

impl Proofs {
    /// The timing of the latest proof's session (the configured one before any).
    pub fn timing(&self) -> ProofTiming {
        self.latest.borrow().map_or(self.configured, |p| p.timing)
    }

    /// The latest proof if it still counts at `now` on connection `generation`.
    pub fn valid(&self, generation: u64, now: Instant) -> Option<Proof> {
        let proof = (*self.latest.borrow())?;
        (generation != 0 && proof.generation == generation && now < proof.started + proof.timing.window)
            .then_some(proof)
    }

    /// Records that something was just confirmed on the strength of a proof (see
    /// [`Proofs::last_vouched`]).
    pub fn vouched(&self) {
        *self.vouched.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
    }

    /// When something was last confirmed: an instance closing its session on purpose waits
    /// until [`ProofTiming::lead`] after it, since a janitor that sees the registration vanish
    /// counts that much as elapsed (it cannot tell a close from an expiry).
    pub fn last_vouched(&self) -> Option<Instant> {
        *self.vouched.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The latest proof that counts on connection `generation()` (read anew at each
    /// check), waiting at most `timeout` for one: a request that arrives between two proofs,
    /// or just after a (re)connection, gets its answer from the next proof rather than an
    /// unconfirmed one. Cancellation safe.
    pub async fn within(&self, generation: impl Fn() -> u64, timeout: Duration) -> Option<Proof> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut latest = self.latest.clone();
        loop {
            if let Some(proof) = self.valid(generation(), Instant::now()) {
                return Some(proof);
            }
            tokio::time::timeout_at(deadline, latest.changed()).await.ok()?.ok()?;
        }
    }
}

/// Starts the proof task over `current`, the session's status and client now, woken by every
/// change of `status`; it stops with `cancel`.
pub(super) fn start<F>(
    current: F,
    status: watch::Receiver<SessionStatus>,
    timing: ProofTiming,
    cancel: CancellationToken,
) -> Proofs
where
    F: Fn() -> (SessionStatus, Option<zookeeper_client::Client>) + Send + 'static,
{
    let (tx, latest) = watch::channel(None);
    tokio::spawn(run(current, status, tx, timing, cancel));
    Proofs { latest, configured: timing, vouched: Arc::default() }
}

async fn run<F>(
    current: F,
    mut status: watch::Receiver<SessionStatus>,
    tx: watch::Sender<Option<Proof>>,
    timing: ProofTiming,
    cancel: CancellationToken,
) where
    F: Fn() -> (SessionStatus, Option<zookeeper_client::Client>),
{
    let mut ticker = tokio::time::interval(timing.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The connection last tried: a new one is proven at once (its first confirmations wait
    // for that), then every tick.
    let mut tried = 0;
    loop {
        if current().0.generation() == tried || current().0.generation() == 0 {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = ticker.tick() => {}
                changed = status.changed() => if changed.is_err() { return },
            }
        }
        let (SessionStatus::Connected { generation, .. }, Some(client)) = current() else { continue };
        tried = generation;
        // The negotiated timeout, which ZooKeeper may have made shorter than the configured.
        let negotiated = ProofTiming::for_session(client.session_timeout());
        if negotiated.interval != ticker.period() {
            ticker = tokio::time::interval(negotiated.interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.reset();
        }
        let started = Instant::now();
        // A sync slower than the window would prove nothing still usable: give up on it.
        // Untraced, unlike requests through `ops::Zk`: one every `interval`, outside any RPC.
        match tokio::time::timeout(negotiated.window, client.sync("/")).await {
            Ok(Ok(())) => {
                if current().0.generation() == generation {
                    tx.send_replace(Some(Proof { generation, started, timing: negotiated }));
                }
            }
            Ok(Err(err)) => tracing::debug!(error = %err, "zookeeper sync failed; no proof"),
            Err(_) => {
                tracing::debug!(window = ?negotiated.window, "zookeeper sync slower than the proof window; no proof")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_fits_inside_the_session_timeout() {
        for ms in [500, 1_000, 2_000, 4_000, 6_000, 30_000, 120_000] {
            let s = Duration::from_millis(ms);
            let t = ProofTiming::for_session(s);
            assert!(t.window <= s / 4 && t.window <= MAX_WINDOW, "{t:?} for {s:?}");
            assert_eq!(t.interval, t.window / 4);
            // window + interval + a round trip as long as the window still leaves half of S.
            assert!(t.window * 2 + t.interval < s, "{t:?} for {s:?}");
            assert_eq!(ProofTiming::confirmation_lead(s), s - t.window * 2 - t.interval);
        }
    }

    #[tokio::test]
    async fn a_proof_counts_only_on_its_connection_and_within_its_window() {
        let (tx, latest) = watch::channel(None);
        let timing = ProofTiming::for_session(Duration::from_millis(400));
        let proofs = Proofs { latest, configured: timing, vouched: Arc::default() };
        let now = Instant::now();
        assert_eq!(proofs.valid(1, now), None);
        tx.send_replace(Some(Proof { generation: 1, started: now, timing }));
        assert!(proofs.valid(1, now + Duration::from_millis(99)).is_some());
        assert_eq!(proofs.valid(1, now + Duration::from_millis(100)), None);
        assert_eq!(proofs.valid(2, now), None);
        assert_eq!(proofs.valid(0, now), None);
    }
}
