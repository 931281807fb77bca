//! A lease kept alive in the background, with health checks riding on its heartbeats.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    sync::{Notify, mpsc, watch},
    task::JoinHandle,
    time::Instant,
};
use tokio_stream::wrappers::ReceiverStream;

use crate::{
    Client, Error,
    pb::{self, lease_client::LeaseClient},
};

/// The outcome of one health check: `Err` carries why it fails.
pub type CheckResult = Result<(), String>;

type Check = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = CheckResult> + Send>> + Send + Sync>;

/// How to grant a lease.
#[derive(Clone)]
pub struct LeaseOptions {
    owner: String,
    ttl: Duration,
    metadata: BTreeMap<String, String>,
    checks: Vec<(String, Check)>,
}

impl std::fmt::Debug for LeaseOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseOptions")
            .field("owner", &self.owner)
            .field("ttl", &self.ttl)
            .field("metadata", &self.metadata)
            .field("checks", &self.checks.iter().map(|(name, _)| name).collect::<Vec<_>>())
            .finish()
    }
}

impl LeaseOptions {
    /// A lease for `owner` (a name) that ends `ttl` (1 s to 1 h) after its last heartbeat.
    pub fn new(owner: impl Into<String>, ttl: Duration) -> Self {
        Self { owner: owner.into(), ttl, metadata: BTreeMap::new(), checks: Vec::new() }
    }

    /// Adds a metadata entry, visible to every client in Lease.TimeToLive and Lease.List.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Adds a health check (e.g. "database", "message-bus"), run before every heartbeat; a
    /// check that fails, or does not answer within a sixth of the ttl, makes the lease report
    /// NOT_SERVING (a leader is then deposed; the lease itself lives on).
    pub fn check<F, Fut>(mut self, name: impl Into<String>, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = CheckResult> + Send + 'static,
    {
        self.checks.push((name.into(), Arc::new(move || Box::pin(check()))));
        self
    }
}

/// What the keeper knows about its lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseStatus {
    /// Confirmed by zkcoord until `until` (send time of the last confirmed heartbeat + ttl).
    Confirmed {
        /// Until when the lease is safe to act on.
        until: Instant,
    },
    /// zkcoord cannot vouch for the lease right now (the stream is moving, or the instance
    /// lost ZooKeeper); the lease may still be alive.
    Unconfirmed,
    /// The lease has ended. Final.
    Lost,
}

/// The answer to the last confirmed heartbeat: the authority for every ownership (see the
/// crate's safety rule).
#[derive(Clone, Debug, PartialEq)]
pub struct ConfirmedBeat {
    /// Send time of the heartbeat + ttl: nothing it covered may be acted on after this.
    pub until: Instant,
    /// The elections the heartbeat named.
    pub elections: Vec<String>,
    /// The leaderships the answer listed (a subset of `elections`).
    pub leaderships: Vec<pb::Leadership>,
    /// The shard groups the heartbeat named.
    pub shard_groups: Vec<String>,
    /// The shard ownerships the answer listed (in groups of `shard_groups`).
    pub shards: Vec<pb::ShardOwnership>,
}

/// What the keeper shares with electors: the elections to name in heartbeats, a way to ask
/// for a heartbeat now, and the last confirmed answer.
#[derive(Debug)]
pub(crate) struct Beats {
    elections: Mutex<BTreeSet<String>>,
    groups: Mutex<BTreeSet<String>>,
    now: Notify,
    last: watch::Sender<Option<ConfirmedBeat>>,
}

impl Beats {
    /// Names `election` in every heartbeat from now on.
    pub(crate) fn name(&self, election: &str) {
        crate::lock(&self.elections).insert(election.to_owned());
    }

    /// Stops naming `election`.
    pub(crate) fn forget(&self, election: &str) {
        crate::lock(&self.elections).remove(election);
    }

