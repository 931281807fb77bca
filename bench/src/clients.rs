//! The client stack, the same for every scenario: tonic clients generated for zkcoord
//! (`zkcoord_client::pb`), tonic clients generated for etcd ([`crate::etcd`]), and
//! `zookeeper-client`.

use std::{net::SocketAddr, time::Duration};

use tokio::{sync::mpsc, task::JoinHandle};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use zkcoord_client::pb::{self, lease_client::LeaseClient};
use zookeeper_client as zk;

use crate::etcd;

pub type Result<T> = std::result::Result<T, String>;

/// Turns any error into the bench's `String` error with `what` for context.
pub fn ctx<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> String {
    move |e| format!("{what}: {e}")
}

/// Attempts of a set-up call answered UNAVAILABLE before the scenario fails.
const UNAVAILABLE_ATTEMPTS: u32 = 5;
/// Pause between those attempts.
const UNAVAILABLE_BACKOFF: Duration = Duration::from_millis(200);

/// Calls `call` again while it is answered UNAVAILABLE, as the client libraries do (an instance
/// says so when it cannot prove its ZooKeeper session in time, e.g. under the burst of a
/// scenario's set-up): up to [`UNAVAILABLE_ATTEMPTS`] attempts, [`UNAVAILABLE_BACKOFF`] apart.
/// Any other status fails at once; `what` names the call in the error.
pub async fn retry_unavailable<T, F, Fut>(what: &'static str, mut call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, tonic::Status>>,
{
    let mut attempt = 1;
    loop {
        match call().await {
            Err(status) if status.code() == tonic::Code::Unavailable && attempt < UNAVAILABLE_ATTEMPTS => {
                attempt += 1;
                tokio::time::sleep(UNAVAILABLE_BACKOFF).await;
            }
            result => return result.map_err(ctx(what)),
        }
    }
}

/// A new HTTP/2 connection to a gRPC server (one per simulated client process).
pub async fn channel(addr: SocketAddr) -> Result<Channel> {
    Endpoint::from_shared(format!("http://{addr}"))
        .map_err(ctx("endpoint"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(ctx("connect"))
}

fn serving() -> pb::Health {
    pb::Health { status: pb::HealthStatus::Serving as i32, checks: Vec::new() }
}

/// A zkcoord lease kept alive by a background task heartbeating every ttl/3 on one KeepAlive
/// stream, as the client library does.
#[derive(Debug)]
pub struct ZkcLease {
    pub lease: pb::LeaseRef,
    keeper: JoinHandle<()>,
}

impl ZkcLease {
    /// Grants a lease of `ttl` and starts heartbeating.
    pub async fn grant(channel: &Channel, owner: &str, ttl: Duration) -> Result<Self> {
        let lease = grant(channel, owner, ttl).await?;
        let keeper = spawn_keepalive(channel.clone(), lease.clone(), ttl / 3).await?;
        Ok(Self { lease, keeper })
    }

    /// The lease's owner crashes: heartbeats stop abruptly, nothing is revoked.
    pub fn crash(&self) {
        self.keeper.abort();
    }

    /// Stops heartbeating and revokes the lease.
    pub async fn revoke(self, channel: &Channel) -> Result<()> {
        self.keeper.abort();
        LeaseClient::new(channel.clone())
            .revoke(pb::RevokeRequest { lease: Some(self.lease.clone()) })
            .await
            .map_err(ctx("revoke"))?;
        Ok(())
    }
}

impl Drop for ZkcLease {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

/// Lease.Grant.
pub async fn grant(channel: &Channel, owner: &str, ttl: Duration) -> Result<pb::LeaseRef> {
    let request = pb::GrantRequest {
        ttl_ms: ttl.as_millis() as i64,
        owner: owner.to_owned(),
        metadata: Default::default(),
        health: Some(serving()),
    };
    let granted =
        retry_unavailable("grant", || async { LeaseClient::new(channel.clone()).grant(request.clone()).await })
            .await?
            .into_inner();
    Ok(pb::LeaseRef { id: granted.lease_id, secret: granted.secret })
}

/// Opens a KeepAlive stream for `lease` (waiting for its first answer) and heartbeats on it
/// every `every` in a background task.
pub async fn spawn_keepalive(channel: Channel, lease: pb::LeaseRef, every: Duration) -> Result<JoinHandle<()>> {
    let heartbeat =
        pb::KeepAliveRequest { lease: Some(lease), health: Some(serving()), elections: vec![], shard_groups: vec![] };
    let (tx, mut answers) = retry_unavailable("keepalive", || async {
        let (tx, rx) = mpsc::channel(4);
        let _ = tx.send(heartbeat.clone()).await;
        let mut answers = LeaseClient::new(channel.clone()).keep_alive(ReceiverStream::new(rx)).await?.into_inner();
        match answers.message().await? {
            Some(_) => Ok((tx, answers)),
            None => Err(tonic::Status::internal("keepalive stream ended")),
        }
    })
    .await?;
    Ok(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            if tx.send(heartbeat.clone()).await.is_err() {
                return;
            }
            match answers.message().await {
                Ok(Some(_)) => {}
                _ => return,
            }
        }
    }))
}

/// An etcd client on its own connection.
pub async fn etcd(url: &str) -> Result<etcd::Client> {
    etcd::Client::connect(url, Some(Duration::from_secs(5))).await.map_err(ctx("etcd connect"))
}

/// An etcd lease kept alive by a background task every ttl/3 (as etcd's Go client does).
#[derive(Debug)]
pub struct EtcdLease {
    pub id: i64,
    keeper: JoinHandle<()>,
}

impl EtcdLease {
    pub async fn grant(client: &mut etcd::Client, ttl_s: i64) -> Result<Self> {
        let id = client.lease_grant(ttl_s).await.map_err(ctx("etcd lease grant"))?;
        let (mut keeper, mut answers) = client.lease_keep_alive(id).await.map_err(ctx("etcd keepalive"))?;
        let every = Duration::from_millis(ttl_s as u64 * 1000 / 3);
        let keeper = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if keeper.keep_alive().await.is_err() {
                    return;
                }
                match answers.message().await {
                    Ok(Some(_)) => {}
                    _ => return,
                }
            }
        });
        Ok(Self { id, keeper })
    }

    /// The owner crashes: keepalives stop, nothing is revoked.
    pub fn crash(&self) {
        self.keeper.abort();
    }

    pub async fn revoke(self, client: &mut etcd::Client) -> Result<()> {
        self.keeper.abort();
        client.lease_revoke(self.id).await.map_err(ctx("etcd lease revoke"))?;
        Ok(())
    }
}

