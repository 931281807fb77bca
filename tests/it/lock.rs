//! Soft locks against real ZooKeeper: mutual exclusion with fencing across two instances,
//! shared mode without writer starvation, multi-key without deadlock, cancellation and
//! timeouts leaving nothing behind, the cost of an uncontended cycle, bad input.

#![allow(clippy::unwrap_used)]

use crate::support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use support::{
    lease::Keeper,
    lock::{EXCLUSIVE, Locker, SHARED},
    zk::Standalone,
};
use tonic::Code;
use zkcoord::pb::v1::{self as pb, lease_client::LeaseClient};

const LONG: Duration = Duration::from_secs(60);

/// The request nodes queued on `key`, read from ZooKeeper directly.
async fn queued(zk: &zookeeper_client::Client, ns: &str, key: &str) -> Vec<String> {
    match zk.list_children(&format!("{ns}/locks/{key}")).await {
        Ok(children) => children,
        Err(zookeeper_client::Error::NoNode) => Vec::new(),
        Err(err) => panic!("list {key}: {err}"),
    }
}

/// The bindings of lease `id`, read from ZooKeeper directly.
async fn bindings(zk: &zookeeper_client::Client, ns: &str, id: i64) -> Vec<String> {
    zk.list_children(&format!("{ns}/leases/{id}")).await.unwrap()
}

/// A counter kept outside zkcoord, behind a fenced write: like a store that remembers the
/// highest token it has seen and refuses lower ones.
struct FencedCounter {
    path: std::path::PathBuf,
}

impl FencedCounter {
    /// Reads (count, highest token seen).
    fn read(&self) -> (u64, u64) {
        let text = std::fs::read_to_string(&self.path).unwrap();
        let mut words = text.split_whitespace().map(|w| w.parse::<u64>().unwrap());
        (words.next().unwrap(), words.next().unwrap())
    }

    /// Writes `count` with `token`; false (and nothing written) when the token is lower than
    /// one already seen.
    fn write(&self, count: u64, token: u64) -> bool {
        let (_, highest) = self.read();
        if token < highest {
            return false;
        }
        std::fs::write(&self.path, format!("{count} {token}")).unwrap();
        true
    }
}

