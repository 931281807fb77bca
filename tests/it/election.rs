//! Leader election against real ZooKeeper: priority, preemption, health gating, transfer,
//! fencing, resign, observe, bad input.

#![allow(clippy::unwrap_used)]

use crate::support;

use std::time::{Duration, Instant};

use support::{
    leader,
    lease::{Keeper, grant, lease_ref},
};
use tonic::{Code, transport::Channel};
use zkcoord::pb::v1::{self as pb, election_client::ElectionClient};

const WAIT: Duration = Duration::from_secs(15);

/// A candidate: its lease and its Campaign stream, read in the background by a client that
/// follows the rule: it acknowledges every DEPOSED at once (Resign with `stay_candidate`), as
/// the client libraries do, so that its successor need not wait for its validity to run out.
struct Candidate {
    id: String,
    lease: (i64, String),
    statuses: tokio::sync::mpsc::UnboundedReceiver<Option<pb::CampaignResponse>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Candidate {
    fn drop(&mut self) {
        self.reader.abort(); // closes the stream; no acknowledgement comes any more
    }
}

fn key(election: &str, id: &str, lease: &(i64, String)) -> Option<pb::CandidateKey> {
    Some(pb::CandidateKey { election: election.into(), candidate_id: id.into(), lease: lease_ref(lease.0, &lease.1) })
}

fn campaign_request(
    election: &str,
    id: &str,
    lease: &(i64, String),
    priority: i32,
    preempt: pb::PreemptPolicy,
) -> pb::CampaignRequest {
    pb::CampaignRequest {
        key: key(election, id, lease),
        value: format!("addr-of-{id}").into_bytes(),
        priority,
        preempt: preempt.into(),
        ..Default::default()
    }
}

async fn campaign(
    channel: &Channel,
    election: &str,
    id: &str,
    lease: (i64, String),
    priority: i32,
    preempt: pb::PreemptPolicy,
) -> Candidate {
    let request = campaign_request(election, id, &lease, priority, preempt);
    campaign_with(channel, request, lease).await
}

/// [`campaign`] with a request of the test's own (`request.key` names `lease`).
async fn campaign_with(channel: &Channel, request: pb::CampaignRequest, lease: (i64, String)) -> Candidate {
    let named = request.key.clone().unwrap();
    let (election, id) = (named.election.as_str(), named.candidate_id.as_str());
    let mut stream = ElectionClient::new(channel.clone()).campaign(request.clone()).await.unwrap().into_inner();
    let (tx, statuses) = tokio::sync::mpsc::unbounded_channel();
    let (channel, acknowledge) = (channel.clone(), key(election, id, &lease));
    let reader = tokio::spawn(async move {
        while let Ok(Some(status)) = stream.message().await {
            // Seen (and so acted on) first, acknowledged after.
            let deposed = status.state() == pb::CandidateState::Deposed
                && !matches!(status.reason(), pb::DeposedReason::Resigned | pb::DeposedReason::LeaseExpired);
            let term = status.term;
            let _ = tx.send(Some(status));
            if deposed {
                let request = pb::ResignRequest { key: acknowledge.clone(), term, stay_candidate: true };
                ElectionClient::new(channel.clone()).resign(request).await.unwrap();
            }
        }
        let _ = tx.send(None);
    });
    Candidate { id: id.into(), lease, statuses, reader }
}

impl Candidate {
    /// The next status, within [`WAIT`].
    async fn next(&mut self) -> pb::CampaignResponse {
        tokio::time::timeout(WAIT, self.statuses.recv())
            .await
            .unwrap_or_else(|_| panic!("{}: no status within {WAIT:?}", self.id))
            .flatten()
            .unwrap_or_else(|| panic!("{}: stream ended", self.id))
    }

