//! Paging of the list calls (Lease.List, Lock.Holders, Election.Candidates, Shards.Members): every item is
//! returned exactly once across pages of `page_size`, pages are bounded, and a token no answer
//! returned is refused with INVALID_ARGUMENT.

#![allow(clippy::unwrap_used)]

use crate::support;

use std::{collections::BTreeSet, time::Duration};

use support::{
    lease::{grant, lease_ref},
    lock::{EXCLUSIVE, Locker},
};
use tonic::{Code, transport::Channel};
use zkcoord::pb::v1::{
    self as pb, election_client::ElectionClient, lease_client::LeaseClient, lock_client::LockClient,
    shards_client::ShardsClient,
};

const TTL: Duration = Duration::from_secs(60);
/// The stable message of a refused page token.
const BAD_TOKEN: &str = "page_token: is not a page token of this call";

/// Pages through Lease.List with `page_size`; the lease ids of each page.
async fn lease_pages(channel: &Channel, page_size: u32) -> Vec<Vec<i64>> {
    let mut pages = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = pb::ListRequest { page_size, page_token };
        let page = LeaseClient::new(channel.clone()).list(request).await.unwrap().into_inner();
        pages.push(page.leases.iter().map(|l| l.lease_id).collect());
        if page.next_page_token.is_empty() {
            return pages;
        }
        page_token = page.next_page_token;
        assert!(pages.len() < 100, "paging ends");
    }
}

#[tokio::test]
async fn list_pages_through_every_lease_exactly_once() {
    let zk = support::zk::shared();
    let instance = support::start_zkcoord(&zk.hosts(), &support::namespace("paging-leases")).await;
    let channel = support::channel(instance.addr()).await;
    let mut granted = BTreeSet::new();
    for i in 0..23 {
        granted.insert(grant(&channel, &format!("owner-{i}"), TTL).await.lease_id);
    }
    let pages = lease_pages(&channel, 5).await;
    assert_eq!(pages.len(), 5, "23 leases in pages of 5: {pages:?}");
    assert!(pages.iter().all(|p| p.len() <= 5), "{pages:?}");
    let listed: Vec<i64> = pages.concat();
    assert_eq!(listed.len(), granted.len(), "each lease once: {listed:?}");
    assert_eq!(listed.iter().copied().collect::<BTreeSet<_>>(), granted);
    assert!(listed.windows(2).all(|w| w[0] < w[1]), "in lease id order: {listed:?}");
    // 0 means the default page size (100): everything on one page here.
    assert_eq!(lease_pages(&channel, 0).await, vec![listed.clone()]);

    // A lease revoked between pages is not listed once gone; the leases that live throughout
    // are still listed once each.
    let extra = grant(&channel, "extra", TTL).await;
    let first = LeaseClient::new(channel.clone())
        .list(pb::ListRequest { page_size: 5, page_token: String::new() })
        .await
        .unwrap()
        .into_inner();
    LeaseClient::new(channel.clone())
        .revoke(pb::RevokeRequest { lease: lease_ref(extra.lease_id, &extra.secret) })
        .await
        .unwrap();
    let mut all: Vec<i64> = first.leases.iter().map(|l| l.lease_id).collect();
    let mut page_token = first.next_page_token;
    while !page_token.is_empty() {
        let page = LeaseClient::new(channel.clone())
            .list(pb::ListRequest { page_size: 5, page_token })
            .await
            .unwrap()
            .into_inner();
        all.extend(page.leases.iter().map(|l| l.lease_id));
        page_token = page.next_page_token;
    }
    all.retain(|id| *id != extra.lease_id);
    assert_eq!(all, listed, "the leases that lived throughout, once each");
    instance.shutdown().await;
}

