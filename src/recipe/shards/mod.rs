//! Shard groups: membership and shard assignment for hot/hot workers, with at most one valid
//! owner per shard and a per-shard epoch (see `proto/zkcoord/v1/shards.proto` and
//! `docs/shards.md`).
//!
//! * `/shards/<group>` holds the [`record::GroupRecord`]: shard count, drained members and the
//!   table ([`table::Table`]); one versioned record, so every assignment decision is one
//!   compare-and-set write and exactly one decision per group lands at a time.
//! * `/shards/<group>/members/<member>` holds each [`record::MemberRecord`], bound to its lease
//!   (a binding of the lease record owns it): the membership ends with the lease.
//! * Every instance that serves a call or a stream for a group, or heartbeats of its members,
//!   follows it with one [`follow::GroupWatch`] and assigns ([`table::Table::plan`] over
//!   [`assign::assign`]).
//! * Who may act as a shard's owner is decided by the lease's heartbeat answers, which list only
//!   ownerships proven current ([`ownership`]); Watch streams only notify.

pub mod assign;
pub mod follow;
pub mod ownership;
pub mod record;
pub mod stream;
pub mod table;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;
use zookeeper_client::CreateMode;

use self::{follow::Registry, ownership::Ownerships, record::GroupRecord, record::MemberRecord};
pub use self::{
    follow::{GroupState, GroupWatch, MemberView},
    ownership::ShardOwnership,
    table::{Owner, Slot, Table},
};
use crate::{
    error::{Error, Result},
    recipe::lease::{
        self,
        binding::{BindingRecord, Owned, Shown},
    },
    validate::Name,
    zk::{OpFailed, Proof, Zk, ZkSession, layout},
};

/// The kind of a membership's binding, as TimeToLive shows it.
pub const BINDING_KIND: &str = "shard-member";
/// The largest shard count.
pub const MAX_SHARDS: u32 = 65_536;
/// The largest member weight.
pub const MAX_WEIGHT: u32 = 1_000;
/// How long a call waits for a group's state to be read.
const LOAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a write retries after a concurrent change.
const MAX_ATTEMPTS: usize = 8;
/// The longest Leave waits for the member's shards to be handed off.
pub const MAX_LEAVE_WAIT: Duration = Duration::from_secs(30);

/// Not the group's shard count.
pub const OTHER_SHARD_COUNT: &str = "the group has another shard count";
/// The member id is bound to another lease.
pub const MEMBER_TAKEN: &str = "the member id is taken by another lease";
/// Release of a shard not being revoked.
pub const NOT_REVOKED: &str = "the shard is not being revoked from this member";
/// Release with an epoch the member does not hold.
pub const OLD_EPOCH: &str = "the member does not hold the shard with that epoch";
/// A shard number out of range.
pub const NO_SUCH_SHARD: &str = "no such shard in the group";

/// One membership, with the lease's secret.
#[derive(Clone, Debug)]
pub struct MemberKey {
    /// The group.
    pub group: Name,
    /// The member id.
    pub member_id: Name,
    /// The lease.
    pub lease_id: i64,
    /// The lease's secret.
    pub secret: String,
}

/// A Join.
#[derive(Clone, Debug)]
pub struct JoinRequest {
    /// Who joins.
    pub key: MemberKey,
    /// The group's shard count (1 to [`MAX_SHARDS`]).
    pub shard_count: u32,
    /// The member's weight (1 to [`MAX_WEIGHT`]).
    pub weight: u32,
    /// The member's labels.
    pub labels: BTreeMap<String, String>,
}

/// One change of a member's own assignment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardEvent {
    /// The member owns `shard` with `epoch`.
    Assigned {
        /// The shard.
        shard: u32,
        /// Its epoch.
        epoch: u64,
    },
    /// The member must stop working on `shard` and release it.
    Revoke {
        /// The shard.
        shard: u32,
        /// The epoch being revoked.
        epoch: u64,
    },
}

#[derive(Debug)]
pub(crate) struct Shared {
    session: ZkSession,
    shutdown: CancellationToken,
    registry: Registry,
    ownerships: Ownerships,
}

