//! The Rust client library (`clients/rust`, crate `zkcoord-client`) against real zkcoord
//! instances and a real ZooKeeper: the lease keeper's heartbeats, health checks and endpoint
//! failover, the leader elector's events (including the safety rule when its instance loses
//! ZooKeeper), and lock guards.

#![allow(clippy::unwrap_used)]

use crate::support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use support::{ZkcoordProcess, proxy::Proxy};
use tokio::time::Instant;
use zkcoord_client::{
    CampaignOptions, Client, LeaderElector, LeadershipEvent, LeaseKeeper, LeaseOptions, LeaseStatus, LockGuard,
    LockOptions, LossReason, pb,
};

/// The next leadership event, which must come within `within`.
async fn next_event(elector: &mut LeaderElector, within: Duration) -> LeadershipEvent {
    tokio::time::timeout(within, elector.next()).await.expect("a leadership event in time").expect("elector goes on")
}

/// Lease.TimeToLive through `client`; `None` when the lease does not exist.
async fn time_to_live(client: &Client, id: i64) -> Option<pb::TimeToLiveResponse> {
    match client.leases().time_to_live(pb::TimeToLiveRequest { lease_id: id }).await {
        Ok(response) => Some(response.into_inner()),
        Err(status) if status.code() == tonic::Code::NotFound => None,
        Err(status) => panic!("TimeToLive failed: {status}"),
    }
}

/// The lease's health as zkcoord reports it.
async fn reported_health(client: &Client, id: i64) -> pb::Health {
    time_to_live(client, id).await.expect("the lease exists").lease.unwrap().health.unwrap()
}

#[tokio::test]
async fn a_lease_lives_on_heartbeats_and_carries_its_health_checks() {
    let zk = support::zk::shared();
    let instance = support::start_zkcoord(&zk.hosts(), &support::namespace("client-lease")).await;
    let client = Client::new([instance.addr().to_string()]).unwrap();
    let database_up = Arc::new(AtomicBool::new(true));
    let up = database_up.clone();
    let options =
        LeaseOptions::new("node-a", Duration::from_secs(1)).metadata("zone", "eu-1").check("database", move || {
            let up = up.load(Ordering::SeqCst);
            async move { if up { Ok(()) } else { Err("connection refused".to_owned()) } }
        });
    let lease = LeaseKeeper::grant(&client, options).await.unwrap();

    // Several ttls pass: only the background heartbeats keep the lease alive.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(lease.is_confirmed(), "status {:?}", lease.status());
    let health = reported_health(&client, lease.id()).await;
    assert_eq!(health.status(), pb::HealthStatus::Serving);
    assert_eq!(health.checks[0].name, "database");
    assert_eq!(time_to_live(&client, lease.id()).await.unwrap().lease.unwrap().metadata["zone"], "eu-1");

    // The check starts failing: the next heartbeats say so.
    database_up.store(false, Ordering::SeqCst);
    let id = lease.id();
    support::eventually(Duration::from_secs(3), "the failing check is reported", || {
        let client = client.clone();
        async move { reported_health(&client, id).await.status() == pb::HealthStatus::NotServing }
    })
    .await;
    let health = reported_health(&client, id).await;
    assert_eq!(health.checks[0].status(), pb::HealthStatus::NotServing);
    assert_eq!(health.checks[0].message, "connection refused");
    assert!(lease.is_confirmed(), "an unhealthy lease is still alive");

    lease.revoke().await.unwrap();
    assert!(time_to_live(&client, id).await.is_none(), "a revoked lease is gone");
    instance.shutdown().await;
}

