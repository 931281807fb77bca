//! ZooKeeper operations of the lock recipe: queueing a request, reading queues, releasing.
//!
//! A request is queued in **one transaction**: a sequential node in the queue of every key,
//! plus its binding under the lease record. It leaves in one transaction too (Unlock, or the
//! lease's deletion). So a request is always in all of its queues or in none, and is bound to
//! its lease exactly while it is queued.

use futures_util::future::join_all;
use zookeeper_client::{Acls, CreateMode, Error::NoNode, MultiWriteResult};

use super::{
    queue::{Queue, Unordered},
    record::{self, HoldRecord, NodeRecord},
};
use crate::{
    error::{Error, Result},
    validate::Name,
    zk::{
        OpFailed, Zk, ZkResult,
        foreign::{Kind, Skipped},
        layout,
    },
};

/// How often queueing retries after a key's znode vanished (an empty key's container node is
/// deleted by ZooKeeper after a while).
const MAX_QUEUE_ATTEMPTS: usize = 8;
/// How often a release re-reads the hold after finding it changed.
const MAX_RELEASE_ATTEMPTS: usize = 4;

/// A queued request.
#[derive(Clone, Debug)]
pub struct Queued {
    /// Its node in each key's queue (paths, in key order).
    pub nodes: Vec<String>,
    /// The zxid of the queueing transaction — the fencing token on every key — when the
    /// commit reported it (else see [`read_token`]).
    pub token: Option<u64>,
    /// Every key's queue (in key order), read right after the transaction (see [`queue`]);
    /// `None` when that read failed.
    pub queues: Option<Vec<Queue>>,
}

/// How queueing failed.
#[derive(Debug)]
pub enum QueueError {
    /// Nothing was queued.
    Failed(Error),
    /// The outcome is unknown (the connection was lost during the commit): the request may be
    /// queued and must be released by id.
    Ambiguous(Error),
}

/// The binding path of `hold` under lease `lease_id`.
pub fn binding_path(lease_id: i64, hold: &str) -> String {
    layout::binding(lease_id, &layout::hold_binding(hold))
}

/// Queues request `hold` of lease `lease_id` on `keys` in one transaction, creating what it
/// creates with `acls`.
///
/// # Errors
/// [`QueueError::Failed`] with [`Error::LeaseNotFound`] when the lease is gone, or a
/// ZooKeeper error; [`QueueError::Ambiguous`] when the commit's outcome is unknown.
///
/// # Cancellation safety
/// Not cancellation safe: a cancelled call may have queued the request. Run it where it
/// completes (the lock recipe runs it in its own task).
pub async fn queue(
    client: &Zk,
    acls: Acls<'_>,
    hold: &str,
    lease_id: i64,
    keys: &[Name],
    exclusive: bool,
    node: &NodeRecord,
) -> Result<Queued, QueueError> {
    let node_data = record::encode(node);
    let binding_data = record::hold_binding(hold, exclusive, keys);
    let sequential = CreateMode::PersistentSequential.with_acls(acls);
    let persistent = CreateMode::Persistent.with_acls(acls);
    let binding = binding_path(lease_id, hold);
    for _ in 0..MAX_QUEUE_ATTEMPTS {
        let mut multi = client.multi();
        for key in keys {
            multi
                .add_create(&layout::hold_node_prefix(key, hold, exclusive), &node_data, &sequential)
                .map_err(failed)?;
        }
        // The binding's data is written by a set_data in the same transaction: ZooKeeper 3.8
        // reports no stat for a create inside a multi (ZOOKEEPER-4026), but does for a
        // set_data, whose mzxid is the transaction's zxid — the token, without a read back.
        multi.add_create(&binding, &[], &persistent).map_err(failed)?;
        multi.add_set_data(&binding, &binding_data, Some(0)).map_err(failed)?;
        // Every key's queue is listed in the same round trip: the listings are sent right
        // behind the transaction on the session's one connection, and ZooKeeper answers a
        // session's requests in order, each after the ones sent before it took effect. So a
        // committed request is in them (the first look at its standing); a transaction that
        // failed for want of a key's znode learns from them which keys have none (the reads
        // [`create_keys`] would make otherwise). Only a transaction failing for another reason
        // (its lease gone) reads them in vain.
        let commit = multi.commit();
        let listed = join_all(keys.iter().map(|key| list_queue(client, key)));
        let (committed, listed) = tokio::join!(commit, listed);
        let listed: Result<Vec<Option<Queue>>> = listed.into_iter().collect();
        match committed.map_err(|err| QueueError::Ambiguous(err.into()))? {
            Ok(results) => {
                let queues = listed.ok().map(|queues| queues.into_iter().map(Option::unwrap_or_default).collect());
                return Ok(Queued { queues, ..queued(results) });
            }
            Err(OpFailed { index, error: NoNode }) if index < keys.len() => {
                let missing = listed.ok().map(|queues| queues.iter().map(Option::is_none).collect());
                create_keys(client, acls, keys, missing).await.map_err(failed)?;
            }
            Err(OpFailed { error: NoNode, .. }) => return Err(QueueError::Failed(Error::LeaseNotFound)),
            Err(OpFailed { error, .. }) => return Err(failed(error)),
        }
    }
    Err(QueueError::Failed(Error::Unavailable))
}

