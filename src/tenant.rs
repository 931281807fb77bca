//! Tenants: independent groups of clients sharing one ZooKeeper ensemble and one zkcoord
//! deployment, each with its own leases, elections and locks, invisible to the others.
//!
//! The default tenant's state is the namespace itself (the layout of [`crate::zk::layout`]);
//! each configured tenant (setting `tenants`) has the same layout under
//! `<namespace>/tenants/<tenant>`. Every tenant has its own recipe set — [`Leases`] (with its
//! own janitor), [`Elections`], [`Locks`] — built at start-up over a view of the instance's one
//! ZooKeeper session chrooted to the tenant's root ([`ZkSession::for_tenant`]). A recipe cannot
//! name a path outside its chroot, so no request in one tenant can see or touch another's
//! state, and a lease is only found in the tenant it was granted in.
//!
//! Which tenant a request is for is decided by [`crate::api::tenant::tenant_of`]. Design and
//! trade-offs: `docs/tenants.md`.

use std::{collections::HashMap, sync::Arc};

use tokio_util::sync::CancellationToken;

use crate::{
    error::{Error, Result},
    limits::InstanceLimits,
    recipe::{election::Elections, instance::Incarnation, lease::Leases, lock::Locks, shards::Shards},
    zk::ZkSession,
};

/// One tenant's coordination recipes.
#[derive(Clone, Debug)]
pub struct Recipes {
    /// The tenant's name; `None` for the default tenant.
    pub tenant: Option<String>,
    /// Leases.
    pub leases: Leases,
    /// Elections.
    pub elections: Elections,
    /// Locks.
    pub locks: Locks,
    /// Shard groups.
    pub shards: Shards,
}

impl Recipes {
    /// Starts the recipes of `tenant` (`None`: the default tenant) over `session` (the
    /// namespace, or the tenant's view of it), within the instance's `limits`, writing each
    /// lease's health at most `health_writes_per_second` times a second.
    pub fn start(
        tenant: Option<String>,
        session: ZkSession,
        incarnation: Incarnation,
        shutdown: CancellationToken,
        limits: &Arc<InstanceLimits>,
        health_writes_per_second: u32,
    ) -> Self {
        let leases = Leases::start(
            session.clone(),
            incarnation.clone(),
            shutdown.clone(),
            limits.quotas,
            health_writes_per_second,
        );
        let elections =
            Elections::new(session.clone(), incarnation.clone(), leases.clone(), shutdown.clone(), limits.clone());
        let shards = Shards::start(session.clone(), shutdown.clone());
        let locks = Locks::new(session, incarnation, leases.clone(), shutdown, limits.quotas.lock_requests_per_lease);
        Self { tenant, leases, elections, locks, shards }
    }
}

/// The recipe sets of the default tenant and of every configured tenant.
#[derive(Clone, Debug)]
pub struct Tenants {
    default: Arc<Recipes>,
    named: Arc<HashMap<String, Arc<Recipes>>>,
}

impl Tenants {
    /// The default tenant's `default` recipes plus a recipe set for each of `names` (the
    /// session's configured tenants) over the session's view of that tenant.
    pub fn start(
        default: Recipes,
        session: &ZkSession,
        names: &[String],
        incarnation: &Incarnation,
        shutdown: &CancellationToken,
        limits: &Arc<InstanceLimits>,
        health_writes_per_second: u32,
    ) -> Self {
        let named = names
            .iter()
            .map(|name| {
                let recipes = Recipes::start(
                    Some(name.clone()),
                    session.for_tenant(name),
                    incarnation.clone(),
                    shutdown.clone(),
                    limits,
                    health_writes_per_second,
                );
                (name.clone(), Arc::new(recipes))
            })
            .collect();
        Self { default: Arc::new(default), named: Arc::new(named) }
    }

    /// The default tenant's recipes.
    pub fn default_tenant(&self) -> &Arc<Recipes> {
        &self.default
    }

    /// The recipes of `tenant` (`None`: the default tenant).
    ///
    /// # Errors
    /// [`Error::TenantNotAllowed`] for a tenant that is not configured.
    pub fn get(&self, tenant: Option<&str>) -> Result<Arc<Recipes>> {
        match tenant {
            None => Ok(self.default.clone()),
            Some(name) => self.named.get(name).cloned().ok_or(Error::TenantNotAllowed),
        }
    }

    /// Every tenant's recipes: the default tenant's first, then the configured ones by name.
    pub fn all(&self) -> Vec<Arc<Recipes>> {
        let mut named: Vec<&Arc<Recipes>> = self.named.values().collect();
        named.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        std::iter::once(&self.default).chain(named).cloned().collect()
    }
}
