//! Leases: zkcoord's unit of liveness.
//!
//! # Design
//! * A lease is a persistent znode `/leases/<id>` ([`record::LeaseRecord`]): owner, ttl,
//!   metadata, the secret's SHA-256, health, and its **home**: the incarnation of the instance
//!   its liveness lives in. Its children are what is bound to it (candidacies, lock holds),
//!   each a [`binding::BindingRecord`] naming the znodes it owns; they are deleted with it in
//!   one transaction. The lease knows no recipe: what a binding owns is in its record.
//! * Liveness is kept **in memory** by the home instance ([`local`]): a heartbeat updates a
//!   timestamp and costs no ZooKeeper write. Only health *changes* are written.
//! * A client may send its KeepAlive stream to any instance. An instance that is not the home
//!   **claims** the lease with a versioned write; the previous home's watch fires and it lets
//!   go. So a zkcoord instance can crash or be restarted without any lease being lost, as
//!   long as its clients reattach elsewhere within their ttl.
//! * Each instance registers an ephemeral znode (`/instances/<incarnation>`). A **janitor**
//!   ([`janitor`]: the instance with the smallest incarnation name) expires leases whose home
//!   is no longer registered and that nobody claimed within their ttl.
//! * Every instance uses exactly one ZooKeeper session, whatever the number of leases.
//!
//! # Failure cases
//! * Client dies or freezes: its home deletes the lease at last heartbeat + ttl + 200 ms.
//! * Home instance dies: its clients reattach elsewhere within ttl and keep their leases;
//!   leases nobody reattaches are expired by the janitor ttl + 200 ms after the dead
//!   instance's session expires.
//! * Home instance partitioned from ZooKeeper: it stops confirming heartbeats (see [`local`]
//!   for the timing argument); clients move to another instance, or their leases end.
//! * ZooKeeper member dies: the session moves to another member; nothing is lost.

pub mod binding;
pub mod janitor;
pub mod local;
pub mod named;
pub mod record;
pub mod secret;
mod zkops;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio_util::sync::CancellationToken;
use zookeeper_client::{CreateMode, Stat};

pub use self::local::LocalLease;
use self::{record::LeaseRecord, zkops::DeleteOutcome};
use crate::{
    error::{self, Error, Result},
    limits::{self, Quotas},
    recipe::{
        health::Health,
        instance::{Incarnation, now_unix_ms},
    },
    sync_util::lock,
    zk::{Zk, ZkSession, layout},
};

/// How many random ids a grant tries before giving up (a collision is astronomically rare).
const MAX_ID_ATTEMPTS: usize = 5;
/// Independent claim locks (claims of leases in different shards do not wait for each other).
const CLAIM_SHARDS: usize = 64;
/// How many times a claim retries after a concurrent write.
const MAX_CLAIM_ATTEMPTS: usize = 8;
/// How many times a withdrawal retries its mark against concurrent writes of the record.
const MAX_MARK_ATTEMPTS: usize = 8;

/// Why a lease ended on this instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Its ttl ran out here without a heartbeat.
    Expired,
    /// It was deleted (revoked, or expired elsewhere).
    Gone,
    /// Another instance claimed it (the client moved its KeepAlive stream).
    Moved,
    /// This instance is shutting down.
    ShuttingDown,
}

impl End {
    /// The error a caller acting on the lease here gets.
    pub fn error(self) -> Error {
        match self {
            End::Expired | End::Gone => Error::LeaseNotFound,
            End::Moved => Error::FailedPrecondition(crate::error::LEASE_CLAIMED),
            End::ShuttingDown => Error::ShuttingDown,
        }
    }
}

/// A new lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantRequest {
    /// Owner id (validated name).
    pub owner: String,
    /// Granted ttl (validated).
    pub ttl: Duration,
    /// Metadata (validated).
    pub metadata: BTreeMap<String, String>,
    /// Initial health.
    pub health: Health,
}

/// A granted lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Granted {
    /// The lease id.
    pub id: i64,
    /// The secret; only its digest is stored.
    pub secret: String,
    /// The granted ttl.
    pub ttl: Duration,
}

/// A call authenticated for a lease ([`Leases::authenticate`]).
#[derive(Clone, Debug)]
pub struct Authenticated {
    /// The lease's owner.
    pub owner: String,
    /// Hex SHA-256 of its secret.
    pub digest: String,
    /// The lease, when it is attached to this instance (authenticated without a read).
    pub attached: Option<Arc<LocalLease>>,
    /// How many bindings the lease's record had when read (`None` when it was not read).
    pub stored_bindings: Option<usize>,
}