#[tokio::test]
async fn the_keeper_moves_to_another_instance_without_losing_the_lease() {
    let zk = support::zk::shared();
    let ns = support::namespace("client-failover");
    let a = ZkcoordProcess::spawn(&format!("{}{ns}", zk.hosts()), &[]);
    let b = support::start_zkcoord(&zk.hosts(), &ns).await;
    let client = Client::new([a.addr.to_string(), b.addr().to_string()]).unwrap();
    let ttl = Duration::from_secs(2);
    let lease = LeaseKeeper::grant(&client, LeaseOptions::new("node-a", ttl)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(lease.is_confirmed());

    drop(a); // kill -9 the instance the heartbeats go to
    let killed = Instant::now();
    // Within a ttl the keeper confirms the lease again, through b.
    let mut status = lease.watch();
    tokio::time::timeout(
        ttl,
        status.wait_for(|s| matches!(s, LeaseStatus::Confirmed { until } if *until > killed + ttl)),
    )
    .await
    .expect("re-confirmed through the other instance within a ttl")
    .unwrap();
    // Several ttls later the lease still lives.
    tokio::time::sleep(ttl * 2).await;
    assert!(lease.is_confirmed(), "status {:?}", lease.status());
    let only_b = Client::new([b.addr().to_string()]).unwrap();
    assert!(time_to_live(&only_b, lease.id()).await.is_some(), "the lease survived its instance");
    lease.revoke().await.unwrap();
    b.shutdown().await;
}

#[tokio::test]
async fn the_elector_reports_leadership_through_transfer_and_resign() {
    let zk = support::zk::shared();
    let instance = support::start_zkcoord(&zk.hosts(), &support::namespace("client-elector")).await;
    let client = Client::new([instance.addr().to_string()]).unwrap();
    let ttl = Duration::from_secs(2);
    let lease_a = LeaseKeeper::grant(&client, LeaseOptions::new("a", ttl)).await.unwrap();
    let lease_b = LeaseKeeper::grant(&client, LeaseOptions::new("b", ttl)).await.unwrap();
    let within = Duration::from_secs(5);

    let mut a =
        LeaderElector::campaign(&client, &lease_a, CampaignOptions::new("master", "a").priority(0)).await.unwrap();
    let LeadershipEvent::BecameLeader { fencing_token: first, .. } = next_event(&mut a, within).await else {
        panic!("a leads first")
    };
    assert!(a.is_leader());
    let mut b =
        LeaderElector::campaign(&client, &lease_b, CampaignOptions::new("master", "b").priority(1)).await.unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(500), b.next()).await.is_err(), "b only queues");
    assert!(!b.is_leader());

    // A graceful transfer: a hears it lost before b hears it leads.
    let leader = a.transfer(Some("b")).await.unwrap();
    assert_eq!(leader.candidate_id, "b");
    assert_eq!(
        next_event(&mut a, within).await,
        LeadershipEvent::LostLeadership { reason: LossReason::Deposed(pb::DeposedReason::Transferred) }
    );
    assert!(!a.is_leader());
    let LeadershipEvent::BecameLeader { fencing_token: second, .. } = next_event(&mut b, within).await else {
        panic!("b leads after the transfer")
    };
    assert!(second > first, "fencing tokens grow: {first} then {second}");

    // b resigns: a leads again, with a higher token still.
    b.resign().await.unwrap();
    let LeadershipEvent::BecameLeader { fencing_token: third, .. } = next_event(&mut a, within).await else {
        panic!("a leads after b resigned")
    };
    assert!(third > second, "fencing tokens grow: {second} then {third}");
    assert_eq!(a.leading().map(|(_, token)| token), Some(third));
    instance.shutdown().await;
}