impl Drop for EtcdLease {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

/// A ZooKeeper session of its own. Detached: dropping the client does not close the session,
/// so dropping it is a crash (the session expires after its timeout).
pub async fn zookeeper(hosts: &str, session_timeout: Duration) -> Result<zk::Client> {
    zk::Client::connector()
        .with_session_timeout(session_timeout)
        .with_detached()
        .connect(hosts)
        .await
        .map_err(ctx("zookeeper connect"))
}

/// Persistent znode options.
pub fn zk_persistent() -> zk::CreateOptions<'static> {
    zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all())
}

/// Ephemeral sequential znode options (the lock and election recipes' nodes).
pub fn zk_ephemeral_sequential() -> zk::CreateOptions<'static> {
    zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all())
}

/// `mkdir -p`.
pub async fn zk_mkdir(client: &zk::Client, path: &str) -> Result<()> {
    client.mkdir(path, &zk_persistent()).await.map_err(ctx("zookeeper mkdir"))
}

/// The ZooKeeper recipe's own node: `<dir>/n-<seq>`, ephemeral sequential.
pub async fn zk_enqueue(client: &zk::Client, dir: &str) -> Result<String> {
    let (_, seq) =
        client.create(&format!("{dir}/n-"), b"", &zk_ephemeral_sequential()).await.map_err(ctx("zookeeper create"))?;
    Ok(format!("n-{seq}"))
}

/// The recipe's wait: until `me` is the first child of `dir` (sequence order), watching only
/// the node just ahead (no herd). Returns at once when `me` is first.
pub async fn zk_wait_first(client: &zk::Client, dir: &str, me: &str) -> Result<()> {
    zk_wait_first_armed(client, dir, me, None).await
}

/// [`zk_wait_first`], telling `armed` once its first watch is set (or it is first).
pub async fn zk_wait_first_armed(
    client: &zk::Client,
    dir: &str,
    me: &str,
    mut armed: Option<tokio::sync::oneshot::Sender<()>>,
) -> Result<()> {
    loop {
        let mut children = client.list_children(dir).await.map_err(ctx("zookeeper getChildren"))?;
        children.sort_unstable();
        let pos = children.iter().position(|c| c == me).ok_or("zookeeper: own node vanished")?;
        if pos == 0 {
            if let Some(armed) = armed.take() {
                let _ = armed.send(());
            }
            return Ok(());
        }
        let ahead = format!("{dir}/{}", children[pos - 1]);
        let (stat, watcher) = client.check_and_watch_stat(&ahead).await.map_err(ctx("zookeeper exists"))?;
        if let Some(armed) = armed.take() {
            let _ = armed.send(());
        }
        if stat.is_some() {
            watcher.changed().await;
        }
    }
}
