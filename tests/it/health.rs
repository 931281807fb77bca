//! `grpc.health.v1` follows zkcoord's ZooKeeper session: NOT_SERVING while ZooKeeper is
//! unreachable, SERVING again when it is back; a 3-node ensemble losing one member (follower
//! or leader) keeps zkcoord's session.

#![allow(clippy::unwrap_used)]

use crate::support;

use std::time::Duration;

use support::zk::{Ensemble, Standalone};
use tonic_health::pb::health_check_response::ServingStatus;
use zkcoord::server::SessionStatus;

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
