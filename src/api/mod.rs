//! The gRPC services: each handler validates its request, calls the coordination logic and
//! copies the result into protobuf. Nothing here talks to ZooKeeper directly.

mod convert;
pub mod election;
mod guarded;
pub mod holdings;
pub mod lease;
pub mod lock;
pub mod shards;
pub mod tenant;

use std::{pin::Pin, sync::Arc};

use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;

use crate::{
    authz::{Access, Authz, Resource, live::LiveAuthz},
    error::{self, Error, Result},
    limits::InstanceLimits,
    tenant::Tenants,
    tls::{ServerTls, TlsPeer},
    validate::Name,
    zk::ZkSession,
};

/// What every service needs: the ZooKeeper session, the shutdown signal and the recipes of
/// every tenant. Handlers reach the recipes only through [`Context::recipes`], which picks
/// the request's tenant.
#[derive(Clone, Debug)]
pub struct Context {
    /// The instance's ZooKeeper session.
    pub session: ZkSession,
    /// Cancelled when the instance starts shutting down; streams end with UNAVAILABLE.
    pub shutdown: CancellationToken,
    /// This instance's id.
    pub instance_id: String,
    /// The recipes of the default tenant and of each configured tenant.
    pub tenants: Tenants,
    /// Which names each client identity may use; `None`: every name to every client.
    pub authz: Option<LiveAuthz>,
    /// The instance's quotas and what it counts against them (see [`crate::limits`]).
    pub limits: Arc<InstanceLimits>,
    /// The listener's TLS, if any: a reload of the client CA can make it distrust established
    /// connections ([`crate::tls::ServerTls::still_trusts`]).
    pub tls: Option<ServerTls>,
    /// The lock holds and shard memberships granted here, by identity: rights withdrawn later
    /// end them ([`holdings`]).
    pub holdings: holdings::Holdings,
}

/// The caller of a request: its TLS connection (client certificate and identity, with mTLS).
#[derive(Clone, Debug, Default)]
pub struct Caller(Option<TlsPeer>);

impl Caller {
    /// The caller's identity, if any.
    pub fn identity(&self) -> Option<&str> {
        self.0.as_ref().and_then(|peer| peer.identity.as_deref())
    }

    /// The caller's identity, if any, to keep.
    pub fn shared_identity(&self) -> Option<Arc<str>> {
        self.0.as_ref().and_then(|peer| peer.identity.clone())
    }

    /// The caller of `request`.
    pub fn of<T>(request: &tonic::Request<T>) -> Self {
        Self(request.extensions().get::<TlsPeer>().cloned())
    }
}

/// Completes when `changes` (if any) announces a change; `Err` once it never will.
async fn changed(changes: &mut Option<tokio::sync::watch::Receiver<u64>>) -> Result<(), ()> {
    match changes {
        Some(changes) => changes.changed().await.map_err(drop),
        None => std::future::pending().await,
    }
}

/// The fixed message refusing `resource`.
const fn refusal(resource: Resource) -> &'static str {
    match resource {
        Resource::Election => error::NOT_AUTHORIZED_ELECTION,
        Resource::LockKey => error::NOT_AUTHORIZED_LOCK_KEY,
        Resource::ShardGroup => error::NOT_AUTHORIZED_SHARD_GROUP,
        Resource::Lease => error::NOT_AUTHORIZED_LEASE,
    }
}

