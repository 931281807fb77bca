//! Where zkcoord keeps its state under its namespace (the chroot of every client it uses).
//!
//! ```text
//! <namespace>/instances/<instance-id>   ephemeral: one per live zkcoord instance
//! <namespace>/leases/<id>              lease record (JSON); children: what is bound to it
//! <namespace>/leases/<id>/<binding>    binding record (JSON): the znodes that end with the lease
//! <namespace>/elections                (data) the term floor (JSON), see `recipe::election::cleanup`
//! <namespace>/elections/<name>          election record (JSON)
//! <namespace>/elections/<name>/candidates/<candidate-id>   candidate record (JSON)
//! <namespace>/locks/<key>              container: the queue of one lock key
//! <namespace>/locks/<key>/<m>-<hold>-<seq>   sequential: one request (held or waiting);
//!                                       <m> is x (exclusive) or s (shared)
//! <namespace>/shards/<group>           shard group record (JSON): shard count, drained, table
//! <namespace>/shards/<group>/members/<member-id>   member record (JSON)
//! <namespace>/tenants/<tenant>/...      the same five directories for each configured tenant
//! ```
//!
//! The default tenant's state is directly under the namespace; each other tenant's is under
//! its root, which is the chroot of every path the tenant's recipes use
//! ([`crate::zk::ZkSession::for_tenant`]), so the paths below are the same for every tenant.
//!
//! Bindings (children of a lease record, see [`crate::recipe::lease::binding`]): each holds a
//! binding record naming the znodes it owns, all inside [`RECIPE_DIRECTORIES`]. Their names are
//! the owning recipe's: `e~<election>~<candidate>` for a candidacy, `l~<hold>` for a lock
//! request (its data also lists the request's mode and keys; older versions go by these
//! names), `s~<group>~<member>` for a shard group membership.
//!
//! Paths are built only from validated [`Name`]s, each exactly one segment, so no client input
//! can address a znode outside these directories.

use crate::validate::Name;

/// Directory of instance registrations.
pub const INSTANCES: &str = "/instances";
/// Directory of lease records.
pub const LEASES: &str = "/leases";
/// Directory of elections.
pub const ELECTIONS: &str = "/elections";
/// Directory of lock keys.
pub const LOCKS: &str = "/locks";

/// Directory of shard groups.
pub const SHARDS: &str = "/shards";

/// The directories created at start-up, under the namespace (and under each tenant's root).
pub const DIRECTORIES: [&str; 5] = [INSTANCES, LEASES, ELECTIONS, LOCKS, SHARDS];
/// The directories of the recipes' znodes: the only ones a binding may own znodes in (see
/// [`crate::recipe::lease::binding`]).
pub const RECIPE_DIRECTORIES: [&str; 3] = [ELECTIONS, LOCKS, SHARDS];
/// Directory of the tenants' roots: `<namespace>/tenants/<tenant>` holds a tenant's own
/// `instances/`, `leases/`, `elections/` and `locks/`, laid out as above.
pub const TENANTS: &str = "/tenants";

/// The root of tenant `name` (a validated tenant name), relative to the namespace.
pub fn tenant(name: &str) -> String {
    format!("{TENANTS}/{name}")
}

/// The znode of one election.
pub fn election(name: &Name) -> String {
    format!("{ELECTIONS}/{name}")
}

/// The directory of an election's candidates.
pub fn candidates(election: &Name) -> String {
    format!("{ELECTIONS}/{election}/candidates")
}

/// The znode of one candidate (its id a validated [`Name`], or one read from ZooKeeper).
pub fn candidate(election: &Name, candidate_id: &(impl std::fmt::Display + ?Sized)) -> String {
    format!("{ELECTIONS}/{election}/candidates/{candidate_id}")
}

/// How the name of every candidacy binding starts ([`candidacy_binding`]).
pub const CANDIDACY_BINDING_PREFIX: &str = "e~";
/// How the name of every lock request's binding starts ([`hold_binding`]).
pub const HOLD_BINDING_PREFIX: &str = "l~";

/// The name of the binding (a child of the lease record) that ties a candidacy to its lease.
/// `~` cannot occur in names, so the binding names its target unambiguously.
pub fn candidacy_binding(election: &Name, candidate_id: &Name) -> String {
    format!("e~{election}~{candidate_id}")
}

/// The name of the binding that ties lock request `hold` (a [`hold_id`]) to its lease.
pub fn hold_binding(hold: &str) -> String {
    format!("l~{hold}")
}

/// The path of binding `name` of lease `lease_id`.
pub fn binding(lease_id: i64, name: &str) -> String {
    format!("{}/{name}", lease(lease_id))
}

/// The length of a hold id: 16 lowercase hex digits.
pub const HOLD_ID_LEN: usize = 16;

/// A new random hold id.
pub fn hold_id(random: u64) -> String {
    format!("{random:016x}")
}

