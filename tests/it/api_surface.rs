//! The API surface: server reflection (v1 and v1alpha) lists the zkcoord services; invalid
//! input is rejected with INVALID_ARGUMENT before anything reaches ZooKeeper.

#![allow(clippy::unwrap_used)]

use crate::support;

use std::collections::BTreeSet;

use support::zk::Standalone;
use tokio_stream::StreamExt;
use tonic::{Code, Status};
use zkcoord::pb::v1::{
    self as pb, election_client::ElectionClient, lease_client::LeaseClient, lock_client::LockClient,
    shards_client::ShardsClient,
};

#[tokio::test]
async fn reflection_lists_the_services_in_v1_and_v1alpha() {
    use tonic_reflection::pb::{v1, v1alpha};
    let zk = support::zk::shared();
    let instance = support::start_zkcoord(&zk.hosts(), &support::namespace("reflection")).await;
    let channel = support::channel(instance.addr()).await;

    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let mut stream = v1::server_reflection_client::ServerReflectionClient::new(channel.clone())
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        stream.next().await.unwrap().unwrap().message_response
    else {
        panic!("not a list of services");
    };
    let names: BTreeSet<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in ["zkcoord.v1.Lease", "zkcoord.v1.Election", "zkcoord.v1.Lock", "grpc.health.v1.Health"] {
        assert!(names.contains(expected), "{expected} missing from {names:?}");
    }

    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
            "zkcoord.v1.Election".into(),
        )),
    };
    let mut stream = v1alpha::server_reflection_client::ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = stream.next().await.unwrap().unwrap().message_response;
    assert!(
        matches!(response, Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(ref f)) if !f.file_descriptor_proto.is_empty()),
        "{response:?}"
    );
    instance.shutdown().await;
}

fn lease(id: i64, secret: &str) -> Option<pb::LeaseRef> {
    Some(pb::LeaseRef { id, secret: secret.into() })
}

fn key(election: &str, candidate: &str) -> Option<pb::CandidateKey> {
    Some(pb::CandidateKey { election: election.into(), candidate_id: candidate.into(), lease: lease(1, "s") })
}

fn assert_invalid<T: std::fmt::Debug>(result: Result<T, Status>, field: &str) {
    let status = result.expect_err("must be rejected");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().starts_with(&format!("{field}: ")), "message names {field}: {status:?}");
}

/// Names that must never reach ZooKeeper.
const BAD_NAMES: &[&str] = &["", "..", "../../zookeeper", "/", "a/b", "x\0y", "new\nline", "élan", " lead"];

