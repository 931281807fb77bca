//! What ZooKeeper stores about a lock request (JSON).
//!
//! * The binding `/leases/<id>/l~<hold>` holds a [`BindingRecord`] (it owns the request's
//!   nodes: in each key's queue, the children named `<m>-<hold>-…`), so that the lease's end
//!   deletes them, and beside it the [`HoldRecord`]: the request's mode and keys, from which
//!   an Unlock on another instance finds its nodes, as versions before the binding record did
//!   to delete them with the lease ([`hold_binding`]).
//! * Each node `/locks/<key>/<m>-<hold>-<seq>` holds a [`NodeRecord`]: who asked, for
//!   Holders. Its `czxid` (the zxid of the transaction that queued the request, the same for
//!   every key of one request) is the fencing token.

use serde::{Deserialize, Serialize};

use crate::{
    error::{Error, Result},
    recipe::lease::binding::{BindingRecord, Owned, Shown},
    validate::Name,
    zk::layout,
};

/// The kind TimeToLive shows a lock request as (once per key, named by the key, with the hold
/// id — the lock handle — as id).
pub const BINDING_KIND: &str = "lock";

/// The data of the binding of request `hold` on `keys`: its [`BindingRecord`] with the
/// [`HoldRecord`] beside it.
pub fn hold_binding(hold: &str, exclusive: bool, keys: &[Name]) -> Vec<u8> {
    let prefix = layout::hold_node_name_prefix(hold, exclusive);
    let record = BindingRecord {
        owns: keys.iter().map(|key| Owned::Children { parent: layout::lock(key), prefix: prefix.clone() }).collect(),
        shows: keys
            .iter()
            .map(|key| Shown { kind: BINDING_KIND.into(), name: key.to_string(), id: hold.to_owned() })
            .collect(),
    };
    record.encode_with(&HoldRecord { exclusive, keys: keys.iter().map(|k| k.as_str().to_owned()).collect() })
}

/// The recipe's own part of a hold's binding (see [`hold_binding`]).
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::lease::binding;

    fn keys(names: &[&str]) -> Vec<Name> {
        names.iter().map(|n| Name::parse("key", n).expect("valid")).collect()
    }

    /// A hold's binding means the same to the lease as the binding of versions before the
    /// binding record (mode and keys only), and older versions, which read the mode and keys
    /// of an `l~<hold>` binding, still read them from it.
    #[test]
    fn hold_bindings_own_the_hold_nodes_as_older_versions_read_them() {
        let hold = layout::hold_id(0xab);
        let name = layout::hold_binding(&hold);
        for exclusive in [true, false] {
            let keys = keys(&["k1", "a.b:c@d"]);
            let data = hold_binding(&hold, exclusive, &keys);
            let legacy = encode(&HoldRecord { exclusive, keys: vec!["k1".into(), "a.b:c@d".into()] });
            let record = binding::decode(&name, &data).expect("decodes").expect("a binding");
            assert_eq!(binding::decode(&name, &legacy).expect("decodes"), Some(record.clone()));
            assert_eq!(
                record.shows.iter().map(|s| (s.kind.as_str(), s.name.as_str(), s.id.as_str())).collect::<Vec<_>>(),
                [(BINDING_KIND, "k1", hold.as_str()), (BINDING_KIND, "a.b:c@d", hold.as_str())]
            );
            let old: HoldRecord = decode(&data).expect("decodes");
            assert_eq!(old, HoldRecord { exclusive, keys: vec!["k1".into(), "a.b:c@d".into()] });
        }
    }

    /// The queueing transaction carries the binding's data beside one node per key; ZooKeeper
    /// refuses requests over `jute.maxbuffer` (1 MiB by default). The largest request (1,000
    /// keys of 128 bytes) keeps its binding under half of that.
    #[test]
    fn the_largest_request_has_a_binding_well_under_jute_maxbuffer() {
        let names: Vec<String> =
            (0..crate::validate::MAX_LOCK_KEYS).map(|i| format!("{i:04}{}", "k".repeat(124))).collect();
        let keys: Vec<Name> = names.iter().map(|n| Name::parse("key", n).expect("valid")).collect();
        let data = hold_binding(&layout::hold_id(u64::MAX), true, &keys);
        assert!(data.len() < 512 * 1024, "{} bytes", data.len());
    }
}
