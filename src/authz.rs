//! Which election names and lock keys a client identity may use (the optional `authz_file`).
//!
//! The file is TOML with any number of `[[allow]]` rules:
//!
//! ```toml
//! [[allow]]
//! identity = "ledger-node-*"   # the client certificate's identity; a trailing * is a prefix
//! elections = ["ledger-*"]     # elections it may Campaign, Proclaim, Resign and Transfer in
//! locks = ["orders:*"]         # lock keys it may Lock and TryLock
//! shard_groups = ["flows"]     # shard groups it may Join, Leave, Release, Watch, Drain, Undrain
//! tenant = "ledger"            # optional: the tenant these names are in (default tenant if absent)
//! ```
//!
//! A name is allowed when any rule whose `identity` matches the caller, and whose `tenant` is
//! the request's tenant, lists a pattern that matches it; a call naming several lock keys needs
//! all of them allowed. Everything else that names an election or a lock key is denied,
//! including calls without an identity.
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
}

/// The rules of an `authz_file`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Authz {
    rules: Vec<Rule>,
    /// The file the rules were read from ([`Authz::load`]); it is watched for changes
    /// ([`live`]).
    source: Option<PathBuf>,
}

/// One `[[allow]]` rule.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    identity: Pattern,
    elections: Vec<Pattern>,
    locks: Vec<Pattern>,
    shard_groups: Vec<Pattern>,
    tenant: Option<String>,
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
                let patterns = |field: &str, list: Vec<String>| {
                    list.iter()
                        .map(|p| Pattern::parse(p))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| format!("allow[{i}].{field}: {e}"))
                };
                if let Some(tenant) = &raw.tenant
                    && crate::validate::Name::parse("tenant", tenant).is_err()
                {
                    return Err(format!("allow[{i}].tenant: {tenant:?} is not a tenant name"));
                }
                Ok(Rule {
                    identity: Pattern::parse(&raw.identity).map_err(|e| format!("allow[{i}].identity: {e}"))?,
                    elections: patterns("elections", raw.elections)?,
                    locks: patterns("locks", raw.locks)?,
                    shard_groups: patterns("shard_groups", raw.shard_groups)?,
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

    /// Whether `identity` may use every one of `names` (at least one) as a `resource` in
    /// `tenant` (`None`: the default tenant).
    pub fn allows<'a>(
        &self,
        identity: Option<&str>,
        tenant: Option<&str>,
        resource: Resource,
        names: impl IntoIterator<Item = &'a str>,
    ) -> bool {
        let Some(identity) = identity else { return false };
        let rules: Vec<&Rule> =
            self.rules.iter().filter(|r| r.identity.matches(identity) && r.tenant.as_deref() == tenant).collect();
        let mut any = false;
        for name in names {
            any = true;
            let allowed = rules.iter().any(|rule| {
                let patterns = match resource {
                    Resource::Election => &rule.elections,
                    Resource::LockKey => &rule.locks,
                    Resource::ShardGroup => &rule.shard_groups,
                };
                patterns.iter().any(|p| p.matches(name))
            });
            if !allowed {
                return false;
            }
        }
        any
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
        assert!(authz.allows(a, None, Resource::Election, ["ledger-master"]));
        assert!(authz.allows(a, None, Resource::Election, ["ledger-"]));
        assert!(!authz.allows(a, None, Resource::Election, ["other"]));
        assert!(!authz.allows(a, None, Resource::Election, ["ledge"]));
        assert!(authz.allows(a, None, Resource::LockKey, ["orders:1", "inventory"]));
        assert!(!authz.allows(a, None, Resource::LockKey, ["inventory2"]));
        assert!(!authz.allows(a, None, Resource::LockKey, ["users:1"]));
    }

    #[test]
    fn rules_of_one_identity_add_up() {
        let authz = rules();
        assert!(authz.allows(Some("ledger-node-a"), None, Resource::Election, ["audit"]));
        assert!(!authz.allows(Some("ledger-node-b"), None, Resource::Election, ["audit"]));
        assert!(authz.allows(Some("ledger-node-b"), None, Resource::Election, ["ledger-master"]));
    }

    #[test]
    fn every_name_must_be_allowed() {
        let authz = rules();
        assert!(!authz.allows(Some("ledger-node-a"), None, Resource::LockKey, ["orders:1", "users:1"]));
        assert!(!authz.allows(Some("ledger-node-a"), None, Resource::LockKey, []));
    }

    #[test]
    fn unknown_or_missing_identity_is_denied() {
        let authz = rules();
        assert!(!authz.allows(Some("intruder"), None, Resource::Election, ["ledger-master"]));
        assert!(!authz.allows(None, None, Resource::Election, ["ledger-master"]));
        assert!(!Authz::default().allows(Some("admin"), None, Resource::LockKey, ["x"]));
        assert!(authz.allows(Some("admin"), None, Resource::LockKey, ["anything"]));
        // The identity pattern is a prefix only when it ends in *.
        assert!(!authz.allows(Some("admin2"), None, Resource::LockKey, ["anything"]));
    }

    #[test]
    fn locks_and_elections_are_separate() {
        let authz = rules();
        assert!(!authz.allows(Some("ledger-node-a"), None, Resource::LockKey, ["ledger-master"]));
        assert!(!authz.allows(Some("ledger-node-a"), None, Resource::Election, ["orders:1"]));
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
        assert!(authz.allows(node, Some("a"), Resource::Election, ["x"]));
        assert!(!authz.allows(node, None, Resource::Election, ["x"]), "not in the default tenant");
        assert_eq!(authz.tenant_for(Some("ops"), Some("b")), Ok(Some("b".into())));
        assert!(authz.allows(Some("ops"), Some("b"), Resource::LockKey, ["k"]));
        assert!(!authz.allows(Some("ops"), Some("b"), Resource::Election, ["ops-1"]), "rules are per tenant");
        assert_eq!(authz.tenant_for(Some("stranger"), None), Ok(None), "default tenant, nothing allowed");
        assert_eq!(authz.tenant_for(None, Some("a")), Err(()));
        assert!(Authz::parse("[[allow]]\nidentity = \"x\"\ntenant = \"a/b\"\n").is_err());
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
        ] {
            let err = Authz::parse(text).expect_err(text);
            assert!(err.contains(expected), "{text:?}: {err}");
        }
        assert_eq!(Authz::parse("").expect("empty file"), Authz::default());
    }
}
