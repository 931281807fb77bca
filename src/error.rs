//! The one error type of zkcoord and its single mapping to `tonic::Status`.
//!
//! Every message is stable (a fixed string, or a fixed string built from static parts) and
//! never echoes client input or znode paths, so clients may match on it and no tenant learns
//! about another's state from an error.

use tonic::{Code, Status, metadata::MetadataValue};
pub use zkcoord_client::{LOCK_WAIT_TIMEOUT, REASON_METADATA};

// The messages of `Error::FailedPrecondition`, part of the API: clients match on them.

/// Campaign: the candidate id is bound to another lease.
pub const CANDIDATE_ID_TAKEN: &str = "the candidate id is taken by another lease";
/// Campaign: an existing election has the other preemption policy.
pub const OTHER_PREEMPT_POLICY: &str = "the election has a different preempt policy";
/// Campaign: the stream ends because another Campaign stream took the candidacy.
pub const TAKEN_OVER: &str = "the candidacy was taken over by another Campaign stream";
/// Proclaim, Resign: the key does not lead the term given.
pub const NOT_LEADER_OF_TERM: &str = "not the leader of that term";
/// Resign: the candidacy changed between its read and the write.
pub const CANDIDACY_CHANGED: &str = "the candidacy changed meanwhile; retry";
/// Resign with `stay_candidate`: the key is not a candidate.
pub const NOT_A_CANDIDATE: &str = "not a candidate";
/// Resign with `stay_candidate`: refused, the candidacy still leads the term undeposed.
pub const STILL_LEADS: &str = "the candidate still leads that term; Resign without stay_candidate gives it up";
/// Transfer: there is no leader to transfer from.
pub const NO_LEADER: &str = "the election has no leader";
/// Transfer: `from` is not the leader.
pub const NOT_LEADER: &str = "not the leader";
/// Transfer: `term` is not the current one.
pub const NOT_CURRENT_TERM: &str = "not the current term";
/// Transfer: no candidate to hand leadership to.
pub const NO_TRANSFER_TARGET: &str = "the transfer target is unknown, not eligible or already the leader";
/// Transfer: the election record changed between its read and the write.
pub const LEADERSHIP_CHANGED: &str = "the leadership changed meanwhile; retry";
/// KeepAlive: the stream ends because a stream on another instance claimed the lease.
pub const LEASE_CLAIMED: &str = "lease was claimed by a KeepAlive stream on another instance";
/// Lock: the request was released by an Unlock with its handle while it waited (the lease
/// lives).
pub const LOCK_REQUEST_RELEASED: &str = "lock request was released";

// The messages of `Error::NotAuthorized` (PERMISSION_DENIED), part of the API. They name the
// kind of thing refused, never the name itself.

/// Campaign, Proclaim, Resign, Transfer, Leader, Observe, Candidates: the election.
pub const NOT_AUTHORIZED_ELECTION: &str = "identity not authorized for this election";
/// Lock, TryLock, Unlock, Holders: a lock key.
pub const NOT_AUTHORIZED_LOCK_KEY: &str = "identity not authorized for this lock key";
/// The Shards rpcs: the shard group.
pub const NOT_AUTHORIZED_SHARD_GROUP: &str = "identity not authorized for this shard group";
/// Grant, KeepAlive, Revoke, TimeToLive, List: the lease (by its owner name).
pub const NOT_AUTHORIZED_LEASE: &str = "identity not authorized for this lease";
/// A stream (Campaign, Observe, Watch, KeepAlive) ends: a reload of the `authz_file` withdrew
/// the rights it was started with.
pub const RIGHTS_WITHDRAWN: &str = "identity no longer authorized: the authz rules changed";
/// Every call, and the streams above: the connection's client certificate is not trusted by
/// the client CA reloaded since the connection was made (`tls_client_ca` changed).
pub const CERTIFICATE_NOT_TRUSTED: &str = "client certificate no longer trusted";

/// The message of a request that is not a valid protobuf message of the call's request type
/// ([`Error::Undecodable`]).
pub const UNDECODABLE_REQUEST: &str = "request: not a valid protobuf message";

// The messages of `Error::LimitReached` (RESOURCE_EXHAUSTED), part of the API: see
// `crate::limits` for how each is counted.