fn failed(err: zookeeper_client::Error) -> QueueError {
    QueueError::Failed(err.into())
}

/// The nodes and, if reported, the token of a committed queueing transaction.
fn queued(results: Vec<MultiWriteResult>) -> Queued {
    let mut nodes = Vec::with_capacity(results.len());
    let mut token = None;
    for result in results {
        match result {
            MultiWriteResult::Create { path, stat } => {
                if !stat.is_invalid() {
                    token.get_or_insert(stat.czxid as u64);
                }
                nodes.push(path);
            }
            MultiWriteResult::SetData { stat } if !stat.is_invalid() => {
                token.get_or_insert(stat.mzxid as u64);
            }
            _ => {}
        }
    }
    // The last create is the binding.
    nodes.pop();
    Queued { nodes, token, queues: None }
}

/// The fencing token of `queued`: reported by the commit, or read back (should a server
/// report no stat at all).
///
/// # Errors
/// [`Error::LeaseNotFound`] when the request is gone already (released with its lease), or a
/// ZooKeeper error.
///
/// # Cancellation safety
/// Read-only: safe to cancel.
pub async fn read_token(client: &Zk, queued: &Queued) -> Result<u64> {
    if let Some(token) = queued.token {
        return Ok(token);
    }
    let first = queued.nodes.first().map_or("/", String::as_str);
    match client.check_stat(first).await? {
        Some(stat) => Ok(stat.czxid as u64),
        None => Err(Error::LeaseNotFound),
    }
}

/// Creates the container znodes of the `keys` that have none: those `missing` says (one flag per
/// key, from a listing just made), else those found missing by a read of each.
async fn create_keys(client: &Zk, acls: Acls<'_>, keys: &[Name], missing: Option<Vec<bool>>) -> ZkResult<()> {
    let container = CreateMode::Container.with_acls(acls);
    let paths: Vec<String> = keys.iter().map(layout::lock).collect();
    let missing = match missing {
        Some(missing) => missing,
        None => join_all(paths.iter().map(|p| client.check_stat(p)))
            .await
            .into_iter()
            .map(|stat| !matches!(stat, Ok(Some(_))))
            .collect(),
    };
    let missing = paths.iter().zip(missing).filter(|(_, missing)| *missing).map(|(p, _)| p);
    for created in join_all(missing.map(|p| client.create(p, &[], &container))).await {
        created?; // `None`: created meanwhile, as good
    }
    Ok(())
}

/// Reads the queue of every key, in key order (an absent key has an empty queue).
///
/// # Cancellation safety
/// Read-only: safe to cancel.
pub async fn read_queues(client: &Zk, keys: &[Name]) -> Result<Vec<Queue>> {
    join_all(keys.iter().map(|key| read_queue(client, key))).await.into_iter().collect()
}

/// Reads the queue of `key` (empty when the key has no znode). One read; one more per request
/// when their names cannot tell their order (see [`super::queue`]).
///
/// # Cancellation safety
/// Read-only: safe to cancel.
pub async fn read_queue(client: &Zk, key: &Name) -> Result<Queue> {
    Ok(list_queue(client, key).await?.unwrap_or_default())
}

/// Like [`read_queue`], but `None` when the key has no znode. Its first request is sent when
/// the future is first polled.
async fn list_queue(client: &Zk, key: &Name) -> Result<Option<Queue>> {
    let path = layout::lock(key);
    let Some(children) = client.list_children(&path).await? else { return Ok(None) };
    let Unordered(nodes) = match Queue::parse(&children) {
        Ok(queue) => return Ok(Some(queue)),
        Err(unordered) => unordered,
    };
    let stats = join_all(nodes.iter().map(|n| {
        let node = format!("{path}/{}", n.node);
        async move { client.check_stat(&node).await }
    }))
    .await;
    let mut created = Vec::with_capacity(nodes.len());
    for (node, stat) in nodes.into_iter().zip(stats) {
        // A request gone meanwhile is no longer queued.
        if let Some(stat) = stat? {
            created.push((node, stat.czxid));
        }
    }
    Ok(Some(Queue::by_creation(created)))
}

