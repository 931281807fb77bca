//! Scenario 11 (issue 17): one abusive client against an instance serving well-behaved leases
//! and leaders.
//!
//! A zkcoord instance of its own (namespace `/abuse`, its resident memory measured apart)
//! serves `leases` well-behaved leases, two candidates per election (a leader and a standby),
//! each heartbeating every ttl/3 on its own KeepAlive stream that names its election, as the
//! client libraries do. Phase A runs them alone; phase B adds one abusive client in a tenant of
//! its own (`abuser`), doing at once, each as fast as it can:
//!
//! * a **stream flood**: twice `max_streams_per_connection` Observe streams on one connection;
//! * a **grant flood**: Grants of leases of 1 h with 1 KiB of metadata, never heartbeated;
//! * an **Observe flood**: Observe of `observe_names` random names, keeping the latest
//!   `observe_hold` attempts open (past `max_observe_streams` some are refused; older ones close,
//!   so the instance follows and drops elections all along);
//! * **health flapping**: one lease campaigning in an election of its own, its health flipping
//!   between SERVING and NOT_SERVING on every heartbeat, at `flap_hz`.
//!
//! In both phases: the well-behaved heartbeats' round trip (p50/p99, by send time within the
//! phase), failovers (a leader resigns, time until its standby's Campaign stream says ELECTED;
//! the old leader campaigns again), and losses. A lease is lost when its KeepAlive stream fails
//! or ends; a leadership is lost when a confirmed heartbeat stops listing it without a planned
//! resign (a listing of a term the candidate resigned from is not counted: the client rule
//! ignores it, and an answer may be up to the proof window stale). Any loss fails the scenario
//! (its rows say FAILED). Unconfirmed heartbeats and ownership gaps (a confirmed answer
//! arriving later than the previous confirmed heartbeat's send time + ttl: the owner had to
//! stop acting meanwhile) are reported. The abuser's calls are counted by outcome (gRPC
//! status code).

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Streaming, metadata::MetadataValue, transport::Channel};
use zkcoord_client::pb::{self, election_client::ElectionClient, lease_client::LeaseClient};

use super::{Bench, Sys, lease::for_each};
use crate::{
    clients::{self, Result, ctx},
    measure::{CpuMeter, Latencies, Row, fmt_ms, rss_kib},
};

const S11: &str = "11 abuse";
/// The well-behaved leases' ttl (heartbeat every ttl/3).
const TTL: Duration = Duration::from_secs(3);
/// Well-behaved leases per connection (two streams each: KeepAlive and Campaign).
const LEASES_PER_CONNECTION: usize = 50;
/// The abuser's tenant.
const ABUSER_TENANT: &str = "abuser";
/// Observe streams the abuser keeps per connection of its Observe flood.
const OBSERVES_PER_CONNECTION: usize = 150;
/// Calls the Observe flood and the grant flood keep in flight.
const FLOOD_WORKERS: usize = 32;
/// Longest wait for any one election event before the scenario fails.
const EVENT_TIMEOUT: Duration = Duration::from_secs(30);

/// The scenario's sizes.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// Well-behaved leases (two per election).
    pub leases: usize,
    /// Length of phase A; phase B lasts as long, or until the Observe flood is done (at most 4×).
    pub phase: Duration,
    /// Failovers per phase (spread over it).
    pub failovers: usize,
    /// Observe calls of random names by the abuser.
    pub observe_names: usize,
    /// How many of its latest Observe attempts the abuser keeps open.
    pub observe_hold: usize,
    /// Streams the stream flood opens on its one connection.
    pub stream_flood: usize,
    /// Health flips per second.
    pub flap_hz: u32,
    /// Settings of the instance (`setting=value`, see `child::serve_zkcoord`).
    pub settings: Vec<String>,
}

