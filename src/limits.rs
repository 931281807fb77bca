//! Request limits and how they are reported.
//!
//! * Calls in progress per connection: tonic's `concurrency_limit_per_connection` with load
//!   shedding, which answers RESOURCE_EXHAUSTED at once instead of queueing. A call counts
//!   until its response headers: the whole call for unary RPCs (a Lock waiting for its keys
//!   included), until the stream is open for streams.
//! * Streams open at once per connection (`max_streams_per_connection`): HTTP/2
//!   `SETTINGS_MAX_CONCURRENT_STREAMS`, which counts a stream until it ends. A client's next
//!   call waits for a free stream; hyper refuses one opened anyway (`REFUSED_STREAM`).
//! * Request message size ([`crate::server::MAX_REQUEST_BYTES`]): tonic reports an oversized
//!   message as OUT_OF_RANGE; [`oversized_as_resource_exhausted`] reports it as
//!   RESOURCE_EXHAUSTED, as gRPC specifies, with a stable message.
//!
//! # Quotas
//!
//! What one client, identity or tenant may hold ([`Quotas`], one setting each). Going past one
//! is [`Error::LimitReached`] (RESOURCE_EXHAUSTED) with a fixed message; nothing is written.
//! How each is counted, and how exact that is:
//!
//! * Leases per tenant (`max_leases_per_tenant`): the number of lease records of the tenant
//!   in ZooKeeper (the `num_children` of its `/leases`), read once per Grant — the one read a
//!   limit adds; no instance follows the lease list. Grants racing on several instances may
//!   each pass before seeing the others: the tenant may exceed the limit by the number of
//!   Grants in flight at once.
//! * Leases per identity (`max_leases_per_identity`, mTLS only): the leases attached to this
//!   instance by a Grant or KeepAlive of that identity ([`count_of_identity`]), in memory. It
//!   bounds what one identity holds *per instance*: one that spreads its Grants over `n`
//!   instances may hold up to `n` times the limit (and Grants in flight at once may pass
//!   together); `max_leases_per_tenant` bounds the total.
//! * Candidacies per lease (`max_candidacies_per_lease`): Campaign reads the lease record
//!   anyway; its `num_children` (every binding of the lease) is an upper bound of its
//!   candidacies. Only when that reaches the limit are the lease's bindings listed (one read)
//!   and its candidacies counted exactly ([`bindings_of_kind`]); taking back an existing
//!   candidacy is never refused. Campaigns of one lease racing each other may exceed the limit
//!   by their number.
//! * Lock requests per lease (`max_lock_requests_per_lease`, holds and queued requests): as
//!   for candidacies when the call reads the lease record (a lease attached to another
//!   instance). A lease attached here is authenticated without a read; its holds acquired
//!   through this instance are counted in memory since the last exact count, which is read
//!   when that reaches the limit. Requests through other instances are counted by them from
//!   the record, so a lease whose calls go to several instances may hold up to twice the
//!   limit (plus racing calls).
//! * Observe and Watch streams per instance (`max_observe_streams`): election Observe, shard
//!   Watch and shard Observe streams open on this instance, each holding a permit of one
//!   [`Semaphore`] until it ends (or its client leaves).
//! * Elections followed per instance (`max_watched_elections`): each followed election is a
//!   task, a few ZooKeeper watches and (with metrics) a series; it holds a permit while a
//!   Campaign or Observe stream or a call (Leader, Candidates, Transfer, ...) uses it and is
//!   dropped with its last user. A call that needs a new one past the limit is refused;
//!   elections already followed are unaffected.
//! * Connections per identity (`max_connections_per_identity`, mTLS only): counted from the
//!   handshake to the close ([`ConnectionCounts`]). A connection past the limit is kept for
//!   [`REFUSED_CONNECTION_LINGER`] to answer every zkcoord call with RESOURCE_EXHAUSTED, then
//!   closed.
//!
//! # Rates
//!
//! * Grants per second per tenant and identity (`max_grants_per_second`): paced, a Grant past
//!   the pace waits for its turn up to a second, then is refused ([`grant_rate`]).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{
    error::{self, Error, Result},
    sync_util::lock,
};

