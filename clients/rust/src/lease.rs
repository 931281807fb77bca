//! A lease kept alive in the background, with health checks riding on its heartbeats.

use std::{
    collections::{BTreeMap, VecDeque},
    future::Future,
    pin::Pin,
    sync::Arc,
    time::Duration,
};

use tokio::{
    sync::{mpsc, watch},
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
        let keep = Keep {
            client: client.clone(),
            id: granted.lease_id,
            secret: granted.secret.clone(),
            ttl,
            checks: options.checks,
            status: status_tx,
        };
        let task = tokio::spawn(keep.run());
        Ok(Self { id: granted.lease_id, secret: granted.secret, ttl, client: client.clone(), status, task })
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
        matches!(self.status(), LeaseStatus::Confirmed { until } if Instant::now() < until)
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
}

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
                    // Not confirmed until a heartbeat on the next stream is.
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
        sent.push_back(Instant::now());
        requests
            .send(pb::KeepAliveRequest { lease: Some(lease.clone()), health: Some(health), elections: vec![] })
            .await
            .map_err(|_| Error::LeaseLost)?;
        let mut responses = match tokio::time::timeout(interval, leases.keep_alive(ReceiverStream::new(receiver))).await
        {
            Ok(Ok(responses)) => responses.into_inner(),
            Ok(Err(status)) => return Err(lost_or(status)),
            Err(_) => return Err(Error::Status(tonic::Status::unavailable("keepalive stream did not open"))),
        };
        let mut next_beat = Instant::now() + interval;
        loop {
            tokio::select! {
                response = responses.message() => match response {
                    Ok(Some(answer)) => {
                        let Some(sent_at) = sent.pop_front() else { continue };
                        if answer.confirmed {
                            let until = sent_at + Duration::from_millis(answer.ttl_ms as u64);
                            self.status.send_replace(LeaseStatus::Confirmed { until });
                        } else {
                            self.status.send_replace(LeaseStatus::Unconfirmed);
                            // Move to an instance that can vouch for the lease.
                            return Ok(());
                        }
                    }
                    Ok(None) => return Ok(()),
                    Err(status) => return Err(lost_or(status)),
                },
                () = tokio::time::sleep_until(next_beat) => {
                    if sent.len() >= 2 {
                        // Two heartbeats unanswered: this instance is not keeping up.
                        return Ok(());
                    }
                    let health = run_checks(&self.checks, self.ttl / 6).await;
                    sent.push_back(Instant::now());
                    let request = pb::KeepAliveRequest { lease: Some(lease.clone()), health: Some(health), elections: vec![] };
                    if requests.send(request).await.is_err() {
                        return Ok(());
                    }
                    next_beat += interval;
                }
            }
        }
    }
}

/// NOT_FOUND ends the lease for good; anything else is a reason to move.
fn lost_or(status: tonic::Status) -> Error {
    if status.code() == tonic::Code::NotFound { Error::LeaseLost } else { Error::Status(status) }
}
