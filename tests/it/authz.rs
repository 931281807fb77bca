//! The `authz_file` on every rpc, with mTLS identities: read and write rights, lease rights by
//! owner name, and rights withdrawn by a reload ending the streams they started. TLS setup
//! (certificates, files, connections) comes from the [`crate::tls`] tests.

#![allow(clippy::unwrap_used)]

use crate::support;

use std::time::{Duration, Instant};

use support::{certs::Ca, eventually, lease::lease_ref};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status, transport::Channel};
use zkcoord::{
    config::Authz,
    pb::v1::{
        self as pb, election_client::ElectionClient, lease_client::LeaseClient, lock_client::LockClient,
        shards_client::ShardsClient,
    },
};

use crate::{
    shards::{Member, TTL, check_exclusive},
    tls::{CALL_TIMEOUT, Files, RELOAD_WAIT, client_tls, connect, health, replace, start},
};

/// Waits until the instance behind `channel` is SERVING (its ZooKeeper session is usable).
async fn serving(channel: &Channel) {
    let serving = Ok(tonic_health::pb::health_check_response::ServingStatus::Serving);
    eventually(Duration::from_secs(30), "SERVING", || async { health(channel).await == serving }).await;
}

/// The message of a stream ended by withdrawn rights (`zkcoord::error::RIGHTS_WITHDRAWN`).
const RIGHTS_WITHDRAWN: &str = "identity no longer authorized: the authz rules changed";

/// A writer of `app-*` names and leases owned by `writer-*`, a reader of the same names and of
/// the leases of owner `writer-1`, and nobody else.
const RULES: &str = r#"
[[allow]]
identity = "writer"
elections = ["app-*"]
locks = ["app:*"]
shard_groups = ["app-*"]
leases = ["writer-*"]

[[allow]]
identity = "reader"
read_elections = ["app-*"]
read_locks = ["app:*"]
read_shard_groups = ["app-*"]
read_leases = ["writer-1"]
"#;

/// Every rpc, and whether it only reads.
const RPCS: &[(&str, bool)] = &[
    ("Lease/Grant", false),
    ("Lease/KeepAlive", false),
    ("Lease/TimeToLive", true),
    ("Lease/List", true),
    ("Election/Campaign", false),
    ("Election/Proclaim", false),
    ("Election/Leader", true),
    ("Election/Observe", true),
    ("Election/Candidates", true),
    ("Election/Transfer", false),
    ("Election/Resign", false),
    ("Lock/Lock", false),
    ("Lock/TryLock", false),
    ("Lock/Holders", true),
    ("Lock/Unlock", false),
    ("Shards/Join", false),
    ("Shards/Watch", false),
    ("Shards/Observe", true),
    ("Shards/Members", true),
    ("Shards/Assignment", true),
    ("Shards/Drain", false),
    ("Shards/Undrain", false),
    ("Shards/Release", false),
    ("Shards/Leave", false),
    ("Lease/Revoke", false),
];

/// What the calls act on: the writer's lease (owner `writer-1`), a second lease for Revoke
/// (owner `writer-2`), and the lock handle the writer's Lock returned.
struct Fixture {
    lease: (i64, String),
    spare: (i64, String),
    handle: String,
}

impl Fixture {
    fn candidate(&self) -> Option<pb::CandidateKey> {
        Some(pb::CandidateKey { election: "app-1".into(), candidate_id: "c1".into(), lease: self.lease_ref() })
    }

    fn member(&self) -> Option<pb::MemberKey> {
        Some(pb::MemberKey { group: "app-g".into(), member_id: "m1".into(), lease: self.lease_ref() })
    }

    fn lease_ref(&self) -> Option<pb::LeaseRef> {
        lease_ref(self.lease.0, &self.lease.1)
    }
}

/// The first message of a server stream, or the status that refused or ended it.
async fn first<T>(stream: Result<tonic::Response<tonic::Streaming<T>>, Status>) -> Result<T, Status> {
    let mut stream = stream?.into_inner();
    match tokio::time::timeout(CALL_TIMEOUT, stream.message()).await {
        Ok(Ok(Some(message))) => Ok(message),
        Ok(Ok(None)) => Err(Status::unknown("the stream ended without a message")),
        Ok(Err(status)) => Err(status),
        Err(_) => Err(Status::deadline_exceeded("no first message")),
    }
}

