//! The client's error type, and the status metadata zkcoord explains some errors with.

/// The response metadata key (a trailer) with which zkcoord tells why a call failed, where the
/// status code alone cannot (see [`LOCK_WAIT_TIMEOUT`]).
pub const REASON_METADATA: &str = "zkcoord-reason";

/// [`REASON_METADATA`] of a Lock call whose wait (`wait_timeout_ms`) ran out on the server:
/// DEADLINE_EXCEEDED like a client's own deadline, but only this one says for sure that
/// nothing is held or queued.
pub const LOCK_WAIT_TIMEOUT: &str = "lock-wait-timeout";

/// What can go wrong in a client call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An endpoint is not a valid `host:port` or URI.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// Why it is invalid.
        reason: String,
    },
    /// No endpoints were given.
    #[error("no zkcoord endpoints given")]
    NoEndpoints,
    /// zkcoord answered with an error status (after trying every endpoint, for calls that are
    /// safe to retry).
    #[error("{}: {}", .0.code(), .0.message())]
    Status(#[source] tonic::Status),
    /// A tenant name that cannot be sent as a header value.
    #[error("invalid tenant {0:?}")]
    InvalidTenant(String),
    /// The lease has ended (expired, revoked): everything bound to it is gone.
    #[error("the lease has ended")]
    LeaseLost,
    /// A Lock's wait ran out on the server (DEADLINE_EXCEEDED with [`LOCK_WAIT_TIMEOUT`]):
    /// nothing was acquired and nothing is left queued. (A deadline of the caller's own is a
    /// [`Error::Status`] with DEADLINE_EXCEEDED and no such reason.)
    #[error("lock wait timed out")]
    LockWaitTimedOut,
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        Self::from_status(status)
    }
}

impl Error {
    /// The error of a failed call's `status`: [`Error::LockWaitTimedOut`] when zkcoord says so,
    /// else [`Error::Status`].
    pub fn from_status(status: tonic::Status) -> Self {
        let reason = status.metadata().get(REASON_METADATA).and_then(|v| v.to_str().ok());
        if status.code() == tonic::Code::DeadlineExceeded && reason == Some(LOCK_WAIT_TIMEOUT) {
            return Self::LockWaitTimedOut;
        }
        Self::Status(status)
    }
}

impl Error {
    /// The gRPC status code, when zkcoord answered.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Self::Status(status) => Some(status.code()),
            Self::LockWaitTimedOut => Some(tonic::Code::DeadlineExceeded),
            _ => None,
        }
    }
}