/// The safety rule: when the leader's instance loses ZooKeeper, the elector reports
/// LostLeadership before any other candidate could be elected.
#[tokio::test]
async fn a_cut_off_leader_stops_before_anyone_else_is_elected() {
    let zk = support::zk::shared();
    let proxy = Proxy::start(zk.hosts().parse().unwrap()).await;
    let ns = support::namespace("client-cut");
    let a = support::start_zkcoord(&proxy.addr.to_string(), &ns).await;
    let b = support::start_zkcoord(&zk.hosts(), &ns).await;
    // The leader's client knows only a, the standby's only b.
    let client_a = Client::new([a.addr().to_string()]).unwrap();
    let client_b = Client::new([b.addr().to_string()]).unwrap();
    let ttl = Duration::from_secs(2);
    let within = Duration::from_secs(10);
    let lease_a = LeaseKeeper::grant(&client_a, LeaseOptions::new("a", ttl)).await.unwrap();
    let lease_b = LeaseKeeper::grant(&client_b, LeaseOptions::new("b", ttl)).await.unwrap();
    let mut leader = LeaderElector::campaign(&client_a, &lease_a, CampaignOptions::new("cut", "a")).await.unwrap();
    assert!(matches!(next_event(&mut leader, within).await, LeadershipEvent::BecameLeader { .. }));
    let mut standby =
        LeaderElector::campaign(&client_b, &lease_b, CampaignOptions::new("cut", "b").priority(1)).await.unwrap();

    proxy.cut();
    let cut = Instant::now();
    let lost = next_event(&mut leader, within).await;
    let lost_at = Instant::now();
    assert!(
        matches!(
            lost,
            LeadershipEvent::LostLeadership { reason: LossReason::Unconfirmed | LossReason::LeaseUnconfirmed }
        ),
        "{lost:?}"
    );
    assert!(!leader.is_leader());
    assert!(matches!(next_event(&mut standby, within).await, LeadershipEvent::BecameLeader { .. }));
    let elected_at = Instant::now();
    println!("leader stopped {:?} after the cut; standby elected {:?} after it", lost_at - cut, elected_at - cut);
    assert!(lost_at < elected_at, "the old leader stopped first");
    proxy.heal();
    drop((leader, standby, lease_a, lease_b));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn lock_guards_exclude_each_other_and_release_on_drop() {
    let zk = support::zk::shared();
    let instance = support::start_zkcoord(&zk.hosts(), &support::namespace("client-lock")).await;
    let client = Client::new([instance.addr().to_string()]).unwrap();
    let ttl = Duration::from_secs(3);
    let first = LeaseKeeper::grant(&client, LeaseOptions::new("job-1", ttl)).await.unwrap();
    let second = LeaseKeeper::grant(&client, LeaseOptions::new("job-2", ttl)).await.unwrap();

    let held = LockGuard::acquire(&client, &first, LockOptions::exclusive(["x", "y"])).await.unwrap();
    let token_x = held.token("x").unwrap();
    assert_eq!(held.token("y"), Some(token_x), "one token for the whole set");

    // TryLock names the holder and leaves nothing behind.
    let blocked = LockGuard::try_acquire(&client, &second, LockOptions::exclusive(["y", "z"])).await.unwrap();
    let blocked = blocked.expect_err("y is held");
    assert_eq!(blocked.len(), 1);
    assert_eq!(blocked[0].key, "y");
    assert_eq!(blocked[0].holders[0].lease_id, first.id());
    // A timed wait gives up.
    let timed_out =
        LockGuard::acquire(&client, &second, LockOptions::exclusive(["x"]).timeout(Duration::from_millis(300)))
            .await
            .unwrap_err();
    assert_eq!(timed_out.code(), Some(tonic::Code::DeadlineExceeded));

    // A waiter gets both keys once the guard is dropped.
    let waiter = {
        let (client, lease) =
            (client.clone(), LeaseKeeper::grant(&client, LeaseOptions::new("job-3", ttl)).await.unwrap());
        tokio::spawn(async move {
            let guard = LockGuard::acquire(&client, &lease, LockOptions::exclusive(["y", "x"])).await.unwrap();
            (guard, lease)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "the waiter waits while the keys are held");
    drop(held);
    let (guard, lease) =
        tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("acquired after the drop").unwrap();
    assert!(guard.token("x").unwrap() > token_x, "a later hold has a higher token");
    guard.unlock().await.unwrap();

    // Shared guards coexist.
    let s1 = LockGuard::acquire(&client, &first, LockOptions::shared(["s"])).await.unwrap();
    let s2 = LockGuard::try_acquire(&client, &second, LockOptions::shared(["s"])).await.unwrap().expect("shared");
    let holders = client
        .locks()
        .holders(pb::HoldersRequest { key: "s".into(), prefix: false, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(holders.into_inner().keys[0].holders.len(), 2);
    s1.unlock().await.unwrap();
    s2.unlock().await.unwrap();
    drop(lease);
    instance.shutdown().await;
}
