//! The Rust client's `ShardMember` against real ZooKeeper and two zkcoord instances: events,
//! the safety rule (`owns`), automatic release, an instance kill, leave.

#![allow(clippy::unwrap_used)]

use crate::support;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio_util::sync::CancellationToken;
use zkcoord_client::{Client, LeaseKeeper, LeaseOptions, OwnedShard, ShardEvent, ShardMember, ShardOptions};

const WAIT: Duration = Duration::from_secs(30);
const SHARDS: u32 = 12;

/// A worker: follows its events (releasing revoked shards by asking for the next event) and
/// publishes what `owns` allows, sampled by the test.
struct Worker {
    owned: Arc<Mutex<Vec<OwnedShard>>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<ShardMember>,
    lease: LeaseKeeper,
}

impl Worker {
    async fn start(client: &Client, group: &str, id: &str) -> Self {
        let lease = LeaseKeeper::grant(client, LeaseOptions::new(id, Duration::from_secs(2))).await.unwrap();
        let mut member = ShardMember::join(client, &lease, ShardOptions::new(group, id, SHARDS)).await.unwrap();
        let owned = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let (o, s) = (owned.clone(), stop.clone());
        let task = tokio::spawn(async move {
            loop {
                *o.lock().unwrap() = member.owned();
                tokio::select! {
                    () = s.cancelled() => {
                        // Stops working here: nothing is acted on any more.
                        o.lock().unwrap().clear();
                        return member;
                    }
                    event = member.next() => if event.is_none() { return member },
                    () = tokio::time::sleep(Duration::from_millis(5)) => {}
                }
                *o.lock().unwrap() = member.owned();
            }
        });
        Self { owned, stop, task, lease }
    }

    fn count(&self) -> usize {
        self.owned.lock().unwrap().len()
    }

    async fn into_member(self) -> (ShardMember, LeaseKeeper) {
        self.stop.cancel();
        (self.task.await.unwrap(), self.lease)
    }
}

/// Fails on any shard two workers may act on at once (each worker's `owns` view, sampled).
fn check(workers: Vec<Arc<Mutex<Vec<OwnedShard>>>>, stop: CancellationToken) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut samples = 0;
        while !stop.is_cancelled() {
            let mut seen: BTreeMap<u32, usize> = BTreeMap::new();
            for (i, w) in workers.iter().enumerate() {
                let now = tokio::time::Instant::now();
                for o in w.lock().unwrap().iter().filter(|o| o.until > now) {
                    if let Some(j) = seen.insert(o.shard, i) {
                        panic!("shard {} owned by workers {j} and {i} at once", o.shard);
                    }
                }
            }
            samples += 1;
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        samples
    })
}

#[tokio::test]
async fn members_share_shards_release_on_revoke_survive_an_instance_kill_and_leave() {
    let zk = support::zk::shared();
    let ns = support::namespace("shard-member");
    let hosts = format!("{}{}", zk.hosts(), ns);
    let mut a = support::ZkcoordProcess::spawn(&hosts, &[]);
    let b = support::ZkcoordProcess::spawn(&hosts, &[]);
    support::wait_serving(a.addr).await;
    support::wait_serving(b.addr).await;
    let client = Client::new([a.addr.to_string(), b.addr.to_string()]).unwrap();
    let group = "workers";
    let w1 = Worker::start(&client, group, "w1").await;
    support::eventually(WAIT, "w1 owns all", || async { w1.count() == SHARDS as usize }).await;
    let w2 = Worker::start(&client, group, "w2").await;
    let stop = CancellationToken::new();
    let checker = check(vec![w1.owned.clone(), w2.owned.clone()], stop.clone());
    let joined = tokio::time::Instant::now();
    support::eventually(WAIT, "6/6", || async { w1.count() == 6 && w2.count() == 6 }).await;
    // Released at once (automatic release), not after w1's validity ran out (2 s).
    assert!(joined.elapsed() < Duration::from_secs(2), "handoff took {:?}", joined.elapsed());

    // Kill the instance the client started on: the membership and assignment stay.
    let before: Vec<Vec<OwnedShard>> = vec![w1.owned.lock().unwrap().clone(), w2.owned.lock().unwrap().clone()];
    a.signal(libc::SIGKILL);
    let _ = a.wait_exit(Duration::from_secs(5));
    support::eventually(WAIT, "both still own their shards via the other instance", || async {
        w1.count() == 6 && w2.count() == 6
    })
    .await;
    let after: Vec<Vec<u32>> =
        [&w1, &w2].iter().map(|w| w.owned.lock().unwrap().iter().map(|o| o.shard).collect()).collect();
    let before_shards: Vec<Vec<u32>> = before.iter().map(|v| v.iter().map(|o| o.shard).collect()).collect();
    assert_eq!(after, before_shards, "an instance kill moved shards");

    // w1 leaves: w2 gets everything.
    let (m1, _lease1) = w1.into_member().await;
    assert!(m1.leave(Duration::from_secs(10)).await.unwrap());
    support::eventually(WAIT, "w2 owns all", || async { w2.count() == SHARDS as usize }).await;
    let owned = w2.owned.lock().unwrap().clone();
    for o in &owned {
        let first = before[1].iter().find(|b| b.shard == o.shard);
        if let Some(first) = first {
            assert_eq!(first.epoch, o.epoch, "w2's own shard {} got a new epoch", o.shard);
        }
    }
    stop.cancel();
    assert!(checker.await.unwrap() > 10);
    let _ = ShardEvent::Assigned { shard: 0, epoch: 1 };
}
