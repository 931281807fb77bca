//! Removal of what nobody uses any more: an election with no candidacy left is removed by the
//! cleanup within its period, and a later Campaign creates it again with terms and fencing
//! tokens above the old ones; an empty lock key is a ZooKeeper container (removed by the
//! ensemble), and a later Lock creates it again with a greater fencing token.

#![allow(clippy::unwrap_used)]

use crate::support;

use std::time::Duration;

use support::{
    lease::{grant, lease_ref},
    lock::{EXCLUSIVE, Locker},
};
use tonic::{Streaming, transport::Channel};
use zkcoord::pb::v1::{self as pb, election_client::ElectionClient};

const TTL: Duration = Duration::from_secs(60);
/// ZooKeeper's container manager runs every 60 s by default: generous bound.
const CONTAINER_REMOVED_WITHIN: Duration = Duration::from_secs(150);
/// The cleanup removes an election 10 to 20 s after its last candidacy ended: generous bound.
const REMOVED_WITHIN: Duration = Duration::from_secs(60);

fn key(election: &str, id: &str, lease: &pb::GrantResponse) -> Option<pb::CandidateKey> {
    Some(pb::CandidateKey {
        election: election.into(),
        candidate_id: id.into(),
        lease: lease_ref(lease.lease_id, &lease.secret),
    })
}

/// Campaigns as `id` and waits until elected: the stream and the ELECTED status.
async fn elected(
    channel: &Channel,
    election: &str,
    id: &str,
    lease: &pb::GrantResponse,
) -> (Streaming<pb::CampaignResponse>, pb::CampaignResponse) {
    let request =
        pb::CampaignRequest { key: key(election, id, lease), value: id.as_bytes().to_vec(), ..Default::default() };
    let mut stream = ElectionClient::new(channel.clone()).campaign(request).await.unwrap().into_inner();
    loop {
        let status = tokio::time::timeout(Duration::from_secs(15), stream.message())
            .await
            .expect("a status")
            .unwrap()
            .expect("the stream lives");
        if status.state() == pb::CandidateState::Elected {
            return (stream, status);
        }
    }
}

async fn resign(channel: &Channel, election: &str, id: &str, lease: &pb::GrantResponse) {
    let request = pb::ResignRequest { key: key(election, id, lease), term: 0, stay_candidate: false };
    ElectionClient::new(channel.clone()).resign(request).await.unwrap();
}

async fn exists(zk: &zookeeper_client::Client, path: &str) -> bool {
    zk.check_stat(path).await.unwrap().is_some()
}

#[tokio::test]
async fn an_election_nobody_campaigns_in_is_removed_and_its_terms_and_tokens_keep_growing() {
    let zk = support::zk::shared();
    let ns = support::namespace("cleanup-election");
    let instance = support::start_zkcoord(&zk.hosts(), &ns).await;
    let channel = support::channel(instance.addr()).await;
    let zk_client = support::zk_client(&zk.hosts()).await;
    let lease = grant(&channel, "tidy", TTL).await;
    let (e, path) = ("tidy", format!("{ns}/elections/tidy"));

    // Two terms, then nobody left.
    let (first_stream, first) = elected(&channel, e, "a", &lease).await;
    resign(&channel, e, "a", &lease).await;
    let (second_stream, second) = elected(&channel, e, "b", &lease).await;
    assert!(second.term > first.term && second.fencing_token > first.fencing_token);
    resign(&channel, e, "b", &lease).await;
    drop((first_stream, second_stream));
    // An election someone still campaigns in stays.
    let (_busy_stream, _) = elected(&channel, "busy", "c", &lease).await;

    support::eventually(REMOVED_WITHIN, "the empty election is removed", || async { !exists(&zk_client, &path).await })
        .await;
    assert!(exists(&zk_client, &format!("{ns}/elections/busy")).await, "an election with a candidate stays");
    let (floor, _) = zk_client.get_data(&format!("{ns}/elections")).await.unwrap();
    let floor: serde_json::Value = serde_json::from_slice(&floor).unwrap();
    assert_eq!(floor["term_floor"].as_i64(), Some(second.term), "the removed election's term is kept: {floor}");

    // Campaigning again creates it again; terms and fencing tokens continue above the old ones.
    let (_third_stream, third) = elected(&channel, e, "a", &lease).await;
    assert!(third.term > second.term, "terms keep growing: {} after {}", third.term, second.term);
    assert!(third.fencing_token > second.fencing_token, "fencing tokens keep growing");
    assert!(exists(&zk_client, &path).await);
    instance.shutdown().await;
}

#[tokio::test]
async fn an_empty_lock_key_is_a_container_and_a_lock_after_its_removal_gets_a_greater_token() {
    let zk = support::zk::shared();
    let ns = support::namespace("cleanup-lock");
    let instance = support::start_zkcoord(&zk.hosts(), &ns).await;
    let channel = support::channel(instance.addr()).await;
    let zk_client = support::zk_client(&zk.hosts()).await;
    let locker = Locker::granted(&channel, "tidy", TTL).await;
    let path = format!("{ns}/locks/tidy-key");

    let held = locker.lock(&["tidy-key"], EXCLUSIVE, 1000).await.unwrap();
    locker.unlock(&held.handle).await.unwrap();
    assert!(zk_client.list_children(&path).await.unwrap().is_empty(), "nobody left in the key");
    // The ensemble's container manager deletes it (every `znode.container.checkIntervalMs`,
    // 60 s by default, which the test ZooKeeper keeps).
    support::eventually(CONTAINER_REMOVED_WITHIN, "ZooKeeper removes the empty key", || async {
        !exists(&zk_client, &path).await
    })
    .await;
    let again = locker.lock(&["tidy-key"], EXCLUSIVE, 1000).await.unwrap();
    assert!(
        again.tokens[0].fencing_token > held.tokens[0].fencing_token,
        "fencing tokens keep growing across the key's removal"
    );
    locker.unlock(&again.handle).await.unwrap();
    instance.shutdown().await;
}