pub mod grant_rate;

pub use grant_rate::GrantRate;

/// The message of an oversized request.
pub const TOO_LARGE_MESSAGE: &str = "request message too large";

/// How tonic words a request over the decoding limit (`tonic::codec::decode`).
const TONIC_TOO_LARGE: &str = "Error, decoded message length too large";

/// Rewrites tonic's OUT_OF_RANGE for an oversized request into RESOURCE_EXHAUSTED; the server
/// applies it to every response (`tower::util::MapResponseLayer`).
///
/// Only "trailers-only" answers carry the status in their headers; those are the ones a
/// request that failed to decode gets (unary and server-streaming calls decode their one
/// request message before the handler runs).
pub fn oversized_as_resource_exhausted<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers_mut();
    let out_of_range = headers.get("grpc-status").is_some_and(|v| v.as_bytes() == b"11");
    let too_large =
        headers.get("grpc-message").is_some_and(|v| percent_decoded(v.as_bytes()).starts_with(TONIC_TOO_LARGE));
    if out_of_range && too_large {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
        headers.insert("grpc-message", http::HeaderValue::from_static("request%20message%20too%20large"));
    }
    response
}

/// The grpc-message header is percent-encoded; decoding `%20` suffices to compare prefixes.
fn percent_decoded(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).replace("%20", " ")
}

/// The quotas of one instance (see the module docs). Each is at least 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quotas {
    /// Leases one tenant may have (the default tenant counts as one).
    pub leases_per_tenant: usize,
    /// Leases one client identity may have attached to this instance (mTLS).
    pub leases_per_identity: usize,
    /// Candidacies one lease may have.
    pub candidacies_per_lease: usize,
    /// Lock requests (holds and queued requests) one lease may have.
    pub lock_requests_per_lease: usize,
    /// Observe and Watch streams open at once on this instance.
    pub observe_streams: usize,
    /// Elections this instance follows at once.
    pub watched_elections: usize,
    /// Connections one client identity may have open to this instance (mTLS).
    pub connections_per_identity: usize,
    /// Grants a second per tenant and client identity, on this instance ([`grant_rate`]).
    pub grants_per_second: usize,
}

/// Default of `max_leases_per_tenant`: far above what a tenant of ordinary size needs, far
/// below what would fill ZooKeeper's memory (a lease record is up to ~9 KiB).
pub const DEFAULT_LEASES_PER_TENANT: usize = 100_000;
/// Default of `max_leases_per_identity`.
pub const DEFAULT_LEASES_PER_IDENTITY: usize = 10_000;
/// Default of `max_candidacies_per_lease`.
pub const DEFAULT_CANDIDACIES_PER_LEASE: usize = 1_000;
/// Default of `max_lock_requests_per_lease`.
pub const DEFAULT_LOCK_REQUESTS_PER_LEASE: usize = 10_000;
/// Default of `max_observe_streams`.
pub const DEFAULT_OBSERVE_STREAMS: usize = 10_000;
/// Default of `max_watched_elections`.
pub const DEFAULT_WATCHED_ELECTIONS: usize = 10_000;
/// Default of `max_connections_per_identity`.
pub const DEFAULT_CONNECTIONS_PER_IDENTITY: usize = 100;
/// Default of `max_grants_per_second`: a fleet of a few hundred nodes restarting at once is
/// served within a second or two; a flood costs ZooKeeper at most this many lease writes a
/// second per caller and instance.
pub const DEFAULT_GRANTS_PER_SECOND: usize = 200;
/// The largest value any quota accepts.
pub const MAX_QUOTA: usize = 10_000_000;

impl Default for Quotas {
    fn default() -> Self {
        Self {
            leases_per_tenant: DEFAULT_LEASES_PER_TENANT,
            leases_per_identity: DEFAULT_LEASES_PER_IDENTITY,
            candidacies_per_lease: DEFAULT_CANDIDACIES_PER_LEASE,
            lock_requests_per_lease: DEFAULT_LOCK_REQUESTS_PER_LEASE,
            observe_streams: DEFAULT_OBSERVE_STREAMS,
            watched_elections: DEFAULT_WATCHED_ELECTIONS,
            connections_per_identity: DEFAULT_CONNECTIONS_PER_IDENTITY,
            grants_per_second: DEFAULT_GRANTS_PER_SECOND,
        }
    }
}

