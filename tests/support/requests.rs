//! Counts the ZooKeeper requests an in-process zkcoord instance sends, by the RPC they are sent
//! for: every request goes through the `Zk` facade, which opens a `zookeeper` span (`zk.op`)
//! below the call's `grpc` span (`rpc.method`); requests outside any call (election watches,
//! the janitor) have no RPC. The session's liveness `sync` is not traced, so pings and proofs do
//! not count, unlike in ZooKeeper's own `srvr` counters.
//!
//! The collector is installed as the **thread's** default subscriber: use it in a
//! current-thread `#[tokio::test]` (the default), where the instance's tasks run on the test's
//! thread, so that tests running in parallel threads do not count into each other.

use std::sync::{Arc, Mutex};

use tracing::{
    field::{Field, Visit},
    span,
    subscriber::DefaultGuard,
};
use tracing_subscriber::{Layer, layer::Context, prelude::*, registry::LookupSpan};

/// One ZooKeeper request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The `Zk` method (`get_data`, `multi`, …).
    pub op: String,
    /// The path (a transaction's first operation's).
    pub path: String,
    /// The gRPC method it was sent for (`/zkcoord.v1.Election/Resign`), if any.
    pub rpc: Option<String>,
}

/// The requests counted since [`Requests::install`] or the last [`Requests::take`].
#[derive(Clone, Debug, Default)]
pub struct Requests {
    log: Arc<Mutex<Vec<Request>>>,
}

impl Requests {
    /// Starts counting this thread's requests, until the guard is dropped.
    pub fn install() -> (Self, DefaultGuard) {
        let requests = Self::default();
        let guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(requests.clone()));
        (requests, guard)
    }

    /// The requests counted so far; counting starts afresh.
    pub fn take(&self) -> Vec<Request> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }

    /// The ops of the requests counted so far sent for gRPC method `rpc` (its last path segment,
    /// e.g. `Resign`), in order; counting starts afresh.
    pub fn take_for(&self, rpc: &str) -> Vec<String> {
        self.take()
            .into_iter()
            .filter(|r| r.rpc.as_deref().is_some_and(|m| m.rsplit('/').next() == Some(rpc)))
            .map(|r| r.op)
            .collect()
    }
}

/// The gRPC method of a `grpc` span, kept in its extensions.
struct Method(String);

/// Collects string-ish fields of a span.
#[derive(Default)]
struct Fields {
    op: Option<String>,
    path: Option<String>,
    method: Option<String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record(field, value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record(field, format!("{value:?}").trim_matches('"').to_owned());
    }
}

impl Fields {
    fn record(&mut self, field: &Field, value: String) {
        match field.name() {
            "zk.op" => self.op = Some(value),
            "zk.path" => self.path = Some(value),
            "rpc.method" => self.method = Some(value),
            _ => {}
        }
    }
}

impl<S> Layer<S> for Requests
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let name = attrs.metadata().name();
        if name != "grpc" && name != "zookeeper" {
            return;
        }
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let Some(span) = ctx.span(id) else { return };
        if name == "grpc" {
            if let Some(method) = fields.method {
                span.extensions_mut().insert(Method(method));
            }
            return;
        }
        let rpc = span.scope().skip(1).find_map(|parent| parent.extensions().get::<Method>().map(|m| m.0.clone()));
        let request = Request { op: fields.op.unwrap_or_default(), path: fields.path.unwrap_or_default(), rpc };
        self.log.lock().unwrap().push(request);
    }
}
