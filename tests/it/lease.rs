//! Leases against real ZooKeeper: grant, keep alive, describe, revoke; health; bad input.
//! (Failure behaviour — expiry, instance and ZooKeeper crashes, partitions, write and session
//! counts — is in tests/it/lease_failures.rs.)

#![allow(clippy::unwrap_used)]

use crate::support;

use std::time::Duration;

use support::lease::{Keeper, grant, lease_ref};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, transport::Channel};
use zkcoord::pb::v1::{self as pb, lease_client::LeaseClient};
use zookeeper_client::{Acls, CreateMode};

async fn ttl(channel: &Channel, id: i64) -> Result<pb::LeaseInfo, tonic::Status> {
    let response = LeaseClient::new(channel.clone()).time_to_live(pb::TimeToLiveRequest { lease_id: id }).await?;
    Ok(response.into_inner().lease.unwrap())
}

/// Opens a KeepAlive stream and sends `requests`; returns the answers until the stream ends,
/// and how it ended.
async fn keep_alive(
    channel: &Channel,
    requests: Vec<pb::KeepAliveRequest>,
) -> (Vec<pb::KeepAliveResponse>, Option<tonic::Status>) {
    let (tx, rx) = mpsc::channel(16);
    let n = requests.len();
    for r in requests {
        tx.send(r).await.unwrap();
    }
    drop(tx); // half-close: the server answers what was sent, then ends the stream
    let mut answers = Vec::new();
    let mut stream = match LeaseClient::new(channel.clone()).keep_alive(ReceiverStream::new(rx)).await {
        Ok(s) => s.into_inner(),
        Err(status) => return (answers, Some(status)),
    };
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.message()).await.expect("an answer") {
            Ok(Some(answer)) => {
                answers.push(answer);
                if answers.len() == n {
                    return (answers, None);
                }
            }
            Ok(None) => return (answers, None),
            Err(status) => return (answers, Some(status)),
        }
    }
}

fn beat(id: i64, secret: &str) -> pb::KeepAliveRequest {
    pb::KeepAliveRequest { lease: lease_ref(id, secret), health: None, elections: vec![], shard_groups: vec![] }
}

#[tokio::test]
async fn grant_keep_alive_describe_and_revoke() {
    let zk = support::zk::shared();
    let instance = support::start_zkcoord(&zk.hosts(), &support::namespace("lease-basic")).await;
    let channel = support::channel(instance.addr()).await;
    let mut leases = LeaseClient::new(channel.clone());

    let mut request = pb::GrantRequest { ttl_ms: 5000, owner: "ledger-node-a".into(), ..Default::default() };
    request.metadata.insert("zone".into(), "eu-west".into());
    let granted = leases.grant(request).await.unwrap().into_inner();
    assert!(granted.lease_id > 0);
    assert_eq!(granted.ttl_ms, 5000);
    assert!(granted.secret.len() >= 32, "an unguessable secret");

    let info = ttl(&channel, granted.lease_id).await.unwrap();
    assert_eq!(info.owner, "ledger-node-a");
    assert_eq!(info.metadata.get("zone").map(String::as_str), Some("eu-west"));
    assert_eq!(info.granted_ttl_ms, 5000);
    assert!((4000..=5000).contains(&info.remaining_ttl_ms), "{info:?}");
    assert!(!info.instance.is_empty());

    let (answers, end) = keep_alive(&channel, vec![beat(granted.lease_id, &granted.secret); 3]).await;
    assert!(end.is_none(), "{end:?}");
    assert_eq!(answers.len(), 3);
    assert!(answers.iter().all(|a| a.confirmed && a.ttl_ms == 5000 && a.lease_id == granted.lease_id), "{answers:?}");

    let listed = leases.list(pb::ListRequest::default()).await.unwrap().into_inner().leases;
    assert!(listed.iter().any(|l| l.lease_id == granted.lease_id && l.owner == "ledger-node-a"), "{listed:?}");

    leases.revoke(pb::RevokeRequest { lease: lease_ref(granted.lease_id, &granted.secret) }).await.unwrap();
    assert_eq!(ttl(&channel, granted.lease_id).await.unwrap_err().code(), Code::NotFound);
    let (_, end) = keep_alive(&channel, vec![beat(granted.lease_id, &granted.secret)]).await;
    assert_eq!(end.unwrap().code(), Code::NotFound);
    instance.shutdown().await;
}