/// (a) 16 clients over 2 instances, 50 lock → read-modify-write → unlock cycles each on one
/// key: the count is exactly 800, and no write ever carried a token lower than one seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exclusive_locks_serialize_read_modify_write_across_instances() {
    let zk = support::zk::shared();
    let ns = support::namespace("lock-mutex");
    let a = support::start_zkcoord(&zk.hosts(), &ns).await;
    let b = support::start_zkcoord(&zk.hosts(), &ns).await;
    let dir = tempfile::tempdir().unwrap();
    let counter = Arc::new(FencedCounter { path: dir.path().join("counter") });
    std::fs::write(&counter.path, "0 0").unwrap();
    let refused = Arc::new(AtomicU32::new(0));
    let mut clients = Vec::new();
    for i in 0..16 {
        let addr = if i % 2 == 0 { a.addr() } else { b.addr() };
        let channel = support::channel(addr).await;
        let locker = Locker::granted(&channel, &format!("worker-{i}"), LONG).await;
        let (counter, refused) = (counter.clone(), refused.clone());
        clients.push(tokio::spawn(async move {
            for _ in 0..50 {
                let held = locker.lock(&["counter"], EXCLUSIVE, 30_000).await.unwrap();
                let token = held.tokens[0].fencing_token;
                let (count, _) = counter.read();
                tokio::task::yield_now().await; // let others run while we hold the key
                if !counter.write(count + 1, token) {
                    refused.fetch_add(1, Ordering::SeqCst);
                }
                locker.unlock(&held.handle).await.unwrap();
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    assert_eq!(refused.load(Ordering::SeqCst), 0, "a write carried a token lower than one already seen");
    assert_eq!(counter.read().0, 800);
    let zk_client = support::zk_client(&zk.hosts()).await;
    assert!(queued(&zk_client, &ns, "counter").await.is_empty(), "nothing left queued");
    a.shutdown().await;
    b.shutdown().await;
}

/// (b) Many SHARED holders at once; an EXCLUSIVE request waits for them and blocks later
/// SHARED requests; holders and waiters are reported.
#[tokio::test]
async fn shared_holders_coexist_and_a_waiting_writer_blocks_later_readers() {
    let zk = support::zk::shared();
    let ns = support::namespace("lock-shared");
    let instance = support::start_zkcoord(&zk.hosts(), &ns).await;
    let channel = support::channel(instance.addr()).await;
    let mut readers = Vec::new();
    for i in 0..8 {
        let reader = Locker::granted(&channel, &format!("reader-{i}"), LONG).await;
        // Each acquires at once although the others hold the key.
        let held = reader.lock(&["ledger"], SHARED, 1000).await.unwrap();
        readers.push((reader, held));
    }
    let holders = readers[0].0.holders("ledger", false).await;
    assert_eq!(holders.len(), 1);
    assert_eq!((holders[0].holders.len(), holders[0].waiters), (8, 0));
    assert!(holders[0].holders.iter().all(|h| h.mode() == SHARED));

    let writer = Locker::granted(&channel, "writer", LONG).await;
    let writing = tokio::spawn({
        let writer = writer.clone();
        async move { writer.lock(&["ledger"], EXCLUSIVE, 30_000).await }
    });
    support::eventually(Duration::from_secs(10), "the writer is queued", || async {
        readers[0].0.holders("ledger", false).await[0].waiters == 1
    })
    .await;
    // A later reader is blocked by the waiting writer: no writer starvation.
    let late = Locker::granted(&channel, "late-reader", LONG).await;
    let tried = late.try_lock(&["ledger"], SHARED).await.unwrap();
    assert!(!tried.acquired);
    assert_eq!(tried.blocked.len(), 1);
    assert_eq!((tried.blocked[0].holders.len(), tried.blocked[0].waiters), (8, 1));
    let status = late.lock(&["ledger"], SHARED, 300).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    let late_reading = tokio::spawn({
        let late = late.clone();
        async move { late.lock(&["ledger"], SHARED, 30_000).await }
    });

    // The writer gets the key only when the last reader leaves.
    let max_reader_token = readers.iter().map(|(_, h)| h.tokens[0].fencing_token).max().unwrap();
    for (reader, held) in &readers {
        assert!(!writing.is_finished(), "the writer acquired while readers held the key");
        reader.unlock(&held.handle).await.unwrap();
    }
    let written = tokio::time::timeout(Duration::from_secs(10), writing).await.unwrap().unwrap().unwrap();
    assert!(written.tokens[0].fencing_token > max_reader_token);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!late_reading.is_finished(), "the late reader acquired while the writer held the key");
    let holders = late.holders("ledger", false).await;
    assert_eq!(holders[0].holders.len(), 1);
    assert_eq!((holders[0].holders[0].owner.as_str(), holders[0].holders[0].mode()), ("writer", EXCLUSIVE));
    assert_eq!(holders[0].holders[0].fencing_token, written.tokens[0].fencing_token);
    writer.unlock(&written.handle).await.unwrap();
    let read = tokio::time::timeout(Duration::from_secs(10), late_reading).await.unwrap().unwrap().unwrap();
    assert!(read.tokens[0].fencing_token > written.tokens[0].fencing_token);
    late.unlock(&read.handle).await.unwrap();
    instance.shutdown().await;
}

/// (c) A locks {x, y, z} while B locks {z, y, x}, repeatedly, for 10 s: no deadlock, and
/// every acquisition holds all three keys; a failed multi-key TryLock leaves nothing held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_multi_key_locks_never_deadlock() {
    let zk = support::zk::shared();
    let ns = support::namespace("lock-multi");
    let a_instance = support::start_zkcoord(&zk.hosts(), &ns).await;
    let b_instance = support::start_zkcoord(&zk.hosts(), &ns).await;
    let a = Locker::granted(&support::channel(a_instance.addr()).await, "a", LONG).await;
    let b = Locker::granted(&support::channel(b_instance.addr()).await, "b", LONG).await;
    let until = Instant::now() + Duration::from_secs(10);
    let run = |locker: Locker, keys: [&'static str; 3]| {
        tokio::spawn(async move {
            let mut rounds = 0u32;
            while Instant::now() < until {
                // A deadlock would show as DEADLINE_EXCEEDED.
                let held = locker.lock(&keys, EXCLUSIVE, 5_000).await.unwrap();
                assert_eq!(held.tokens.iter().map(|t| t.key.as_str()).collect::<Vec<_>>(), keys);
                let holders = locker.holders("mk-", true).await;
                assert_eq!(holders.len(), 3, "all three keys are held: {holders:?}");
                for key in &holders {
                    assert_eq!(key.holders.len(), 1);
                    assert_eq!(key.holders[0].lease_id, locker.lease.0, "{} is held by the acquirer", key.key);
                    assert_eq!(key.holders[0].fencing_token, held.tokens[0].fencing_token);
                }
                locker.unlock(&held.handle).await.unwrap();
                rounds += 1;
            }
            rounds
        })
    };
    let a_rounds = run(a.clone(), ["mk-x", "mk-y", "mk-z"]);
    let b_rounds = run(b.clone(), ["mk-z", "mk-y", "mk-x"]);
    let (a_rounds, b_rounds) = (a_rounds.await.unwrap(), b_rounds.await.unwrap());
    assert!(a_rounds > 5 && b_rounds > 5, "both made progress: {a_rounds} and {b_rounds} rounds");

    // A failed TryLock on a multi-key set leaves nothing held or queued.
    let held = a.lock(&["mk-y"], EXCLUSIVE, 1000).await.unwrap();
    let tried = b.try_lock(&["mk-x", "mk-y", "mk-z"], EXCLUSIVE).await.unwrap();
    assert!(!tried.acquired && tried.handle.is_empty() && tried.tokens.is_empty());
    assert_eq!(tried.blocked.len(), 1);
    assert_eq!(tried.blocked[0].key, "mk-y");
    assert_eq!(tried.blocked[0].holders[0].owner, "a");
    let zk_client = support::zk_client(&zk.hosts()).await;
    assert!(queued(&zk_client, &ns, "mk-x").await.is_empty());
    assert!(queued(&zk_client, &ns, "mk-z").await.is_empty());
    assert_eq!(queued(&zk_client, &ns, "mk-y").await.len(), 1);
    assert!(bindings(&zk_client, &ns, b.lease.0).await.is_empty());
    // Even when the race is lost after queueing (the key taken between look and queue), the
    // outcome is the same: exercised by TryLocks racing a Lock.
    a.unlock(&held.handle).await.unwrap();
    let free = b.try_lock(&["mk-x", "mk-y", "mk-z"], EXCLUSIVE).await.unwrap();
    assert!(free.acquired);
    b.unlock(&free.handle).await.unwrap();
    a_instance.shutdown().await;
    b_instance.shutdown().await;
}

/// (e) A Lock that times out, and one the client cancels, leave no request node and no
/// binding behind (checked in ZooKeeper directly).
#[tokio::test]
async fn timed_out_and_cancelled_lock_calls_leave_no_trace() {
    let zk = support::zk::shared();
    let ns = support::namespace("lock-cancel");
    let instance = support::start_zkcoord(&zk.hosts(), &ns).await;
    let channel = support::channel(instance.addr()).await;
    let holder = Locker::granted(&channel, "holder", LONG).await;
    let waiter = Locker::granted(&channel, "waiter", LONG).await;
    let zk_client = support::zk_client(&zk.hosts()).await;
    let held = holder.lock(&["job-1", "job-2"], EXCLUSIVE, 1000).await.unwrap();

    let started = Instant::now();
    let status = waiter.lock(&["job-2", "job-3"], EXCLUSIVE, 400).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    // Told apart from a client's own deadline (also DEADLINE_EXCEEDED) by its reason.
    let reason = status.metadata().get(zkcoord_client::REASON_METADATA).map(|v| v.to_str().unwrap());
    assert_eq!(reason, Some(zkcoord_client::LOCK_WAIT_TIMEOUT), "{status:?}");
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(queued(&zk_client, &ns, "job-2").await.len(), 1, "only the holder is queued");
    assert!(queued(&zk_client, &ns, "job-3").await.is_empty());
    assert!(bindings(&zk_client, &ns, waiter.lease.0).await.is_empty());

    // Cancelled by the client: the call is dropped while waiting.
    let call = tokio::spawn({
        let waiter = waiter.clone();
        async move { waiter.lock(&["job-1", "job-3"], SHARED, 0).await }
    });
    support::eventually(Duration::from_secs(10), "the waiter is queued", || async {
        queued(&zk_client, &ns, "job-3").await.len() == 1
    })
    .await;
    call.abort();
    support::eventually(Duration::from_secs(10), "the cancelled request is withdrawn", || async {
        queued(&zk_client, &ns, "job-1").await.len() == 1
            && queued(&zk_client, &ns, "job-3").await.is_empty()
            && bindings(&zk_client, &ns, waiter.lease.0).await.is_empty()
    })
    .await;
    // The holder is untouched and the keys pass on normally.
    holder.unlock(&held.handle).await.unwrap();
    let next = waiter.lock(&["job-1", "job-2", "job-3"], EXCLUSIVE, 1000).await.unwrap();
    assert!(next.tokens[0].fencing_token > held.tokens[0].fencing_token);
    waiter.unlock(&next.handle).await.unwrap();
    instance.shutdown().await;
}

/// A graceful shutdown of the instance serving waiting Locks: the calls get UNAVAILABLE, and
/// their requests are withdrawn before the instance's session closes (checked in ZooKeeper
/// directly as soon as the shutdown returns). Many requests on many keys, so that the
/// withdrawals take ZooKeeper a while.
#[tokio::test]
async fn a_graceful_shutdown_withdraws_waiting_requests() {
    const WAITERS: usize = 16;
    let zk = support::zk::shared();
    let ns = support::namespace("lock-shutdown");
    let a = support::start_zkcoord(&zk.hosts(), &ns).await;
    let b = support::start_zkcoord(&zk.hosts(), &ns).await;
    let on_a = support::channel(a.addr()).await;
    let on_b = support::channel(b.addr()).await;
    let holder = Locker::granted(&on_b, "holder", LONG).await;
    let keys: Vec<String> = (0..300).map(|k| format!("drain-{k}")).collect();
    let zk_client = support::zk_client(&zk.hosts()).await;
    let held = holder.lock(&["drain-0"], EXCLUSIVE, 1000).await.unwrap();
    let mut waiters = Vec::new();
    let mut calls = Vec::new();
    for i in 0..WAITERS {
        // The waiters' leases live on b; only their Lock calls go through a.
        let waiter = Locker::granted(&on_b, &format!("waiter-{i}"), LONG).await;
        let waiter = Locker::with_lease(&on_a, waiter.lease);
        calls.push(tokio::spawn({
            let (waiter, keys) = (waiter.clone(), keys.clone());
            async move { waiter.lock(&keys.iter().map(String::as_str).collect::<Vec<_>>(), EXCLUSIVE, 0).await }
        }));
        waiters.push(waiter);
    }
    support::eventually(Duration::from_secs(30), "the waiters are queued", || async {
        queued(&zk_client, &ns, "drain-299").await.len() == WAITERS
    })
    .await;

    a.shutdown().await;
    assert_eq!(queued(&zk_client, &ns, "drain-0").await.len(), 1, "only the holder is queued");
    for key in &keys[1..] {
        assert!(queued(&zk_client, &ns, key).await.is_empty(), "the waiters' requests are withdrawn from {key}");
    }
    for waiter in &waiters {
        assert!(bindings(&zk_client, &ns, waiter.lease.0).await.is_empty());
    }
    for call in calls {
        let status = tokio::time::timeout(Duration::from_secs(10), call).await.unwrap().unwrap().unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    }
    holder.unlock(&held.handle).await.unwrap();
    b.shutdown().await;
}

/// Holds are bound to the lease: TimeToLive lists them, revoking the lease releases them,
/// and another instance (which never saw the hold) can unlock it.
#[tokio::test]
async fn holds_are_bound_to_their_lease_and_visible_everywhere() {
    let zk = support::zk::shared();
    let ns = support::namespace("lock-bound");
    let a = support::start_zkcoord(&zk.hosts(), &ns).await;
    let b = support::start_zkcoord(&zk.hosts(), &ns).await;
    let (on_a, on_b) = (support::channel(a.addr()).await, support::channel(b.addr()).await);
    let holder = Locker::granted(&on_a, "holder", LONG).await;
    let held = holder.lock(&["rec-1", "rec-2"], EXCLUSIVE, 1000).await.unwrap();
    let ttl = LeaseClient::new(on_b.clone())
        .time_to_live(pb::TimeToLiveRequest { lease_id: holder.lease.0 })
        .await
        .unwrap()
        .into_inner();
    let mut bound: Vec<(i32, String, String)> = ttl.bindings.into_iter().map(|b| (b.kind, b.name, b.id)).collect();
    bound.sort();
    let lock = pb::binding::Kind::Lock as i32;
    assert_eq!(bound, [(lock, "rec-1".into(), held.handle.clone()), (lock, "rec-2".into(), held.handle.clone())]);

    // Unlocked through b, which has no memory of the hold.
    let via_b = Locker::with_lease(&on_b, holder.lease.clone());
    via_b.unlock(&held.handle).await.unwrap();
    let again = via_b.unlock(&held.handle).await.unwrap_err();
    assert_eq!((again.code(), again.message()), (Code::NotFound, "lock handle not found"));

    // Revoking the lease releases its holds and its waiting requests at once.
    let held = holder.lock(&["rec-1"], EXCLUSIVE, 1000).await.unwrap();
    let other = Locker::granted(&on_b, "other", LONG).await;
    let waiting = tokio::spawn({
        let other = other.clone();
        async move { other.lock(&["rec-1"], EXCLUSIVE, 30_000).await }
    });
    support::eventually(Duration::from_secs(10), "the other request is queued", || async {
        other.holders("rec-1", false).await.first().is_some_and(|k| k.waiters == 1)
    })
    .await;
    LeaseClient::new(on_a.clone())
        .revoke(pb::RevokeRequest { lease: support::lease::lease_ref(holder.lease.0, &holder.lease.1) })
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), waiting).await.unwrap().unwrap().unwrap();
    assert!(got.tokens[0].fencing_token > held.tokens[0].fencing_token);
    let holders = other.holders("rec-", true).await;
    assert_eq!(holders.len(), 1);
    assert_eq!((holders[0].key.as_str(), holders[0].holders[0].owner.as_str()), ("rec-1", "other"));
    let gone = holder.unlock(&held.handle).await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);

    // A waiting request whose lease ends gets NOT_FOUND.
    let third = Locker::granted(&on_a, "third", LONG).await;
    let waiting = tokio::spawn({
        let third = third.clone();
        async move { third.lock(&["rec-1"], EXCLUSIVE, 0).await }
    });
    support::eventually(Duration::from_secs(10), "the third request is queued", || async {
        other.holders("rec-1", false).await.first().is_some_and(|k| k.waiters == 1)
    })
    .await;
    LeaseClient::new(on_b.clone())
        .revoke(pb::RevokeRequest { lease: support::lease::lease_ref(third.lease.0, &third.lease.1) })
        .await
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), waiting).await.unwrap().unwrap().unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    a.shutdown().await;
    b.shutdown().await;
}

