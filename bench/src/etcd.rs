//! A thin etcd v3 client over the tonic stubs that `build.rs` generates (protox, no protoc)
//! from etcd's `.proto` files vendored in `bench/proto/`: just the calls the benchmark makes.
//! Errors are tonic's, for the callers to put in context.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming, transport::Channel};

use pb::{
    etcdserverpb::{
        LeaseGrantRequest, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseRevokeRequest, RangeRequest,
        StatusRequest, WatchCreateRequest, WatchRequest, WatchResponse, kv_client::KvClient, lease_client::LeaseClient,
        maintenance_client::MaintenanceClient, range_request, watch_client::WatchClient, watch_request,
    },
    mvccpb::{KeyValue, event::EventType},
    v3electionpb::{CampaignRequest, CampaignResponse, LeaderKey, ResignRequest, election_client::ElectionClient},
    v3lockpb::{LockRequest, LockResponse, UnlockRequest, lock_client::LockClient},
};

/// Generated protobuf messages and gRPC clients of etcd's API (the packages the benchmark uses).
#[allow(dead_code, missing_docs, missing_debug_implementations, clippy::all, clippy::pedantic, clippy::unwrap_used)]
pub mod pb {
    pub mod authpb {
        tonic::include_proto!("authpb");
    }
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
    pub mod v3electionpb {
        tonic::include_proto!("v3electionpb");
    }
    pub mod v3lockpb {
        tonic::include_proto!("v3lockpb");
    }
}

type Result<T> = std::result::Result<T, Status>;

/// An etcd client on one HTTP/2 connection; clones share it.
#[derive(Debug, Clone)]
pub struct Client {
    channel: Channel,
}

impl Client {
    /// Connects to `url` (`http://host:port`).
    pub async fn connect(url: &str, timeout: Option<Duration>) -> std::result::Result<Self, String> {
        let mut endpoint = Channel::from_shared(url.to_owned()).map_err(|e| format!("{url}: {e}"))?;
        if let Some(timeout) = timeout {
            endpoint = endpoint.connect_timeout(timeout);
        }
        Ok(Self { channel: endpoint.connect().await.map_err(|e| e.to_string())? })
    }

    /// Maintenance.Status (the server is up and serving).
    pub async fn status(&mut self) -> Result<()> {
        MaintenanceClient::new(self.channel.clone()).status(StatusRequest {}).await.map(drop)
    }

    /// KV.Range with count_only over the keys starting with `prefix`: how many there are.
    pub async fn count_prefix(&mut self, prefix: impl Into<Vec<u8>>) -> Result<i64> {
        let key = prefix.into();
        let range_end = prefix_end(&key);
        let request = RangeRequest { key, range_end, count_only: true, ..Default::default() };
        Ok(KvClient::new(self.channel.clone()).range(request).await?.into_inner().count)
    }

    /// KV.Range of the key created first under `prefix` (the Go client's `WithFirstCreate`, as
    /// `concurrency.Election` reads its leader), linearizable; returns it, if any, and the
    /// revision of the read.
    pub async fn first_created(&mut self, prefix: impl Into<Vec<u8>>) -> Result<(Option<KeyValue>, i64)> {
        let key = prefix.into();
        let range_end = prefix_end(&key);
        let request = RangeRequest {
            key,
            range_end,
            limit: 1,
            sort_order: range_request::SortOrder::Ascend.into(),
            sort_target: range_request::SortTarget::Create.into(),
            ..Default::default()
        };
        let response = KvClient::new(self.channel.clone()).range(request).await?.into_inner();
        let revision = response.header.map_or(0, |h| h.revision);
        Ok((response.kvs.into_iter().next(), revision))
    }

    /// Watch.Watch: a Watch stream of its own with one watch on `key` from `start_revision`;
    /// returns once etcd has created the watch.
    pub async fn watch(&mut self, key: impl Into<Vec<u8>>, start_revision: i64) -> Result<Watch> {
        let (tx, rx) = mpsc::channel(1);
        let create = WatchCreateRequest { key: key.into(), start_revision, ..Default::default() };
        let request = WatchRequest { request_union: Some(watch_request::RequestUnion::CreateRequest(create)) };
        tx.send(request).await.map_err(|_| Status::internal("watch request channel closed"))?;
        let mut responses = WatchClient::new(self.channel.clone()).watch(ReceiverStream::new(rx)).await?.into_inner();
        match responses.message().await? {
            Some(response) if response.created && !response.canceled => Ok(Watch { _requests: tx, responses }),
            Some(response) => Err(Status::aborted(format!("watch not created: {}", response.cancel_reason))),
            None => Err(Status::unavailable("watch stream ended")),
        }
    }