/// Grant: the tenant has `max_leases_per_tenant` leases.
pub const TOO_MANY_TENANT_LEASES: &str = "too many leases in this tenant";
/// Grant: the caller's identity has `max_leases_per_identity` leases attached to this instance.
pub const TOO_MANY_IDENTITY_LEASES: &str = "too many leases for this identity";
/// KeepAlive: the lease's heartbeats named more distinct elections and shard groups within a
/// minute than `max_candidacies_per_lease`.
pub const TOO_MANY_NAMED: &str = "too many elections and shard groups named by this lease's heartbeats";
/// Grant: the caller's turn under `max_grants_per_second` is more than a second away.
pub const TOO_MANY_GRANTS: &str = "too many grants: retry later";
/// Campaign: the lease has `max_candidacies_per_lease` candidacies.
pub const TOO_MANY_CANDIDACIES: &str = "too many candidacies for this lease";
/// Lock, TryLock: the lease has `max_lock_requests_per_lease` holds and queued requests.
pub const TOO_MANY_LOCK_REQUESTS: &str = "too many lock requests for this lease";
/// Observe (elections), Watch and Observe (shards): `max_observe_streams` are open here.
pub const TOO_MANY_OBSERVE_STREAMS: &str = "too many Observe and Watch streams on this instance";
/// Campaign, Observe, Leader, Candidates, Transfer, a leader's Resign of an election not
/// followed here: `max_watched_elections` others are.
pub const TOO_MANY_ELECTIONS: &str = "too many elections followed by this instance";
/// Every call on a connection past `max_connections_per_identity`.
pub const TOO_MANY_CONNECTIONS: &str = "too many connections for this identity";

// `Error::InvalidArgument` reasons that several rules share.

/// A message field is absent.
pub const REQUIRED: &str = "is required";
/// A string field is empty.
pub const EMPTY: &str = "must not be empty";
/// A name or a secret is too long.
pub const AT_MOST_128_BYTES: &str = "must be at most 128 bytes";