/// The largest request — 1,000 keys of 128 bytes, by an owner with a 128-byte name — is queued
/// in one transaction (its binding carries the binding record beside its mode and keys, all
/// within ZooKeeper's `jute.maxbuffer`), listed by TimeToLive once per key, and released.
#[tokio::test]
async fn the_largest_request_is_queued_listed_and_released() {
    let zk = support::zk::shared();
    let ns = support::namespace("lock-largest");
    let instance = support::start_zkcoord(&zk.hosts(), &ns).await;
    let channel = support::channel(instance.addr()).await;
    let locker = Locker::granted(&channel, &"o".repeat(128), LONG).await;
    let keys: Vec<String> = (0..1000).map(|i| format!("{i:04}{}", "k".repeat(124))).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let held = locker.lock(&keys, EXCLUSIVE, 30_000).await.expect("1,000 keys of 128 bytes locked");
    let ttl = LeaseClient::new(channel.clone())
        .time_to_live(pb::TimeToLiveRequest { lease_id: locker.lease.0 })
        .await
        .unwrap()
        .into_inner();
    let listed: Vec<(pb::binding::Kind, &str, &str)> =
        ttl.bindings.iter().map(|b| (b.kind(), b.name.as_str(), b.id.as_str())).collect();
    let expected: Vec<(pb::binding::Kind, &str, &str)> =
        keys.iter().map(|k| (pb::binding::Kind::Lock, *k, held.handle.as_str())).collect();
    assert_eq!(listed, expected);
    locker.unlock(&held.handle).await.unwrap();
    let direct = support::zk_client(&zk.hosts()).await;
    assert!(bindings(&direct, &ns, locker.lease.0).await.is_empty());
    assert!(queued(&direct, &ns, keys[999]).await.is_empty());
    instance.shutdown().await;
}