/// What zkcoord knows about a live lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseView {
    /// The lease id.
    pub id: i64,
    /// The stored record.
    pub record: LeaseRecord,
    /// Remaining ttl and time since the last heartbeat, when the lease is attached to the
    /// answering instance (`None` when it lives on another instance).
    pub liveness: Option<(Duration, Duration)>,
    /// The health: the latest heartbeat's when attached here, else the stored one.
    pub health: Health,
    /// What is bound to it, as its bindings show it (see [`binding::Shown`]).
    pub bindings: Vec<binding::Shown>,
}

/// The lease recipe of one instance. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Leases {
    inner: Arc<LeasesState>,
}

/// The state of one instance's lease recipe (the leases attached here, the claim locks), shared
/// by the clones of [`Leases`], the local leases' tasks and the janitor.
#[derive(Debug)]
pub(crate) struct LeasesState {
    session: ZkSession,
    me: Incarnation,
    local: Mutex<HashMap<i64, Arc<LocalLease>>>,
    /// Claims of one lease are serialized; claims of different leases mostly run in parallel.
    claims: [tokio::sync::Mutex<()>; CLAIM_SHARDS],
    shutdown: CancellationToken,
    /// The instance's quotas (leases per tenant and per identity are checked here).
    quotas: Quotas,
    /// The shortest time between two health writes of one lease (see [`local`]).
    health_write_interval: Duration,
    /// Health writes and coalesced changes so far.
    health_writes: local::HealthWriteStats,
}

impl LeasesState {
    /// The lease attached here, unless it has ended.
    fn local(&self, id: i64) -> Option<Arc<LocalLease>> {
        let local = lock(&self.local);
        local.get(&id).filter(|l| !l.is_finished()).cloned()
    }

    /// Removes `lease` from the local map, unless it was already replaced.
    fn forget(&self, lease: &Arc<LocalLease>) {
        let mut local = lock(&self.local);
        if local.get(&lease.id).is_some_and(|l| Arc::ptr_eq(l, lease)) {
            local.remove(&lease.id);
        }
    }

    /// Starts tracking a lease this instance just wrote (as `version`) as its home. Arms the
    /// record's watch first, so that the first heartbeat can already be confirmed.
    async fn adopt(
        self: &Arc<Self>,
        id: i64,
        record: &LeaseRecord,
        mut version: i32,
        client: &Zk,
        identity: Option<Arc<str>>,
    ) -> Arc<LocalLease> {
        let lease = Arc::new(LocalLease::new(id, record, identity));
        let mut written_session = client.session_id().0;
        let path = layout::lease(id);
        let generation = self.session.status().generation();
        // On failure the task retries arming; the lease stays unconfirmed until then.
        let home = local::Home { me: &self.me.name, attachment: record.attachment };
        let watcher =
            local::arm(home, &record.health, client, &path, &mut version, &mut written_session).await.ok().flatten();
        if watcher.is_some() {
            lease.set_confirmed(generation);
        }
        let previous = lock(&self.local).insert(id, lease.clone());
        if let Some(previous) = previous {
            // A stale attachment (it had not noticed the lease moving away): it must not
            // expire the lease on its own clock.
            previous.finish(End::Moved);
        }
        tokio::spawn(local::run(self.clone(), lease.clone(), version, written_session, watcher));
        lease
    }
}

impl Leases {
    /// The lease recipe for the instance `me` with `quotas`, writing each lease's health at
    /// most `health_writes_per_second` times a second (at least 1; see [`local`]); starts its
    /// janitor. Everything stops when `shutdown` is cancelled.
    pub fn start(
        session: ZkSession,
        me: Incarnation,
        shutdown: CancellationToken,
        quotas: Quotas,
        health_writes_per_second: u32,
    ) -> Self {
        let inner = Arc::new(LeasesState {
            session,
            me,
            local: Mutex::new(HashMap::new()),
            claims: std::array::from_fn(|_| tokio::sync::Mutex::new(())),
            shutdown,
            quotas,
            health_write_interval: Duration::from_secs(1) / health_writes_per_second.max(1),
            health_writes: local::HealthWriteStats::default(),
        });
        tokio::spawn(janitor::run(inner.clone()));
        Self { inner }
    }

    /// The number of leases attached to this instance.
    pub fn local_count(&self) -> usize {
        lock(&self.inner.local).len()
    }

