//! A test lease owner: grants a lease and keeps it alive from a background task, moving to the
//! next endpoint when its stream fails, and records every heartbeat's outcome.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::{sync::mpsc, task::JoinHandle};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, transport::Channel};
use zkcoord::pb::v1::{self as pb, lease_client::LeaseClient};

use super::ZkcoordProcess;

/// One heartbeat's outcome.
#[derive(Clone, Debug)]
pub struct Beat {
    /// When the heartbeat was sent.
    pub sent: Instant,
    /// Whether the answer was confirmed.
    pub confirmed: bool,
    /// Which endpoint answered.
    pub endpoint: usize,
}

/// What the keeper saw.
#[derive(Debug, Default)]
pub struct Log {
    /// Every answered heartbeat.
    pub beats: Vec<Beat>,
    /// Streams that ended, with the endpoint and the status code.
    pub stream_ends: Vec<(usize, Code, String)>,
    /// Set when the lease is known to be gone (NOT_FOUND).
    pub lost: bool,
}

impl Log {
    /// The send time of the last confirmed heartbeat.
    pub fn last_confirmed(&self) -> Option<Instant> {
        self.beats.iter().rev().find(|b| b.confirmed).map(|b| b.sent)
    }
}

/// A granted lease kept alive in the background.
#[derive(Debug)]
pub struct Keeper {
    /// The lease id.
    pub id: i64,
    /// The lease secret.
    pub secret: String,
    /// What happened so far.
    pub log: Arc<Mutex<Log>>,
    task: JoinHandle<()>,
}

/// Two zkcoord processes serving one fresh namespace (`name`) of the shared ZooKeeper, both
/// SERVING, and a lease with `ttl` granted on the first and kept alive every 250 ms through it
/// (through the second when its stream fails): the setup of the tests that kill the instance a
/// client heartbeats to. Returns (first, second, keeper).
pub async fn kept_on_two_instances(name: &str, ttl: Duration) -> (ZkcoordProcess, ZkcoordProcess, Keeper) {
    let target = format!("{}{}", super::zk::shared().hosts(), super::namespace(name));
    let a = ZkcoordProcess::spawn(&target, &[]);
    let b = ZkcoordProcess::spawn(&target, &[]);
    super::wait_serving(a.addr).await;
    super::wait_serving(b.addr).await;
    let keeper = Keeper::start(vec![a.addr, b.addr], ttl, Duration::from_millis(250), None).await;
    (a, b, keeper)
}

/// Grants a lease with `ttl` on `endpoints[0]`.
pub async fn grant(channel: &Channel, owner: &str, ttl: Duration) -> pb::GrantResponse {
    LeaseClient::new(channel.clone())
        .grant(pb::GrantRequest { ttl_ms: ttl.as_millis() as i64, owner: owner.into(), ..Default::default() })
        .await
        .expect("grant")
        .into_inner()
}

/// A `LeaseRef`.
pub fn lease_ref(id: i64, secret: &str) -> Option<pb::LeaseRef> {
    Some(pb::LeaseRef { id, secret: secret.into() })
}

impl Keeper {
    /// Grants a lease on `endpoints[0]` and heartbeats it every `interval`, with `health`.
    pub async fn start(
        endpoints: Vec<SocketAddr>,
        ttl: Duration,
        interval: Duration,
        health: Option<pb::Health>,
    ) -> Self {
        let first = super::channel(endpoints[0]).await;
        let granted = grant(&first, "test-owner", ttl).await;
        let log = Arc::new(Mutex::new(Log::default()));
        let task =
            tokio::spawn(keep(endpoints, granted.lease_id, granted.secret.clone(), interval, health, log.clone()));
        Self { id: granted.lease_id, secret: granted.secret, log, task }
    }

    /// Keeps an existing lease alive (e.g. with another health), like [`Keeper::start`].
    pub fn resume(
        endpoints: Vec<SocketAddr>,
        id: i64,
        secret: &str,
        interval: Duration,
        health: Option<pb::Health>,
    ) -> Self {
        let log = Arc::new(Mutex::new(Log::default()));
        let task = tokio::spawn(keep(endpoints, id, secret.to_owned(), interval, health, log.clone()));
        Self { id, secret: secret.to_owned(), log, task }
    }

    /// Stops heartbeating (the lease then expires after its ttl).
    pub fn stop(&self) {
        self.task.abort();
    }

