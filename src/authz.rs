//! Which names a client identity may use, and how (the optional `authz_file`).
//!
//! The file is TOML with any number of `[[allow]]` rules:
//!
//! ```toml
//! [[allow]]
//! identity = "ledger-node-*"      # the client certificate's identity; a trailing * is a prefix
//! tenant = "ledger"               # optional: the tenant these names are in (default tenant if absent)
//! # Full rights (read and write):
//! elections = ["ledger-*"]        # Campaign, Proclaim, Resign, Transfer; and the reads below
//! locks = ["orders:*"]            # Lock, TryLock, Unlock; and Holders
//! shard_groups = ["flows"]        # Join, Leave, Release, Watch, Drain, Undrain; and the reads
//! leases = ["ledger-*"]           # lease owner names: Grant, KeepAlive, Revoke; and the reads
//! # Read-only rights:
//! read_elections = ["*"]          # Leader, Observe, Candidates
//! read_locks = ["*"]              # Holders
//! read_shard_groups = ["*"]       # Observe (of a group), Members, Assignment
//! read_leases = ["*"]             # TimeToLive, List (by the lease's owner name)
//! ```
//!
//! **Every rpc is checked** ([`Access`] of a [`Resource`]): a name is allowed when any rule
//! whose `identity` matches the caller, and whose `tenant` is the request's tenant, lists a
//! pattern that matches it, among the full-rights list or (for a read) the `read_` list; a
//! call naming several names needs all of them allowed. Which name each rpc is checked on:
//!
//! | rpc | access | name |
//! |---|---|---|
//! | Election Campaign, Proclaim, Resign, Transfer | write | the election |
//! | Election Leader, Observe, Candidates | read | the election |
//! | Lock Lock, TryLock | write | every key |
//! | Lock Unlock | write | any lock key (the handle's keys are not known without a read; the hold was granted by an authorized Lock and releasing it takes its lease secret) |
//! | Lock Holders | read | the key; with `prefix`, a `*` pattern covering the prefix |
//! | Shards Join, Leave, Release, Watch, Drain, Undrain | write | the group |
//! | Shards Observe, Members, Assignment | read | the group |
//! | Lease Grant | write | the request's `owner` |
//! | Lease KeepAlive, Revoke | write | the lease's owner (from its record) |
//! | Lease TimeToLive | read | the lease's owner |
//! | Lease List | read | leases whose owner the caller may not read are left out |
//!
//! Everything else is denied, including every call without an identity (TLS without a client
//! certificate) once an `authz_file` is set. Without an `authz_file` nothing is checked.
//!
//! **Files written before `leases` and the `read_` lists existed keep their meaning**: a rule
//! that uses none of `leases`, `read_elections`, `read_locks`, `read_shard_groups`,
//! `read_leases` (an *old-style* rule) lets its identity use leases of any owner, as before,
//! and its `elections`, `locks` and `shard_groups` give full rights. A rule that uses any of
//! them gets exactly the lease rights it lists (none when it lists none). What did change for
//! old files: reads (Leader, Observe, Candidates, Holders, the shard reads, TimeToLive, List)
//! now need a right too, and identities that no rule names can no longer use leases.
//!
//! **Withdrawn rights** (a reload of the file, [`live`]): streams started under rules that no
//! longer allow them end within the reload poll interval (see [`live::LiveAuthz::changes`]
//! and the api handlers): Observe and Watch streams and KeepAlive streams end with
//! PERMISSION_DENIED ([`crate::error::RIGHTS_WITHDRAWN`]); a Campaign stream ends the same
//! way and its candidacy is withdrawn safely ([`crate::recipe::election::Elections::withdraw`]).
//! A KeepAlive stream's lease is not revoked: it ends after its ttl, as if its owner had
//! stopped, since revoking it would free its holds while the client may still act on its last
//! confirmed heartbeat. Certificate rotation does the same for connections whose client
//! certificate the reloaded `tls_client_ca` no longer trusts ([`crate::tls::ServerTls::still_trusts`]).
//! Lock holds and shard memberships (made by unary calls) end too: the instance that granted
//! them remembers the caller's identity and ends them safely ([`crate::api::holdings`]).
//!
//! Tenants by identity ([`Authz::tenant_for`]): a request without a `zkcoord-tenant` header
//! goes to the tenant of the first rule matching its identity (the default tenant when none
//! matches, or the rule names none); a request naming a tenant needs a rule for its identity
//! in that tenant. So an identity whose rules all name tenant `a` can see and touch nothing
//! outside `a`. Pure logic: the api layer asks, and answers PERMISSION_DENIED. The rules in
//! force follow the file: [`live`] reloads it when it changes.