/// A waiting request released by an Unlock with its handle (read from its lease's bindings):
/// the waiting call gets FAILED_PRECONDITION, not NOT_FOUND (its lease lives).
#[tokio::test]
async fn a_waiting_request_unlocked_with_its_handle_fails_its_call() {
    let zk = support::zk::shared();
    let ns = support::namespace("lock-released");
    let instance = support::start_zkcoord(&zk.hosts(), &ns).await;
    let channel = support::channel(instance.addr()).await;
    let holder = Locker::granted(&channel, "holder", LONG).await;
    let waiter = Locker::granted(&channel, "waiter", LONG).await;
    let held = holder.lock(&["ticket-1"], EXCLUSIVE, 1000).await.unwrap();
    let waiting = tokio::spawn({
        let waiter = waiter.clone();
        async move { waiter.lock(&["ticket-1"], EXCLUSIVE, 30_000).await }
    });
    support::eventually(Duration::from_secs(10), "the waiter is queued", || async {
        holder.holders("ticket-1", false).await.first().is_some_and(|k| k.waiters == 1)
    })
    .await;
    let ttl = LeaseClient::new(channel.clone())
        .time_to_live(pb::TimeToLiveRequest { lease_id: waiter.lease.0 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ttl.bindings.len(), 1);
    waiter.unlock(&ttl.bindings[0].id).await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), waiting).await.unwrap().unwrap().unwrap_err();
    assert_eq!((status.code(), status.message()), (Code::FailedPrecondition, "lock request was released"));
    // The lease lives on and can lock again.
    holder.unlock(&held.handle).await.unwrap();
    let again = waiter.lock(&["ticket-1"], EXCLUSIVE, 1000).await.unwrap();
    waiter.unlock(&again.handle).await.unwrap();
    instance.shutdown().await;
}

