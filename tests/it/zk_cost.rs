//! What each operation costs ZooKeeper, counted, not timed: the requests a call sends (traced
//! by the `Zk` facade, [`support::requests`]) and the zxids it consumes (ZooKeeper's logged,
//! fsync'd transactions — a failed write takes one too), on a ZooKeeper server of the test's
//! own so that nothing else writes to it. Each test pins today's numbers: a change that adds a
//! request or a transaction to one of these operations fails here.

#![allow(clippy::unwrap_used)]

use crate::support;

use std::time::Duration;

use support::{
    lease::{grant, lease_ref},
    lock::{EXCLUSIVE, Locker},
    requests::{Requests, round_trips},
    zk::Standalone,
};
use tonic::{Streaming, transport::Channel};
use zkcoord::pb::v1::{self as pb, election_client::ElectionClient};

const WAIT: Duration = Duration::from_secs(20);
/// Long enough that no lease needs a heartbeat during a test.
const TTL: Duration = Duration::from_secs(120);
/// How long to let follow-up work (election watches, electors) finish before counting.
const SETTLE: Duration = Duration::from_millis(300);

/// A candidate: its id, lease and Campaign stream.
struct Candidate {
    id: String,
    lease: (i64, String),
    stream: Streaming<pb::CampaignResponse>,
}

impl Candidate {
    fn key(&self, election: &str) -> Option<pb::CandidateKey> {
        Some(pb::CandidateKey {
            election: election.into(),
            candidate_id: self.id.clone(),
            lease: lease_ref(self.lease.0, &self.lease.1),
        })
    }

    /// Reads statuses until one in `state`; returns it.
    async fn until(&mut self, state: pb::CandidateState) -> pb::CampaignResponse {
        loop {
            let status = tokio::time::timeout(WAIT, self.stream.message())
                .await
                .expect("a status in time")
                .unwrap()
                .expect("open");
            if status.state() == state {
                return status;
            }
        }
    }
}

/// Grants candidate `id` a lease through `channel` and campaigns with `priority`.
async fn campaign(channel: &Channel, election: &str, id: &str, priority: i32) -> Candidate {
    let granted = grant(channel, id, TTL).await;
    campaign_with(channel, election, id, priority, (granted.lease_id, granted.secret)).await
}

