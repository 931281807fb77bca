//! The test harness's ensemble with quorum links through pausable proxies: an isolated
//! follower keeps accepting client connections for a while, then cannot sync and stops
//! serving; the other two members keep the quorum; healed, it catches up.

#![allow(clippy::unwrap_used)]

use crate::support;

use std::time::{Duration, Instant};

use support::zk::Ensemble;
use zookeeper_client::{Acls, CreateMode};

const GENEROUS: Duration = Duration::from_secs(40);

fn wait_until(what: &str, mut probe: impl FnMut() -> bool) {
    let deadline = Instant::now() + GENEROUS;
    while !probe() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_follower_stops_serving_while_its_peers_keep_the_quorum() {
    let ensemble = Ensemble::start_with_quorum_proxies(3);
    let follower = ensemble.follower();
    let isolated = &ensemble.members[follower];
    let others: Vec<usize> = (0..3).filter(|&i| i != follower).collect();

    let attached = support::zk_client(&isolated.address()).await;
    ensemble.isolate(follower);
    assert!(ensemble.is_isolated(follower));
    // Right after the cut it still serves its clients (reads are local) and accepts
    // connections: its client port is not behind a proxy. New sessions would need the leader.
    assert!(attached.check_stat("/").await.unwrap().is_some(), "the isolated follower still answers a read");
    assert!(isolated.four_letter("srvr").is_some(), "the isolated follower accepts connections");
    wait_until("the isolated follower stops serving", || {
        isolated.four_letter("srvr").is_some_and(|s| s.contains("not currently serving"))
    });
    drop(attached);
    // The other two keep the quorum and take writes.
    let majority = ensemble.members[others[0]].address() + "," + &ensemble.members[others[1]].address();
    let zk = support::zk_client(&majority).await;
    zk.create("/written-while-isolated", b"x", &CreateMode::Persistent.with_acls(Acls::anyone_all())).await.unwrap();
    assert!(others.iter().any(|&i| ensemble.members[i].mode().as_deref() == Some("leader")));

    ensemble.heal(follower);
    assert!(!ensemble.is_isolated(follower));
    wait_until("the healed follower serves again", || isolated.mode().as_deref() == Some("follower"));
    // A follower serves only once synced with the leader.
    let caught_up = support::zk_client(&isolated.address()).await;
    assert!(caught_up.check_stat("/written-while-isolated").await.unwrap().is_some());
}