/// The shard recipe of one instance (per tenant). Cheap to clone.
#[derive(Clone, Debug)]
pub struct Shards {
    shared: Arc<Shared>,
}

impl Shards {
    /// The recipe over `session`; its tasks stop on `shutdown`.
    pub fn start(session: ZkSession, shutdown: CancellationToken) -> Self {
        let ownerships = Ownerships::new(session.clone());
        Self { shared: Arc::new(Shared { session, shutdown, registry: Registry::default(), ownerships }) }
    }

    /// The group's watch (started on first use).
    pub fn watch(&self, group: &Name) -> Arc<GroupWatch> {
        self.shared.registry.get(&self.shared, group)
    }

    /// The groups this instance follows now (for a call, a stream or heartbeats of their
    /// members), by name, with their watches: the latest state and the figures its task keeps
    /// ([`GroupWatch::unowned_shard_seconds`], [`GroupWatch::take_completed_handoffs`]). Reads
    /// memory only.
    pub fn followed(&self) -> Vec<(String, Arc<GroupWatch>)> {
        self.shared.registry.all()
    }

    /// The shards lease `lease_id` owns in `groups`, as this instance can prove them on
    /// `proof` (see [`ownership`]): `None` when it cannot tell. Keeps the groups followed, so
    /// that handoffs complete while members heartbeat here.
    ///
    /// # Cancellation safety
    /// Safe to cancel.
    pub async fn ownerships(&self, lease_id: i64, groups: &[Name], proof: Proof) -> Option<Vec<ShardOwnership>> {
        for group in groups {
            self.shared.registry.keep(&self.shared, group);
        }
        self.shared.ownerships.of(lease_id, groups, proof).await
    }