/// (f, in part) An uncontended lock + unlock cycle costs exactly two ZooKeeper writes once the
/// key exists, whatever the number of keys.
#[tokio::test]
async fn an_uncontended_cycle_costs_two_zookeeper_writes() {
    // A server of its own, so that no other test's writes move the zxid.
    let zk = Standalone::start();
    let ns = support::namespace("lock-cost");
    let instance = support::start_zkcoord(&zk.hosts(), &ns).await;
    let channel = support::channel(instance.addr()).await;
    let keeper = Keeper::start(vec![instance.addr()], Duration::from_secs(10), Duration::from_millis(200), None).await;
    let locker = Locker::with_lease(&channel, (keeper.id, keeper.secret.clone()));
    let warm = locker.lock(&["k1", "k2", "k3"], EXCLUSIVE, 1000).await.unwrap();
    locker.unlock(&warm.handle).await.unwrap();
    for keys in [&["k1"][..], &["k1", "k2", "k3"][..]] {
        let before = zk.server.zxid().unwrap();
        let held = locker.lock(keys, EXCLUSIVE, 1000).await.unwrap();
        locker.unlock(&held.handle).await.unwrap();
        assert_eq!(zk.server.zxid().unwrap() - before, 2, "writes for a cycle on {keys:?}");
    }
    instance.shutdown().await;
}

