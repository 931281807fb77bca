//! The one way zkcoord sends requests to ZooKeeper: [`Zk`], a thin typed wrapper over a
//! (chrooted) `zookeeper_client::Client`.
//!
//! Each method sends exactly the request of the `Client` method of the same name — no more, no
//! other, at the same moment (when it is called, not when its future is first polled) — and:
//! * runs it in its own `zookeeper` span (`zk.op`: the method's name, `zk.path`: the path), a
//!   child of the current span (the RPC's, when there is one), so traces show each request
//!   below its call;
//! * answers "no such znode" (`NoNode`) as `None` (or `false`) where that is an outcome the
//!   callers handle rather than a failure; every other ZooKeeper error stays an `Err`;
//! * for a transaction ([`Zk::multi`]), records the first operation's path as the span's
//!   `zk.path` and separates "the request failed" (`Err`, for `?`) from "operation `index`
//!   failed" ([`OpFailed`], to match on).
//!
//! Cancellation safety is the request's own: a request is sent when the method is called, so a
//! write whose future is dropped may have happened or not.
//!
//! One request bypasses it: the session's liveness `sync` ([`super::proof`], several a second,
//! outside any RPC), which traced would export a trace of its own each time. Requests outside
//! an RPC (session set-up, the janitor, the round-trip probe every 5 s) are root spans.

use std::{future::Future, time::Duration};

use tracing::{Instrument, instrument::Instrumented};
use zookeeper_client::{
    Acl, Client, CreateOptions, Error, MultiWriteError, MultiWriteResult, MultiWriter, OneshotWatcher, SessionId, Stat,
};

/// The outcome of one ZooKeeper request.
pub type ZkResult<T> = std::result::Result<T, Error>;

/// Pause before retrying after a ZooKeeper failure (no connection, a session being
/// re-established): short, because RPCs and confirmations wait on the retry. The lease
/// janitor, which nothing waits on, pauses longer (`recipe::lease::janitor`).
pub const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// A ZooKeeper client (one session, chrooted to the namespace or a tenant's root) whose every
/// request is traced and typed (see the module docs). Cheap to clone.
#[derive(Clone, Debug)]
pub struct Zk {
    client: Client,
}

impl Zk {
    /// Wraps `client`.
    pub(crate) fn new(client: Client) -> Self {
        Self { client }
    }

    /// The ZooKeeper session's id.
    pub fn session_id(&self) -> SessionId {
        self.client.session_id()
    }

    /// The session timeout ZooKeeper negotiated.
    pub fn session_timeout(&self) -> Duration {
        self.client.session_timeout()
    }

    /// The data and stat of `path`; `None` if it does not exist.
    pub fn get_data(&self, path: &str) -> impl Future<Output = ZkResult<Option<(Vec<u8>, Stat)>>> + Send {
        let request = traced("get_data", path, self.client.get_data(path));
        async move { found(request.await) }
    }

    /// Like [`Zk::get_data`], arming a watch on `path`'s data (fires on a change or deletion);
    /// `None` if it does not exist (no watch is armed: use [`Zk::check_and_watch_stat`]).
    pub fn get_and_watch_data(
        &self,
        path: &str,
    ) -> impl Future<Output = ZkResult<Option<(Vec<u8>, Stat, OneshotWatcher)>>> + Send {
        let request = traced("get_and_watch_data", path, self.client.get_and_watch_data(path));
        async move { found(request.await) }
    }

    /// The stat of `path`; `None` if it does not exist.
    pub fn check_stat(&self, path: &str) -> impl Future<Output = ZkResult<Option<Stat>>> + Send {
        traced("check_stat", path, self.client.check_stat(path))
    }

    /// Like [`Zk::check_stat`], arming a watch on `path` whether or not it exists (fires on its
    /// creation, a change or its deletion).
    pub fn check_and_watch_stat(
        &self,
        path: &str,
    ) -> impl Future<Output = ZkResult<(Option<Stat>, OneshotWatcher)>> + Send {
        traced("check_and_watch_stat", path, self.client.check_and_watch_stat(path))
    }

