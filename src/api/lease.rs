//! `zkcoord.v1.Lease`.

use tonic::{Request, Response, Status, Streaming};

use super::{Context, ResponseStream, check};
use crate::{
    error::{Error, Result},
    pb::v1::{self as pb, lease_server},
    validate::{self, Name},
};

/// The Lease service.
#[derive(Clone, Debug)]
pub struct LeaseService {
    #[allow(dead_code)]
    ctx: Context,
}

impl LeaseService {
    /// A Lease service over `ctx`.
    pub fn new(ctx: Context) -> Self {
        Self { ctx }
    }
}

fn check_grant(req: &pb::GrantRequest) -> Result<()> {
    validate::ttl("ttl_ms", req.ttl_ms)?;
    Name::parse("owner", &req.owner)?;
    validate::metadata("metadata", &req.metadata)?;
    check::health(req.health.as_ref(), "health")
}

#[tonic::async_trait]
impl lease_server::Lease for LeaseService {
    async fn grant(&self, request: Request<pb::GrantRequest>) -> Result<Response<pb::GrantResponse>, Status> {
        check_grant(request.get_ref())?;
        Err(Error::Unimplemented("Lease.Grant").into())
    }

    type KeepAliveStream = ResponseStream<pb::KeepAliveResponse>;

    async fn keep_alive(
        &self,
        _request: Request<Streaming<pb::KeepAliveRequest>>,
    ) -> Result<Response<Self::KeepAliveStream>, Status> {
        Err(Error::Unimplemented("Lease.KeepAlive").into())
    }

    async fn revoke(&self, request: Request<pb::RevokeRequest>) -> Result<Response<pb::RevokeResponse>, Status> {
        check::lease_ref(request.get_ref().lease.as_ref(), &check::LEASE)?;
        Err(Error::Unimplemented("Lease.Revoke").into())
    }

    async fn time_to_live(
        &self,
        request: Request<pb::TimeToLiveRequest>,
    ) -> Result<Response<pb::TimeToLiveResponse>, Status> {
        validate::lease_id("lease_id", request.get_ref().lease_id)?;
        Err(Error::Unimplemented("Lease.TimeToLive").into())
    }

    async fn list(&self, _request: Request<pb::ListRequest>) -> Result<Response<pb::ListResponse>, Status> {
        Err(Error::Unimplemented("Lease.List").into())
    }
}