    /// Lease.LeaseGrant: a new lease of `ttl_s` seconds; returns its id.
    pub async fn lease_grant(&mut self, ttl_s: i64) -> Result<i64> {
        let request = LeaseGrantRequest { ttl: ttl_s, id: 0 };
        Ok(LeaseClient::new(self.channel.clone()).lease_grant(request).await?.into_inner().id)
    }

    /// Lease.LeaseRevoke.
    pub async fn lease_revoke(&mut self, id: i64) -> Result<()> {
        LeaseClient::new(self.channel.clone()).lease_revoke(LeaseRevokeRequest { id }).await.map(drop)
    }

    /// Opens a Lease.LeaseKeepAlive stream for lease `id`, sends a first keepalive and awaits
    /// its answer (as the `etcd-client` crate did); returns the sending half and the answers.
    pub async fn lease_keep_alive(&mut self, id: i64) -> Result<(LeaseKeeper, Streaming<LeaseKeepAliveResponse>)> {
        let (tx, rx) = mpsc::channel(100);
        let mut keeper = LeaseKeeper { id, tx };
        keeper.keep_alive().await.map_err(|e| Status::internal(e.to_string()))?;
        let mut answers =
            LeaseClient::new(self.channel.clone()).lease_keep_alive(ReceiverStream::new(rx)).await?.into_inner();
        match answers.message().await? {
            Some(answer) if answer.ttl > 0 => Ok((keeper, answers)),
            Some(_) => Err(Status::not_found("lease not found")),
            None => Err(Status::unavailable("keepalive stream ended")),
        }
    }

    /// Lock.Lock: waits until `name` is locked by this client's `lease`; returns the lock key.
    pub async fn lock(&mut self, name: impl Into<Vec<u8>>, lease: i64) -> Result<LockResponse> {
        let request = LockRequest { name: name.into(), lease };
        Ok(LockClient::new(self.channel.clone()).lock(request).await?.into_inner())
    }

    /// Lock.Unlock of the key [`Client::lock`] returned.
    pub async fn unlock(&mut self, key: impl Into<Vec<u8>>) -> Result<()> {
        LockClient::new(self.channel.clone()).unlock(UnlockRequest { key: key.into() }).await.map(drop)
    }

    /// Election.Campaign: returns once elected (its `leader` key).
    pub async fn campaign(
        &mut self,
        name: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        lease: i64,
    ) -> Result<CampaignResponse> {
        let request = CampaignRequest { name: name.into(), lease, value: value.into() };
        Ok(ElectionClient::new(self.channel.clone()).campaign(request).await?.into_inner())
    }

    /// Election.Resign of the leadership `leader`.
    pub async fn resign(&mut self, leader: LeaderKey) -> Result<()> {
        let request = ResignRequest { leader: Some(leader) };
        ElectionClient::new(self.channel.clone()).resign(request).await.map(drop)
    }
}

/// The sending half of a LeaseKeepAlive stream.
#[derive(Debug)]
pub struct LeaseKeeper {
    id: i64,
    tx: mpsc::Sender<LeaseKeepAliveRequest>,
}

impl LeaseKeeper {
    /// Sends one keepalive (its answer comes on the stream).
    pub async fn keep_alive(&mut self) -> std::result::Result<(), mpsc::error::SendError<LeaseKeepAliveRequest>> {
        self.tx.send(LeaseKeepAliveRequest { id: self.id }).await
    }
}

/// One watch on a Watch stream of its own (see [`Client::watch`]).
#[derive(Debug)]
pub struct Watch {
    // The request half, held open while the watch lives (as etcd's Go client does).
    _requests: mpsc::Sender<WatchRequest>,
    responses: Streaming<WatchResponse>,
}

impl Watch {
    /// Waits for the next DELETE event (the events before it are skipped).
    pub async fn deleted(&mut self) -> Result<()> {
        loop {
            let response: WatchResponse =
                self.responses.message().await?.ok_or_else(|| Status::unavailable("watch stream ended"))?;
            if response.canceled {
                return Err(Status::aborted(format!("watch canceled: {}", response.cancel_reason)));
            }
            if response.events.iter().any(|e| e.r#type == EventType::Delete as i32) {
                return Ok(());
            }
        }
    }
}

/// The end of the range of keys starting with `prefix` (etcd's `clientv3.GetPrefixRangeEnd`).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    match prefix.iter().rposition(|&b| b < 0xff) {
        Some(i) => {
            let mut end = prefix[..=i].to_vec();
            end[i] += 1;
            end
        }
        None => vec![0], // every key from `prefix` on
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"s4/"), b"s40");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }
}
