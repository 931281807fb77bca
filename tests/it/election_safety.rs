//! Leadership under partial failures, against real ZooKeeper: a leader's client paused during a
//! Transfer, a frozen instance holding the leader's Campaign stream, an elector that sees an
//! election record newer than its candidate list. In each, at most one candidate may act as
//! leader at any moment, by the client rule (the lease's confirmed heartbeats are the
//! authority; see `proto/zkcoord/v1/lease.proto`).

#![allow(clippy::unwrap_used)]

use crate::support;

use std::{
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use support::{ZkcoordProcess, leader, lease::Keeper, signal};
use zkcoord::{
    pb::v1::{self as pb, election_client::ElectionClient},
    testing::{
        Name, layout,
        record::{self, CandidateRecord, ElectionRecord, LeaderRecord},
    },
};
use zkcoord_client::{CampaignOptions, Client, LeaderElector, LeaseKeeper, LeaseOptions};

const WAIT: Duration = Duration::from_secs(20);

/// `zkcoord campaign` as a separate process: a leader client that follows the rule.
struct CampaignProcess(Child);

impl CampaignProcess {
    fn spawn(endpoint: &str, election: &str, id: &str, ttl: &str) -> Self {
        let child = support::zkcoord_command()
            .args(["campaign", election, "--endpoints", endpoint, "--id", id, "--ttl", ttl, "--", "sleep", "1000"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self(child)
    }
}

impl Drop for CampaignProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.0.id().to_string()]).status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A leader's client paused (GC, SIGSTOP) when a Transfer deposes it can neither stop nor
/// acknowledge: its successor is elected only once the leader's validity has surely run out
/// (its last heartbeat was sent before the pause; + ttl), not as soon as DEPOSED is queued.
#[tokio::test]
async fn a_paused_leader_is_not_replaced_before_its_validity_runs_out() {
    let zk = support::zk::shared();
    let instance = support::start_zkcoord(&zk.hosts(), &support::namespace("paused-leader")).await;
    let channel = support::channel(instance.addr()).await;
    let e = "paused";
    let ttl = Duration::from_secs(2);
    let leader_process = CampaignProcess::spawn(&instance.addr().to_string(), e, "paused-leader", "2s");
    support::eventually(WAIT, "the campaign process leads", || async {
        leader(&channel, e).await.is_some_and(|l| l.candidate_id == "paused-leader")
    })
    .await;
    let keeper = Keeper::start(vec![instance.addr()], Duration::from_secs(10), Duration::from_millis(500), None).await;
    let standby = ElectionClient::new(channel.clone())
        .campaign(pb::CampaignRequest {
            key: Some(pb::CandidateKey {
                election: e.into(),
                candidate_id: "standby".into(),
                lease: support::lease::lease_ref(keeper.id, &keeper.secret),
            }),
            priority: 1,
            ..Default::default()
        })
        .await
        .unwrap();

    signal(leader_process.0.id(), "-STOP");
    let paused = Instant::now();
    let response = ElectionClient::new(channel.clone())
        .transfer(pb::TransferRequest {
            election: e.into(),
            target_candidate_id: "standby".into(),
            from: None,
            term: 0,
        })
        .await
        .expect("the transfer completes");
    let elected_after = paused.elapsed();
    assert_eq!(response.into_inner().leader.unwrap().candidate_id, "standby");
    assert!(
        elected_after >= ttl,
        "the successor was elected {elected_after:?} after the leader paused, within the leader's ttl ({ttl:?})"
    );
    assert!(elected_after < ttl + Duration::from_secs(10), "the transfer took {elected_after:?}");
    drop(standby);
    drop(leader_process);
    instance.shutdown().await;
}

/// When the instance holding the leader's Campaign stream freezes, the leader's client moves
/// its heartbeats to another instance; a Transfer there deposes it (the frozen instance cannot
/// say DEPOSED). The leader must stop acting — its confirmed heartbeats stop listing the
/// leadership — before the successor may act; with its acknowledgement the successor is
/// elected without waiting for the leader's ttl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_campaign_host_cannot_keep_a_deposed_leader_acting() {
    let zk = support::zk::shared();
    let ns = support::namespace("frozen-host");
    let frozen = ZkcoordProcess::spawn(&format!("{}{ns}", zk.hosts()), &[]);
    let healthy = support::start_zkcoord(&zk.hosts(), &ns).await;
    let e = "frozen-host";
    let ttl = Duration::from_secs(2);

    // The leader: both streams start on the instance that will freeze.
    let leader_client = Client::new([frozen.addr.to_string(), healthy.addr().to_string()]).unwrap();
    let leader_lease = LeaseKeeper::grant(&leader_client, LeaseOptions::new("leader", ttl)).await.unwrap();
    let old = LeaderElector::campaign(&leader_client, &leader_lease, CampaignOptions::new(e, "old")).await.unwrap();
    let start = Instant::now();
    while old.leadership().is_none() {
        assert!(start.elapsed() < WAIT, "the first candidate never led");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let standby_client = Client::new([healthy.addr().to_string()]).unwrap();
    let standby_lease = LeaseKeeper::grant(&standby_client, LeaseOptions::new("standby", ttl)).await.unwrap();
    let new = LeaderElector::campaign(&standby_client, &standby_lease, CampaignOptions::new(e, "new").priority(1))
        .await
        .unwrap();

    // Who may act, sampled every few milliseconds: (old acting, new acting) moments.
    let acting: Arc<Mutex<Vec<(Instant, bool, bool)>>> = Arc::default();
    let sampler = {
        let acting = acting.clone();
        let (old, new) = (Arc::new(old), Arc::new(new));
        tokio::spawn(async move {
            loop {
                let now = Instant::now();
                let sample = (now, old.leadership().is_some(), new.leadership().is_some());
                acting.lock().unwrap().push(sample);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };

    signal(frozen.pid(), "-STOP");
    // The leader's keeper moves its heartbeats to the healthy instance (the lease is claimed
    // there); its Campaign stream stays on the frozen one.
    support::eventually(WAIT, "the leader's heartbeats are confirmed by the healthy instance", || async {
        leader_lease.is_confirmed() && leader_lease.last_confirmed().is_some_and(|beat| !beat.leaderships.is_empty())
    })
    .await;
    let on_healthy = support::channel(healthy.addr()).await;
    let transferred = Instant::now();
    let response = ElectionClient::new(on_healthy.clone())
        .transfer(pb::TransferRequest { election: e.into(), target_candidate_id: "new".into(), from: None, term: 0 })
        .await
        .expect("the transfer completes");
    assert_eq!(response.into_inner().leader.unwrap().candidate_id, "new");
    let took = transferred.elapsed();
    support::eventually(WAIT, "the successor acts", || async {
        acting.lock().unwrap().last().is_some_and(|(_, _, new)| *new)
    })
    .await;
    sampler.abort();
    let samples = acting.lock().unwrap().clone();
    assert!(samples.iter().all(|(_, old, new)| !(*old && *new)), "both acted at once");
    let old_last = samples.iter().filter(|s| s.1).map(|s| s.0).max().expect("the old leader acted");
    let new_first = samples.iter().filter(|s| s.2).map(|s| s.0).min().unwrap();
    assert!(old_last < new_first, "the old leader acted after the new one began");
    assert!(
        took < ttl + Duration::from_secs(1),
        "with the acknowledgement the transfer need not wait for the ttl: took {took:?}"
    );
    signal(frozen.pid(), "-CONT");
    drop(frozen);
    healthy.shutdown().await;
}

/// An elector that reads an election record naming a leader it has not listed yet (the record
/// is newer than its candidate list) must list the candidates again, not take "not listed" for
/// "its candidacy ended" and elect someone else over a sitting leader.
#[tokio::test]
async fn an_elector_never_replaces_a_leader_it_has_not_listed_yet() {
    let zk = support::zk::shared();
    let ns = support::namespace("record-ahead");
    let instance = support::start_zkcoord(&zk.hosts(), &ns).await;
    let channel = support::channel(instance.addr()).await;
    let e = "ahead";
    let first = Keeper::start(vec![instance.addr()], Duration::from_secs(10), Duration::from_millis(500), None).await;
    let second = Keeper::start(vec![instance.addr()], Duration::from_secs(10), Duration::from_millis(500), None).await;
    let _stream = ElectionClient::new(channel.clone())
        .campaign(pb::CampaignRequest {
            key: Some(pb::CandidateKey {
                election: e.into(),
                candidate_id: "first".into(),
                lease: support::lease::lease_ref(first.id, &first.secret),
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    support::eventually(WAIT, "first leads", || async { leader(&channel, e).await.is_some() }).await;

    // Another writer (any elector elsewhere) creates a candidacy and elects it in one
    // transaction: this instance hears of the record and of the new child together, in either
    // order.
    let zk_client = support::zk_client(&zk.hosts()).await.chroot(ns.as_str()).unwrap();
    let name = Name::parse("election", e).unwrap();
    for round in 0..10 {
        let election_path = layout::election(&name);
        let (data, stat) = zk_client.get_data(&election_path).await.unwrap();
        let mut current: ElectionRecord = record::decode(&data).unwrap();
        let id = format!("second-{round}");
        let candidate = Name::parse("candidate", &id).unwrap();
        current.term += 1;
        current.leader = Some(LeaderRecord { candidate_id: id.clone(), lease_id: second.id, elected_unix_ms: 0 });
        current.deposed = None;
        let candidacy = CandidateRecord { lease_id: second.id, priority: 5, ..Default::default() };
        let persistent = zookeeper_client::CreateMode::Persistent.with_acls(zookeeper_client::Acls::anyone_all());
        // The record first: its watch event reaches this instance before the candidates
        // directory's, so it reads a record naming a candidate it has not listed.
        let mut multi = zk_client.new_multi_writer();
        multi.add_set_data(&election_path, &record::encode(&current), Some(stat.version)).unwrap();
        multi.add_create(&layout::candidate(&name, &candidate), &record::encode(&candidacy), &persistent).unwrap();
        let binding = format!("{}/{}", layout::lease(second.id), layout::candidacy_binding(&name, &candidate));
        multi.add_create(&binding, &[], &persistent).unwrap();
        multi.commit().await.unwrap();
        let written_term = current.term;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (data, _) = zk_client.get_data(&election_path).await.unwrap();
        let now: ElectionRecord = record::decode(&data).unwrap();
        assert_eq!(
            (now.term, now.leader.map(|l| l.candidate_id)),
            (written_term, Some(id)),
            "round {round}: an elector replaced a sitting leader it had not listed yet"
        );
    }
    drop((first, second));
    instance.shutdown().await;
}
