//! Scenario 4 (clean resign → next leader notified), 3 (leader crash failover, 5 candidates)
//! and 5 (a leadership change fanned out to many Observe streams).

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{
    sync::{oneshot, watch},
    task::JoinHandle,
};
use tonic::{Streaming, transport::Channel};
use zkcoord_client::pb::{self, election_client::ElectionClient};

use super::{Bench, Sys};
use crate::{
    clients::{self, EtcdLease, Result, ZkcLease, ctx},
    etcd::{self, pb::v3electionpb::LeaderKey},
    measure::{Latencies, Row, ms},
};

const S3: &str = "3 leader crash failover";
const S4: &str = "4 resign → next leader";
const S5: &str = "5 leadership fan-out";
/// Lease ttl of candidates in the resign and fan-out scenarios.
const CANDIDATE_TTL: Duration = Duration::from_secs(10);
/// How long the successor has been waiting before each resign. etcd needs ~100 ms: a new
/// Campaign's watch starts "unsynced" and etcd syncs those every 100 ms; a standby has
/// usually waited much longer. Applied to every system alike.
const SETTLE: Duration = Duration::from_millis(150);
/// Longest wait for any one election event before the scenario fails.
const EVENT_TIMEOUT: Duration = Duration::from_secs(30);

async fn within<T>(what: &'static str, f: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(EVENT_TIMEOUT, f).await.map_err(|_| format!("{what}: no event within {EVENT_TIMEOUT:?}"))?
}

/// A zkcoord candidate: its own connection, lease and Campaign stream.
struct ZkcCandidate {
    id: String,
    election: String,
    channel: Channel,
    lease: ZkcLease,
    stream: Option<Streaming<pb::CampaignResponse>>,
}

impl ZkcCandidate {
    async fn new(bench: &Bench, election: &str, id: &str, ttl: Duration) -> Result<Self> {
        let channel = clients::channel(bench.zkcoord.addr).await?;
        let lease = ZkcLease::grant(&channel, id, ttl).await?;
        Ok(Self { id: id.to_owned(), election: election.to_owned(), channel, lease, stream: None })
    }

    fn key(&self) -> pb::CandidateKey {
        pb::CandidateKey {
            election: self.election.clone(),
            candidate_id: self.id.clone(),
            lease: Some(self.lease.lease.clone()),
        }
    }

