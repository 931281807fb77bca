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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replacement_message_is_the_documented_one() {
        assert_eq!(percent_decoded(b"request%20message%20too%20large"), TOO_LARGE_MESSAGE);
        assert!(
            percent_decoded(b"Error,%20decoded%20message%20length%20too%20large:%20found").starts_with(TONIC_TOO_LARGE)
        );
    }
}