    /// Health writes to lease records by this instance so far, and health changes reported on
    /// heartbeats that were coalesced into another write or needed none (see [`local`]).
    pub fn health_write_stats(&self) -> (u64, u64) {
        let stats = &self.inner.health_writes;
        (
            stats.written.load(std::sync::atomic::Ordering::Relaxed),
            stats.coalesced.load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// The number of leases attached to this instance and the longest time since one of them
    /// had a heartbeat (zero when there are none).
    pub fn local_stats(&self) -> (usize, Duration) {
        let local = lock(&self.inner.local);
        let lag = local.values().map(|l| l.since_heartbeat()).max().unwrap_or_default();
        (local.len(), lag)
    }

    /// The lease `id` if it is attached to this instance (and has not ended).
    pub fn attached(&self, id: i64) -> Option<Arc<LocalLease>> {
        self.inner.local(id)
    }

    /// Grants a lease attached to this instance, alive for `ttl` from now, for the client
    /// `identity` (mTLS; `None` without).
    ///
    /// Checks the quotas first (see [`crate::limits`]): the leases of `identity` attached here
    /// (in memory) and the tenant's leases (one read of the lease directory's child count).
    ///
    /// # Errors
    /// [`Error::LimitReached`] when the tenant or the identity has as many leases as allowed
    /// (nothing is written); [`Error::Unavailable`] when ZooKeeper cannot be reached.
    ///
    /// # Cancellation safety
    /// The grant runs to completion in its own task: a lease created in ZooKeeper is always
    /// tracked (and so expires) even if the caller goes away.
    pub async fn grant(&self, request: GrantRequest, identity: Option<Arc<str>>) -> Result<Granted> {
        if let Some(identity) = identity.as_deref() {
            let local = lock(&self.inner.local);
            let theirs = limits::count_of_identity(
                local.values().filter(|l| !l.is_finished()).map(|l| l.identity.as_deref()),
                identity,
            );
            limits::below(theirs, self.inner.quotas.leases_per_identity, error::TOO_MANY_IDENTITY_LEASES)?;
        }
        let inner = self.inner.clone();
        tokio::spawn(tracing::Instrument::in_current_span(async move {
            let client = inner.session.client()?;
            let leases = client.check_stat(layout::LEASES).await?.map_or(0, |stat| stat.num_children);
            limits::below(
                usize::try_from(leases).unwrap_or(0),
                inner.quotas.leases_per_tenant,
                error::TOO_MANY_TENANT_LEASES,
            )?;
            let secret = secret::new_secret();
            let record = LeaseRecord {
                owner: request.owner,
                ttl_ms: request.ttl.as_millis() as u64,
                metadata: request.metadata,
                secret_sha256: secret::digest(&secret),
                granted_unix_ms: now_unix_ms(),
                home: inner.me.name.clone(),
                home_instance: inner.me.instance_id.clone(),
                attachment: secret::new_attachment(),
                health: request.health,
                eligibility_changes: 0,
                ending: false,
            };
            let data = record.encode();
            let mode = CreateMode::Persistent.with_acls(inner.session.acls());
            for _ in 0..MAX_ID_ATTEMPTS {
                let id = secret::new_lease_id();
                let path = layout::lease(id);
                match client.create(&path, &data, &mode).await {
                    Ok(Some(stat)) => {
                        inner.adopt(id, &record, stat.version, &client, identity).await;
                        tracing::debug!(lease = id, owner = %record.owner, "lease granted");
                        return Ok(Granted { id, secret, ttl: request.ttl });
                    }
                    Ok(None) => continue, // the id is taken
                    Err(err) => {
                        let err = Error::from(err);
                        if err.is_retryable() {
                            // The create may have happened without our hearing of it: track
                            // the id anyway, so that such a lease expires (its task finds out
                            // whether it exists).
                            inner.adopt(id, &record, 0, &client, identity).await;
                        }
                        return Err(err);
                    }
                }
            }
            Err(Error::Internal("no free lease id".into()))
        }))
        .await
        .map_err(|e| Error::Internal(format!("grant task: {e}")))?
    }

    /// Attaches a KeepAlive stream of the client `identity` to lease `id`: authenticates it
    /// and, if the lease lives on another instance, claims it for this one.
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`], [`Error::WrongSecret`], [`Error::Unavailable`].
    ///
    /// # Cancellation safety
    /// A claim runs to completion in its own task, so a claimed lease is always tracked.
    pub async fn attach(&self, id: i64, secret: &str, identity: Option<Arc<str>>) -> Result<Arc<LocalLease>> {
        // Always through ZooKeeper, even for a lease tracked and confirmed here: the client may
        // have been attached elsewhere meanwhile (another instance claimed the lease), and this
        // instance may not have heard of it yet — with a silently dead ZooKeeper link, for up
        // to 9/20 of the session timeout, longer than the claim argument's margin (see
        // `local`). One read per stream, not per heartbeat; a dead link makes it fail instead
        // of confirming.
        let inner = self.inner.clone();
        let secret = secret.to_owned();
        tokio::spawn(tracing::Instrument::in_current_span(async move { claim(&inner, id, &secret, identity).await }))
            .await
            .map_err(|e| Error::Internal(format!("claim task: {e}")))?
    }

    /// Ends lease `id` and releases everything bound to it, once `authorize` accepted its owner
    /// (the name it was granted with), after the secret was checked.
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`], [`Error::WrongSecret`], [`Error::Unavailable`], and what
    /// `authorize` returns.
    ///
    /// # Cancellation safety
    /// The deletion is one transaction: a cancelled revoke happened entirely or not at all.
    pub async fn revoke(&self, id: i64, secret: &str, authorize: impl FnOnce(&str) -> Result<()>) -> Result<()> {
        let client = self.inner.session.client()?;
        let path = layout::lease(id);
        let record = read(&client, &path).await?.0;
        if !secret::matches(secret, &record.secret_sha256) {
            return Err(Error::WrongSecret);
        }
        authorize(&record.owner)?;
        match zkops::delete_lease(&client, &path, None).await? {
            DeleteOutcome::Deleted => {
                if let Some(lease) = self.inner.local(id) {
                    lease.finish(End::Gone);
                }
                tracing::debug!(lease = id, "lease revoked");
                Ok(())
            }
            DeleteOutcome::Missing | DeleteOutcome::VersionChanged => Err(Error::LeaseNotFound),
        }
    }

    /// Ends lease `id` on zkcoord's own initiative (a lock hold bound to it belongs to an
    /// identity that lost its rights on the hold's key: the `authz_file` changed), without ever
    /// letting another client own what the lease holds while its owner may still trust it.
    /// A hold is covered by *every* confirmed heartbeat of its lease (`lease.proto`), so it can
    /// end safely only with the lease's confirmations: phase 1 marks the record `ending` (its
    /// home sees the mark through its watch and never confirms the lease again, as for a
    /// deletion in batches; no new binding passes a verified read), phase 2 deletes the lease
    /// with everything bound to it once [`validity_grace`] of its ttl has passed since the mark
    /// was written: by then its owner's last confirmed heartbeat can no longer be trusted.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when ZooKeeper is (or the record kept changing).
    ///
    /// # Cancellation safety
    /// Each write is one request; a call cancelled after the mark leaves the lease marked
    /// `ending` and never confirmed again, with its bindings in place: its holds are then
    /// not released until a Revoke (or a new withdrawal) deletes it.
    pub async fn end_withdrawn(&self, id: i64) -> Result<()> {
        let client = self.inner.session.client()?;
        let path = layout::lease(id);
        let mut marked = None;
        for _ in 0..MAX_MARK_ATTEMPTS {
            let Some((data, stat)) = client.get_data(&path).await? else { return Ok(()) };
            let mut record = LeaseRecord::decode(&data)?;
            let ttl = record.ttl();
            if record.ending {
                marked = Some(ttl);
                break;
            }
            record.ending = true;
            match client.set_data(&path, &record.encode(), Some(stat.version)).await {
                Ok(Some(_)) => {
                    marked = Some(ttl);
                    break;
                }
                Ok(None) => return Ok(()),
                Err(zookeeper_client::Error::BadVersion) => {}
                Err(err) => return Err(err.into()),
            }
        }
        let ttl = marked.ok_or(Error::Unavailable)?;
        tracing::info!(lease = id, "lease ending: a hold's rights were withdrawn; deleted after its validity");
        tokio::time::sleep(validity_grace(ttl)).await;
        zkops::delete_lease(&client, &path, None).await?;
        if let Some(lease) = self.inner.local(id) {
            lease.finish(End::Gone);
        }
        tracing::info!(lease = id, "lease deleted: a hold's rights were withdrawn");
        Ok(())
    }

    /// Authenticates a call acting for lease `id` and returns the lease's owner and secret
    /// digest. A lease attached here is checked without reading ZooKeeper, and is not found
    /// once its ttl has run out since its last heartbeat (even if not deleted yet); a caller that
    /// binds something to the lease must still find its record there (a binding is created
    /// under it, so a deleted lease fails that write).
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`], [`Error::WrongSecret`], [`Error::Unavailable`].
    ///
    /// # Cancellation safety
    /// Read-only: safe to cancel.
    pub async fn authenticate(&self, id: i64, secret: &str) -> Result<Authenticated> {
        let authenticated = match self.inner.local(id) {
            // Past its ttl the lease is dead for its owner, even while its deletion waits (the
            // expiry margin, or ZooKeeper out of reach): nothing may be bound to it any more.
            Some(lease) if lease.remaining().is_zero() => return Err(Error::LeaseNotFound),
            Some(lease) => Authenticated {
                owner: lease.owner.clone(),
                digest: lease.secret_sha256.clone(),
                attached: Some(lease),
                stored_bindings: None,
            },
            None => {
                let client = self.inner.session.client()?;
                let (data, stat) = client.get_data(&layout::lease(id)).await?.ok_or(Error::LeaseNotFound)?;
                let record = LeaseRecord::decode(&data)?;
                Authenticated {
                    owner: record.owner,
                    digest: record.secret_sha256,
                    attached: None,
                    stored_bindings: Some(usize::try_from(stat.num_children).unwrap_or(0)),
                }
            }
        };
        if !secret::matches(secret, &authenticated.digest) {
            return Err(Error::WrongSecret);
        }
        Ok(authenticated)
    }

    /// The names of the bindings of lease `id` (its record's children; see [`binding`]).
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`], [`Error::Unavailable`].
    ///
    /// # Cancellation safety
    /// Read-only: safe to cancel.
    pub async fn binding_names(&self, id: i64) -> Result<Vec<String>> {
        let client = self.inner.session.client()?;
        client.list_children(&layout::lease(id)).await?.ok_or(Error::LeaseNotFound)
    }

