//! `zkcoord.v1.Lease`: validates, calls [`crate::recipe::lease`], copies into protobuf.

use std::sync::Arc;

use tonic::{Request, Response, Status, Streaming};

use super::{
    Caller, Context, ResponseStream,
    convert::{health_from_pb, health_to_pb, millis},
    guarded::Guarded,
};
use crate::{
    authz::{Access, Resource},
    error::{Error, Result},
    pb::v1::{self as pb, lease_server},
    recipe::{
        election::{self, Leadership},
        lease::{GrantRequest, LeaseView, LocalLease, binding::Shown, named::NameKind, secret},
        lock,
        shards::{self, ShardOwnership},
    },
    tenant::Recipes,
    validate::{
        self, Name,
        page::{self, Call, Page},
        proto::{self, LeaseCredentials},
    },
};

/// What a KeepAlive stream holds between heartbeats.
struct Heartbeats {
    /// The stream's first answer, until sent (boxed: 8 bytes while the stream idles).
    first: Option<Box<pb::KeepAliveResponse>>,
    service: LeaseService,
    tenant: Arc<Recipes>,
    lease: Arc<LocalLease>,
    credentials: LeaseCredentials,
    inbound: Streaming<pb::KeepAliveRequest>,
}

/// The Lease service. Cloned into every KeepAlive stream, so the context is shared (an idle
/// lease holds one pointer to it, not a copy).
#[derive(Clone, Debug)]
pub struct LeaseService {
    ctx: Arc<Context>,
}

impl LeaseService {
    /// A Lease service over `ctx`.
    pub fn new(ctx: Context) -> Self {
        Self { ctx: Arc::new(ctx) }
    }
}

fn grant_request(req: pb::GrantRequest) -> Result<GrantRequest> {
    let ttl = validate::ttl("ttl_ms", req.ttl_ms)?;
    Name::parse("owner", &req.owner)?;
    validate::metadata("metadata", &req.metadata)?;
    proto::health(req.health.as_ref(), "health")?;
    Ok(GrantRequest { owner: req.owner, ttl, metadata: req.metadata, health: health_from_pb(req.health.as_ref()) })
}

fn lease_info(view: LeaseView) -> pb::LeaseInfo {
    let (remaining, since) = view.liveness.map_or((-1, -1), |(remaining, since)| (millis(remaining), millis(since)));
    pb::LeaseInfo {
        lease_id: view.id,
        granted_ttl_ms: i64::try_from(view.record.ttl_ms).unwrap_or(i64::MAX),
        remaining_ttl_ms: remaining,
        since_heartbeat_ms: since,
        health: Some(health_to_pb(&view.health)),
        instance: view.record.home_instance,
        granted_unix_ms: view.record.granted_unix_ms,
        owner: view.record.owner,
        metadata: view.record.metadata,
    }
}

#[tonic::async_trait]
impl lease_server::Lease for LeaseService {
    async fn grant(&self, request: Request<pb::GrantRequest>) -> Result<Response<pb::GrantResponse>, Status> {
        let tenant = self.ctx.recipes(&request)?;
        let caller = Caller::of(&request);
        let identity = caller.shared_identity();
        let grant = grant_request(request.into_inner())?;
        self.ctx.authorize_str(&caller, &tenant, Resource::Lease, Access::Write, &grant.owner)?;
        self.ctx.limits.grants.turn(tenant.tenant.as_deref(), identity.clone()).await?;
        let granted = tenant.leases.grant(grant, identity).await?;
        Ok(Response::new(pb::GrantResponse {
            lease_id: granted.id,
            secret: granted.secret,
            ttl_ms: millis(granted.ttl),
            instance: self.ctx.instance_id.clone(),
        }))
    }

    type KeepAliveStream = ResponseStream<pb::KeepAliveResponse>;