    /// Makes the lease a member of the group (creating the group), or updates the weight and
    /// labels of its existing membership. Returns the group's shard count.
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`], [`Error::WrongSecret`], [`Error::FailedPrecondition`] (another
    /// shard count, the member id bound to another lease), [`Error::Unavailable`].
    ///
    /// # Cancellation safety
    /// Every write is one transaction; a cancelled call did all of one or none of it. Nothing is
    /// written before the lease is verified.
    pub async fn join(&self, request: JoinRequest) -> Result<u32> {
        let client = self.shared.session.client()?;
        let key = &request.key;
        lease::read_verified(&client, key.lease_id, &key.secret).await?;
        let shard_count = ensure_group(&client, &self.shared.session, &key.group, request.shard_count).await?;
        if shard_count != request.shard_count {
            return Err(Error::FailedPrecondition(OTHER_SHARD_COUNT));
        }
        let path = layout::shard_member(&key.group, &key.member_id);
        let binding =
            format!("{}/{}", layout::lease(key.lease_id), layout::membership_binding(&key.group, &key.member_id));
        let binding_data = BindingRecord {
            owns: vec![Owned::Node { path: path.clone() }],
            shows: vec![Shown {
                kind: BINDING_KIND.to_owned(),
                name: key.group.as_str().to_owned(),
                id: key.member_id.as_str().to_owned(),
            }],
        }
        .encode();
        let record = MemberRecord {
            lease_id: key.lease_id,
            weight: request.weight.max(1),
            labels: request.labels.clone(),
            leaving: false,
        };
        let data = record::encode(&record)?;
        let persistent = CreateMode::Persistent.with_acls(self.shared.session.acls());
        for _ in 0..MAX_ATTEMPTS {
            let (_, lease_version) = lease::read_verified(&client, key.lease_id, &key.secret).await?;
            let mut multi = client.multi();
            multi.add_check_version(&layout::lease(key.lease_id), lease_version)?;
            multi.add_create(&path, &data, &persistent)?;
            multi.add_create(&binding, &binding_data, &persistent)?;
            match multi.commit().await? {
                Ok(_) => {
                    self.watch(&key.group).poke();
                    return Ok(shard_count);
                }
                Err(OpFailed { index: 0, .. }) => continue, // the lease changed
                Err(OpFailed { index: 1, error: zookeeper_client::Error::NodeExists }) => {
                    let Some((existing, stat)) = client.get_data(&path).await? else { continue };
                    let existing: MemberRecord = record::decode(&existing)?;
                    if existing.lease_id != key.lease_id {
                        return Err(Error::FailedPrecondition(MEMBER_TAKEN));
                    }
                    match client.set_data(&path, &data, Some(stat.version)).await {
                        Ok(Some(_)) => {
                            self.watch(&key.group).poke();
                            return Ok(shard_count);
                        }
                        Ok(None) | Err(zookeeper_client::Error::BadVersion) => continue,
                        Err(err) => return Err(err.into()),
                    }
                }
                Err(OpFailed { index: 1, error: zookeeper_client::Error::NoNode }) => {
                    continue; // the group was deleted meanwhile (never today): create it again
                }
                Err(OpFailed { error, .. }) => return Err(error.into()),
            }
        }
        Err(Error::Unavailable)
    }

    /// Ends a membership gracefully: marks it leaving (it gets no shards; its shards are
    /// revoked), then waits up to `wait` for the group's assigners to end it once it owns
    /// nothing. Returns whether it has ended; a membership already gone counts as ended.
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`], [`Error::WrongSecret`], [`Error::Unavailable`].
    ///
    /// # Cancellation safety
    /// The mark is one write; a cancelled call leaves the membership leaving (it ends as above).
    pub async fn leave(&self, key: &MemberKey, wait: Duration) -> Result<bool> {
        let client = self.shared.session.client()?;
        lease::read_verified(&client, key.lease_id, &key.secret).await?;
        if !mark_leaving(&client, &key.group, &key.member_id, key.lease_id).await? {
            return Ok(true);
        }
        let watch = self.watch(&key.group);
        watch.poke();
        let mut state = watch.state.clone();
        let member = key.member_id.as_str().to_owned();
        let lease_id = key.lease_id;
        let gone = tokio::time::timeout(wait.min(MAX_LEAVE_WAIT), async {
            loop {
                {
                    let s = state.borrow_and_update();
                    if s.generation != 0
                        && s.exists
                        && s.members.get(&member).is_none_or(|m| m.record.lease_id != lease_id)
                    {
                        return;
                    }
                }
                if state.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        })
        .await;
        Ok(gone.is_ok())
    }

    /// Ends membership `member_id` of lease `lease_id` in `group` on zkcoord's own initiative
    /// (the identity that joined lost its rights on the group: the `authz_file` changed), as a
    /// Leave would, without its lease secret: the member is marked leaving, so it gets no
    /// shards and its shards are revoked, each handed on only once released or after its
    /// owner's validity ran out (the handoff rule), and the group's assigners end the membership
    /// once it owns nothing. Does not wait for that.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    ///
    /// # Cancellation safety
    /// The mark is one write: made or not.
    pub async fn withdraw(&self, group: &Name, member_id: &Name, lease_id: i64) -> Result<()> {
        let client = self.shared.session.client()?;
        if mark_leaving(&client, group, member_id, lease_id).await? {
            tracing::info!(%group, member = %member_id, "member leaving: its rights were withdrawn");
            self.watch(group).poke();
        }
        Ok(())
    }

    /// Acknowledges the revocation of `shards` (each `(shard, epoch held with)`): their next
    /// owners are assigned in the same write, all or none.
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`], [`Error::WrongSecret`], [`Error::NotFound`] (no such group),
    /// [`Error::InvalidArgument`]-like [`Error::FailedPrecondition`]s: [`NO_SUCH_SHARD`],
    /// [`NOT_REVOKED`], [`OLD_EPOCH`]; [`Error::Unavailable`].
    ///
    /// # Cancellation safety
    /// Once handed to the group's task the release is written (all of it or none) whether or
    /// not the call is cancelled; its owner has given the shards up either way.
    pub async fn release(&self, key: &MemberKey, shards: &[(u32, u64)]) -> Result<()> {
        let client = self.shared.session.client()?;
        lease::read_verified(&client, key.lease_id, &key.secret).await?;
        let owner = Owner { member: key.member_id.as_str().to_owned(), lease_id: key.lease_id };
        // The group's task writes it, together with the releases of other members that arrive
        // meanwhile and the assignment of the released shards: one write (and one epoch) for
        // many releases, and no compare-and-set race between concurrent Release calls.
        let watch = self.watch(&key.group);
        match tokio::time::timeout(LOAD_TIMEOUT, watch.release(owner, shards.to_vec())).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(Error::ShuttingDown),
            Err(_) => Err(Error::Unavailable),
        }
    }

    /// Drains (`drained`) or undrains member id `member_id` of `group`.
    ///
    /// # Errors
    /// [`Error::NotFound`] (no such group), [`Error::Unavailable`].
    ///
    /// # Cancellation safety
    /// One compare-and-set write.
    pub async fn set_drained(&self, group: &Name, member_id: &Name, drained: bool) -> Result<()> {
        let client = self.shared.session.client()?;
        let path = layout::shard_group(group);
        for _ in 0..MAX_ATTEMPTS {
            let (mut table, version) = read_table(&client, group).await?;
            let changed = if drained {
                table.drained.insert(member_id.as_str().to_owned())
            } else {
                table.drained.remove(member_id.as_str())
            };
            if !changed {
                return Ok(());
            }
            let data = record::encode(&GroupRecord::of(&table))?;
            match client.set_data(&path, &data, Some(version)).await {
                Ok(Some(_)) => {
                    self.watch(group).poke();
                    return Ok(());
                }
                Err(zookeeper_client::Error::BadVersion) => continue,
                Ok(None) => return Err(Error::NotFound(GROUP_NOT_FOUND)),
                Err(err) => return Err(err.into()),
            }
        }
        Err(Error::Unavailable)
    }

    /// The group's current state, as this instance follows it.
    ///
    /// # Errors
    /// [`Error::NotFound`] (no such group), [`Error::Unavailable`] (not read within 10 s).
    pub async fn state(&self, group: &Name) -> Result<Arc<GroupState>> {
        let watch = self.watch(group);
        let state = current(&watch).await?;
        if !state.exists {
            return Err(Error::NotFound(GROUP_NOT_FOUND));
        }
        Ok(state)
    }

    /// A member's own assignment as events (see [`stream::MemberEvents`]), after verifying its
    /// key: the lease and its secret, and that the membership exists.
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`], [`Error::WrongSecret`], [`Error::NotFound`] (no such group or
    /// membership), [`Error::Unavailable`].
    pub async fn member_events(&self, key: &MemberKey) -> Result<stream::MemberEvents> {
        let client = self.shared.session.client()?;
        lease::read_verified(&client, key.lease_id, &key.secret).await?;
        let path = layout::shard_member(&key.group, &key.member_id);
        match client.get_data(&path).await {
            Ok(Some((data, _))) => {
                let record: MemberRecord = record::decode(&data)?;
                if record.lease_id != key.lease_id {
                    return Err(Error::NotFound(MEMBER_NOT_FOUND));
                }
            }
            Ok(None) => return Err(Error::NotFound(MEMBER_NOT_FOUND)),
            Err(err) => return Err(err.into()),
        }
        let owner = Owner { member: key.member_id.as_str().to_owned(), lease_id: key.lease_id };
        Ok(stream::MemberEvents::new(self.watch(&key.group), owner))
    }

    /// The group's table at each change (see [`stream::TableChanges`]).
    pub fn table_changes(&self, group: &Name) -> stream::TableChanges {
        stream::TableChanges::new(self.watch(group))
    }
}

