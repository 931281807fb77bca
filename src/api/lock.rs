//! `zkcoord.v1.Lock`.

use tonic::{Request, Response, Status};

use super::{Context, check};
use crate::{
    error::{Error, Result},
    pb::v1::{self as pb, lock_server},
    validate::{self, Name},
};

/// The Lock service.
#[derive(Clone, Debug)]
pub struct LockService {
    #[allow(dead_code)]
    ctx: Context,
}

impl LockService {
    /// A Lock service over `ctx`.
    pub fn new(ctx: Context) -> Self {
        Self { ctx }
    }
}

/// The longest lock handle, in bytes.
const MAX_HANDLE_LEN: usize = 256;

fn check_handle(handle: &str) -> Result<()> {
    if handle.is_empty() {
        return Err(Error::invalid("handle", "must not be empty"));
    }
    if handle.len() > MAX_HANDLE_LEN || !handle.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::HandleNotFound);
    }
    Ok(())
}

#[tonic::async_trait]
impl lock_server::Lock for LockService {
    async fn lock(&self, request: Request<pb::LockRequest>) -> Result<Response<pb::LockResponse>, Status> {
        let req = request.get_ref();
        validate::lock_keys("keys", &req.keys)?;
        check::lease_ref(req.lease.as_ref(), &check::LEASE)?;
        check::lock_mode(req.mode)?;
        validate::wait_timeout("wait_timeout_ms", req.wait_timeout_ms)?;
        Err(Error::Unimplemented("Lock.Lock").into())
    }

    async fn try_lock(&self, request: Request<pb::TryLockRequest>) -> Result<Response<pb::TryLockResponse>, Status> {
        let req = request.get_ref();
        validate::lock_keys("keys", &req.keys)?;
        check::lease_ref(req.lease.as_ref(), &check::LEASE)?;
        check::lock_mode(req.mode)?;
        Err(Error::Unimplemented("Lock.TryLock").into())
    }

    async fn unlock(&self, request: Request<pb::UnlockRequest>) -> Result<Response<pb::UnlockResponse>, Status> {
        let req = request.get_ref();
        check_handle(&req.handle)?;
        check::lease_ref(req.lease.as_ref(), &check::LEASE)?;
        Err(Error::Unimplemented("Lock.Unlock").into())
    }

    async fn holders(&self, request: Request<pb::HoldersRequest>) -> Result<Response<pb::HoldersResponse>, Status> {
        let req = request.get_ref();
        // An empty prefix lists every key; a non-empty prefix must itself be a valid name start.
        if !(req.prefix && req.key.is_empty()) {
            Name::parse("key", &req.key)?;
        }
        Err(Error::Unimplemented("Lock.Holders").into())
    }
}