impl Sizes {
    /// Seconds in all, limits lowered so that the abuser reaches them.
    pub fn quick() -> Self {
        Self {
            leases: 40,
            phase: Duration::from_secs(3),
            failovers: 5,
            observe_names: 3_000,
            observe_hold: 360,
            stream_flood: 400,
            flap_hz: 1000,
            settings: vec![
                format!("tenants={ABUSER_TENANT}"),
                "max_observe_streams=300".into(),
                "max_watched_elections=200".into(),
                "max_leases_per_tenant=500".into(),
            ],
        }
    }

    /// Issue 17's sizes; the instance has zkcoord's defaults (and the abuser's tenant).
    pub fn full() -> Self {
        Self {
            leases: 1_000,
            phase: Duration::from_secs(30),
            failovers: 30,
            observe_names: 100_000,
            observe_hold: 12_000,
            stream_flood: 400,
            flap_hz: 1000,
            settings: vec![format!("tenants={ABUSER_TENANT}")],
        }
    }
}

fn serving(status: pb::HealthStatus) -> pb::Health {
    pb::Health { status: status as i32, checks: Vec::new() }
}

/// A request in the abuser's tenant.
fn abuser<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("zkcoord-tenant", MetadataValue::from_static(ABUSER_TENANT));
    request
}

/// What went wrong for the well-behaved clients.
#[derive(Debug, Default)]
struct Losses {
    leases: AtomicUsize,
    leaderships: AtomicUsize,
    unconfirmed: AtomicUsize,
    gaps: AtomicUsize,
    first: Mutex<Option<String>>,
}

impl Losses {
    fn note(&self, what: String) {
        let mut first = self.first.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        first.get_or_insert(what);
    }
}

/// A well-behaved candidate's planned resigns, shared with its heartbeater.
#[derive(Debug, Default)]
struct Plan {
    /// Odd while a planned resign is under way (see [`heartbeater`]).
    resigning: AtomicU64,
    /// The last term it resigned from (see [`heartbeater`]).
    renounced: AtomicI64,
}

/// One heartbeat: send time and round trip.
type Beat = (Instant, Duration);

