//! Shard groups against real ZooKeeper and two zkcoord instances: balanced, sticky assignment;
//! two-phase handoffs; and, sampled throughout, the rule that no shard is ever validly owned by
//! two members at once (each member's ownerships are what its last confirmed heartbeat listed,
//! until that heartbeat's send time + ttl — the client rule of `KeepAliveResponse.shards`).

#![allow(clippy::unwrap_used)]

use crate::support;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio_util::sync::CancellationToken;
use tonic::{Code, transport::Channel};
use zkcoord::pb::v1::{self as pb, lease_client::LeaseClient, shards_client::ShardsClient};

const WAIT: Duration = Duration::from_secs(30);
/// The members' lease ttl.
pub(crate) const TTL: Duration = Duration::from_secs(2);

/// What a member may act on: `(shard → epoch)` from its last confirmed heartbeat, valid until
/// `until` — except what it released: a client that released `(shard, epoch)` never acts on it
/// again, whatever a heartbeat answer in flight still lists (the client rule of Release).
#[derive(Clone, Debug, Default)]
pub(crate) struct Validity {
    shards: BTreeMap<u32, u64>,
    until: Option<Instant>,
    released: std::collections::HashSet<(u32, u64)>,
}

impl Validity {
    fn valid_now(&self) -> BTreeMap<u32, u64> {
        if self.until.is_some_and(|u| Instant::now() < u) { self.shards.clone() } else { BTreeMap::new() }
    }
}

/// A test member: its lease, a heartbeat loop naming the group, and (unless it ignores
/// revocations) a Watch stream that releases every revoked shard. Other areas' tests use it too.
pub(crate) struct Member {
    id: String,
    pub(crate) lease_id: i64,
    secret: String,
    pub(crate) validity: Arc<Mutex<Validity>>,
    serving: Arc<std::sync::atomic::AtomicBool>,
    stop: CancellationToken,
}

impl Member {
    pub(crate) async fn join(
        channel: &Channel,
        group: &str,
        id: &str,
        shards: u32,
        weight: u32,
        releases: bool,
    ) -> Self {
        let lease = support::lease::grant(channel, id, TTL).await;
        let key = pb::MemberKey {
            group: group.into(),
            member_id: id.into(),
            lease: support::lease::lease_ref(lease.lease_id, &lease.secret),
        };
        ShardsClient::new(channel.clone())
            .join(pb::JoinRequest { key: Some(key.clone()), shard_count: shards, weight, labels: Default::default() })
            .await
            .unwrap();
        let validity = Arc::new(Mutex::new(Validity::default()));
        let stop = CancellationToken::new();
        let serving = Arc::new(std::sync::atomic::AtomicBool::new(true));
        tokio::spawn(heartbeats(channel.clone(), key.clone(), validity.clone(), serving.clone(), stop.clone()));
        if releases {
            tokio::spawn(release_revoked(channel.clone(), key, validity.clone(), stop.clone()));
        }
        Self { id: id.into(), lease_id: lease.lease_id, secret: lease.secret, validity, serving, stop }
    }

    fn key(&self, group: &str) -> pb::MemberKey {
        pb::MemberKey {
            group: group.into(),
            member_id: self.id.clone(),
            lease: support::lease::lease_ref(self.lease_id, &self.secret),
        }
    }

    pub(crate) fn valid(&self) -> BTreeMap<u32, u64> {
        self.validity.lock().unwrap().valid_now()
    }