    async fn keep_alive(
        &self,
        request: Request<Streaming<pb::KeepAliveRequest>>,
    ) -> Result<Response<Self::KeepAliveStream>, Status> {
        let tenant = self.ctx.recipes(&request)?;
        let caller = Caller::of(&request);
        let identity = caller.shared_identity();
        // Callers without any lease right cost no ZooKeeper read; the owner is known once the
        // lease is attached (attaching reads its record anyway).
        self.ctx.authorize_some(&caller, &tenant, Resource::Lease, Access::Write)?;
        let mut inbound = request.into_inner();
        let first =
            inbound.message().await?.ok_or(Error::invalid("lease", "the stream must start with a heartbeat"))?;
        let credentials = proto::lease_ref(first.lease.as_ref(), &proto::LEASE)?;
        proto::health(first.health.as_ref(), "health")?;
        let lease = tenant.leases.attach(credentials.id, &credentials.secret, identity).await?;
        self.ctx.authorize_str(&caller, &tenant, Resource::Lease, Access::Write, &lease.owner)?;
        // Rights withdrawn later end the stream: heartbeats stop being answered here, and new
        // streams are refused, so the lease ends after its ttl, as if its owner had stopped.
        let names = vec![lease.owner.clone()];
        let withdrawn = self.ctx.withdrawn(&caller, tenant.tenant.clone(), Resource::Lease, Access::Write, names);
        let first_ack = self.ack(&tenant, &lease, &first).await?;

        // Heartbeats are read and answered where the HTTP/2 stream polls the response (see
        // [`Guarded`]): no task or channel per lease (about 2 KiB of an idle lease's memory).
        //
        // Cancellation (the client resets the stream, or the connection closes): the answer
        // being made is dropped. That is safe: an answer confers nothing until the client has
        // it, and what answering did before (the heartbeat recorded, the lease's expiry pushed
        // back) is what a task would have done before finding the client gone. A client that
        // stops reading stops being polled, so its heartbeats stop being read and its lease
        // runs out, as with a full channel before.
        let first = Some(Box::new(first_ack));
        let heartbeats = Heartbeats { first, service: self.clone(), tenant, lease, credentials, inbound };
        let answers = futures_util::stream::unfold(heartbeats, |mut h| async move {
            if let Some(first) = h.first.take() {
                return Some((Ok(*first), h));
            }
            let outcome = tokio::select! {
                // The lease's end first: a heartbeat racing a move must not be answered as if
                // the lease were gone.
                biased;
                end = h.lease.ended() => Err(end.error().into()),
                message = h.inbound.message() => match message {
                    // Boxed: the stream idles far longer than it answers, and its size is that
                    // of its largest await (answering reads ZooKeeper for leaderships and
                    // shard ownerships, kilobytes of state).
                    Ok(Some(request)) => Box::pin(h.service.heartbeat(&h.tenant, &h.lease, &h.credentials, &request)).await,
                    Ok(None) | Err(_) => return None, // the client went away; the lease lives on until its ttl
                },
            };
            Some((outcome, h))
        });
        // Shutdown and withdrawn rights are judged before every answer; the client's end
        // (it stopped sending) ends the stream with OK.
        let shutdown = self.ctx.shutdown.clone().cancelled_owned();
        Ok(Response::new(Box::pin(Guarded::until_source_ends(answers, shutdown, withdrawn, ()))))
    }

    async fn revoke(&self, request: Request<pb::RevokeRequest>) -> Result<Response<pb::RevokeResponse>, Status> {
        let tenant = self.ctx.recipes(&request)?;
        let caller = Caller::of(&request);
        self.ctx.authorize_some(&caller, &tenant, Resource::Lease, Access::Write)?;
        let credentials = proto::lease_ref(request.get_ref().lease.as_ref(), &proto::LEASE)?;
        let authorize = |owner: &str| self.ctx.authorize_str(&caller, &tenant, Resource::Lease, Access::Write, owner);
        tenant.leases.revoke(credentials.id, &credentials.secret, authorize).await?;
        Ok(Response::new(pb::RevokeResponse {}))
    }

    async fn time_to_live(
        &self,
        request: Request<pb::TimeToLiveRequest>,
    ) -> Result<Response<pb::TimeToLiveResponse>, Status> {
        let tenant = self.ctx.recipes(&request)?;
        let caller = Caller::of(&request);
        self.ctx.authorize_some(&caller, &tenant, Resource::Lease, Access::Read)?;
        let id = validate::lease_id("lease_id", request.get_ref().lease_id)?;
        let view = tenant.leases.time_to_live(id).await?;
        self.ctx.authorize_str(&caller, &tenant, Resource::Lease, Access::Read, &view.record.owner)?;
        let bindings = view.bindings.iter().filter_map(binding).collect();
        Ok(Response::new(pb::TimeToLiveResponse { lease: Some(lease_info(view)), bindings }))
    }

    async fn list(&self, request: Request<pb::ListRequest>) -> Result<Response<pb::ListResponse>, Status> {
        let tenant = self.ctx.recipes(&request)?;
        let caller = Caller::of(&request);
        self.ctx.authorize_some(&caller, &tenant, Resource::Lease, Access::Read)?;
        let readable = self.ctx.filter(&caller, &tenant, Resource::Lease, Access::Read);
        let req = request.get_ref();
        let page = Page::parse(Call::Leases, req.page_size, &req.page_token)?;
        let after = page.after_parsed(|after| after.parse::<i64>().ok())?;
        // Leases the caller may not read are left out of the page (which may then hold fewer
        // than `page_size`; the token still continues after the last lease read).
        let (leases, next) = tenant.leases.list(after, page.size).await?;
        Ok(Response::new(pb::ListResponse {
            leases: leases
                .into_iter()
                .filter(|view| readable.as_ref().is_none_or(|readable| readable(&view.record.owner)))
                .map(lease_info)
                .collect(),
            next_page_token: next.map(|id| page::token(Call::Leases, &id.to_string())).unwrap_or_default(),
        }))
    }
}

