//! Leader election as a stream of events, held to the rule that the lease's confirmed
//! heartbeats are the authority.

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
    time::Instant,
};

use crate::{
    Client, Error, LeaseKeeper, LeaseStatus,
    lease::{Beats, ConfirmedBeat},
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
    unhealthy_for: Duration,
    healthy_for: Duration,
    acknowledge: bool,
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
            unhealthy_for: Duration::ZERO,
            healthy_for: Duration::ZERO,
            acknowledge: true,
        }
    }

    /// Leaves acknowledging a deposition to the application ([`LeaderElector::acknowledge`]),
    /// for applications that need time to stop acting (e.g. a child process to terminate).
    /// By default the elector acknowledges as soon as it has ended the leadership locally,
    /// which is right when every action checks [`LeaderElector::leadership`] just before it.
    /// Until acknowledged, the successor waits for this leadership's validity to run out.
    pub fn manual_acknowledgement(mut self) -> Self {
        self.acknowledge = false;
        self
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

    /// Health hysteresis: this candidate is deposed as leader for reporting NOT_SERVING only
    /// once zkcoord has seen that state for `duration` (up to 1 h; default: at once).
    pub fn unhealthy_for(mut self, duration: Duration) -> Self {
        self.unhealthy_for = duration;
        self
    }

    /// Health hysteresis: this candidate preempts a worse-priority leader only once zkcoord has
    /// seen it eligible (not NOT_SERVING) for `duration` (up to 1 h; default: at once).
    pub fn healthy_for(mut self, duration: Duration) -> Self {
        self.healthy_for = duration;
        self
    }
}

/// Why leadership was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossReason {
    /// zkcoord deposed the leader (resigned, preempted, unhealthy, transferred, lease expired).
    Deposed(pb::DeposedReason),
    /// A confirmed heartbeat answer no longer lists the leadership.
    Unconfirmed,
    /// The last confirmed heartbeat's validity ran out (send time + ttl), or an answer was not
    /// confirmed.
    LeaseUnconfirmed,
    /// The lease has ended.
    LeaseLost,
    /// Kept for compatibility: a broken Campaign stream no longer ends a leadership (the
    /// heartbeat is the authority); never reported.
    StreamBroken,
}

/// A change of this candidate's leadership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeadershipEvent {
    /// This candidate leads `term`; pass `fencing_token` to whatever it writes, and check
    /// [`LeaderElector::leadership`] before each action.
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

/// How long past the lease's ttl a background acknowledgement keeps trying.
const ACKNOWLEDGE_SLACK: Duration = Duration::from_secs(5);

/// A leadership this candidate may act on, and until when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leadership {
    /// The term.
    pub term: i64,
    /// The term's fencing token.
    pub fencing_token: u64,
    /// Send time of the confirmed heartbeat that listed it + ttl: stop acting by then at the
    /// latest (this client's monotonic clock).
    pub valid_until: Instant,
}

/// What the elector and its task share.
#[derive(Debug)]
struct Shared {
    election: String,
    candidate_id: String,
    beats: Arc<Beats>,
    beat: watch::Receiver<Option<ConfirmedBeat>>,
    lease: watch::Receiver<LeaseStatus>,
    /// Terms up to this one were given up (deposed and acknowledged, or resigned): a late
    /// heartbeat answer listing one of them is not acted on.
    renounced: AtomicI64,
    /// The lease's granted ttl.
    ttl: Duration,
}

impl Shared {
    /// The rule: the last confirmed heartbeat named this election and listed this candidate
    /// as its leader, in a term not given up, and its validity has not run out.
    fn leadership(&self, now: Instant) -> Option<Leadership> {
        if !matches!(*self.lease.borrow(), LeaseStatus::Confirmed { until } if now < until) {
            return None;
        }
        let beat = self.beat.borrow();
        let beat = beat.as_ref()?;
        if now >= beat.until || !beat.elections.contains(&self.election) {
            return None;
        }
        let listed =
            beat.leaderships.iter().find(|l| l.election == self.election && l.candidate_id == self.candidate_id)?;
        (listed.term > self.renounced.load(Ordering::SeqCst)).then_some(Leadership {
            term: listed.term,
            fencing_token: listed.fencing_token,
            valid_until: beat.until,
        })
    }
}

