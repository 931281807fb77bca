//! Limits: calls in progress per connection and request size are bounded, and going past
//! either gets RESOURCE_EXHAUSTED with a stable message, without touching anyone's state; the
//! streams open at once per connection are bounded; a request that is not protobuf is
//! INVALID_ARGUMENT and changes nothing.

#![allow(clippy::unwrap_used)]

use crate::support;

use std::time::Duration;

use bytes::{Buf, BufMut};
use prost::Message;
use support::{
    lock::{EXCLUSIVE, Locker},
    zk::Standalone,
};
use tokio_stream::StreamExt;
use tonic::{
    Code, Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    transport::Channel,
};
use tonic_health::pb::health_check_response::ServingStatus;
use zkcoord::pb::v1::{self as pb, election_client::ElectionClient, lease_client::LeaseClient};

#[tokio::test]
async fn one_connection_cannot_have_more_calls_in_progress_than_allowed() {
    let zk = support::zk::shared();
    let mut config = support::test_config(&zk.hosts(), &support::namespace("limits-calls"));
    config.max_calls_per_connection = 3;
    let instance = zkcoord::server::start(config).await.unwrap();
    instance.session().wait_connected(Duration::from_secs(30)).await.unwrap();

    // Another connection holds the key; three Lock calls on one connection wait for it.
    let holder = Locker::granted(&support::channel(instance.addr()).await, "holder", Duration::from_secs(5)).await;
    let held = holder.lock(&["k"], EXCLUSIVE, 0).await.unwrap();
    let busy = support::channel(instance.addr()).await;
    let waiter = Locker::granted(&busy, "waiter", Duration::from_secs(5)).await;
    let waits: Vec<_> = (0..3)
        .map(|_| {
            let waiter = waiter.clone();
            tokio::spawn(async move { waiter.lock(&["k"], EXCLUSIVE, 10_000).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A fourth call on that connection is refused at once; other connections are not limited.
    let refused = LeaseClient::new(busy.clone()).list(pb::ListRequest::default()).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let other = support::channel(instance.addr()).await;
    LeaseClient::new(other).list(pb::ListRequest::default()).await.unwrap();

    // Once the waits end, the connection takes calls again.
    holder.unlock(&held.handle).await.unwrap();
    for wait in waits {
        let handle = wait.await.unwrap().unwrap().handle;
        waiter.unlock(&handle).await.unwrap();
    }
    LeaseClient::new(busy).list(pb::ListRequest::default()).await.unwrap();
    instance.shutdown().await;
}

#[tokio::test]
async fn an_oversized_request_is_refused_and_changes_nothing() {
    let zk = support::zk::shared();
    let instance = support::start_zkcoord(&zk.hosts(), &support::namespace("limits-size")).await;
    let channel = support::channel(instance.addr()).await;
    let mut leases = LeaseClient::new(channel);
    let huge = "x".repeat(zkcoord::server::MAX_REQUEST_BYTES + 1);
    let request = pb::GrantRequest {
        ttl_ms: 5000,
        owner: "big".into(),
        metadata: [("blob".to_owned(), huge)].into(),
        ..Default::default()
    };
    let refused = leases.grant(request).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(refused.message(), zkcoord::server::TOO_LARGE_MESSAGE);
    assert!(
        leases.list(pb::ListRequest::default()).await.unwrap().into_inner().leases.is_empty(),
        "no lease was granted"
    );
    instance.shutdown().await;
}

/// Opens an Observe stream on `channel` and waits for its first message (the current state).
async fn observing(channel: Channel, election: &str) -> tonic::Streaming<pb::ObserveResponse> {
    let mut stream = ElectionClient::new(channel)
        .observe(pb::ObserveRequest { election: election.into() })
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().expect("the current state");
    stream
}

#[tokio::test]
async fn one_connection_cannot_have_more_streams_open_than_allowed() {
    let zk = support::zk::shared();
    let mut config = support::test_config(&zk.hosts(), &support::namespace("limits-streams"));
    config.max_streams_per_connection = 4;
    let instance = support::start_configured(config).await;
    let busy = support::channel(instance.addr()).await;
    let mut open = Vec::new();
    for i in 0..4 {
        open.push(observing(busy.clone(), &format!("e{i}")).await);
    }

    // A fifth stream on that connection waits: the server advertised 4 (HTTP/2
    // SETTINGS_MAX_CONCURRENT_STREAMS), so the client does not open it.
    let fifth = tokio::spawn(observing(busy.clone(), "e4"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!fifth.is_finished(), "a fifth stream got its first message while 4 were open");

    // Other connections are not limited, and the instance stays SERVING.
    let other = support::channel(instance.addr()).await;
    assert_eq!(support::health(&other, "").await, ServingStatus::Serving);
    LeaseClient::new(other.clone()).list(pb::ListRequest::default()).await.unwrap();
    let mut on_other = Vec::new();
    for i in 0..4 {
        on_other.push(observing(other.clone(), &format!("e{i}")).await);
    }

    // Once one of the four ends, the fifth opens.
    drop(open.pop());
    let fifth = tokio::time::timeout(Duration::from_secs(10), fifth).await.expect("the fifth stream opens").unwrap();
    open.push(fifth);
    drop(on_other);
    assert_eq!(support::health(&other, "").await, ServingStatus::Serving);
    instance.shutdown().await;
}

/// Sends and receives message bodies as they are: the request bytes need not be protobuf.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(&item);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// A unary call of `method` with `body` as the request message.
async fn raw_unary(channel: &Channel, method: &'static str, body: &[u8]) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static(method);
    grpc.unary(tonic::Request::new(body.to_vec()), path, RawCodec).await.map(tonic::Response::into_inner)
}

/// A streaming call of `method` whose first request message is `body`.
async fn raw_streaming(channel: &Channel, method: &'static str, body: &[u8]) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static(method);
    let requests = tokio_stream::iter([body.to_vec()]).chain(tokio_stream::pending());
    let mut responses = grpc.streaming(tonic::Request::new(requests), path, RawCodec).await?.into_inner();
    responses.message().await.map(|_| ())
}

/// GrantRequest bodies that are not valid protobuf, each with what is wrong with it.
const UNDECODABLE_GRANTS: &[(&str, &[u8])] = &[
    ("garbage", b"this is not protobuf"),
    ("a truncated varint (ttl_ms)", &[0x08, 0x80]),
    ("invalid UTF-8 in a string (owner)", &[0x12, 0x02, 0xff, 0xfe]),
    ("a wrong wire type (ttl_ms, length-delimited)", &[0x0a, 0x01, 0x00]),
];

#[tokio::test]
async fn an_undecodable_request_is_invalid_argument_and_changes_nothing() {
    // A server of its own, so that no other test's writes move the zxid.
    let zk = Standalone::start();
    let instance = support::start_zkcoord(&zk.hosts(), &support::namespace("limits-undecodable")).await;
    let channel = support::channel(instance.addr()).await;
    let zxid_before = zk.server.zxid().expect("zxid");

    for (what, body) in UNDECODABLE_GRANTS {
        let refused = raw_unary(&channel, "/zkcoord.v1.Lease/Grant", body).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{what}: {refused:?}");
        assert_eq!(refused.message(), zkcoord::server::UNDECODABLE_REQUEST, "{what}");
        // The first message of a stream too: the bodies are not KeepAliveRequests either.
        let refused = raw_streaming(&channel, "/zkcoord.v1.Lease/KeepAlive", body).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "KeepAlive, {what}: {refused:?}");
        assert_eq!(refused.message(), zkcoord::server::UNDECODABLE_REQUEST, "KeepAlive, {what}");
    }
    assert_eq!(zk.server.zxid(), Some(zxid_before), "no write reached zookeeper");

    // The same path with a valid message is granted, on the same connection.
    let valid = pb::GrantRequest { ttl_ms: 5000, owner: "ok".into(), ..Default::default() };
    let granted = raw_unary(&channel, "/zkcoord.v1.Lease/Grant", &valid.encode_to_vec()).await.unwrap();
    assert!(pb::GrantResponse::decode(granted.as_slice()).unwrap().lease_id > 0);
    instance.shutdown().await;
}
