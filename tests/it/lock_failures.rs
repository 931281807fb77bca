//! Soft locks under failure, against real ZooKeeper: the holder's client killed, the holder's
//! zkcoord instance killed, ZooKeeper members killed while requests wait.

#![allow(clippy::unwrap_used)]

use crate::support;

use std::time::{Duration, Instant};

use support::{
    lease::Keeper,
    lock::{EXCLUSIVE, Locker},
    owner::Owner,
    proxy::Proxy,
    signal,
    zk::Ensemble,
};
use tonic::Code;

const LONG: Duration = Duration::from_secs(60);

/// (d) The holder's client is SIGKILLed: its keys go to the next waiter within ttl + 500 ms.
#[tokio::test]
async fn keys_of_a_killed_holder_go_to_the_next_waiter_within_ttl_plus_half_a_second() {
    let zk = support::zk::shared();
    let instance = support::start_zkcoord(&zk.hosts(), &support::namespace("lock-kill")).await;
    let channel = support::channel(instance.addr()).await;
    let ttl = Duration::from_secs(1);
    let owner = Owner::spawn(instance.addr(), ttl, ttl / 4).await;
    // The owner process keeps the lease alive; the hold is made with its lease.
    let holder = Locker::with_lease(&channel, (owner.id, owner.secret.clone()));
    let held = holder.lock(&["batch-7", "batch-8"], EXCLUSIVE, 1000).await.unwrap();
    let waiter = Locker::granted(&channel, "waiter", LONG).await;
    let waiting = tokio::spawn({
        let waiter = waiter.clone();
        async move {
            let got = waiter.lock(&["batch-8", "batch-7"], EXCLUSIVE, 0).await;
            (got, Instant::now())
        }
    });
    tokio::time::sleep(ttl * 2).await;
    assert!(!waiting.is_finished(), "a live holder keeps its keys past one ttl");

    owner.signal("-KILL");
    let killed = Instant::now();
    let (got, at) = tokio::time::timeout(ttl * 10, waiting).await.unwrap().unwrap();
    let got = got.unwrap();
    let after = at - killed;
    eprintln!("ttl {ttl:?}: the waiter got the keys {after:?} after the holder was killed");
    assert!(after <= ttl + Duration::from_millis(500), "the waiter got the keys {after:?} after the kill");
    assert!(got.tokens.iter().all(|t| t.fencing_token > held.tokens[0].fencing_token));
    drop(owner);
    waiter.unlock(&got.handle).await.unwrap();
    instance.shutdown().await;
}

/// (d) The holder's zkcoord instance is killed, but the client reattaches to another instance
/// within ttl: it keeps its locks, and can unlock them there.
#[tokio::test]
async fn a_holder_that_reattaches_after_its_instance_died_keeps_its_locks() {
    let ttl = Duration::from_secs(3);
    let (a, b, keeper) = support::lease::kept_on_two_instances("lock-instance-crash", ttl).await;
    let on_a = support::channel(a.addr).await;
    let on_b = support::channel(b.addr).await;
    let holder = Locker::with_lease(&on_a, (keeper.id, keeper.secret.clone()));
    let held = holder.lock(&["flow-1", "flow-2"], EXCLUSIVE, 1000).await.unwrap();
    let rival = Locker::granted(&on_b, "rival", LONG).await;
    let waiting = tokio::spawn({
        let rival = rival.clone();
        async move { rival.lock(&["flow-2"], EXCLUSIVE, 0).await }
    });

    signal(a.pid(), "-KILL");
    let killed = Instant::now();
    support::eventually(ttl, "the client is confirmed on b within ttl", || async {
        keeper.beats().iter().any(|beat| beat.confirmed && beat.endpoint == 1 && beat.sent > killed)
    })
    .await;
    // Well past the lease's ttl and the dead instance's session: the locks are still held.
    tokio::time::sleep(ttl * 2).await;
    assert!(!waiting.is_finished(), "the rival acquired while the holder's lease lived");
    let holders = rival.holders("flow-", true).await;
    assert_eq!(holders.len(), 2);
    for key in &holders {
        assert_eq!(key.holders.len(), 1);
        assert_eq!((key.holders[0].lease_id, key.holders[0].fencing_token), (keeper.id, held.tokens[0].fencing_token));
    }
    assert_eq!(holders[1].waiters, 1);
    let tried = rival.try_lock(&["flow-1"], EXCLUSIVE).await.unwrap();
    assert!(!tried.acquired);

    // The holder unlocks through b; the rival gets the key.
    let via_b = Locker::with_lease(&on_b, (keeper.id, keeper.secret.clone()));
    via_b.unlock(&held.handle).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), waiting).await.unwrap().unwrap().unwrap();
    assert!(got.tokens[0].fencing_token > held.tokens[0].fencing_token);
    let status = via_b.unlock(&held.handle).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    drop(keeper);
}

