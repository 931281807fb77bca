//! The two streams of a group, as plain values: a member's own assignment as events
//! ([`MemberEvents`]) and the whole table ([`TableChanges`]). The gRPC handlers only translate.

use std::{collections::BTreeMap, sync::Arc};

use tokio::sync::watch;

use super::{
    MEMBER_NOT_FOUND, ShardEvent,
    follow::{GroupState, GroupWatch},
    table::{Owner, Table},
};
use crate::error::{Error, Result};

/// One message of a member's stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberUpdate {
    /// Numbers the updates of one stream: 1, 2, 3, ...
    pub sequence: u64,
    /// True for the first update: `events` list every shard owned (ASSIGNED) and every shard
    /// being revoked (REVOKE).
    pub snapshot: bool,
    /// The changes, in shard order.
    pub events: Vec<ShardEvent>,
    /// The group's shard count.
    pub shard_count: u32,
}

/// A member's own assignment, as events. Holds the group followed while it lives.
#[derive(Debug)]
pub struct MemberEvents {
    _watch: Arc<GroupWatch>,
    state: watch::Receiver<Arc<GroupState>>,
    owner: Owner,
    owned: BTreeMap<u32, u64>,
    revoking: BTreeMap<u32, u64>,
    sequence: u64,
    seen_member: bool,
}

impl MemberEvents {
    /// Events of `owner` in the group `watch` follows.
    pub fn new(watch: Arc<GroupWatch>, owner: Owner) -> Self {
        let state = watch.state.clone();
        Self {
            _watch: watch,
            state,
            owner,
            owned: BTreeMap::new(),
            revoking: BTreeMap::new(),
            sequence: 0,
            seen_member: false,
        }
    }

    /// The next update: the snapshot first (once the instance's state shows the membership),
    /// then each change of the member's shards. States that are not current (ZooKeeper
    /// unreachable) give nothing: the heartbeat says what the member may act on.
    ///
    /// # Errors
    /// [`Error::NotFound`] once the membership has ended; [`Error::ShuttingDown`].
    ///
    /// # Cancellation safety
    /// Safe to cancel: nothing is consumed until an update is returned.
    pub async fn next(&mut self) -> Result<MemberUpdate> {
        loop {
            let state = self.state.borrow_and_update().clone();
            if let Some(update) = self.update(&state)? {
                return Ok(update);
            }
            if self.state.changed().await.is_err() {
                return Err(Error::ShuttingDown);
            }
        }
    }

    fn update(&mut self, state: &GroupState) -> Result<Option<MemberUpdate>> {
        let Some(table) = state.table.as_ref().filter(|_| state.generation != 0 && state.exists) else {
            return Ok(None);
        };
        let present = state.members.get(&self.owner.member).is_some_and(|m| m.record.lease_id == self.owner.lease_id);
        if !present {
            return if self.seen_member { Err(Error::NotFound(MEMBER_NOT_FOUND)) } else { Ok(None) };
        }
        let owned: BTreeMap<u32, u64> = table.owned_by(&self.owner).into_iter().collect();
        let revoking: BTreeMap<u32, u64> = table.revoking(&self.owner).into_iter().collect();
        let snapshot = !self.seen_member;
        self.seen_member = true;
        let mut events = Vec::new();
        if snapshot {
            events.extend(owned.iter().map(|(&shard, &epoch)| ShardEvent::Assigned { shard, epoch }));
            events.extend(revoking.iter().map(|(&shard, &epoch)| ShardEvent::Revoke { shard, epoch }));
        } else {
            for (&shard, &epoch) in &self.owned {
                if owned.get(&shard) != Some(&epoch) {
                    events.push(ShardEvent::Revoke { shard, epoch });
                }
            }
            for (&shard, &epoch) in &owned {
                if self.owned.get(&shard) != Some(&epoch) {
                    events.push(ShardEvent::Assigned { shard, epoch });
                }
            }
        }
        self.owned = owned;
        self.revoking = revoking;
        if events.is_empty() && !snapshot {
            return Ok(None);
        }
        self.sequence += 1;
        Ok(Some(MemberUpdate { sequence: self.sequence, snapshot, events, shard_count: table.slots.len() as u32 }))
    }
}

/// A group's table at each change. Holds the group followed while it lives.
#[derive(Debug)]
pub struct TableChanges {
    _watch: Arc<GroupWatch>,
    state: watch::Receiver<Arc<GroupState>>,
    last: Option<Arc<Table>>,
    sent_empty: bool,
    sequence: u64,
}

impl TableChanges {
    /// Changes of the group `watch` follows.
    pub fn new(watch: Arc<GroupWatch>) -> Self {
        let state = watch.state.clone();
        Self { _watch: watch, state, last: None, sent_empty: false, sequence: 0 }
    }

    /// The next table, numbered (1, 2, 3, ...): the current one first, then each change; an
    /// empty table while the group does not exist. States that are not current give nothing.
    ///
    /// # Errors
    /// [`Error::ShuttingDown`].
    ///
    /// # Cancellation safety
    /// Safe to cancel.
    pub async fn next(&mut self) -> Result<(u64, Option<Arc<Table>>)> {
        loop {
            let state = self.state.borrow_and_update().clone();
            if state.generation != 0 {
                match state.table.as_ref().filter(|_| state.exists) {
                    Some(table) if self.last.as_ref().is_none_or(|last| !last.same_as(table)) => {
                        self.last = Some(table.clone());
                        self.sequence += 1;
                        return Ok((self.sequence, Some(table.clone())));
                    }
                    None if self.last.is_some() || !self.sent_empty => {
                        self.last = None;
                        self.sent_empty = true;
                        self.sequence += 1;
                        return Ok((self.sequence, None));
                    }
                    _ => {}
                }
            }
            if self.state.changed().await.is_err() {
                return Err(Error::ShuttingDown);
            }
        }
    }
}