    /// The names of `path`'s children (unordered); `None` if it does not exist.
    pub fn list_children(&self, path: &str) -> impl Future<Output = ZkResult<Option<Vec<String>>>> + Send {
        let request = traced("list_children", path, self.client.list_children(path));
        async move { found(request.await) }
    }

    /// Like [`Zk::list_children`], arming a watch on `path`'s children (fires on a child's
    /// creation or deletion, or `path`'s deletion); `None` if it does not exist (no watch).
    pub fn list_and_watch_children(
        &self,
        path: &str,
    ) -> impl Future<Output = ZkResult<Option<(Vec<String>, OneshotWatcher)>>> + Send {
        let request = traced("list_and_watch_children", path, self.client.list_and_watch_children(path));
        async move { found(request.await) }
    }

    /// Like [`Zk::list_children`], with `path`'s stat (its `pzxid` dates the listing).
    pub fn get_children(&self, path: &str) -> impl Future<Output = ZkResult<Option<(Vec<String>, Stat)>>> + Send {
        let request = traced("get_children", path, self.client.get_children(path));
        async move { found(request.await) }
    }

    /// Like [`Zk::get_children`], arming a watch as [`Zk::list_and_watch_children`] does.
    pub fn get_and_watch_children(
        &self,
        path: &str,
    ) -> impl Future<Output = ZkResult<Option<(Vec<String>, Stat, OneshotWatcher)>>> + Send {
        let request = traced("get_and_watch_children", path, self.client.get_and_watch_children(path));
        async move { found(request.await) }
    }

    /// Creates `path` with `data`; its stat, or `None` if `path` exists already (`NodeExists`:
    /// maybe created by an earlier attempt whose answer was lost).
    pub fn create<'a>(
        &'a self,
        path: &'a str,
        data: &[u8],
        options: &CreateOptions<'_>,
    ) -> impl Future<Output = ZkResult<Option<Stat>>> + Send + use<'a> {
        let request = traced("create", path, self.client.create(path, data, options));
        async move {
            match request.await {
                Ok((stat, _)) => Ok(Some(stat)),
                Err(Error::NodeExists) => Ok(None),
                Err(err) => Err(err),
            }
        }
    }

    /// Creates `path` and whichever of its ancestors are missing (several requests, one span).
    pub fn mkdir(&self, path: &str, options: &CreateOptions<'_>) -> impl Future<Output = ZkResult<()>> + Send {
        traced("mkdir", path, self.client.mkdir(path, options))
    }

    /// Writes `data` to `path` if its version is `version` (any when `None`); the new stat, or
    /// `None` if `path` does not exist. Another version is `Err(BadVersion)`.
    pub fn set_data(
        &self,
        path: &str,
        data: &[u8],
        version: Option<i32>,
    ) -> impl Future<Output = ZkResult<Option<Stat>>> + Send {
        let request = traced("set_data", path, self.client.set_data(path, data, version));
        async move { found(request.await) }
    }

    /// Deletes `path` if its version is `version` (any when `None`); whether it existed.
    /// Another version is `Err(BadVersion)`, children `Err(NotEmpty)`.
    pub fn delete(&self, path: &str, version: Option<i32>) -> impl Future<Output = ZkResult<bool>> + Send {
        let request = traced("delete", path, self.client.delete(path, version));
        async move { found(request.await).map(|deleted| deleted.is_some()) }
    }

    /// Makes the server this session is connected to catch up with the ZooKeeper leader.
    pub fn sync(&self, path: &str) -> impl Future<Output = ZkResult<()>> + Send {
        traced("sync", path, self.client.sync(path))
    }

    /// The ACL of `path` and its stat; `None` if it does not exist.
    pub fn get_acl(&self, path: &str) -> impl Future<Output = ZkResult<Option<(Vec<Acl>, Stat)>>> + Send {
        let request = traced("get_acl", path, self.client.get_acl(path));
        async move { found(request.await) }
    }

    /// Replaces the ACL of `path` if its ACL version is `aversion` (any when `None`); the new
    /// stat, or `None` if `path` does not exist.
    pub fn set_acl(
        &self,
        path: &str,
        acls: &[Acl],
        aversion: Option<i32>,
    ) -> impl Future<Output = ZkResult<Option<Stat>>> + Send {
        let request = traced("set_acl", path, self.client.set_acl(path, acls, aversion));
        async move { found(request.await) }
    }

    /// A transaction to fill with operations and [`Multi::commit`].
    pub fn multi(&self) -> Multi<'_> {
        Multi { writer: self.client.new_multi_writer(), path: None }
    }
}