/// A well-behaved lease: heartbeats every ttl/3 naming its election, until `stop`.
///
/// `planned.resigning` is odd while a planned resign of this lease is under way; a heartbeat
/// sent or answered across a change of it, or a listing from before a planned resign, says
/// nothing about lost leaderships. `planned.renounced` is the last term it resigned from: as
/// the client rule says (and the client libraries do), a listing of that term or an earlier one
/// is not a leadership — the answer to a heartbeat sent just after the Resign may still list
/// it, read on a proof begun before the resignation (at most the proof window stale).
async fn heartbeater(
    owner: String,
    channel: Channel,
    lease: pb::LeaseRef,
    election: String,
    planned: Arc<Plan>,
    losses: Arc<Losses>,
    mut stop: watch::Receiver<bool>,
) -> Result<JoinHandle<Vec<Beat>>> {
    let every = TTL / 3;
    let (tx, rx) = mpsc::channel(2);
    let heartbeat = pb::KeepAliveRequest {
        lease: Some(lease.clone()),
        health: Some(serving(pb::HealthStatus::Serving)),
        elections: vec![election.clone()],
        shard_groups: Vec::new(),
    };
    tx.send(heartbeat.clone()).await.map_err(ctx("keepalive"))?;
    let mut answers =
        LeaseClient::new(channel).keep_alive(ReceiverStream::new(rx)).await.map_err(ctx("keepalive"))?.into_inner();
    answers.message().await.map_err(ctx("keepalive"))?.ok_or("keepalive ended")?;
    Ok(tokio::spawn(async move {
        let mut beats = Vec::new();
        let mut next = Instant::now() + every.mul_f64(phase_of(lease.id));
        let mut last_confirmed = Instant::now();
        let mut last_sent;
        // Whether the last undisturbed confirmed heartbeat listed the leadership, and the
        // value of `planned` then (a planned resign since makes it stale).
        let (mut listed, mut listed_plan) = (false, 0);
        loop {
            tokio::select! {
                _ = stop.changed() => return beats,
                () = tokio::time::sleep_until(next.into()) => {}
            }
            next += every;
            let sent = Instant::now();
            let plan = planned.resigning.load(Ordering::SeqCst);
            let answer = match tx.send(heartbeat.clone()).await {
                Ok(()) => answers.message().await,
                Err(_) => Ok(None),
            };
            let answer = match answer {
                Ok(Some(answer)) => answer,
                Ok(None) => {
                    losses.leases.fetch_add(1, Ordering::Relaxed);
                    losses.note(format!("lease {}: KeepAlive stream ended", lease.id));
                    return beats;
                }
                Err(status) => {
                    losses.leases.fetch_add(1, Ordering::Relaxed);
                    losses.note(format!("lease {}: KeepAlive: {status}", lease.id));
                    return beats;
                }
            };
            let answered = Instant::now();
            beats.push((sent, answered - sent));
            if !answer.confirmed {
                losses.unconfirmed.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if answered > last_confirmed + TTL {
                losses.gaps.fetch_add(1, Ordering::Relaxed);
            }
            last_sent = last_confirmed;
            last_confirmed = sent;
            let renounced = planned.renounced.load(Ordering::SeqCst);
            let now_listed = answer.leaderships.iter().any(|l| l.election == election && l.term > renounced);
            let undisturbed = plan.is_multiple_of(2) && planned.resigning.load(Ordering::SeqCst) == plan;
            if listed && !now_listed && undisturbed && listed_plan == plan {
                losses.leaderships.fetch_add(1, Ordering::Relaxed);
                losses.note(format!(
                    "{owner}: leadership of {election} not listed by a confirmed heartbeat (sent {:?} after the \
                     previous confirmed one, answered by {}, leaderships {:?})",
                    sent - last_sent,
                    answer.instance,
                    answer.leaderships
                ));
            }
            if undisturbed {
                (listed, listed_plan) = (now_listed, plan);
            } else {
                listed = false;
            }
        }
    }))
}

/// A pseudo-random phase in 0..1 from a number, so heartbeats spread over their period.
fn phase_of(n: i64) -> f64 {
    (mix(n as u64) >> 11) as f64 / (1u64 << 53) as f64
}

/// splitmix64's finaliser.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A well-behaved candidate.
struct Candidate {
    id: String,
    channel: Channel,
    lease: pb::LeaseRef,
    planned: Arc<Plan>,
    stream: Option<Streaming<pb::CampaignResponse>>,
}

impl Candidate {
    fn key(&self, election: &str) -> pb::CandidateKey {
        pb::CandidateKey {
            election: election.to_owned(),
            candidate_id: self.id.clone(),
            lease: Some(self.lease.clone()),
        }
    }

    /// Campaigns; returns the first state.
    async fn campaign(&mut self, election: &str) -> Result<pb::CampaignResponse> {
        let request = pb::CampaignRequest {
            key: Some(self.key(election)),
            value: self.id.as_bytes().to_vec(),
            ..Default::default()
        };
        let stream =
            ElectionClient::new(self.channel.clone()).campaign(request).await.map_err(ctx("campaign"))?.into_inner();
        self.stream = Some(stream);
        self.next().await
    }

    async fn next(&mut self) -> Result<pb::CampaignResponse> {
        let stream = self.stream.as_mut().ok_or("no campaign stream")?;
        stream.message().await.map_err(ctx("campaign stream"))?.ok_or_else(|| "campaign stream ended".to_owned())
    }

    /// Reads the Campaign stream until ELECTED; returns when that arrived and the term.
    async fn wait_elected(&mut self) -> Result<(Instant, i64)> {
        let wait = async {
            loop {
                let state = self.next().await?;
                if state.state() == pb::CandidateState::Elected {
                    return Ok((Instant::now(), state.term));
                }
            }
        };
        tokio::time::timeout(EVENT_TIMEOUT, wait).await.map_err(|_| "no ELECTED within 30 s".to_owned())?
    }
}

/// An election of two well-behaved candidates.
struct Pair {
    election: String,
    candidates: [Candidate; 2],
    leader: usize,
    term: i64,
}

impl Pair {
    /// The leader resigns; returns the time until the standby was told ELECTED. The old leader
    /// campaigns again (as the standby).
    async fn failover(&mut self) -> Result<Duration> {
        let (a, b) = self.candidates.split_at_mut(1);
        let (old, new) = if self.leader == 0 { (&mut a[0], &mut b[0]) } else { (&mut b[0], &mut a[0]) };
        old.planned.resigning.fetch_add(1, Ordering::SeqCst);
        old.planned.renounced.fetch_max(self.term, Ordering::SeqCst);
        let request = pb::ResignRequest { key: Some(old.key(&self.election)), term: self.term, stay_candidate: false };
        let start = Instant::now();
        let resign = async { ElectionClient::new(old.channel.clone()).resign(request).await.map_err(ctx("resign")) };
        let (resigned, elected) = tokio::join!(resign, new.wait_elected());
        resigned?;
        let (at, term) = elected?;
        old.stream = None;
        let again = old.campaign(&self.election).await?;
        old.planned.resigning.fetch_add(1, Ordering::SeqCst);
        if again.state() != pb::CandidateState::Queued {
            return Err(format!("re-campaign is {:?}, not queued", again.state()));
        }
        self.leader = 1 - self.leader;
        self.term = term;
        Ok(at - start)
    }
}

/// The abuser's calls by what and outcome (`OK` or the status code).
#[derive(Debug, Default)]
struct Tally(Mutex<BTreeMap<(&'static str, String), u64>>);

impl Tally {
    fn add(&self, what: &'static str, outcome: &str) {
        let mut map = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *map.entry((what, outcome.to_owned())).or_default() += 1;
    }

    fn status(&self, what: &'static str, status: &tonic::Status) {
        self.add(what, &format!("{:?}", status.code()));
    }

    fn snapshot(&self) -> BTreeMap<(&'static str, String), u64> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// The abuser: its tasks, run until `stop`.
struct Abuser {
    tally: Arc<Tally>,
    tasks: Vec<JoinHandle<()>>,
    observe_done: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
}

impl Abuser {
    async fn start(addr: std::net::SocketAddr, sizes: &Sizes) -> Result<Self> {
        let tally = Arc::new(Tally::default());
        let (stop, stopped) = watch::channel(false);
        let (observe_done_tx, observe_done) = watch::channel(false);
        let mut tasks = Vec::new();
        // `$ZKCOORD_BENCH_ABUSE` (comma-separated: flap, grant, streams, observe; all when
        // unset) runs only those parts of the abuse, to see what each costs the well-behaved.
        let parts = std::env::var("ZKCOORD_BENCH_ABUSE").unwrap_or_default();
        let runs = |part: &str| parts.is_empty() || parts.split(',').any(|p| p.trim() == part);

        // Health flapping: one lease campaigning alone, health flipping on every heartbeat.
        if runs("flap") {
            let channel = clients::channel(addr).await?;
            let granted = LeaseClient::new(channel.clone())
                .grant(abuser(pb::GrantRequest {
                    ttl_ms: 10_000,
                    owner: "flapper".into(),
                    metadata: Default::default(),
                    health: Some(serving(pb::HealthStatus::Serving)),
                }))
                .await
                .map_err(ctx("abuser grant"))?
                .into_inner();
            let lease = pb::LeaseRef { id: granted.lease_id, secret: granted.secret };
            let campaign = pb::CampaignRequest {
                key: Some(pb::CandidateKey {
                    election: "flap".into(),
                    candidate_id: "flapper".into(),
                    lease: Some(lease.clone()),
                }),
                ..Default::default()
            };
            let (tx, rx) = mpsc::channel(64);
            let first = pb::KeepAliveRequest {
                lease: Some(lease.clone()),
                health: Some(serving(pb::HealthStatus::Serving)),
                ..Default::default()
            };
            tx.send(first).await.map_err(ctx("abuser keepalive"))?;
            let mut answers = LeaseClient::new(channel.clone())
                .keep_alive(abuser(ReceiverStream::new(rx)))
                .await
                .map_err(ctx("abuser keepalive"))?
                .into_inner();
            answers.message().await.map_err(ctx("abuser keepalive"))?;
            let mut campaign = ElectionClient::new(channel.clone())
                .campaign(abuser(campaign))
                .await
                .map_err(ctx("abuser campaign"))?
                .into_inner();
            let t = tally.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    match campaign.message().await {
                        Ok(Some(state)) => t.add("flapper Campaign status", &format!("{:?}", state.state())),
                        Ok(None) => return,
                        Err(status) => return t.status("flapper Campaign status", &status),
                    }
                }
            }));
            let t = tally.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    match answers.message().await {
                        Ok(Some(_)) => t.add("flapping heartbeat", "OK"),
                        Ok(None) => return,
                        Err(status) => return t.status("flapping heartbeat", &status),
                    }
                }
            }));
            let (hz, mut stop_flap) = (sizes.flap_hz.max(1), stopped.clone());
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1) / hz);
                let mut n = 0u64;
                loop {
                    tokio::select! {
                        _ = stop_flap.changed() => return,
                        _ = tick.tick() => {}
                    }
                    n += 1;
                    let status =
                        if n.is_multiple_of(2) { pb::HealthStatus::Serving } else { pb::HealthStatus::NotServing };
                    let beat = pb::KeepAliveRequest {
                        lease: Some(lease.clone()),
                        health: Some(serving(status)),
                        ..Default::default()
                    };
                    if tx.send(beat).await.is_err() {
                        return;
                    }
                }
            }));
        }

        // Grant flood.
        if runs("grant") {
            let channel = clients::channel(addr).await?;
            let metadata: BTreeMap<String, String> = [("junk".to_owned(), "x".repeat(1024))].into();
            for w in 0..FLOOD_WORKERS {
                let (channel, t, metadata, mut stop) =
                    (channel.clone(), tally.clone(), metadata.clone(), stopped.clone());
                tasks.push(tokio::spawn(async move {
                    let mut client = LeaseClient::new(channel);
                    for i in 0.. {
                        let request = abuser(pb::GrantRequest {
                            ttl_ms: 3_600_000,
                            owner: format!("flood-{w}-{i}"),
                            metadata: metadata.clone(),
                            health: None,
                        });
                        tokio::select! {
                            _ = stop.changed() => return,
                            answer = client.grant(request) => match answer {
                                Ok(_) => t.add("Grant", "OK"),
                                Err(status) => t.status("Grant", &status),
                            },
                        }
                    }
                }));
            }
        }

        // Stream flood: more streams than one connection may have open, all on one connection.
        if runs("streams") {
            let channel = clients::channel(addr).await?;
            for _ in 0..sizes.stream_flood {
                let (channel, t, mut stop) = (channel.clone(), tally.clone(), stopped.clone());
                tasks.push(tokio::spawn(async move {
                    let open = async {
                        let mut stream = ElectionClient::new(channel)
                            .observe(abuser(pb::ObserveRequest { election: "stream-flood".into() }))
                            .await?
                            .into_inner();
                        stream.message().await?;
                        Ok::<_, tonic::Status>(stream)
                    };
                    tokio::select! {
                        _ = stop.changed() => t.add("stream flood (Observe)", "still waiting at the end"),
                        opened = open => match opened {
                            Ok(_stream) => {
                                t.add("stream flood (Observe)", "OK");
                                let _ = stop.changed().await; // held open until the end
                            }
                            Err(status) => t.status("stream flood (Observe)", &status),
                        },
                    }
                }));
            }
        }

        // Observe flood of random names, the latest `observe_hold` attempts kept open.
        if !runs("observe") {
            let _ = observe_done_tx.send(true);
            return Ok(Self { tally, tasks, observe_done, stop });
        }
        let conns = (sizes.observe_hold + FLOOD_WORKERS).div_ceil(OBSERVES_PER_CONNECTION).max(1);
        let mut channels = Vec::with_capacity(conns);
        for _ in 0..conns {
            channels.push(clients::channel(addr).await?);
        }
        let channels = Arc::new(channels);
        let held: Arc<Mutex<VecDeque<Option<Streaming<pb::ObserveResponse>>>>> = Arc::default();
        let next = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let (names, hold) = (sizes.observe_names, sizes.observe_hold);
        let seed = mix(std::process::id() as u64 ^ Instant::now().elapsed().as_nanos() as u64);
        let observe_done_tx = Arc::new(observe_done_tx);
        for _ in 0..FLOOD_WORKERS {
            let (channels, t, held, next, done, mut stop) =
                (channels.clone(), tally.clone(), held.clone(), next.clone(), done.clone(), stopped.clone());
            let observe_done_tx = observe_done_tx.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= names {
                        return;
                    }
                    let name = format!("random-{:016x}", mix(seed ^ i as u64));
                    let channel = channels[i % channels.len()].clone();
                    let open = async {
                        let mut stream = ElectionClient::new(channel)
                            .observe(abuser(pb::ObserveRequest { election: name }))
                            .await?
                            .into_inner();
                        stream.message().await?;
                        Ok::<_, tonic::Status>(stream)
                    };
                    let kept = tokio::select! {
                        _ = stop.changed() => return,
                        opened = open => match opened {
                            Ok(stream) => {
                                t.add("Observe (random name)", "OK");
                                Some(stream)
                            }
                            Err(status) => {
                                t.status("Observe (random name)", &status);
                                None
                            }
                        },
                    };
                    let dropped = {
                        let mut held = held.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        held.push_back(kept);
                        if held.len() > hold { held.pop_front() } else { None }
                    };
                    drop(dropped);
                    if done.fetch_add(1, Ordering::Relaxed) + 1 == names {
                        let _ = observe_done_tx.send(true);
                    }
                }
            }));
        }
        Ok(Self { tally, tasks, observe_done, stop })
    }

    /// Stops every task; returns the tally.
    async fn stop(self) -> BTreeMap<(&'static str, String), u64> {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        self.tally.snapshot()
    }
}

