//! Counts the ZooKeeper requests an in-process zkcoord instance sends, by the RPC they are sent
//! for: every request goes through the `Zk` facade, which opens a `zookeeper` span (`zk.op`)
//! below the call's `grpc` span (`rpc.method`); requests outside any call (election watches,
//! the janitor) have no RPC. The session's liveness `sync` is not traced, so pings and proofs do
//! not count, unlike in ZooKeeper's own `srvr` counters.
//!
//! The collector is installed as the **thread's** default subscriber: use it in a
//! current-thread `#[tokio::test]` (the default), where the instance's tasks run on the test's
//! thread, so that tests running in parallel threads do not count into each other.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, Ordering},
};

use tracing::{
    field::{Field, Visit},
    span,
    subscriber::DefaultGuard,
};
use tracing_subscriber::{Layer, layer::Context, prelude::*, registry::LookupSpan};

/// One ZooKeeper request.
#[derive(Clone, Debug)]
pub struct Request {
    /// The `Zk` method (`get_data`, `multi`, …).
    pub op: String,
    /// The gRPC method it was sent for (`/zkcoord.v1.Election/Resign`), if any.
    pub rpc: Option<String>,
    /// When it was sent and when it was answered, as positions in this thread's sequence of
    /// sends and answers (0: not answered yet).
    pub sent: u64,
    answered: Arc<AtomicU64>,
}

impl Request {
    /// When it was answered (its span closed), as a position in the sequence of sends and
    /// answers; `None` while it is in flight.
    pub fn answered(&self) -> Option<u64> {
        Some(self.answered.load(Ordering::SeqCst)).filter(|&at| at != 0)
    }
}

/// The round trips `requests` (in the order sent) took one after the other: a request sent
/// after one of the current round trip was answered starts the next; requests sent before any
/// answer (in flight together, or pipelined on the session) share one.
pub fn round_trips(requests: &[Request]) -> usize {
    let mut trips = 0;
    let mut current: Vec<&Request> = Vec::new();
    for request in requests {
        let waited = current.iter().any(|r| r.answered().is_some_and(|at| at < request.sent));
        if current.is_empty() || waited {
            trips += 1;
            current.clear();
        }
        current.push(request);
    }
    trips
}

/// The requests counted since [`Requests::install`] or the last [`Requests::take`].
#[derive(Clone, Debug, Default)]
pub struct Requests {
    log: Arc<Mutex<Vec<Request>>>,
    /// Numbers sends and answers in the order they happen.
    clock: Arc<AtomicU64>,
}

impl Requests {
    /// Starts counting this thread's requests, until the guard is dropped.
    pub fn install() -> (Self, DefaultGuard) {
        let requests = Self::default();
        let guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(requests.clone()));
        tracing::callsite::rebuild_interest_cache();
        (requests, guard)
    }

    /// The requests counted so far; counting starts afresh.
    ///
    /// Also recomputes every callsite's interest: a callsite first hit on another test's thread
    /// while this counter was being installed may have cached "never" (tracing-core computes
    /// interest against the dispatchers it knows of at registration, and tests run in
    /// parallel), and would then go uncounted here for good.
    pub fn take(&self) -> Vec<Request> {
        tracing::callsite::rebuild_interest_cache();
        std::mem::take(&mut *self.log.lock().unwrap())
    }

    /// The requests counted so far sent for gRPC method `rpc` (its last path segment, e.g.
    /// `Resign`), in the order sent; counting starts afresh.
    pub fn take_calls(&self, rpc: &str) -> Vec<Request> {
        self.take()
            .into_iter()
            .filter(|r| r.rpc.as_deref().is_some_and(|m| m.rsplit('/').next() == Some(rpc)))
            .collect()
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst) + 1
    }
}

/// When a `zookeeper` span closed, kept in its extensions.
struct Answered(Arc<AtomicU64>);

/// The gRPC method of a `grpc` span, kept in its extensions.
struct Method(String);

/// Collects string-ish fields of a span.
#[derive(Default)]
struct Fields {
    op: Option<String>,
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
        let answered = Arc::new(AtomicU64::new(0));
        span.extensions_mut().insert(Answered(answered.clone()));
        let (op, sent) = (fields.op.unwrap_or_default(), self.tick());
        self.log.lock().unwrap().push(Request { op, rpc, sent, answered });
    }

    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(&id)
            && let Some(Answered(answered)) = span.extensions().get::<Answered>()
        {
            answered.store(self.tick(), Ordering::SeqCst);
        }
    }
}