#[tokio::test]
async fn invalid_input_is_rejected_before_reaching_zookeeper() {
    // A server of its own, so that no other test's writes move the zxid.
    let zk = Standalone::start();
    let ns = support::namespace("validation");
    let instance = support::start_zkcoord(&zk.hosts(), &ns).await;
    let channel = support::channel(instance.addr()).await;
    let mut leases = LeaseClient::new(channel.clone());
    let mut elections = ElectionClient::new(channel.clone());
    let mut locks = LockClient::new(channel.clone());
    let mut shards = ShardsClient::new(channel);
    let zxid_before = zk.server.zxid().expect("zxid");

    for bad in BAD_NAMES.iter().copied().chain([&*"n".repeat(129)]) {
        let grant = pb::GrantRequest { ttl_ms: 5000, owner: bad.into(), ..Default::default() };
        assert_invalid(leases.grant(grant).await, "owner");
        assert_invalid(elections.leader(pb::LeaderRequest { election: bad.into() }).await, "election");
        assert_invalid(elections.observe(pb::ObserveRequest { election: bad.into() }).await, "election");
        assert_invalid(
            elections.candidates(pb::CandidatesRequest { election: bad.into(), ..Default::default() }).await,
            "election",
        );
        let campaign = pb::CampaignRequest { key: key(bad, "c"), ..Default::default() };
        assert_invalid(elections.campaign(campaign).await, "key.election");
        let campaign = pb::CampaignRequest { key: key("e", bad), ..Default::default() };
        assert_invalid(elections.campaign(campaign).await, "key.candidate_id");
        let resign = pb::ResignRequest { key: key(bad, "c"), term: 0, stay_candidate: false };
        assert_invalid(elections.resign(resign).await, "key.election");
        let transfer =
            pb::TransferRequest { election: "e".into(), target_candidate_id: bad.into(), ..Default::default() };
        if !bad.is_empty() {
            assert_invalid(elections.transfer(transfer).await, "target_candidate_id");
        }
        let lock = pb::LockRequest {
            keys: vec!["ok".into(), bad.into()],
            lease: lease(1, "s"),
            mode: pb::LockMode::Exclusive.into(),
            wait_timeout_ms: 0,
        };
        assert_invalid(locks.lock(lock).await, "keys");
        let try_lock = pb::TryLockRequest { keys: vec![bad.into()], lease: lease(1, "s"), mode: 1 };
        assert_invalid(locks.try_lock(try_lock).await, "keys");
        if !bad.is_empty() {
            assert_invalid(
                locks.holders(pb::HoldersRequest { key: bad.into(), prefix: true, ..Default::default() }).await,
                "key",
            );
        }
    }

    // Out-of-range and malformed values.
    let grant = |ttl_ms| pb::GrantRequest { ttl_ms, owner: "node-a".into(), ..Default::default() };
    assert_invalid(leases.grant(grant(999)).await, "ttl_ms");
    assert_invalid(leases.grant(grant(3_600_001)).await, "ttl_ms");
    let mut big = grant(5000);
    big.metadata.insert("blob".into(), "x".repeat(2000));
    assert_invalid(leases.grant(big).await, "metadata");
    assert_invalid(leases.revoke(pb::RevokeRequest { lease: lease(0, "s") }).await, "lease.id");
    assert_invalid(leases.revoke(pb::RevokeRequest { lease: lease(7, "") }).await, "lease.secret");
    assert_invalid(leases.revoke(pb::RevokeRequest { lease: None }).await, "lease");
    assert_invalid(leases.time_to_live(pb::TimeToLiveRequest { lease_id: -3 }).await, "lease_id");
    let campaign =
        |priority, value: Vec<u8>| pb::CampaignRequest { key: key("e", "c"), value, priority, ..Default::default() };
    assert_invalid(elections.campaign(campaign(1001, vec![])).await, "priority");
    assert_invalid(elections.campaign(campaign(-1, vec![])).await, "priority");
    assert_invalid(elections.campaign(campaign(0, vec![0; 64 * 1024 + 1])).await, "value");
    for (unhealthy_for_ms, healthy_for_ms, field) in [
        (-1, 0, "unhealthy_for_ms"),
        (3_600_001, 0, "unhealthy_for_ms"),
        (0, -1, "healthy_for_ms"),
        (0, i64::MAX, "healthy_for_ms"),
    ] {
        let request = pb::CampaignRequest { unhealthy_for_ms, healthy_for_ms, ..campaign(0, vec![]) };
        assert_invalid(elections.campaign(request).await, field);
    }
    let lock = |keys: Vec<&str>, mode: i32, wait_timeout_ms| pb::LockRequest {
        keys: keys.into_iter().map(String::from).collect(),
        lease: lease(1, "s"),
        mode,
        wait_timeout_ms,
    };
    assert_invalid(locks.lock(lock(vec![], 1, 0)).await, "keys");
    assert_invalid(locks.lock(lock(vec!["a", "b", "a"], 1, 0)).await, "keys");
    assert_invalid(locks.lock(lock(vec!["a"], 1, -1)).await, "wait_timeout_ms");
    assert_invalid(locks.lock(lock(vec!["a"], 0, 0)).await, "mode");
    let many: Vec<String> = (0..1001).map(|i| format!("record-{i}")).collect();
    let request = pb::LockRequest { keys: many, lease: lease(1, "s"), mode: 1, wait_timeout_ms: 0 };
    assert_invalid(locks.lock(request).await, "keys");

    let member = |group: &str, member: &str| pb::MemberKey {
        group: group.into(),
        member_id: member.into(),
        lease: lease(1, "secret-secret-secret-s"),
    };
    for bad in BAD_NAMES.iter().copied().chain([&*"n".repeat(129)]) {
        let join = |key| pb::JoinRequest { key: Some(key), shard_count: 4, weight: 1, labels: Default::default() };
        assert_invalid(shards.join(join(member(bad, "m"))).await, "key.group");
        assert_invalid(shards.join(join(member("g", bad))).await, "key.member_id");
        assert_invalid(shards.drain(pb::DrainRequest { group: bad.into(), member_id: "m".into() }).await, "group");
    }
    let join = |count, weight| pb::JoinRequest {
        key: Some(member("g", "m")),
        shard_count: count,
        weight,
        labels: Default::default(),
    };
    assert_invalid(shards.join(join(0, 1)).await, "shard_count");
    assert_invalid(shards.join(join(65_537, 1)).await, "shard_count");
    assert_invalid(shards.join(join(4, 1001)).await, "weight");
    let release =
        |released: Vec<pb::ReleasedShard>| pb::ReleaseRequest { key: Some(member("g", "m")), shards: released };
    assert_invalid(shards.release(release(vec![])).await, "shards");
    assert_invalid(shards.release(release(vec![pb::ReleasedShard { shard: 1, epoch: 0 }])).await, "shards.epoch");
    let twice = vec![pb::ReleasedShard { shard: 1, epoch: 5 }, pb::ReleasedShard { shard: 1, epoch: 6 }];
    assert_invalid(shards.release(release(twice)).await, "shards");

    // Nothing was written: the zxid did not move and the namespace holds only what start-up made.
    assert_eq!(zk.server.zxid(), Some(zxid_before), "no write reached zookeeper");
    let client = support::zk_client(&zk.hosts()).await;
    let mut children = client.list_children(&ns).await.unwrap();
    children.sort();
    assert_eq!(children, ["elections", "instances", "leases", "locks", "shards"]);
    // The 5 directories and the instance's own registration.
    assert_eq!(client.list_children(&format!("{ns}/instances")).await.unwrap().len(), 1);
    assert_eq!(client.count_descendants_number(&ns).await.unwrap(), 6);
    instance.shutdown().await;
}