/// Makes the call `rpc` on `channel`; `Ok` with nothing, or its status.
async fn call(rpc: &str, channel: &Channel, fx: &mut Fixture) -> Result<(), Status> {
    let mut leases = LeaseClient::new(channel.clone());
    let mut elections = ElectionClient::new(channel.clone());
    let mut locks = LockClient::new(channel.clone());
    let mut shards = ShardsClient::new(channel.clone());
    let lease = fx.lease_ref();
    match rpc {
        "Lease/Grant" => {
            let request = pb::GrantRequest { ttl_ms: 60_000, owner: "writer-3".into(), ..Default::default() };
            leases.grant(request).await.map(drop)
        }
        "Lease/KeepAlive" => {
            let (tx, rx) = mpsc::channel(1);
            tx.send(pb::KeepAliveRequest { lease, ..Default::default() }).await.unwrap();
            first(leases.keep_alive(ReceiverStream::new(rx)).await).await.map(drop)
        }
        "Lease/TimeToLive" => leases.time_to_live(pb::TimeToLiveRequest { lease_id: fx.lease.0 }).await.map(drop),
        "Lease/List" => leases.list(pb::ListRequest::default()).await.map(drop),
        "Lease/Revoke" => {
            leases.revoke(pb::RevokeRequest { lease: lease_ref(fx.spare.0, &fx.spare.1) }).await.map(drop)
        }
        "Election/Campaign" => {
            let request = pb::CampaignRequest { key: fx.candidate(), value: b"v".to_vec(), ..Default::default() };
            first(elections.campaign(request).await).await.map(drop)
        }
        "Election/Proclaim" => {
            let leader = elections.leader(pb::LeaderRequest { election: "app-1".into() }).await;
            let term = leader.map(|l| l.into_inner().leader.map_or(0, |l| l.term)).unwrap_or(0);
            let request = pb::ProclaimRequest { key: fx.candidate(), term, value: b"w".to_vec() };
            elections.proclaim(request).await.map(drop)
        }
        "Election/Leader" => elections.leader(pb::LeaderRequest { election: "app-1".into() }).await.map(drop),
        "Election/Observe" => {
            first(elections.observe(pb::ObserveRequest { election: "app-1".into() }).await).await.map(drop)
        }
        "Election/Candidates" => elections
            .candidates(pb::CandidatesRequest { election: "app-1".into(), ..Default::default() })
            .await
            .map(drop),
        "Election/Transfer" => {
            let request = pb::TransferRequest { election: "app-1".into(), ..Default::default() };
            elections.transfer(request).await.map(drop)
        }
        "Election/Resign" => {
            elections.resign(pb::ResignRequest { key: fx.candidate(), ..Default::default() }).await.map(drop)
        }
        "Lock/Lock" => {
            let mode = pb::LockMode::Exclusive.into();
            let request = pb::LockRequest { keys: vec!["app:1".into()], lease, mode, wait_timeout_ms: 5000 };
            let response = locks.lock(request).await?.into_inner();
            fx.handle = response.handle;
            Ok(())
        }
        "Lock/TryLock" => {
            let mode = pb::LockMode::Exclusive.into();
            locks.try_lock(pb::TryLockRequest { keys: vec!["app:2".into()], lease, mode }).await.map(drop)
        }
        "Lock/Holders" => {
            locks.holders(pb::HoldersRequest { key: "app:1".into(), prefix: false, ..Default::default() }).await?;
            locks.holders(pb::HoldersRequest { key: "app:".into(), prefix: true, ..Default::default() }).await.map(drop)
        }
        "Lock/Unlock" => locks.unlock(pb::UnlockRequest { handle: fx.handle.clone(), lease }).await.map(drop),
        "Shards/Join" => {
            let request = pb::JoinRequest { key: fx.member(), shard_count: 4, ..Default::default() };
            shards.join(request).await.map(drop)
        }
        "Shards/Watch" => first(shards.watch(pb::WatchRequest { key: fx.member() }).await).await.map(drop),
        "Shards/Observe" => {
            first(shards.observe(pb::ObserveGroupRequest { group: "app-g".into() }).await).await.map(drop)
        }
        "Shards/Members" => {
            shards.members(pb::MembersRequest { group: "app-g".into(), ..Default::default() }).await.map(drop)
        }
        "Shards/Assignment" => shards.assignment(pb::AssignmentRequest { group: "app-g".into() }).await.map(drop),
        "Shards/Drain" => {
            shards.drain(pb::DrainRequest { group: "app-g".into(), member_id: "m1".into() }).await.map(drop)
        }
        "Shards/Undrain" => {
            shards.undrain(pb::UndrainRequest { group: "app-g".into(), member_id: "m1".into() }).await.map(drop)
        }
        "Shards/Release" => {
            let shards_released = vec![pb::ReleasedShard { shard: 0, epoch: 1 }];
            shards.release(pb::ReleaseRequest { key: fx.member(), shards: shards_released }).await.map(drop)
        }
        "Shards/Leave" => shards.leave(pb::LeaveRequest { key: fx.member(), wait_ms: 1 }).await.map(drop),
        other => panic!("unknown rpc {other}"),
    }
}