impl Context {
    /// Checks that `caller` may use `names` as `resource` for `access` in the tenant of
    /// `recipes`.
    ///
    /// # Errors
    /// [`Error::NotAuthorized`] when an `authz_file` is configured and does not allow it.
    pub fn authorize<'a>(
        &self,
        caller: &Caller,
        recipes: &crate::tenant::Recipes,
        resource: Resource,
        access: Access,
        names: impl IntoIterator<Item = &'a Name>,
    ) -> Result<()> {
        self.authorize_with(caller, resource, access, |authz, identity| {
            authz.allows(identity, recipes.tenant.as_deref(), resource, access, names.into_iter().map(Name::as_str))
        })
    }

    /// Like [`Context::authorize`], for names given as strings (lease owners from records).
    ///
    /// # Errors
    /// [`Error::NotAuthorized`].
    pub fn authorize_str(
        &self,
        caller: &Caller,
        recipes: &crate::tenant::Recipes,
        resource: Resource,
        access: Access,
        name: &str,
    ) -> Result<()> {
        self.authorize_with(caller, resource, access, |authz, identity| {
            authz.allows(identity, recipes.tenant.as_deref(), resource, access, [name])
        })
    }

    /// Checks that `caller` may use every `resource` whose name starts with `prefix`.
    ///
    /// # Errors
    /// [`Error::NotAuthorized`].
    pub fn authorize_prefix(
        &self,
        caller: &Caller,
        recipes: &crate::tenant::Recipes,
        resource: Resource,
        access: Access,
        prefix: &str,
    ) -> Result<()> {
        self.authorize_with(caller, resource, access, |authz, identity| {
            authz.allows_prefix(identity, recipes.tenant.as_deref(), resource, access, prefix)
        })
    }

    /// Checks that `caller` may use some `resource` for `access`: made before the name is
    /// known (from a record), so that callers without any right cost no ZooKeeper read.
    ///
    /// # Errors
    /// [`Error::NotAuthorized`].
    pub fn authorize_some(
        &self,
        caller: &Caller,
        recipes: &crate::tenant::Recipes,
        resource: Resource,
        access: Access,
    ) -> Result<()> {
        self.authorize_with(caller, resource, access, |authz, identity| {
            authz.allows_some(identity, recipes.tenant.as_deref(), resource, access)
        })
    }

    /// A filter of names `caller` may use as `resource` for `access` (List); `None`: all.
    pub fn filter(
        &self,
        caller: &Caller,
        recipes: &crate::tenant::Recipes,
        resource: Resource,
        access: Access,
    ) -> Option<impl Fn(&str) -> bool + use<>> {
        let authz = self.authz.as_ref()?.current();
        let (identity, tenant) = (caller.identity().map(str::to_owned), recipes.tenant.clone());
        Some(move |name: &str| authz.allows(identity.as_deref(), tenant.as_deref(), resource, access, [name]))
    }

    fn authorize_with(
        &self,
        caller: &Caller,
        resource: Resource,
        access: Access,
        allowed: impl FnOnce(&Authz, Option<&str>) -> bool,
    ) -> Result<()> {
        let Some(authz) = &self.authz else { return Ok(()) };
        if allowed(&authz.current(), caller.identity()) {
            return Ok(());
        }
        tracing::debug!(identity = caller.identity(), ?resource, ?access, "not authorized");
        Err(Error::NotAuthorized(refusal(resource)))
    }

    /// Checks that the TLS configuration in use still trusts the client certificate of
    /// `caller` (its client CA may have been replaced since the connection was made).
    ///
    /// # Errors
    /// [`Error::NotAuthorized`] ([`error::CERTIFICATE_NOT_TRUSTED`]).
    pub fn check_certificate(&self, caller: &Caller) -> Result<()> {
        match (&self.tls, &caller.0) {
            (Some(tls), Some(peer)) if !tls.still_trusts(peer) => {
                Err(Error::NotAuthorized(error::CERTIFICATE_NOT_TRUSTED))
            }
            _ => Ok(()),
        }
    }

    /// Completes once `caller` may no longer keep a stream that uses `names` as `resource` for
    /// `access` in `tenant`, with the message the stream ends with: checked now, then after
    /// every reload of the `authz_file` ([`error::RIGHTS_WITHDRAWN`] when the rules no longer
    /// allow it) and of the TLS files ([`error::CERTIFICATE_NOT_TRUSTED`] when the client CA no
    /// longer trusts the caller's certificate). Never, without either.
    ///
    /// # Cancellation safety
    /// Only waits: safe to cancel (a new call checks again).
    ///
    /// # Memory
    /// Streams hold this future for their whole life, inside their task. It is boxed, so a
    /// stream's task holds a pointer instead of its state, and without an `authz_file` and a
    /// client certificate (nothing can withdraw) it is [`std::future::pending`], which
    /// allocates nothing.
    pub fn withdrawn(
        &self,
        caller: &Caller,
        tenant: Option<String>,
        resource: Resource,
        access: Access,
        names: Vec<String>,
    ) -> Withdrawn {
        let authz = self.authz.clone();
        let peer = caller.0.clone().filter(|peer| peer.chain.is_some());
        let tls = self.tls.clone().filter(|_| peer.is_some());
        if authz.is_none() && tls.is_none() {
            // What the loop below does then: no check, and neither change can come.
            return Box::pin(std::future::pending());
        }
        Box::pin(async move {
            let mut rule_changes = authz.as_ref().map(LiveAuthz::changes);
            let mut tls_changes = tls.as_ref().map(ServerTls::changes);
            let identity = peer.as_ref().and_then(|peer| peer.identity.clone());
            loop {
                if let (Some(tls), Some(peer)) = (&tls, &peer)
                    && !tls.still_trusts(peer)
                {
                    tracing::info!(
                        identity = identity.as_deref(),
                        "client certificate no longer trusted; ending the stream"
                    );
                    return error::CERTIFICATE_NOT_TRUSTED;
                }
                if let Some(authz) = &authz {
                    let names = names.iter().map(String::as_str);
                    if !authz.current().allows(identity.as_deref(), tenant.as_deref(), resource, access, names) {
                        tracing::info!(
                            identity = identity.as_deref(),
                            ?resource,
                            "rights withdrawn; ending the stream"
                        );
                        return error::RIGHTS_WITHDRAWN;
                    }
                }
                tokio::select! {
                    Ok(()) = changed(&mut rule_changes) => {}
                    Ok(()) = changed(&mut tls_changes) => {}
                    else => return std::future::pending().await, // nothing can change any more
                }
            }
        })
    }
}

