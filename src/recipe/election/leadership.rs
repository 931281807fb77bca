//! Which elections a lease leads, as this instance can *prove* it now: what a lease's
//! heartbeat answer lists, and so what its owner may act on (see `KeepAliveResponse` in
//! `proto/zkcoord/v1/lease.proto` for the client rule).
//!
//! # Timing argument
//!
//! One view per election, kept by a data watch on its record. A view is current as of the
//! start `t0` of a session proof (see [`crate::zk::proof`]) when its watch was armed before
//! `t0` and no event had arrived when the proof arrived, or when it was read after the proof
//! arrived. A heartbeat answered at `c` lists a leadership only from a view current as of some
//! `t0 > c − window` (`window ≤ 1 s`). So if the leadership was withdrawn (a deposition, or a
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
//! Views unused for [`IDLE`] are dropped.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures_util::FutureExt;

use super::record::{self, ElectionRecord};
use crate::{
    error::Result,
    sync_util::lock,
    validate::Name,
    zk::{Proof, Zk, ZkSession, layout},
};

/// A view not asked about for this long is dropped (its watch is then ignored).
const IDLE: Duration = Duration::from_secs(60);

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

type Armed = Pin<Box<dyn Future<Output = zookeeper_client::WatchedEvent> + Send>>;

/// One election's record as last read, and how current it is known to be.
#[derive(Default)]
struct View {
    /// The record and its `mzxid` (the token while it names a leader); `None` when the
    /// election does not exist.
    record: Option<(ElectionRecord, u64)>,
    /// The watch armed by the read of `record`, on connection `generation`.
    watch: Option<Armed>,
    generation: u64,
    /// When the read that armed `watch` had completed.
    armed_at: Option<Instant>,
    /// The proof start as of which `record` is known current.
    current_as_of: Option<Instant>,
    used: Option<Instant>,
}

impl std::fmt::Debug for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("View").field("record", &self.record).field("current_as_of", &self.current_as_of).finish()
    }
}

/// The leadership views of one instance (per tenant).
#[derive(Debug)]
pub struct Leaderships {
    session: ZkSession,
    views: Mutex<HashMap<String, Arc<tokio::sync::Mutex<View>>>>,
}

impl Leaderships {
    /// Views over `session`.
    pub fn new(session: ZkSession) -> Self {
        Self { session, views: Mutex::new(HashMap::new()) }
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
        let client = self.session.client().ok()?;
        let window = proof.timing.window;
        for election in elections {
            let view = self.view(election.as_str());
            let mut view = view.lock().await;
            view.used = Some(Instant::now());
            if let Err(err) = refresh(&client, election, &mut view, proof).await {
                tracing::debug!(election = %election, error = %err, "cannot read election for a heartbeat");
                return None;
            }
            if view.current_as_of.is_none_or(|t| Instant::now() >= t + window) {
                return None;
            }
            if let Some((record, token)) = &view.record
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

    fn view(&self, election: &str) -> Arc<tokio::sync::Mutex<View>> {
        let mut views = lock(&self.views);
        if let Some(view) = views.get(election) {
            return view.clone();
        }
        let now = Instant::now();
        // Sweep idle views now and then (on insertion: no task of its own).
        views.retain(|_, v| match v.try_lock() {
            Ok(v) => v.used.is_some_and(|used| now < used + IDLE),
            Err(_) => true, // in use
        });
        views.entry(election.to_owned()).or_default().clone()
    }
}

/// Brings `view` up to `proof` (see the module docs): keeps it when its watch, armed before
/// the proof began, has not fired; otherwise reads the record again (after the proof arrived,
/// so the read is current as of its start) and re-arms the watch.
async fn refresh(client: &Zk, election: &Name, view: &mut View, proof: Proof) -> Result<()> {
    if view.generation != proof.generation {
        view.watch = None;
        view.current_as_of = None;
    }
    if view.current_as_of.is_some_and(|t| t >= proof.started) {
        return Ok(());
    }
    if let Some(watch) = view.watch.as_mut() {
        let fired = watch.now_or_never().is_some();
        if !fired && view.armed_at.is_some_and(|armed| armed < proof.started) {
            view.current_as_of = Some(proof.started);
            return Ok(());
        }
        if fired {
            view.watch = None;
        }
        if !fired {
            // Armed after this proof began: current as of the proof it was read after.
            return Ok(());
        }
    }
    let path = layout::election(election);
    let (record, watch): (Option<(ElectionRecord, u64)>, Armed) = match client.get_and_watch_data(&path).await? {
        Some((data, stat, watcher)) => {
            let record: ElectionRecord = record::decode(&data)?;
            (Some((record, u64::try_from(stat.mzxid).unwrap_or(0))), Box::pin(watcher.changed()))
        }
        None => {
            let (_, watcher) = client.check_and_watch_stat(&path).await?;
            (None, Box::pin(watcher.changed()))
        }
    };
    view.record = record;
    view.watch = Some(watch);
    view.generation = proof.generation;
    view.armed_at = Some(Instant::now());
    view.current_as_of = Some(proof.started);
    Ok(())
}
