//! The Prometheus endpoint: scraped over HTTP while the instance serves real calls against a
//! real ZooKeeper; every figure moves with what happens (calls by method and code, leases,
//! elections, lock calls, shard groups, the ZooKeeper session and its round trips).

#![allow(clippy::unwrap_used)]

use crate::{
    shards::{Member, TTL, check_exclusive},
    support,
};

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use support::{
    lock::{EXCLUSIVE, Locker},
    zk::Standalone,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use zkcoord::pb::v1::{
    self as pb, election_client::ElectionClient, lease_client::LeaseClient, shards_client::ShardsClient,
};

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

/// The series of a shard group this instance follows: members, shards owned per member,
/// handoffs in progress, the handoff duration histogram and unowned shard-seconds. A member
/// that never releases makes its handoffs last its ttl + about a second; one that releases
/// makes them quick. No shard is valid for two members at any sampled moment.
#[tokio::test]
async fn shard_group_metrics_follow_members_ownership_and_handoffs() {
    let zk = support::zk::shared();
    let mut config = support::test_config(&zk.hosts(), &support::namespace("metrics-shards"));
    config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let instance = zkcoord::server::start(config).await.unwrap();
    instance.session().wait_connected(Duration::from_secs(30)).await.unwrap();
    let metrics = instance.metrics_addr().unwrap();
    let channel = support::channel(instance.addr()).await;
    let wait = Duration::from_secs(30);
    let series = |name: &str, extra: &str| format!(r#"zkcoord_shard_group_{name}{{tenant="",group="flows"{extra}}}"#);
    let owned = |member: &str| series("owned_shards", &format!(r#",member="{member}""#));
    let handoffs = series("handoffs", "");
    let count = series("handoff_duration_seconds_count", "");
    let sum = series("handoff_duration_seconds_sum", "");
    let unowned = series("unowned_shard_seconds_total", "");

    let started = Instant::now();
    let m1 = Member::join(&channel, "flows", "m1", 8, 1, false).await;
    support::eventually(wait, "m1 owns all", || async { m1.valid().len() == 8 }).await;
    let text = scrape(metrics).await;
    assert_eq!(sample(&text, &series("members", "")), 1.0, "{text}");
    assert_eq!(sample(&text, &owned("m1")), 8.0, "{text}");
    assert_eq!(sample(&text, &handoffs), 0.0);
    assert!(text.contains("# TYPE zkcoord_shard_group_handoff_duration_seconds histogram"), "{text}");
    assert!(text.contains("# TYPE zkcoord_shard_group_unowned_shard_seconds counter"), "{text}");

    // m2 joins: m1 (which never releases) hands 4 shards off, for its ttl + about a second.
    let m2 = Member::join(&channel, "flows", "m2", 8, 1, true).await;
    let stop = CancellationToken::new();
    let checker = check_exclusive(vec![m1.validity.clone(), m2.validity.clone()], stop.clone());
    support::eventually(wait, "4 handoffs in progress", || async {
        let text = scrape(metrics).await;
        sample(&text, &handoffs) == 4.0 && sample(&text, &series("members", "")) == 2.0
    })
    .await;
    let text = scrape(metrics).await;
    assert_eq!(sample(&text, &owned("m1")), 4.0, "shards being handed off are not owned: {text}");
    assert_eq!(sample(&text, &owned("m2")), 0.0, "{text}");
    support::eventually(wait, "the handoffs completed", || async {
        let text = scrape(metrics).await;
        sample(&text, &handoffs) == 0.0 && sample(&text, &owned("m2")) == 4.0
    })
    .await;
    let text = scrape(metrics).await;
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(sample(&text, &count), 4.0, "one observation per shard: {text}");
    let waited = sample(&text, &sum);
    assert!(waited >= 4.0 * TTL.as_secs_f64() && waited <= 4.0 * elapsed, "sum {waited} s, {elapsed} s in");
    let unowned_1 = sample(&text, &unowned);
    assert!(
        unowned_1 >= 4.0 * TTL.as_secs_f64() && unowned_1 <= 8.0 * elapsed,
        "4 shards handed off for ttl + 1 s each: {unowned_1} shard-seconds, {elapsed} s in"
    );

    // m2 drained: it releases at once, so these 4 handoffs are quick.
    ShardsClient::new(channel.clone())
        .drain(pb::DrainRequest { group: "flows".into(), member_id: "m2".into() })
        .await
        .unwrap();
    support::eventually(wait, "m1 owns all again", || async { m1.valid().len() == 8 }).await;
    support::eventually(wait, "8 handoffs timed", || async { sample(&scrape(metrics).await, &count) == 8.0 }).await;
    let text = scrape(metrics).await;
    let quick =
        sample(&text, r#"zkcoord_shard_group_handoff_duration_seconds_bucket{le="2.56",tenant="",group="flows"}"#);
    assert_eq!(quick, 4.0, "released handoffs complete at once, the others after the ttl: {text}");
    assert_eq!(sample(&text, &owned("m2")), 0.0);
    assert!(sample(&text, &unowned) >= unowned_1, "a counter");

    stop.cancel();
    assert!(checker.await.unwrap() > 10);
    drop((m1, m2));
    instance.shutdown().await;
}

/// Per-election and per-group series exist only for names in use: Observing, asking the leader
/// of, or following a shard group nobody uses adds none (a client Observing random names
/// cannot grow the label set), while an election someone campaigns in gets its series. The cap
/// beyond which names share the `(other)` series is unit-tested in `src/metrics`.
#[tokio::test]
async fn followed_names_that_do_not_exist_add_no_series() {
    let zk = support::zk::shared();
    let mut config = support::test_config(&zk.hosts(), &support::namespace("metrics-unused"));
    config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let instance = zkcoord::server::start(config).await.unwrap();
    instance.session().wait_connected(Duration::from_secs(30)).await.unwrap();
    let metrics = instance.metrics_addr().unwrap();
    let channel = support::channel(instance.addr()).await;

    let (mut observers, mut group_observers) = (Vec::new(), Vec::new());
    for i in 0..20 {
        let election = format!("unused-{i}");
        let mut elections = ElectionClient::new(channel.clone());
        elections.leader(pb::LeaderRequest { election: election.clone() }).await.unwrap();
        let mut stream = elections.observe(pb::ObserveRequest { election }).await.unwrap().into_inner();
        stream.message().await.unwrap().unwrap();
        observers.push(stream);
        let mut groups = ShardsClient::new(channel.clone())
            .observe(pb::ObserveGroupRequest { group: format!("unused-g{i}") })
            .await
            .unwrap()
            .into_inner();
        groups.message().await.unwrap().unwrap();
        group_observers.push(groups);
    }
    let lease = support::lease::grant(&channel, "metrics", Duration::from_secs(30)).await;
    let key = pb::CandidateKey {
        election: "used".into(),
        candidate_id: "c".into(),
        lease: support::lease::lease_ref(lease.lease_id, &lease.secret),
    };
    let mut campaign = ElectionClient::new(channel.clone())
        .campaign(pb::CampaignRequest { key: Some(key), value: b"c".to_vec(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    campaign.message().await.unwrap().unwrap();
    support::eventually(Duration::from_secs(10), "the used election's series", || async {
        scrape(metrics).await.contains(r#"zkcoord_election_candidates{tenant="",election="used"} 1"#)
    })
    .await;
    let text = scrape(metrics).await;
    assert!(!text.contains("unused-"), "series for names nobody uses: {text}");
    drop((observers, group_observers));
}

/// A znode in `/leases` that zkcoord did not write — undecodable data, or a name that is no
/// lease id — is skipped by Lease.List (which still lists the real leases) and counted in
/// `zkcoord_undecodable_znodes_total{kind="lease"}`.
#[tokio::test]
async fn undecodable_lease_znodes_are_skipped_and_counted() {
    let zk = support::zk::shared();
    let ns = support::namespace("metrics-undecodable");
    let mut config = support::test_config(&zk.hosts(), &ns);
    config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let instance = support::start_configured(config).await;
    let metrics = instance.metrics_addr().unwrap();
    let channel = support::channel(instance.addr()).await;
    let counted = r#"zkcoord_undecodable_znodes_total{kind="lease"}"#;
    assert_eq!(sample(&scrape(metrics).await, counted), 0.0);
    assert!(scrape(metrics).await.contains(&format!("{counted} 0")), "exposed before anything was skipped");

    let real = support::lease::grant(&channel, "real", Duration::from_secs(60)).await;
    let zk_client = support::zk_client(&zk.hosts()).await;
    let open = zookeeper_client::CreateMode::Persistent.with_acls(zookeeper_client::Acls::anyone_all());
    zk_client.create(&format!("{ns}/leases/4242"), b"not a lease record", &open).await.unwrap();
    zk_client.create(&format!("{ns}/leases/not-a-lease"), b"", &open).await.unwrap();

    let listed = LeaseClient::new(channel.clone()).list(pb::ListRequest::default()).await.unwrap().into_inner();
    let ids: Vec<i64> = listed.leases.iter().map(|l| l.lease_id).collect();
    assert_eq!(ids, [real.lease_id], "the foreign znodes are left out, the lease is listed");
    assert!(listed.next_page_token.is_empty());
    let text = scrape(metrics).await;
    assert!(sample(&text, counted) >= 2.0, "both foreign znodes counted: {text}");
    instance.shutdown().await;
}