/// Whether `s` has the shape of a hold id.
pub fn is_hold_id(s: &str) -> bool {
    s.len() == HOLD_ID_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The prefix ZooKeeper appends a sequence number to for a request of `hold` in a key's
/// queue; `exclusive` selects the mode letter.
pub fn hold_node_prefix(key: &Name, hold: &str, exclusive: bool) -> String {
    format!("{LOCKS}/{key}/{}", hold_node_name_prefix(hold, exclusive))
}

/// How the name of every node of request `hold` in a key's queue begins: `<m>-<hold>-`.
pub fn hold_node_name_prefix(hold: &str, exclusive: bool) -> String {
    let mode = if exclusive { 'x' } else { 's' };
    format!("{mode}-{hold}-")
}

/// One request in a key's queue, parsed from its node name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedHold {
    /// The node name (a child of the key's znode).
    pub node: String,
    /// Whether it is exclusive.
    pub exclusive: bool,
    /// The hold id.
    pub hold: String,
    /// The sequence number ZooKeeper appended: the parent's child version when the node was
    /// created, a signed 32-bit counter that wraps from 2^31 - 1 to -2^31 (formatted `%010d`:
    /// `-2147483648`, `-000000001`). The queue order, modulo 2^32 (see [`crate::recipe::lock::queue`]).
    pub seq: i32,
}

/// Parses the name of a node in a key's queue; `None` for anything zkcoord did not create.
/// Every sequence number ZooKeeper produces parses, negative ones included.
pub fn queued_hold(node: &str) -> Option<QueuedHold> {
    let (mode, rest) = node.split_once('-')?;
    let (hold, seq) = rest.split_once('-')?;
    let digits = seq.strip_prefix('-').unwrap_or(seq);
    if !is_hold_id(hold) || digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let exclusive = match mode {
        "x" => true,
        "s" => false,
        _ => return None,
    };
    Some(QueuedHold { node: node.to_owned(), exclusive, hold: hold.to_owned(), seq: seq.parse().ok()? })
}

/// The znode of one lock key.
pub fn lock(key: &Name) -> String {
    format!("{LOCKS}/{key}")
}

/// The znode of one shard group (its record: shard count, drained members, table).
pub fn shard_group(group: &Name) -> String {
    format!("{SHARDS}/{group}")
}

/// The directory of a shard group's members.
pub fn shard_members(group: &Name) -> String {
    format!("{SHARDS}/{group}/members")
}

/// The znode of one member of a shard group (bound to its lease).
pub fn shard_member(group: &Name, member_id: &Name) -> String {
    format!("{SHARDS}/{group}/members/{member_id}")
}

/// The name of the binding that ties a shard group membership to its lease.
pub fn membership_binding(group: &Name, member_id: &Name) -> String {
    format!("s~{group}~{member_id}")
}

/// The record znode of one lease; its children are the lease's bindings.
pub fn lease(id: i64) -> String {
    format!("{LEASES}/{id}")
}

/// The lease id named by a child of [`LEASES`], if it is one.
pub fn lease_id(child: &str) -> Option<i64> {
    child.parse().ok().filter(|id| *id > 0)
}

/// The registration znode of one zkcoord instance.
pub fn instance(id: &str) -> String {
    format!("{INSTANCES}/{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_in_their_directory() {
        let name = Name::parse("n", "a.b:c@d").expect("valid");
        assert_eq!(election(&name), "/elections/a.b:c@d");
        assert_eq!(lock(&name), "/locks/a.b:c@d");
        assert_eq!(binding(7, &candidacy_binding(&name, &name)), "/leases/7/e~a.b:c@d~a.b:c@d");
        assert!(candidacy_binding(&name, &name).starts_with(CANDIDACY_BINDING_PREFIX));
        assert!(hold_binding("00000000000000ab").starts_with(HOLD_BINDING_PREFIX));
        let hold = hold_id(0xab);
        assert_eq!(hold, "00000000000000ab");
        assert_eq!(binding(7, &hold_binding(&hold)), "/leases/7/l~00000000000000ab");
        assert_eq!(hold_node_prefix(&name, &hold, true), "/locks/a.b:c@d/x-00000000000000ab-");
        assert_eq!(hold_node_name_prefix(&hold, false), "s-00000000000000ab-");
    }

    #[test]
    fn queue_nodes_parse() {
        let parsed = queued_hold("s-00000000000000ab-0000000042").expect("valid");
        assert!(!parsed.exclusive);
        assert_eq!((parsed.hold.as_str(), parsed.seq), ("00000000000000ab", 42));
        // After 2^31 - 1 the counter wraps to negative numbers, still `%010d`.
        for (name, seq) in [
            ("x-00000000000000ab-2147483647", i32::MAX),
            ("x-00000000000000ab--2147483648", i32::MIN),
            ("x-00000000000000ab--000000001", -1),
            ("x-00000000000000ab-0000000000", 0),
        ] {
            assert_eq!(queued_hold(name).map(|q| q.seq), Some(seq), "{name}");
        }
        for bad in [
            "x-00000000000000ab",
            "q-00000000000000ab-1",
            "x-ab-1",
            "x-00000000000000ab-1-2",
            "x-00000000000000ab-",
            "x-00000000000000ab--",
            "x-00000000000000ab---1",
            "x-00000000000000ab-+1",
            "x-00000000000000ab-2147483648",
        ] {
            assert_eq!(queued_hold(bad), None, "{bad}");
        }
    }
}