    /// Describes lease `id`, with what its bindings show ([`binding::BindingRecord::shows`]).
    /// Bindings gone meanwhile and ones zkcoord did not write are left out.
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`], [`Error::Unavailable`]; [`Error::Internal`] for a binding
    /// that is invalid (see [`binding::decode`]).
    pub async fn time_to_live(&self, id: i64) -> Result<LeaseView> {
        let client = self.inner.session.client()?;
        let path = layout::lease(id);
        let (record, children) = tokio::try_join!(read(&client, &path), async {
            client.list_children(&path).await?.ok_or(Error::LeaseNotFound)
        })?;
        let mut view = self.view(id, record.0);
        view.bindings =
            binding::read(&client, &path, &children).await?.into_iter().flat_map(|b| b.record.shows).collect();
        Ok(view)
    }

    /// Describes one page of the live leases, ordered by id: those among the first `size`
    /// lease ids greater than `after` (from the first when `None`). Reads only those records
    /// (plus the list of ids). Also returns the id to continue after, when more leases follow.
    /// Undecodable records are skipped, logged and counted.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    ///
    /// # Cancellation safety
    /// Read-only: safe to cancel.
    pub async fn list(&self, after: Option<i64>, size: usize) -> Result<(Vec<LeaseView>, Option<i64>)> {
        let client = self.inner.session.client()?;
        let (records, next) = zkops::read_page(&client, after, size, self.inner.session.skipped()).await?;
        let views = records.into_iter().map(|(id, record, _)| self.view(id, record)).collect();
        Ok((views, next))
    }

    fn view(&self, id: i64, record: LeaseRecord) -> LeaseView {
        let local = self.inner.local(id).filter(|_| record.home == self.inner.me.name);
        let liveness = local.as_ref().map(|l| (l.remaining(), l.since_heartbeat()));
        let health = local.map_or_else(|| record.health.clone(), |l| l.health());
        LeaseView { id, record, liveness, health, bindings: Vec::new() }
    }
}

/// Reads lease `id` and checks `secret` against it; returns the record and its version.
///
/// # Errors
/// [`Error::LeaseNotFound`], [`Error::WrongSecret`], [`Error::Unavailable`].
pub async fn read_verified(client: &Zk, id: i64, secret: &str) -> Result<(LeaseRecord, i32)> {
    read_verified_stat(client, id, secret).await.map(|(record, stat)| (record, stat.version))
}

/// [`read_verified`], with the record's whole stat (its `num_children` is the number of the
/// lease's bindings).
///
/// # Errors
/// As [`read_verified`].
pub async fn read_verified_stat(client: &Zk, id: i64, secret: &str) -> Result<(LeaseRecord, Stat)> {
    let (data, stat) = client.get_data(&layout::lease(id)).await?.ok_or(Error::LeaseNotFound)?;
    let record = LeaseRecord::decode(&data)?;
    if !secret::matches(secret, &record.secret_sha256) {
        return Err(Error::WrongSecret);
    }
    if record.ending {
        return Err(Error::LeaseNotFound); // being deleted (see `zkops::delete_lease`)
    }
    Ok((record, stat))
}

async fn read(client: &Zk, path: &str) -> Result<(LeaseRecord, i32)> {
    let (data, stat) = client.get_data(path).await?.ok_or(Error::LeaseNotFound)?;
    Ok((LeaseRecord::decode(&data)?, stat.version))
}

/// Makes this instance the home of lease `id` with a versioned write.
async fn claim(inner: &Arc<LeasesState>, id: i64, secret: &str, identity: Option<Arc<str>>) -> Result<Arc<LocalLease>> {
    let _serialized = inner.claims[id.unsigned_abs() as usize % CLAIM_SHARDS].lock().await;
    let client = inner.session.client()?;
    let path = layout::lease(id);
    // The read that decides must be current: a follower cut off from its leader would show a
    // record that says "home here" long after another instance claimed the lease (see
    // `crate::zk::proof`).
    // Bounded like a proof: a sync that cannot complete soon (no ZooKeeper leader) fails the
    // claim at once, so the client tries another instance instead of waiting here.
    let window = inner.session.proofs().timing().window;
    tokio::time::timeout(window * 2, client.sync(&path)).await.map_err(|_| Error::Unavailable)?.map_err(Error::from)?;
    for _ in 0..MAX_CLAIM_ATTEMPTS {
        let (mut record, version) = read_verified(&client, id, secret).await?;
        if let Some(lease) = inner.local(id)
            && record.home == inner.me.name
            && record.attachment == lease.attachment
        {
            // Already this attachment's (its task re-checks and confirms it).
            return Ok(lease);
        }
        let previous = std::mem::replace(&mut record.home, inner.me.name.clone());
        record.home_instance = inner.me.instance_id.clone();
        record.attachment = secret::new_attachment();
        match client.set_data(&path, &record.encode(), Some(version)).await {
            Ok(Some(stat)) => {
                tracing::info!(lease = id, from = %previous, "lease claimed");
                return Ok(inner.adopt(id, &record, stat.version, &client, identity).await);
            }
            Ok(None) => return Err(Error::LeaseNotFound),
            Err(zookeeper_client::Error::BadVersion) => continue,
            Err(err) => {
                let err = Error::from(err);
                if err.is_retryable() {
                    // The claim may have been written without our hearing of it; then nobody
                    // else expires the lease (its old home saw it move, the janitor sees this
                    // instance registered). Track it anyway, as `grant` does: with version -1
                    // its task trusts no write of ours, reads the record, and either expires
                    // the lease here (home is this instance) or lets it go (`Moved`).
                    inner.adopt(id, &record, -1, &client, identity).await;
                }
                return Err(err);
            }
        }
    }
    Err(Error::Unavailable)
}

/// Added to an owner's ttl and the longest proof window before an ownership withdrawn from it
/// is handed on without its acknowledgement: covers the watch and scheduling delays between a
/// proof's arrival and the heartbeat answers it stands for, and clock-rate differences.
const GRACE_MARGIN: Duration = Duration::from_millis(250);

/// How long after a withdrawal of an ownership (a deposition, a shard revocation) is first seen
/// it may be handed on without the owner's acknowledgement, for an owner whose lease has ttl
/// `ttl`: by then the owner has surely stopped acting on it. A heartbeat answer lists an
/// ownership only from a view current as of a proof begun at most [`crate::zk::proof::MAX_WINDOW`]
/// earlier ([`crate::zk::proven`]), so after the withdrawal `D` (which nobody sees before it
/// happens) no answer lists it after `D + MAX_WINDOW`, and the owner trusts the last one
/// listing it until that heartbeat's send time (earlier) + ttl.
pub fn validity_grace(ttl: Duration) -> Duration {
    ttl + crate::zk::proof::MAX_WINDOW + GRACE_MARGIN
}