/// A Campaign, Lock or TryLock whose lease is unknown or whose secret is wrong is refused
/// before anything is written: no election or lock key znode appears, the zxid does not move.
#[tokio::test]
async fn refused_calls_write_nothing() {
    // A server of its own, so that no other test's writes move the zxid.
    let zk = Standalone::start();
    let ns = support::namespace("refused");
    let instance = support::start_zkcoord(&zk.hosts(), &ns).await;
    let channel = support::channel(instance.addr()).await;
    let mut elections = ElectionClient::new(channel.clone());
    let mut locks = LockClient::new(channel.clone());
    let granted = support::lease::grant(&channel, "owner", std::time::Duration::from_secs(60)).await;
    let zxid_before = zk.server.zxid().expect("zxid");

    let refusals =
        [(granted.lease_id, "not-the-secret-at-all", Code::PermissionDenied), (424_242, "whatever", Code::NotFound)];
    for (id, secret, code) in refusals {
        let key = Some(pb::CandidateKey { election: "e".into(), candidate_id: "c".into(), lease: lease(id, secret) });
        let status = elections.campaign(pb::CampaignRequest { key, ..Default::default() }).await.unwrap_err();
        assert_eq!(status.code(), code, "campaign: {status:?}");
        let lock = pb::LockRequest {
            keys: vec!["k1".into(), "k2".into()],
            lease: lease(id, secret),
            mode: pb::LockMode::Exclusive.into(),
            wait_timeout_ms: 0,
        };
        let status = locks.lock(lock).await.unwrap_err();
        assert_eq!(status.code(), code, "lock: {status:?}");
        let try_lock =
            pb::TryLockRequest { keys: vec!["k1".into()], lease: lease(id, secret), mode: pb::LockMode::Shared.into() };
        let status = locks.try_lock(try_lock).await.unwrap_err();
        assert_eq!(status.code(), code, "try lock: {status:?}");
    }

    assert_eq!(zk.server.zxid(), Some(zxid_before), "no write reached zookeeper");
    let client = support::zk_client(&zk.hosts()).await;
    for dir in ["elections", "locks"] {
        let children = client.list_children(&format!("{ns}/{dir}")).await.unwrap();
        assert!(children.is_empty(), "{dir}: {children:?}");
    }
    instance.shutdown().await;
}
