//! The clients' lock calls under failure, against real zkcoord instances and a real ZooKeeper:
//! the instance serving a waiting Lock is killed, a Lock times out on the server.

#![allow(clippy::unwrap_used)]

use crate::support;

use std::time::Duration;

use support::{
    ZkcoordProcess,
    lock::{EXCLUSIVE, Locker},
    proxy::Proxy,
};
use zkcoord_client::{Client, Error, LeaseKeeper, LeaseOptions, LockGuard, LockOptions, pb};

const LONG: Duration = Duration::from_secs(60);

/// The lock handles bound to lease `id`, each once, sorted (Lease.TimeToLive).
async fn lock_bindings(client: &Client, id: i64) -> Vec<String> {
    let response = client.leases().time_to_live(pb::TimeToLiveRequest { lease_id: id }).await.unwrap();
    let mut handles: Vec<String> = response
        .into_inner()
        .bindings
        .into_iter()
        .filter(|b| b.kind() == pb::binding::Kind::Lock)
        .map(|b| b.id)
        .collect();
    handles.sort();
    handles.dedup();
    handles
}

/// The instance serving a waiting `LockGuard::acquire` is SIGKILLed: its request stays queued
/// under the lease. The client releases that orphan before it retries on another instance, so
/// the retry does not wait behind its own lease's request forever: it gets the keys when their
/// holder lets go, and the lease is left with that one hold only.
#[tokio::test]
async fn acquire_completes_elsewhere_without_an_orphan_when_its_instance_is_killed() {
    let zk = support::zk::shared();
    let target = format!("{}{}", zk.hosts(), support::namespace("lock-client-crash"));
    let a = ZkcoordProcess::spawn(&target, &[]);
    let b = ZkcoordProcess::spawn(&target, &[]);
    support::wait_serving(a.addr).await;
    support::wait_serving(b.addr).await;
    let on_b = support::channel(b.addr).await;
    let holder = Locker::granted(&on_b, "holder", LONG).await;
    let held = holder.lock(&["crash-1", "crash-2"], EXCLUSIVE, 1000).await.unwrap();

    // The client starts on a: its lease and its Lock call go there.
    let client = Client::new([a.addr.to_string(), b.addr.to_string()]).unwrap();
    let lease = LeaseKeeper::grant(&client, LeaseOptions::new("crashy", Duration::from_secs(5))).await.unwrap();
    let acquiring = tokio::spawn({
        let client = client.clone();
        async move {
            let guard = LockGuard::acquire(&client, &lease, LockOptions::exclusive(["crash-2", "crash-1"])).await;
            (guard, lease)
        }
    });
    support::eventually(Duration::from_secs(10), "the request is queued", || async {
        holder.holders("crash-1", false).await.first().is_some_and(|k| k.waiters == 1)
    })
    .await;

    a.signal(libc::SIGKILL);
    // The orphan is released and the retry queued on b: still one waiter.
    tokio::time::sleep(Duration::from_secs(1)).await;
    if acquiring.is_finished() {
        let (ended, _) = acquiring.await.unwrap();
        panic!("acquire ended while the keys were held: {ended:?}");
    }
    holder.unlock(&held.handle).await.unwrap();
    let (guard, keeper) = tokio::time::timeout(Duration::from_secs(15), acquiring)
        .await
        .expect("acquire completes once the keys are free: it does not wait behind its own orphan")
        .unwrap();
    let guard = guard.unwrap();
    assert!(guard.token("crash-1").unwrap() > held.tokens[0].fencing_token);
    let only_b = Client::new([b.addr.to_string()]).unwrap();
    assert_eq!(lock_bindings(&only_b, keeper.id()).await, [guard.handle().to_owned()], "no orphan hold is left");
    let handle = guard.handle().to_owned();
    guard.unlock().await.unwrap();
    assert!(lock_bindings(&only_b, keeper.id()).await.is_empty(), "{handle} released");
}

/// The server's wait timeout is an error of its own, not a plain DEADLINE_EXCEEDED.
#[tokio::test]
async fn a_lock_wait_that_runs_out_is_lock_wait_timed_out() {
    let zk = support::zk::shared();
    let instance = support::start_zkcoord(&zk.hosts(), &support::namespace("lock-client-timeout")).await;
    let channel = support::channel(instance.addr()).await;
    let holder = Locker::granted(&channel, "holder", LONG).await;
    let held = holder.lock(&["busy"], EXCLUSIVE, 1000).await.unwrap();
    let client = Client::new([instance.addr().to_string()]).unwrap();
    let lease = LeaseKeeper::grant(&client, LeaseOptions::new("patient", Duration::from_secs(5))).await.unwrap();
    let options = LockOptions::exclusive(["busy"]).timeout(Duration::from_millis(200));
    let error = LockGuard::acquire(&client, &lease, options).await.unwrap_err();
    assert!(matches!(error, Error::LockWaitTimedOut), "{error:?}");
    assert_eq!(error.code(), Some(tonic::Code::DeadlineExceeded));
    assert!(lock_bindings(&client, lease.id()).await.is_empty());
    holder.unlock(&held.handle).await.unwrap();
    instance.shutdown().await;
}

/// A guard dropped while zkcoord cannot reach ZooKeeper (every Unlock answers UNAVAILABLE) is
/// released once it can again: the background release is retried, not tried once.
#[tokio::test]
async fn a_guard_dropped_during_an_outage_is_released_after_it() {
    let zk = support::zk::shared();
    let proxy = Proxy::start(zk.hosts().parse().unwrap()).await;
    let instance = support::start_zkcoord(&proxy.addr.to_string(), &support::namespace("lock-client-drop")).await;
    let client = Client::new([instance.addr().to_string()]).unwrap();
    let lease = LeaseKeeper::grant(&client, LeaseOptions::new("dropper", Duration::from_secs(30))).await.unwrap();
    let guard = LockGuard::acquire(&client, &lease, LockOptions::exclusive(["dropped"])).await.unwrap();
    let handle = guard.handle().to_owned();

    proxy.cut();
    drop(guard);
    // Long enough for the instance to notice the lost connection and answer UNAVAILABLE.
    tokio::time::sleep(Duration::from_secs(4)).await;
    proxy.heal();
    support::eventually(Duration::from_secs(15), "the dropped guard's hold is released", || async {
        client
            .leases()
            .time_to_live(pb::TimeToLiveRequest { lease_id: lease.id() })
            .await
            .is_ok_and(|r| !r.into_inner().bindings.iter().any(|b| b.id == handle))
    })
    .await;
    instance.shutdown().await;
}
