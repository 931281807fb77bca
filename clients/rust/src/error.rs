//! The client's error type.

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
    Status(#[from] tonic::Status),
    /// A tenant name that cannot be sent as a header value.
    #[error("invalid tenant {0:?}")]
    InvalidTenant(String),
    /// The lease has ended (expired, revoked): everything bound to it is gone.
    #[error("the lease has ended")]
    LeaseLost,
}

impl Error {
    /// The gRPC status code, when zkcoord answered.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Self::Status(status) => Some(status.code()),
            _ => None,
        }
    }
}
