//! Leader election as a stream of events, with the lease's confirmation applied.

use std::time::Duration;

use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
    time::Instant,
};

use crate::{
    Client, Error, LeaseKeeper, LeaseStatus,
    pb::{self, election_client::ElectionClient},
};

/// How to campaign.
#[derive(Clone, Debug)]
pub struct CampaignOptions {
    election: String,
    candidate_id: String,
    priority: i32,
    value: Vec<u8>,
    preempt: pb::PreemptPolicy,
}

impl CampaignOptions {
    /// Candidate `candidate_id` in election `election`, priority 0, no value, the election's
    /// preemption policy.
    pub fn new(election: impl Into<String>, candidate_id: impl Into<String>) -> Self {
        Self {
            election: election.into(),
            candidate_id: candidate_id.into(),
            priority: 0,
            value: Vec::new(),
            preempt: pb::PreemptPolicy::Unspecified,
        }
    }

    /// 0 (best) to 1000.
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// The value others see while this candidate leads (e.g. its address).
    pub fn value(mut self, value: impl Into<Vec<u8>>) -> Self {
        self.value = value.into();
        self
    }

    /// Requires preemption on or off (the first campaign of an election chooses).
    pub fn preempt(mut self, on: bool) -> Self {
        self.preempt = if on { pb::PreemptPolicy::On } else { pb::PreemptPolicy::Off };
        self
    }
}

/// Why leadership was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossReason {
    /// zkcoord deposed the leader (resigned, preempted, unhealthy, transferred, lease expired).
    Deposed(pb::DeposedReason),
    /// The serving instance cannot confirm the leadership right now (it lost ZooKeeper).
    Unconfirmed,
    /// The lease is not confirmed any more (heartbeats unanswered past its ttl).
    LeaseUnconfirmed,
    /// The lease has ended.
    LeaseLost,
    /// The Campaign stream broke; the elector campaigns again on another instance.
    StreamBroken,
}

/// A change of this candidate's leadership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeadershipEvent {
    /// This candidate leads `term`; pass `fencing_token` to whatever it writes.
    BecameLeader {
        /// The term.
        term: i64,
        /// The term's fencing token.
        fencing_token: u64,
    },
    /// This candidate must stop acting as leader now.
    LostLeadership {
        /// Why.
        reason: LossReason,
    },
}

/// A candidacy and the events of its leadership.
///
/// It reports `BecameLeader` only while the Campaign stream says ELECTED **and** the lease is
/// confirmed, and `LostLeadership` as soon as either stops being true — at the latest when the
/// lease's confirmation runs out, before zkcoord could have elected anyone else. Dropping the
/// elector stops following the election; the candidacy itself lives on with the lease until
/// [`LeaderElector::resign`].
#[derive(Debug)]
pub struct LeaderElector {
    client: Client,
    key: pb::CandidateKey,
    events: mpsc::UnboundedReceiver<LeadershipEvent>,
    leading: watch::Receiver<Option<(i64, u64)>>,
    task: JoinHandle<()>,
}

impl LeaderElector {
    /// Campaigns with `lease`.
    ///
    /// # Errors
    /// The first Campaign call's status when it is refused (e.g. INVALID_ARGUMENT,
    /// FAILED_PRECONDITION for a candidate id taken by another lease).
    pub async fn campaign(client: &Client, lease: &LeaseKeeper, options: CampaignOptions) -> Result<Self, Error> {
        let key = pb::CandidateKey {
            election: options.election.clone(),
            candidate_id: options.candidate_id.clone(),
            lease: Some(lease.lease_ref()),
        };
        let request = pb::CampaignRequest {
            key: Some(key.clone()),
            value: options.value.clone(),
            priority: options.priority,
            preempt: options.preempt.into(),
        };
        let first = client
            .retrying(|channel| {
                let request = request.clone();
                async move { ElectionClient::new(channel).campaign(request).await }
            })
            .await?
            .into_inner();
        let (events_tx, events) = mpsc::unbounded_channel();
        let (leading_tx, leading) = watch::channel(None);
        let follow = Follow {
            client: client.clone(),
            request,
            lease: lease.watch(),
            events: events_tx,
            leading: leading_tx,
            elected: None,
        };
        let task = tokio::spawn(follow.run(first));
        Ok(Self { client: client.clone(), key, events, leading, task })
    }

    /// The next event; `None` once the candidacy has ended (resigned, lease ended).
    ///
    /// # Cancellation safety
    /// Cancellation safe: no event is lost.
    pub async fn next(&mut self) -> Option<LeadershipEvent> {
        self.events.recv().await
    }

    /// Whether this candidate may act as leader now, and with which (term, fencing token).
    pub fn leading(&self) -> Option<(i64, u64)> {
        *self.leading.borrow()
    }

    /// Whether this candidate may act as leader now.
    pub fn is_leader(&self) -> bool {
        self.leading().is_some()
    }

    /// Withdraws the candidacy (a leader steps down; the next candidate is elected).
    ///
    /// # Errors
    /// The Resign call's status.
    pub async fn resign(self) -> Result<(), Error> {
        self.task.abort();
        let key = self.key.clone();
        self.client
            .retrying(|channel| {
                let request = pb::ResignRequest { key: Some(key.clone()), term: 0, stay_candidate: false };
                async move { ElectionClient::new(channel).resign(request).await }
            })
            .await?;
        Ok(())
    }

