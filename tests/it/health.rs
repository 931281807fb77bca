//! `grpc.health.v1` follows zkcoord's ZooKeeper session: NOT_SERVING while ZooKeeper is
//! unreachable, SERVING again when it is back; a 3-node ensemble losing one member (follower
//! or leader) keeps zkcoord's session. The health a lease owner reports costs ZooKeeper a
//! bounded number of writes, however fast it flaps.

#![allow(clippy::unwrap_used)]

use crate::support;

use std::time::{Duration, Instant};

use support::zk::{Ensemble, Standalone};
use tonic_health::pb::health_check_response::ServingStatus;
use zkcoord::{pb::v1 as pb, server::SessionStatus};

const GENEROUS: Duration = Duration::from_secs(30);

#[tokio::test]
async fn health_follows_zookeeper_being_killed_and_restarted() {
    let mut zk = Standalone::start();
    let instance = support::start_zkcoord(&zk.hosts(), &support::namespace("health")).await;
    let channel = support::channel(instance.addr()).await;
    assert_eq!(support::health(&channel, "").await, ServingStatus::Serving);
    assert_eq!(support::health(&channel, "zkcoord.v1.Election").await, ServingStatus::Serving);

    zk.server.kill();
    support::eventually(GENEROUS, "health turns NOT_SERVING", || async {
        support::health(&channel, "").await == ServingStatus::NotServing
    })
    .await;
    assert_eq!(support::health(&channel, "zkcoord.v1.Lock").await, ServingStatus::NotServing);
    assert_eq!(
        support::health(&channel, zkcoord::server::LIVENESS_SERVICE).await,
        ServingStatus::Serving,
        "alive without ZooKeeper: a restart would not help"
    );

    zk.server.spawn();
    zk.server.wait_serving();
    support::eventually(GENEROUS, "health turns SERVING again", || async {
        support::health(&channel, "").await == ServingStatus::Serving
    })
    .await;
    instance.shutdown().await;
}

#[tokio::test]
async fn health_is_not_serving_until_zookeeper_is_reachable() {
    // Nothing listens on this port yet: zkcoord must serve health, answering NOT_SERVING.
    let port = support::zk::free_ports(1)[0];
    let instance = zkcoord::server::start(support::test_config(&format!("127.0.0.1:{port}"), "/unreachable"))
        .await
        .expect("zkcoord starts without zookeeper");
    let channel = support::channel(instance.addr()).await;
    assert_eq!(support::health(&channel, "").await, ServingStatus::NotServing);
    assert_eq!(support::health(&channel, zkcoord::server::LIVENESS_SERVICE).await, ServingStatus::Serving);
    instance.shutdown().await;
}

fn session_id(status: SessionStatus) -> Option<i64> {
    match status {
        SessionStatus::Connected { session_id, .. } => Some(session_id),
        _ => None,
    }
}

#[tokio::test]
async fn ensemble_member_loss_keeps_the_session() {
    let mut ensemble = Ensemble::start(3);
    let instance = support::start_zkcoord(&ensemble.hosts(), &support::namespace("ensemble")).await;
    let channel = support::channel(instance.addr()).await;
    let original = session_id(instance.session().status()).expect("connected");

    for victim in [ensemble.follower(), ensemble.leader()] {
        ensemble.members[victim].kill();
        let mut current = None;
        support::eventually(GENEROUS, "zkcoord is connected to a surviving member", || {
            let id = session_id(instance.session().status());
            let channel = channel.clone();
            current = id;
            async move { id.is_some() && support::health(&channel, "").await == ServingStatus::Serving }
        })
        .await;
        assert_eq!(current, Some(original), "the session survived the loss of member {victim}");
        ensemble.members[victim].spawn();
        ensemble.members[victim].wait_serving();
    }
    instance.shutdown().await;
}

/// The health stored in the record of lease `id` under namespace `ns`, and the record's version.
async fn stored_health(zk: &zookeeper_client::Client, ns: &str, id: i64) -> (serde_json::Value, i32) {
    let (data, stat) = zk.get_data(&format!("{ns}/leases/{id}")).await.unwrap();
    let record: serde_json::Value = serde_json::from_slice(&data).unwrap();
    (record["health"].clone(), stat.version)
}

fn reported(status: pb::HealthStatus, message: &str) -> Option<pb::Health> {
    let checks = vec![pb::HealthCheck { name: "db".into(), status: status.into(), message: message.into() }];
    Some(pb::Health { status: status.into(), checks })
}

#[tokio::test]
async fn health_flapping_at_a_high_rate_costs_at_most_the_configured_writes_and_the_latest_state_is_stored() {
    let zk = support::zk::shared();
    let ns = support::namespace("health-flap");
    let mut config = support::test_config(&zk.hosts(), &ns);
    config.health_writes_per_second = 2;
    let instance = support::start_configured(config).await;
    let channel = support::channel(instance.addr()).await;
    let granted = support::lease::grant(&channel, "flapper", Duration::from_secs(60)).await;
    let zk_client = support::zk_client(&zk.hosts()).await;
    let (_, before) = stored_health(&zk_client, &ns, granted.lease_id).await;

    let started = Instant::now();
    let flapped = support::lease::flap(
        &channel,
        granted.lease_id,
        &granted.secret,
        Duration::from_secs(3),
        &[reported(pb::HealthStatus::Serving, "ok"), reported(pb::HealthStatus::NotServing, "down")],
        reported(pb::HealthStatus::NotServing, "the latest"),
    )
    .await;
    let flapping = started.elapsed();
    assert!(flapped.answered >= 100, "it flapped at a high rate: {flapped:?}");
    assert_eq!(flapped.unconfirmed, 0, "no heartbeat goes unconfirmed because of a health write: {flapped:?}");

    // The latest state is stored once the window opens (at most 500 ms later).
    support::eventually(GENEROUS, "the latest health is stored", || {
        let (zk_client, ns) = (&zk_client, &ns);
        async move { stored_health(zk_client, ns, granted.lease_id).await.0["checks"][0]["message"] == "the latest" }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await; // a write still on its way would show now
    let (health, after) = stored_health(&zk_client, &ns, granted.lease_id).await;
    assert_eq!(health["status"], "NOT_SERVING");
    assert_eq!(health["checks"][0]["message"], "the latest", "the latest state wins");
    // Two writes a second: one when the flapping starts (the window is open), then one per
    // 500 ms, the last carrying the latest state.
    let bound = (flapping.as_secs_f64() * 2.0).ceil() as i32 + 2;
    let writes = after - before;
    assert!(
        writes <= bound,
        "{writes} health writes in {flapping:?} of flapping ({} heartbeats); at most {bound}",
        flapped.answered
    );
    instance.shutdown().await;
}
