//! Lock holds and shard memberships granted by this instance, with the identity that asked
//! for them, so that rights withdrawn later (a reload of the `authz_file`) end them too.
//!
//! Streams re-check their own rights ([`super::Context::withdrawn`]); a hold or a membership
//! has no stream: it was made by a unary call (Lock, TryLock, Join) whose caller's identity
//! only the instance that served it knows (a lease's record names its owner, not the identity
//! of each call that bound something to it). So each instance remembers what it granted, per
//! tenant and identity, and after every new version of the rules ends what is no longer
//! allowed "as if revoked", safely under the validity rule (nobody is told it owns something
//! while its previous owner may still trust its last confirmed heartbeat):
//!
//! * a **lock hold** ends with its lease ([`crate::recipe::lease::Leases::end_withdrawn`]): a
//!   hold is covered by every confirmed heartbeat of its lease, so the lease stops being
//!   confirmed at once and is deleted, with everything bound to it, after its validity grace;
//!   only then can a waiting request be granted;
//! * a **shard membership** is marked leaving ([`crate::recipe::shards::Shards::withdraw`]):
//!   its shards are revoked (heartbeats stop listing them at once) and handed on only once
//!   released or after the owner's validity, then the membership ends; its lease lives on.
//!
//! Only kept while an `authz_file` is configured (nothing can be withdrawn otherwise), and at
//! most [`MAX_TRACKED`] entries (a warning beyond: those are not followed). Entries leave on
//! Unlock / Leave through this instance and when their rights are withdrawn; others (a lease
//! that ended, an Unlock through another instance) stay until then: ending something already
//! gone does nothing. Holds and memberships granted before a restart of this instance are not
//! followed.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use super::{Caller, Context};
use crate::{
    authz::{Access, Authz, Resource},
    recipe::lock::Acquired,
    sync_util::lock,
    tenant::Recipes,
    validate::Name,
};

/// The most holds and memberships an instance follows.
pub const MAX_TRACKED: usize = 100_000;

/// What was granted.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Granted {
    /// A lock hold: its lease and handle.
    Hold { lease_id: i64, hold: String },
    /// A shard membership.
    Member { group: Name, member_id: Name, lease_id: i64 },
}

/// Who was granted it, for which names.
#[derive(Clone, Debug)]
struct Grantee {
    identity: Option<Arc<str>>,
    /// The lock keys, or the group.
    names: Vec<String>,
}

/// What was granted in which tenant (`None`: the default one).
type Entry = (Option<String>, Granted);

/// The holds and memberships granted here. Cheap to clone; clones share them.
#[derive(Clone, Debug, Default)]
pub struct Holdings {
    granted: Arc<Mutex<HashMap<Entry, Grantee>>>,
    /// Wakes the enforcer for something granted after the rules that withdraw it came in
    /// (authorized just before a reload, granted just after).
    late: Arc<tokio::sync::Notify>,
}

impl Holdings {
    fn add(&self, tenant: Option<String>, granted: Granted, grantee: Grantee) {
        let mut map = lock(&self.granted);
        if map.len() >= MAX_TRACKED && !map.contains_key(&(tenant.clone(), granted.clone())) {
            tracing::warn!("too many holds and memberships followed for withdrawn rights; this one is not");
            return;
        }
        map.insert((tenant, granted), grantee);
    }

    /// Remembers hold `hold` of lease `lease_id` on `keys`, granted to `identity`.
    pub fn add_hold(
        &self,
        tenant: Option<String>,
        identity: Option<Arc<str>>,
        lease_id: i64,
        hold: String,
        keys: &[Name],
    ) {
        let names = keys.iter().map(|k| k.as_str().to_owned()).collect();
        self.add(tenant, Granted::Hold { lease_id, hold }, Grantee { identity, names });
    }

    /// Forgets hold `hold` of lease `lease_id` (unlocked).
    pub fn remove_hold(&self, tenant: Option<String>, lease_id: i64, hold: String) {
        lock(&self.granted).remove(&(tenant, Granted::Hold { lease_id, hold }));
    }

    /// Remembers the membership of `member_id` by lease `lease_id` in `group`, joined by
    /// `identity`.
    pub fn add_member(
        &self,
        tenant: Option<String>,
        identity: Option<Arc<str>>,
        group: Name,
        member_id: Name,
        lease_id: i64,
    ) {
        let names = vec![group.as_str().to_owned()];
        self.add(tenant, Granted::Member { group, member_id, lease_id }, Grantee { identity, names });
    }

    /// Forgets a membership (left).
    pub fn remove_member(&self, tenant: Option<String>, group: Name, member_id: Name, lease_id: i64) {
        lock(&self.granted).remove(&(tenant, Granted::Member { group, member_id, lease_id }));
    }