    /// A copy of the beats so far.
    pub fn beats(&self) -> Vec<Beat> {
        self.log.lock().unwrap().beats.clone()
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn keep(
    endpoints: Vec<SocketAddr>,
    id: i64,
    secret: String,
    interval: Duration,
    health: Option<pb::Health>,
    log: Arc<Mutex<Log>>,
) {
    let mut endpoint = 0;
    loop {
        let addr = endpoints[endpoint];
        let status = match Channel::from_shared(format!("http://{addr}")).unwrap().connect().await {
            Ok(channel) => one_stream(channel, endpoint, id, &secret, interval, health.clone(), &log).await,
            Err(err) => (Code::Unavailable, err.to_string()),
        };
        let lost = status.0 == Code::NotFound;
        {
            let mut log = log.lock().unwrap();
            log.stream_ends.push((endpoint, status.0, status.1));
            log.lost |= lost;
        }
        if lost {
            return;
        }
        endpoint = (endpoint + 1) % endpoints.len();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Heartbeats on one stream until it fails; returns how it ended.
async fn one_stream(
    channel: Channel,
    endpoint: usize,
    id: i64,
    secret: &str,
    interval: Duration,
    health: Option<pb::Health>,
    log: &Mutex<Log>,
) -> (Code, String) {
    let (tx, rx) = mpsc::channel(4);
    let request =
        pb::KeepAliveRequest { lease: lease_ref(id, secret), health, elections: vec![], shard_groups: vec![] };
    let mut sent = Instant::now();
    if tx.send(request.clone()).await.is_err() {
        return (Code::Internal, "send".into());
    }
    let mut responses = match LeaseClient::new(channel).keep_alive(ReceiverStream::new(rx)).await {
        Ok(response) => response.into_inner(),
        Err(status) => return (status.code(), status.message().into()),
    };
    loop {
        // A generous answer timeout: a frozen instance must not freeze the keeper.
        match tokio::time::timeout(interval * 4, responses.message()).await {
            Ok(Ok(Some(answer))) => {
                log.lock().unwrap().beats.push(Beat { sent, confirmed: answer.confirmed, endpoint });
            }
            Ok(Ok(None)) => return (Code::Unavailable, "stream closed".into()),
            Ok(Err(status)) => return (status.code(), status.message().into()),
            Err(_) => return (Code::DeadlineExceeded, "no answer".into()),
        }
        tokio::time::sleep(interval).await;
        sent = Instant::now();
        if tx.send(request.clone()).await.is_err() {
            return (Code::Internal, "send".into());
        }
    }
}

/// What [`flap`] saw.
#[derive(Clone, Copy, Debug)]
pub struct Flapped {
    /// Heartbeats answered.
    pub answered: usize,
    /// Answers that were not confirmed.
    pub unconfirmed: usize,
}

/// Heartbeats lease `id` over one KeepAlive stream through `channel` as fast as it is answered
/// (one heartbeat in flight), for `duration`, the n-th heartbeat carrying `healths[n % len]`;
/// then one last heartbeat carrying `last`. The stream ends when this returns (the lease lives
/// on until its ttl).
pub async fn flap(
    channel: &Channel,
    id: i64,
    secret: &str,
    duration: Duration,
    healths: &[Option<pb::Health>],
    last: Option<pb::Health>,
) -> Flapped {
    let (tx, rx) = mpsc::channel(1);
    let beat = |health: Option<pb::Health>| pb::KeepAliveRequest {
        lease: lease_ref(id, secret),
        health,
        elections: vec![],
        shard_groups: vec![],
    };
    tx.send(beat(healths[0].clone())).await.expect("send");
    let mut responses =
        LeaseClient::new(channel.clone()).keep_alive(ReceiverStream::new(rx)).await.expect("keep alive").into_inner();
    let mut flapped = Flapped { answered: 0, unconfirmed: 0 };
    let start = Instant::now();
    let mut n = 1;
    loop {
        let answer = responses.message().await.expect("answer").expect("stream open");
        flapped.answered += 1;
        flapped.unconfirmed += usize::from(!answer.confirmed);
        if n > healths.len() && start.elapsed() >= duration {
            break;
        }
        tx.send(beat(healths[n % healths.len()].clone())).await.expect("send");
        n += 1;
    }
    tx.send(beat(last)).await.expect("send");
    let answer = responses.message().await.expect("answer").expect("stream open");
    flapped.answered += 1;
    flapped.unconfirmed += usize::from(!answer.confirmed);
    flapped
}