/// Holders over a prefix with more keys than it reads at once: every key, in key order, with
/// its holders and waiters; empty keys are left out.
#[tokio::test]
async fn holders_of_many_keys_come_in_key_order() {
    let zk = support::zk::shared();
    let ns = support::namespace("lock-holders");
    let instance = support::start_zkcoord(&zk.hosts(), &ns).await;
    let channel = support::channel(instance.addr()).await;
    let owner = Locker::granted(&channel, "owner", LONG).await;
    let keys: Vec<String> = (0..100).map(|k| format!("many-{k}")).collect();
    let held = owner.lock(&keys.iter().map(String::as_str).collect::<Vec<_>>(), SHARED, 1000).await.unwrap();
    let reader = Locker::granted(&channel, "reader", LONG).await;
    let read = reader.lock(&["many-5", "many-50"], SHARED, 1000).await.unwrap();
    let writer = Locker::granted(&channel, "writer", LONG).await;
    let writing = tokio::spawn({
        let writer = writer.clone();
        async move { writer.lock(&["many-7"], EXCLUSIVE, 30_000).await }
    });
    support::eventually(Duration::from_secs(10), "the writer is queued", || async {
        owner.holders("many-7", false).await.first().is_some_and(|k| k.waiters == 1)
    })
    .await;
    // An emptied key is left out.
    let gone = owner.lock(&["many-x"], EXCLUSIVE, 1000).await.unwrap();
    owner.unlock(&gone.handle).await.unwrap();

    let holders = owner.holders("many-", true).await;
    let mut expected = keys.clone();
    expected.sort();
    assert_eq!(holders.iter().map(|k| k.key.clone()).collect::<Vec<_>>(), expected);
    for key in &holders {
        let mut owners: Vec<&str> = key.holders.iter().map(|h| h.owner.as_str()).collect();
        owners.sort_unstable();
        let both = key.key == "many-5" || key.key == "many-50";
        assert_eq!(owners, if both { vec!["owner", "reader"] } else { vec!["owner"] }, "{}", key.key);
        assert_eq!(key.waiters, u32::from(key.key == "many-7"), "{}", key.key);
        assert!(key.holders.iter().all(|h| h.mode() == SHARED));
    }
    owner.unlock(&held.handle).await.unwrap();
    reader.unlock(&read.handle).await.unwrap();
    let written = tokio::time::timeout(Duration::from_secs(10), writing).await.unwrap().unwrap().unwrap();
    writer.unlock(&written.handle).await.unwrap();
    assert!(owner.holders("many-", true).await.is_empty());
    instance.shutdown().await;
}