    /// Stops heartbeating and watching: a crash, as far as zkcoord can tell.
    fn crash(&self) {
        self.stop.cancel();
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn heartbeats(
    channel: Channel,
    key: pb::MemberKey,
    validity: Arc<Mutex<Validity>>,
    serving: Arc<std::sync::atomic::AtomicBool>,
    stop: CancellationToken,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let request = |key: &pb::MemberKey| pb::KeepAliveRequest {
        lease: key.lease.clone(),
        shard_groups: vec![key.group.clone()],
        health: Some(pb::Health {
            status: if serving.load(std::sync::atomic::Ordering::SeqCst) {
                pb::HealthStatus::Serving
            } else {
                pb::HealthStatus::NotServing
            }
            .into(),
            checks: vec![],
        }),
        ..Default::default()
    };
    // The server answers the call once it has the first heartbeat: send it before awaiting.
    let mut sent = Instant::now();
    tx.send(request(&key)).await.unwrap();
    let mut answers = LeaseClient::new(channel)
        .keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let mut first = true;
    loop {
        if !first {
            sent = Instant::now();
            if tx.send(request(&key)).await.is_err() {
                return;
            }
        }
        first = false;
        let answer = tokio::select! {
            () = stop.cancelled() => return,
            answer = answers.message() => answer,
        };
        let Ok(Some(answer)) = answer else { return };
        if answer.confirmed {
            let mut shards = BTreeMap::new();
            for owned in answer.shards.iter().filter(|o| o.group == key.group && o.member_id == key.member_id) {
                for range in &owned.ranges {
                    for shard in range.first..=range.last {
                        shards.insert(shard, range.epoch);
                    }
                }
            }
            let mut validity = validity.lock().unwrap();
            shards.retain(|shard, epoch| !validity.released.contains(&(*shard, *epoch)));
            validity.shards = shards;
            validity.until = Some(sent + TTL);
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(TTL / 8) => {}
        }
    }
}

async fn release_revoked(
    channel: Channel,
    key: pb::MemberKey,
    validity: Arc<Mutex<Validity>>,
    stop: CancellationToken,
) {
    let mut client = ShardsClient::new(channel);
    let Ok(stream) = client.watch(pb::WatchRequest { key: Some(key.clone()) }).await else { return };
    let mut stream = stream.into_inner();
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => return,
            message = stream.message() => message,
        };
        let Ok(Some(message)) = message else { return };
        let revoked: Vec<pb::ReleasedShard> = message
            .events
            .iter()
            .filter(|e| e.kind() == pb::shard_event::Kind::Revoke)
            .map(|e| pb::ReleasedShard { shard: e.shard, epoch: e.epoch })
            .collect();
        if !revoked.is_empty() {
            // Stop acting on them first, for good.
            {
                let mut v = validity.lock().unwrap();
                for r in &revoked {
                    v.released.insert((r.shard, r.epoch));
                    if v.shards.get(&r.shard) == Some(&r.epoch) {
                        v.shards.remove(&r.shard);
                    }
                }
            }
            let _ = client.release(pb::ReleaseRequest { key: Some(key.clone()), shards: revoked }).await;
        }
    }
}

/// Samples every member's valid ownerships every 5 ms until stopped; fails on any shard valid
/// for two members at once (the per-shard check of the fault-injection suite's checker).
pub(crate) fn check_exclusive(
    members: Vec<Arc<Mutex<Validity>>>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut samples = 0;
        while !stop.is_cancelled() {
            let mut owners: BTreeMap<u32, usize> = BTreeMap::new();
            for (i, member) in members.iter().enumerate() {
                for shard in member.lock().unwrap().valid_now().keys() {
                    if let Some(other) = owners.insert(*shard, i) {
                        panic!("shard {shard} valid for members {other} and {i} at once");
                    }
                }
            }
            samples += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        samples
    })
}

async fn owned_counts(members: &[&Member]) -> Vec<usize> {
    members.iter().map(|m| m.valid().len()).collect()
}

async fn assignment(channel: &Channel, group: &str) -> pb::AssignmentResponse {
    ShardsClient::new(channel.clone())
        .assignment(pb::AssignmentRequest { group: group.into() })
        .await
        .unwrap()
        .into_inner()
}