/// Everything that can go wrong in a zkcoord call.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is malformed or out of range. `field` is the protobuf field path,
    /// `reason` a fixed explanation.
    #[error("{field}: {reason}")]
    InvalidArgument {
        /// The offending field, e.g. `key.election`.
        field: &'static str,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// A request message is not a valid protobuf encoding of the call's request type (garbage,
    /// a truncated varint, invalid UTF-8 in a string, a wrong wire type). The message is
    /// [`UNDECODABLE_REQUEST`].
    #[error("{}", UNDECODABLE_REQUEST)]
    Undecodable,
    /// The named lease does not exist (never granted, expired or revoked).
    #[error("lease not found")]
    LeaseNotFound,
    /// The named lock hold does not exist (never issued or already released). The message
    /// says "handle", the hold id's name in the API.
    #[error("lock handle not found")]
    HoldNotFound,
    /// Something the call names does not exist (a shard group, a member). The message is fixed.
    #[error("{0}")]
    NotFound(&'static str),
    /// The lease secret does not match the lease.
    #[error("wrong lease secret")]
    WrongSecret,
    /// The caller's client certificate identity may not use the name it gave, in the way the
    /// call would (see [`crate::authz`]), or no longer may ([`RIGHTS_WITHDRAWN`]). The message
    /// is one of the `NOT_AUTHORIZED_*` constants or [`RIGHTS_WITHDRAWN`], never the name.
    #[error("{0}")]
    NotAuthorized(&'static str),
    /// The request names a tenant this deployment does not serve (setting `tenants`).
    #[error("tenant not allowed")]
    TenantNotAllowed,
    /// The call is valid but the state does not allow it (not the leader, not the holder, ...).
    #[error("{0}")]
    FailedPrecondition(&'static str),
    /// A Lock call's wait timed out; nothing was acquired. Its status carries the metadata
    /// [`REASON_METADATA`]: [`LOCK_WAIT_TIMEOUT`], unlike a client's own deadline.
    #[error("lock wait timed out")]
    DeadlineExceeded,
    /// The call was cancelled by its caller; nothing was done.
    #[error("cancelled")]
    Cancelled,
    /// zkcoord cannot reach ZooKeeper, or cannot be sure of the answer; the client should
    /// retry, possibly on another instance.
    #[error("zookeeper unavailable")]
    Unavailable,
    /// A quota is used up (see [`crate::limits`]); nothing was done. The message is one of the
    /// `TOO_MANY_*` constants.
    #[error("{0}")]
    LimitReached(&'static str),
    /// A stream's client left too many messages unread; the stream ends (the client may open
    /// it again).
    #[error("stream fell too far behind")]
    FellBehind,
    /// zkcoord is shutting down; the client should move to another instance.
    #[error("zkcoord instance is shutting down")]
    ShuttingDown,
    /// A ZooKeeper error that is not one of the expected outcomes above.
    #[error("zookeeper error: {0}")]
    ZooKeeper(#[source] zookeeper_client::Error),
    /// A broken invariant (e.g. undecodable data in zkcoord's own znodes).
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub const fn invalid(field: &'static str, reason: &'static str) -> Self {
        Self::InvalidArgument { field, reason }
    }

    /// True for errors a client should retry (on this or another instance).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable | Self::ShuttingDown)
    }
}

/// Connection-level ZooKeeper errors are [`Error::Unavailable`]: the session's link failed, so
/// the request's outcome is unknown (it may have been applied, e.g. a Lock's request queued)
/// and the call may be retried, here or on another instance. Everything else is an answer
/// about the request itself, mapped where it is expected, else [`Error::ZooKeeper`] (INTERNAL).
impl From<zookeeper_client::Error> for Error {
    fn from(err: zookeeper_client::Error) -> Self {
        use zookeeper_client::Error as Zk;
        match err {
            Zk::ConnectionLoss
            | Zk::SessionExpired
            | Zk::SessionMoved
            | Zk::Timeout
            | Zk::NoHosts
            | Zk::ClientClosed
            | Zk::Throttled
            | Zk::NotReadOnly
            // The client library fails every request in flight with the error that broke the
            // connection: an I/O error ("Connection reset by peer" when a member is killed) or
            // "no response from connection in <n>ms", both wrapped as `Custom`. The library
            // makes `Custom` errors for nothing else a request can get (its other uses are
            // TLS and SASL set-up, which only fail connecting).
            | Zk::Custom(_) => Self::Unavailable,
            other => Self::ZooKeeper(other),
        }
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        let code = match &err {
            Error::InvalidArgument { .. } | Error::Undecodable => Code::InvalidArgument,
            Error::LeaseNotFound | Error::HoldNotFound | Error::NotFound(_) => Code::NotFound,
            Error::WrongSecret | Error::NotAuthorized(_) | Error::TenantNotAllowed => Code::PermissionDenied,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::Unavailable | Error::ShuttingDown => Code::Unavailable,
            Error::DeadlineExceeded => Code::DeadlineExceeded,
            Error::FellBehind | Error::LimitReached(_) => Code::ResourceExhausted,
            Error::Cancelled => Code::Cancelled,
            Error::ZooKeeper(_) | Error::Internal(_) => Code::Internal,
        };
        if code == Code::Internal {
            // Details stay in the log; the client gets a fixed message.
            tracing::error!(error = %err, "internal error");
            return Status::new(code, "internal error");
        }
        let mut status = Status::new(code, err.to_string());
        if let Error::DeadlineExceeded = err {
            // The one way to tell it from a client's own deadline, which has the same code.
            status.metadata_mut().insert(REASON_METADATA, MetadataValue::from_static(LOCK_WAIT_TIMEOUT));
        }
        status
    }
}

/// The result type of zkcoord's own functions.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_stable() {
        let cases = [
            (
                Error::invalid("key.election", "must not be empty"),
                Code::InvalidArgument,
                "key.election: must not be empty",
            ),
            (Error::Undecodable, Code::InvalidArgument, "request: not a valid protobuf message"),
            (Error::LeaseNotFound, Code::NotFound, "lease not found"),
            (Error::WrongSecret, Code::PermissionDenied, "wrong lease secret"),
            (Error::TenantNotAllowed, Code::PermissionDenied, "tenant not allowed"),
            (Error::HoldNotFound, Code::NotFound, "lock handle not found"),
            (Error::NotAuthorized(NOT_AUTHORIZED_ELECTION), Code::PermissionDenied, NOT_AUTHORIZED_ELECTION),
            (Error::NotAuthorized(RIGHTS_WITHDRAWN), Code::PermissionDenied, RIGHTS_WITHDRAWN),
            (Error::DeadlineExceeded, Code::DeadlineExceeded, "lock wait timed out"),
            (Error::FellBehind, Code::ResourceExhausted, "stream fell too far behind"),
            (Error::FailedPrecondition(NOT_LEADER), Code::FailedPrecondition, "not the leader"),
            (Error::LimitReached(TOO_MANY_CANDIDACIES), Code::ResourceExhausted, "too many candidacies for this lease"),
            (zookeeper_client::Error::ConnectionLoss.into(), Code::Unavailable, "zookeeper unavailable"),
            (zookeeper_client::Error::NoAuth.into(), Code::Internal, "internal error"),
        ];
        for (err, code, message) in cases {
            let status = Status::from(err);
            assert_eq!(status.code(), code);
            assert_eq!(status.message(), message);
            let reason = status.metadata().get(REASON_METADATA).map(|v| v.to_str().expect("ascii"));
            let expected = (code == Code::DeadlineExceeded).then_some(LOCK_WAIT_TIMEOUT);
            assert_eq!(reason, expected, "{message}");
        }
    }

    /// The fixed messages are part of the API: clients and tests match on them byte for byte.
    #[test]
    fn fixed_messages_do_not_change() {
        let messages = [
            (CANDIDATE_ID_TAKEN, "the candidate id is taken by another lease"),
            (OTHER_PREEMPT_POLICY, "the election has a different preempt policy"),
            (TAKEN_OVER, "the candidacy was taken over by another Campaign stream"),
            (NOT_LEADER_OF_TERM, "not the leader of that term"),
            (CANDIDACY_CHANGED, "the candidacy changed meanwhile; retry"),
            (NOT_A_CANDIDATE, "not a candidate"),
            (STILL_LEADS, "the candidate still leads that term; Resign without stay_candidate gives it up"),
            (NO_LEADER, "the election has no leader"),
            (NOT_LEADER, "not the leader"),
            (NOT_CURRENT_TERM, "not the current term"),
            (NO_TRANSFER_TARGET, "the transfer target is unknown, not eligible or already the leader"),
            (LEADERSHIP_CHANGED, "the leadership changed meanwhile; retry"),
            (LEASE_CLAIMED, "lease was claimed by a KeepAlive stream on another instance"),
            (LOCK_REQUEST_RELEASED, "lock request was released"),
            (REQUIRED, "is required"),
            (EMPTY, "must not be empty"),
            (AT_MOST_128_BYTES, "must be at most 128 bytes"),
            (UNDECODABLE_REQUEST, "request: not a valid protobuf message"),
            (TOO_MANY_TENANT_LEASES, "too many leases in this tenant"),
            (TOO_MANY_IDENTITY_LEASES, "too many leases for this identity"),
            (TOO_MANY_GRANTS, "too many grants: retry later"),
            (TOO_MANY_NAMED, "too many elections and shard groups named by this lease's heartbeats"),
            (TOO_MANY_CANDIDACIES, "too many candidacies for this lease"),
            (TOO_MANY_LOCK_REQUESTS, "too many lock requests for this lease"),
            (TOO_MANY_OBSERVE_STREAMS, "too many Observe and Watch streams on this instance"),
            (TOO_MANY_ELECTIONS, "too many elections followed by this instance"),
            (TOO_MANY_CONNECTIONS, "too many connections for this identity"),
            (NOT_AUTHORIZED_ELECTION, "identity not authorized for this election"),
            (NOT_AUTHORIZED_LOCK_KEY, "identity not authorized for this lock key"),
            (NOT_AUTHORIZED_SHARD_GROUP, "identity not authorized for this shard group"),
            (NOT_AUTHORIZED_LEASE, "identity not authorized for this lease"),
            (RIGHTS_WITHDRAWN, "identity no longer authorized: the authz rules changed"),
            (CERTIFICATE_NOT_TRUSTED, "client certificate no longer trusted"),
        ];
        for (message, expected) in messages {
            assert_eq!(Status::from(Error::FailedPrecondition(message)).message(), expected);
        }
    }
}