/// What one phase measured.
struct Phase {
    window: (Instant, Instant),
    failovers: Latencies,
    rss_max_kib: u64,
}

/// Runs failovers spread over `min`..`max` (ending after `min` once `done` is true, if given);
/// samples the instance's RSS meanwhile.
async fn run_phase(
    pairs: &mut [Pair],
    next_pair: &mut usize,
    failovers: usize,
    min: Duration,
    max: Duration,
    done: Option<watch::Receiver<bool>>,
    pid: u32,
) -> Result<Phase> {
    let start = Instant::now();
    let every = min / failovers.max(1) as u32;
    let mut lat = Latencies::default();
    let mut rss_max = rss_kib(pid).unwrap_or(0);
    let mut next_failover = start + every / 2;
    loop {
        let elapsed = start.elapsed();
        let finished = done.as_ref().is_none_or(|d| *d.borrow());
        if elapsed >= max || (elapsed >= min && finished) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100).min(every)).await;
        rss_max = rss_max.max(rss_kib(pid).unwrap_or(0));
        if Instant::now() >= next_failover && !pairs.is_empty() {
            let i = *next_pair % pairs.len();
            *next_pair += 1;
            lat.push(pairs[i].failover().await.map_err(|e| format!("failover of {}: {e}", pairs[i].election))?);
            next_failover += every;
        }
    }
    Ok(Phase { window: (start, Instant::now()), failovers: lat, rss_max_kib: rss_max })
}