#[tokio::test]
async fn revoke_ends_an_open_keep_alive_stream() {
    let zk = support::zk::shared();
    let instance = support::start_zkcoord(&zk.hosts(), &support::namespace("lease-revoke")).await;
    let keeper = Keeper::start(vec![instance.addr()], Duration::from_secs(3), Duration::from_millis(200), None).await;
    support::eventually(Duration::from_secs(10), "heartbeats are confirmed", || async {
        keeper.beats().iter().any(|b| b.confirmed)
    })
    .await;
    let channel = support::channel(instance.addr()).await;
    LeaseClient::new(channel).revoke(pb::RevokeRequest { lease: lease_ref(keeper.id, &keeper.secret) }).await.unwrap();
    support::eventually(Duration::from_secs(10), "the stream ends with NOT_FOUND", || async {
        keeper.log.lock().unwrap().lost
    })
    .await;
    instance.shutdown().await;
}

/// A lease bound to more lock nodes than one ZooKeeper transaction can carry (8 holds of
/// 1,000 long keys: over 1 MiB of paths) still ends: Revoke releases every key.
#[tokio::test]
async fn revoke_releases_a_lease_bound_to_thousands_of_lock_nodes() {
    let zk = support::zk::shared();
    let instance = support::start_zkcoord(&zk.hosts(), &support::namespace("lease-large")).await;
    let channel = support::channel(instance.addr()).await;
    let granted = grant(&channel, "bulk", Duration::from_secs(60)).await;
    let locker = support::lock::Locker::with_lease(&channel, (granted.lease_id, granted.secret.clone()));
    let long = "x".repeat(100);
    let keys: Vec<Vec<String>> = (0..8).map(|h| (0..1000).map(|i| format!("bulk{h}-{i}-{long}")).collect()).collect();
    for set in &keys {
        let set: Vec<&str> = set.iter().map(String::as_str).collect();
        locker.lock(&set, support::lock::EXCLUSIVE, 30_000).await.expect("1,000 keys locked");
    }
    LeaseClient::new(channel.clone())
        .revoke(pb::RevokeRequest { lease: lease_ref(granted.lease_id, &granted.secret) })
        .await
        .expect("a large lease is revoked");
    assert_eq!(ttl(&channel, granted.lease_id).await.unwrap_err().code(), Code::NotFound);
    let other = grant(&channel, "next", Duration::from_secs(60)).await;
    let next = support::lock::Locker::with_lease(&channel, (other.lease_id, other.secret));
    for set in &keys {
        let sample = [set[0].as_str(), set[999].as_str()];
        let held = next.try_lock(&sample, support::lock::EXCLUSIVE).await.unwrap();
        assert!(held.acquired, "keys of the revoked lease are free");
        next.unlock(&held.handle).await.unwrap();
    }

    // The same through expiry (versioned deletion, marked `ending` first): a 3 s lease with
    // two holds of 1,000 long keys, never kept alive.
    let short = grant(&channel, "short", Duration::from_secs(3)).await;
    let locker = support::lock::Locker::with_lease(&channel, (short.lease_id, short.secret.clone()));
    for set in &keys[..2] {
        let set: Vec<&str> = set.iter().map(String::as_str).collect();
        locker.lock(&set, support::lock::EXCLUSIVE, 30_000).await.expect("1,000 keys locked");
    }
    support::eventually(Duration::from_secs(20), "the large lease expired and its keys are free", || async {
        let sample = [keys[0][0].as_str(), keys[1][999].as_str()];
        match next.try_lock(&sample, support::lock::EXCLUSIVE).await {
            Ok(held) if held.acquired => next.unlock(&held.handle).await.is_ok(),
            _ => false,
        }
    })
    .await;
    assert_eq!(ttl(&channel, short.lease_id).await.unwrap_err().code(), Code::NotFound);
    instance.shutdown().await;
}

