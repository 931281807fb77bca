//! Limits: calls in progress per connection and request size are bounded, and going past
//! either gets RESOURCE_EXHAUSTED with a stable message, without touching anyone's state; the
//! streams open at once per connection are bounded; a request that is not protobuf is
//! INVALID_ARGUMENT and changes nothing.
//!
//! Quotas (one test each): leases per tenant and per identity, candidacies and lock requests
//! per lease, Observe/Watch streams and followed elections per instance, connections per
//! identity, Grants per second. Past each: RESOURCE_EXHAUSTED with the documented message, the instance stays
//! SERVING, other tenants, identities and leases are unaffected, and freeing lets calls in.

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
use zkcoord::{
    config::{Config, Quotas, TlsConfig},
    pb::v1::{self as pb, election_client::ElectionClient, lease_client::LeaseClient, shards_client::ShardsClient},
    server::{self, Instance, TENANT_HEADER},
};

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

/// A config for a test instance in namespace `name` with `quotas`.
fn with_quotas(name: &str, quotas: Quotas) -> Config {
    let zk = support::zk::shared();
    Config { quotas, ..support::test_config(&zk.hosts(), &support::namespace(name)) }
}

/// Asserts that `result` is RESOURCE_EXHAUSTED with `message`.
#[track_caller]
fn assert_exhausted<T: std::fmt::Debug>(result: Result<T, Status>, message: &str) {
    let status = result.expect_err("refused");
    assert_eq!((status.code(), status.message()), (Code::ResourceExhausted, message), "{status:?}");
}

/// A Grant request of owner `owner`, in `tenant` when given.
fn grant_request(owner: &str, tenant: Option<&str>) -> tonic::Request<pb::GrantRequest> {
    let mut request =
        tonic::Request::new(pb::GrantRequest { ttl_ms: 10_000, owner: owner.into(), ..Default::default() });
    if let Some(tenant) = tenant {
        request.metadata_mut().insert(TENANT_HEADER, tenant.parse().unwrap());
    }
    request
}

/// Revokes lease `granted` (in `tenant` when given).
async fn revoke(channel: &Channel, granted: &pb::GrantResponse) {
    let lease = support::lease::lease_ref(granted.lease_id, &granted.secret);
    LeaseClient::new(channel.clone()).revoke(pb::RevokeRequest { lease }).await.unwrap();
}

#[tokio::test]
async fn a_tenant_cannot_have_more_leases_than_allowed() {
    let mut config = with_quotas("limits-tenant-leases", Quotas { leases_per_tenant: 3, ..Quotas::default() });
    config.zookeeper.tenants = vec!["other".into()];
    let instance = support::start_configured(config).await;
    let channel = support::channel(instance.addr()).await;
    let mut leases = LeaseClient::new(channel.clone());
    let mut granted = Vec::new();
    for i in 0..3 {
        granted.push(leases.grant(grant_request(&format!("o{i}"), None)).await.unwrap().into_inner());
    }
    assert_exhausted(leases.grant(grant_request("o3", None)).await, server::TOO_MANY_TENANT_LEASES);
    assert_eq!(
        leases.list(pb::ListRequest::default()).await.unwrap().into_inner().leases.len(),
        3,
        "nothing was written"
    );

    // Other tenants are not limited by this one's leases; the instance stays SERVING.
    for i in 0..3 {
        leases.grant(grant_request(&format!("t{i}"), Some("other"))).await.unwrap();
    }
    assert_eq!(support::health(&channel, "").await, ServingStatus::Serving);

    // A revoked lease makes room.
    revoke(&channel, &granted[0]).await;
    leases.grant(grant_request("o3", None)).await.unwrap();
    instance.shutdown().await;
}