/// Scenario 11 with `sizes`; one row per phase.
pub async fn abuse(bench: &Bench, sizes: &Sizes) -> Result<Vec<Row>> {
    let log = bench.dir.join("zkcoord-abuse.log");
    let instance = crate::servers::GrpcChild::zkcoord_with(&bench.zk.hosts(), "/abuse", &log, &sizes.settings)?;
    let (addr, pid) = (instance.addr, instance.process.pid());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_start = rss_kib(pid).ok_or("zkcoord's VmRSS")?;

    // The well-behaved: `leases` leases, two candidates per election.
    let elections = sizes.leases.div_ceil(2);
    let mut channels = Vec::new();
    for _ in 0..sizes.leases.div_ceil(LEASES_PER_CONNECTION) {
        channels.push(clients::channel(addr).await?);
    }
    let channels = Arc::new(channels);
    let losses = Arc::new(Losses::default());
    let (stop_tx, stop) = watch::channel(false);
    let setup_start = Instant::now();
    let (chans, l) = (channels.clone(), losses.clone());
    let set = for_each(elections, move |e| {
        let (chans, losses, stop) = (chans.clone(), l.clone(), stop.clone());
        async move {
            let election = format!("well-{e}");
            let mut candidates = Vec::new();
            let mut heartbeaters = Vec::new();
            for k in 0..2 {
                let channel = chans[(2 * e + k) / LEASES_PER_CONNECTION].clone();
                let id = format!("c{e}-{k}");
                let lease = clients::grant(&channel, &id, TTL).await?;
                let planned = Arc::new(Plan::default());
                heartbeaters.push(
                    heartbeater(
                        id.clone(),
                        channel.clone(),
                        lease.clone(),
                        election.clone(),
                        planned.clone(),
                        losses.clone(),
                        stop.clone(),
                    )
                    .await?,
                );
                candidates.push(Candidate { id, channel, lease, planned, stream: None });
            }
            let [mut a, mut b]: [Candidate; 2] = candidates.try_into().map_err(|_| "two candidates")?;
            let first = a.campaign(&election).await?;
            let term =
                if first.state() == pb::CandidateState::Elected { first.term } else { a.wait_elected().await?.1 };
            let second = b.campaign(&election).await?;
            if second.state() != pb::CandidateState::Queued {
                return Err(format!("standby of {election} is {:?}", second.state()));
            }
            Ok((Pair { election, candidates: [a, b], leader: 0, term }, heartbeaters))
        }
    })
    .await?;
    let setup_s = setup_start.elapsed().as_secs_f64();
    let (mut pairs, heartbeaters): (Vec<_>, Vec<_>) = set.into_iter().unzip();
    let heartbeaters: Vec<JoinHandle<Vec<Beat>>> = heartbeaters.into_iter().flatten().collect();
    // Let every heartbeater settle into its rhythm.
    tokio::time::sleep(TTL / 3).await;
    let rss_setup = rss_kib(pid).ok_or("zkcoord's VmRSS")?;

    let mut next_pair = 0;
    let servers = [("zkcoord", pid), ("zookeeper", bench.zk.process.pid())];
    let meter_a = CpuMeter::start(&servers);
    let a = run_phase(&mut pairs, &mut next_pair, sizes.failovers, sizes.phase, sizes.phase, None, pid).await?;
    let cpu_a = meter_a.stop();
    let losses_a = snapshot(&losses);

    let meter_b = CpuMeter::start(&servers);
    let abuser = Abuser::start(addr, sizes).await?;
    let done = abuser.observe_done.clone();
    let b = run_phase(&mut pairs, &mut next_pair, sizes.failovers, sizes.phase, sizes.phase * 4, Some(done), pid).await;
    let tally = abuser.stop().await;
    let cpu_b = meter_b.stop();
    let b = b?;
    let rss_end = rss_kib(pid).unwrap_or(0);

    let _ = stop_tx.send(true);
    let mut beats = Vec::new();
    for task in heartbeaters {
        beats.extend(task.await.map_err(ctx("heartbeater"))?);
    }
    let losses_b = snapshot(&losses);
    for pair in &pairs {
        for c in &pair.candidates {
            let _ =
                LeaseClient::new(c.channel.clone()).revoke(pb::RevokeRequest { lease: Some(c.lease.clone()) }).await;
        }
    }
    drop(pairs);
    drop(instance);

    let lost = losses_b.leases + losses_b.leaderships;
    let failed = (lost > 0).then(|| {
        let first = losses.first.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone().unwrap_or_default();
        format!("FAILED: a well-behaved lease or leadership was lost (first: {first})")
    });

    let variant = |phase: &str| format!("{phase}: {} leases, {} elections", sizes.leases, elections);
    let mut rows = Vec::new();
    for (name, phase, cpu, before, after) in [
        ("A without the abuser", &a, cpu_a, LossCounts::default(), losses_a),
        ("B with the abuser", &b, cpu_b, losses_a, losses_b),
    ] {
        let mut lat = Latencies::default();
        for &(sent, rtt) in &beats {
            if sent >= phase.window.0 && sent < phase.window.1 {
                lat.push(rtt);
            }
        }
        let mut failovers = phase.failovers.clone();
        let mut row = Row::new(S11, Sys::Zkcoord.name(), &variant(name)).latencies(&mut lat, false);
        let (unconfirmed, gaps) = (after.unconfirmed - before.unconfirmed, after.gaps - before.gaps);
        let (leases_lost, leaderships_lost) = (after.leases - before.leases, after.leaderships - before.leaderships);
        row.summary = format!(
            "heartbeat round trip {}; failover (resign → standby ELECTED) p50 {} · max {} ms (n={}); \
             {leases_lost} leases and {leaderships_lost} leaderships lost, {unconfirmed} unconfirmed heartbeats, {gaps} ownership gaps; \
             zkcoord RSS max {:.0} MiB; phase {:.1} s",
            row.summary,
            fmt_ms(failovers.quantile_ms(0.5)),
            fmt_ms(failovers.max_ms()),
            failovers.len(),
            phase.rss_max_kib as f64 / 1024.0,
            (phase.window.1 - phase.window.0).as_secs_f64(),
        );
        row = row
            .metric("failover_p50_ms", failovers.quantile_ms(0.5))
            .metric("failover_p99_ms", failovers.quantile_ms(0.99))
            .metric("failover_max_ms", failovers.max_ms())
            .metric("leases_lost", leases_lost as f64)
            .metric("leaderships_lost", leaderships_lost as f64)
            .metric("unconfirmed_heartbeats", unconfirmed as f64)
            .metric("ownership_gaps", gaps as f64)
            .metric("rss_max_kib", phase.rss_max_kib as f64)
            .metric("rss_start_kib", rss_start as f64)
            .metric("rss_after_setup_kib", rss_setup as f64)
            .metric("setup_s", setup_s)
            .cpu(cpu);
        row.note.clone_from(&failed);
        rows.push(row);
    }
    let b_row = rows.last_mut().ok_or("no row")?;
    let mut calls = Vec::new();
    for ((what, outcome), count) in &tally {
        b_row.metrics.insert(format!("abuser {what} {outcome}"), *count as f64);
        calls.push(format!("{what} {outcome} {count}"));
    }
    b_row.summary.push_str(&format!("; RSS at end {:.0} MiB; abuser: {}", rss_end as f64 / 1024.0, calls.join(", ")));
    Ok(rows)
}

#[derive(Debug, Default, Clone, Copy)]
struct LossCounts {
    leases: usize,
    leaderships: usize,
    unconfirmed: usize,
    gaps: usize,
}

fn snapshot(losses: &Losses) -> LossCounts {
    LossCounts {
        leases: losses.leases.load(Ordering::Relaxed),
        leaderships: losses.leaderships.load(Ordering::Relaxed),
        unconfirmed: losses.unconfirmed.load(Ordering::Relaxed),
        gaps: losses.gaps.load(Ordering::Relaxed),
    }
}