/// ZooKeeper members die while requests wait and hold: nothing is lost or granted twice, and
/// the waiter is served once the holder unlocks.
#[tokio::test]
async fn waiting_requests_survive_the_loss_of_zookeeper_members() {
    let mut ensemble = Ensemble::start(3);
    let instance = support::start_zkcoord(&ensemble.hosts(), &support::namespace("lock-ensemble")).await;
    let channel = support::channel(instance.addr()).await;
    let keeper = Keeper::start(vec![instance.addr()], Duration::from_secs(10), Duration::from_millis(250), None).await;
    let holder = Locker::with_lease(&channel, (keeper.id, keeper.secret.clone()));
    let waiter_keeper =
        Keeper::start(vec![instance.addr()], Duration::from_secs(10), Duration::from_millis(250), None).await;
    let waiter = Locker::with_lease(&channel, (waiter_keeper.id, waiter_keeper.secret.clone()));
    let held = holder.lock(&["shard-3"], EXCLUSIVE, 5000).await.unwrap();
    let waiting = tokio::spawn({
        let waiter = waiter.clone();
        async move { waiter.lock(&["shard-3"], EXCLUSIVE, 0).await }
    });
    support::eventually(Duration::from_secs(10), "the waiter is queued", || async {
        holder.holders("shard-3", false).await.first().is_some_and(|k| k.waiters == 1)
    })
    .await;

    // A follower, then the leader, each brought back before the next goes.
    for victim in [ensemble.follower(), ensemble.leader()] {
        ensemble.members[victim].kill();
        tokio::time::sleep(Duration::from_secs(2)).await;
        ensemble.members[victim].spawn();
        ensemble.members[victim].wait_serving();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    if waiting.is_finished() {
        let ended = waiting.await.unwrap();
        panic!("the waiter's call ended while the key was held: {ended:?}");
    }

    let mut unlocked = false;
    for _ in 0..100 {
        match holder.unlock(&held.handle).await {
            Ok(()) => {
                unlocked = true;
                break;
            }
            Err(status) if status.code() == Code::Unavailable => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(status) => panic!("unlock: {status:?}"),
        }
    }
    assert!(unlocked, "unlock succeeded once ZooKeeper had a quorum again");
    let got = tokio::time::timeout(Duration::from_secs(20), waiting).await.unwrap().unwrap().unwrap();
    assert!(got.tokens[0].fencing_token > held.tokens[0].fencing_token);
    waiter.unlock(&got.handle).await.unwrap();
    instance.shutdown().await;
}

/// The ZooKeeper leader is SIGKILLed (twice) while Lock and Unlock calls are in flight: every
/// call that fails for it fails as UNAVAILABLE (retryable), never INTERNAL. A killed member
/// with unread requests resets its connections, which a plain kill does not produce on every
/// run: the instance reaches the members through proxies that reset their connections at each
/// kill ("Connection reset by peer").
#[tokio::test]
async fn killing_the_zookeeper_leader_under_load_answers_unavailable_never_internal() {
    let mut ensemble = Ensemble::start(3);
    let mut proxies = Vec::new();
    for member in &ensemble.members {
        proxies.push(Proxy::start(member.address().parse().unwrap()).await);
    }
    let hosts: Vec<String> = proxies.iter().map(|p| p.addr.to_string()).collect();
    let instance = support::start_zkcoord(&hosts.join(","), &support::namespace("lock-zk-leader")).await;
    let channel = support::channel(instance.addr()).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for n in 0..8 {
        let locker = Locker::granted(&channel, "looper", LONG).await;
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            let key = format!("loop-{n}");
            let mut failures = Vec::new();
            let mut cycles = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match locker.lock(&[&key], EXCLUSIVE, 2000).await {
                    Ok(held) => loop {
                        cycles += 1;
                        match locker.unlock(&held.handle).await {
                            Ok(()) => break,
                            Err(status) if status.code() == Code::NotFound => break, // went through
                            Err(status) => {
                                failures.push(("unlock", status.code(), status.message().to_owned()));
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    },
                    Err(status) => {
                        failures.push(("lock", status.code(), status.message().to_owned()));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            (cycles, failures)
        }));
    }
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let leader = ensemble.leader();
        proxies.iter().for_each(Proxy::reset);
        ensemble.members[leader].kill();
        tokio::time::sleep(Duration::from_secs(2)).await;
        ensemble.members[leader].spawn();
        ensemble.members[leader].wait_serving();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut internal = Vec::new();
    for worker in workers {
        let (cycles, failures) = tokio::time::timeout(LONG, worker).await.unwrap().unwrap();
        eprintln!("{cycles} lock/unlock cycles; failures: {failures:?}");
        assert!(cycles > 0);
        // A Lock may also wait out its 2 s while the ensemble has no quorum.
        internal.extend(
            failures.into_iter().filter(|(_, code, _)| !matches!(code, Code::Unavailable | Code::DeadlineExceeded)),
        );
    }
    assert!(internal.is_empty(), "calls failed with other codes than UNAVAILABLE: {internal:?}");
    instance.shutdown().await;
}

/// A lease past its ttl is dead for its owner even before its home has deleted it (here its
/// home cannot reach ZooKeeper, so it cannot; or it is within the expiry margin): Lock and
/// TryLock with it answer NOT_FOUND "lease not found".
#[tokio::test]
async fn a_lease_past_its_ttl_locks_nothing_even_before_it_is_deleted() {
    let zk = support::zk::shared();
    let proxy = Proxy::start(zk.hosts().parse().unwrap()).await;
    let instance = support::start_zkcoord(&proxy.addr.to_string(), &support::namespace("lock-ttl-over")).await;
    let channel = support::channel(instance.addr()).await;
    let ttl = Duration::from_secs(1);

    // The home is cut off from ZooKeeper: the lease cannot be deleted, but its ttl runs out.
    let locker = Locker::granted(&channel, "silent", ttl).await;
    proxy.cut();
    tokio::time::sleep(ttl + Duration::from_millis(300)).await;
    let status = locker.lock(&["ttl-a"], EXCLUSIVE, 1000).await.unwrap_err();
    assert_eq!((status.code(), status.message()), (Code::NotFound, "lease not found"), "Lock: {status:?}");
    let status = locker.try_lock(&["ttl-a"], EXCLUSIVE).await.unwrap_err();
    assert_eq!((status.code(), status.message()), (Code::NotFound, "lease not found"), "TryLock: {status:?}");
    proxy.heal();
    support::wait_serving(instance.addr()).await;

    // Within the expiry margin (ttl .. ttl + 200 ms): the record still exists.
    let locker = Locker::granted(&channel, "silent", ttl).await;
    tokio::time::sleep(ttl + Duration::from_millis(20)).await;
    let status = locker.lock(&["ttl-b"], EXCLUSIVE, 1000).await.unwrap_err();
    assert_eq!((status.code(), status.message()), (Code::NotFound, "lease not found"), "Lock: {status:?}");
    assert!(locker.holders("ttl-", true).await.is_empty(), "nothing was queued");
    instance.shutdown().await;
}
