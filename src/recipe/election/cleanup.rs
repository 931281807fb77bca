//! Removal of elections nobody campaigns in any more.
//!
//! An election's znodes (`/elections/<name>` and its `candidates` directory) are created by
//! the first Campaign and would otherwise stay forever. Every instance runs this task per
//! tenant; only the instance with the smallest registered incarnation name acts (like the lease
//! janitor; two acting at once during a membership change is harmless, every deletion is
//! versioned). Every [`CLEANUP_INTERVAL`] it looks at up to [`CLEANUP_BATCH`] elections (the
//! next ones by name, round robin), one `exists` each, and removes an election whose
//! `candidates` directory was empty, with the same election record version and the same
//! children zxid, at two looks in a row (so it had nobody for at least one interval): removed
//! 10 to 20 s after its last candidacy ended, when there are at most [`CLEANUP_BATCH`]
//! elections. One transaction deletes the directory and the record and raises the tenant's term
//! floor ([`record::TermFloor`]) to the record's term.
//!
//! # Why it is safe
//! * **No candidacy is lost.** ZooKeeper refuses to delete a znode with children (`NotEmpty`),
//!   so a Campaign that created its candidate first makes the transaction fail; one that comes
//!   after finds no `candidates` directory (its transaction fails with `NoNode`) and creates
//!   the election again ([`super::Elections::campaign`]). The common path of a Campaign (the
//!   election exists) costs what it did.
//! * **Fencing tokens keep growing.** A term's fencing token is the zxid of the record's write
//!   that elected it; zxids grow ensemble-wide, so a re-created election's tokens are greater
//!   than every token of the removed one.
//! * **Terms keep growing.** The record's term counter is not a zxid: a re-created election
//!   starts at the term floor, which the removal raised to the removed record's term in the
//!   same transaction, and the creating transaction checks the floor unchanged since it was
//!   read ([`super::ensure_election`]). So no term of an election is ever repeated.
//! * **Lost with it:** the preemption policy (the next Campaign chooses it again) and the
//!   Transfer "yielded" mark — both only meaningful while there are candidates.
//!
//! Lock keys need no such task: their znodes are ZooKeeper *containers*, which the ensemble
//! deletes once empty (`znode.container.checkIntervalMs`, 60 s by default); a Lock re-creates a
//! missing key, and a hold's fencing token is the zxid of its queueing, so it grows across the
//! re-creation. Shard groups are not removed: their record holds the group's configuration
//! (shard count, drained members) and the per-shard epochs, which must outlive their members.

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures_util::{StreamExt, TryStreamExt};
use zookeeper_client::Error::{BadVersion, NoNode, NotEmpty};

use super::{
    ElectionContext,
    record::{self, ElectionRecord, TermFloor},
};
use crate::{
    error::Result,
    validate::Name,
    zk::{OpFailed, Zk, layout},
};

/// How often the cleanup looks at elections.
pub const CLEANUP_INTERVAL: Duration = Duration::from_secs(10);
/// The most elections looked at per round.
pub const CLEANUP_BATCH: usize = 1000;
/// How many `exists` requests a round has in flight at once.
const READ_AHEAD: usize = 32;

/// What an empty election looked like: its record's version and its directory's `pzxid`.
type Quiet = (i32, i64);

/// Runs until shutdown.
pub(super) async fn run(shared: Arc<ElectionContext>) {
    let mut quiet: HashMap<String, Quiet> = HashMap::new();
    let mut cursor: Option<String> = None;
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            () = tokio::time::sleep(CLEANUP_INTERVAL) => {}
        }
        if let Err(err) = round(&shared, &mut quiet, &mut cursor).await {
            tracing::debug!(error = %err, "election cleanup cannot work yet");
            quiet.clear();
        }
    }
}

/// One round: if this instance is the janitor, looks at the next batch of elections and
/// removes those found empty and unchanged twice.
async fn round(
    shared: &ElectionContext,
    quiet: &mut HashMap<String, Quiet>,
    cursor: &mut Option<String>,
) -> Result<()> {
    let client = shared.session.client()?;
    let instances = client.list_children(layout::INSTANCES).await?.ok_or(NoNode)?;
    if instances.iter().min() != Some(&shared.me.name) {
        quiet.clear();
        return Ok(());
    }
    let mut names = client.list_children(layout::ELECTIONS).await?.ok_or(NoNode)?;
    names.sort_unstable();
    let start = cursor.as_ref().map_or(0, |after| names.partition_point(|n| n <= after));
    let listed = names.get(start..).unwrap_or_default();
    let listed = listed.get(..CLEANUP_BATCH).unwrap_or(listed);
    *cursor = if start + listed.len() < names.len() { listed.last().cloned() } else { None };
    let batch: Vec<Name> = listed.iter().filter_map(|n| Name::parse("election", n).ok()).collect();
    let looks = batch.into_iter().map(|name| {
        let client = client.clone();
        async move {
            let (record_path, dir_path) = (layout::election(&name), layout::candidates(&name));
            let (record, candidates) = tokio::try_join!(client.check_stat(&record_path), client.check_stat(&dir_path))?;
            let empty = match (record, candidates) {
                (Some(record), Some(dir)) if dir.num_children == 0 => Some((record.version, dir.pzxid)),
                _ => None,
            };
            Ok::<_, crate::Error>((name, empty))
        }
    });
    let mut looks = futures_util::stream::iter(looks).buffered(READ_AHEAD);
    while let Some((name, empty)) = looks.try_next().await? {
        let key = name.as_str().to_owned();
        match empty {
            Some(seen) if quiet.get(&key) == Some(&seen) => {
                quiet.remove(&key);
                remove(&client, &name, seen.0).await?;
            }
            Some(seen) => {
                quiet.insert(key, seen);
            }
            None => {
                quiet.remove(&key);
            }
        }
    }
    // Forget elections that are gone.
    if cursor.is_none() {
        quiet.retain(|name, _| names.binary_search(name).is_ok());
    }
    Ok(())
}

/// Removes election `name` if its record still has `version` and nobody campaigns in it,
/// raising the term floor to its term, in one transaction. Losing a race (a Campaign came, the
/// floor moved) leaves everything as it was.
async fn remove(client: &Zk, name: &Name, version: i32) -> Result<()> {
    let path = layout::election(name);
    let Some((data, stat)) = client.get_data(&path).await? else { return Ok(()) };
    if stat.version != version {
        return Ok(());
    }
    let Ok(election) = record::decode::<ElectionRecord>(&data) else {
        return Ok(()); // not zkcoord's record: not zkcoord's to remove
    };
    let (floor_data, floor_stat) = client.get_data(layout::ELECTIONS).await?.ok_or(NoNode)?;
    let Some(floor) = TermFloor::decode(&floor_data) else {
        tracing::warn!("the elections directory holds no term floor; no election is removed");
        return Ok(());
    };
    let raised = TermFloor { term_floor: floor.term_floor.max(election.term) };
    let mut multi = client.multi();
    multi.add_delete(&layout::candidates(name), None)?;
    multi.add_delete(&path, Some(version))?;
    multi.add_set_data(layout::ELECTIONS, &record::encode(&raised), Some(floor_stat.version))?;
    match multi.commit().await? {
        Ok(_) => {
            tracing::info!(election = %name, term = election.term, "removed an election nobody campaigns in");
            Ok(())
        }
        Err(OpFailed { error: NotEmpty | BadVersion | NoNode, .. }) => Ok(()), // in use again, or raced
        Err(OpFailed { error, .. }) => Err(error.into()),
    }
}