/// Campaigns candidate `id` with `priority` under `lease` (id, secret) through `channel`.
async fn campaign_with(channel: &Channel, election: &str, id: &str, priority: i32, lease: (i64, String)) -> Candidate {
    let stream = ElectionClient::new(channel.clone())
        .campaign(pb::CampaignRequest {
            key: Some(pb::CandidateKey {
                election: election.into(),
                candidate_id: id.into(),
                lease: lease_ref(lease.0, &lease.1),
            }),
            value: id.as_bytes().to_vec(),
            priority,
            preempt: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    Candidate { id: id.into(), lease, stream }
}

/// The ops of the requests of one call of gRPC method `rpc` counted since the last take, and
/// the round trips they took one after the other.
fn call(requests: &Requests, rpc: &str) -> (Vec<String>, usize) {
    let calls = requests.take_calls(rpc);
    (calls.iter().map(|r| r.op.clone()).collect(), round_trips(&calls))
}

/// The last zxid of `zk`.
fn zxid(zk: &Standalone) -> u64 {
    zk.server.zxid().unwrap()
}

/// A ZooKeeper server of the test's own, a namespace, a zkcoord instance there and a channel to it; the
/// request counter must be installed first (on the test's thread).
async fn setup(name: &str) -> (Standalone, String, zkcoord::server::Instance, Channel) {
    let zk = Standalone::start();
    let ns = support::namespace(name);
    let instance = support::start_zkcoord(&zk.hosts(), &ns).await;
    let channel = support::channel(instance.addr()).await;
    (zk, ns, instance, channel)
}

/// Campaigns `id` through `channel` with a lease granted there and waits until it is told
/// `state`; returns it with the zxids, the Campaign call's requests and their round trips it
/// took (the grant not counted).
async fn counted_campaign(
    zk: &Standalone,
    requests: &Requests,
    channel: &Channel,
    (e, id, priority): (&str, &str, i32),
    state: pb::CandidateState,
) -> (Candidate, u64, Vec<String>, usize) {
    let granted = grant(channel, id, TTL).await;
    tokio::time::sleep(SETTLE).await;
    requests.take();
    let before = zxid(zk);
    let mut candidate = campaign_with(channel, e, id, priority, (granted.lease_id, granted.secret)).await;
    candidate.until(state).await;
    tokio::time::sleep(SETTLE).await;
    let zxids = zxid(zk) - before;
    let (ops, trips) = call(requests, "Campaign");
    println!("campaign {id}: {zxids} zxids, requests {ops:?} in {trips} round trips");
    (candidate, zxids, ops, trips)
}

/// A Campaign in an election that exists (every Campaign but the first) is one transaction:
/// the lease is read (with the election record, on an instance that does not follow the
/// election yet), then the candidacy created and read back in one round trip (the read
/// pipelined behind the transaction on the session). It used to try to create the election
/// first — a transaction that fails, and still takes a zxid, on every Campaign after the
/// first — then read the election record, then create the candidacy, then read it back: 2
/// zxids and 5 requests in 5 round trips.
#[tokio::test]
async fn a_campaign_in_an_existing_election_is_one_transaction() {
    let (requests, _counting) = Requests::install();
    let (zk, ns, instance, channel) = setup("cost-campaign").await;
    let e = "costly";
    // The first creates the election (a transaction of its own, after reading the tenant's
    // term floor, which keeps terms growing across the cleanup of empty elections) and is
    // elected (another).
    let (leader, zxids, ops, trips) =
        counted_campaign(&zk, &requests, &channel, (e, "c0", 0), pb::CandidateState::Elected).await;
    assert_eq!(zxids, 3, "zxids of the first campaign, with its election");
    let first = ["get_data", "get_data", "get_data", "multi", "multi", "get_data"];
    assert_eq!(ops, first, "requests of the first campaign");
    assert_eq!(trips, 4, "round trips of the first campaign");
    let mut queued = vec![leader];
    for i in 1..=3 {
        let (candidate, zxids, ops, trips) =
            counted_campaign(&zk, &requests, &channel, (e, &format!("c{i}"), 10), pb::CandidateState::Queued).await;
        assert_eq!(zxids, 1, "zxids of campaign {i}");
        assert_eq!(ops, ["get_data", "multi", "get_data"], "requests of campaign {i}");
        assert_eq!(trips, 2, "round trips of campaign {i}");
        queued.push(candidate);
    }
    // An instance that does not follow the election yet reads its record with the lease.
    let other = support::start_zkcoord(&zk.hosts(), &ns).await;
    let on_other = support::channel(other.addr()).await;
    let (candidate, zxids, ops, trips) =
        counted_campaign(&zk, &requests, &on_other, (e, "elsewhere", 10), pb::CandidateState::Queued).await;
    assert_eq!(zxids, 1, "zxids of a campaign on another instance");
    assert_eq!(ops, ["get_data", "get_data", "multi", "get_data"], "requests of a campaign on another instance");
    assert_eq!(trips, 2, "round trips of a campaign on another instance");
    queued.push(candidate);
    other.shutdown().await;
    instance.shutdown().await;
}

/// Resign withdraws a candidacy in one transaction and reads nothing else for a lease attached
/// to the instance (it authenticates from memory, as Lock does); with a term, it reads the
/// election record once — unless the instance follows the election and its view shows the
/// caller leading that term: then one transaction, conditional on that record's version,
/// deletes the candidacy and elects the successor. One zxid and one request per handoff (it
/// used to be two zxids: the resignation, then an elector's write). It used to read the lease and the candidate (and the record) first:
/// 3 requests in 2 round trips without a term, 4 in 2 with.
#[tokio::test]
async fn resign_is_one_transaction_and_reads_only_the_election_record() {
    let (requests, _counting) = Requests::install();
    let (zk, _ns, instance, channel) = setup("cost-resign").await;
    let e = "resigning";
    let mut leader = campaign(&channel, e, "c0", 0).await;
    let term = leader.until(pb::CandidateState::Elected).await.term;
    let mut next = campaign(&channel, e, "c1", 1).await;
    next.until(pb::CandidateState::Queued).await;
    let mut last = campaign(&channel, e, "c2", 2).await;
    last.until(pb::CandidateState::Queued).await;
    let mut client = ElectionClient::new(channel.clone());

    // A candidate that does not lead.
    tokio::time::sleep(SETTLE).await;
    requests.take();
    let before = zxid(&zk);
    client.resign(pb::ResignRequest { key: last.key(e), term: 0, stay_candidate: false }).await.unwrap();
    last.until(pb::CandidateState::Deposed).await;
    tokio::time::sleep(SETTLE).await;
    let (zxids, (ops, trips)) = (zxid(&zk) - before, call(&requests, "Resign"));
    println!("resign of a candidate: {zxids} zxids, requests {ops:?} in {trips} round trips");
    assert_eq!(zxids, 1, "resign of a candidate");
    assert_eq!(ops, ["multi"], "resign of a candidate");
    assert_eq!(trips, 1, "resign of a candidate");

    // The leader, with its term: its successor is elected in the same transaction (the
    // election record's write is part of it; no elector writes after it).
    let before = zxid(&zk);
    client.resign(pb::ResignRequest { key: leader.key(e), term, stay_candidate: false }).await.unwrap();
    let elected = next.until(pb::CandidateState::Elected).await;
    assert_eq!(elected.term, term + 1);
    tokio::time::sleep(SETTLE).await;
    let (zxids, (ops, trips)) = (zxid(&zk) - before, call(&requests, "Resign"));
    println!("resign of the leader: {zxids} zxids, requests {ops:?} in {trips} round trips");
    assert_eq!(zxids, 1, "resign of the leader");
    assert_eq!(ops, ["multi"], "resign of the leader: its term checked by the view's record version");
    assert_eq!(trips, 1, "resign of the leader");

    // Refused: nothing written, and still judged on the lease first.
    let wrong = pb::CandidateKey { lease: lease_ref(next.lease.0, "not-the-secret"), ..next.key(e).unwrap() };
    let refused = client.resign(pb::ResignRequest { key: Some(wrong), term: 0, stay_candidate: false }).await;
    assert_eq!(refused.unwrap_err().code(), tonic::Code::PermissionDenied);
    let gone = client.resign(pb::ResignRequest { key: leader.key(e), term: 0, stay_candidate: false }).await;
    assert_eq!(gone.unwrap_err().message(), "not a candidate");
    instance.shutdown().await;
}

/// Proclaim reads the election record and the candidacy in one round trip, then writes one
/// transaction; the lease attached to the instance is authenticated from memory. It used to
/// read the lease, the record and the candidacy one after the other: 4 requests in 4 round
/// trips.
#[tokio::test]
async fn proclaim_is_two_reads_in_one_round_trip_and_one_transaction() {
    let (requests, _counting) = Requests::install();
    let (zk, _ns, instance, channel) = setup("cost-proclaim").await;
    let e = "proclaiming";
    let mut leader = campaign(&channel, e, "c0", 0).await;
    let term = leader.until(pb::CandidateState::Elected).await.term;
    tokio::time::sleep(SETTLE).await;
    requests.take();
    let before = zxid(&zk);
    ElectionClient::new(channel.clone())
        .proclaim(pb::ProclaimRequest { key: leader.key(e), term, value: b"new".to_vec() })
        .await
        .unwrap();
    tokio::time::sleep(SETTLE).await;
    let (zxids, (ops, trips)) = (zxid(&zk) - before, call(&requests, "Proclaim"));
    println!("proclaim: {zxids} zxids, requests {ops:?} in {trips} round trips");
    assert_eq!(zxids, 1);
    assert_eq!(ops, ["get_data", "get_data", "multi"]);
    assert_eq!(trips, 2);
    assert_eq!(support::leader(&channel, e).await.unwrap().value, b"new");
    instance.shutdown().await;
}

/// A deposed leader's acknowledgement (Resign with `stay_candidate`) reads only its candidacy
/// before it elects the successor (one transaction); the lease attached to the instance is
/// authenticated from memory. It used to read the lease too.
#[tokio::test]
async fn an_acknowledged_deposition_reads_only_the_candidacy() {
    let (requests, _counting) = Requests::install();
    let (zk, _ns, instance, channel) = setup("cost-ack").await;
    let e = "acknowledging";
    let mut leader = campaign(&channel, e, "c0", 0).await;
    let term = leader.until(pb::CandidateState::Elected).await.term;
    let mut next = campaign(&channel, e, "c1", 1).await;
    next.until(pb::CandidateState::Queued).await;
    let transfer = {
        let mut client = ElectionClient::new(channel.clone());
        tokio::spawn(
            async move { client.transfer(pb::TransferRequest { election: e.into(), ..Default::default() }).await },
        )
    };
    leader.until(pb::CandidateState::Deposed).await;
    tokio::time::sleep(SETTLE).await;
    requests.take();
    let before = zxid(&zk);
    ElectionClient::new(channel.clone())
        .resign(pb::ResignRequest { key: leader.key(e), term, stay_candidate: true })
        .await
        .unwrap();
    next.until(pb::CandidateState::Elected).await;
    transfer.await.unwrap().unwrap();
    tokio::time::sleep(SETTLE).await;
    let (zxids, (ops, trips)) = (zxid(&zk) - before, call(&requests, "Resign"));
    println!("acknowledgement: {zxids} zxids, requests {ops:?} in {trips} round trips");
    assert_eq!(zxids, 1);
    assert_eq!(ops, ["get_data", "multi"]);
    assert_eq!(trips, 2);
    instance.shutdown().await;
}

/// An uncontended Lock is one transaction and a listing of the key's queue, sent together in
/// one round trip (the listing pipelined behind the transaction on the session); its Unlock is
/// one transaction. The Lock used to wait for the transaction before it listed the queue: two
/// round trips. On a key without a znode (first use, or reaped by ZooKeeper once empty) the
/// listing also tells which key to create: 3 round trips, where it used to take 5 (the same 5
/// requests).
#[tokio::test]
async fn an_uncontended_lock_cycle_is_two_transactions_and_the_lock_one_round_trip() {
    let (requests, _counting) = Requests::install();
    let (zk, ns, instance, channel) = setup("cost-lock").await;
    // A key whose znode ZooKeeper never reaps (a container is deleted some time after it empties).
    let raw = support::zk_client(&zk.hosts()).await.chroot(ns.as_str()).unwrap();
    let anyone = zookeeper_client::CreateMode::Persistent.with_acls(zookeeper_client::Acls::anyone_all());
    raw.create("/locks/pinned", &[], &anyone).await.unwrap();
    let locker = Locker::granted(&channel, "locker", TTL).await;
    tokio::time::sleep(SETTLE).await;

    let cycle = |key: &'static str| {
        let (zk, requests, locker) = (&zk, &requests, &locker);
        async move {
            requests.take();
            let before = zxid(zk);
            let handle = locker.lock(&[key], EXCLUSIVE, 10_000).await.unwrap().handle;
            let (locked, lock) = (zxid(zk) - before, call(requests, "Lock"));
            let before = zxid(zk);
            locker.unlock(&handle).await.unwrap();
            let (unlocked, unlock) = (zxid(zk) - before, call(requests, "Unlock"));
            println!("lock {key}: {locked} zxids, {lock:?} round trips; unlock: {unlocked} zxids, {unlock:?}");
            ((locked, lock), (unlocked, unlock))
        }
    };
    let ops = |ops: &[&str]| ops.iter().map(|op| (*op).to_owned()).collect::<Vec<_>>();
    let unlock = (1, (ops(&["multi"]), 1));
    for _ in 0..3 {
        let ((zxids, lock), unlocked) = cycle("pinned").await;
        assert_eq!(zxids, 1, "zxids of a lock");
        assert_eq!(lock, (ops(&["multi", "list_children"]), 1), "requests and round trips of a lock");
        assert_eq!(unlocked, unlock);
    }
    let ((zxids, lock), unlocked) = cycle("fresh").await;
    // The transaction fails for want of the key's znode (still a zxid), which is created.
    assert_eq!(zxids, 3, "zxids of a lock on a new key");
    assert_eq!(lock, (ops(&["multi", "list_children", "create", "multi", "list_children"]), 3), "a new key");
    assert_eq!(unlocked, unlock);
    instance.shutdown().await;
}

/// A request that had to wait writes its grant time (for Holders' `since_unix_ms`) only once
/// its hold has lasted a second: a short contended hand-off costs the waiter's queueing, the
/// holder's release and the waiter's release (3 zxids, as the recipe's create, delete, delete),
/// not a fourth write for the grant time. A hold that lasts has it written (one zxid), and
/// Holders shows it instead of the request time.
#[tokio::test]
async fn a_contended_hand_off_writes_the_grant_time_only_for_a_hold_that_lasts() {
    let (zk, _ns, instance, channel) = setup("cost-handoff").await;
    let holder = Locker::granted(&channel, "holder", TTL).await;
    let waiter = Locker::granted(&channel, "waiter", TTL).await;
    let now_ms = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let since = |holders: Vec<pb::KeyHolders>| holders[0].holders[0].since_unix_ms;
    for lasts in [false, true] {
        let handle = holder.lock(&["k"], EXCLUSIVE, 10_000).await.unwrap().handle;
        tokio::time::sleep(SETTLE).await;
        let before = zxid(&zk);
        let hand_off = async {
            support::eventually(WAIT, "the waiter is queued", || async {
                holder.holders("k", false).await[0].waiters == 1
            })
            .await;
            let released_at = now_ms();
            holder.unlock(&handle).await.unwrap();
            released_at
        };
        let (granted, released_at) = tokio::join!(waiter.lock(&["k"], EXCLUSIVE, 10_000), hand_off);
        let handle = granted.unwrap().handle;
        assert!(
            since(waiter.holders("k", false).await) < released_at,
            "the request time, until the grant's is written"
        );
        if lasts {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            assert!(since(waiter.holders("k", false).await) >= released_at, "the grant time, once the hold lasted");
        }
        waiter.unlock(&handle).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let zxids = zxid(&zk) - before;
        println!("hand-off (hold lasts: {lasts}): {zxids} zxids");
        assert_eq!(zxids, if lasts { 4 } else { 3 }, "zxids of a hand-off (hold lasts: {lasts})");
    }
    instance.shutdown().await;
}
