//! The janitor: expires leases whose home instance is gone and that nobody claimed.
//!
//! Every instance runs this task; only the one whose incarnation name is the smallest among
//! the registered instances acts (two acting at once during a membership change is harmless:
//! every deletion is versioned). The janitor reads all lease records when it takes over, when
//! the set of registered instances changes, and every [`RESCAN_INTERVAL`]; a lease whose home
//! is not registered becomes an orphan, and is deleted — with everything bound to it —
//! `ttl + EXPIRY_MARGIN` after the janitor first saw it orphaned, if its record's version is
//! still the one read then (a claim changes it). See [`super::local`] for why that is safe.
//!
//! # Shorter when the home was seen to go
//!
//! A home confirms nothing during the last [`ProofTiming::confirmation_lead`] of its ZooKeeper
//! session's life (`S − 2·window − interval`, from the timeout its session negotiated, which
//! it stamps into its registration). A janitor that saw the home registered, then saw its
//! registration gone, saw that after the session expired, so that much of the wait has already
//! passed: it deletes `ttl + EXPIRY_MARGIN − lead` after it noticed. So when a node and the
//! zkcoord instance beside it die together (a host crash), its lease ends about
//! `ttl + 2·window + interval + EXPIRY_MARGIN` after the crash (plus ZooKeeper's tick rounding
//! and the janitor's notification), but never before the session expired, instead of
//! `S + ttl + EXPIRY_MARGIN`: with the default 4 s session and 1 s proof window,
//! `max(4 s, ttl + 2.45 s)` rather than `ttl + 4.2 s`. A home this janitor
//! never saw registered (it may have registered after the janitor listed the instances, and
//! claimed the lease since) gets the full wait.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use tokio::time::Instant;

use super::{LeasesState, local::EXPIRY_MARGIN, zkops};
use crate::{
    error::Result,
    recipe::instance::InstanceInfo,
    zk::{ProofTiming, layout},
};

/// How often the janitor re-reads all lease records even without a membership change.
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(30);
/// Pause before retrying after a ZooKeeper failure: longer than [`crate::zk::RETRY_PAUSE`]
/// (100 ms), which RPCs and confirmations wait on. Nothing waits on the janitor (an orphan's
/// deadline is `ttl + margin` away, not a matter of milliseconds), and when ZooKeeper fails,
/// every instance's janitor retries at once: a slower pause loads a recovering ensemble less.
const JANITOR_RETRY_PAUSE: Duration = Duration::from_millis(250);

#[derive(Debug)]
struct Orphan {
    version: i32,
    deadline: Instant,
}

/// Runs until shutdown.
pub(super) async fn run(inner: Arc<LeasesState>) {
    let mut orphans: HashMap<i64, Orphan> = HashMap::new();
    // Each instance seen registered while this one was the janitor: its confirmation lead.
    let mut leads: HashMap<String, Duration> = HashMap::new();
    let mut status = inner.session.watch_status();
    while !inner.shutdown.is_cancelled() {
        match step(&inner, &mut orphans, &mut leads).await {
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
                    () = tokio::time::sleep(JANITOR_RETRY_PAUSE) => {}
                }
            }
        }
    }
}

/// One round: if this instance is the janitor, refresh the orphans and expire the due ones.
/// Returns the membership watcher to wait on.
async fn step(
    inner: &LeasesState,
    orphans: &mut HashMap<i64, Orphan>,
    leads: &mut HashMap<String, Duration>,
) -> Result<zookeeper_client::OneshotWatcher> {
    let client = inner.session.client()?;
    let (instances, watcher) =
        client.list_and_watch_children(layout::INSTANCES).await?.ok_or(zookeeper_client::Error::NoNode)?;
    let registered: HashSet<String> = instances.into_iter().collect();
    if registered.iter().min() != Some(&inner.me.name) {
        orphans.clear();
        leads.clear();
        return Ok(watcher);
    }
    // Learn the lead of instances registered since the last look (one read each, once).
    let new: Vec<String> = registered.iter().filter(|name| !leads.contains_key(*name)).cloned().collect();
    for name in new {
        let path = layout::instance(&name);
        let lead = match client.get_data(&path).await? {
            Some((data, _)) => serde_json::from_slice::<InstanceInfo>(&data)
                .ok()
                .and_then(|info| info.session_timeout_ms)
                .map_or(Duration::ZERO, |ms| ProofTiming::confirmation_lead(Duration::from_millis(ms))),
            None => Duration::ZERO, // gone already
        };
        leads.insert(name, lead);
    }
    // Refresh: every lease whose home is not registered is (or stays) an orphan.
    let now = Instant::now();
    let mut seen = HashSet::new();
    for (id, record, version) in zkops::read_all(&client, inner.session.skipped()).await? {
        if registered.contains(&record.home) {
            continue;
        }
        seen.insert(id);
        // A home seen registered and now gone has stopped confirming `lead` before its session
        // expired, which was before now (see the module docs).
        let lead = leads.get(&record.home).copied().unwrap_or_default();
        let deadline = now + (record.ttl() + EXPIRY_MARGIN).saturating_sub(lead);
        let orphan = orphans.entry(id).or_insert(Orphan { version, deadline });
        if orphan.version != version {
            // Written since (e.g. claimed, then its new home died too): start over.
            *orphan = Orphan { version, deadline };
        }
    }
    orphans.retain(|id, _| seen.contains(id));
    // Forget vanished instances once no orphan is left (their leases are all dealt with).
    if orphans.is_empty() {
        leads.retain(|name, _| registered.contains(name));
    }
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