impl LeaseService {
    /// Answers one heartbeat of the stream attached to `lease`.
    async fn heartbeat(
        &self,
        tenant: &Recipes,
        lease: &Arc<LocalLease>,
        credentials: &LeaseCredentials,
        request: &pb::KeepAliveRequest,
    ) -> Result<pb::KeepAliveResponse, Status> {
        let presented = proto::lease_ref(request.lease.as_ref(), &proto::LEASE)?;
        if presented.id != credentials.id {
            return Err(Error::invalid("lease.id", "must name the lease the stream started with").into());
        }
        if presented.secret != credentials.secret && !secret::matches(&presented.secret, &lease.secret_sha256) {
            return Err(Error::WrongSecret.into());
        }
        self.ack(tenant, lease, request).await
    }

    /// Records the heartbeat and answers it: confirmed only on a valid session proof, with the
    /// leaderships among the named elections proven on the same proof's terms (see
    /// `recipe::election::leadership`).
    async fn ack(
        &self,
        tenant: &Recipes,
        lease: &LocalLease,
        request: &pb::KeepAliveRequest,
    ) -> Result<pb::KeepAliveResponse, Status> {
        proto::health(request.health.as_ref(), "health")?;
        let elections = validate::elections("elections", &request.elections)?;
        let groups = shard_groups(&request.shard_groups)?;
        let named = elections.iter().map(|n| (NameKind::Election, n.as_str()));
        let named = named.chain(groups.iter().map(|n| (NameKind::ShardGroup, n.as_str())));
        let max = self.ctx.limits.quotas.candidacies_per_lease;
        lease.named.note(named, max, crate::zk::proven::IDLE, std::time::Instant::now())?;
        let proof = self.ctx.session.proven_soon().await;
        let ack = lease.heartbeat(&health_from_pb(request.health.as_ref()), proof)?;
        // An answer that cannot tell whether the lease leads a named election is not confirmed:
        // "confirmed, not listed" must mean "proven not the leader".
        let leaderships = match proof.filter(|_| ack.confirmed) {
            None => None,
            Some(_) if elections.is_empty() => Some(Vec::new()),
            Some(proof) => tenant.elections.leaderships(lease.id, &elections, proof).await,
        };
        // Likewise for shard groups: "confirmed, not listed" must mean "proven not the owner".
        let shards = match proof.filter(|_| ack.confirmed && leaderships.is_some()) {
            None => None,
            Some(_) if groups.is_empty() => Some(Vec::new()),
            Some(proof) => tenant.shards.ownerships(lease.id, &groups, proof).await,
        };
        let confirmed = leaderships.is_some() && shards.is_some();
        if confirmed {
            self.ctx.session.proofs().vouched();
        }
        Ok(pb::KeepAliveResponse {
            lease_id: lease.id,
            ttl_ms: millis(ack.remaining),
            confirmed,
            instance: self.ctx.instance_id.clone(),
            leaderships: if confirmed {
                leaderships.unwrap_or_default().into_iter().map(leadership).collect()
            } else {
                Vec::new()
            },
            shards: shards.unwrap_or_default().into_iter().map(ownership).collect(),
        })
    }
}

/// The shard groups a heartbeat names: at most 64 names.
fn shard_groups(names: &[String]) -> Result<Vec<Name>> {
    if names.len() > 64 {
        return Err(Error::invalid("shard_groups", "names more than 64 groups"));
    }
    names.iter().map(|name| Name::parse("shard_groups", name)).collect()
}

fn ownership(owned: ShardOwnership) -> pb::ShardOwnership {
    pb::ShardOwnership {
        group: owned.group,
        member_id: owned.member_id,
        ranges: owned.ranges.into_iter().map(|(first, last, epoch)| pb::OwnedShards { first, last, epoch }).collect(),
    }
}

fn leadership(leadership: Leadership) -> pb::Leadership {
    pb::Leadership {
        election: leadership.election,
        candidate_id: leadership.candidate_id,
        term: leadership.term,
        fencing_token: leadership.token,
    }
}

/// A binding as TimeToLive lists it; `None` for a kind the API cannot name (`KIND_UNSPECIFIED`
/// is never sent).
fn binding(shown: &Shown) -> Option<pb::Binding> {
    let kind = match shown.kind.as_str() {
        election::record::BINDING_KIND => pb::binding::Kind::Candidacy,
        lock::record::BINDING_KIND => pb::binding::Kind::Lock,
        shards::BINDING_KIND => pb::binding::Kind::ShardMember,
        _ => return None,
    };
    Some(pb::Binding { kind: kind.into(), name: shown.name.clone(), id: shown.id.clone() })
}