/// No such group.
pub const GROUP_NOT_FOUND: &str = "shard group not found";
/// No such membership.
pub const MEMBER_NOT_FOUND: &str = "shard group member not found";

/// Waits (at most [`LOAD_TIMEOUT`]) for a current state of `watch`.
async fn current(watch: &GroupWatch) -> Result<Arc<GroupState>> {
    let mut state = watch.state.clone();
    tokio::time::timeout(LOAD_TIMEOUT, async {
        loop {
            {
                let s = state.borrow_and_update();
                if s.generation != 0 {
                    return Ok(s.clone());
                }
            }
            if state.changed().await.is_err() {
                return Err(Error::ShuttingDown);
            }
        }
    })
    .await
    .map_err(|_| Error::Unavailable)?
}

/// Reads the group's table and its version.
async fn read_table(client: &Zk, group: &Name) -> Result<(Table, i32)> {
    let path = layout::shard_group(group);
    match client.get_data(&path).await {
        Ok(Some((data, stat))) => {
            let record: GroupRecord = record::decode(&data)?;
            Ok((record.table(u64::try_from(stat.mzxid).unwrap_or(0))?, stat.version))
        }
        Ok(None) => Err(Error::NotFound(GROUP_NOT_FOUND)),
        Err(err) => Err(err.into()),
    }
}