/// Operations committed together, all or none ([`Zk::multi`]). The `add_*` methods are
/// `MultiWriter`'s; they fail only on an invalid path or options.
pub struct Multi<'a> {
    writer: MultiWriter<'a>,
    /// The first operation's path: the transaction's in traces.
    path: Option<String>,
}

/// Operation `index` (0-based, in the order added) of a transaction failed with `error`, so
/// none of it was applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpFailed {
    /// Which operation failed.
    pub index: usize,
    /// Why (e.g. `BadVersion` for a version check, `NoNode`, `NodeExists`).
    pub error: Error,
}

impl Multi<'_> {
    /// Fails unless `path`'s version is `version`.
    pub fn add_check_version(&mut self, path: &str, version: i32) -> ZkResult<()> {
        self.note(path);
        self.writer.add_check_version(path, version)
    }

    /// Creates `path` with `data`.
    pub fn add_create(&mut self, path: &str, data: &[u8], options: &CreateOptions<'_>) -> ZkResult<()> {
        self.note(path);
        self.writer.add_create(path, data, options)
    }

    /// Writes `data` to `path` if its version is `version` (any when `None`).
    pub fn add_set_data(&mut self, path: &str, data: &[u8], version: Option<i32>) -> ZkResult<()> {
        self.note(path);
        self.writer.add_set_data(path, data, version)
    }

    /// Deletes `path` if its version is `version` (any when `None`).
    pub fn add_delete(&mut self, path: &str, version: Option<i32>) -> ZkResult<()> {
        self.note(path);
        self.writer.add_delete(path, version)
    }

    fn note(&mut self, path: &str) {
        if self.path.is_none() {
            self.path = Some(path.to_owned());
        }
    }
}

impl<'a> Multi<'a> {
    /// Sends the transaction (one `multi` request; none if it is empty). `Err`: the request
    /// failed (nothing or everything may have been applied if it was lost); `Ok(Err(failed))`:
    /// operation `failed.index` failed and nothing was applied; `Ok(Ok(results))`: all
    /// applied, one result per operation.
    pub fn commit(mut self) -> impl Future<Output = ZkResult<Result<Vec<MultiWriteResult>, OpFailed>>> + Send + 'a {
        let path = self.path.take().unwrap_or_default();
        let request = traced("multi", &path, self.writer.commit());
        async move {
            match request.await {
                Ok(results) => Ok(Ok(results)),
                Err(MultiWriteError::OperationFailed { index, source }) => Ok(Err(OpFailed { index, error: source })),
                Err(MultiWriteError::RequestFailed { source }) => Err(source),
            }
        }
    }
}

/// `request` inside its own `zookeeper` span, a child of the current span.
fn traced<F: Future>(op: &'static str, path: &str, request: F) -> Instrumented<F> {
    request.instrument(tracing::info_span!("zookeeper", otel.name = op, zk.op = op, zk.path = path))
}

/// "No such znode" as `None`.
fn found<T>(result: ZkResult<T>) -> ZkResult<Option<T>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(Error::NoNode) => Ok(None),
        Err(err) => Err(err),
    }
}