    /// Skips statuses until one in `state`.
    async fn until(&mut self, state: pb::CandidateState) -> pb::CampaignResponse {
        loop {
            let status = self.next().await;
            if status.state() == state {
                return status;
            }
        }
    }
}

async fn leased(channel: &Channel, owner: &str) -> (i64, String) {
    let granted = grant(channel, owner, Duration::from_secs(60)).await;
    (granted.lease_id, granted.secret)
}

#[tokio::test]
async fn best_priority_leads_and_resign_elects_the_next() {
    let zk = support::zk::shared();
    let instance = support::start_zkcoord(&zk.hosts(), &support::namespace("election-basic")).await;
    let channel = support::channel(instance.addr()).await;
    let e = "ledger-master";
    let mut standby = campaign(&channel, e, "standby", leased(&channel, "b").await, 1, pb::PreemptPolicy::Off).await;
    let first = standby.until(pb::CandidateState::Elected).await;
    assert_eq!(first.term, 1);
    let mut master =
        campaign(&channel, e, "master", leased(&channel, "a").await, 0, pb::PreemptPolicy::Unspecified).await;
    let queued = master.until(pb::CandidateState::Queued).await;
    assert_eq!(queued.position, 1, "preempt is off: the better candidate waits behind the leader");
    assert_eq!(queued.leader.unwrap().candidate_id, "standby");

    let info = leader(&channel, e).await.unwrap();
    assert_eq!((info.candidate_id.as_str(), info.value.as_slice(), info.term), ("standby", &b"addr-of-standby"[..], 1));

    ElectionClient::new(channel.clone())
        .resign(pb::ResignRequest { key: key(e, "standby", &standby.lease), term: 1, stay_candidate: false })
        .await
        .unwrap();
    let deposed = standby.next().await;
    assert_eq!((deposed.state(), deposed.reason()), (pb::CandidateState::Deposed, pb::DeposedReason::Resigned));
    let elected = master.until(pb::CandidateState::Elected).await;
    assert_eq!(elected.term, 2);
    assert!(elected.fencing_token > first.fencing_token, "fencing tokens grow");
    assert_eq!(standby.statuses.recv().await, Some(None), "a resigned candidacy's stream ends");

    // Candidates: in election order.
    let candidates = ElectionClient::new(channel.clone())
        .candidates(pb::CandidatesRequest { election: e.into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(candidates.candidates.len(), 1);
    assert!(candidates.candidates[0].leader && candidates.candidates[0].eligible);
    assert_eq!(candidates.preempt(), pb::PreemptPolicy::Off);
    instance.shutdown().await;
}

#[tokio::test]
async fn preemption_deposes_before_it_elects() {
    let zk = support::zk::shared();
    let instance = support::start_zkcoord(&zk.hosts(), &support::namespace("election-preempt")).await;
    let channel = support::channel(instance.addr()).await;
    let e = "preempting";
    let mut small = campaign(&channel, e, "small-box", leased(&channel, "s").await, 5, pb::PreemptPolicy::On).await;
    let first = small.until(pb::CandidateState::Elected).await;
    let mut big = campaign(&channel, e, "big-box", leased(&channel, "b").await, 0, pb::PreemptPolicy::On).await;
    let deposed = small.until(pb::CandidateState::Deposed).await;
    let deposed_at = Instant::now();
    assert_eq!(deposed.reason(), pb::DeposedReason::Preempted);
    let elected = big.until(pb::CandidateState::Elected).await;
    let elected_at = Instant::now();
    assert!(deposed_at <= elected_at);
    assert!(elected.fencing_token > first.fencing_token);
    assert_eq!(small.until(pb::CandidateState::Queued).await.position, 1, "a preempted leader stays queued");
    // A different explicit policy is refused.
    let status = ElectionClient::new(channel.clone())
        .campaign(pb::CampaignRequest {
            key: key(e, "third", &leased(&channel, "t").await),
            priority: 3,
            preempt: pb::PreemptPolicy::Off.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    instance.shutdown().await;
}

fn health(status: pb::HealthStatus) -> Option<pb::Health> {
    Some(pb::Health { status: status.into(), checks: vec![] })
}

#[tokio::test]
async fn an_unhealthy_leader_is_deposed_and_recovers_its_eligibility() {
    let zk = support::zk::shared();
    let instance = support::start_zkcoord(&zk.hosts(), &support::namespace("election-health")).await;
    let channel = support::channel(instance.addr()).await;
    let e = "gated";
    let keep =
        |health| Keeper::start(vec![instance.addr()], Duration::from_secs(3), Duration::from_millis(200), health);
    let master_lease = keep(None).await;
    let mut master =
        campaign(&channel, e, "master", (master_lease.id, master_lease.secret.clone()), 0, pb::PreemptPolicy::Off)
            .await;
    master.until(pb::CandidateState::Elected).await;
    let standby_lease = keep(None).await;
    let mut standby =
        campaign(&channel, e, "standby", (standby_lease.id, standby_lease.secret.clone()), 1, pb::PreemptPolicy::Off)
            .await;
    standby.until(pb::CandidateState::Queued).await;

    // The master loses its database: its heartbeats say NOT_SERVING.
    master_lease.stop();
    let sick = Keeper::resume(
        vec![instance.addr()],
        master_lease.id,
        &master_lease.secret,
        Duration::from_millis(200),
        health(pb::HealthStatus::NotServing),
    );
    let deposed = master.until(pb::CandidateState::Deposed).await;
    assert_eq!(deposed.reason(), pb::DeposedReason::Unhealthy);
    standby.until(pb::CandidateState::Elected).await;
    let candidates = ElectionClient::new(channel.clone())
        .candidates(pb::CandidatesRequest { election: e.into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .candidates;
    let master_info = candidates.iter().find(|c| c.candidate_id == "master").unwrap();
    assert!(!master_info.eligible);

    // It recovers: eligible again, queued behind the sitting leader (preempt off).
    sick.stop();
    let _healthy =
        Keeper::resume(vec![instance.addr()], master_lease.id, &master_lease.secret, Duration::from_millis(200), None);
    support::eventually(WAIT, "the master is eligible again", || async {
        ElectionClient::new(channel.clone())
            .candidates(pb::CandidatesRequest { election: e.into(), ..Default::default() })
            .await
            .unwrap()
            .into_inner()
            .candidates
            .iter()
            .any(|c| c.candidate_id == "master" && c.eligible)
    })
    .await;
    assert_eq!(leader(&channel, e).await.unwrap().candidate_id, "standby");
    instance.shutdown().await;
}

#[tokio::test]
async fn transfer_hands_over_gracefully_and_checks_its_caller() {
    let zk = support::zk::shared();
    let ns = support::namespace("election-transfer");
    let a = support::start_zkcoord(&zk.hosts(), &ns).await;
    let b = support::start_zkcoord(&zk.hosts(), &ns).await;
    let on_a = support::channel(a.addr()).await;
    let on_b = support::channel(b.addr()).await;
    let e = "rolling";
    let mut one = campaign(&on_a, e, "node-1", leased(&on_a, "1").await, 0, pb::PreemptPolicy::Off).await;
    let first = one.until(pb::CandidateState::Elected).await;
    let mut two = campaign(&on_b, e, "node-2", leased(&on_b, "2").await, 1, pb::PreemptPolicy::Off).await;
    two.until(pb::CandidateState::Queued).await;

    // Refusals: unknown target, a caller that is not the leader, a stale term.
    let mut client = ElectionClient::new(on_b.clone());
    let transfer = |target: &str, from, term| pb::TransferRequest {
        election: e.into(),
        target_candidate_id: target.into(),
        from,
        term,
    };
    for request in [
        transfer("nobody", None, 0),
        transfer("node-2", key(e, "node-2", &two.lease), 0),
        transfer("node-2", None, 7),
        transfer("node-1", None, 0),
    ] {
        let status = client.transfer(request).await.unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    }

    let response =
        client.transfer(transfer("node-2", key(e, "node-1", &one.lease), first.term)).await.unwrap().into_inner();
    let new_leader = response.leader.unwrap();
    assert_eq!(new_leader.candidate_id, "node-2");
    let deposed = one.until(pb::CandidateState::Deposed).await;
    assert_eq!(deposed.reason(), pb::DeposedReason::Transferred);
    let elected = two.until(pb::CandidateState::Elected).await;
    assert_eq!(elected.fencing_token, new_leader.fencing_token);
    assert!(elected.fencing_token > first.fencing_token);

    // And back, with "next".
    let response = ElectionClient::new(on_a.clone()).transfer(transfer("", None, 0)).await.unwrap().into_inner();
    assert_eq!(response.leader.unwrap().candidate_id, "node-1");
    one.until(pb::CandidateState::Elected).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn bad_requests_get_clear_statuses() {
    let zk = support::zk::shared();
    let instance = support::start_zkcoord(&zk.hosts(), &support::namespace("election-bad")).await;
    let channel = support::channel(instance.addr()).await;
    let mut client = ElectionClient::new(channel.clone());
    let e = "strict";
    let lease = leased(&channel, "x").await;
    let mut leader_candidate = campaign(&channel, e, "leader", lease.clone(), 0, pb::PreemptPolicy::Off).await;
    let elected = leader_candidate.until(pb::CandidateState::Elected).await;
    let other = leased(&channel, "y").await;
    let mut follower = campaign(&channel, e, "follower", other.clone(), 1, pb::PreemptPolicy::Off).await;
    follower.until(pb::CandidateState::Queued).await;

    // Wrong secret.
    let wrong = (lease.0, "guess".to_string());
    let status =
        client.campaign(pb::CampaignRequest { key: key(e, "leader", &wrong), ..Default::default() }).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    // A candidate id taken by another lease.
    let status =
        client.campaign(pb::CampaignRequest { key: key(e, "leader", &other), ..Default::default() }).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    // Proclaim and Resign by a non-leader; a stale term.
    let status = client
        .proclaim(pb::ProclaimRequest { key: key(e, "follower", &other), term: elected.term, value: b"x".to_vec() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    let status = client
        .resign(pb::ResignRequest { key: key(e, "follower", &other), term: elected.term, stay_candidate: false })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    let status = client
        .resign(pb::ResignRequest { key: key(e, "stranger", &other), term: 0, stay_candidate: false })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    // Proclaim by the leader works and is seen.
    client
        .proclaim(pb::ProclaimRequest {
            key: key(e, "leader", &lease),
            term: elected.term,
            value: b"10.0.0.7:9000".to_vec(),
        })
        .await
        .unwrap();
    support::eventually(WAIT, "the proclaimed value is visible", || async {
        leader(&channel, e).await.is_some_and(|l| l.value == b"10.0.0.7:9000")
    })
    .await;
    // Values over 64 KiB.
    let status = client
        .proclaim(pb::ProclaimRequest {
            key: key(e, "leader", &lease),
            term: elected.term,
            value: vec![0; 64 * 1024 + 1],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    // No leader for an election nobody campaigned in.
    assert!(leader(&channel, "empty-election").await.is_none());
    instance.shutdown().await;
}

/// (c) Across two instances, through a storm of transfers and a restart of every instance:
/// no two candidates ever hold ELECTED at the same time as seen by their streams, and every
/// term's fencing token is greater than every earlier one.
#[tokio::test]
async fn no_overlapping_leaders_and_growing_tokens_across_instances_and_restarts() {
    let zk = support::zk::shared();
    let ns = support::namespace("election-overlap");
    let a = support::start_zkcoord(&zk.hosts(), &ns).await;
    let b = support::start_zkcoord(&zk.hosts(), &ns).await;
    let on_a = support::channel(a.addr()).await;
    let on_b = support::channel(b.addr()).await;
    let e = "storm";
    let lease_1 = leased(&on_a, "1").await;
    let lease_2 = leased(&on_b, "2").await;
    let one = campaign(&on_a, e, "one", lease_1.clone(), 0, pb::PreemptPolicy::Off).await;
    let two = campaign(&on_b, e, "two", lease_2.clone(), 0, pb::PreemptPolicy::Off).await;

    // Each stream's intervals of leadership, by arrival time at this (one) process.
    let (events_tx, mut events_rx) = tokio::sync::mpsc::unbounded_channel();
    for mut candidate in [one, two] {
        let events = events_tx.clone();
        tokio::spawn(async move {
            while let Some(Some(status)) = candidate.statuses.recv().await {
                let _ = events.send((candidate.id.clone(), status.state(), status.fencing_token, Instant::now()));
            }
        });
    }
    let mut client = ElectionClient::new(on_a.clone());
    for i in 0..20 {
        let instance = if i % 2 == 0 { &on_a } else { &on_b };
        // Transfer needs a leader; the first round may still be electing.
        support::eventually(WAIT, "a leader exists", || async { leader(instance, e).await.is_some() }).await;
        client = ElectionClient::new(instance.clone());
        client.transfer(pb::TransferRequest { election: e.into(), ..Default::default() }).await.unwrap();
    }
    // Read where the last transfer ran (on b): its view includes the transfer's outcome; a's
    // may still be catching up (Leader answers from each instance's own view).
    let before_restart = leader(&on_b, e).await.unwrap();
    a.shutdown().await;
    b.shutdown().await;
    drop(client);
    let c = support::start_zkcoord(&zk.hosts(), &ns).await;
    let on_c = support::channel(c.addr()).await;
    let again = campaign(
        &on_c,
        e,
        &before_restart.candidate_id,
        if before_restart.candidate_id == "one" { lease_1.clone() } else { lease_2.clone() },
        0,
        pb::PreemptPolicy::Off,
    )
    .await;
    let other_id = if before_restart.candidate_id == "one" { "two" } else { "one" };
    let other = campaign(
        &on_c,
        e,
        other_id,
        if other_id == "one" { lease_1.clone() } else { lease_2.clone() },
        0,
        pb::PreemptPolicy::Off,
    )
    .await;
    support::eventually(WAIT, "the leader is visible after the restart", || async { leader(&on_c, e).await.is_some() })
        .await;
    let response = ElectionClient::new(on_c.clone())
        .transfer(pb::TransferRequest { election: e.into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    drop((again, other));
    assert!(response.leader.unwrap().fencing_token > before_restart.fencing_token, "tokens grow across restarts");
    c.shutdown().await;

    drop(events_tx);
    let mut events = Vec::new();
    while let Some(event) = events_rx.recv().await {
        events.push(event);
    }
    let mut holder: Option<String> = None;
    let mut last_token = 0;
    let mut terms = 0;
    for (id, state, token, _) in &events {
        match state {
            pb::CandidateState::Elected => {
                assert!(
                    holder.is_none() || holder.as_ref() == Some(id),
                    "{id} elected while {holder:?} still held ELECTED"
                );
                assert!(*token > last_token || holder.as_ref() == Some(id), "token {token} after {last_token}");
                if holder.as_ref() != Some(id) {
                    terms += 1;
                }
                last_token = *token;
                holder = Some(id.clone());
            }
            pb::CandidateState::Deposed | pb::CandidateState::Unconfirmed | pb::CandidateState::Queued
                if holder.as_ref() == Some(id) =>
            {
                holder = None;
            }
            _ => {}
        }
    }
    assert!(terms >= 20, "{terms} leaderships seen");
}

/// A deposed leader that never acknowledges (its Campaign stream closed, or its client is
/// stuck) may still hold heartbeat answers listing its leadership: its successor is elected only
/// once those can no longer be trusted — the deposition seen for its lease's ttl plus the proof
/// window and a margin — and then surely (nobody waits forever for a silent leader).
#[tokio::test]
async fn a_deposed_leader_that_never_acknowledges_is_replaced_once_its_validity_ran_out() {
    let zk = support::zk::shared();
    let ns = support::namespace("election-streamless");
    let a = support::start_zkcoord(&zk.hosts(), &ns).await;
    let b = support::start_zkcoord(&zk.hosts(), &ns).await;
    let on_a = support::channel(a.addr()).await;
    let on_b = support::channel(b.addr()).await;
    let e = "streamless";
    let ttl = Duration::from_secs(2);
    let keeper = Keeper::start(vec![a.addr()], ttl, Duration::from_millis(300), None).await;
    let lease_one = (keeper.id, keeper.secret.clone());
    let mut one = campaign(&on_a, e, "node-1", lease_one.clone(), 0, pb::PreemptPolicy::Off).await;
    let first = one.until(pb::CandidateState::Elected).await;
    let mut two = campaign(&on_b, e, "node-2", leased(&on_b, "2").await, 1, pb::PreemptPolicy::Off).await;
    two.until(pb::CandidateState::Queued).await;
    drop(one); // no acknowledgement will come
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(leader(&on_b, e).await.unwrap().candidate_id, "node-1", "the candidacy outlives its stream");

    let started = Instant::now();
    let response = ElectionClient::new(on_b.clone())
        .transfer(pb::TransferRequest { election: e.into(), target_candidate_id: "node-2".into(), from: None, term: 0 })
        .await
        .expect("the transfer completes");
    let took = started.elapsed();
    let new_leader = response.into_inner().leader.unwrap();
    assert_eq!(new_leader.candidate_id, "node-2");
    let elected = two.until(pb::CandidateState::Elected).await;
    assert!(elected.fencing_token > first.fencing_token);
    // ttl + 1 s window + 250 ms margin after the deposition; generous upper bound.
    assert!(
        took >= ttl + Duration::from_secs(1),
        "successor elected after {took:?}: before the leader's validity ran out"
    );
    assert!(took < ttl + Duration::from_secs(8), "transfer took {took:?}");
    // The lease never stopped heartbeating: the old leader's validity is what was waited for.
    assert!(keeper.beats().iter().rev().take(3).all(|b| b.confirmed), "the deposed leader's lease stayed confirmed");
    drop(keeper);
    a.shutdown().await;
    b.shutdown().await;
}

/// A Campaign stream whose client stops reading is ended with RESOURCE_EXHAUSTED once
/// hundreds of statuses wait for it, instead of growing the instance's memory; its candidacy
/// lives on (it leads no less).
#[tokio::test]
async fn a_campaign_stream_that_is_not_read_is_ended_when_too_far_behind() {
    let zk = support::zk::shared();
    let instance = support::start_zkcoord(&zk.hosts(), &support::namespace("election-behind")).await;
    let channel = support::channel(instance.addr()).await;
    let e = "behind";
    let mut one = campaign(&channel, e, "leader", leased(&channel, "1").await, 0, pb::PreemptPolicy::Off).await;
    let first = one.until(pb::CandidateState::Elected).await;
    // This client does not read its stream (no background reader).
    let mut idle = ElectionClient::new(channel.clone())
        .campaign(campaign_request(e, "idle", &leased(&channel, "2").await, 1, pb::PreemptPolicy::Off))
        .await
        .unwrap()
        .into_inner();

    // Each new leader value is a new status for the queued candidate, which does not read.
    let mut client = ElectionClient::new(channel.clone());
    for i in 0..600 {
        let mut value = format!("value-{i}-").into_bytes();
        value.resize(32 * 1024, b'.');
        let request = pb::ProclaimRequest { key: key(e, "leader", &one.lease), term: first.term, value };
        client.proclaim(request).await.unwrap();
    }
    let ended = loop {
        match tokio::time::timeout(WAIT, idle.message()).await.expect("the stream moves") {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!((ended.code(), ended.message()), (Code::ResourceExhausted, "stream fell too far behind"));
    let candidates = client
        .candidates(pb::CandidatesRequest { election: e.into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(candidates.candidates.len(), 2, "the candidacy lives on");
    assert_eq!(leader(&channel, e).await.unwrap().term, first.term);
    drop(one);
    instance.shutdown().await;
}

/// A candidate znode whose data is not a candidate record (written behind zkcoord's back, as
/// anyone may when `zookeeper_auth` is off) is skipped: the election goes on electing and
/// serving the real candidates, and the junk is neither listed nor elected.
#[tokio::test]
async fn an_undecodable_candidate_znode_does_not_wedge_the_election() {
    use zkcoord::testing::{Name, layout};
    let zk = support::zk::shared();
    let ns = support::namespace("election-junk");
    let instance = support::start_zkcoord(&zk.hosts(), &ns).await;
    let channel = support::channel(instance.addr()).await;
    let e = "junked";
    let mut first = campaign(&channel, e, "first", leased(&channel, "1").await, 0, pb::PreemptPolicy::Off).await;
    first.until(pb::CandidateState::Elected).await;

    let raw = support::zk_client(&zk.hosts()).await.chroot(ns.as_str()).unwrap();
    let junk = layout::candidate(&Name::parse("election", e).unwrap(), &Name::parse("candidate", "junk").unwrap());
    let anyone = zookeeper_client::CreateMode::Persistent.with_acls(zookeeper_client::Acls::anyone_all());
    raw.create(&junk, b"\xff not a candidate record", &anyone).await.unwrap();

    // A new candidate makes the instance list (and read) the candidates again.
    let mut second = campaign(&channel, e, "second", leased(&channel, "2").await, 1, pb::PreemptPolicy::Off).await;
    assert_eq!(second.until(pb::CandidateState::Queued).await.position, 1);
    assert_eq!(leader(&channel, e).await.unwrap().candidate_id, "first");
    let mut client = ElectionClient::new(channel.clone());
    let listed = client
        .candidates(pb::CandidatesRequest { election: e.into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = listed.candidates.iter().map(|c| c.candidate_id.as_str()).collect();
    assert_eq!(ids, ["first", "second"], "the junk is not a candidate");

    // Leadership still moves on; junk rewritten (still junk) changes nothing.
    raw.set_data(&junk, b"{\"lease_id\": \"no\"}", None).await.unwrap();
    let request = pb::ResignRequest { key: key(e, "first", &first.lease), term: 1, stay_candidate: false };
    client.resign(request).await.unwrap();
    let elected = second.until(pb::CandidateState::Elected).await;
    assert_eq!(elected.term, 2);
    assert_eq!(leader(&channel, e).await.unwrap().candidate_id, "second");
    // Nobody can take the junk's id over, and it is nobody's candidacy to resign.
    let lease = leased(&channel, "3").await;
    let status =
        client.campaign(pb::CampaignRequest { key: key(e, "junk", &lease), ..Default::default() }).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let status = client
        .resign(pb::ResignRequest { key: key(e, "junk", &lease), term: 0, stay_candidate: false })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    instance.shutdown().await;
}

/// The version of lease `id`'s record under namespace `ns` (each write bumps it).
async fn lease_version(zk: &zookeeper_client::Client, ns: &str, id: i64) -> i32 {
    zk.check_stat(&format!("{ns}/leases/{id}")).await.unwrap().unwrap().version
}

#[tokio::test]
async fn a_leader_flapping_its_health_costs_bounded_writes_and_is_deposed_soon_once_it_stays_not_serving() {
    let zk = support::zk::shared();
    let ns = support::namespace("election-flapping");
    let instance = support::start_zkcoord(&zk.hosts(), &ns).await; // 2 health writes a second
    let channel = support::channel(instance.addr()).await;
    let zk_client = support::zk_client(&zk.hosts()).await;
    let e = "flapping";
    let keep =
        |health| Keeper::start(vec![instance.addr()], Duration::from_secs(3), Duration::from_millis(200), health);
    let master_lease = keep(None).await;
    let mut master =
        campaign(&channel, e, "master", (master_lease.id, master_lease.secret.clone()), 0, pb::PreemptPolicy::Off)
            .await;
    master.until(pb::CandidateState::Elected).await;
    let standby_lease = keep(None).await;
    let mut standby =
        campaign(&channel, e, "standby", (standby_lease.id, standby_lease.secret.clone()), 1, pb::PreemptPolicy::Off)
            .await;
    standby.until(pb::CandidateState::Queued).await;

    // It flaps between SERVING and DEGRADED (both eligible) as fast as it can, then stays
    // NOT_SERVING.
    master_lease.stop();
    let before = lease_version(&zk_client, &ns, master_lease.id).await;
    let started = Instant::now();
    let flapped = support::lease::flap(
        &channel,
        master_lease.id,
        &master_lease.secret,
        Duration::from_secs(2),
        &[health(pb::HealthStatus::Serving), health(pb::HealthStatus::Degraded)],
        health(pb::HealthStatus::NotServing),
    )
    .await;
    let settled = Instant::now();
    let _sick = Keeper::resume(
        vec![instance.addr()],
        master_lease.id,
        &master_lease.secret,
        Duration::from_millis(200),
        health(pb::HealthStatus::NotServing),
    );
    let deposed = master.until(pb::CandidateState::Deposed).await;
    let deposed_after = settled.elapsed();
    assert_eq!(deposed.reason(), pb::DeposedReason::Unhealthy);
    // The NOT_SERVING write waits at most 500 ms for its window; the rest is slack for a
    // loaded machine.
    assert!(deposed_after < Duration::from_secs(3), "deposed {deposed_after:?} after it stayed NOT_SERVING");
    let writes = lease_version(&zk_client, &ns, master_lease.id).await - before;
    let bound = (started.elapsed().as_secs_f64() * 2.0).ceil() as i32 + 2;
    assert!(writes <= bound, "{writes} writes for {} heartbeats; at most {bound}", flapped.answered);
    assert!(flapped.answered >= 100, "it flapped at a high rate: {flapped:?}");
    standby.until(pb::CandidateState::Elected).await;
    instance.shutdown().await;
}

#[tokio::test]
async fn a_health_flap_shorter_than_unhealthy_for_does_not_depose_a_longer_one_does() {
    let zk = support::zk::shared();
    let instance = support::start_zkcoord(&zk.hosts(), &support::namespace("election-unhealthy-for")).await;
    let channel = support::channel(instance.addr()).await;
    let e = "hysteresis";
    let beat = Duration::from_millis(200);
    let keep = |health| Keeper::start(vec![instance.addr()], Duration::from_secs(3), beat, health);
    let master_lease = keep(None).await;
    let lease = (master_lease.id, master_lease.secret.clone());
    let request = pb::CampaignRequest {
        unhealthy_for_ms: 3000,
        ..campaign_request(e, "master", &lease, 0, pb::PreemptPolicy::Off)
    };
    let mut master = campaign_with(&channel, request, lease).await;
    let first = master.until(pb::CandidateState::Elected).await;
    let standby_lease = keep(None).await;
    let mut standby =
        campaign(&channel, e, "standby", (standby_lease.id, standby_lease.secret.clone()), 1, pb::PreemptPolicy::Off)
            .await;
    standby.until(pb::CandidateState::Queued).await;
    let resume = |health| Keeper::resume(vec![instance.addr()], master_lease.id, &master_lease.secret, beat, health);

    // NOT_SERVING for about a second, then SERVING again: it stays the leader.
    master_lease.stop();
    let sick = resume(health(pb::HealthStatus::NotServing));
    support::eventually(WAIT, "the flap is seen", || async {
        ElectionClient::new(channel.clone())
            .candidates(pb::CandidatesRequest { election: e.into(), ..Default::default() })
            .await
            .unwrap()
            .into_inner()
            .candidates
            .iter()
            .any(|c| c.candidate_id == "master" && !c.eligible)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    sick.stop();
    let healthy = resume(None);
    tokio::time::sleep(Duration::from_secs(4)).await; // past unhealthy_for since the flap began
    let info = leader(&channel, e).await.unwrap();
    assert_eq!((info.candidate_id.as_str(), info.term), ("master", first.term), "a short flap deposes nobody");
    while let Ok(Some(status)) = master.statuses.try_recv() {
        assert_ne!(status.state(), pb::CandidateState::Deposed, "{status:?}");
    }

    // NOT_SERVING for good: deposed once it held for unhealthy_for, not before.
    healthy.stop();
    let sick_at = Instant::now();
    let _sick = resume(health(pb::HealthStatus::NotServing));
    let deposed = master.until(pb::CandidateState::Deposed).await;
    let after = sick_at.elapsed();
    assert_eq!(deposed.reason(), pb::DeposedReason::Unhealthy);
    assert!(after >= Duration::from_secs(3), "deposed after {after:?}, before unhealthy_for");
    assert!(after < Duration::from_secs(3) + WAIT, "deposed after {after:?}");
    standby.until(pb::CandidateState::Elected).await;
    instance.shutdown().await;
}

#[tokio::test]
async fn healthy_for_delays_preemption_by_a_recovered_candidate() {
    let zk = support::zk::shared();
    let instance = support::start_zkcoord(&zk.hosts(), &support::namespace("election-healthy-for")).await;
    let channel = support::channel(instance.addr()).await;
    let e = "hysteresis-preempt";
    let beat = Duration::from_millis(200);
    let keep = |health| Keeper::start(vec![instance.addr()], Duration::from_secs(3), beat, health);
    let small_lease = keep(None).await;
    let mut small =
        campaign(&channel, e, "small", (small_lease.id, small_lease.secret.clone()), 5, pb::PreemptPolicy::On).await;
    small.until(pb::CandidateState::Elected).await;
    let big_lease = keep(health(pb::HealthStatus::NotServing)).await;
    let lease = (big_lease.id, big_lease.secret.clone());
    let request =
        pb::CampaignRequest { healthy_for_ms: 3000, ..campaign_request(e, "big", &lease, 0, pb::PreemptPolicy::On) };
    let mut big = campaign_with(&channel, request, lease).await;
    big.until(pb::CandidateState::Queued).await;

    // It recovers: it preempts only once it has been healthy for healthy_for.
    big_lease.stop();
    let healthy_at = Instant::now();
    let _healthy = Keeper::resume(vec![instance.addr()], big_lease.id, &big_lease.secret, beat, None);
    let deposed = small.until(pb::CandidateState::Deposed).await;
    let after = healthy_at.elapsed();
    assert_eq!(deposed.reason(), pb::DeposedReason::Preempted);
    assert!(after >= Duration::from_secs(3), "preempted after {after:?}, before healthy_for");
    big.until(pb::CandidateState::Elected).await;
    instance.shutdown().await;
}

/// A Campaign naming the other preemption policy than the election's is refused, on an
/// instance that follows the election (it knows the policy) as on one that does not (it reads
/// it); naming none, or the same, is accepted on both.
#[tokio::test]
async fn a_campaign_naming_the_other_preempt_policy_is_refused() {
    let zk = support::zk::shared();
    let ns = support::namespace("election-policy");
    let a = support::start_zkcoord(&zk.hosts(), &ns).await;
    let b = support::start_zkcoord(&zk.hosts(), &ns).await;
    let (on_a, on_b) = (support::channel(a.addr()).await, support::channel(b.addr()).await);
    let e = "policed";
    let mut first = campaign(&on_a, e, "first", leased(&on_a, "f").await, 0, pb::PreemptPolicy::On).await;
    first.until(pb::CandidateState::Elected).await;
    for (channel, on) in [(&on_a, "the following instance"), (&on_b, "another instance")] {
        let lease = leased(channel, "o").await;
        let refused = ElectionClient::new(channel.clone())
            .campaign(campaign_request(e, "other", &lease, 1, pb::PreemptPolicy::Off))
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition, "on {on}: {refused:?}");
        assert_eq!(refused.message(), "the election has a different preempt policy", "on {on}");
    }
    for (channel, id, policy) in
        [(&on_b, "same", pb::PreemptPolicy::On), (&on_a, "any", pb::PreemptPolicy::Unspecified)]
    {
        let mut accepted = campaign(channel, e, id, leased(channel, id).await, 1, policy).await;
        accepted.until(pb::CandidateState::Queued).await;
    }
    b.shutdown().await;
    a.shutdown().await;
}