/// Members joining one by one converge to a balanced assignment, a newcomer takes at most its
/// share and only from others, and their heartbeats list exactly what the table says.
#[tokio::test]
async fn joins_converge_to_a_balanced_sticky_assignment_with_one_valid_owner_per_shard() {
    let zk = support::zk::shared();
    let ns = support::namespace("shards-balance");
    let a = support::start_zkcoord(&zk.hosts(), &ns).await;
    let b = support::start_zkcoord(&zk.hosts(), &ns).await;
    let (ca, cb) = (support::channel(a.addr()).await, support::channel(b.addr()).await);
    let group = "flows";
    let m1 = Member::join(&ca, group, "w1", 64, 1, true).await;
    let m2 = Member::join(&cb, group, "w2", 64, 1, true).await;
    let m3 = Member::join(&ca, group, "w3", 64, 2, true).await;
    let stop = CancellationToken::new();
    let checker = check_exclusive(vec![m1.validity.clone(), m2.validity.clone(), m3.validity.clone()], stop.clone());
    support::eventually(WAIT, "weighted balance 16/16/32", || async {
        owned_counts(&[&m1, &m2, &m3]).await == vec![16, 16, 32]
    })
    .await;
    let before: Vec<BTreeMap<u32, u64>> = [&m1, &m2, &m3].iter().map(|m| m.valid()).collect();
    let table = assignment(&cb, group).await;
    assert_eq!(table.shard_count, 64);
    assert!(table.ranges.len() <= 4, "contiguous: {:?}", table.ranges);

    let m4 = Member::join(&cb, group, "w4", 64, 1, true).await;
    let stop4 = CancellationToken::new();
    let checker4 = check_exclusive(
        vec![m1.validity.clone(), m2.validity.clone(), m3.validity.clone(), m4.validity.clone()],
        stop4.clone(),
    );
    support::eventually(WAIT, "balance with a fourth member", || async {
        let counts = owned_counts(&[&m1, &m2, &m3, &m4]).await;
        counts.iter().sum::<usize>() == 64 && counts[3] >= 12
    })
    .await;
    let after: Vec<BTreeMap<u32, u64>> = [&m1, &m2, &m3].iter().map(|m| m.valid()).collect();
    for (old, new) in before.iter().zip(&after) {
        for (shard, epoch) in new {
            assert_eq!(old.get(shard), Some(epoch), "an old member gained shard {shard}");
        }
    }
    let moved: usize = before.iter().zip(&after).map(|(old, new)| old.len() - new.len()).sum();
    assert!(moved <= 64usize.div_ceil(4) + 1, "moved {moved}");
    assert_eq!(moved, m4.valid().len());
    for (shard, epoch) in m4.valid() {
        let old = before.iter().find_map(|b| b.get(&shard)).copied().unwrap();
        assert!(epoch > old, "shard {shard}: new epoch {epoch} not above {old}");
    }
    // Keep sampling until every validity from before the handoffs has run out.
    tokio::time::sleep(TTL).await;
    stop.cancel();
    stop4.cancel();
    assert!(checker.await.unwrap() > 10);
    assert!(checker4.await.unwrap() > 10);
}

/// A member that never releases keeps its revoked shards until its validity has run out; only
/// then do they move, and at no moment are they valid for both.
#[tokio::test]
async fn a_member_ignoring_revoke_loses_its_shards_only_after_its_validity_lapses() {
    let zk = support::zk::shared();
    let ns = support::namespace("shards-ignore");
    let a = support::start_zkcoord(&zk.hosts(), &ns).await;
    let ca = support::channel(a.addr()).await;
    let group = "stubborn";
    let m1 = Member::join(&ca, group, "stubborn", 8, 1, false).await;
    support::eventually(WAIT, "the first member owns everything", || async { m1.valid().len() == 8 }).await;
    let stop = CancellationToken::new();
    let joined = Instant::now();
    let m2 = Member::join(&ca, group, "newcomer", 8, 1, true).await;
    let checker = check_exclusive(vec![m1.validity.clone(), m2.validity.clone()], stop.clone());
    support::eventually(WAIT, "the newcomer gets half", || async { m2.valid().len() == 4 }).await;
    let waited = joined.elapsed();
    assert!(waited >= TTL, "shards moved {waited:?} after the join, before the old owner's validity ran out");
    stop.cancel();
    assert!(checker.await.unwrap() > 10);
}