/// The bindings of lease `id`, as TimeToLive lists them (sorted).
async fn listed_bindings(
    channel: &Channel,
    id: i64,
) -> Result<Vec<(pb::binding::Kind, String, String)>, tonic::Status> {
    let response = LeaseClient::new(channel.clone()).time_to_live(pb::TimeToLiveRequest { lease_id: id }).await?;
    let mut listed: Vec<_> =
        response.into_inner().bindings.into_iter().map(|b| (b.kind(), b.name.clone(), b.id.clone())).collect();
    listed.sort();
    Ok(listed)
}

/// Rolling upgrade: bindings written by versions before the binding record (their meaning in
/// their name: `e~<election>~<candidate>` without data, `l~<hold>` with the request's mode and
/// keys) are listed by TimeToLive and deleted with their lease, with what they stand for. So
/// is the binding record of a recipe the lease has never heard of (under any name; TimeToLive
/// leaves out a kind the API cannot name), and a child zkcoord did not write.
#[tokio::test]
async fn bindings_of_older_versions_and_of_other_recipes_end_with_their_lease() {
    let zk = support::zk::shared();
    let ns = support::namespace("lease-bindings");
    let instance = support::start_zkcoord(&zk.hosts(), &ns).await;
    let channel = support::channel(instance.addr()).await;
    let granted = grant(&channel, "upgrading", Duration::from_secs(60)).await;
    let raw = support::zk_client(&zk.hosts()).await.chroot(ns.as_str()).unwrap();
    let persistent = CreateMode::Persistent.with_acls(Acls::anyone_all());
    let lease = zkcoord::testing::layout::lease(granted.lease_id);
    let hold = "00000000000000c1";
    let lock_node = format!("/locks/old-k/x-{hold}-0000000000");
    let node = format!(r#"{{"lease_id":{},"owner":"upgrading","instance":"old"}}"#, granted.lease_id);
    let shard = r#"{"owns":[{"path":"/elections/old/candidates/c2"}],"shows":[{"kind":"shard","name":"s","id":"7"}]}"#;
    for (path, data) in [
        ("/elections/old", ""),
        ("/elections/old/candidates", ""),
        ("/elections/old/candidates/c1", ""),
        ("/elections/old/candidates/c2", ""),
        (&format!("{lease}/e~old~c1"), ""),
        ("/locks/old-k", ""),
        (&lock_node, &node),
        (&format!("{lease}/l~{hold}"), r#"{"exclusive":true,"keys":["old-k"]}"#),
        (&format!("{lease}/s~7"), shard),
        (&format!("{lease}/not-ours"), "whatever"),
    ] {
        raw.create(path, data.as_bytes(), &persistent).await.unwrap();
    }
    let handle = hold.to_owned();
    assert_eq!(
        listed_bindings(&channel, granted.lease_id).await.unwrap(),
        [(pb::binding::Kind::Candidacy, "old".into(), "c1".into()), (pb::binding::Kind::Lock, "old-k".into(), handle)]
    );
    // The lock request bound by the older version holds its key.
    let next = support::lock::Locker::granted(&channel, "next", Duration::from_secs(60)).await;
    assert!(!next.try_lock(&["old-k"], support::lock::EXCLUSIVE).await.unwrap().acquired);

    LeaseClient::new(channel.clone())
        .revoke(pb::RevokeRequest { lease: lease_ref(granted.lease_id, &granted.secret) })
        .await
        .unwrap();
    for gone in [lease.as_str(), "/elections/old/candidates/c1", "/elections/old/candidates/c2", &lock_node] {
        assert_eq!(raw.check_stat(gone).await.unwrap(), None, "{gone} is deleted with the lease");
    }
    let got = next.try_lock(&["old-k"], support::lock::EXCLUSIVE).await.unwrap();
    assert!(got.acquired, "the key is free");
    instance.shutdown().await;
}

/// A binding record that claims a znode outside the recipe directories (another lease's
/// record, an instance registration, through `..` or not) is refused: its lease's Revoke and
/// TimeToLive fail INTERNAL and delete nothing; once it is gone, the Revoke succeeds.
#[tokio::test]
async fn a_binding_owning_anything_outside_the_recipe_directories_is_refused() {
    let zk = support::zk::shared();
    let ns = support::namespace("lease-bad-binding");
    let instance = support::start_zkcoord(&zk.hosts(), &ns).await;
    let channel = support::channel(instance.addr()).await;
    let victim = grant(&channel, "victim", Duration::from_secs(60)).await;
    let bad = grant(&channel, "bad", Duration::from_secs(60)).await;
    let raw = support::zk_client(&zk.hosts()).await.chroot(ns.as_str()).unwrap();
    let persistent = CreateMode::Persistent.with_acls(Acls::anyone_all());
    let registration = format!("/instances/{}", raw.list_children("/instances").await.unwrap()[0]);
    let victim_path = zkcoord::testing::layout::lease(victim.lease_id);
    let binding = format!("{}/x~1", zkcoord::testing::layout::lease(bad.lease_id));
    let mut leases = LeaseClient::new(channel.clone());
    for owns in [
        format!(r#"{{"path":"{victim_path}"}}"#),
        format!(r#"{{"path":"/elections/..{victim_path}"}}"#),
        format!(r#"{{"parent":"/leases","prefix":"{}"}}"#, victim.lease_id),
        format!(r#"{{"path":"{registration}"}}"#),
        format!(r#"{{"path":"/locks/../..{registration}"}}"#),
    ] {
        let data = format!(r#"{{"owns":[{{"path":"/locks/k/x"}},{owns}]}}"#);
        raw.create(&binding, data.as_bytes(), &persistent).await.unwrap();
        let status =
            leases.revoke(pb::RevokeRequest { lease: lease_ref(bad.lease_id, &bad.secret) }).await.unwrap_err();
        assert_eq!(status.code(), Code::Internal, "{owns}: {status:?}");
        assert_eq!(listed_bindings(&channel, bad.lease_id).await.unwrap_err().code(), Code::Internal, "{owns}");
        assert!(raw.check_stat(&victim_path).await.unwrap().is_some(), "{owns}");
        assert!(raw.check_stat(&registration).await.unwrap().is_some(), "{owns}");
        assert!(raw.check_stat(&binding).await.unwrap().is_some(), "{owns}");
        raw.delete(&binding, None).await.unwrap();
    }
    leases.revoke(pb::RevokeRequest { lease: lease_ref(bad.lease_id, &bad.secret) }).await.unwrap();
    assert_eq!(ttl(&channel, victim.lease_id).await.unwrap().owner, "victim");
    instance.shutdown().await;
}

#[tokio::test]
async fn health_is_carried_by_heartbeats_and_visible_everywhere() {
    let zk = support::zk::shared();
    let ns = support::namespace("lease-health");
    let a = support::start_zkcoord(&zk.hosts(), &ns).await;
    let b = support::start_zkcoord(&zk.hosts(), &ns).await;
    let not_serving = pb::Health {
        status: pb::HealthStatus::NotServing.into(),
        checks: vec![
            pb::HealthCheck {
                name: "database".into(),
                status: pb::HealthStatus::NotServing.into(),
                message: "connection refused".into(),
            },
            pb::HealthCheck {
                name: "message-bus".into(),
                status: pb::HealthStatus::Serving.into(),
                message: String::new(),
            },
        ],
    };
    let keeper =
        Keeper::start(vec![a.addr()], Duration::from_secs(2), Duration::from_millis(200), Some(not_serving.clone()))
            .await;
    let on_b = support::channel(b.addr()).await;
    support::eventually(Duration::from_secs(10), "instance b sees NOT_SERVING", || async {
        ttl(&on_b, keeper.id).await.is_ok_and(|l| l.health.as_ref() == Some(&not_serving))
    })
    .await;
    let on_a = support::channel(a.addr()).await;
    let local = ttl(&on_a, keeper.id).await.unwrap();
    assert_eq!(local.health.as_ref(), Some(&not_serving));
    assert!(local.since_heartbeat_ms >= 0 && local.since_heartbeat_ms < 2000, "{local:?}");
    // NOT_SERVING keeps the lease alive: well past its ttl it still exists.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let listed = LeaseClient::new(on_b.clone()).list(pb::ListRequest::default()).await.unwrap().into_inner().leases;
    let entry = listed.iter().find(|l| l.lease_id == keeper.id).expect("still alive");
    assert_eq!(entry.health.as_ref().map(|h| h.status()), Some(pb::HealthStatus::NotServing));
    assert!(keeper.beats().iter().all(|b| b.confirmed || b.sent.elapsed() > Duration::from_secs(4)));
    keeper.stop();
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn bad_input_never_touches_other_leases() {
    let zk = support::zk::shared();
    let instance = support::start_zkcoord(&zk.hosts(), &support::namespace("lease-bad")).await;
    let channel = support::channel(instance.addr()).await;
    let mut leases = LeaseClient::new(channel.clone());
    let victim = grant(&channel, "victim", Duration::from_secs(30)).await;
    let other = grant(&channel, "other", Duration::from_secs(30)).await;

    // Unknown lease.
    let unknown = 4242;
    assert_eq!(ttl(&channel, unknown).await.unwrap_err().code(), Code::NotFound);
    let status = leases.revoke(pb::RevokeRequest { lease: lease_ref(unknown, "x") }).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let (_, end) = keep_alive(&channel, vec![beat(unknown, "x")]).await;
    assert_eq!(end.unwrap().code(), Code::NotFound);

    // Wrong secret: for Revoke and KeepAlive, including another lease's secret.
    for secret in ["guess", other.secret.as_str()] {
        let status = leases.revoke(pb::RevokeRequest { lease: lease_ref(victim.lease_id, secret) }).await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert_eq!(status.message(), "wrong lease secret");
        let (_, end) = keep_alive(&channel, vec![beat(victim.lease_id, secret)]).await;
        assert_eq!(end.unwrap().code(), Code::PermissionDenied);
    }

    // A stream may not switch leases, nor present a wrong secret later on.
    let (answers, end) =
        keep_alive(&channel, vec![beat(other.lease_id, &other.secret), beat(victim.lease_id, &victim.secret)]).await;
    assert_eq!(answers.len(), 1);
    assert_eq!(end.unwrap().code(), Code::InvalidArgument);
    let (answers, end) =
        keep_alive(&channel, vec![beat(other.lease_id, &other.secret), beat(other.lease_id, "guess")]).await;
    assert_eq!(answers.len(), 1);
    assert_eq!(end.unwrap().code(), Code::PermissionDenied);

    // An empty stream is invalid.
    let (_, end) = keep_alive(&channel, vec![]).await;
    assert_eq!(end.unwrap().code(), Code::InvalidArgument);

    // Nothing happened to the victim.
    let info = ttl(&channel, victim.lease_id).await.unwrap();
    assert_eq!(info.owner, "victim");
    assert_eq!(info.granted_ttl_ms, 30_000);
    instance.shutdown().await;
}

#[tokio::test]
async fn keep_alive_on_an_expired_lease_ends_the_stream() {
    let zk = support::zk::shared();
    let instance = support::start_zkcoord(&zk.hosts(), &support::namespace("lease-expired")).await;
    let channel = support::channel(instance.addr()).await;
    let granted = grant(&channel, "short-lived", Duration::from_secs(1)).await;
    support::eventually(Duration::from_secs(5), "the lease expires", || async {
        ttl(&channel, granted.lease_id).await.is_err_and(|s| s.code() == Code::NotFound)
    })
    .await;
    let (answers, end) = keep_alive(&channel, vec![beat(granted.lease_id, &granted.secret)]).await;
    assert!(answers.is_empty());
    let end = end.unwrap();
    assert_eq!((end.code(), end.message()), (Code::NotFound, "lease not found"));
    instance.shutdown().await;
}
