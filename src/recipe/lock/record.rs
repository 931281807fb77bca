//! What ZooKeeper stores about a lock request (JSON).
//!
//! * The binding `/leases/<id>/l~<hold>` holds a [`HoldRecord`]: the request's mode and keys,
//!   so that whoever deletes the lease (or releases the hold on another instance) can find its
//!   nodes.
//! * Each node `/locks/<key>/<m>-<hold>-<seq>` holds a [`NodeRecord`]: who asked, for
//!   Holders. Its `czxid` (the zxid of the transaction that queued the request, the same for
//!   every key of one request) is the fencing token.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The data of a hold's binding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldRecord {
    /// Exclusive or shared.
    pub exclusive: bool,
    /// The keys, in request order.
    pub keys: Vec<String>,
}

/// The data of one node in a key's queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The hold's lease.
    pub lease_id: i64,
    /// The lease's owner.
    pub owner: String,
    /// The incarnation of the instance that queued the request.
    pub instance: String,
    /// When a request that had to wait was granted (absent when granted at once: then it is
    /// the node's creation time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acquired_unix_ms: Option<i64>,
}

/// Encodes a record.
pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    serde_json::to_vec(record).unwrap_or_default()
}

/// Decodes a record written by zkcoord.
///
/// # Errors
/// [`Error::Internal`] for data zkcoord did not write.
pub fn decode<'a, T: Deserialize<'a>>(data: &'a [u8]) -> Result<T> {
    serde_json::from_slice(data).map_err(|e| Error::Internal(format!("undecodable lock record: {e}")))
}