/// Finds the nodes of request `hold` of lease `lease_id` from its binding; `None` when it is
/// not queued (released, or its lease ended).
///
/// # Cancellation safety
/// Read-only: safe to cancel.
pub async fn hold_nodes(client: &Zk, lease_id: i64, hold: &str) -> Result<Option<Vec<String>>> {
    let binding = binding_path(lease_id, hold);
    let Some((data, _)) = client.get_data(&binding).await? else { return Ok(None) };
    let record: HoldRecord = record::decode(&data)?;
    let keys = record.keys.iter().map(|k| Name::parse("key", k)).collect::<Result<Vec<_>>>()?;
    let queues = read_queues(client, &keys).await?;
    let nodes = keys
        .iter()
        .zip(queues)
        .filter_map(|(key, queue)| {
            let node = queue.nodes.into_iter().find(|n| n.hold == hold)?;
            Some(format!("{}/{}", layout::lock(key), node.node))
        })
        .collect();
    Ok(Some(nodes))
}

/// Releases request `hold` of lease `lease_id`: deletes its `nodes` (found from the binding
/// when `None`) and its binding in one transaction. Returns whether it was still queued.
///
/// # Errors
/// [`Error::Unavailable`] when ZooKeeper cannot be reached (retrying is safe).
///
/// # Cancellation safety
/// The deletion is one transaction: a cancelled call released the request or did nothing.
pub async fn release(client: &Zk, lease_id: i64, hold: &str, nodes: Option<&[String]>) -> Result<bool> {
    let binding = binding_path(lease_id, hold);
    let mut known = nodes.map(<[String]>::to_vec);
    for _ in 0..MAX_RELEASE_ATTEMPTS {
        let nodes = match known.take() {
            Some(nodes) => nodes,
            None => match hold_nodes(client, lease_id, hold).await? {
                Some(nodes) => nodes,
                None => return Ok(false),
            },
        };
        let mut multi = client.multi();
        for node in &nodes {
            multi.add_delete(node, None)?;
        }
        multi.add_delete(&binding, None)?;
        match multi.commit().await? {
            Ok(_) => return Ok(true),
            // Gone with its lease meanwhile, or the cached nodes were wrong: read the binding.
            Err(OpFailed { error: NoNode, .. }) => continue,
            Err(OpFailed { error, .. }) => return Err(error.into()),
        }
    }
    Err(Error::Unavailable)
}

/// Records when a request that had to wait was granted, for Holders. Best effort: a request
/// released meanwhile is left alone.
///
/// # Cancellation safety
/// Each node is written independently; a cancelled call leaves some nodes without the time.
pub async fn mark_acquired(client: &Zk, nodes: &[String], node: &NodeRecord) {
    let data = record::encode(node);
    for result in join_all(nodes.iter().map(|path| client.set_data(path, &data, None))).await {
        // `Ok(None)`: released meanwhile.
        if let Err(err) = result {
            tracing::debug!(error = %err, "could not record a lock's acquisition time");
        }
    }
}

/// One holder of a key, as read from its node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HolderNode {
    /// The node's record.
    pub record: NodeRecord,
    /// Whether it holds the key exclusively.
    pub exclusive: bool,
    /// The node's creation time, Unix epoch milliseconds.
    pub created_unix_ms: i64,
    /// The node's czxid: the fencing token.
    pub token: u64,
}

/// Reads the holders of `key` named in `queue`; holders gone meanwhile are left out, and a
/// node whose data is not a [`NodeRecord`] is shown with lease 0 and no owner.
///
/// # Cancellation safety
/// Read-only: safe to cancel.
pub async fn read_holders(client: &Zk, key: &Name, queue: &Queue, skipped: &Skipped) -> Result<Vec<HolderNode>> {
    let dir = layout::lock(key);
    let reads = queue.holders().iter().map(|n| {
        let path = format!("{dir}/{}", n.node);
        async move { (n.exclusive, client.get_data(&path).await) }
    });
    let mut holders = Vec::new();
    for ((exclusive, result), node) in join_all(reads).await.into_iter().zip(queue.holders()) {
        match result {
            Ok(Some((data, stat))) => holders.push(HolderNode {
                // A node zkcoord did not write (behind its back) still holds the key by its
                // name: shown with an unknown owner rather than failing the read.
                record: record::decode(&data).unwrap_or_else(|err| {
                    skipped.skip(Kind::LockNode, &format!("{dir}/{}", node.node), &err);
                    NodeRecord { lease_id: 0, owner: String::new(), instance: String::new(), acquired_unix_ms: None }
                }),
                exclusive,
                created_unix_ms: stat.ctime,
                token: stat.czxid as u64,
            }),
            Ok(None) => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(holders)
}