    /// Campaigns and returns the first state (QUEUED or ELECTED).
    async fn campaign(&mut self) -> Result<pb::CampaignResponse> {
        let request = pb::CampaignRequest {
            key: Some(self.key()),
            value: self.id.as_bytes().to_vec(),
            priority: 0,
            preempt: pb::PreemptPolicy::Unspecified as i32,
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

    /// Reads the Campaign stream until it says ELECTED; returns when that arrived and the term.
    async fn wait_elected(&mut self) -> Result<(Instant, i64)> {
        loop {
            let state = self.next().await?;
            if state.state() == pb::CandidateState::Elected {
                return Ok((Instant::now(), state.term));
            }
        }
    }

    async fn resign(&mut self, term: i64) -> Result<()> {
        let request = pb::ResignRequest { key: Some(self.key()), term, stay_candidate: false };
        ElectionClient::new(self.channel.clone()).resign(request).await.map_err(ctx("resign"))?;
        self.stream = None;
        Ok(())
    }

    async fn retire(self) -> Result<()> {
        drop(self.stream);
        self.lease.revoke(&self.channel).await
    }
}

/// etcd candidates: Campaign is a unary call that returns once elected, so a waiting
/// candidate is a task; `registered` counts the candidates' keys under the election prefix.
async fn etcd_registered(client: &mut etcd::Client, election: &str) -> Result<i64> {
    client.count_prefix(format!("{election}/")).await.map_err(ctx("etcd get"))
}

async fn etcd_wait_registered(client: &mut etcd::Client, election: &str, n: i64) -> Result<()> {
    within("etcd campaign registered", async {
        while etcd_registered(client, election).await? < n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(())
    })
    .await
}

type EtcdCampaign = JoinHandle<Result<(Instant, LeaderKey)>>;

fn etcd_campaign(mut client: etcd::Client, election: &str, value: &str, lease: i64) -> EtcdCampaign {
    let (election, value) = (election.to_owned(), value.to_owned());
    tokio::spawn(async move {
        let mut elected = client.campaign(election, value, lease).await.map_err(ctx("etcd campaign"))?;
        let at = Instant::now();
        let key = elected.leader.take().ok_or("etcd campaign: no leader key")?;
        Ok((at, key))
    })
}

async fn etcd_resign(client: &mut etcd::Client, key: LeaderKey) -> Result<()> {
    client.resign(key).await.map_err(ctx("etcd resign"))?;
    Ok(())
}

async fn join_campaign(task: EtcdCampaign) -> Result<(Instant, LeaderKey)> {
    within("etcd campaign", async { task.await.map_err(ctx("etcd campaign task"))? }).await
}

type ZkWaiter = JoinHandle<Result<Instant>>;

/// A direct-ZooKeeper candidate joins the queue and waits (in a task) to be first; returns
/// once its watch is armed.
async fn zk_join(client: &zookeeper_client::Client, dir: &str) -> Result<(String, ZkWaiter)> {
    let me = clients::zk_enqueue(client, dir).await?;
    let (armed_tx, armed) = oneshot::channel();
    let (client, dir2, me2) = (client.clone(), dir.to_owned(), me.clone());
    let waiter = tokio::spawn(async move {
        clients::zk_wait_first_armed(&client, &dir2, &me2, Some(armed_tx)).await?;
        Ok(Instant::now())
    });
    armed.await.map_err(|_| "zookeeper waiter failed before arming".to_owned())?;
    Ok((me, waiter))
}

async fn join_waiter(task: ZkWaiter) -> Result<Instant> {
    within("zookeeper waiter", async { task.await.map_err(ctx("zookeeper waiter task"))? }).await
}

/// Scenario 4 on `sys`: two candidates hand leadership back and forth `n` times (plus a
/// warm-up); each time from the leader's resign call to the successor's notification.
pub async fn resign(bench: &Bench, sys: Sys, n: usize) -> Result<Row> {
    let warmup = (n / 20).clamp(3, 50);
    let mut lat = Latencies::with_capacity(n);
    let mut meter = None;
    let cpu = match sys {
        Sys::Zkcoord => {
            let election = "s4";
            let mut c = [
                ZkcCandidate::new(bench, election, "a", CANDIDATE_TTL).await?,
                ZkcCandidate::new(bench, election, "b", CANDIDATE_TTL).await?,
            ];
            let first = c[0].campaign().await?;
            let mut term = first.term;
            if first.state() != pb::CandidateState::Elected {
                term = within("zkcoord first elected", c[0].wait_elected()).await?.1;
            }
            c[1].campaign().await?;
            let mut leader = 0;
            for i in 0..warmup + n {
                if i == warmup {
                    meter = Some(bench.meter(sys));
                }
                let (a, b) = pair(&mut c);
                let (old, new) = if leader == 0 { (a, b) } else { (b, a) };
                tokio::time::sleep(SETTLE).await;
                let start = Instant::now();
                let (resigned, elected) = tokio::join!(old.resign(term), within("zkcoord elected", new.wait_elected()));
                resigned?;
                let (at, new_term) = elected?;
                if i >= warmup {
                    lat.push(at - start);
                }
                term = new_term;
                let again = old.campaign().await?;
                if again.state() != pb::CandidateState::Queued {
                    return Err(format!("zkcoord: re-campaign is {:?}, not queued", again.state()));
                }
                leader = 1 - leader;
            }
            let cpu = meter.take().map(|m| m.stop());
            let [a, b] = c;
            a.retire().await?;
            b.retire().await?;
            cpu
        }
        Sys::Etcd => {
            let url = bench.etcd_url()?;
            let election = "s4";
            let mut clients = [clients::etcd(url).await?, clients::etcd(url).await?];
            let leases = [
                EtcdLease::grant(&mut clients[0], CANDIDATE_TTL.as_secs() as i64).await?,
                EtcdLease::grant(&mut clients[1], CANDIDATE_TTL.as_secs() as i64).await?,
            ];
            let (_, mut leader_key) =
                join_campaign(etcd_campaign(clients[0].clone(), election, "a", leases[0].id)).await?;
            let mut pending = etcd_campaign(clients[1].clone(), election, "b", leases[1].id);
            etcd_wait_registered(&mut clients[0], election, 2).await?;
            let mut leader = 0;
            for i in 0..warmup + n {
                if i == warmup {
                    meter = Some(bench.meter(sys));
                }
                tokio::time::sleep(SETTLE).await;
                let start = Instant::now();
                etcd_resign(&mut clients[leader], leader_key).await?;
                let (at, key) = join_campaign(pending).await?;
                if i >= warmup {
                    lat.push(at - start);
                }
                leader_key = key;
                pending = etcd_campaign(clients[leader].clone(), election, ["a", "b"][leader], leases[leader].id);
                etcd_wait_registered(&mut clients[leader], election, 2).await?;
                leader = 1 - leader;
            }
            let cpu = meter.take().map(|m| m.stop());
            pending.abort();
            let [la, lb] = leases;
            la.revoke(&mut clients[0]).await?;
            lb.revoke(&mut clients[1]).await?;
            cpu
        }
        Sys::ZooKeeper => {
            let dir = "/direct/s4";
            let zk = [
                clients::zookeeper(&bench.zk.hosts(), Duration::from_secs(6)).await?,
                clients::zookeeper(&bench.zk.hosts(), Duration::from_secs(6)).await?,
            ];
            clients::zk_mkdir(&zk[0], dir).await?;
            let (first, waiter) = zk_join(&zk[0], dir).await?;
            join_waiter(waiter).await?;
            let mut nodes = [first, String::new()];
            let (second, mut pending) = zk_join(&zk[1], dir).await?;
            nodes[1] = second;
            let mut leader = 0;
            for i in 0..warmup + n {
                if i == warmup {
                    meter = Some(bench.meter(sys));
                }
                tokio::time::sleep(SETTLE).await;
                let start = Instant::now();
                zk[leader].delete(&format!("{dir}/{}", nodes[leader]), None).await.map_err(ctx("zookeeper delete"))?;
                let at = join_waiter(pending).await?;
                if i >= warmup {
                    lat.push(at - start);
                }
                let (node, waiter) = zk_join(&zk[leader], dir).await?;
                nodes[leader] = node;
                pending = waiter;
                leader = 1 - leader;
            }
            let cpu = meter.take().map(|m| m.stop());
            pending.abort();
            for (client, node) in zk.iter().zip(&nodes) {
                let _ = client.delete(&format!("{dir}/{node}"), None).await;
            }
            cpu
        }
    };
    Ok(finish_resign(sys, &mut lat, cpu))
}

fn pair<T>(c: &mut [T; 2]) -> (&mut T, &mut T) {
    let (a, b) = c.split_at_mut(1);
    (&mut a[0], &mut b[0])
}

fn finish_resign(sys: Sys, lat: &mut Latencies, cpu: Option<crate::measure::CpuUse>) -> Row {
    let variant = match sys {
        Sys::Zkcoord => "Resign → successor's Campaign stream ELECTED",
        Sys::Etcd => "Resign → successor's Campaign returns",
        Sys::ZooKeeper => "delete → successor's watch + getChildren",
    };
    let ops = lat.len();
    let row = Row::new(S4, sys.name(), variant).latencies(lat, false).ops(ops);
    match cpu {
        Some(cpu) => row.cpu(cpu),
        None => row,
    }
}

/// Scenario 3 on `sys`, `runs` times: 5 candidates, the leader's client crashes (heartbeats
/// stop, connection dropped, nothing revoked); the time from the crash until another
/// candidate is told it is elected. `ttl` is the lease ttl (zkcoord, etcd) or the session
/// timeout (ZooKeeper).
pub async fn failover(bench: &Bench, sys: Sys, ttl: Duration, runs: usize) -> Result<Row> {
    const CANDIDATES: usize = 5;
    let mut lat = Latencies::with_capacity(runs);
    let meter = bench.meter(sys);
    for run in 0..runs {
        let election = format!("s3-{}-{}ms-{run}", sys.name(), ttl.as_millis());
        match sys {
            Sys::Zkcoord => {
                let mut candidates = Vec::new();
                for i in 0..CANDIDATES {
                    let mut c = ZkcCandidate::new(bench, &election, &format!("c{i}"), ttl).await?;
                    c.campaign().await?;
                    candidates.push(c);
                }
                // The first candidate is (or is about to be) the leader.
                within("zkcoord first elected", candidates[0].wait_elected()).await?;
                let leader = candidates.remove(0);
                // Let the followers' first heartbeats pass, then crash the leader at a random
                // point of its heartbeat period, as a real crash would.
                tokio::time::sleep(ttl / 2 + jitter(ttl / 3, run)).await;
                let crashed = Instant::now();
                leader.lease.crash();
                drop(leader);
                let elected = {
                    let waits: Vec<_> = candidates.iter_mut().map(|c| Box::pin(c.wait_elected())).collect();
                    let (first, _, _rest) =
                        tokio::time::timeout(ttl * 4 + EVENT_TIMEOUT, futures_util::future::select_all(waits))
                            .await
                            .map_err(|_| "zkcoord failover: nobody elected".to_owned())?;
                    first?
                };
                lat.push(elected.0 - crashed);
                for c in candidates {
                    c.retire().await?;
                }
            }
            Sys::Etcd => {
                let url = bench.etcd_url()?;
                let ttl_s = ttl.as_secs() as i64;
                let mut clients = Vec::new();
                let mut leases = Vec::new();
                let mut campaigns = Vec::new();
                for i in 0..CANDIDATES {
                    let mut client = clients::etcd(url).await?;
                    let lease = EtcdLease::grant(&mut client, ttl_s).await?;
                    campaigns.push(etcd_campaign(client.clone(), &election, &format!("c{i}"), lease.id));
                    if i == 0 {
                        // The first candidate's Campaign returns at once: it leads.
                        let task = campaigns.remove(0);
                        join_campaign(task).await?;
                    }
                    clients.push(client);
                    leases.push(lease);
                }
                etcd_wait_registered(&mut clients[1], &election, CANDIDATES as i64).await?;
                tokio::time::sleep(ttl / 2 + jitter(ttl / 3, run)).await;
                let crashed = Instant::now();
                let leader_lease = leases.remove(0);
                leader_lease.crash();
                drop(leader_lease); // stops heartbeating, revokes nothing
                drop(clients.remove(0));
                let (first, _, rest) =
                    tokio::time::timeout(ttl * 4 + EVENT_TIMEOUT, futures_util::future::select_all(campaigns))
                        .await
                        .map_err(|_| "etcd failover: nobody elected".to_owned())?;
                let (at, _) = first.map_err(ctx("etcd campaign task"))??;
                lat.push(at - crashed);
                for task in rest {
                    task.abort();
                }
                for (lease, client) in leases.into_iter().zip(clients.iter_mut()) {
                    lease.revoke(client).await?;
                }
            }
            Sys::ZooKeeper => {
                let dir = format!("/direct/{election}");
                let mut sessions = Vec::new();
                let mut waiters = Vec::new();
                for _ in 0..CANDIDATES {
                    let zk = clients::zookeeper(&bench.zk.hosts(), ttl).await?;
                    if sessions.is_empty() {
                        clients::zk_mkdir(&zk, &dir).await?;
                    }
                    let (_, waiter) = zk_join(&zk, &dir).await?;
                    sessions.push(zk);
                    waiters.push(waiter);
                }
                join_waiter(waiters.remove(0)).await?;
                tokio::time::sleep(ttl / 2 + jitter(ttl / 3, run)).await;
                let crashed = Instant::now();
                // Detached: dropping the client drops the connection without closing the
                // session, which ZooKeeper expires after the session timeout.
                drop(sessions.remove(0));
                let (first, _, rest) =
                    tokio::time::timeout(ttl * 4 + EVENT_TIMEOUT, futures_util::future::select_all(waiters))
                        .await
                        .map_err(|_| "zookeeper failover: nobody elected".to_owned())?;
                let at = first.map_err(ctx("zookeeper waiter task"))??;
                lat.push(at - crashed);
                for task in rest {
                    task.abort();
                }
            }
        }
    }
    let cpu = meter.stop();
    let what = match sys {
        Sys::ZooKeeper => "session timeout",
        _ => "lease ttl",
    };
    let variant = format!("{what} {} s", ttl.as_secs());
    let mut row = Row::new(S3, sys.name(), &variant);
    let (p50, max) = (lat.quantile_ms(0.5), lat.max_ms());
    let over = max - ms(ttl);
    row.summary = format!(
        "crash → successor elected: p50 {:.2} s · max {:.2} s (max − ttl = {:+.0} ms, n={})",
        p50 / 1000.0,
        max / 1000.0,
        over,
        lat.len()
    );
    Ok(row
        .metric("p50_ms", p50)
        .metric("max_ms", max)
        .metric("max_minus_ttl_ms", over)
        .metric("n", lat.len() as f64)
        .ops(lat.len())
        .cpu(cpu))
}

/// A deterministic spread over `0..span` for run `run`.
fn jitter(span: Duration, run: usize) -> Duration {
    span.mul_f64(((run * 7 + 3) % 10) as f64 / 10.0)
}

/// Scenario 5 on `sys`: `n` Observe streams (100 per connection) on one election; the leader
/// resigns; the time from the resign call until each observer has the new leader. Observers
/// stay subscribed until the last one is counted.
///
/// etcd's observers follow the recipe of its Go client's `concurrency.Election.Observe` over
/// etcd's public API, each on a Watch stream of its own ([`etcd_observe`]), not v3election's
/// Observe: etcd 3.4.23 runs that recipe for every Observe stream on its in-process client,
/// whose one internal Watch stream deadlocks when many watches close at once (see
/// [`etcd_observe`]).
pub async fn fanout(bench: &Bench, sys: Sys, n: usize) -> Result<Row> {
    let election = format!("s5-{}-{n}", sys.name());
    let conns = n.div_ceil(100);
    let ready = Arc::new(AtomicUsize::new(0));
    let mut observers: Vec<Notified> = Vec::with_capacity(n);
    // Each observer keeps its stream (etcd: its watch) open until all are counted, as observers
    // in service stay subscribed: the teardown of the streams already notified would otherwise
    // compete for the two cores with the fan-out being measured (74 instead of 94 ms for
    // 10,000 zkcoord streams here).
    let (release, held) = watch::channel(());
    // Setting up takes longer the more observers there are (etcd: over 30 s for 50,000 here).
    let setup_timeout = EVENT_TIMEOUT + Duration::from_millis(2 * n as u64);
    let wait_ready = |ready: Arc<AtomicUsize>| async move {
        let all_ready = async {
            while ready.load(Ordering::Relaxed) < n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(setup_timeout, all_ready)
            .await
            .map_err(|_| format!("observers ready: {} of {n} within {setup_timeout:?}", ready.load(Ordering::Relaxed)))
    };
    let (start, cpu) = match sys {
        Sys::Zkcoord => {
            let mut a = ZkcCandidate::new(bench, &election, "a", CANDIDATE_TTL).await?;
            let mut b = ZkcCandidate::new(bench, &election, "b", CANDIDATE_TTL).await?;
            let first = a.campaign().await?;
            let term = if first.state() == pb::CandidateState::Elected {
                first.term
            } else {
                within("zkcoord first elected", a.wait_elected()).await?.1
            };
            b.campaign().await?;
            for c in 0..conns {
                let channel = clients::channel(bench.zkcoord.addr).await?;
                for _ in 0..(n - c * 100).min(100) {
                    let (channel, ready, election) = (channel.clone(), ready.clone(), election.clone());
                    observers.push(observer(held.clone(), async move {
                        let mut stream = ElectionClient::new(channel)
                            .observe(pb::ObserveRequest { election })
                            .await
                            .map_err(ctx("observe"))?
                            .into_inner();
                        stream.message().await.map_err(ctx("observe"))?.ok_or("observe ended")?;
                        ready.fetch_add(1, Ordering::Relaxed);
                        loop {
                            let state = stream.message().await.map_err(ctx("observe"))?.ok_or("observe ended")?;
                            if state.leader.is_some_and(|l| l.candidate_id == "b") {
                                return Ok((Instant::now(), stream));
                            }
                        }
                    }));
                }
            }
            wait_ready(ready.clone()).await?;
            tokio::time::sleep(SETTLE).await;
            let meter = bench.meter(sys);
            let start = Instant::now();
            a.resign(term).await?;
            let result = collect_observers(start, observers, meter).await;
            drop(release);
            b.retire().await?;
            a.retire().await?;
            result?
        }
        Sys::Etcd => {
            let url = bench.etcd_url()?;
            let mut ca = clients::etcd(url).await?;
            let mut cb = clients::etcd(url).await?;
            let la = EtcdLease::grant(&mut ca, CANDIDATE_TTL.as_secs() as i64).await?;
            let lb = EtcdLease::grant(&mut cb, CANDIDATE_TTL.as_secs() as i64).await?;
            let (_, key) = join_campaign(etcd_campaign(ca.clone(), &election, "a", la.id)).await?;
            let pending = etcd_campaign(cb.clone(), &election, "b", lb.id);
            etcd_wait_registered(&mut ca, &election, 2).await?;
            // The candidates' keys: v3election's `<name>/<lease in hex>`.
            let prefix = format!("{election}/");
            for c in 0..conns {
                let client = clients::etcd(url).await?;
                for _ in 0..(n - c * 100).min(100) {
                    let (client, ready, prefix) = (client.clone(), ready.clone(), prefix.clone());
                    observers.push(observer(held.clone(), etcd_observe(client, prefix, ready)));
                }
            }
            wait_ready(ready.clone()).await?;
            tokio::time::sleep(SETTLE).await;
            let meter = bench.meter(sys);
            let start = Instant::now();
            etcd_resign(&mut ca, key).await?;
            let result = collect_observers(start, observers, meter).await;
            drop(release);
            pending.abort();
            // The measurement's own error first: a lease found expired by its revoke says less.
            let revoked = (la.revoke(&mut ca).await, lb.revoke(&mut cb).await);
            let result = result?;
            revoked.0?;
            revoked.1?;
            result
        }
        Sys::ZooKeeper => {
            return Err("a direct-ZooKeeper observer is a session of its own with a watch; thousands of sessions \
                        were not attempted"
                .into());
        }
    };
    let (mut lat, cpu) = (start, cpu);
    let variant = match sys {
        Sys::Etcd => format!("{n} Watch streams (Go client's Observe recipe)"),
        _ => format!("{n} Observe streams"),
    };
    let mut row = Row::new(S5, sys.name(), &variant).latencies(&mut lat, false);
    row.summary =
        format!("resign → last observer {} ms; per observer {}", crate::measure::fmt_ms(lat.max_ms()), row.summary);
    Ok(row.cpu(cpu))
}

/// An etcd observer, as etcd's Go client observes an election (`concurrency.Election.Observe`):
/// reads the leader (the key created first under `prefix`), watches its key from the read's
/// next revision, and once it is deleted reads the next leader; returns when that is "b".
/// Counts itself in `ready` once its watch exists; returns with its watch, still open.
///
/// v3election's Observe runs this recipe inside etcd on its in-process client, which carries
/// every Observe's watch on one internal Watch stream (chanStream: unbuffered channels, no
/// flow-control buffering). When the leader's key is deleted, each Observe closes its watch
/// and that client sends a cancel per watch synchronously from its event loop; etcd answers
/// each into a 16-slot control channel that only its send loop drains, while the send loop
/// is blocked handing the next DELETE event to that same event loop. Seen with 1,000
/// observers on 3.4.23 (goroutine dump): 29 to 173 of them notified, then none (client
/// `watch.go:712` in `wc.Send`, server `v3rpc/watch.go:357` on `ctrlStream`, `:457` in
/// `Send`); that etcd's later Observe streams got nothing either, even 50 (etcd-io/etcd#18879,
/// #20716: the in-process client's watches stay stuck).
async fn etcd_observe(
    mut client: etcd::Client,
    prefix: String,
    ready: Arc<AtomicUsize>,
) -> Result<(Instant, impl Send + 'static)> {
    let (leader, revision) = client.first_created(prefix.as_bytes()).await.map_err(ctx("etcd leader"))?;
    let leader = leader.ok_or("etcd observe: no leader")?;
    let mut watch = client.watch(leader.key, revision + 1).await.map_err(ctx("etcd watch"))?;
    ready.fetch_add(1, Ordering::Relaxed);
    watch.deleted().await.map_err(ctx("etcd watch"))?;
    let (leader, _) = client.first_created(prefix.as_bytes()).await.map_err(ctx("etcd leader"))?;
    match leader {
        Some(kv) if kv.value == b"b" => Ok((Instant::now(), watch)),
        Some(kv) => Err(format!("etcd observe: leader {:?} after the resign", String::from_utf8_lossy(&kv.value))),
        None => Err("etcd observe: no leader after the resign".into()),
    }
}

/// When one observer was notified, or why it failed.
type Notified = oneshot::Receiver<Result<Instant>>;

/// Runs `observe` in a task of its own: it tells when it was notified, then keeps what it
/// returned (its subscription) until `held` is released.
fn observer<S: Send + 'static>(
    mut held: watch::Receiver<()>,
    observe: impl Future<Output = Result<(Instant, S)>> + Send + 'static,
) -> Notified {
    let (tell, notified) = oneshot::channel();
    tokio::spawn(async move {
        match observe.await {
            Ok((at, subscription)) => {
                let _ = tell.send(Ok(at));
                let _ = held.changed().await;
                drop(subscription);
            }
            Err(err) => {
                let _ = tell.send(Err(err));
            }
        }
    });
    notified
}

async fn collect_observers(
    start: Instant,
    observers: Vec<Notified>,
    meter: crate::measure::CpuMeter,
) -> Result<(Latencies, crate::measure::CpuUse)> {
    let mut lat = Latencies::with_capacity(observers.len());
    for observer in observers {
        let at = within("observer notified", async { observer.await.map_err(ctx("observer task"))? }).await?;
        lat.push(at.saturating_duration_since(start));
    }
    Ok((lat, meter.stop()))
}

/// Scenario 9 name.
const S9: &str = "9 transfer → successor elected";

/// Scenario 9 (zkcoord only; etcd and ZooKeeper have no Transfer): a responsive leader is
/// transferred away `n` times; the deposed leader acknowledges DEPOSED at once (Resign with
/// `stay_candidate`, as the client libraries do), and the time from the Transfer call to the
/// successor's ELECTED on its Campaign stream is measured. Without the acknowledgement the
/// successor would wait the leader's ttl + 1.25 s.
pub async fn transfer(bench: &Bench, n: usize) -> Result<Row> {
    let warmup = (n / 20).clamp(3, 50);
    let mut lat = Latencies::with_capacity(n);
    let election = "s9";
    let mut c = [
        ZkcCandidate::new(bench, election, "a", CANDIDATE_TTL).await?,
        ZkcCandidate::new(bench, election, "b", CANDIDATE_TTL).await?,
    ];
    let first = c[0].campaign().await?;
    if first.state() != pb::CandidateState::Elected {
        within("zkcoord first elected", c[0].wait_elected()).await?;
    }
    c[1].campaign().await?;
    let channel = clients::channel(bench.zkcoord.addr).await?;
    let mut leader = 0;
    let mut meter = None;
    for i in 0..warmup + n {
        if i == warmup {
            meter = Some(bench.meter(Sys::Zkcoord));
        }
        let (a, b) = pair(&mut c);
        let (old, new) = if leader == 0 { (a, b) } else { (b, a) };
        tokio::time::sleep(SETTLE).await;
        let target = new.id.clone();
        let mut elections = ElectionClient::new(channel.clone());
        let start = Instant::now();
        let transfer = async {
            let request =
                pb::TransferRequest { election: election.into(), target_candidate_id: target, from: None, term: 0 };
            elections.transfer(request).await.map_err(ctx("transfer"))
        };
        let acknowledge = async {
            loop {
                let status = old.next().await?;
                if status.state() == pb::CandidateState::Deposed {
                    let request = pb::ResignRequest { key: Some(old.key()), term: status.term, stay_candidate: true };
                    ElectionClient::new(old.channel.clone()).resign(request).await.map_err(ctx("acknowledge"))?;
                    return Ok::<(), String>(());
                }
            }
        };
        let (transferred, acknowledged, elected) = tokio::join!(
            transfer,
            within("zkcoord acknowledged", acknowledge),
            within("zkcoord elected", new.wait_elected())
        );
        transferred?;
        acknowledged?;
        let (at, _) = elected?;
        if i >= warmup {
            lat.push(at - start);
        }
        leader = 1 - leader;
    }
    let cpu = meter.take().map(|m| m.stop());
    let [a, b] = c;
    a.retire().await?;
    b.retire().await?;
    let ops = lat.len();
    let row = Row::new(S9, Sys::Zkcoord.name(), "Transfer → successor's Campaign stream ELECTED (leader acknowledges)")
        .latencies(&mut lat, false)
        .ops(ops);
    Ok(match cpu {
        Some(cpu) => row.cpu(cpu),
        None => row,
    })
}
