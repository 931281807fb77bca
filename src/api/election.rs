//! `zkcoord.v1.Election`: validates, calls [`crate::recipe::election`], copies into protobuf.

use tonic::{Request, Response, Status};

use super::{Caller, Context, ResponseStream, convert::health_to_pb, guarded::Guarded};
use crate::{
    authz::{Access, Resource},
    error::{Error, Result},
    pb::v1::{self as pb, election_server},
    recipe::election::{self, CampaignRequest, CandidateKey, CandidateStatus, Deposed, LeaderView, Observed},
    validate::{
        self, Name,
        page::{self, Call, Page},
        proto::{self, Candidate},
    },
};

/// Responses buffered per stream before the client must read.
const STREAM_BUFFER: usize = 16;

/// The Election service.
#[derive(Clone, Debug)]
pub struct ElectionService {
    ctx: Context,
}

impl ElectionService {
    /// An Election service over `ctx`.
    pub fn new(ctx: Context) -> Self {
        Self { ctx }
    }
}

fn candidate_key(c: Candidate) -> CandidateKey {
    CandidateKey { election: c.election, candidate_id: c.candidate_id, lease_id: c.lease.id, secret: c.lease.secret }
}

/// The validated `key` of a request.
fn key(key: Option<&pb::CandidateKey>) -> Result<CandidateKey> {
    Ok(candidate_key(proto::candidate_key(key, &proto::KEY)?))
}

fn campaign_request(req: pb::CampaignRequest) -> Result<CampaignRequest> {
    let key = key(req.key.as_ref())?;
    validate::value("value", &req.value)?;
    let priority = validate::priority("priority", req.priority)?;
    let preempt = proto::preempt(req.preempt)?;
    let unhealthy_for = validate::hysteresis("unhealthy_for_ms", req.unhealthy_for_ms)?;
    let healthy_for = validate::hysteresis("healthy_for_ms", req.healthy_for_ms)?;
    Ok(CampaignRequest { key, value: req.value, priority, preempt, unhealthy_for, healthy_for })
}

fn leader_info(leader: LeaderView) -> pb::LeaderInfo {
    pb::LeaderInfo {
        candidate_id: leader.candidate_id,
        value: leader.value,
        priority: leader.priority,
        term: leader.term,
        fencing_token: leader.token,
        health: Some(health_to_pb(&leader.health)),
        lease_id: leader.lease_id,
        elected_unix_ms: leader.elected_unix_ms,
    }
}

fn deposed_reason(reason: Deposed) -> pb::DeposedReason {
    match reason {
        Deposed::Resigned => pb::DeposedReason::Resigned,
        Deposed::LeaseExpired => pb::DeposedReason::LeaseExpired,
        Deposed::Preempted => pb::DeposedReason::Preempted,
        Deposed::Unhealthy => pb::DeposedReason::Unhealthy,
        Deposed::Transferred => pb::DeposedReason::Transferred,
    }
}

/// One Campaign response, or the status that ends the stream; the bool says "last".
fn campaign_response(status: CandidateStatus) -> (Result<pb::CampaignResponse, Status>, bool) {
    let response = match status {
        CandidateStatus::Queued { position, leader } => pb::CampaignResponse {
            state: pb::CandidateState::Queued.into(),
            position,
            leader: leader.map(leader_info),
            ..Default::default()
        },
        CandidateStatus::Elected { leader } => pb::CampaignResponse {
            state: pb::CandidateState::Elected.into(),
            term: leader.term,
            fencing_token: leader.token,
            leader: Some(leader_info(leader)),
            ..Default::default()
        },
        CandidateStatus::Unconfirmed { term, token } => pb::CampaignResponse {
            state: pb::CandidateState::Unconfirmed.into(),
            term,
            fencing_token: token,
            ..Default::default()
        },
        CandidateStatus::Deposed { reason, term, last } => {
            let response = pb::CampaignResponse {
                state: pb::CandidateState::Deposed.into(),
                term,
                reason: deposed_reason(reason).into(),
                ..Default::default()
            };
            return (Ok(response), last);
        }
        CandidateStatus::Ended(end) => return (Err(end.error().into()), true),
    };
    (Ok(response), false)
}