/// A cooperating member's revocations complete at once (Release), far faster than the ttl.
#[tokio::test]
async fn released_shards_move_at_once_and_drain_empties_a_member_then_undrain_rebalances() {
    let zk = support::zk::shared();
    let ns = support::namespace("shards-drain");
    let a = support::start_zkcoord(&zk.hosts(), &ns).await;
    let ca = support::channel(a.addr()).await;
    let group = "drained";
    let m1 = Member::join(&ca, group, "d1", 10, 1, true).await;
    let m2 = Member::join(&ca, group, "d2", 10, 1, true).await;
    let stop = CancellationToken::new();
    let checker = check_exclusive(vec![m1.validity.clone(), m2.validity.clone()], stop.clone());
    support::eventually(WAIT, "5/5", || async { owned_counts(&[&m1, &m2]).await == vec![5, 5] }).await;
    let mut shards = ShardsClient::new(ca.clone());
    let drained = Instant::now();
    shards.drain(pb::DrainRequest { group: group.into(), member_id: "d1".into() }).await.unwrap();
    support::eventually(WAIT, "d1 drained", || async { owned_counts(&[&m1, &m2]).await == vec![0, 10] }).await;
    assert!(drained.elapsed() < TTL, "a released handoff waited {:?}", drained.elapsed());
    let members =
        shards.members(pb::MembersRequest { group: group.into(), ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(members.drained, vec!["d1".to_owned()]);
    shards.undrain(pb::UndrainRequest { group: group.into(), member_id: "d1".into() }).await.unwrap();
    support::eventually(WAIT, "rebalanced", || async { owned_counts(&[&m1, &m2]).await == vec![5, 5] }).await;
    stop.cancel();
    assert!(checker.await.unwrap() > 10);
}

/// A member that stops heartbeating (killed) has its shards re-assigned once its lease
/// expired; no other shard moves.
#[tokio::test]
async fn a_crashed_members_shards_move_and_no_other_shard_does() {
    let zk = support::zk::shared();
    let ns = support::namespace("shards-crash");
    let a = support::start_zkcoord(&zk.hosts(), &ns).await;
    let b = support::start_zkcoord(&zk.hosts(), &ns).await;
    let (ca, cb) = (support::channel(a.addr()).await, support::channel(b.addr()).await);
    let group = "crash";
    let m1 = Member::join(&ca, group, "c1", 30, 1, true).await;
    let m2 = Member::join(&cb, group, "c2", 30, 1, true).await;
    let m3 = Member::join(&ca, group, "c3", 30, 1, true).await;
    support::eventually(WAIT, "10/10/10", || async { owned_counts(&[&m1, &m2, &m3]).await == vec![10, 10, 10] }).await;
    let stop = CancellationToken::new();
    let checker = check_exclusive(vec![m1.validity.clone(), m2.validity.clone(), m3.validity.clone()], stop.clone());
    let (kept1, kept2) = (m1.valid(), m2.valid());
    let crashed = Instant::now();
    m3.crash();
    support::eventually(WAIT, "15/15", || async { owned_counts(&[&m1, &m2]).await == vec![15, 15] }).await;
    let took = crashed.elapsed();
    eprintln!("a crashed member's shards were re-owned {took:?} after its last heartbeat (ttl {TTL:?})");
    assert!(took < TTL + Duration::from_secs(3), "re-owned only after {took:?}");
    for (kept, now) in [(kept1, m1.valid()), (kept2, m2.valid())] {
        for (shard, epoch) in kept {
            assert_eq!(now.get(&shard), Some(&epoch), "shard {shard} of a live member moved");
        }
    }
    stop.cancel();
    assert!(checker.await.unwrap() > 10);
}

/// Bad input gets clear statuses and writes nothing.
#[tokio::test]
async fn bad_input_gets_clear_statuses() {
    let zk = support::zk::shared();
    let ns = support::namespace("shards-bad");
    let a = support::start_zkcoord(&zk.hosts(), &ns).await;
    let ca = support::channel(a.addr()).await;
    let mut shards = ShardsClient::new(ca.clone());
    let lease = support::lease::grant(&ca, "bad", Duration::from_secs(10)).await;
    let key = |group: &str, member: &str, secret: &str| pb::MemberKey {
        group: group.into(),
        member_id: member.into(),
        lease: support::lease::lease_ref(lease.lease_id, secret),
    };
    let join = |key: pb::MemberKey, shard_count: u32| pb::JoinRequest {
        key: Some(key),
        shard_count,
        weight: 1,
        labels: Default::default(),
    };
    for (request, code) in [
        (join(key("g", "m", &lease.secret), 0), Code::InvalidArgument),
        (join(key("g", "m", &lease.secret), 65_537), Code::InvalidArgument),
        (join(key("../x", "m", &lease.secret), 4), Code::InvalidArgument),
        (join(key("g", "a/b", &lease.secret), 4), Code::InvalidArgument),
        (join(key("g", "m", "wrong-secret-wrong-secret"), 4), Code::PermissionDenied),
    ] {
        let status = shards.join(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
    }
    // Nothing was written for the refused joins: the group does not exist.
    let status = shards.assignment(pb::AssignmentRequest { group: "g".into() }).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    shards.join(join(key("g", "m", &lease.secret), 4)).await.unwrap();
    let status = shards.join(join(key("g", "m2", &lease.secret), 5)).await.unwrap_err();
    assert_eq!((status.code(), status.message()), (Code::FailedPrecondition, "the group has another shard count"));
    let other = support::lease::grant(&ca, "other", Duration::from_secs(10)).await;
    let taken = pb::MemberKey { lease: support::lease::lease_ref(other.lease_id, &other.secret), ..key("g", "m", "") };
    let status = shards.join(join(taken, 4)).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let release = |shard: u32, epoch: u64| pb::ReleaseRequest {
        key: Some(key("g", "m", &lease.secret)),
        shards: vec![pb::ReleasedShard { shard, epoch }],
    };
    let status = shards.release(release(9, 1)).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let status = shards.release(release(0, 1)).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "old epoch: {status:?}");
    let status = shards.release(release(0, 0)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let status =
        shards.watch(pb::WatchRequest { key: Some(key("g", "nobody", &lease.secret)) }).await.map(|_| ()).unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let status = shards.drain(pb::DrainRequest { group: "missing".into(), member_id: "m".into() }).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}

/// Leave hands a cooperating member's shards off first, then ends its membership; its lease
/// lives on.
#[tokio::test]
async fn leave_hands_off_then_ends_the_membership() {
    let zk = support::zk::shared();
    let ns = support::namespace("shards-leave");
    let a = support::start_zkcoord(&zk.hosts(), &ns).await;
    let ca = support::channel(a.addr()).await;
    let group = "leaving";
    let m1 = Member::join(&ca, group, "l1", 6, 1, true).await;
    let m2 = Member::join(&ca, group, "l2", 6, 1, true).await;
    let stop = CancellationToken::new();
    let checker = check_exclusive(vec![m1.validity.clone(), m2.validity.clone()], stop.clone());
    support::eventually(WAIT, "3/3", || async { owned_counts(&[&m1, &m2]).await == vec![3, 3] }).await;
    let mut shards = ShardsClient::new(ca.clone());
    let left = shards.leave(pb::LeaveRequest { key: Some(m1.key(group)), wait_ms: 10_000 }).await.unwrap().into_inner();
    assert!(left.left);
    support::eventually(WAIT, "l2 owns all", || async { owned_counts(&[&m1, &m2]).await == vec![0, 6] }).await;
    let members =
        shards.members(pb::MembersRequest { group: group.into(), ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(members.members.iter().map(|m| m.member_id.as_str()).collect::<Vec<_>>(), vec!["l2"]);
    // Idempotent.
    let again = shards.leave(pb::LeaveRequest { key: Some(m1.key(group)), wait_ms: 100 }).await.unwrap().into_inner();
    assert!(again.left);
    stop.cancel();
    assert!(checker.await.unwrap() > 10);
}

/// A membership is bound to its lease: TimeToLive lists it, and revoking the lease ends it.
#[tokio::test]
async fn a_membership_is_bound_to_its_lease() {
    let zk = support::zk::shared();
    let ns = support::namespace("shards-bound");
    let a = support::start_zkcoord(&zk.hosts(), &ns).await;
    let ca = support::channel(a.addr()).await;
    let group = "bound";
    let m1 = Member::join(&ca, group, "b1", 4, 1, true).await;
    let m2 = Member::join(&ca, group, "b2", 4, 1, true).await;
    support::eventually(WAIT, "2/2", || async { owned_counts(&[&m1, &m2]).await == vec![2, 2] }).await;
    let mut leases = LeaseClient::new(ca.clone());
    let ttl = leases.time_to_live(pb::TimeToLiveRequest { lease_id: m1.lease_id }).await.unwrap().into_inner();
    assert_eq!(
        ttl.bindings,
        vec![pb::Binding { kind: pb::binding::Kind::ShardMember.into(), name: group.into(), id: "b1".into() }]
    );
    m1.crash();
    leases.revoke(pb::RevokeRequest { lease: support::lease::lease_ref(m1.lease_id, &m1.secret) }).await.unwrap();
    support::eventually(WAIT, "b1's membership ended with its lease", || async {
        let members = ShardsClient::new(ca.clone())
            .members(pb::MembersRequest { group: group.into(), ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        members.members.iter().map(|m| m.member_id.clone()).collect::<Vec<_>>() == vec!["b2".to_owned()]
    })
    .await;
    support::eventually(WAIT, "b2 owns all", || async { m2.valid().len() == 4 }).await;
}

/// A member that reports NOT_SERVING gets no shards and has its shards handed off; healthy
/// again, it gets its share back.
#[tokio::test]
async fn an_unhealthy_member_hands_its_shards_off_and_gets_them_back_when_healthy() {
    let zk = support::zk::shared();
    let ns = support::namespace("shards-health");
    let a = support::start_zkcoord(&zk.hosts(), &ns).await;
    let ca = support::channel(a.addr()).await;
    let group = "health";
    let m1 = Member::join(&ca, group, "h1", 8, 1, true).await;
    let m2 = Member::join(&ca, group, "h2", 8, 1, true).await;
    let stop = CancellationToken::new();
    let checker = check_exclusive(vec![m1.validity.clone(), m2.validity.clone()], stop.clone());
    support::eventually(WAIT, "4/4", || async { owned_counts(&[&m1, &m2]).await == vec![4, 4] }).await;
    m1.serving.store(false, std::sync::atomic::Ordering::SeqCst);
    support::eventually(WAIT, "h2 owns all", || async { owned_counts(&[&m1, &m2]).await == vec![0, 8] }).await;
    m1.serving.store(true, std::sync::atomic::Ordering::SeqCst);
    support::eventually(WAIT, "4/4 again", || async { owned_counts(&[&m1, &m2]).await == vec![4, 4] }).await;
    stop.cancel();
    assert!(checker.await.unwrap() > 10);
}

/// A ZooKeeper member crash (the leader of the ensemble) changes no assignment: owners and
/// epochs stay, and no shard is ever valid for two members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zookeeper_member_crash_changes_no_assignment() {
    let mut ensemble = support::zk::Ensemble::start(3);
    let ns = support::namespace("shards-zk-crash");
    let a = support::start_zkcoord(&ensemble.hosts(), &ns).await;
    let b = support::start_zkcoord(&ensemble.hosts(), &ns).await;
    let (ca, cb) = (support::channel(a.addr()).await, support::channel(b.addr()).await);
    let group = "zk-crash";
    let m1 = Member::join(&ca, group, "z1", 16, 1, true).await;
    let m2 = Member::join(&cb, group, "z2", 16, 1, true).await;
    support::eventually(WAIT, "8/8", || async { owned_counts(&[&m1, &m2]).await == vec![8, 8] }).await;
    let stop = CancellationToken::new();
    let checker = check_exclusive(vec![m1.validity.clone(), m2.validity.clone()], stop.clone());
    let before = assignment(&ca, group).await.ranges;
    let leader = ensemble.leader();
    ensemble.members[leader].kill();
    // Past a re-election of the ensemble and the members' ttl: confirmed again, same table.
    tokio::time::sleep(TTL * 2).await;
    support::eventually(WAIT, "both confirmed again", || async { owned_counts(&[&m1, &m2]).await == vec![8, 8] }).await;
    let after = assignment(&cb, group).await.ranges;
    assert_eq!(before, after, "a ZooKeeper member crash moved shards");
    stop.cancel();
    assert!(checker.await.unwrap() > 10);
    ensemble.members[leader].restart();
}
