//! Failures of client subcommands: one message line for stderr and a stable exit code each.

use tonic::Code;

use crate::config::EX_USAGE;

/// Exit code for "the named thing does not exist" (sysexits `EX_NOINPUT`): NOT_FOUND.
pub const EX_NOINPUT: u8 = 66;
/// Exit code for "zkcoord cannot be reached or cannot answer now" (sysexits
/// `EX_UNAVAILABLE`).
pub const EX_UNAVAILABLE: u8 = 69;
/// Exit code for PERMISSION_DENIED, i.e. a wrong lease secret (sysexits `EX_NOPERM`).
pub const EX_NOPERM: u8 = 77;

/// Why a client subcommand failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CtlError {
    /// No endpoint could be reached at all (connection refused, timed out, ...).
    #[error("cannot reach zkcoord at {endpoints}: {detail}")]
    Unreachable {
        /// The endpoints tried, as given.
        endpoints: String,
        /// What the transport said.
        detail: String,
    },
    /// zkcoord answered `status` to the request described by `what`.
    #[error("{what}: {}", describe(.status))]
    Status {
        /// The request, e.g. `lease ttl 42`.
        what: String,
        /// zkcoord's answer.
        status: tonic::Status,
    },
    /// Bad flags or arguments that clap could not catch.
    #[error("{0}")]
    Usage(String),
    /// Anything else, e.g. a health check that is not SERVING, or a command that cannot be
    /// started.
    #[error("{0}")]
    Failed(String),
}

impl CtlError {
    /// Classifies a failed call: a status made on this side of the wire (no response headers)
    /// with code UNAVAILABLE means the endpoints could not be reached.
    pub(crate) fn from_call(err: zkcoord_client::Error, endpoints: &str, what: impl Into<String>) -> Self {
        match err {
            zkcoord_client::Error::Status(status) if is_unreachable(&status) => {
                Self::Unreachable { endpoints: endpoints.to_owned(), detail: transport_detail(&status) }
            }
            zkcoord_client::Error::Status(status) => Self::Status { what: what.into(), status },
            zkcoord_client::Error::InvalidEndpoint { .. } | zkcoord_client::Error::NoEndpoints => {
                Self::Usage(format!("--endpoints: {err}"))
            }
            other => Self::Failed(format!("{}: {other}", what.into())),
        }
    }

    /// The process exit code for this failure.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Self::Unreachable { .. } => EX_UNAVAILABLE,
            Self::Status { status, .. } => match status.code() {
                Code::InvalidArgument => EX_USAGE as u8,
                Code::NotFound => EX_NOINPUT,
                Code::Unavailable => EX_UNAVAILABLE,
                Code::PermissionDenied => EX_NOPERM,
                _ => 1,
            },
            Self::Usage(_) => EX_USAGE as u8,
            Self::Failed(_) => 1,
        }
    }
}

/// Whether `status` was made by the client because no connection could be made (rather than
/// sent by a zkcoord instance, whose answers always carry response headers).
pub fn is_unreachable(status: &tonic::Status) -> bool {
    status.code() == Code::Unavailable && status.metadata().is_empty()
}

/// The transport's words for an unreachable endpoint, with the causes behind it.
pub fn transport_detail(status: &tonic::Status) -> String {
    let mut detail = status.message().to_owned();
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !detail.contains(&text) {
            detail = format!("{detail}: {text}");
        }
        source = cause.source();
    }
    if detail.is_empty() { "connection failed".into() } else { detail }
}

/// zkcoord's message, with a plain word for the code.
fn describe(status: &tonic::Status) -> String {
    let kind = match status.code() {
        Code::NotFound => "not found",
        Code::InvalidArgument => "invalid argument",
        Code::FailedPrecondition => "refused",
        Code::PermissionDenied => "permission denied",
        Code::Unavailable => "zkcoord cannot answer now (retry, possibly on another instance)",
        Code::DeadlineExceeded => "timed out",
        Code::Unimplemented => "not supported by this zkcoord",
        _ => "failed",
    };
    let message = status.message();
    if message.is_empty() { format!("{kind} ({:?})", status.code()) } else { format!("{kind}: {message}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_exit_codes() {
        let status = |code| CtlError::Status { what: "x".into(), status: tonic::Status::new(code, "m") };
        assert_eq!(status(Code::NotFound).exit_code(), EX_NOINPUT);
        assert_eq!(status(Code::InvalidArgument).exit_code(), 64);
        assert_eq!(status(Code::Unavailable).exit_code(), EX_UNAVAILABLE);
        assert_eq!(status(Code::PermissionDenied).exit_code(), EX_NOPERM);
        assert_eq!(status(Code::FailedPrecondition).exit_code(), 1);
        assert_eq!(status(Code::NotFound).to_string(), "x: not found: m");
    }

    #[test]
    fn a_locally_made_unavailable_status_means_unreachable() {
        let err = zkcoord_client::Error::Status(tonic::Status::unavailable("tcp connect error"));
        let err = CtlError::from_call(err, "127.0.0.1:1", "leader get x");
        assert_eq!(err.to_string(), "cannot reach zkcoord at 127.0.0.1:1: tcp connect error");
        assert_eq!(err.exit_code(), EX_UNAVAILABLE);
    }
}