/// A candidacy and the events of its leadership.
///
/// Leadership follows the crate's safety rule: it is held only while the lease's last
/// confirmed heartbeat listed it, until that heartbeat's send time + ttl. The Campaign stream
/// only notifies: ELECTED makes the lease keeper send a heartbeat at once, DEPOSED ends the
/// leadership at once and is acknowledged to zkcoord (Resign with `stay_candidate`), so that
/// the successor need not wait for this leadership's validity to run out. A stream that goes
/// silent (a frozen instance) cannot keep this candidate leading. Dropping the elector stops
/// following the election; the candidacy itself lives on with the lease until
/// [`LeaderElector::resign`].
#[derive(Debug)]
pub struct LeaderElector {
    client: Client,
    key: pb::CandidateKey,
    events: mpsc::UnboundedReceiver<LeadershipEvent>,
    shared: Arc<Shared>,
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
            unhealthy_for_ms: i64::try_from(options.unhealthy_for.as_millis()).unwrap_or(i64::MAX),
            healthy_for_ms: i64::try_from(options.healthy_for.as_millis()).unwrap_or(i64::MAX),
        };
        let beats = lease.beats().clone();
        beats.name(&options.election);
        let first = client
            .retrying(|channel| {
                let request = request.clone();
                async move { ElectionClient::new(channel).campaign(request).await }
            })
            .await;
        let first = match first {
            Ok(first) => first.into_inner(),
            Err(status) => {
                beats.forget(&options.election);
                return Err(status);
            }
        };
        let shared = Arc::new(Shared {
            election: options.election.clone(),
            candidate_id: options.candidate_id.clone(),
            beat: beats.subscribe(),
            beats,
            lease: lease.watch(),
            renounced: AtomicI64::new(0),
            ttl: lease.ttl(),
        });
        let (events_tx, events) = mpsc::unbounded_channel();
        let follow = Follow {
            client: client.clone(),
            request,
            key: key.clone(),
            shared: shared.clone(),
            events: events_tx,
            leading: None,
            deposed: None,
            acknowledge: options.acknowledge,
            held: None,
        };
        let task = tokio::spawn(follow.run(first));
        Ok(Self { client: client.clone(), key, events, shared, task })
    }

    /// The next event; `None` once the candidacy has ended (resigned, lease ended).
    ///
    /// # Cancellation safety
    /// Cancellation safe: no event is lost.
    pub async fn next(&mut self) -> Option<LeadershipEvent> {
        self.events.recv().await
    }

    /// The leadership this candidate may act on now, if any (the crate's safety rule). Check
    /// it right before each action: it can end without an event having been read yet.
    pub fn leadership(&self) -> Option<Leadership> {
        self.shared.leadership(Instant::now())
    }

    /// Whether this candidate may act as leader now, and with which (term, fencing token).
    pub fn leading(&self) -> Option<(i64, u64)> {
        self.leadership().map(|l| (l.term, l.fencing_token))
    }

    /// Whether this candidate may act as leader now.
    pub fn is_leader(&self) -> bool {
        self.leadership().is_some()
    }

    /// Gives up `term` here (never acted on again) and tells zkcoord this candidate has stopped
    /// acting as its leader, so that a deposition completes at once (Resign with
    /// `stay_candidate`). Needed only with [`CampaignOptions::manual_acknowledgement`].
    ///
    /// # Errors
    /// The Resign call's status (FAILED_PRECONDITION while zkcoord has not deposed it).
    pub async fn acknowledge(&self, term: i64) -> Result<(), Error> {
        let before = self.shared.renounced.fetch_max(term, Ordering::SeqCst);
        let acknowledged = acknowledge(&self.client, &self.key, term).await;
        if let Err(err) = &acknowledged
            && err.code() == Some(tonic::Code::FailedPrecondition)
            && before < term
        {
            // Still led undeposed: zkcoord did not take it away, so it is not given up either.
            let _ = self.shared.renounced.compare_exchange(term, before, Ordering::SeqCst, Ordering::SeqCst);
        }
        acknowledged
    }

    /// Withdraws the candidacy (a leader steps down; the next candidate is elected). The
    /// leadership ends here before the request is sent.
    ///
    /// # Errors
    /// The Resign call's status.
    pub async fn resign(self) -> Result<(), Error> {
        self.task.abort();
        self.shared.renounced.store(i64::MAX, Ordering::SeqCst);
        self.shared.beats.forget(&self.shared.election);
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
    /// candidate leads; returns the new leader once it is elected. The leadership ends here
    /// when zkcoord deposes it (DEPOSED, acknowledged by this elector).
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
        self.shared.beats.forget(&self.shared.election);
    }
}