use std::path::{Path, PathBuf};

pub mod live;

use serde::Deserialize;

/// What a name in a request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    /// An election name.
    Election,
    /// A lock key.
    LockKey,
    /// A shard group.
    ShardGroup,
    /// A lease, by its owner name.
    Lease,
}

/// What a call does with a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Looks (Leader, Observe, Candidates, Holders, Members, Assignment, TimeToLive, List).
    Read,
    /// Acts (everything else); includes reading.
    Write,
}

/// The rules of an `authz_file`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Authz {
    rules: Vec<Rule>,
    /// The file the rules were read from ([`Authz::load`]); it is watched for changes
    /// ([`live`]).
    source: Option<PathBuf>,
}

/// The patterns of one resource in one rule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Rights {
    /// Full rights.
    write: Vec<Pattern>,
    /// Read-only rights.
    read: Vec<Pattern>,
}

impl Rights {
    fn patterns(&self, access: Access) -> impl Iterator<Item = &Pattern> {
        let read = match access {
            Access::Read => self.read.as_slice(),
            Access::Write => &[],
        };
        self.write.iter().chain(read)
    }
}

/// One `[[allow]]` rule.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    identity: Pattern,
    elections: Rights,
    locks: Rights,
    shard_groups: Rights,
    leases: Rights,
    tenant: Option<String>,
}

impl Rule {
    fn rights(&self, resource: Resource) -> &Rights {
        match resource {
            Resource::Election => &self.elections,
            Resource::LockKey => &self.locks,
            Resource::ShardGroup => &self.shard_groups,
            Resource::Lease => &self.leases,
        }
    }
}

/// An exact name, or a prefix when written with a trailing `*`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    Prefix(String),
}