#[tokio::test]
async fn holders_page_through_every_key_exactly_once() {
    let zk = support::zk::shared();
    let instance = support::start_zkcoord(&zk.hosts(), &support::namespace("paging-holders")).await;
    let channel = support::channel(instance.addr()).await;
    let locker = Locker::granted(&channel, "holder", TTL).await;
    let keys: Vec<String> = (0..12).map(|i| format!("pg-{i:02}")).collect();
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let held = locker.try_lock(&key_refs, EXCLUSIVE).await.unwrap();
    assert!(held.acquired);
    // A key outside the prefix, and one with nobody left, are not listed.
    let other = locker.try_lock(&["other-key"], EXCLUSIVE).await.unwrap();
    assert!(other.acquired);
    let released = locker.try_lock(&["pg-99"], EXCLUSIVE).await.unwrap();
    locker.unlock(&released.handle).await.unwrap();

    let mut listed = Vec::new();
    let mut pages = 0;
    let mut page_token = String::new();
    loop {
        let request = pb::HoldersRequest { key: "pg-".into(), prefix: true, page_size: 5, page_token };
        let page = LockClient::new(channel.clone()).holders(request).await.unwrap().into_inner();
        assert!(page.keys.len() <= 5, "{page:?}");
        listed.extend(page.keys.iter().map(|k| k.key.clone()));
        pages += 1;
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
        assert!(pages < 100, "paging ends");
    }
    assert_eq!(listed, keys, "every held key once, in key order");
    assert!(pages >= 3, "12 keys in pages of 5: {pages} pages");

    // One key (no prefix): no paging needed.
    let one = pb::HoldersRequest { key: "pg-03".into(), prefix: false, ..Default::default() };
    let page = LockClient::new(channel.clone()).holders(one).await.unwrap().into_inner();
    assert_eq!(page.keys.len(), 1);
    assert!(page.next_page_token.is_empty());
    instance.shutdown().await;
}

#[tokio::test]
async fn candidates_page_through_every_candidate_exactly_once() {
    let zk = support::zk::shared();
    let instance = support::start_zkcoord(&zk.hosts(), &support::namespace("paging-candidates")).await;
    let channel = support::channel(instance.addr()).await;
    let lease = grant(&channel, "candidates", TTL).await;
    let election = "paged";
    // Priorities with ties (ties go to the earliest), campaigned in an order that is not
    // election order.
    let mut streams = Vec::new();
    let mut ids = Vec::new();
    for (i, priority) in [3, 1, 2, 1, 0, 3, 2, 1, 5].into_iter().enumerate() {
        let id = format!("c{i}");
        let request = pb::CampaignRequest {
            key: Some(pb::CandidateKey {
                election: election.into(),
                candidate_id: id.clone(),
                lease: lease_ref(lease.lease_id, &lease.secret),
            }),
            value: id.clone().into_bytes(),
            priority,
            preempt: pb::PreemptPolicy::Unspecified.into(),
            ..Default::default()
        };
        streams.push(ElectionClient::new(channel.clone()).campaign(request).await.unwrap().into_inner());
        ids.push(id);
    }
    let all = |page_size| {
        let channel = channel.clone();
        async move {
            let mut listed = Vec::new();
            let mut page_token = String::new();
            let mut pages = 0;
            loop {
                let request = pb::CandidatesRequest { election: election.into(), page_size, page_token };
                let page = ElectionClient::new(channel.clone()).candidates(request).await.unwrap().into_inner();
                assert!(page.candidates.len() <= page_size as usize || page_size == 0, "{page:?}");
                listed.extend(page.candidates);
                pages += 1;
                if page.next_page_token.is_empty() {
                    return (listed, pages);
                }
                page_token = page.next_page_token;
                assert!(pages < 100, "paging ends");
            }
        }
    };
    support::eventually(Duration::from_secs(15), "all candidates are seen", || async {
        all(0).await.0.len() == ids.len()
    })
    .await;
    let (whole, pages) = all(0).await;
    assert_eq!(pages, 1);
    let (paged, pages) = all(4).await;
    assert_eq!(pages, 3, "9 candidates in pages of 4");
    let order = |list: &[pb::CandidateInfo]| list.iter().map(|c| c.candidate_id.clone()).collect::<Vec<_>>();
    assert_eq!(order(&paged), order(&whole), "each candidate once, in election order");
    assert_eq!(order(&whole), ["c4", "c1", "c3", "c7", "c2", "c6", "c0", "c5", "c8"]);
    let positions: Vec<u32> = paged.iter().map(|c| c.position).collect();
    assert_eq!(positions, (0..9).collect::<Vec<u32>>(), "positions in the whole election order");
    drop(streams);
    instance.shutdown().await;
}