/// What [`Context::withdrawn`] returns: completes with the message a stream ends with once its
/// caller may no longer keep it.
pub type Withdrawn = Pin<Box<dyn std::future::Future<Output = &'static str> + Send + 'static>>;

/// A server-streaming response.
pub type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, tonic::Status>> + Send + 'static>>;

/// A bounded channel feeding a server stream. Items travel boxed: tokio's mpsc allocates its
/// slots 32 at a time whatever the capacity, so an idle stream holds 32 pointers instead of
/// 32 messages (about 4 KiB less per Observe or Campaign stream, 1.5 KiB per KeepAlive).
pub fn stream_channel<T: Send + 'static>(capacity: usize) -> (StreamSender<T>, ResponseStream<T>) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Box<Result<T, tonic::Status>>>(capacity);
    let stream = tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), |item| *item);
    (StreamSender(tx), Box::pin(stream))
}

/// The sending side of [`stream_channel`].
#[derive(Debug)]
pub struct StreamSender<T>(tokio::sync::mpsc::Sender<Box<Result<T, tonic::Status>>>);

impl<T> StreamSender<T> {
    /// Sends one item, waiting for room; `Err` once the client has gone away.
    ///
    /// The item is boxed before the returned future is made, so that future (held by the
    /// stream's task while it waits for room) holds a pointer, not the message.
    ///
    /// # Cancellation safety
    /// Cancelling before the item is queued drops it.
    pub fn send(&self, item: Result<T, tonic::Status>) -> impl std::future::Future<Output = Result<(), ()>> + '_ {
        let item = Box::new(item);
        async move { self.0.send(item).await.map_err(|_| ()) }
    }

    /// Completes once the client has gone away (the stream was dropped).
    ///
    /// # Cancellation safety
    /// Safe to cancel.
    pub async fn closed(&self) {
        self.0.closed().await;
    }
}
