//! `zkcoord.v1.Shards`: validates, calls [`crate::recipe::shards`], copies into protobuf.

use std::{collections::BTreeMap, ops::Bound, time::Duration};

use tonic::{Request, Response, Status};

use super::{Caller, Context, ResponseStream, convert::health_to_pb};
use crate::{
    authz::{Access, Resource},
    error::{Error, Result},
    pb::v1::{self as pb, shards_server},
    recipe::shards::{self, JoinRequest, MemberKey, ShardEvent, Slot, Table},
    validate::{
        self, Name,
        page::{self, Call, Page},
    },
};

/// Responses buffered per stream before the client must read.
const STREAM_BUFFER: usize = 16;
/// The most labels a member may carry, and the longest label value.
const MAX_LABELS: usize = 16;
const MAX_LABEL_VALUE: usize = 256;

/// The Shards service.
#[derive(Clone, Debug)]
pub struct ShardsService {
    ctx: Context,
}

impl ShardsService {
    /// A Shards service over `ctx`.
    pub fn new(ctx: Context) -> Self {
        Self { ctx }
    }
}

fn member_key(key: Option<&pb::MemberKey>) -> Result<MemberKey> {
    let key = key.ok_or(Error::invalid("key", "is required"))?;
    let lease = key.lease.as_ref().ok_or(Error::invalid("key.lease", "is required"))?;
    let lease_id = validate::lease_id("key.lease.id", lease.id)?;
    validate::secret("key.lease.secret", &lease.secret)?;
    Ok(MemberKey {
        group: Name::parse("key.group", &key.group)?,
        member_id: Name::parse("key.member_id", &key.member_id)?,
        lease_id,
        secret: lease.secret.clone(),
    })
}

fn join_request(req: pb::JoinRequest) -> Result<JoinRequest> {
    let key = member_key(req.key.as_ref())?;
    if req.shard_count == 0 || req.shard_count > shards::MAX_SHARDS {
        return Err(Error::invalid("shard_count", "must be 1 to 65536"));
    }
    if req.weight > shards::MAX_WEIGHT {
        return Err(Error::invalid("weight", "must be at most 1000"));
    }
    if req.labels.len() > MAX_LABELS {
        return Err(Error::invalid("labels", "has more than 16 entries"));
    }
    let mut labels = BTreeMap::new();
    for (name, value) in req.labels {
        Name::parse("labels", &name)?;
        if value.len() > MAX_LABEL_VALUE {
            return Err(Error::invalid("labels", "has a value longer than 256 bytes"));
        }
        labels.insert(name, value);
    }
    Ok(JoinRequest { key, shard_count: req.shard_count, weight: req.weight.max(1), labels })
}

fn event(event: &ShardEvent) -> pb::ShardEvent {
    let (kind, shard, epoch) = match *event {
        ShardEvent::Assigned { shard, epoch } => (pb::shard_event::Kind::Assigned, shard, epoch),
        ShardEvent::Revoke { shard, epoch } => (pb::shard_event::Kind::Revoke, shard, epoch),
    };
    pb::ShardEvent { kind: kind.into(), shard, epoch }
}

/// The table as ranges of equal consecutive slots.
fn ranges(table: &Table) -> Vec<pb::ShardRange> {
    let name = |i: u32| table.owner(i).map(|o| o.member.clone()).unwrap_or_default();
    let mut out: Vec<pb::ShardRange> = Vec::new();
    for (shard, slot) in table.slots.iter().enumerate() {
        let shard = shard as u32;
        let (state, owner, epoch, target) = match *slot {
            Slot::Unassigned => (pb::ShardState::Unassigned, String::new(), 0, String::new()),
            Slot::Owned { owner, epoch } => (pb::ShardState::Owned, name(owner), epoch, String::new()),
            Slot::HandingOff { owner, epoch, target } => (pb::ShardState::HandingOff, name(owner), epoch, name(target)),
        };
        match out.last_mut() {
            Some(last)
                if last.last + 1 == shard
                    && last.state == i32::from(state)
                    && last.owner == owner
                    && last.epoch == epoch
                    && last.target == target =>
            {
                last.last = shard;
            }
            _ => out.push(pb::ShardRange { first: shard, last: shard, state: state.into(), owner, epoch, target }),
        }
    }
    out
}

#[tonic::async_trait]
impl shards_server::Shards for ShardsService {
    type WatchStream = ResponseStream<pb::WatchResponse>;
    type ObserveStream = ResponseStream<pb::ObserveGroupResponse>;