    /// Hands leadership to `target` (or the next eligible candidate when `None`), if this
    /// candidate leads; returns the new leader once it is elected.
    ///
    /// # Errors
    /// The Transfer call's status, e.g. FAILED_PRECONDITION when this candidate does not lead.
    pub async fn transfer(&self, target: Option<&str>) -> Result<pb::LeaderInfo, Error> {
        let term = self.leading().map_or(0, |(term, _)| term);
        let request = pb::TransferRequest {
            election: self.key.election.clone(),
            target_candidate_id: target.unwrap_or_default().to_owned(),
            from: Some(self.key.clone()),
            term,
        };
        let response = self
            .client
            .retrying(|channel| {
                let request = request.clone();
                async move { ElectionClient::new(channel).transfer(request).await }
            })
            .await?;
        response.into_inner().leader.ok_or_else(|| Error::Status(tonic::Status::internal("no leader after transfer")))
    }
}

impl Drop for LeaderElector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The elector's background task.
struct Follow {
    client: Client,
    request: pb::CampaignRequest,
    lease: watch::Receiver<LeaseStatus>,
    events: mpsc::UnboundedSender<LeadershipEvent>,
    leading: watch::Sender<Option<(i64, u64)>>,
    /// What the Campaign stream last said: ELECTED with (term, token).
    elected: Option<(i64, u64)>,
}

/// How following one stream ended.
enum StreamEnd {
    /// The candidacy ended (resigned, lease ended): stop.
    Over,
    /// The stream broke: campaign again elsewhere.
    Broken,
}

impl Follow {
    async fn run(mut self, first: tonic::Streaming<pb::CampaignResponse>) {
        let mut stream = Some(first);
        let mut at = self.client.current();
        loop {
            let current = match stream.take() {
                Some(stream) => stream,
                None => {
                    let mut campaign = ElectionClient::new(self.client.channel(at));
                    match campaign.campaign(self.request.clone()).await {
                        Ok(stream) => stream.into_inner(),
                        Err(status) if status.code() == tonic::Code::NotFound => {
                            self.lose(LossReason::LeaseLost);
                            return;
                        }
                        Err(_) => {
                            at = self.client.rotate(at);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    }
                }
            };
            match self.follow(current).await {
                StreamEnd::Over => return,
                StreamEnd::Broken => {
                    self.elected = None;
                    self.lose(LossReason::StreamBroken);
                    at = self.client.rotate(at);
                }
            }
        }
    }

    /// Follows one Campaign stream together with the lease's status.
    async fn follow(&mut self, mut stream: tonic::Streaming<pb::CampaignResponse>) -> StreamEnd {
        loop {
            let lease = *self.lease.borrow();
            let confirmed_until = match lease {
                LeaseStatus::Confirmed { until } => Some(until),
                LeaseStatus::Unconfirmed => None,
                LeaseStatus::Lost => {
                    self.lose(LossReason::LeaseLost);
                    return StreamEnd::Over;
                }
            };
            let confirmed = confirmed_until.is_some_and(|until| Instant::now() < until);
            match (self.elected, confirmed) {
                (Some(elected), true) => self.lead(elected),
                (Some(_), false) => self.lose(LossReason::LeaseUnconfirmed),
                (None, _) => {}
            }
            // Wake up when the confirmation runs out, if nothing else happens first.
            let expiry =
                confirmed_until.filter(|_| confirmed).unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                message = stream.message() => match message {
                    Ok(Some(status)) => {
                        if let Some(end) = self.on_status(&status) {
                            return end;
                        }
                    }
                    Ok(None) | Err(_) => return StreamEnd::Broken,
                },
                changed = self.lease.changed() => {
                    if changed.is_err() {
                        self.lose(LossReason::LeaseLost);
                        return StreamEnd::Over;
                    }
                }
                () = tokio::time::sleep_until(expiry) => {}
            }
        }
    }

    /// Applies one Campaign status; `Some` when following must stop.
    fn on_status(&mut self, status: &pb::CampaignResponse) -> Option<StreamEnd> {
        match status.state() {
            pb::CandidateState::Elected => {
                self.elected = Some((status.term, status.fencing_token));
            }
            pb::CandidateState::Unconfirmed => {
                self.elected = None;
                self.lose(LossReason::Unconfirmed);
            }
            pb::CandidateState::Deposed => {
                self.elected = None;
                let reason = status.reason();
                self.lose(LossReason::Deposed(reason));
                if matches!(reason, pb::DeposedReason::Resigned | pb::DeposedReason::LeaseExpired) {
                    return Some(StreamEnd::Over);
                }
            }
            pb::CandidateState::Queued | pb::CandidateState::Unspecified => {
                self.elected = None;
                self.lose(LossReason::StreamBroken);
            }
        }
        None
    }

    fn lead(&mut self, elected: (i64, u64)) {
        if *self.leading.borrow() != Some(elected) {
            self.leading.send_replace(Some(elected));
            let _ = self.events.send(LeadershipEvent::BecameLeader { term: elected.0, fencing_token: elected.1 });
        }
    }

    fn lose(&mut self, reason: LossReason) {
        if self.leading.borrow().is_some() {
            self.leading.send_replace(None);
            let _ = self.events.send(LeadershipEvent::LostLeadership { reason });
        }
    }
}