fn observe_response(observed: Observed) -> pb::ObserveResponse {
    pb::ObserveResponse { sequence: observed.sequence, term: observed.term, leader: observed.leader.map(leader_info) }
}

#[tonic::async_trait]
impl election_server::Election for ElectionService {
    type CampaignStream = ResponseStream<pb::CampaignResponse>;

    async fn campaign(&self, request: Request<pb::CampaignRequest>) -> Result<Response<Self::CampaignStream>, Status> {
        let tenant = self.ctx.recipes(&request)?;
        let caller = Caller::of(&request);
        let request = campaign_request(request.into_inner())?;
        self.ctx.authorize(&caller, &tenant, Resource::Election, Access::Write, [&request.key.election])?;
        let key = request.key.clone();
        let names = vec![key.election.as_str().to_owned()];
        let withdrawn = self.ctx.withdrawn(&caller, tenant.tenant.clone(), Resource::Election, Access::Write, names);
        let mut campaign = tenant.elections.campaign(request).await?;
        let (tx, stream) = super::stream_channel(STREAM_BUFFER);
        let shutdown = self.ctx.shutdown.clone();
        tokio::spawn(async move {
            tokio::pin!(withdrawn);
            loop {
                let (item, last) = tokio::select! {
                    status = campaign.next() => match status {
                        Some(status) => campaign_response(status),
                        None => (Err(Error::ShuttingDown.into()), true),
                    },
                    () = shutdown.cancelled() => (Err(Error::ShuttingDown.into()), true),
                    message = &mut withdrawn => {
                        // The candidacy ends too, safely (a leader is deposed first).
                        let (elections, shutdown, key) = (tenant.elections.clone(), shutdown.clone(), key.clone());
                        tokio::spawn(async move {
                            tokio::select! {
                                ended = elections.withdraw(&key) => if let Err(err) = ended {
                                    tracing::warn!(election = %key.election, error = %err, "withdrawing a candidacy failed; it ends with its lease");
                                },
                                () = shutdown.cancelled() => {}
                            }
                        });
                        (Err(Error::NotAuthorized(message).into()), true)
                    }
                };
                if tx.send(item).await.is_err() || last {
                    return; // the client left (the candidacy lives on with its lease) or it ended
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn proclaim(&self, request: Request<pb::ProclaimRequest>) -> Result<Response<pb::ProclaimResponse>, Status> {
        let tenant = self.ctx.recipes(&request)?;
        let caller = Caller::of(&request);
        let req = request.into_inner();
        let key = key(req.key.as_ref())?;
        validate::value("value", &req.value)?;
        self.ctx.authorize(&caller, &tenant, Resource::Election, Access::Write, [&key.election])?;
        tenant.elections.proclaim(&key, req.term, &req.value).await?;
        Ok(Response::new(pb::ProclaimResponse {}))
    }

    async fn leader(&self, request: Request<pb::LeaderRequest>) -> Result<Response<pb::LeaderResponse>, Status> {
        let tenant = self.ctx.recipes(&request)?;
        let name = Name::parse("election", &request.get_ref().election)?;
        self.ctx.authorize(&Caller::of(&request), &tenant, Resource::Election, Access::Read, [&name])?;
        let (_, state) = tenant.elections.state(&name).await?;
        Ok(Response::new(pb::LeaderResponse { leader: election::leader_view(&state).map(leader_info) }))
    }

    type ObserveStream = ResponseStream<pb::ObserveResponse>;

    async fn observe(&self, request: Request<pb::ObserveRequest>) -> Result<Response<Self::ObserveStream>, Status> {
        let tenant = self.ctx.recipes(&request)?;
        let caller = Caller::of(&request);
        let name = Name::parse("election", &request.get_ref().election)?;
        self.ctx.authorize(&caller, &tenant, Resource::Election, Access::Read, [&name])?;
        let names = vec![name.as_str().to_owned()];
        let withdrawn = self.ctx.withdrawn(&caller, tenant.tenant.clone(), Resource::Election, Access::Read, names);
        let permit = self.ctx.limits.observe_stream()?;
        let observation = tenant.elections.observe(&name).await?;
        // Judged and encoded where the HTTP/2 stream polls it (no task or channel of its own):
        // one wake-up per change and stream, see [`Guarded`].
        let changes = futures_util::stream::unfold(observation, |mut observation| async move {
            let observed = observation.next().await?;
            Some((Ok(observe_response(observed)), observation))
        });
        let shutdown = self.ctx.shutdown.clone().cancelled_owned();
        Ok(Response::new(Box::pin(Guarded::new(changes, shutdown, withdrawn, permit))))
    }

    async fn resign(&self, request: Request<pb::ResignRequest>) -> Result<Response<pb::ResignResponse>, Status> {
        let tenant = self.ctx.recipes(&request)?;
        let caller = Caller::of(&request);
        let req = request.into_inner();
        let key = key(req.key.as_ref())?;
        self.ctx.authorize(&caller, &tenant, Resource::Election, Access::Write, [&key.election])?;
        if req.stay_candidate {
            let term = proto::step_down_term(req.term)?;
            tenant.elections.step_down(&key, term).await?;
        } else {
            tenant.elections.resign(&key, req.term).await?;
        }
        Ok(Response::new(pb::ResignResponse {}))
    }

    async fn transfer(&self, request: Request<pb::TransferRequest>) -> Result<Response<pb::TransferResponse>, Status> {
        let tenant = self.ctx.recipes(&request)?;
        let caller = Caller::of(&request);
        let req = request.into_inner();
        let name = Name::parse("election", &req.election)?;
        let target = match req.target_candidate_id.as_str() {
            "" => None,
            id => Some(Name::parse("target_candidate_id", id)?),
        };
        let from = proto::transfer_from(req.from.as_ref(), &name)?.map(candidate_key);
        self.ctx.authorize(&caller, &tenant, Resource::Election, Access::Write, [&name])?;
        let leader = tenant.elections.transfer(&name, target.as_ref(), from.as_ref(), req.term).await?;
        Ok(Response::new(pb::TransferResponse { leader: Some(leader_info(leader)) }))
    }

    async fn candidates(
        &self,
        request: Request<pb::CandidatesRequest>,
    ) -> Result<Response<pb::CandidatesResponse>, Status> {
        let tenant = self.ctx.recipes(&request)?;
        let req = request.get_ref();
        let name = Name::parse("election", &req.election)?;
        self.ctx.authorize(&Caller::of(&request), &tenant, Resource::Election, Access::Read, [&name])?;
        let page = Page::parse(Call::Candidates, req.page_size, &req.page_token)?;
        let after = page.after_parsed(|after| {
            let (priority, czxid) = after.split_once(' ')?;
            Some((priority.parse::<i32>().ok()?, czxid.parse::<i64>().ok()?))
        })?;
        let found = tenant.elections.candidates(&name, after, page.size).await?;
        let candidates = found
            .candidates
            .into_iter()
            .map(|c| pb::CandidateInfo {
                candidate_id: c.candidate_id,
                value: c.value,
                priority: c.priority,
                health: c.health.as_ref().map(health_to_pb),
                eligible: c.eligible,
                lease_id: c.lease_id,
                position: c.position,
                leader: c.leader,
            })
            .collect();
        let preempt = if found.preempt { pb::PreemptPolicy::On } else { pb::PreemptPolicy::Off };
        let next_page_token = found
            .next
            .map(|(priority, czxid)| page::token(Call::Candidates, &format!("{priority} {czxid}")))
            .unwrap_or_default();
        Ok(Response::new(pb::CandidatesResponse {
            candidates,
            preempt: preempt.into(),
            term: found.term,
            next_page_token,
        }))
    }
}
