//! `zkcoord.v1.Lock`.

use tonic::{Request, Response, Status};

use super::{Caller, Context};
use crate::{
    authz::{Access, Resource},
    error::Result,
    pb::v1::{self as pb, lock_server},
    recipe::lock::{Acquired, KeyHolders, LockRequest, TryOutcome},
    validate::{
        self, Name,
        page::{self, Call, Page},
        proto,
    },
};

/// The Lock service.
#[derive(Clone, Debug)]
pub struct LockService {
    ctx: Context,
}

impl LockService {
    /// A Lock service over `ctx`.
    pub fn new(ctx: Context) -> Self {
        Self { ctx }
    }
}

/// Validates the fields Lock and TryLock share.
fn lock_request(keys: &[String], lease: Option<&pb::LeaseRef>, mode: i32) -> Result<LockRequest> {
    let keys = validate::lock_keys("keys", keys)?;
    let lease = proto::lease_ref(lease, &proto::LEASE)?;
    let mode = proto::lock_mode(mode)?;
    Ok(LockRequest { keys, lease_id: lease.id, secret: lease.secret, exclusive: mode == pb::LockMode::Exclusive })
}

fn tokens(keys: &[Name], acquired: &Acquired) -> Vec<pb::KeyToken> {
    keys.iter().map(|k| pb::KeyToken { key: k.as_str().to_owned(), fencing_token: acquired.token }).collect()
}

fn key_holders(key: KeyHolders) -> pb::KeyHolders {
    let holders = key
        .holders
        .into_iter()
        .map(|h| pb::Holder {
            owner: h.owner,
            lease_id: h.lease_id,
            mode: if h.exclusive { pb::LockMode::Exclusive } else { pb::LockMode::Shared }.into(),
            since_unix_ms: h.since_unix_ms,
            fencing_token: h.token,
        })
        .collect();
    pb::KeyHolders { key: key.key, holders, waiters: key.waiters.try_into().unwrap_or(u32::MAX) }
}

#[tonic::async_trait]
impl lock_server::Lock for LockService {
    async fn lock(&self, request: Request<pb::LockRequest>) -> Result<Response<pb::LockResponse>, Status> {
        let tenant = self.ctx.recipes(&request)?;
        let caller = Caller::of(&request);
        let req = request.get_ref();
        let request = lock_request(&req.keys, req.lease.as_ref(), req.mode)?;
        let wait = validate::wait_timeout("wait_timeout_ms", req.wait_timeout_ms)?;
        self.ctx.authorize(&caller, &tenant, Resource::LockKey, Access::Write, &request.keys)?;
        let keys = request.keys.clone();
        // No select on the shutdown token here: the recipe answers ShuttingDown itself, after
        // withdrawing the request, and a grant that came first is answered as a grant.
        let lease_id = request.lease_id;
        let acquired = tenant.locks.lock(request, wait).await?;
        self.ctx.granted_hold(&caller, &tenant, lease_id, &acquired, &keys);
        Ok(Response::new(pb::LockResponse { tokens: tokens(&keys, &acquired), handle: acquired.hold }))
    }

    async fn try_lock(&self, request: Request<pb::TryLockRequest>) -> Result<Response<pb::TryLockResponse>, Status> {
        let tenant = self.ctx.recipes(&request)?;
        let caller = Caller::of(&request);
        let req = request.get_ref();
        let request = lock_request(&req.keys, req.lease.as_ref(), req.mode)?;
        self.ctx.authorize(&caller, &tenant, Resource::LockKey, Access::Write, &request.keys)?;
        let keys = request.keys.clone();
        let lease_id = request.lease_id;
        let response = match tenant.locks.try_lock(request).await? {
            TryOutcome::Acquired(acquired) => {
                self.ctx.granted_hold(&caller, &tenant, lease_id, &acquired, &keys);
                pb::TryLockResponse {
                    acquired: true,
                    tokens: tokens(&keys, &acquired),
                    handle: acquired.hold,
                    blocked: Vec::new(),
                }
            }
            TryOutcome::Blocked(blocked) => {
                pb::TryLockResponse { blocked: blocked.into_iter().map(key_holders).collect(), ..Default::default() }
            }
        };
        Ok(Response::new(response))
    }

    /// Checked against the `authz_file` as a write of *some* lock key: the handle's keys are
    /// not known without a ZooKeeper read, a handle comes only from an authorized Lock or
    /// TryLock, and releasing it takes that hold's lease secret.
    async fn unlock(&self, request: Request<pb::UnlockRequest>) -> Result<Response<pb::UnlockResponse>, Status> {
        let tenant = self.ctx.recipes(&request)?;
        self.ctx.authorize_some(&Caller::of(&request), &tenant, Resource::LockKey, Access::Write)?;
        let req = request.get_ref();
        validate::hold("handle", &req.handle)?;
        let lease = proto::lease_ref(req.lease.as_ref(), &proto::LEASE)?;
        tenant.locks.unlock(lease.id, &lease.secret, &req.handle).await?;
        self.ctx.holdings.remove_hold(tenant.tenant.clone(), lease.id, req.handle.clone());
        Ok(Response::new(pb::UnlockResponse {}))
    }

    async fn holders(&self, request: Request<pb::HoldersRequest>) -> Result<Response<pb::HoldersResponse>, Status> {
        let tenant = self.ctx.recipes(&request)?;
        let req = request.get_ref();
        validate::holders_key("key", &req.key, req.prefix)?;
        let caller = Caller::of(&request);
        if req.prefix {
            self.ctx.authorize_prefix(&caller, &tenant, Resource::LockKey, Access::Read, &req.key)?;
        } else {
            self.ctx.authorize_str(&caller, &tenant, Resource::LockKey, Access::Read, &req.key)?;
        }
        let page = Page::parse(Call::Holders, req.page_size, &req.page_token)?;
        let after = page.after_parsed(|after| Name::parse("page_token", after).ok())?;
        let (keys, next) = tenant.locks.holders(&req.key, req.prefix, after.as_ref(), page.size).await?;
        Ok(Response::new(pb::HoldersResponse {
            keys: keys.into_iter().map(key_holders).collect(),
            next_page_token: next.map(|key| page::token(Call::Holders, key.as_str())).unwrap_or_default(),
        }))
    }
}