impl Pattern {
    fn parse(text: &str) -> Result<Self, String> {
        let (body, prefix) = match text.strip_suffix('*') {
            Some(body) => (body, true),
            None => (text, false),
        };
        if body.contains('*') {
            return Err(format!("{text:?}: only a trailing * is supported"));
        }
        if body.is_empty() && !prefix {
            return Err("an empty pattern matches nothing".into());
        }
        if body.chars().any(char::is_control) {
            return Err(format!("{text:?}: control characters are not allowed"));
        }
        Ok(if prefix { Self::Prefix(body.to_owned()) } else { Self::Exact(body.to_owned()) })
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            Self::Exact(exact) => name == exact,
            Self::Prefix(prefix) => name.starts_with(prefix.as_str()),
        }
    }

    /// Whether every name starting with `prefix` matches.
    fn covers_prefix(&self, prefix: &str) -> bool {
        match self {
            Self::Exact(_) => false,
            Self::Prefix(own) => prefix.starts_with(own.as_str()),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    allow: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    identity: String,
    #[serde(default)]
    elections: Vec<String>,
    #[serde(default)]
    locks: Vec<String>,
    #[serde(default)]
    shard_groups: Vec<String>,
    leases: Option<Vec<String>>,
    read_elections: Option<Vec<String>>,
    read_locks: Option<Vec<String>>,
    read_shard_groups: Option<Vec<String>>,
    read_leases: Option<Vec<String>>,
    tenant: Option<String>,
}

impl Authz {
    /// Reads the rules from the TOML file `path`.
    ///
    /// # Errors
    /// A message naming the file and what is wrong with it.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let rules = Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Self { source: Some(path.to_owned()), ..rules })
    }

    /// The file the rules were read from, if they were.
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    /// Parses the rules from TOML `text`.
    ///
    /// # Errors
    /// What is wrong with the text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: File = toml::from_str(text).map_err(|e| format!("not a valid rule file: {}", e.message()))?;
        let rules = file
            .allow
            .into_iter()
            .enumerate()
            .map(|(i, raw)| {
                let patterns = |field: &str, list: Option<Vec<String>>| {
                    list.unwrap_or_default()
                        .iter()
                        .map(|p| Pattern::parse(p))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| format!("allow[{i}].{field}: {e}"))
                };
                if let Some(tenant) = &raw.tenant
                    && crate::validate::Name::parse("tenant", tenant).is_err()
                {
                    return Err(format!("allow[{i}].tenant: {tenant:?} is not a tenant name"));
                }
                // An old-style rule (none of the newer keys) keeps its old meaning: leases of
                // any owner.
                let old_style = raw.leases.is_none()
                    && raw.read_elections.is_none()
                    && raw.read_locks.is_none()
                    && raw.read_shard_groups.is_none()
                    && raw.read_leases.is_none();
                let leases = if old_style { Some(vec!["*".to_owned()]) } else { raw.leases };
                Ok(Rule {
                    identity: Pattern::parse(&raw.identity).map_err(|e| format!("allow[{i}].identity: {e}"))?,
                    elections: Rights {
                        write: patterns("elections", Some(raw.elections))?,
                        read: patterns("read_elections", raw.read_elections)?,
                    },
                    locks: Rights {
                        write: patterns("locks", Some(raw.locks))?,
                        read: patterns("read_locks", raw.read_locks)?,
                    },
                    shard_groups: Rights {
                        write: patterns("shard_groups", Some(raw.shard_groups))?,
                        read: patterns("read_shard_groups", raw.read_shard_groups)?,
                    },
                    leases: Rights {
                        write: patterns("leases", leases)?,
                        read: patterns("read_leases", raw.read_leases)?,
                    },
                    tenant: raw.tenant,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Self { rules, source: None })
    }

    /// Checks that every tenant a rule names is one of `known` (the `tenants` setting): a rule
    /// for a tenant that is not served would deny its identities everything, silently.
    ///
    /// # Errors
    /// A message naming the first unknown tenant.
    pub fn check_tenants(&self, known: &[String]) -> Result<(), String> {
        match self.rules.iter().filter_map(|rule| rule.tenant.as_deref()).find(|t| !known.iter().any(|k| k == t)) {
            Some(unknown) => Err(format!("a rule names tenant {unknown:?}, which is not in `tenants`")),
            None => Ok(()),
        }
    }

    /// The tenant a request of `identity` is for, given the tenant its header names
    /// (`requested`; `None`: no header). `Ok(None)` is the default tenant; `Err(())` means the
    /// identity may not use the requested tenant.
    #[allow(clippy::result_unit_err)]
    pub fn tenant_for(&self, identity: Option<&str>, requested: Option<&str>) -> Result<Option<String>, ()> {
        let mut rules = self.rules.iter().filter(|r| identity.is_some_and(|id| r.identity.matches(id)));
        match requested {
            None => Ok(rules.next().and_then(|rule| rule.tenant.clone())),
            Some(tenant) => match rules.any(|rule| rule.tenant.as_deref() == Some(tenant)) {
                true => Ok(Some(tenant.to_owned())),
                false => Err(()),
            },
        }
    }

    /// The patterns that give `identity` `access` to `resource` in `tenant`.
    fn patterns<'a>(
        &'a self,
        identity: Option<&'a str>,
        tenant: Option<&'a str>,
        resource: Resource,
        access: Access,
    ) -> impl Iterator<Item = &'a Pattern> {
        self.rules
            .iter()
            .filter(move |r| identity.is_some_and(|id| r.identity.matches(id)) && r.tenant.as_deref() == tenant)
            .flat_map(move |r| r.rights(resource).patterns(access))
    }

    /// Whether `identity` may use every one of `names` (at least one) as a `resource` in
    /// `tenant` (`None`: the default tenant) for `access`.
    pub fn allows<'a>(
        &self,
        identity: Option<&str>,
        tenant: Option<&str>,
        resource: Resource,
        access: Access,
        names: impl IntoIterator<Item = &'a str>,
    ) -> bool {
        let patterns: Vec<&Pattern> = self.patterns(identity, tenant, resource, access).collect();
        let mut any = false;
        for name in names {
            any = true;
            if !patterns.iter().any(|p| p.matches(name)) {
                return false;
            }
        }
        any
    }

    /// Whether `identity` may use every `resource` whose name starts with `prefix` in `tenant`
    /// for `access`: some pattern `p*` with `prefix` starting with `p`.
    pub fn allows_prefix(
        &self,
        identity: Option<&str>,
        tenant: Option<&str>,
        resource: Resource,
        access: Access,
        prefix: &str,
    ) -> bool {
        self.patterns(identity, tenant, resource, access).any(|p| p.covers_prefix(prefix))
    }

    /// Whether `identity` may use some `resource` in `tenant` for `access` (a check made before
    /// the name is known, so that callers without any right cost no ZooKeeper read).
    pub fn allows_some(
        &self,
        identity: Option<&str>,
        tenant: Option<&str>,
        resource: Resource,
        access: Access,
    ) -> bool {
        self.patterns(identity, tenant, resource, access).next().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = r#"
        [[allow]]
        identity = "ledger-node-*"
        elections = ["ledger-*"]
        locks = ["orders:*", "inventory"]

        [[allow]]
        identity = "ledger-node-a"
        elections = ["audit"]

        [[allow]]
        identity = "admin"
        elections = ["*"]
        locks = ["*"]
    "#;

    fn rules() -> Authz {
        Authz::parse(RULES).expect("valid rules")
    }

    #[test]
    fn prefix_and_exact_patterns() {
        let authz = rules();
        let a = Some("ledger-node-a");
        assert!(authz.allows(a, None, Resource::Election, Access::Write, ["ledger-master"]));
        assert!(authz.allows(a, None, Resource::Election, Access::Write, ["ledger-"]));
        assert!(!authz.allows(a, None, Resource::Election, Access::Write, ["other"]));
        assert!(!authz.allows(a, None, Resource::Election, Access::Write, ["ledge"]));
        assert!(authz.allows(a, None, Resource::LockKey, Access::Write, ["orders:1", "inventory"]));
        assert!(!authz.allows(a, None, Resource::LockKey, Access::Write, ["inventory2"]));
        assert!(!authz.allows(a, None, Resource::LockKey, Access::Write, ["users:1"]));
    }

    #[test]
    fn rules_of_one_identity_add_up() {
        let authz = rules();
        assert!(authz.allows(Some("ledger-node-a"), None, Resource::Election, Access::Write, ["audit"]));
        assert!(!authz.allows(Some("ledger-node-b"), None, Resource::Election, Access::Write, ["audit"]));
        assert!(authz.allows(Some("ledger-node-b"), None, Resource::Election, Access::Write, ["ledger-master"]));
    }

    #[test]
    fn every_name_must_be_allowed() {
        let authz = rules();
        assert!(!authz.allows(Some("ledger-node-a"), None, Resource::LockKey, Access::Write, ["orders:1", "users:1"]));
        assert!(!authz.allows(Some("ledger-node-a"), None, Resource::LockKey, Access::Write, []));
    }

    #[test]
    fn unknown_or_missing_identity_is_denied() {
        let authz = rules();
        assert!(!authz.allows(Some("intruder"), None, Resource::Election, Access::Write, ["ledger-master"]));
        assert!(!authz.allows(None, None, Resource::Election, Access::Write, ["ledger-master"]));
        assert!(!Authz::default().allows(Some("admin"), None, Resource::LockKey, Access::Write, ["x"]));
        assert!(authz.allows(Some("admin"), None, Resource::LockKey, Access::Write, ["anything"]));
        // The identity pattern is a prefix only when it ends in *.
        assert!(!authz.allows(Some("admin2"), None, Resource::LockKey, Access::Write, ["anything"]));
    }

    #[test]
    fn locks_and_elections_are_separate() {
        let authz = rules();
        assert!(!authz.allows(Some("ledger-node-a"), None, Resource::LockKey, Access::Write, ["ledger-master"]));
        assert!(!authz.allows(Some("ledger-node-a"), None, Resource::Election, Access::Write, ["orders:1"]));
    }

    #[test]
    fn identities_bound_to_a_tenant_stay_in_it() {
        let authz = Authz::parse(
            r#"
            [[allow]]
            identity = "team-a-*"
            tenant = "a"
            elections = ["*"]

            [[allow]]
            identity = "ops"
            tenant = "a"
            elections = ["ops-*"]

            [[allow]]
            identity = "ops"
            tenant = "b"
            locks = ["*"]
            "#,
        )
        .expect("valid rules");
        let node = Some("team-a-1");
        assert_eq!(authz.tenant_for(node, None), Ok(Some("a".into())), "no header: its tenant");
        assert_eq!(authz.tenant_for(node, Some("a")), Ok(Some("a".into())));
        assert_eq!(authz.tenant_for(node, Some("b")), Err(()), "never another tenant");
        assert!(authz.allows(node, Some("a"), Resource::Election, Access::Write, ["x"]));
        assert!(!authz.allows(node, None, Resource::Election, Access::Write, ["x"]), "not in the default tenant");
        assert_eq!(authz.tenant_for(Some("ops"), Some("b")), Ok(Some("b".into())));
        assert!(authz.allows(Some("ops"), Some("b"), Resource::LockKey, Access::Write, ["k"]));
        assert!(
            !authz.allows(Some("ops"), Some("b"), Resource::Election, Access::Write, ["ops-1"]),
            "rules are per tenant"
        );
        assert_eq!(authz.tenant_for(Some("stranger"), None), Ok(None), "default tenant, nothing allowed");
        assert_eq!(authz.tenant_for(None, Some("a")), Err(()));
        assert!(Authz::parse("[[allow]]\nidentity = \"x\"\ntenant = \"a/b\"\n").is_err());
    }

    #[test]
    fn read_rights_allow_only_reads_and_full_rights_include_reads() {
        let authz = Authz::parse(
            r#"
            [[allow]]
            identity = "dashboard"
            read_elections = ["*"]
            read_locks = ["orders:*"]
            read_shard_groups = ["flows"]
            read_leases = ["ledger-*"]

            [[allow]]
            identity = "node"
            elections = ["ledger-*"]
            leases = ["node-*"]
            "#,
        )
        .expect("valid rules");
        let (dash, node) = (Some("dashboard"), Some("node"));
        for (resource, name) in [
            (Resource::Election, "x"),
            (Resource::LockKey, "orders:1"),
            (Resource::ShardGroup, "flows"),
            (Resource::Lease, "ledger-a"),
        ] {
            assert!(authz.allows(dash, None, resource, Access::Read, [name]), "{resource:?}");
            assert!(!authz.allows(dash, None, resource, Access::Write, [name]), "{resource:?}: read-only");
        }
        assert!(!authz.allows(dash, None, Resource::Lease, Access::Write, ["anything"]), "new-style: no lease rights");
        assert!(authz.allows(node, None, Resource::Election, Access::Read, ["ledger-1"]), "write includes read");
        assert!(authz.allows(node, None, Resource::Election, Access::Write, ["ledger-1"]));
        assert!(!authz.allows(node, None, Resource::Election, Access::Read, ["other"]));
        assert!(authz.allows(node, None, Resource::Lease, Access::Write, ["node-7"]));
        assert!(!authz.allows(node, None, Resource::Lease, Access::Write, ["ledger-a"]), "only the listed owners");
        assert!(!authz.allows(node, None, Resource::LockKey, Access::Read, ["orders:1"]));
        assert!(authz.allows_some(dash, None, Resource::Lease, Access::Read));
        assert!(!authz.allows_some(dash, None, Resource::Lease, Access::Write));
        assert!(!authz.allows_some(None, None, Resource::Lease, Access::Read), "no identity, no rights");
    }

    #[test]
    fn old_style_rules_keep_leases_of_any_owner() {
        let authz = rules();
        let a = Some("ledger-node-a");
        assert!(authz.allows(a, None, Resource::Lease, Access::Write, ["whatever"]));
        assert!(authz.allows(a, None, Resource::Lease, Access::Read, ["someone-else"]));
        assert!(!authz.allows(Some("intruder"), None, Resource::Lease, Access::Write, ["x"]), "named by no rule");
        let explicit = Authz::parse("[[allow]]\nidentity = \"n\"\nleases = []\nelections = [\"e\"]\n").expect("valid");
        assert!(!explicit.allows(Some("n"), None, Resource::Lease, Access::Write, ["x"]), "leases = [] grants none");
    }

    #[test]
    fn a_prefix_read_needs_a_pattern_covering_the_prefix() {
        let authz =
            Authz::parse("[[allow]]\nidentity = \"n\"\nread_locks = [\"orders:*\", \"users:1\"]\n").expect("valid");
        let n = Some("n");
        assert!(authz.allows_prefix(n, None, Resource::LockKey, Access::Read, "orders:"));
        assert!(authz.allows_prefix(n, None, Resource::LockKey, Access::Read, "orders:eu:"));
        assert!(!authz.allows_prefix(n, None, Resource::LockKey, Access::Read, "order"));
        assert!(!authz.allows_prefix(n, None, Resource::LockKey, Access::Read, "users:1"), "exact covers no prefix");
        assert!(!authz.allows_prefix(n, None, Resource::LockKey, Access::Write, "orders:"));
    }

    #[test]
    fn bad_files_are_explained() {
        for (text, expected) in [
            ("[[allow]]\nelections = [\"a\"]\n", "identity"),
            ("[[allow]]\nidentity = \"a\"\ncolour = \"blue\"\n", "colour"),
            ("[[allow]]\nidentity = \"a*b\"\n", "allow[0].identity"),
            ("[[allow]]\nidentity = \"a\"\nlocks = [\"\"]\n", "allow[0].locks"),
            ("[[allow]]\nidentity = \"a\"\nelections = [\"*x*\"]\n", "allow[0].elections"),
            ("allow = 3\n", "not a valid rule file"),
            ("[[allow]]\nidentity = \"a\"\nread_leases = [\"x*y\"]\n", "allow[0].read_leases"),
            ("[[allow]]\nidentity = \"a\"\nleases = [\"\"]\n", "allow[0].leases"),
        ] {
            let err = Authz::parse(text).expect_err(text);
            assert!(err.contains(expected), "{text:?}: {err}");
        }
        assert_eq!(Authz::parse("").expect("empty file"), Authz::default());
    }
}
