//! ZooKeeper operations on lease records shared by the home instance, Revoke and the janitor.

use zookeeper_client::{Client, MultiWriteError};

use crate::error::Result;

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
/// stands for (e.g. a candidate znode) in one transaction, only if the record's version is
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
        let children = match client.list_children(path).await {
            Ok(children) => children,
            Err(zookeeper_client::Error::NoNode) => return Ok(DeleteOutcome::Missing),
            Err(err) => return Err(err.into()),
        };
        let mut multi = client.new_multi_writer();
        let mut ops = 0;
        for child in &children {
            if let Some(target) = crate::zk::layout::binding_target(child) {
                multi.add_delete(&target, None)?;
                ops += 1;
            }
            multi.add_delete(&format!("{path}/{child}"), None)?;
            ops += 1;
        }
        multi.add_delete(path, version)?;
        match multi.commit().await {
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