/// Grants are paced per tenant and identity: past a burst of one second's worth a Grant waits
/// for its turn, and one whose turn is more than 5 s away is refused at once, writing nothing.
/// Another tenant's Grants are not slowed; the instance stays SERVING.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_past_the_pace_wait_their_turn_and_then_are_refused() {
    let mut config = with_quotas("limits-grant-rate", Quotas { grants_per_second: 2, ..Quotas::default() });
    config.zookeeper.tenants = vec!["other".into()];
    let instance = support::start_configured(config).await;
    let channel = support::channel(instance.addr()).await;
    // 16 at once: one every 500 ms with a burst of 2, so the 12th waits 5 s, the others are
    // refused.
    let start = std::time::Instant::now();
    let flood: Vec<_> = (0..16)
        .map(|i| {
            let mut leases = LeaseClient::new(channel.clone());
            tokio::spawn(async move {
                let answer = leases.grant(grant_request(&format!("f{i}"), None)).await;
                (answer, start.elapsed())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let other = std::time::Instant::now();
    LeaseClient::new(channel.clone()).grant(grant_request("t0", Some("other"))).await.unwrap();
    assert!(other.elapsed() < Duration::from_secs(2), "another tenant waited {:?}", other.elapsed());
    assert_eq!(support::health(&channel, "").await, ServingStatus::Serving);

    let (mut granted, mut refused, mut last_granted) = (0, 0, Duration::ZERO);
    for call in flood {
        let (answer, at) = call.await.unwrap();
        match answer {
            Ok(_) => (granted, last_granted) = (granted + 1, last_granted.max(at)),
            Err(status) => {
                assert_exhausted::<()>(Err(status), server::TOO_MANY_GRANTS);
                assert!(at < Duration::from_secs(2), "a refusal comes at once, not after {at:?}");
                refused += 1;
            }
        }
    }
    // Calls that reached the instance a little apart may all fit; never more than the pace.
    assert!((12..=13).contains(&granted) && refused == 16 - granted, "{granted} granted, {refused} refused");
    assert!(last_granted >= Duration::from_millis(4500), "the last turn came after {last_granted:?}");
    let listed = LeaseClient::new(channel.clone()).list(pb::ListRequest::default()).await.unwrap().into_inner();
    assert_eq!(listed.leases.len(), granted, "a refused Grant writes nothing");
    instance.shutdown().await;
}

#[tokio::test]
async fn a_lease_cannot_have_more_candidacies_than_allowed() {
    let config = with_quotas("limits-candidacies", Quotas { candidacies_per_lease: 2, ..Quotas::default() });
    let instance = support::start_configured(config).await;
    let channel = support::channel(instance.addr()).await;
    let granted = support::lease::grant(&channel, "many", Duration::from_secs(30)).await;
    let lease = (granted.lease_id, granted.secret.clone());
    let campaign = |election: &str| {
        let key = Some(pb::CandidateKey {
            election: election.into(),
            candidate_id: "c".into(),
            lease: support::lease::lease_ref(lease.0, &lease.1),
        });
        let request = pb::CampaignRequest { key, value: b"v".to_vec(), ..Default::default() };
        let channel = channel.clone();
        async move {
            let mut stream = ElectionClient::new(channel).campaign(request).await?.into_inner();
            stream.message().await?.expect("a first status");
            Ok::<_, Status>(stream)
        }
    };
    let first = campaign("e1").await.unwrap();
    let _second = campaign("e2").await.unwrap();
    assert_exhausted(campaign("e3").await, server::TOO_MANY_CANDIDACIES);
    assert!(support::leader(&channel, "e3").await.is_none(), "no candidacy was made");

    // Taking back an existing candidacy is no new one; another lease is not limited.
    drop(first);
    let _first = campaign("e1").await.unwrap();
    let other = support::lease::grant(&channel, "other", Duration::from_secs(30)).await;
    let key = Some(pb::CandidateKey {
        election: "e3".into(),
        candidate_id: "other".into(),
        lease: support::lease::lease_ref(other.lease_id, &other.secret),
    });
    let mut stream = ElectionClient::new(channel.clone())
        .campaign(pb::CampaignRequest { key, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().expect("a first status");
    assert_eq!(support::health(&channel, "").await, ServingStatus::Serving);

    // A resigned candidacy makes room.
    let key = Some(pb::CandidateKey {
        election: "e2".into(),
        candidate_id: "c".into(),
        lease: support::lease::lease_ref(lease.0, &lease.1),
    });
    ElectionClient::new(channel.clone()).resign(pb::ResignRequest { key, ..Default::default() }).await.unwrap();
    campaign("e3").await.unwrap();
    instance.shutdown().await;
}

/// Each election or shard group a heartbeat names costs the instance a watched view for a
/// minute: a lease's heartbeats may name at most `max_candidacies_per_lease` distinct ones
/// within a minute. One more ends its KeepAlive stream RESOURCE_EXHAUSTED; other leases and
/// the instance are unaffected.
#[tokio::test]
async fn a_lease_cannot_name_more_elections_in_its_heartbeats_than_allowed() {
    let config = with_quotas("limits-named", Quotas { candidacies_per_lease: 3, ..Quotas::default() });
    let instance = support::start_configured(config).await;
    let channel = support::channel(instance.addr()).await;
    let beat = |lease: &pb::GrantResponse, elections: &[&str], groups: &[&str]| pb::KeepAliveRequest {
        lease: support::lease::lease_ref(lease.lease_id, &lease.secret),
        health: None,
        elections: elections.iter().map(|e| (*e).to_owned()).collect(),
        shard_groups: groups.iter().map(|g| (*g).to_owned()).collect(),
    };
    let mut leases = LeaseClient::new(channel.clone());
    let lease = leases.grant(grant_request("namer", None)).await.unwrap().into_inner();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(beat(&lease, &["a", "b"], &[])).await.unwrap();
    let mut answers = leases.keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    assert!(answers.message().await.unwrap().unwrap().confirmed);
    tx.send(beat(&lease, &["a"], &["g"])).await.unwrap();
    assert!(answers.message().await.unwrap().unwrap().confirmed, "3 distinct names");
    tx.send(beat(&lease, &["a", "b"], &["g"])).await.unwrap();
    assert!(answers.message().await.unwrap().unwrap().confirmed, "the same names again");
    tx.send(beat(&lease, &["d"], &[])).await.unwrap();
    assert_exhausted(answers.message().await, "too many elections and shard groups named by this lease's heartbeats");

    // Another lease names the same and other names; the instance stays SERVING.
    let other = leases.grant(grant_request("other", None)).await.unwrap().into_inner();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(beat(&other, &["a", "d", "e"], &[])).await.unwrap();
    let mut answers = leases.keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    assert!(answers.message().await.unwrap().unwrap().confirmed);
    assert_eq!(support::health(&channel, "").await, ServingStatus::Serving);
    instance.shutdown().await;
}

#[tokio::test]
async fn a_lease_cannot_have_more_lock_requests_than_allowed() {
    let config = with_quotas("limits-lock-requests", Quotas { lock_requests_per_lease: 2, ..Quotas::default() });
    let home = support::start_configured(config.clone()).await;
    let elsewhere = support::start_configured(Config { instance_id: "limits-lock-requests-2".into(), ..config }).await;
    let channel = support::channel(home.addr()).await;
    // Its lease is attached to `home` (counted in memory there, from its record elsewhere).
    let locker = Locker::granted(&channel, "many", Duration::from_secs(30)).await;
    let first = locker.lock(&["k1"], EXCLUSIVE, 0).await.unwrap();
    locker.lock(&["k2", "k3"], EXCLUSIVE, 0).await.unwrap();
    assert_exhausted(locker.lock(&["k4"], EXCLUSIVE, 0).await, server::TOO_MANY_LOCK_REQUESTS);
    assert_exhausted(locker.try_lock(&["k4"], EXCLUSIVE).await, server::TOO_MANY_LOCK_REQUESTS);
    let through_other = Locker::with_lease(&support::channel(elsewhere.addr()).await, locker.lease.clone());
    assert_exhausted(through_other.lock(&["k4"], EXCLUSIVE, 0).await, server::TOO_MANY_LOCK_REQUESTS);
    assert!(locker.holders("k4", false).await.iter().all(|k| k.holders.is_empty()), "nothing was queued");

    // Another lease is not limited; the instance stays SERVING.
    let other = Locker::granted(&channel, "other", Duration::from_secs(30)).await;
    other.lock(&["k4"], EXCLUSIVE, 0).await.unwrap();
    other.lock(&["k5"], EXCLUSIVE, 0).await.unwrap();
    assert_eq!(support::health(&channel, "").await, ServingStatus::Serving);

    // An unlocked hold makes room.
    locker.unlock(&first.handle).await.unwrap();
    locker.lock(&["k6"], EXCLUSIVE, 0).await.unwrap();
    assert_exhausted(through_other.lock(&["k7"], EXCLUSIVE, 0).await, server::TOO_MANY_LOCK_REQUESTS);
    elsewhere.shutdown().await;
    home.shutdown().await;
}

/// Opens an Observe stream of `election` on `channel`: its first message, or the refusal.
async fn try_observe(channel: &Channel, election: &str) -> Result<tonic::Streaming<pb::ObserveResponse>, Status> {
    let mut stream = ElectionClient::new(channel.clone())
        .observe(pb::ObserveRequest { election: election.into() })
        .await?
        .into_inner();
    stream.message().await?.expect("the current state");
    Ok(stream)
}

#[tokio::test]
async fn an_instance_cannot_have_more_observe_streams_than_allowed() {
    let config = with_quotas("limits-observers", Quotas { observe_streams: 2, ..Quotas::default() });
    let instance = support::start_configured(config).await;
    let (a, b) = (support::channel(instance.addr()).await, support::channel(instance.addr()).await);
    let first = try_observe(&a, "e").await.unwrap();
    let _second = try_observe(&b, "e").await.unwrap();
    assert_exhausted(try_observe(&b, "e").await, server::TOO_MANY_OBSERVE_STREAMS);
    let group = ShardsClient::new(b.clone()).observe(pb::ObserveGroupRequest { group: "g".into() }).await;
    assert_exhausted(group, server::TOO_MANY_OBSERVE_STREAMS);

    // Other calls are not limited; the instance stays SERVING.
    let other = support::channel(instance.addr()).await;
    assert!(support::leader(&other, "e").await.is_none());
    LeaseClient::new(other.clone()).list(pb::ListRequest::default()).await.unwrap();
    assert_eq!(support::health(&other, "").await, ServingStatus::Serving);

    // A stream whose client left makes room.
    drop(first);
    support::eventually(Duration::from_secs(10), "an Observe stream opens", || async {
        try_observe(&other, "e").await.is_ok()
    })
    .await;
    instance.shutdown().await;
}

#[tokio::test]
async fn an_instance_cannot_follow_more_elections_than_allowed() {
    let mut config = with_quotas("limits-elections", Quotas { watched_elections: 3, ..Quotas::default() });
    config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let instance = support::start_configured(config).await;
    let channel = support::channel(instance.addr()).await;
    let mut followed = Vec::new();
    for i in 0..3 {
        followed.push(try_observe(&channel, &format!("e{i}")).await.unwrap());
    }
    // Any number of new names is refused at once: no task, watch or metric series each.
    for i in 0..200 {
        assert_exhausted(try_observe(&channel, &format!("random-{i}")).await, server::TOO_MANY_ELECTIONS);
    }
    let leader = ElectionClient::new(channel.clone()).leader(pb::LeaderRequest { election: "new".into() }).await;
    assert_exhausted(leader, server::TOO_MANY_ELECTIONS);
    let metrics = scrape_metrics(instance.metrics_addr().unwrap()).await;
    let refused = metrics.lines().filter(|line| line.contains("election=\"random-")).count();
    assert_eq!(refused, 0, "no series for a refused election:\n{metrics}");

    // Elections already followed are served as before; the instance stays SERVING.
    let _again = try_observe(&channel, "e1").await.unwrap();
    assert!(support::leader(&channel, "e2").await.is_none());
    LeaseClient::new(channel.clone()).list(pb::ListRequest::default()).await.unwrap();
    assert_eq!(support::health(&channel, "").await, ServingStatus::Serving);

    // An election nobody uses any more is dropped, which makes room.
    drop(followed.remove(0));
    support::eventually(Duration::from_secs(10), "a new election is followed", || async {
        try_observe(&channel, "new").await.is_ok()
    })
    .await;
    instance.shutdown().await;
}

/// The Prometheus text of the metrics endpoint at `addr`.
async fn scrape_metrics(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut response)).await.unwrap().unwrap();
    response
}

/// An mTLS setup: a CA for servers and clients, the server's files, client certificates.
struct Mtls {
    _dir: tempfile::TempDir,
    ca: support::certs::Ca,
    tls: TlsConfig,
}

impl Mtls {
    fn new() -> Self {
        let ca = support::certs::Ca::new("limits-ca");
        let server = ca.server();
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        std::fs::write(path("server.crt"), &server.cert).unwrap();
        std::fs::write(path("server.key"), &server.key).unwrap();
        std::fs::write(path("ca.crt"), &ca.pem).unwrap();
        let tls = TlsConfig { cert: path("server.crt"), key: path("server.key"), client_ca: Some(path("ca.crt")) };
        Self { _dir: dir, ca, tls }
    }

    /// A new connection to `instance` as `identity`.
    async fn connect(&self, instance: &Instance, identity: &str) -> Channel {
        let client = self.ca.client(identity);
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.ca.pem))
            .domain_name("localhost")
            .identity(tonic::transport::Identity::from_pem(&client.cert, &client.key));
        Channel::from_shared(format!("https://localhost:{}", instance.addr().port()))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn an_identity_cannot_have_more_leases_than_allowed() {
    let mtls = Mtls::new();
    let mut config = with_quotas("limits-identity-leases", Quotas { leases_per_identity: 2, ..Quotas::default() });
    config.tls = Some(mtls.tls.clone());
    let instance = support::start_configured(config).await;
    let alice = mtls.connect(&instance, "alice.example").await;
    let mut leases = LeaseClient::new(alice.clone());
    let first = leases.grant(grant_request("a1", None)).await.unwrap().into_inner();
    leases.grant(grant_request("a2", None)).await.unwrap();
    assert_exhausted(leases.grant(grant_request("a3", None)).await, server::TOO_MANY_IDENTITY_LEASES);
    // On another connection of the same identity too.
    let again = mtls.connect(&instance, "alice.example").await;
    assert_exhausted(LeaseClient::new(again).grant(grant_request("a3", None)).await, server::TOO_MANY_IDENTITY_LEASES);

    // Another identity is not limited by alice's leases; the instance stays SERVING.
    let bob = mtls.connect(&instance, "bob.example").await;
    for i in 0..2 {
        LeaseClient::new(bob.clone()).grant(grant_request(&format!("b{i}"), None)).await.unwrap();
    }
    assert_eq!(support::health(&bob, "").await, ServingStatus::Serving);

    // A revoked lease makes room.
    revoke(&alice, &first).await;
    leases.grant(grant_request("a3", None)).await.unwrap();
    instance.shutdown().await;
}

#[tokio::test]
async fn an_identity_cannot_have_more_connections_than_allowed() {
    let mtls = Mtls::new();
    let mut config = with_quotas("limits-connections", Quotas { connections_per_identity: 2, ..Quotas::default() });
    config.tls = Some(mtls.tls.clone());
    let instance = support::start_configured(config).await;
    let list = |channel: &Channel| {
        let mut leases = LeaseClient::new(channel.clone());
        async move { leases.list(pb::ListRequest::default()).await }
    };
    let first = mtls.connect(&instance, "alice.example").await;
    let second = mtls.connect(&instance, "alice.example").await;
    list(&first).await.unwrap();
    list(&second).await.unwrap();
    let third = mtls.connect(&instance, "alice.example").await;
    assert_exhausted(list(&third).await, server::TOO_MANY_CONNECTIONS);
    let observe = ElectionClient::new(third.clone()).observe(pb::ObserveRequest { election: "e".into() }).await;
    assert_exhausted(observe, server::TOO_MANY_CONNECTIONS);

    // Another identity is not limited; the instance stays SERVING (health is answered even on
    // the refused connection).
    let bob = mtls.connect(&instance, "bob.example").await;
    list(&bob).await.unwrap();
    assert_eq!(support::health(&third, "").await, ServingStatus::Serving);
    drop(third);

    // A closed connection makes room.
    drop(first);
    support::eventually(Duration::from_secs(20), "a new connection of alice is served", || async {
        list(&mtls.connect(&instance, "alice.example").await).await.is_ok()
    })
    .await;
    list(&second).await.unwrap();
    instance.shutdown().await;
}