/// The calls of a writer that authz lets through but the state may refuse (no leader to
/// transfer from, a shard not owned with that epoch), and how.
fn refused_by_state(rpc: &str, status: &Status) -> bool {
    matches!(
        (rpc, status.code()),
        ("Election/Transfer" | "Shards/Release" | "Election/Proclaim", Code::FailedPrecondition)
    )
}

/// Table-driven, in one instance: for every rpc, a stranger (an identity no rule names) is
/// refused, a reader is refused writes and served reads, and a writer is served — in that
/// order, each with the writer's own lease and secret, so a refusal is authz's, not the
/// lease's, and changes nothing the writer's call then finds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_serves_writers_and_readers_by_their_rights_and_refuses_strangers() {
    let ca = Ca::new("authz ca");
    let files = Files::new(&ca.server(), &ca);
    std::fs::write(&files.authz, RULES).unwrap();
    let instance = start("authz-every-rpc", files.tls(true), Some(Authz::load(&files.authz).unwrap())).await;
    let addr = instance.addr();
    let writer = connect(addr, client_tls(&ca, Some(&ca.client("writer")))).await.unwrap();
    let reader = connect(addr, client_tls(&ca, Some(&ca.client("reader")))).await.unwrap();
    let stranger = connect(addr, client_tls(&ca, Some(&ca.client("stranger")))).await.unwrap();
    serving(&writer).await;

    let grant = |owner: &'static str| {
        let mut leases = LeaseClient::new(writer.clone());
        async move {
            let request = pb::GrantRequest { ttl_ms: 60_000, owner: owner.into(), ..Default::default() };
            let granted = leases.grant(request).await.unwrap().into_inner();
            (granted.lease_id, granted.secret)
        }
    };
    let mut fx = Fixture { lease: grant("writer-1").await, spare: grant("writer-2").await, handle: String::new() };

    for &(rpc, read) in RPCS {
        for (who, channel) in [("stranger", &stranger), ("reader", &reader)] {
            let result = call(rpc, channel, &mut fx).await;
            if who == "reader" && read {
                assert!(result.is_ok(), "{who} {rpc}: {result:?}");
            } else {
                let status = result.expect_err(&format!("{who} {rpc} was served"));
                assert_eq!(status.code(), Code::PermissionDenied, "{who} {rpc}: {status:?}");
                assert!(status.message().starts_with("identity not authorized for this "), "{who} {rpc}: {status:?}");
            }
        }
        match call(rpc, &writer, &mut fx).await {
            Ok(()) => {}
            Err(status) if refused_by_state(rpc, &status) => {}
            Err(status) => panic!("writer {rpc}: {status:?}"),
        }
    }

    // Names outside the patterns are refused, reads and writes alike, with the stable messages.
    let mut elections = ElectionClient::new(writer.clone());
    let status = elections.leader(pb::LeaderRequest { election: "other".into() }).await.unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::PermissionDenied, "identity not authorized for this election")
    );
    let status = LockClient::new(reader.clone())
        .holders(pb::HoldersRequest { key: "ap".into(), prefix: true, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(status.message(), "identity not authorized for this lock key", "a prefix wider than the pattern");
    let status = ShardsClient::new(reader.clone())
        .members(pb::MembersRequest { group: "other".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(status.message(), "identity not authorized for this shard group");
    let request = pb::GrantRequest { ttl_ms: 60_000, owner: "reader-1".into(), ..Default::default() };
    let status = LeaseClient::new(writer.clone()).grant(request).await.unwrap_err();
    assert_eq!(status.message(), "identity not authorized for this lease", "an owner outside `leases`");

    // The reader lists only the leases it may read: writer-1's, not writer-3's.
    let listed = LeaseClient::new(reader.clone()).list(pb::ListRequest::default()).await.unwrap().into_inner();
    let owners: Vec<&str> = listed.leases.iter().map(|l| l.owner.as_str()).collect();
    assert_eq!(owners, ["writer-1"], "{owners:?}");
    let all = LeaseClient::new(writer.clone()).list(pb::ListRequest::default()).await.unwrap().into_inner();
    assert!(all.leases.iter().any(|l| l.owner == "writer-3"), "the writer reads every writer-* lease");
    instance.shutdown().await;
}

/// A background KeepAlive stream: heartbeats every 300 ms; its end is sent on the returned
/// channel.
fn keep_alive(channel: &Channel, lease: (i64, String)) -> mpsc::Receiver<Status> {
    let (ended_tx, ended) = mpsc::channel(1);
    let mut leases = LeaseClient::new(channel.clone());
    tokio::spawn(async move {
        let (tx, rx) = mpsc::channel(4);
        let heartbeat = pb::KeepAliveRequest { lease: lease_ref(lease.0, &lease.1), ..Default::default() };
        tx.send(heartbeat.clone()).await.unwrap();
        let mut stream = match leases.keep_alive(ReceiverStream::new(rx)).await {
            Ok(stream) => stream.into_inner(),
            Err(status) => {
                let _ = ended_tx.send(status).await;
                return;
            }
        };
        let sender = tokio::spawn(async move {
            while tx.send(heartbeat.clone()).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        let status = loop {
            match stream.message().await {
                Ok(Some(_)) => {}
                Ok(None) => break Status::unknown("ended without a status"),
                Err(status) => break status,
            }
        };
        sender.abort();
        let _ = ended_tx.send(status).await;
    });
    ended
}

/// How the stream `stream` ends, waiting at most `wait`.
async fn end_of<T: std::fmt::Debug>(stream: &mut tonic::Streaming<T>, wait: Duration) -> Status {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.message()).await {
            Err(_) => panic!("the stream did not end within {wait:?}"),
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => panic!("the stream ended without a status"),
            Ok(Err(status)) => return status,
        }
    }
}

/// A reload that withdraws rights ends the streams they started within the poll interval: an
/// elected leader's Campaign stream (and its candidacy, deposed first, while its lease lives
/// on), an Observe stream; a later one withdrawing lease rights ends the KeepAlive stream.
/// Streams still allowed carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawn_rights_end_campaign_observe_and_keep_alive_streams() {
    let rules = |node_elections: &str, node_leases: &str, watcher: &str| {
        format!(
            "[[allow]]\nidentity = \"node\"\nelections = [{node_elections}]\nleases = [{node_leases}]\n\n\
             [[allow]]\nidentity = \"watcher\"\nread_elections = [{watcher}]\n\n\
             [[allow]]\nidentity = \"admin\"\nread_elections = [\"*\"]\nread_leases = [\"*\"]\n"
        )
    };
    let ca = Ca::new("withdraw ca");
    let files = Files::new(&ca.server(), &ca);
    std::fs::write(&files.authz, rules("\"app-*\"", "\"node\"", "\"app-*\"")).unwrap();
    let instance = start("authz-withdraw", files.tls(true), Some(Authz::load(&files.authz).unwrap())).await;
    let addr = instance.addr();
    let node = connect(addr, client_tls(&ca, Some(&ca.client("node")))).await.unwrap();
    let watcher = connect(addr, client_tls(&ca, Some(&ca.client("watcher")))).await.unwrap();
    let admin = connect(addr, client_tls(&ca, Some(&ca.client("admin")))).await.unwrap();
    serving(&node).await;

    let request = pb::GrantRequest { ttl_ms: 2000, owner: "node".into(), ..Default::default() };
    let granted = LeaseClient::new(node.clone()).grant(request).await.unwrap().into_inner();
    let lease = (granted.lease_id, granted.secret);
    let mut keep_alive_end = keep_alive(&node, lease.clone());
    let key =
        pb::CandidateKey { election: "app-1".into(), candidate_id: "n1".into(), lease: lease_ref(lease.0, &lease.1) };
    let request = pb::CampaignRequest { key: Some(key), value: b"n1".to_vec(), ..Default::default() };
    let mut campaign = ElectionClient::new(node.clone()).campaign(request).await.unwrap().into_inner();
    loop {
        let status = tokio::time::timeout(CALL_TIMEOUT, campaign.message()).await.unwrap().unwrap().unwrap();
        if status.state() == pb::CandidateState::Elected {
            break;
        }
    }
    let mut observe = ElectionClient::new(watcher.clone())
        .observe(pb::ObserveRequest { election: "app-1".into() })
        .await
        .unwrap()
        .into_inner();
    tokio::time::timeout(CALL_TIMEOUT, observe.message()).await.unwrap().unwrap().unwrap();
    // A second Observe, of an election the watcher keeps, is not ended.
    let mut kept = ElectionClient::new(watcher.clone())
        .observe(pb::ObserveRequest { election: "app-kept".into() })
        .await
        .unwrap()
        .into_inner();
    tokio::time::timeout(CALL_TIMEOUT, kept.message()).await.unwrap().unwrap().unwrap();

    // Withdraw the node's election rights and the watcher's read of app-1.
    let reloaded = Instant::now();
    replace(&files.authz, &rules("", "\"node\"", "\"app-kept\""));
    let ended = end_of(&mut campaign, RELOAD_WAIT).await;
    assert_eq!((ended.code(), ended.message()), (Code::PermissionDenied, RIGHTS_WITHDRAWN));
    let ended = end_of(&mut observe, RELOAD_WAIT).await;
    assert_eq!((ended.code(), ended.message()), (Code::PermissionDenied, RIGHTS_WITHDRAWN));
    assert!(reloaded.elapsed() < RELOAD_WAIT, "ended {:?} after the rewrite", reloaded.elapsed());

    // The candidacy ends, with the lease alive: deposed first, removed once its validity ran
    // out (ttl 2 s + 1.25 s), so the election is left without candidates.
    let admin_elections = ElectionClient::new(admin.clone());
    eventually(Duration::from_secs(20), "the withdrawn candidacy is gone", || async {
        let candidates = admin_elections
            .clone()
            .candidates(pb::CandidatesRequest { election: "app-1".into(), ..Default::default() })
            .await
            .unwrap()
            .into_inner()
            .candidates;
        candidates.is_empty()
    })
    .await;
    let leader = admin_elections.clone().leader(pb::LeaderRequest { election: "app-1".into() }).await.unwrap();
    assert!(leader.into_inner().leader.is_none());
    let ttl = LeaseClient::new(admin.clone()).time_to_live(pb::TimeToLiveRequest { lease_id: lease.0 }).await;
    assert!(ttl.is_ok(), "the lease lives on (its KeepAlive is still allowed): {ttl:?}");
    assert!(keep_alive_end.try_recv().is_err(), "the KeepAlive stream was not ended");
    // The kept Observe stream still runs.
    assert!(tokio::time::timeout(Duration::from_millis(500), kept.message()).await.is_err(), "no end, no news");

    // Withdraw the node's lease rights: its KeepAlive stream ends, and a new one is refused.
    replace(&files.authz, &rules("", "\"other\"", "\"app-kept\""));
    let ended = tokio::time::timeout(RELOAD_WAIT, keep_alive_end.recv()).await.unwrap().unwrap();
    assert_eq!((ended.code(), ended.message()), (Code::PermissionDenied, RIGHTS_WITHDRAWN));
    let refused = keep_alive(&node, lease).recv().await.unwrap();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    instance.shutdown().await;
}

/// A reload withdrawing an identity's rights on a lock key ends its hold as if its lease were
/// revoked: the lease is never confirmed again (its KeepAlive stream ends) and is deleted with
/// its hold once its validity ran out; only then does another identity's waiting Lock get the
/// key — never while the old holder may still trust its last confirmed heartbeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawn_lock_key_rights_end_the_hold_only_after_its_validity() {
    let rules = |node_locks: &str| {
        format!(
            "[[allow]]\nidentity = \"node\"\nlocks = [{node_locks}]\nleases = [\"node\"]\n\n\
             [[allow]]\nidentity = \"other\"\nlocks = [\"job-*\"]\nleases = [\"other\"]\n"
        )
    };
    let ca = Ca::new("withdraw lock ca");
    let files = Files::new(&ca.server(), &ca);
    std::fs::write(&files.authz, rules("\"job-*\"")).unwrap();
    let instance = start("authz-withdraw-lock", files.tls(true), Some(Authz::load(&files.authz).unwrap())).await;
    let addr = instance.addr();
    let node = connect(addr, client_tls(&ca, Some(&ca.client("node")))).await.unwrap();
    let other = connect(addr, client_tls(&ca, Some(&ca.client("other")))).await.unwrap();
    serving(&node).await;

    let ttl = Duration::from_secs(2);
    let grant = |owner: &str| pb::GrantRequest { ttl_ms: 2000, owner: owner.into(), ..Default::default() };
    let node_lease = LeaseClient::new(node.clone()).grant(grant("node")).await.unwrap().into_inner();
    let mut node_end = keep_alive(&node, (node_lease.lease_id, node_lease.secret.clone()));
    let other_lease = LeaseClient::new(other.clone()).grant(grant("other")).await.unwrap().into_inner();
    let mut other_end = keep_alive(&other, (other_lease.lease_id, other_lease.secret.clone()));
    let lock = |lease: &pb::GrantResponse| pb::LockRequest {
        keys: vec!["job-1".into()],
        lease: lease_ref(lease.lease_id, &lease.secret),
        mode: pb::LockMode::Exclusive.into(),
        wait_timeout_ms: 60_000,
    };
    LockClient::new(node.clone()).lock(lock(&node_lease)).await.unwrap();
    let mut waiting = LockClient::new(other.clone());
    let request = lock(&other_lease);
    let mut waiter = tokio::spawn(async move {
        let acquired = waiting.lock(request).await;
        (Instant::now(), acquired)
    });
    assert!(tokio::time::timeout(Duration::from_millis(1000), &mut waiter).await.is_err(), "the key is held");

    // Withdraw the node's rights on the key (its lease rights stay).
    let reloaded = Instant::now();
    replace(&files.authz, &rules(""));
    let ended = tokio::time::timeout(RELOAD_WAIT, node_end.recv()).await.unwrap().unwrap();
    assert_eq!(ended.code(), Code::NotFound, "the lease is no longer confirmed: {ended:?}");
    let (acquired_at, acquired) = tokio::time::timeout(RELOAD_WAIT + ttl * 3, waiter).await.unwrap().unwrap();
    acquired.unwrap();
    let waited = acquired_at - reloaded;
    assert!(waited >= ttl, "the key passed on {waited:?} after the reload, within the old holder's validity");
    let gone =
        LeaseClient::new(node.clone()).time_to_live(pb::TimeToLiveRequest { lease_id: node_lease.lease_id }).await;
    assert_eq!(gone.unwrap_err().code(), Code::NotFound, "the withdrawn hold's lease is gone");
    assert!(other_end.try_recv().is_err(), "the other identity's lease carries on");
    instance.shutdown().await;
}

/// A reload withdrawing an identity's rights on a shard group ends its membership as a Leave
/// would: its shards are revoked and (as it does not release them) handed on only once its
/// validity ran out, never valid for two members at once; then the membership ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawn_shard_group_rights_end_the_membership_only_after_its_validity() {
    let rules = |node_groups: &str| {
        format!(
            "[[allow]]\nidentity = \"node\"\nshard_groups = [{node_groups}]\nleases = [\"node-m\"]\n\n\
             [[allow]]\nidentity = \"other\"\nshard_groups = [\"flows\"]\nleases = [\"other-m\"]\n"
        )
    };
    let ca = Ca::new("withdraw shards ca");
    let files = Files::new(&ca.server(), &ca);
    std::fs::write(&files.authz, rules("\"flows\"")).unwrap();
    let instance = start("authz-withdraw-shards", files.tls(true), Some(Authz::load(&files.authz).unwrap())).await;
    let addr = instance.addr();
    let node = connect(addr, client_tls(&ca, Some(&ca.client("node")))).await.unwrap();
    let other = connect(addr, client_tls(&ca, Some(&ca.client("other")))).await.unwrap();
    serving(&node).await;

    let wait = Duration::from_secs(30);
    // The node's member never releases a revoked shard: only its validity's end moves them.
    let m1 = Member::join(&node, "flows", "node-m", 4, 1, false).await;
    eventually(wait, "the node's member owns everything", || async { m1.valid().len() == 4 }).await;
    let m2 = Member::join(&other, "flows", "other-m", 4, 1, true).await;
    let stop = CancellationToken::new();
    let checker = check_exclusive(vec![m1.validity.clone(), m2.validity.clone()], stop.clone());
    eventually(wait, "2/2", || async { m1.valid().len() == 2 && m2.valid().len() == 2 }).await;

    let reloaded = Instant::now();
    replace(&files.authz, &rules(""));
    eventually(wait, "the other member owns everything", || async { m2.valid().len() == 4 }).await;
    let waited = reloaded.elapsed();
    assert!(waited >= TTL, "shards moved {waited:?} after the reload, within the old owner's validity");
    assert!(m1.valid().is_empty());
    let mut shards = ShardsClient::new(other.clone());
    eventually(wait, "the withdrawn membership ended", || {
        let mut shards = shards.clone();
        async move {
            let members = shards.members(pb::MembersRequest { group: "flows".into(), ..Default::default() }).await;
            let members = members.unwrap().into_inner().members;
            members.iter().map(|m| m.member_id.as_str()).collect::<Vec<_>>() == vec!["other-m"]
        }
    })
    .await;
    let assignment = shards.assignment(pb::AssignmentRequest { group: "flows".into() }).await.unwrap().into_inner();
    assert!(assignment.ranges.iter().all(|r| r.owner == "other-m"), "{assignment:?}");
    stop.cancel();
    assert!(checker.await.unwrap() > 10);
    instance.shutdown().await;
}