    async fn join(&self, request: Request<pb::JoinRequest>) -> Result<Response<pb::JoinResponse>, Status> {
        let tenant = self.ctx.recipes(&request)?;
        let caller = Caller::of(&request);
        let req = join_request(request.into_inner())?;
        self.ctx.authorize(&caller, &tenant, Resource::ShardGroup, Access::Write, [&req.key.group])?;
        let (group, member_id, lease_id) = (req.key.group.clone(), req.key.member_id.clone(), req.key.lease_id);
        let shard_count = tenant.shards.join(req).await?;
        self.ctx.granted_member(&caller, &tenant, &group, &member_id, lease_id);
        Ok(Response::new(pb::JoinResponse { shard_count }))
    }

    async fn leave(&self, request: Request<pb::LeaveRequest>) -> Result<Response<pb::LeaveResponse>, Status> {
        let tenant = self.ctx.recipes(&request)?;
        let caller = Caller::of(&request);
        let req = request.into_inner();
        let key = member_key(req.key.as_ref())?;
        self.ctx.authorize(&caller, &tenant, Resource::ShardGroup, Access::Write, [&key.group])?;
        if req.wait_ms < 0 {
            return Err(Error::invalid("wait_ms", "must not be negative").into());
        }
        let wait = if req.wait_ms == 0 { shards::MAX_LEAVE_WAIT } else { Duration::from_millis(req.wait_ms as u64) };
        let left = tenant.shards.leave(&key, wait).await?;
        if left {
            self.ctx.holdings.remove_member(
                tenant.tenant.clone(),
                key.group.clone(),
                key.member_id.clone(),
                key.lease_id,
            );
        }
        Ok(Response::new(pb::LeaveResponse { left }))
    }