/// (g) Bad input and bad credentials get clear statuses and change nothing.
#[tokio::test]
async fn bad_handles_and_secrets_are_refused() {
    let zk = support::zk::shared();
    let ns = support::namespace("lock-refused");
    let instance = support::start_zkcoord(&zk.hosts(), &ns).await;
    let channel = support::channel(instance.addr()).await;
    let owner = Locker::granted(&channel, "owner", LONG).await;
    let held = owner.lock(&["acct-1"], EXCLUSIVE, 1000).await.unwrap();

    let thief = Locker::with_lease(&channel, (owner.lease.0, "not-the-secret".into()));
    for status in [
        thief.lock(&["acct-2"], EXCLUSIVE, 100).await.unwrap_err(),
        thief.try_lock(&["acct-2"], SHARED).await.unwrap_err(),
        thief.unlock(&held.handle).await.unwrap_err(),
    ] {
        assert_eq!((status.code(), status.message()), (Code::PermissionDenied, "wrong lease secret"));
    }
    for handle in ["0000000000000000", "no-such-handle", &"f".repeat(300)] {
        let status = owner.unlock(handle).await.unwrap_err();
        assert_eq!((status.code(), status.message()), (Code::NotFound, "lock handle not found"), "{handle}");
    }
    let status = owner.unlock("").await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let stranger = Locker::with_lease(&channel, (12345, "s".into()));
    let status = stranger.lock(&["acct-1"], EXCLUSIVE, 100).await.unwrap_err();
    assert_eq!((status.code(), status.message()), (Code::NotFound, "lease not found"));
    // Another lease cannot release the hold with its handle.
    let other = Locker::granted(&channel, "other", LONG).await;
    assert_eq!(other.unlock(&held.handle).await.unwrap_err().code(), Code::NotFound);

    // The hold survived all of it.
    let holders = owner.holders("acct-1", false).await;
    assert_eq!(holders[0].holders[0].fencing_token, held.tokens[0].fencing_token);
    owner.unlock(&held.handle).await.unwrap();
    assert_eq!(owner.unlock(&held.handle).await.unwrap_err().code(), Code::NotFound, "already released");
    assert!(owner.holders("acct-", true).await.is_empty());
    instance.shutdown().await;
}