/// How long a connection past `max_connections_per_identity` stays open, answering every
/// zkcoord call with RESOURCE_EXHAUSTED, before it is closed.
pub const REFUSED_CONNECTION_LINGER: Duration = Duration::from_secs(5);

/// The instance-wide side of the quotas: their values and the permits of what is counted per
/// instance. One per instance, shared by every tenant's recipes and every service.
#[derive(Debug)]
pub struct InstanceLimits {
    /// The configured values.
    pub quotas: Quotas,
    observe_streams: Arc<Semaphore>,
    watched_elections: Arc<Semaphore>,
    /// The pace of Grants.
    pub grants: GrantRate,
}

impl InstanceLimits {
    /// Limits with the values of `quotas`, nothing counted yet.
    pub fn new(quotas: Quotas) -> Arc<Self> {
        Arc::new(Self {
            quotas,
            observe_streams: Arc::new(Semaphore::new(quotas.observe_streams)),
            watched_elections: Arc::new(Semaphore::new(quotas.watched_elections)),
            grants: GrantRate::new(quotas.grants_per_second),
        })
    }

    /// A permit for one more Observe or Watch stream, held until the stream ends.
    ///
    /// # Errors
    /// [`Error::LimitReached`] ([`error::TOO_MANY_OBSERVE_STREAMS`]) when `max_observe_streams`
    /// are open.
    pub fn observe_stream(&self) -> Result<OwnedSemaphorePermit> {
        self.observe_streams
            .clone()
            .try_acquire_owned()
            .map_err(|_| Error::LimitReached(error::TOO_MANY_OBSERVE_STREAMS))
    }

    /// A permit for one more followed election, held by its watch.
    ///
    /// # Errors
    /// [`Error::LimitReached`] ([`error::TOO_MANY_ELECTIONS`]) when `max_watched_elections`
    /// elections are followed.
    pub fn watched_election(&self) -> Result<OwnedSemaphorePermit> {
        self.watched_elections.clone().try_acquire_owned().map_err(|_| Error::LimitReached(error::TOO_MANY_ELECTIONS))
    }
}

/// Checks `count` (what exists) against `max`: one more is allowed only below it.
///
/// # Errors
/// [`Error::LimitReached`] with `message` when `count` has reached `max`.
pub fn below(count: usize, max: usize, message: &'static str) -> Result<()> {
    if count >= max { Err(Error::LimitReached(message)) } else { Ok(()) }
}

/// How many of a lease's bindings (the child names of its record) are of the kind whose names
/// start with `prefix`, and whether `own` (the binding a call would create) is among them.
pub fn bindings_of_kind<'a>(
    children: impl IntoIterator<Item = &'a String>,
    prefix: &str,
    own: Option<&str>,
) -> (usize, bool) {
    let mut count = 0;
    let mut has_own = false;
    for child in children {
        if child.starts_with(prefix) {
            count += 1;
            has_own |= own == Some(child.as_str());
        }
    }
    (count, has_own)
}

/// How many of `identities` (one per lease attached here, `None` for a lease of no identity)
/// are `identity`.
pub fn count_of_identity<'a>(identities: impl IntoIterator<Item = Option<&'a str>>, identity: &str) -> usize {
    identities.into_iter().filter(|i| *i == Some(identity)).count()
}

/// Connections open per client identity, for `max_connections_per_identity`.
#[derive(Debug)]
pub struct ConnectionCounts {
    max: usize,
    open: Mutex<HashMap<Arc<str>, usize>>,
}

/// One counted connection of an identity; uncounted when dropped (the connection closed).
#[derive(Debug)]
pub struct ConnectionSlot {
    counts: Arc<ConnectionCounts>,
    identity: Arc<str>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = lock(&self.counts.open);
        if let Some(n) = open.get_mut(&self.identity) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.identity);
            }
        }
    }
}