    /// Names shard group `group` in every heartbeat from now on.
    pub(crate) fn name_group(&self, group: &str) {
        crate::lock(&self.groups).insert(group.to_owned());
    }

    /// Stops naming shard group `group`.
    pub(crate) fn forget_group(&self, group: &str) {
        crate::lock(&self.groups).remove(group);
    }

    /// Asks for a heartbeat now (e.g. just elected: only a confirmed answer listing the
    /// leadership lets the candidate act).
    pub(crate) fn beat_now(&self) {
        self.now.notify_one();
    }

    /// The last confirmed answers.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Option<ConfirmedBeat>> {
        self.last.subscribe()
    }

    fn named(&self) -> (Vec<String>, Vec<String>) {
        (crate::lock(&self.elections).iter().cloned().collect(), crate::lock(&self.groups).iter().cloned().collect())
    }
}

/// A granted lease, kept alive by a background task until it is revoked or dropped.
///
/// Dropping the keeper stops the heartbeats (the lease then expires after its ttl); call
/// [`LeaseKeeper::revoke`] to end it at once.
#[derive(Debug)]
pub struct LeaseKeeper {
    id: i64,
    secret: String,
    ttl: Duration,
    client: Client,
    status: watch::Receiver<LeaseStatus>,
    beats: Arc<Beats>,
    task: JoinHandle<()>,
}

impl LeaseKeeper {
    /// Grants a lease and starts keeping it alive.
    ///
    /// # Errors
    /// The Grant call's status (e.g. INVALID_ARGUMENT for a bad owner or ttl).
    pub async fn grant(client: &Client, options: LeaseOptions) -> Result<Self, Error> {
        let health = run_checks(&options.checks, options.ttl / 6).await;
        let request = pb::GrantRequest {
            ttl_ms: options.ttl.as_millis() as i64,
            owner: options.owner.clone(),
            metadata: options.metadata.clone(),
            health: Some(health),
        };
        let sent = Instant::now();
        // Not retried: a grant answered UNAVAILABLE may have happened (the stray lease then
        // expires after its ttl, as nobody keeps it alive).
        let mut leases = LeaseClient::new(client.channel(client.current()));
        let granted = match leases.grant(request.clone()).await {
            Ok(granted) => granted.into_inner(),
            Err(status) if status.code() == tonic::Code::Unavailable => {
                let next = client.rotate(client.current());
                LeaseClient::new(client.channel(next)).grant(request).await?.into_inner()
            }
            Err(status) => return Err(status.into()),
        };
        let ttl = Duration::from_millis(granted.ttl_ms as u64);
        let (status_tx, status) = watch::channel(LeaseStatus::Confirmed { until: sent + ttl });
        let beats = Arc::new(Beats {
            elections: Mutex::new(BTreeSet::new()),
            groups: Mutex::new(BTreeSet::new()),
            now: Notify::new(),
            last: watch::channel(Some(ConfirmedBeat {
                until: sent + ttl,
                elections: vec![],
                leaderships: vec![],
                shard_groups: vec![],
                shards: vec![],
            }))
            .0,
        });
        let keep = Keep {
            client: client.clone(),
            id: granted.lease_id,
            secret: granted.secret.clone(),
            ttl,
            checks: options.checks,
            status: status_tx,
            beats: beats.clone(),
        };
        let task = tokio::spawn(keep.run());
        Ok(Self { id: granted.lease_id, secret: granted.secret, ttl, client: client.clone(), status, beats, task })
    }

    /// The lease id.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// The lease secret (every call acting for the lease needs it).
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The granted ttl.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The lease as a `LeaseRef` for raw calls.
    pub fn lease_ref(&self) -> pb::LeaseRef {
        pb::LeaseRef { id: self.id, secret: self.secret.clone() }
    }

    /// The current status.
    pub fn status(&self) -> LeaseStatus {
        *self.status.borrow()
    }