    /// Takes out everything the rules in force no longer allow its grantee.
    fn take_withdrawn(&self, rules: &Authz) -> Vec<Entry> {
        let mut map = lock(&self.granted);
        let withdrawn: Vec<_> = map
            .iter()
            .filter(|((tenant, granted), grantee)| {
                let resource = match granted {
                    Granted::Hold { .. } => Resource::LockKey,
                    Granted::Member { .. } => Resource::ShardGroup,
                };
                let names = grantee.names.iter().map(String::as_str);
                !rules.allows(grantee.identity.as_deref(), tenant.as_deref(), resource, Access::Write, names)
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in &withdrawn {
            map.remove(key);
        }
        withdrawn
    }
}

impl Context {
    /// Remembers the hold `acquired` on `keys` for lease `lease_id`, granted to `caller` in the
    /// tenant of `recipes` (only with an `authz_file`).
    pub fn granted_hold(&self, caller: &Caller, recipes: &Recipes, lease_id: i64, acquired: &Acquired, keys: &[Name]) {
        if self.authz.is_some() {
            let (tenant, identity) = (recipes.tenant.clone(), caller.shared_identity());
            self.holdings.add_hold(tenant, identity, lease_id, acquired.hold.clone(), keys);
            self.recheck(caller, recipes, Resource::LockKey, keys);
        }
    }

    /// Remembers the membership of `member_id` by lease `lease_id` in `group`, joined by
    /// `caller` in the tenant of `recipes` (only with an `authz_file`).
    pub fn granted_member(&self, caller: &Caller, recipes: &Recipes, group: &Name, member_id: &Name, lease_id: i64) {
        if self.authz.is_some() {
            let (tenant, identity) = (recipes.tenant.clone(), caller.shared_identity());
            self.holdings.add_member(tenant, identity, group.clone(), member_id.clone(), lease_id);
            self.recheck(caller, recipes, Resource::ShardGroup, std::slice::from_ref(group));
        }
    }

    /// Wakes the enforcer when what was just remembered is withdrawn already (authorized
    /// before a reload, granted after the enforcer looked at the new rules).
    fn recheck(&self, caller: &Caller, recipes: &Recipes, resource: Resource, names: &[Name]) {
        if self.authorize(caller, recipes, resource, Access::Write, names).is_err() {
            self.holdings.late.notify_one();
        }
    }
}

/// Follows the rules in force for the life of the instance: after each new version, ends the
/// holds (their leases, once each) and memberships whose grantee lost its rights. Does nothing
/// without an `authz_file`.
pub fn spawn_enforcer(ctx: Context) {
    let Some(authz) = ctx.authz.clone() else { return };
    let mut changes = authz.changes();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                () = ctx.holdings.late.notified() => {}
                () = ctx.shutdown.cancelled() => return,
            }
            let mut leases = HashSet::new();
            for (tenant, granted) in ctx.holdings.take_withdrawn(&authz.current()) {
                let Ok(recipes) = ctx.tenants.get(tenant.as_deref()) else { continue };
                match granted {
                    Granted::Hold { lease_id, .. } => {
                        if leases.insert((tenant, lease_id)) {
                            tokio::spawn(async move {
                                if let Err(err) = recipes.leases.end_withdrawn(lease_id).await {
                                    tracing::warn!(lease = lease_id, error = %err, "ending a lease whose hold's rights were withdrawn failed; it ends with its ttl or a Revoke");
                                }
                            });
                        }
                    }
                    Granted::Member { group, member_id, lease_id } => {
                        tokio::spawn(async move {
                            if let Err(err) = recipes.shards.withdraw(&group, &member_id, lease_id).await {
                                tracing::warn!(%group, member = %member_id, error = %err, "withdrawing a membership failed; it ends with its lease");
                            }
                        });
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::parse("name", s).expect("a valid name")
    }

    #[test]
    fn only_what_the_rules_no_longer_allow_its_grantee_is_taken_out_once() {
        let before = Authz::parse(
            "[[allow]]\nidentity = \"a\"\nlocks = [\"job-*\"]\nshard_groups = [\"g\"]\n\n\
             [[allow]]\nidentity = \"b\"\nlocks = [\"job-*\"]\nshard_groups = [\"g\"]\n",
        )
        .expect("valid rules");
        let after = Authz::parse(
            "[[allow]]\nidentity = \"a\"\nlocks = [\"job-1\"]\n\n\
             [[allow]]\nidentity = \"b\"\nlocks = [\"job-*\"]\nshard_groups = [\"g\"]\n",
        )
        .expect("valid rules");
        let holdings = Holdings::default();
        let (a, b): (Option<Arc<str>>, Option<Arc<str>>) = (Some("a".into()), Some("b".into()));
        holdings.add_hold(None, a.clone(), 1, "h1".into(), &[name("job-1")]);
        holdings.add_hold(None, a.clone(), 1, "h2".into(), &[name("job-1"), name("job-2")]);
        holdings.add_hold(None, b.clone(), 2, "h3".into(), &[name("job-2")]);
        holdings.add_member(None, a, name("g"), name("m1"), 1);
        holdings.add_member(None, b, name("g"), name("m2"), 2);
        holdings.add_hold(None, None, 3, "h4".into(), &[name("job-1")]);
        holdings.remove_hold(None, 3, "h4".into()); // unlocked: not followed any more
        assert!(holdings.take_withdrawn(&before).is_empty());
        let mut taken = holdings.take_withdrawn(&after);
        taken.sort_by_key(|(_, granted)| format!("{granted:?}"));
        assert_eq!(
            taken,
            vec![
                (None, Granted::Hold { lease_id: 1, hold: "h2".into() }),
                (None, Granted::Member { group: name("g"), member_id: name("m1"), lease_id: 1 }),
            ]
        );
        assert!(holdings.take_withdrawn(&after).is_empty(), "taken out once");
        assert_eq!(lock(&holdings.granted).len(), 3);
    }
}