impl ConnectionCounts {
    /// Counts with at most `max` connections per identity.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self { max, open: Mutex::new(HashMap::new()) })
    }

    /// Counts one more connection of `identity`; `None` when it has `max` open already (the
    /// connection is then not counted).
    pub fn open(self: &Arc<Self>, identity: &Arc<str>) -> Option<ConnectionSlot> {
        let mut open = lock(&self.open);
        let n = open.entry(identity.clone()).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(ConnectionSlot { counts: self.clone(), identity: identity.clone() })
    }

    /// How many connections of `identity` are counted now.
    #[cfg(test)]
    pub fn of(&self, identity: &str) -> usize {
        lock(&self.open).get(identity).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_more_is_allowed_only_below_the_limit() {
        assert!(below(0, 1, error::TOO_MANY_CANDIDACIES).is_ok());
        assert!(below(2, 3, error::TOO_MANY_CANDIDACIES).is_ok());
        let err = below(3, 3, error::TOO_MANY_CANDIDACIES).expect_err("at the limit");
        assert!(matches!(err, Error::LimitReached(m) if m == error::TOO_MANY_CANDIDACIES));
        assert!(below(4, 3, error::TOO_MANY_CANDIDACIES).is_err());
    }

    #[test]
    fn bindings_are_counted_by_kind() {
        let children: Vec<String> =
            ["e~a~c1", "e~b~c2", "l~00000000000000ab", "s~g~m", "x", "e~a~c3"].map(String::from).into();
        assert_eq!(bindings_of_kind(&children, "e~", None), (3, false));
        assert_eq!(bindings_of_kind(&children, "e~", Some("e~b~c2")), (3, true));
        assert_eq!(bindings_of_kind(&children, "e~", Some("l~00000000000000ab")), (3, false));
        assert_eq!(bindings_of_kind(&children, "l~", None), (1, false));
        assert_eq!(bindings_of_kind(&[], "e~", None), (0, false));
    }

    #[test]
    fn leases_are_counted_per_identity() {
        let identities = [Some("a"), None, Some("b"), Some("a"), Some("ab")];
        assert_eq!(count_of_identity(identities, "a"), 2);
        assert_eq!(count_of_identity(identities, "b"), 1);
        assert_eq!(count_of_identity(identities, "c"), 0);
    }

    #[test]
    fn connections_are_counted_per_identity_until_closed() {
        let counts = ConnectionCounts::new(2);
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let first = counts.open(&a).expect("1 of 2");
        let second = counts.open(&a).expect("2 of 2");
        assert!(counts.open(&a).is_none(), "a third of a");
        assert_eq!(counts.of("a"), 2, "a refused connection is not counted");
        let other = counts.open(&b).expect("other identities are not limited by a's");
        drop(first);
        assert_eq!(counts.of("a"), 1);
        let third = counts.open(&a).expect("a closed connection frees its place");
        drop((second, third, other));
        assert_eq!((counts.of("a"), counts.of("b")), (0, 0));
        assert!(lock(&counts.open).is_empty(), "identities with no connection are forgotten");
    }

    #[test]
    fn instance_permits_are_given_back_when_dropped() {
        let limits = InstanceLimits::new(Quotas { observe_streams: 1, watched_elections: 2, ..Quotas::default() });
        let stream = limits.observe_stream().expect("the first stream");
        assert!(matches!(limits.observe_stream(), Err(Error::LimitReached(m)) if m == error::TOO_MANY_OBSERVE_STREAMS));
        drop(stream);
        let _stream = limits.observe_stream().expect("a stream after the first ended");
        let elections = (limits.watched_election().expect("1"), limits.watched_election().expect("2"));
        assert!(matches!(limits.watched_election(), Err(Error::LimitReached(m)) if m == error::TOO_MANY_ELECTIONS));
        drop(elections);
        let _election = limits.watched_election().expect("after the others were dropped");
    }

    #[test]
    fn the_replacement_message_is_the_documented_one() {
        assert_eq!(percent_decoded(b"request%20message%20too%20large"), TOO_LARGE_MESSAGE);
        assert!(
            percent_decoded(b"Error,%20decoded%20message%20length%20too%20large:%20found").starts_with(TONIC_TOO_LARGE)
        );
    }
}