/// Certificate rotation: once the client CA file no longer lists the CA that issued a
/// connection's client certificate, that connection's streams end (PERMISSION_DENIED `client
/// certificate no longer trusted`) within the poll interval and its new calls are refused;
/// connections of a CA still listed carry on. No `authz_file` needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_ca_removed_by_a_reload_ends_the_streams_of_its_clients() {
    let (kept_ca, dropped_ca) = (Ca::new("kept ca"), Ca::new("dropped ca"));
    let files = Files::new(&kept_ca.server(), &kept_ca);
    std::fs::write(&files.client_ca, format!("{}{}", kept_ca.pem, dropped_ca.pem)).unwrap();
    let instance = start("authz-ca-rotation", files.tls(true), None).await;
    let addr = instance.addr();
    let kept = connect(addr, client_tls(&kept_ca, Some(&kept_ca.client("kept-node")))).await.unwrap();
    let dropped = connect(addr, client_tls(&kept_ca, Some(&dropped_ca.client("dropped-node")))).await.unwrap();
    serving(&kept).await;
    let observe = |channel: &Channel| {
        let mut elections = ElectionClient::new(channel.clone());
        async move {
            let mut stream = elections.observe(pb::ObserveRequest { election: "e".into() }).await.unwrap().into_inner();
            tokio::time::timeout(CALL_TIMEOUT, stream.message()).await.unwrap().unwrap().unwrap();
            stream
        }
    };
    let mut kept_stream = observe(&kept).await;
    let mut dropped_stream = observe(&dropped).await;

    replace(&files.client_ca, &kept_ca.pem);
    let ended = end_of(&mut dropped_stream, RELOAD_WAIT).await;
    assert_eq!((ended.code(), ended.message()), (Code::PermissionDenied, "client certificate no longer trusted"));
    let leader = |channel: &Channel| {
        let mut elections = ElectionClient::new(channel.clone());
        async move { elections.leader(pb::LeaderRequest { election: "e".into() }).await }
    };
    let refused = leader(&dropped).await.unwrap_err();
    assert_eq!((refused.code(), refused.message()), (Code::PermissionDenied, "client certificate no longer trusted"));
    leader(&kept).await.expect("a client of the kept CA is served");
    assert!(tokio::time::timeout(Duration::from_millis(500), kept_stream.message()).await.is_err(), "still open");
    instance.shutdown().await;
}