/// Creates the group with `shards` shards unless it exists; returns its shard count.
async fn ensure_group(client: &Zk, session: &ZkSession, group: &Name, shards: u32) -> Result<u32> {
    let path = layout::shard_group(group);
    if let Some((data, _)) = client.get_data(&path).await? {
        let record: GroupRecord = record::decode(&data)?;
        return Ok(record.shards);
    }
    let persistent = CreateMode::Persistent.with_acls(session.acls());
    let data = record::encode(&GroupRecord::of(&Table::new(shards)))?;
    let mut multi = client.multi();
    multi.add_create(&path, &data, &persistent)?;
    multi.add_create(&layout::shard_members(group), &[], &persistent)?;
    match multi.commit().await? {
        Ok(_) => Ok(shards),
        Err(OpFailed { index: 0, error: zookeeper_client::Error::NodeExists }) => {
            let (data, _) = client.get_data(&path).await?.ok_or(Error::Unavailable)?;
            Ok(record::decode::<GroupRecord>(&data)?.shards)
        }
        Err(OpFailed { error, .. }) => Err(error.into()),
    }
}

/// Ends a membership (its record and its binding), if its record is unchanged since read; a
/// binding already gone (the lease ended) leaves the record to delete alone.
async fn end_membership(client: &Zk, group: &Name, member: &MemberView) -> Result<()> {
    let Ok(member_id) = Name::parse("member", &member.id) else { return Ok(()) };
    let path = layout::shard_member(group, &member_id);
    let binding =
        format!("{}/{}", layout::lease(member.record.lease_id), layout::membership_binding(group, &member_id));
    let mut multi = client.multi();
    multi.add_delete(&path, Some(member.version))?;
    multi.add_delete(&binding, None)?;
    match multi.commit().await? {
        Ok(_) => Ok(()),
        Err(OpFailed { index: 1, error: zookeeper_client::Error::NoNode }) => {
            match client.delete(&path, Some(member.version)).await {
                Ok(_) | Err(zookeeper_client::Error::BadVersion) => Ok(()),
                Err(err) => Err(err.into()),
            }
        }
        Err(OpFailed { error: zookeeper_client::Error::NoNode | zookeeper_client::Error::BadVersion, .. }) => Ok(()),
        Err(OpFailed { error, .. }) => Err(error.into()),
    }
}

/// Marks the membership of `member_id` by `lease_id` in `group` leaving; `false` when there is
/// no such membership (gone, or another lease's).
async fn mark_leaving(client: &Zk, group: &Name, member_id: &Name, lease_id: i64) -> Result<bool> {
    let path = layout::shard_member(group, member_id);
    for _ in 0..MAX_ATTEMPTS {
        let Some((data, stat)) = client.get_data(&path).await? else { return Ok(false) };
        let mut record: MemberRecord = record::decode(&data)?;
        if record.lease_id != lease_id {
            return Ok(false); // this lease's membership is gone; another lease's is not ours
        }
        if record.leaving {
            return Ok(true);
        }
        record.leaving = true;
        match client.set_data(&path, &record::encode(&record)?, Some(stat.version)).await {
            Ok(Some(_)) => return Ok(true),
            Err(zookeeper_client::Error::BadVersion) => {}
            Ok(None) => return Ok(false),
            Err(err) => return Err(err.into()),
        }
    }
    Ok(true) // as before: the assigners judge the record as it is
}
