//! `zkcoord.v1.Election`.

use tonic::{Request, Response, Status};

use super::{Context, ResponseStream, check};
use crate::{
    error::{Error, Result},
    pb::v1::{self as pb, election_server},
    validate::{self, Name},
};

/// The Election service.
#[derive(Clone, Debug)]
pub struct ElectionService {
    #[allow(dead_code)]
    ctx: Context,
}

impl ElectionService {
    /// An Election service over `ctx`.
    pub fn new(ctx: Context) -> Self {
        Self { ctx }
    }
}

fn check_campaign(req: &pb::CampaignRequest) -> Result<()> {
    check::candidate_key(req.key.as_ref(), &check::KEY)?;
    validate::value("value", &req.value)?;
    validate::priority("priority", req.priority)?;
    pb::PreemptPolicy::try_from(req.preempt).map_err(|_| Error::invalid("preempt", "is not a known policy"))?;
    Ok(())
}

#[tonic::async_trait]
impl election_server::Election for ElectionService {
    type CampaignStream = ResponseStream<pb::CampaignResponse>;

    async fn campaign(&self, request: Request<pb::CampaignRequest>) -> Result<Response<Self::CampaignStream>, Status> {
        check_campaign(request.get_ref())?;
        Err(Error::Unimplemented("Election.Campaign").into())
    }

    async fn proclaim(&self, request: Request<pb::ProclaimRequest>) -> Result<Response<pb::ProclaimResponse>, Status> {
        let req = request.get_ref();
        check::candidate_key(req.key.as_ref(), &check::KEY)?;
        validate::value("value", &req.value)?;
        Err(Error::Unimplemented("Election.Proclaim").into())
    }

    async fn leader(&self, request: Request<pb::LeaderRequest>) -> Result<Response<pb::LeaderResponse>, Status> {
        Name::parse("election", &request.get_ref().election)?;
        Err(Error::Unimplemented("Election.Leader").into())
    }

    type ObserveStream = ResponseStream<pb::ObserveResponse>;

    async fn observe(&self, request: Request<pb::ObserveRequest>) -> Result<Response<Self::ObserveStream>, Status> {
        Name::parse("election", &request.get_ref().election)?;
        Err(Error::Unimplemented("Election.Observe").into())
    }

    async fn resign(&self, request: Request<pb::ResignRequest>) -> Result<Response<pb::ResignResponse>, Status> {
        check::candidate_key(request.get_ref().key.as_ref(), &check::KEY)?;
        Err(Error::Unimplemented("Election.Resign").into())
    }

    async fn transfer(&self, request: Request<pb::TransferRequest>) -> Result<Response<pb::TransferResponse>, Status> {
        let req = request.get_ref();
        Name::parse("election", &req.election)?;
        if !req.target_candidate_id.is_empty() {
            Name::parse("target_candidate_id", &req.target_candidate_id)?;
        }
        if let Some(from) = &req.from {
            let from = check::candidate_key(Some(from), &check::FROM)?;
            if from.election.as_str() != req.election {
                return Err(Error::invalid("from.election", "must equal election").into());
            }
        }
        Err(Error::Unimplemented("Election.Transfer").into())
    }

    async fn candidates(
        &self,
        request: Request<pb::CandidatesRequest>,
    ) -> Result<Response<pb::CandidatesResponse>, Status> {
        Name::parse("election", &request.get_ref().election)?;
        Err(Error::Unimplemented("Election.Candidates").into())
    }
}