/// Queues request `hold` of `locker`'s lease on `key` the way zkcoord does, but under a node
/// name with sequence number `seq` of our choosing (formatted as ZooKeeper does, `%010d`): a
/// key whose sequence counter passed 2^31 and wrapped to negative numbers.
async fn queue_with_seq(zk: &zookeeper_client::Client, ns: &str, locker: &Locker, key: &str, hold: &str, seq: i32) {
    let persistent = zookeeper_client::CreateMode::Persistent.with_acls(zookeeper_client::Acls::anyone_all());
    match zk.create(&format!("{ns}/locks/{key}"), &[], &persistent).await {
        Ok(_) | Err(zookeeper_client::Error::NodeExists) => {}
        Err(err) => panic!("create key: {err}"),
    }
    let node = format!(r#"{{"lease_id":{},"owner":"wrapped","instance":"test"}}"#, locker.lease.0);
    zk.create(&format!("{ns}/locks/{key}/x-{hold}-{seq:010}"), node.as_bytes(), &persistent).await.unwrap();
    let binding = format!(r#"{{"exclusive":true,"keys":["{key}"]}}"#);
    zk.create(&format!("{ns}/leases/{}/l~{hold}", locker.lease.0), binding.as_bytes(), &persistent).await.unwrap();
}

/// A key's sequence counter is a signed 32-bit number that wraps to negative after 2^31
/// requests. Requests with negative numbers are seen (no hidden holder, no double grant) and
/// ordered by creation across the wrap: from their names while their numbers are less than
/// 2^31 apart, else by their creation zxid. (Reaching the wrap for real takes 2^31 writes: the
/// names are made here, so a request zkcoord queues next would not get the number ZooKeeper
/// would give it after them; the queue's order rules are unit-tested in `recipe::lock::queue`.)
#[tokio::test]
async fn requests_are_ordered_by_creation_across_the_sequence_wrap() {
    let zk = support::zk::shared();
    let ns = support::namespace("lock-seq-wrap");
    let instance = support::start_zkcoord(&zk.hosts(), &ns).await;
    let channel = support::channel(instance.addr()).await;
    let direct = support::zk_client(&zk.hosts()).await;
    // Names 2^31 - 1 then -2^31 (one apart): ordered by name. Names 0 then -2^31 (2^31
    // apart): ordered by creation zxid.
    for (key, seqs) in [("wrap-near", [i32::MAX, i32::MIN]), ("wrap-far", [0, i32::MIN])] {
        let first = Locker::granted(&channel, "first", LONG).await;
        let second = Locker::granted(&channel, "second", LONG).await;
        let third = Locker::granted(&channel, "third", LONG).await;
        let (first_hold, second_hold) = ("00000000000000f1", "00000000000000f2");
        queue_with_seq(&direct, &ns, &first, key, first_hold, seqs[0]).await;
        queue_with_seq(&direct, &ns, &second, key, second_hold, seqs[1]).await;

        let holders = third.holders(key, false).await;
        assert_eq!(holders.len(), 1, "{key}: {holders:?}");
        assert_eq!(holders[0].holders.iter().map(|h| h.lease_id).collect::<Vec<_>>(), [first.lease.0], "{key}");
        assert_eq!(holders[0].waiters, 1, "{key}: the wrapped request is seen");
        assert!(!third.try_lock(&[key], EXCLUSIVE).await.unwrap().acquired, "{key}: held by the first");

        first.unlock(first_hold).await.unwrap();
        let holders = third.holders(key, false).await;
        assert_eq!(holders[0].holders.iter().map(|h| h.lease_id).collect::<Vec<_>>(), [second.lease.0], "{key}");
        assert!(!third.try_lock(&[key], EXCLUSIVE).await.unwrap().acquired, "{key}: held by the second");
        second.unlock(second_hold).await.unwrap();
        let got = third.try_lock(&[key], EXCLUSIVE).await.unwrap();
        assert!(got.acquired, "{key}: free once both are released");
        third.unlock(&got.handle).await.unwrap();
    }
    instance.shutdown().await;
}

/// A request node whose data is not a lock record (written behind zkcoord's back) does not
/// break Holders or TryLock: its holder is shown with no owner and lease 0, and the key is
/// released and granted as usual.
#[tokio::test]
async fn an_undecodable_lock_node_does_not_break_holders() {
    let zk = support::zk::shared();
    let ns = support::namespace("lock-junk");
    let instance = support::start_zkcoord(&zk.hosts(), &ns).await;
    let channel = support::channel(instance.addr()).await;
    let (a, b) = (Locker::granted(&channel, "a", LONG).await, Locker::granted(&channel, "b", LONG).await);
    let held = a.lock(&["rec"], EXCLUSIVE, 0).await.unwrap();
    let zk_client = support::zk_client(&zk.hosts()).await;
    let nodes = queued(&zk_client, &ns, "rec").await;
    assert_eq!(nodes.len(), 1);
    zk_client.set_data(&format!("{ns}/locks/rec/{}", nodes[0]), b"\xff junk", None).await.unwrap();

    let holders = b.holders("rec", false).await;
    assert_eq!(holders.len(), 1);
    let holder = &holders[0].holders[..];
    assert_eq!(holder.len(), 1, "{holder:?}");
    assert_eq!((holder[0].owner.as_str(), holder[0].lease_id), ("", 0));
    assert_eq!(holder[0].fencing_token, held.tokens[0].fencing_token);
    let tried = b.try_lock(&["rec"], EXCLUSIVE).await.unwrap();
    assert!(!tried.acquired);
    assert_eq!(tried.blocked[0].holders.len(), 1);

    a.unlock(&held.handle).await.unwrap();
    assert!(b.try_lock(&["rec"], EXCLUSIVE).await.unwrap().acquired);
    instance.shutdown().await;
}