/// The elector's background task.
struct Follow {
    client: Client,
    request: pb::CampaignRequest,
    key: pb::CandidateKey,
    shared: Arc<Shared>,
    events: mpsc::UnboundedSender<LeadershipEvent>,
    /// The leadership last reported (term, token).
    leading: Option<(i64, u64)>,
    /// Why the last term ended, when a DEPOSED said so.
    deposed: Option<pb::DeposedReason>,
    /// Whether to acknowledge depositions by itself.
    acknowledge: bool,
    /// The last term this candidate could act on and has not given up: acknowledged once a
    /// confirmed heartbeat withdraws it, even if its validity lapsed meanwhile.
    held: Option<i64>,
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
                            self.report(Some(LossReason::LeaseLost));
                            return;
                        }
                        Err(_) => {
                            at = self.client.rotate(at);
                            self.wait_a_little().await;
                            continue;
                        }
                    }
                }
            };
            match self.follow(current).await {
                StreamEnd::Over => return,
                StreamEnd::Broken => at = self.client.rotate(at),
            }
        }
    }

    /// Waits 100 ms while keeping the leadership events current.
    async fn wait_a_little(&mut self) {
        let pause = tokio::time::sleep(Duration::from_millis(100));
        tokio::pin!(pause);
        loop {
            self.report(None);
            if self.shared.lease.borrow().eq(&LeaseStatus::Lost) {
                return;
            }
            let expiry = self.expiry();
            let mut beat = self.shared.beat.clone();
            let mut lease = self.shared.lease.clone();
            tokio::select! {
                () = &mut pause => return,
                _ = beat.changed() => {}
                _ = lease.changed() => {}
                () = tokio::time::sleep_until(expiry) => {}
            }
        }
    }

    /// When the current leadership's validity runs out (far ahead when there is none).
    fn expiry(&self) -> Instant {
        self.shared
            .leadership(Instant::now())
            .map_or_else(|| Instant::now() + Duration::from_secs(3600), |l| l.valid_until)
    }

    /// Follows one Campaign stream together with the lease's heartbeats.
    async fn follow(&mut self, mut stream: tonic::Streaming<pb::CampaignResponse>) -> StreamEnd {
        let mut beat = self.shared.beat.clone();
        let mut lease = self.shared.lease.clone();
        loop {
            if *lease.borrow() == LeaseStatus::Lost {
                self.report(Some(LossReason::LeaseLost));
                return StreamEnd::Over;
            }
            self.report(None);
            let expiry = self.expiry();
            tokio::select! {
                message = stream.message() => match message {
                    Ok(Some(status)) => {
                        if let Some(end) = self.on_status(&status) {
                            return end;
                        }
                    }
                    Ok(None) | Err(_) => return StreamEnd::Broken,
                },
                changed = beat.changed() => if changed.is_err() {
                    self.report(Some(LossReason::LeaseLost));
                    return StreamEnd::Over;
                },
                changed = lease.changed() => if changed.is_err() {
                    self.report(Some(LossReason::LeaseLost));
                    return StreamEnd::Over;
                },
                () = tokio::time::sleep_until(expiry) => {}
            }
        }
    }

    /// Applies one Campaign status; `Some` when following must stop.
    fn on_status(&mut self, status: &pb::CampaignResponse) -> Option<StreamEnd> {
        match status.state() {
            // Only a confirmed heartbeat listing it makes it a leadership: ask for one now.
            pb::CandidateState::Elected => self.shared.beats.beat_now(),
            pb::CandidateState::Deposed => {
                let reason = status.reason();
                self.deposed = Some(reason);
                // Give the term up here first, then tell zkcoord (the successor is elected on
                // that acknowledgement instead of after this term's validity runs out).
                // Given up here at once in any case; acknowledged by this elector or the
                // application.
                self.shared.renounced.fetch_max(status.term, Ordering::SeqCst);
                if self.held.is_some_and(|held| held <= status.term) {
                    self.held = None;
                }
                self.report(Some(LossReason::Deposed(reason)));
                if matches!(reason, pb::DeposedReason::Resigned | pb::DeposedReason::LeaseExpired) {
                    return Some(StreamEnd::Over);
                }
                if self.acknowledge {
                    self.acknowledge_in_background(status.term);
                }
            }
            pb::CandidateState::Unconfirmed | pb::CandidateState::Queued | pb::CandidateState::Unspecified => {}
        }
        None
    }

    /// Tells zkcoord, in the background and retrying, that this candidate stopped leading
    /// `term` (Resign with `stay_candidate`).
    /// Retried while no instance answers, until the lease's ttl + 5 s has passed (by then the
    /// successor has been elected without it).
    fn acknowledge_in_background(&self, term: i64) {
        tracing::debug!(term, election = %self.shared.election, "acknowledging the end of a leadership");
        let client = self.client.clone();
        let key = self.key.clone();
        let give_up = Instant::now() + self.shared.ttl + ACKNOWLEDGE_SLACK;
        tokio::spawn(async move {
            loop {
                match acknowledge(&client, &key, term).await {
                    Ok(()) => return,
                    Err(err)
                        if Instant::now() < give_up
                            && matches!(
                                err.code(),
                                Some(tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::DeadlineExceeded)
                            ) =>
                    {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(err) => {
                        tracing::debug!(%err, term, "deposition not acknowledged; the successor waits for this term's validity to run out");
                        return;
                    }
                }
            }
        });
    }

    /// Whether the last confirmed heartbeat, still valid, named this election without listing
    /// `term`: zkcoord withdrew that leadership.
    fn withdrawn(&self, term: i64) -> bool {
        let beat = self.shared.beat.borrow();
        beat.as_ref().is_some_and(|beat| {
            Instant::now() < beat.until
                && beat.elections.contains(&self.shared.election)
                && !beat.leaderships.iter().any(|l| {
                    l.election == self.shared.election && l.candidate_id == self.shared.candidate_id && l.term == term
                })
        })
    }

    /// Reports a change of leadership against the rule; `loss` is the reason to give if it
    /// ended (the rule's own reason otherwise).
    fn report(&mut self, loss: Option<LossReason>) {
        if let Some(term) = self.held
            && self.withdrawn(term)
        {
            // zkcoord no longer lists it: deposed (its DEPOSED may never come, e.g. from a frozen
            // instance) or ended. Give it up for good and say so.
            self.held = None;
            self.shared.renounced.fetch_max(term, Ordering::SeqCst);
            if self.acknowledge {
                self.acknowledge_in_background(term);
            }
        }
        let now = self.shared.leadership(Instant::now()).map(|l| (l.term, l.fencing_token));
        if let Some((term, _)) = now {
            self.held = Some(term);
        }
        if now == self.leading {
            return;
        }
        if self.leading.is_some() {
            let reason = loss.unwrap_or_else(|| {
                let confirmed =
                    matches!(*self.shared.lease.borrow(), LeaseStatus::Confirmed { until } if Instant::now() < until);
                match self.deposed {
                    Some(reason) => LossReason::Deposed(reason),
                    None if confirmed => LossReason::Unconfirmed,
                    None => LossReason::LeaseUnconfirmed,
                }
            });
            let _ = self.events.send(LeadershipEvent::LostLeadership { reason });
        }
        if let Some((term, fencing_token)) = now {
            self.deposed = None;
            let _ = self.events.send(LeadershipEvent::BecameLeader { term, fencing_token });
        }
        self.leading = now;
    }
}

/// Resign with `stay_candidate` for `term`, retried on another endpoint while unavailable.
async fn acknowledge(client: &Client, key: &pb::CandidateKey, term: i64) -> Result<(), Error> {
    let request = pb::ResignRequest { key: Some(key.clone()), term, stay_candidate: true };
    client
        .retrying(|channel| {
            let request = request.clone();
            async move { ElectionClient::new(channel).resign(request).await }
        })
        .await?;
    Ok(())
}