    /// A receiver of status changes. Note that a `Confirmed` status silently stops being true
    /// at its `until`: compare with the clock, or use [`LeaseKeeper::is_confirmed`].
    pub fn watch(&self) -> watch::Receiver<LeaseStatus> {
        self.status.clone()
    }

    /// Whether the lease is confirmed now (see the crate's safety rule).
    pub fn is_confirmed(&self) -> bool {
        self.valid_until().is_some()
    }

    /// Until when what the lease covers (its lock holds) may be acted on: the send time of the
    /// last confirmed heartbeat + ttl, if that is still ahead; `None` when nothing may be
    /// acted on now.
    pub fn valid_until(&self) -> Option<Instant> {
        match self.status() {
            LeaseStatus::Confirmed { until } if Instant::now() < until => Some(until),
            _ => None,
        }
    }

    /// The answer to the last confirmed heartbeat.
    pub fn last_confirmed(&self) -> Option<ConfirmedBeat> {
        self.beats.last.borrow().clone()
    }

    pub(crate) fn beats(&self) -> &Arc<Beats> {
        &self.beats
    }

    /// Ends the lease now, releasing everything bound to it.
    ///
    /// # Errors
    /// The Revoke call's status; NOT_FOUND when it had already ended.
    pub async fn revoke(self) -> Result<(), Error> {
        self.task.abort();
        let lease = self.lease_ref();
        self.client
            .retrying(|channel| {
                let request = pb::RevokeRequest { lease: Some(lease.clone()) };
                async move { LeaseClient::new(channel).revoke(request).await }
            })
            .await?;
        Ok(())
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs every check concurrently, each bounded by `timeout`, into a `Health`.
async fn run_checks(checks: &[(String, Check)], timeout: Duration) -> pb::Health {
    let runs = checks.iter().map(|(name, check)| async move {
        let outcome = match tokio::time::timeout(timeout, check()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("no answer within {timeout:?}")),
        };
        let (status, message) = match outcome {
            Ok(()) => (pb::HealthStatus::Serving, String::new()),
            Err(why) => (pb::HealthStatus::NotServing, why.chars().take(256).collect()),
        };
        pb::HealthCheck { name: name.clone(), status: status.into(), message }
    });
    let checks = futures_util::future::join_all(runs).await;
    let status = if checks.iter().all(|c| c.status() == pb::HealthStatus::Serving) {
        pb::HealthStatus::Serving
    } else {
        pb::HealthStatus::NotServing
    };
    pb::Health { status: status.into(), checks }
}

/// The keeper's background task.
struct Keep {
    client: Client,
    id: i64,
    secret: String,
    ttl: Duration,
    checks: Vec<(String, Check)>,
    status: watch::Sender<LeaseStatus>,
    beats: Arc<Beats>,
}

/// How long heartbeats may go unconfirmed on one instance before the keeper moves to another
/// (as a fraction of the ttl): long enough not to move everyone during a ZooKeeper leader
/// election (every instance answers unconfirmed then, and every move costs a claim write),
/// short enough to move before the last confirmation runs out.
const UNCONFIRMED_PATIENCE_DIVISOR: u32 = 3;

impl Keep {
    /// Keeps one KeepAlive stream at a time, moving to the next endpoint when it breaks, until
    /// zkcoord says the lease has ended.
    async fn run(self) {
        let mut at = self.client.current();
        let mut failures = 0u32;
        loop {
            match self.stream(at).await {
                Err(Error::LeaseLost) => {
                    self.status.send_replace(LeaseStatus::Lost);
                    return;
                }
                Ok(()) | Err(_) => {
                    // Not confirmed until a heartbeat on the next stream is (the last
                    // confirmed answer still counts until its `until`).
                    self.status.send_if_modified(|s| {
                        let changed = matches!(s, LeaseStatus::Confirmed { .. });
                        if changed {
                            *s = LeaseStatus::Unconfirmed;
                        }
                        changed
                    });
                    at = self.client.rotate(at);
                    failures += 1;
                    if failures.is_multiple_of(self.client.endpoints() as u32) {
                        // Every endpoint failed once: do not spin.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
    }

    /// One KeepAlive stream on endpoint `at`: a heartbeat every ttl/3 with the checks' health.
    async fn stream(&self, at: usize) -> Result<(), Error> {
        let interval = self.ttl / 3;
        let (requests, receiver) = mpsc::channel(4);
        let mut leases = LeaseClient::new(self.client.channel(at));
        let lease = pb::LeaseRef { id: self.id, secret: self.secret.clone() };
        let mut sent = VecDeque::new();
        // The first heartbeat goes out with the stream.
        let health = run_checks(&self.checks, self.ttl / 6).await;
        let (elections, shard_groups) = self.beats.named();
        sent.push_back((Instant::now(), elections.clone(), shard_groups.clone()));
        requests
            .send(pb::KeepAliveRequest { lease: Some(lease.clone()), health: Some(health), elections, shard_groups })
            .await
            .map_err(|_| Error::LeaseLost)?;
        let mut responses = match tokio::time::timeout(interval, leases.keep_alive(ReceiverStream::new(receiver))).await
        {
            Ok(Ok(responses)) => responses.into_inner(),
            Ok(Err(status)) => return Err(lost_or(status)),
            Err(_) => return Err(Error::Status(tonic::Status::unavailable("keepalive stream did not open"))),
        };
        let mut next_beat = Instant::now() + interval;
        // Since when heartbeats here have been answered unconfirmed (None: the last was
        // confirmed, or none answered yet).
        let mut unconfirmed_since: Option<Instant> = None;
        let patience = self.ttl / UNCONFIRMED_PATIENCE_DIVISOR;
        loop {
            let beat = tokio::select! {
                response = responses.message() => match response {
                    Ok(Some(answer)) => {
                        let Some((sent_at, elections, shard_groups)) = sent.pop_front() else { continue };
                        if answer.confirmed {
                            unconfirmed_since = None;
                            // The granted ttl (answers also carry it as `ttl_ms`, counted from
                            // receipt, which is later than the send time: never longer).
                            let until = sent_at + self.ttl;
                            self.status.send_replace(LeaseStatus::Confirmed { until });
                            self.beats.last.send_replace(Some(ConfirmedBeat {
                                until,
                                elections,
                                leaderships: answer.leaderships,
                                shard_groups,
                                shards: answer.shards,
                            }));
                        } else {
                            self.status.send_replace(LeaseStatus::Unconfirmed);
                            // Move to an instance that can vouch for the lease, unless this one
                            // may soon again (a ZooKeeper leader election makes every instance
                            // answer unconfirmed for a moment).
                            let since = *unconfirmed_since.get_or_insert(sent_at);
                            if Instant::now() >= since + patience {
                                return Ok(());
                            }
                        }
                        false
                    }
                    Ok(None) => return Ok(()),
                    Err(status) => return Err(lost_or(status)),
                },
                () = tokio::time::sleep_until(next_beat) => {
                    next_beat += interval;
                    true
                }
                () = self.beats.now.notified() => true,
            };
            if beat {
                if sent.len() >= 2 {
                    // Two heartbeats unanswered: this instance is not keeping up.
                    return Ok(());
                }
                let health = run_checks(&self.checks, self.ttl / 6).await;
                let (elections, shard_groups) = self.beats.named();
                sent.push_back((Instant::now(), elections.clone(), shard_groups.clone()));
                let request =
                    pb::KeepAliveRequest { lease: Some(lease.clone()), health: Some(health), elections, shard_groups };
                if requests.send(request).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

/// NOT_FOUND ends the lease for good; anything else is a reason to move.
fn lost_or(status: tonic::Status) -> Error {
    if status.code() == tonic::Code::NotFound { Error::LeaseLost } else { Error::Status(status) }
}
