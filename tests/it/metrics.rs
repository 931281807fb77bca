//! The Prometheus endpoint: scraped over HTTP while the instance serves real calls against a
//! real ZooKeeper; every figure moves with what happens (calls by method and code, leases,
//! elections, lock calls, the ZooKeeper session and its round trips).

#![allow(clippy::unwrap_used)]

use crate::support;

use std::{net::SocketAddr, time::Duration};

use support::{
    lock::{EXCLUSIVE, Locker},
    zk::Standalone,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zkcoord::pb::v1::{self as pb, election_client::ElectionClient, lease_client::LeaseClient};

/// GETs `path` from `addr`: (status line, body).
async fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut response)).await.unwrap().unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// The value of the sample `series` (name and labels exactly as exposed); 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |value| value.split(' ').next().unwrap().parse().unwrap())
}

async fn scrape(addr: SocketAddr) -> String {
    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.ends_with("# EOF\n"), "OpenMetrics text ends with # EOF");
    body
}

#[tokio::test]
async fn metrics_follow_calls_leases_elections_locks_and_the_zookeeper_session() {
    let mut zk = Standalone::start();
    let mut config = support::test_config(&zk.hosts(), &support::namespace("metrics"));
    config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    config.zookeeper.tenants = vec!["blue".into()];
    let instance = zkcoord::server::start(config).await.unwrap();
    instance.session().wait_connected(Duration::from_secs(30)).await.unwrap();
    let metrics = instance.metrics_addr().unwrap();
    let channel = support::channel(instance.addr()).await;

    let text = scrape(metrics).await;
    assert_eq!(sample(&text, "zkcoord_zookeeper_connected"), 1.0);
    assert_eq!(sample(&text, r#"zkcoord_leases{tenant=""}"#), 0.0);
    assert!(text.contains(r#"zkcoord_leases{tenant="blue"} 0"#), "every tenant is reported: {text}");
    let (status, _) = get(metrics, "/other").await;
    assert_eq!(status, "HTTP/1.1 404 Not Found");

    // Calls, by method and code.
    let lease = support::lease::grant(&channel, "metrics", Duration::from_secs(5)).await;
    let bad = LeaseClient::new(channel.clone())
        .grant(pb::GrantRequest { ttl_ms: 0, owner: "x".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = scrape(metrics).await;
    let grant_ok = r#"zkcoord_rpc_requests_total{method="/zkcoord.v1.Lease/Grant",code="Ok"}"#;
    let grant_bad = r#"zkcoord_rpc_requests_total{method="/zkcoord.v1.Lease/Grant",code="InvalidArgument"}"#;
    assert!(text.contains("# TYPE zkcoord_rpc_duration_seconds histogram"));
    assert_eq!(sample(&text, grant_ok), 1.0, "{text}");
    assert_eq!(sample(&text, grant_bad), 1.0, "{text}");
    assert_eq!(sample(&text, r#"zkcoord_rpc_duration_seconds_count{method="/zkcoord.v1.Lease/Grant"}"#), 2.0);
    assert_eq!(sample(&text, r#"zkcoord_leases{tenant=""}"#), 1.0);
    assert!(sample(&text, r#"zkcoord_heartbeat_lag_seconds{tenant=""}"#) >= 0.2, "no heartbeat since the grant");
    assert!(sample(&text, "zkcoord_zookeeper_rtt_seconds_count") >= 1.0, "probed at start");

    // An election with a leader.
    let mut campaign = ElectionClient::new(channel.clone())
        .campaign(pb::CampaignRequest {
            key: Some(pb::CandidateKey {
                election: "ledger".into(),
                candidate_id: "a".into(),
                lease: support::lease::lease_ref(lease.lease_id, &lease.secret),
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    while campaign.message().await.unwrap().unwrap().state() != pb::CandidateState::Elected {}
    let text = scrape(metrics).await;
    assert_eq!(sample(&text, r#"zkcoord_election_candidates{tenant="",election="ledger"}"#), 1.0, "{text}");
    assert_eq!(sample(&text, r#"zkcoord_election_has_leader{tenant="",election="ledger"}"#), 1.0);

    // A hold and a waiter, then the hand-off.
    let holder = Locker::with_lease(&channel, (lease.lease_id, lease.secret.clone()));
    let held = holder.lock(&["k"], EXCLUSIVE, 0).await.unwrap();
    let waiter = Locker::granted(&channel, "waiter", Duration::from_secs(5)).await;
    let waiting = tokio::spawn(async move { waiter.lock(&["k"], EXCLUSIVE, 0).await });
    support::eventually(Duration::from_secs(10), "the waiter is counted", || async {
        sample(&scrape(metrics).await, r#"zkcoord_lock_calls_in_progress{tenant=""}"#) == 1.0
    })
    .await;
    holder.unlock(&held.handle).await.unwrap();
    waiting.await.unwrap().unwrap();
    let text = scrape(metrics).await;
    assert_eq!(sample(&text, r#"zkcoord_lock_calls_in_progress{tenant=""}"#), 0.0);
    assert_eq!(sample(&text, r#"zkcoord_lock_acquired_total{tenant=""}"#), 2.0);
    assert_eq!(sample(&text, r#"zkcoord_lock_released_total{tenant=""}"#), 1.0);

    // ZooKeeper goes away.
    zk.server.kill();
    support::eventually(Duration::from_secs(30), "the session is reported disconnected", || async {
        sample(&scrape(metrics).await, "zkcoord_zookeeper_connected") == 0.0
    })
    .await;
    instance.shutdown().await;
}
