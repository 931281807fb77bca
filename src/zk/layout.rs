//! Where zkcoord keeps its state under its namespace (the chroot of every client it uses).
//!
//! ```text
//! <namespace>/instances/<instance-id>   ephemeral: one per live zkcoord instance
//! <namespace>/leases/<id>              lease record (JSON); children: what is bound to it
//! <namespace>/elections/<name>          election record (JSON)
//! <namespace>/elections/<name>/candidates/<candidate-id>   candidate record (JSON)
//! <namespace>/locks/<key>/...           holds and waiters of one lock key
//! ```
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

/// The directories created at start-up, under the namespace.
pub const DIRECTORIES: [&str; 4] = [INSTANCES, LEASES, ELECTIONS, LOCKS];

/// The znode of one election.
pub fn election(name: &Name) -> String {
    format!("{ELECTIONS}/{name}")
}

/// The directory of an election's candidates.
pub fn candidates(election: &Name) -> String {
    format!("{ELECTIONS}/{election}/candidates")
}

/// The znode of one candidate.
pub fn candidate(election: &Name, candidate_id: &Name) -> String {
    format!("{ELECTIONS}/{election}/candidates/{candidate_id}")
}

/// The name of the binding (a child of the lease record) that ties a candidacy to its lease.
/// `~` cannot occur in names, so the binding names its target unambiguously.
pub fn candidacy_binding(election: &Name, candidate_id: &Name) -> String {
    format!("e~{election}~{candidate_id}")
}

/// The znode a binding (a child of a lease record) stands for, which is deleted with it.
pub fn binding_target(binding: &str) -> Option<String> {
    let mut parts = binding.split('~');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("e"), Some(election), Some(candidate), None) => {
            let election = Name::parse("binding", election).ok()?;
            let candidate = Name::parse("binding", candidate).ok()?;
            Some(self::candidate(&election, &candidate))
        }
        _ => None,
    }
}

/// The znode of one lock key.
pub fn lock(key: &Name) -> String {
    format!("{LOCKS}/{key}")
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
        let binding = candidacy_binding(&name, &name);
        assert_eq!(binding_target(&binding).as_deref(), Some("/elections/a.b:c@d/candidates/a.b:c@d"));
        assert_eq!(binding_target("e~../x~y"), None);
        assert_eq!(binding_target("x~a~b"), None);
    }
}
