//! ZooKeeper operations on lease records shared by the home instance, Revoke and the janitor.

use zookeeper_client::{Client, MultiWriteError};

use super::record::LeaseRecord;
use crate::{
    error::Result,
    zk::layout::{self, BindingKind},
};

/// How a lease deletion ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// The lease and everything bound to it are gone.
    Deleted,
    /// There was no such lease.
    Missing,
    /// The record's version was not the expected one; nothing was deleted.
    VersionChanged,
}

/// How often a deletion is retried when bindings are added concurrently.
const MAX_ATTEMPTS: usize = 16;

/// Deletes the lease record at `path`, all its children (its bindings) and what each binding
/// stands for (a candidate znode, a lock request's nodes) in one transaction, only if the record's version is
/// `version` (any version when `None`). Bindings and their targets are always created and
/// deleted together, so a binding's target exists exactly while the binding does.
///
/// # Errors
/// [`crate::Error::Unavailable`] when ZooKeeper cannot be reached; the deletion may or may
/// not have happened (retrying is safe).
///
/// # Cancellation safety
/// The transaction is atomic: a cancelled call deleted everything or nothing.
pub async fn delete_lease(client: &Client, path: &str, version: Option<i32>) -> Result<DeleteOutcome> {
    for _ in 0..MAX_ATTEMPTS {
        let children = match crate::zk::traced("list_children", path, client.list_children(path)).await {
            Ok(children) => children,
            Err(zookeeper_client::Error::NoNode) => return Ok(DeleteOutcome::Missing),
            Err(err) => return Err(err.into()),
        };
        let mut multi = client.new_multi_writer();
        let mut ops = 0;
        for child in &children {
            let binding = format!("{path}/{child}");
            for target in binding_targets(client, &binding, child).await? {
                multi.add_delete(&target, None)?;
                ops += 1;
            }
            multi.add_delete(&binding, None)?;
            ops += 1;
        }
        multi.add_delete(path, version)?;
        match crate::zk::traced("multi", "", multi.commit()).await {
            Ok(_) => return Ok(DeleteOutcome::Deleted),
            Err(MultiWriteError::OperationFailed { index, source }) => match source {
                zookeeper_client::Error::BadVersion if index == ops => return Ok(DeleteOutcome::VersionChanged),
                zookeeper_client::Error::NoNode if index == ops => return Ok(DeleteOutcome::Missing),
                // A binding vanished or appeared meanwhile: list again.
                zookeeper_client::Error::NoNode | zookeeper_client::Error::NotEmpty => continue,
                other => return Err(other.into()),
            },
            Err(MultiWriteError::RequestFailed { source }) => return Err(source.into()),
        }
    }
    // Bindings kept changing: let the caller retry later.
    Err(crate::Error::Unavailable)
}

/// The znodes the binding `binding` (named `name`) stands for.
async fn binding_targets(client: &Client, binding: &str, name: &str) -> Result<Vec<String>> {
    match layout::binding_kind(name) {
        Some(BindingKind::Candidacy { election, candidate_id }) => {
            Ok(vec![layout::candidate(&election, &candidate_id)])
        }
        Some(BindingKind::Hold { hold }) => crate::recipe::lock::zkops::binding_targets(client, binding, &hold).await,
        None => Ok(Vec::new()),
    }
}

/// Reads every lease record, ordered by id, with its version. Records deleted meanwhile are
/// left out; undecodable ones (not written by zkcoord) are left out with a warning.
///
/// # Errors
/// [`crate::Error::Unavailable`] when ZooKeeper cannot be reached.
///
/// # Cancellation safety
/// Read-only: safe to cancel.
pub async fn read_all(client: &Client) -> Result<Vec<(i64, LeaseRecord, i32)>> {
    let mut ids: Vec<i64> = crate::zk::traced("list_children", layout::LEASES, client.list_children(layout::LEASES))
        .await?
        .iter()
        .filter_map(|c| layout::lease_id(c))
        .collect();
    ids.sort_unstable();
    // One request each, all in flight at once on the session's connection.
    let reads = ids.iter().map(|&id| async move {
        let path = layout::lease(id);
        (id, crate::zk::traced("get_data", &path, client.get_data(&path)).await)
    });
    let mut records = Vec::with_capacity(ids.len());
    for (id, result) in futures_util::future::join_all(reads).await {
        match result {
            Ok((data, stat)) => match LeaseRecord::decode(&data) {
                Ok(record) => records.push((id, record, stat.version)),
                Err(err) => tracing::warn!(lease = id, error = %err, "skipping an undecodable lease record"),
            },
            Err(zookeeper_client::Error::NoNode) => {} // ended meanwhile
            Err(err) => return Err(err.into()),
        }
    }
    Ok(records)
}