#[tokio::test]
async fn a_page_token_no_answer_returned_is_invalid_argument() {
    let zk = support::zk::shared();
    let instance = support::start_zkcoord(&zk.hosts(), &support::namespace("paging-tokens")).await;
    let channel = support::channel(instance.addr()).await;
    for _ in 0..3 {
        grant(&channel, "token", TTL).await;
    }
    let list_token = LeaseClient::new(channel.clone())
        .list(pb::ListRequest { page_size: 1, page_token: String::new() })
        .await
        .unwrap()
        .into_inner()
        .next_page_token;
    assert!(!list_token.is_empty());
    let check = |status: tonic::Status| {
        assert_eq!((status.code(), status.message()), (Code::InvalidArgument, BAD_TOKEN), "{status:?}");
    };
    for bad in ["garbage", "zz", "6c6561736573", &"ab".repeat(600)] {
        let list = pb::ListRequest { page_size: 1, page_token: bad.into() };
        check(LeaseClient::new(channel.clone()).list(list).await.unwrap_err());
        let holders = pb::HoldersRequest { key: "k".into(), prefix: true, page_size: 1, page_token: bad.into() };
        check(LockClient::new(channel.clone()).holders(holders).await.unwrap_err());
        let candidates = pb::CandidatesRequest { election: "e".into(), page_size: 1, page_token: bad.into() };
        check(ElectionClient::new(channel.clone()).candidates(candidates).await.unwrap_err());
    }
    // A token of one call is not one of another.
    let holders = pb::HoldersRequest { key: "k".into(), prefix: true, page_size: 1, page_token: list_token.clone() };
    check(LockClient::new(channel.clone()).holders(holders).await.unwrap_err());
    let candidates = pb::CandidatesRequest { election: "e".into(), page_size: 1, page_token: list_token };
    check(ElectionClient::new(channel.clone()).candidates(candidates).await.unwrap_err());
    instance.shutdown().await;
}

#[tokio::test]
async fn members_page_through_every_member_exactly_once() {
    let zk = support::zk::shared();
    let instance = support::start_zkcoord(&zk.hosts(), &support::namespace("paging-members")).await;
    let channel = support::channel(instance.addr()).await;
    let group = "paged";
    let mut members = Vec::new();
    for i in [4, 0, 6, 2, 5, 1, 3] {
        members.push(crate::shards::Member::join(&channel, group, &format!("m{i}"), 16, 1, true).await);
    }
    support::eventually(Duration::from_secs(15), "every member is seen", || async {
        let request = pb::MembersRequest { group: group.into(), ..Default::default() };
        ShardsClient::new(channel.clone()).members(request).await.unwrap().into_inner().members.len() == 7
    })
    .await;
    let mut listed = Vec::new();
    let mut pages = 0;
    let mut page_token = String::new();
    loop {
        let request = pb::MembersRequest { group: group.into(), page_size: 3, page_token };
        let page = ShardsClient::new(channel.clone()).members(request).await.unwrap().into_inner();
        assert!(page.members.len() <= 3, "{page:?}");
        assert_eq!(page.shard_count, 16);
        listed.extend(page.members.iter().map(|m| m.member_id.clone()));
        pages += 1;
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
        assert!(pages < 100, "paging ends");
    }
    assert_eq!(listed, (0..7).map(|i| format!("m{i}")).collect::<Vec<_>>(), "each member once, by id");
    assert_eq!(pages, 3, "7 members in pages of 3");
    let bad = pb::MembersRequest { group: group.into(), page_size: 3, page_token: "garbage".into() };
    let status = ShardsClient::new(channel.clone()).members(bad).await.unwrap_err();
    assert_eq!((status.code(), status.message()), (Code::InvalidArgument, BAD_TOKEN));
    drop(members);
    instance.shutdown().await;
}
