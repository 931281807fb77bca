//! ZooKeeper operations on lease records shared by the home instance, Revoke and the janitor.

use zookeeper_client::Error::{BadVersion, NoNode, NotEmpty};

use super::{binding, record::LeaseRecord};
use crate::{
    error::Result,
    zk::{
        OpFailed, Zk,
        foreign::{Kind, Skipped},
        layout,
    },
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
/// Largest deletion transaction, counted as path bytes plus [`OP_BYTES`] per operation.
/// ZooKeeper refuses a request over `jute.maxbuffer` (1 MiB by default) by dropping the
/// connection, so a lease bound to thousands of lock nodes could never be deleted in one.
const MAX_MULTI_BYTES: usize = 256 * 1024;
/// Encoding overhead of one delete operation in a transaction (generous).
const OP_BYTES: usize = 16;

/// Deletes the lease record at `path`, all its children (its bindings) and what each binding
/// owns (a candidate znode, a lock request's nodes: see [`binding`]) in one transaction, only if
/// the record's version is `version` (any version when `None`). Bindings and their targets are
/// always created and deleted together, so a binding's target exists exactly while the binding
/// does.
///
/// A lease bound to more than one transaction can carry ([`MAX_MULTI_BYTES`]) is first marked
/// `ending` with a versioned write (from then on no instance claims it and nothing new binds
/// to it through a verified read), then has its bindings released in batches, each binding
/// with its targets and each batch only while the record keeps the marked version; then the
/// record goes as usual. A claim racing the deletion thus either wins before the mark (and
/// nothing is deleted) or fails: a live lease never loses some of its holds.
///
/// # Errors
/// [`crate::Error::Unavailable`] when ZooKeeper cannot be reached; the deletion may or may
/// not have happened (retrying is safe).
///
/// # Cancellation safety
/// Each transaction is atomic. A lease deleted in one transaction is deleted entirely or not
/// at all; a large lease cancelled half-way is left marked `ending` with some bindings
/// released (nothing can claim or bind to it any more; the next deletion finishes it).
pub async fn delete_lease(client: &Zk, path: &str, mut version: Option<i32>) -> Result<DeleteOutcome> {
    // Without a version from the caller (Revoke), a version this call set by marking the
    // record is only ours: losing it to another write (a health change) means "again".
    let any_version = version.is_none();
    for _ in 0..MAX_ATTEMPTS {
        let Some(children) = client.list_children(path).await? else { return Ok(DeleteOutcome::Missing) };
        let bound = binding::read(client, path, &children).await?;
        let mut groups = Vec::with_capacity(bound.len());
        for binding in bound {
            let mut group = binding::owned(client, &binding.record).await?;
            group.push(binding.path);
            groups.push(group);
        }
        let bytes: usize = groups.iter().flatten().map(|p| p.len() + OP_BYTES).sum();
        if bytes + path.len() + OP_BYTES > MAX_MULTI_BYTES {
            let marked = match mark_ending(client, path, version.filter(|_| !any_version)).await? {
                Ok(marked) => marked,
                Err(DeleteOutcome::VersionChanged) if any_version => continue,
                Err(outcome) => return Ok(outcome),
            };
            version = Some(marked);
            match release_in_batches(client, path, marked, &groups).await? {
                Some(DeleteOutcome::VersionChanged) if any_version => continue,
                Some(outcome) => return Ok(outcome),
                None => continue, // released: list again, then delete the rest in one
            }
        }
        let mut multi = client.multi();
        let mut ops = 0;
        for target in groups.iter().flatten() {
            multi.add_delete(target, None)?;
            ops += 1;
        }
        multi.add_delete(path, version)?;
        match multi.commit().await? {
            Ok(_) => return Ok(DeleteOutcome::Deleted),
            Err(OpFailed { index, error }) => match error {
                BadVersion if index == ops && any_version => continue,
                BadVersion if index == ops => return Ok(DeleteOutcome::VersionChanged),
                NoNode if index == ops => return Ok(DeleteOutcome::Missing),
                // A binding vanished or appeared meanwhile: list again.
                NoNode | NotEmpty => continue,
                other => return Err(other.into()),
            },
        }
    }
    // Bindings kept changing: let the caller retry later.
    Err(crate::Error::Unavailable)
}

/// Marks the record at `path` `ending` if its version is `version` (any when `None`); the
/// record's new version, or how the lease deletion ends (it changed, or it is gone).
async fn mark_ending(client: &Zk, path: &str, version: Option<i32>) -> Result<Result<i32, DeleteOutcome>> {
    let Some((data, stat)) = client.get_data(path).await? else { return Ok(Err(DeleteOutcome::Missing)) };
    if version.is_some_and(|v| v != stat.version) {
        return Ok(Err(DeleteOutcome::VersionChanged));
    }
    let mut record = LeaseRecord::decode(&data)?;
    if record.ending {
        return Ok(Ok(stat.version));
    }
    record.ending = true;
    match client.set_data(path, &record.encode(), Some(stat.version)).await {
        Ok(Some(stat)) => Ok(Ok(stat.version)),
        Ok(None) => Ok(Err(DeleteOutcome::Missing)),
        Err(BadVersion) => Ok(Err(DeleteOutcome::VersionChanged)),
        Err(err) => Err(err.into()),
    }
}

/// Deletes `groups` (each: a binding's targets, then the binding) in transactions of at most
/// [`MAX_MULTI_BYTES`], each only while the record at `path` has `version`.
/// `Some` when the record's version changed or it vanished (stop there); `None` when done
/// or when a binding vanished meanwhile (list again).
async fn release_in_batches(
    client: &Zk,
    path: &str,
    version: i32,
    groups: &[Vec<String>],
) -> Result<Option<DeleteOutcome>> {
    let mut batches: Vec<Vec<&String>> = vec![Vec::new()];
    let mut bytes = 0;
    for group in groups {
        let size: usize = group.iter().map(|p| p.len() + OP_BYTES).sum();
        if bytes + size > MAX_MULTI_BYTES && batches.last().is_some_and(|b| !b.is_empty()) {
            batches.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        batches.last_mut().expect("one batch at least").extend(group);
    }
    tracing::info!(lease = path, bindings = groups.len(), batches = batches.len(), "deleting a large lease in batches");
    for batch in batches {
        let mut multi = client.multi();
        multi.add_check_version(path, version)?;
        for target in batch {
            multi.add_delete(target, None)?;
        }
        match multi.commit().await? {
            Ok(_) => {}
            Err(OpFailed { index: 0, error: BadVersion }) => return Ok(Some(DeleteOutcome::VersionChanged)),
            Err(OpFailed { index: 0, .. }) => return Ok(Some(DeleteOutcome::Missing)),
            Err(OpFailed { .. }) => return Ok(None),
        }
    }
    Ok(None)
}

/// Reads every lease record, ordered by id, with its version. Records deleted meanwhile are
/// left out; undecodable ones and children that are no lease id (not written by zkcoord) are
/// left out, logged and counted in `skipped`.
///
/// # Errors
/// [`crate::Error::Unavailable`] when ZooKeeper cannot be reached.
///
/// # Cancellation safety
/// Read-only: safe to cancel.
pub async fn read_all(client: &Zk, skipped: &Skipped) -> Result<Vec<(i64, LeaseRecord, i32)>> {
    let ids = list_ids(client, skipped).await?;
    read_records(client, &ids, skipped).await
}

/// One page of lease records, ordered by id: those of the first `size` lease ids greater than
/// `after` (all when `None`), read as [`read_all`] does (only those, one request each), and
/// whether there are lease ids after the page. Leases ended or found undecodable meanwhile are
/// left out, so a page may hold fewer than `size`.
///
/// # Errors
/// [`crate::Error::Unavailable`] when ZooKeeper cannot be reached.
///
/// # Cancellation safety
/// Read-only: safe to cancel.
pub async fn read_page(
    client: &Zk,
    after: Option<i64>,
    size: usize,
    skipped: &Skipped,
) -> Result<(Vec<(i64, LeaseRecord, i32)>, Option<i64>)> {
    let ids = list_ids(client, skipped).await?;
    let start = after.map_or(0, |after| ids.partition_point(|id| *id <= after));
    let page = ids.get(start..).unwrap_or_default();
    let (page, more) = if page.len() > size { (&page[..size], true) } else { (page, false) };
    let next = if more { page.last().copied() } else { None };
    Ok((read_records(client, page, skipped).await?, next))
}

/// The ids of the lease records, in order; children of `/leases` that are no lease id are
/// skipped (and counted).
async fn list_ids(client: &Zk, skipped: &Skipped) -> Result<Vec<i64>> {
    let children = client.list_children(layout::LEASES).await?.ok_or(NoNode)?;
    let mut ids = Vec::with_capacity(children.len());
    for child in &children {
        match layout::lease_id(child) {
            Some(id) => ids.push(id),
            None => skipped.skip(Kind::Lease, &format!("{}/{child}", layout::LEASES), &"not a lease id"),
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Reads the records of `ids` (one request each, all in flight at once on the session's
/// connection), in the order given.
async fn read_records(client: &Zk, ids: &[i64], skipped: &Skipped) -> Result<Vec<(i64, LeaseRecord, i32)>> {
    let reads = ids.iter().map(|&id| async move {
        let path = layout::lease(id);
        (id, client.get_data(&path).await)
    });
    let mut records = Vec::with_capacity(ids.len());
    for (id, result) in futures_util::future::join_all(reads).await {
        match result {
            Ok(Some((data, stat))) => match LeaseRecord::decode(&data) {
                Ok(record) => records.push((id, record, stat.version)),
                Err(err) => skipped.skip(Kind::Lease, &layout::lease(id), &err),
            },
            Ok(None) => {} // ended meanwhile
            Err(err) => return Err(err.into()),
        }
    }
    Ok(records)
}
