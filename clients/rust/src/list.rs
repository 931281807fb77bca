//! The list calls, paged through: Lease.List, Lock.Holders, Election.Candidates and
//! Shards.Members answer one
//! page at a time (`page_size`, `page_token`, `next_page_token`); these methods ask for every
//! page in turn and return everything.
//!
//! zkcoord keeps no snapshot between pages: an item that exists throughout the paging (and, for
//! a candidate, keeps its priority) is returned exactly once; one that appears or goes meanwhile
//! may or may not be. Each page is retried on the next endpoint like [`Client::retrying`].

use crate::{
    Client, Error,
    pb::{
        self, election_client::ElectionClient, lease_client::LeaseClient, lock_client::LockClient,
        shards_client::ShardsClient,
    },
};

/// The page size these methods ask for: the server's maximum.
pub const PAGE_SIZE: u32 = 1000;

impl Client {
    /// Every live lease, in lease id order (Lease.List, all pages).
    ///
    /// # Errors
    /// The first page that failed, as [`Client::retrying`] reports it.
    pub async fn list_leases(&self) -> Result<Vec<pb::LeaseInfo>, Error> {
        let mut leases = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = pb::ListRequest { page_size: PAGE_SIZE, page_token };
            let page = self
                .retrying(|channel| {
                    let request = request.clone();
                    async move { LeaseClient::new(channel).list(request).await }
                })
                .await?
                .into_inner();
            leases.extend(page.leases);
            if page.next_page_token.is_empty() {
                return Ok(leases);
            }
            page_token = page.next_page_token;
        }
    }

    /// The holders and waiter counts of `key`, or of every key starting with `key` when
    /// `prefix` (Lock.Holders, all pages), in key order.
    ///
    /// # Errors
    /// The first page that failed, as [`Client::retrying`] reports it.
    pub async fn holders(&self, key: &str, prefix: bool) -> Result<Vec<pb::KeyHolders>, Error> {
        let mut keys = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = pb::HoldersRequest { key: key.to_owned(), prefix, page_size: PAGE_SIZE, page_token };
            let page = self
                .retrying(|channel| {
                    let request = request.clone();
                    async move { LockClient::new(channel).holders(request).await }
                })
                .await?
                .into_inner();
            keys.extend(page.keys);
            if page.next_page_token.is_empty() {
                return Ok(keys);
            }
            page_token = page.next_page_token;
        }
    }

    /// Every candidate of `election` in election order, with the election's policy and term
    /// as of the last page (Election.Candidates, all pages; `next_page_token` is empty).
    ///
    /// # Errors
    /// The first page that failed, as [`Client::retrying`] reports it.
    pub async fn candidates(&self, election: &str) -> Result<pb::CandidatesResponse, Error> {
        let mut candidates = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = pb::CandidatesRequest { election: election.to_owned(), page_size: PAGE_SIZE, page_token };
            let mut page = self
                .retrying(|channel| {
                    let request = request.clone();
                    async move { ElectionClient::new(channel).candidates(request).await }
                })
                .await?
                .into_inner();
            candidates.append(&mut page.candidates);
            if page.next_page_token.is_empty() {
                return Ok(pb::CandidatesResponse { candidates, ..page });
            }
            page_token = page.next_page_token;
        }
    }

    /// Every member of shard group `group` in member id order, with the shard count and the
    /// drained member ids as of the last page (Shards.Members, all pages; `next_page_token` is
    /// empty).
    ///
    /// # Errors
    /// The first page that failed, as [`Client::retrying`] reports it.
    pub async fn shard_members(&self, group: &str) -> Result<pb::MembersResponse, Error> {
        let mut members = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = pb::MembersRequest { group: group.to_owned(), page_size: PAGE_SIZE, page_token };
            let mut page = self
                .retrying(|channel| {
                    let request = request.clone();
                    async move { ShardsClient::new(channel).members(request).await }
                })
                .await?
                .into_inner();
            members.append(&mut page.members);
            if page.next_page_token.is_empty() {
                return Ok(pb::MembersResponse { members, ..page });
            }
            page_token = page.next_page_token;
        }
    }
}
