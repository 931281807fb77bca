//! The janitor: expires leases whose home instance is gone and that nobody claimed.
//!
//! Every instance runs this task; only the one whose incarnation name is the smallest among
//! the registered instances acts (two acting at once during a membership change is harmless:
//! every deletion is versioned). The janitor reads all lease records when it takes over, when
//! the set of registered instances changes, and every [`RESCAN_INTERVAL`]; a lease whose home
//! is not registered becomes an orphan, and is deleted — with everything bound to it —
//! `ttl + EXPIRY_MARGIN` after the janitor first saw it orphaned, if its record's version is
//! still the one read then (a claim changes it). See [`super::local`] for why that is safe.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use tokio::time::Instant;

use super::{Inner, local::EXPIRY_MARGIN, zkops};
use crate::{error::Result, zk::layout};

/// How often the janitor re-reads all lease records even without a membership change.
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(30);
/// Pause before retrying after a ZooKeeper failure.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

#[derive(Debug)]
struct Orphan {
    version: i32,
    deadline: Instant,
}

/// Runs until shutdown.
pub(super) async fn run(inner: Arc<Inner>) {
    let mut orphans: HashMap<i64, Orphan> = HashMap::new();
    let mut status = inner.session.watch_status();
    while !inner.shutdown.is_cancelled() {
        match step(&inner, &mut orphans).await {
            Ok(watcher) => {
                // Wake on a membership change, a due orphan, a session change, or the rescan
                // period — whether or not this instance is the janitor, so that a missed
                // change never leaves the cluster without one for longer than that.
                let next_deadline = orphans.values().map(|o| o.deadline).min();
                let rescan = Instant::now() + RESCAN_INTERVAL;
                let wake = next_deadline.map_or(rescan, |d| d.min(rescan));
                tokio::select! {
                    () = inner.shutdown.cancelled() => return,
                    _ = watcher.changed() => {}
                    () = tokio::time::sleep_until(wake) => {}
                    _ = status.changed() => {}
                }
            }
            Err(err) => {
                // What we knew may be stale by the time we can look again.
                orphans.clear();
                tracing::debug!(error = %err, "janitor cannot work yet");
                tokio::select! {
                    () = inner.shutdown.cancelled() => return,
                    () = tokio::time::sleep(RETRY_PAUSE) => {}
                }
            }
        }
    }
}

/// One round: if this instance is the janitor, refresh the orphans and expire the due ones.
/// Returns the membership watcher to wait on.
async fn step(inner: &Inner, orphans: &mut HashMap<i64, Orphan>) -> Result<zookeeper_client::OneshotWatcher> {
    let client = inner.session.client()?;
    let (instances, watcher) = crate::zk::traced(
        "list_and_watch_children",
        layout::INSTANCES,
        client.list_and_watch_children(layout::INSTANCES),
    )
    .await?;
    let registered: HashSet<String> = instances.into_iter().collect();
    if registered.iter().min() != Some(&inner.me.name) {
        orphans.clear();
        return Ok(watcher);
    }
    // Refresh: every lease whose home is not registered is (or stays) an orphan.
    let now = Instant::now();
    let mut seen = HashSet::new();
    for (id, record, version) in zkops::read_all(&client).await? {
        if registered.contains(&record.home) {
            continue;
        }
        seen.insert(id);
        let deadline = now + record.ttl() + EXPIRY_MARGIN;
        let orphan = orphans.entry(id).or_insert(Orphan { version, deadline });
        if orphan.version != version {
            // Written since (e.g. claimed, then its new home died too): start over.
            *orphan = Orphan { version, deadline };
        }
    }
    orphans.retain(|id, _| seen.contains(id));
    // Expire the due ones.
    let due: Vec<(i64, i32)> =
        orphans.iter().filter(|(_, o)| o.deadline <= Instant::now()).map(|(id, o)| (*id, o.version)).collect();
    for (id, version) in due {
        let outcome = zkops::delete_lease(&client, &layout::lease(id), Some(version)).await?;
        tracing::info!(lease = id, ?outcome, "janitor expired orphaned lease");
        orphans.remove(&id);
    }
    Ok(watcher)
}