    async fn release(&self, request: Request<pb::ReleaseRequest>) -> Result<Response<pb::ReleaseResponse>, Status> {
        let tenant = self.ctx.recipes(&request)?;
        let caller = Caller::of(&request);
        let req = request.into_inner();
        let key = member_key(req.key.as_ref())?;
        self.ctx.authorize(&caller, &tenant, Resource::ShardGroup, Access::Write, [&key.group])?;
        if req.shards.is_empty() || req.shards.len() > shards::MAX_SHARDS as usize {
            return Err(Error::invalid("shards", "must list 1 to 65536 shards").into());
        }
        let mut released: Vec<(u32, u64)> = req.shards.iter().map(|s| (s.shard, s.epoch)).collect();
        if released.iter().any(|(_, epoch)| *epoch == 0) {
            return Err(Error::invalid("shards.epoch", "is required").into());
        }
        released.sort_unstable();
        if released.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(Error::invalid("shards", "lists a shard twice").into());
        }
        tenant.shards.release(&key, &released).await?;
        Ok(Response::new(pb::ReleaseResponse {}))
    }

    async fn drain(&self, request: Request<pb::DrainRequest>) -> Result<Response<pb::DrainResponse>, Status> {
        let tenant = self.ctx.recipes(&request)?;
        let caller = Caller::of(&request);
        let group = Name::parse("group", &request.get_ref().group)?;
        let member = Name::parse("member_id", &request.get_ref().member_id)?;
        self.ctx.authorize(&caller, &tenant, Resource::ShardGroup, Access::Write, [&group])?;
        tenant.shards.set_drained(&group, &member, true).await?;
        Ok(Response::new(pb::DrainResponse {}))
    }

    async fn undrain(&self, request: Request<pb::UndrainRequest>) -> Result<Response<pb::UndrainResponse>, Status> {
        let tenant = self.ctx.recipes(&request)?;
        let caller = Caller::of(&request);
        let group = Name::parse("group", &request.get_ref().group)?;
        let member = Name::parse("member_id", &request.get_ref().member_id)?;
        self.ctx.authorize(&caller, &tenant, Resource::ShardGroup, Access::Write, [&group])?;
        tenant.shards.set_drained(&group, &member, false).await?;
        Ok(Response::new(pb::UndrainResponse {}))
    }

    async fn watch(&self, request: Request<pb::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let tenant = self.ctx.recipes(&request)?;
        let caller = Caller::of(&request);
        let key = member_key(request.get_ref().key.as_ref())?;
        self.ctx.authorize(&caller, &tenant, Resource::ShardGroup, Access::Write, [&key.group])?;
        let names = vec![key.group.as_str().to_owned()];
        let withdrawn = self.ctx.withdrawn(&caller, tenant.tenant.clone(), Resource::ShardGroup, Access::Write, names);
        let permit = self.ctx.limits.observe_stream()?;
        let mut events = tenant.shards.member_events(&key).await?;
        let (tx, stream) = super::stream_channel(STREAM_BUFFER);
        let shutdown = self.ctx.shutdown.clone();
        tokio::spawn(async move {
            // Counted until the stream ends or its client leaves.
            let _permit = permit;
            tokio::pin!(withdrawn);
            loop {
                let next = tokio::select! {
                    next = events.next() => next,
                    () = shutdown.cancelled() => Err(Error::ShuttingDown),
                    message = &mut withdrawn => Err(Error::NotAuthorized(message)),
                    () = tx.closed() => return,
                };
                let (item, last) = match next {
                    Ok(update) => (
                        Ok(pb::WatchResponse {
                            sequence: update.sequence,
                            snapshot: update.snapshot,
                            events: update.events.iter().map(event).collect(),
                            shard_count: update.shard_count,
                        }),
                        false,
                    ),
                    Err(err) => (Err(err.into()), true),
                };
                if tx.send(item).await.is_err() || last {
                    return;
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn observe(
        &self,
        request: Request<pb::ObserveGroupRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let tenant = self.ctx.recipes(&request)?;
        let caller = Caller::of(&request);
        let group = Name::parse("group", &request.get_ref().group)?;
        self.ctx.authorize(&caller, &tenant, Resource::ShardGroup, Access::Read, [&group])?;
        let names = vec![group.as_str().to_owned()];
        let withdrawn = self.ctx.withdrawn(&caller, tenant.tenant.clone(), Resource::ShardGroup, Access::Read, names);
        let permit = self.ctx.limits.observe_stream()?;
        let mut changes = tenant.shards.table_changes(&group);
        let (tx, stream) = super::stream_channel(STREAM_BUFFER);
        let shutdown = self.ctx.shutdown.clone();
        tokio::spawn(async move {
            // Counted until the stream ends or its client leaves.
            let _permit = permit;
            tokio::pin!(withdrawn);
            loop {
                let next = tokio::select! {
                    next = changes.next() => next,
                    () = shutdown.cancelled() => Err(Error::ShuttingDown),
                    message = &mut withdrawn => Err(Error::NotAuthorized(message)),
                    () = tx.closed() => return,
                };
                let (item, last) = match next {
                    Ok((sequence, table)) => (
                        Ok(pb::ObserveGroupResponse {
                            sequence,
                            shard_count: table.as_ref().map_or(0, |t| t.slots.len() as u32),
                            ranges: table.as_deref().map(ranges).unwrap_or_default(),
                        }),
                        false,
                    ),
                    Err(err) => (Err(err.into()), true),
                };
                if tx.send(item).await.is_err() || last {
                    return;
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn members(&self, request: Request<pb::MembersRequest>) -> Result<Response<pb::MembersResponse>, Status> {
        let tenant = self.ctx.recipes(&request)?;
        let req = request.get_ref();
        let group = Name::parse("group", &req.group)?;
        self.ctx.authorize(&Caller::of(&request), &tenant, Resource::ShardGroup, Access::Read, [&group])?;
        let page = Page::parse(Call::Members, req.page_size, &req.page_token)?;
        let after = page.after_parsed(|after| Name::parse("page_token", after).ok())?;
        let state = tenant.shards.state(&group).await?;
        let table = state.table.clone().ok_or(Error::Unavailable)?;
        let mut following = match &after {
            Some(after) => state.members.range::<str, _>((Bound::Excluded(after.as_str()), Bound::Unbounded)),
            None => state.members.range::<str, _>(..),
        };
        let listed: Vec<_> = following.by_ref().take(page.size).map(|(_, m)| m.clone()).collect();
        let next_page_token = match (following.next(), listed.last()) {
            (Some(_), Some(last)) => page::token(Call::Members, &last.id),
            _ => String::new(),
        };
        let members = listed
            .iter()
            .map(|m| pb::MemberInfo {
                member_id: m.id.clone(),
                lease_id: m.record.lease_id,
                weight: m.record.weight,
                labels: m.record.labels.clone(),
                health: m.health.as_ref().map(health_to_pb),
                drained: table.drained.contains(&m.id),
                leaving: m.record.leaving,
                owned: table.owned_by(&m.owner()).len() as u32,
            })
            .collect();
        Ok(Response::new(pb::MembersResponse {
            shard_count: table.slots.len() as u32,
            members,
            drained: table.drained.iter().cloned().collect(),
            next_page_token,
        }))
    }

    async fn assignment(
        &self,
        request: Request<pb::AssignmentRequest>,
    ) -> Result<Response<pb::AssignmentResponse>, Status> {
        let tenant = self.ctx.recipes(&request)?;
        let group = Name::parse("group", &request.get_ref().group)?;
        self.ctx.authorize(&Caller::of(&request), &tenant, Resource::ShardGroup, Access::Read, [&group])?;
        let state = tenant.shards.state(&group).await?;
        let table = state.table.clone().ok_or(Error::Unavailable)?;
        Ok(Response::new(pb::AssignmentResponse { shard_count: table.slots.len() as u32, ranges: ranges(&table) }))
    }
}
