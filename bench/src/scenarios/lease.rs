//! Scenario 6 (lease keepalive at 10,000 leases, and the ZooKeeper writes it costs) and 7
//! (idle scale: leases each with a KeepAlive and an Observe stream; resident memory per lease,
//! ZooKeeper sessions used).

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::future::BoxFuture;
use tokio::{sync::watch, task::JoinHandle};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use zkcoord_client::pb::{self, election_client::ElectionClient, lease_client::LeaseClient};

use super::{Bench, Sys};
use crate::{
    clients::{self, Result, ctx},
    etcd,
    measure::{CpuMeter, Latencies, Row, connections_to, rss_kib},
    servers::GrpcChild,
};

const S6: &str = "6 lease keepalive";
const S7: &str = "7 idle scale";
/// gRPC streams per HTTP/2 connection (hyper's server allows 200 by default).
const STREAMS_PER_CONNECTION: usize = 100;
/// Calls in flight while setting up many leases.
const SETUP_CONCURRENCY: usize = 64;

/// A result and its index.
type Numbered<T> = (usize, T);

/// Runs `f(i)` for `i` in `0..n`, `SETUP_CONCURRENCY` at a time; returns the results in order.
pub(super) async fn for_each<T, F, Fut>(n: usize, f: F) -> Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let f = Arc::new(f);
    let workers: Vec<JoinHandle<Result<Vec<Numbered<T>>>>> = (0..SETUP_CONCURRENCY.min(n.max(1)))
        .map(|_| {
            let (next, f) = (next.clone(), f.clone());
            tokio::spawn(async move {
                let mut out = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return Ok(out);
                    }
                    out.push((i, f(i).await?));
                }
            })
        })
        .collect();
    let mut all = Vec::with_capacity(n);
    for worker in workers {
        all.extend(worker.await.map_err(ctx("setup worker"))??);
    }
    all.sort_unstable_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, t)| t).collect())
}

async fn connections(addr: std::net::SocketAddr, n: usize) -> Result<Arc<Vec<Channel>>> {
    let mut channels = Vec::with_capacity(n);
    for _ in 0..n {
        channels.push(clients::channel(addr).await?);
    }
    Ok(Arc::new(channels))
}

/// One heartbeat: when it was sent and how long its answer took.
type Beat = (Instant, Duration);

/// What one heartbeater did: its heartbeats, and the error that ended it early, if any.
type Beats = (Vec<Beat>, Option<String>);

/// A heartbeater: every `every` from `first` until `stop` says so, send one heartbeat and time
/// its answer. A failed heartbeat ends it (the lease is lost) and is reported, not raised.
async fn heartbeat_loop<F, Fut>(
    every: Duration,
    first: Instant,
    mut stop: watch::Receiver<bool>,
    mut beat: F,
) -> Result<Beats>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let mut beats = Vec::new();
    let mut next = first;
    loop {
        tokio::select! {
            _ = stop.changed() => return Ok((beats, None)),
            () = tokio::time::sleep_until(next.into()) => {}
        }
        let start = Instant::now();
        if let Err(err) = beat().await {
            return Ok((beats, Some(err)));
        }
        beats.push((start, start.elapsed()));
        next += every;
    }
}

/// Opens a zkcoord KeepAlive stream (its first heartbeat answered) and heartbeats on it.
async fn zkc_heartbeater(
    channel: Channel,
    lease: pb::LeaseRef,
    every: Duration,
    stop: watch::Receiver<bool>,
) -> Result<JoinHandle<Result<Beats>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let heartbeat = pb::KeepAliveRequest {
        lease: Some(lease),
        health: Some(pb::Health { status: pb::HealthStatus::Serving as i32, checks: Vec::new() }),
        elections: Vec::new(),
        shard_groups: Vec::new(),
    };
    tx.send(heartbeat.clone()).await.map_err(ctx("keepalive"))?;
    let mut answers =
        LeaseClient::new(channel).keep_alive(ReceiverStream::new(rx)).await.map_err(ctx("keepalive"))?.into_inner();
    answers.message().await.map_err(ctx("keepalive"))?.ok_or("keepalive ended")?;
    let first = Instant::now() + every.mul_f64(phase());
    Ok(tokio::spawn(async move {
        let answers = tokio::sync::Mutex::new(answers);
        heartbeat_loop(every, first, stop, || async {
            tx.send(heartbeat.clone()).await.map_err(ctx("keepalive"))?;
            let answer = answers.lock().await.message().await.map_err(ctx("keepalive"))?.ok_or("keepalive ended")?;
            if answer.confirmed { Ok(()) } else { Err("keepalive: heartbeat not confirmed".into()) }
        })
        .await
    }))
}

/// Opens an etcd LeaseKeepAlive stream and heartbeats on it.
async fn etcd_heartbeater(
    mut client: etcd::Client,
    id: i64,
    every: Duration,
    stop: watch::Receiver<bool>,
) -> Result<JoinHandle<Result<Beats>>> {
    let (keeper, answers) = client.lease_keep_alive(id).await.map_err(ctx("etcd keepalive"))?;
    let first = Instant::now() + every.mul_f64(phase());
    Ok(tokio::spawn(async move {
        let stream = tokio::sync::Mutex::new((keeper, answers));
        heartbeat_loop(every, first, stop, || async {
            let mut guard = stream.lock().await;
            let (keeper, answers) = &mut *guard;
            keeper.keep_alive().await.map_err(ctx("etcd keepalive"))?;
            let answer = answers.message().await.map_err(ctx("etcd keepalive"))?.ok_or("etcd keepalive ended")?;
            if answer.ttl > 0 { Ok(()) } else { Err("etcd keepalive: lease gone".into()) }
        })
        .await
    }))
}

/// A pseudo-random phase in 0..1, so heartbeats spread over their period.
fn phase() -> f64 {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed) as u64;
    (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64 / (1u64 << 53) as f64
}

/// Scenario 6 on `sys`: `n` leases of `ttl`, each heartbeating every ttl/3 on its own stream;
/// over `window` once all are set up: heartbeat round trip p50/p99, heartbeats answered per
/// second, and (zkcoord) the ZooKeeper writes made meanwhile.
pub async fn keepalive(bench: &Bench, sys: Sys, n: usize, ttl: Duration, window: Duration) -> Result<Row> {
    let every = ttl / 3;
    let conns = n.div_ceil(STREAMS_PER_CONNECTION);
    let (stop_tx, stop) = watch::channel(false);
    let mut row = Row::new(S6, sys.name(), &format!("{n} leases, ttl {} s, heartbeat every ttl/3", ttl.as_secs()));
    let grant_start = Instant::now();
    let zxid_before_grants = bench.zk.zxid().ok_or("zookeeper srvr")?;
    let (tasks, revoke): (Vec<_>, BoxFuture<'static, Result<()>>) = match sys {
        Sys::Zkcoord => {
            let channels = connections(bench.zkcoord.addr, conns).await?;
            let chans = channels.clone();
            let stop = stop.clone();
            let set = for_each(n, move |i| {
                let (channel, stop) = (chans[i / STREAMS_PER_CONNECTION].clone(), stop.clone());
                async move {
                    let lease = clients::grant(&channel, &format!("s6-{i}"), ttl).await?;
                    let task = zkc_heartbeater(channel, lease.clone(), every, stop).await?;
                    Ok((lease, task))
                }
            })
            .await?;
            let (leases, tasks): (Vec<_>, Vec<_>) = set.into_iter().unzip();
            let leases = Arc::new(leases);
            let revoke = Box::pin(async move {
                for_each(leases.len(), move |i| {
                    let (channel, lease) = (channels[i / STREAMS_PER_CONNECTION].clone(), leases[i].clone());
                    async move {
                        // Best effort: a lease that lost its heartbeats is gone already.
                        let _ = LeaseClient::new(channel).revoke(pb::RevokeRequest { lease: Some(lease) }).await;
                        Ok(())
                    }
                })
                .await
                .map(drop)
            });
            (tasks, revoke)
        }
        Sys::Etcd => {
            let url = bench.etcd_url()?.to_owned();
            let mut etcds = Vec::with_capacity(conns);
            for _ in 0..conns {
                etcds.push(clients::etcd(&url).await?);
            }
            let etcds = Arc::new(etcds);
            let clients_ = etcds.clone();
            let stop = stop.clone();
            let ttl_s = ttl.as_secs() as i64;
            let set = for_each(n, move |i| {
                let (mut client, stop) = (clients_[i / STREAMS_PER_CONNECTION].clone(), stop.clone());
                async move {
                    let id = client.lease_grant(ttl_s).await.map_err(ctx("etcd grant"))?;
                    let task = etcd_heartbeater(client, id, every, stop).await?;
                    Ok((id, task))
                }
            })
            .await?;
            let (leases, tasks): (Vec<_>, Vec<_>) = set.into_iter().unzip();
            let leases = Arc::new(leases);
            let revoke = Box::pin(async move {
                for_each(leases.len(), move |i| {
                    let (mut client, id) = (etcds[i / STREAMS_PER_CONNECTION].clone(), leases[i]);
                    async move {
                        let _ = client.lease_revoke(id).await; // best effort, as above
                        Ok(())
                    }
                })
                .await
                .map(drop)
            });
            (tasks, revoke)
        }
        Sys::ZooKeeper => return Err("leases are zkcoord's and etcd's; ZooKeeper's are sessions".into()),
    };
    let grants_per_s = n as f64 / grant_start.elapsed().as_secs_f64();
    let grant_writes = bench.zk.zxid().ok_or("zookeeper srvr")? - zxid_before_grants;
    // Let every stream settle into its rhythm, then measure over the window.
    tokio::time::sleep(every).await;
    let zxid_before = bench.zk.zxid().ok_or("zookeeper srvr")?;
    let meter = bench.meter(sys);
    let start = Instant::now();
    tokio::time::sleep(window).await;
    let until = Instant::now();
    let cpu = meter.stop();
    let writes = bench.zk.zxid().ok_or("zookeeper srvr")? - zxid_before;
    let _ = stop_tx.send(true);
    let mut lat = Latencies::default();
    let (mut failed, mut first_error) = (0, None);
    for task in tasks {
        let (beats, error) = task.await.map_err(ctx("heartbeater"))??;
        for (sent, rtt) in beats {
            if sent >= start && sent < until {
                lat.push(rtt);
            }
        }
        if let Some(error) = error {
            failed += 1;
            first_error.get_or_insert(error);
        }
    }
    revoke.await?;
    let per_s = lat.len() as f64 / window.as_secs_f64();
    let expected = n as f64 / every.as_secs_f64();
    row = row.latencies(&mut lat, false);
    row.summary = format!("{per_s:.0} heartbeats/s answered (of {expected:.0}/s sent); round trip {}", row.summary);
    if let Some(error) = first_error {
        row.summary.push_str(&format!("; {failed} of {n} leases lost a heartbeat (first: {error})"));
    }
    row = row.metric("leases_failed", failed as f64);
    if sys == Sys::Zkcoord {
        row.summary.push_str(&format!(
            "; {writes} ZooKeeper writes while heartbeating ({grant_writes} for the {n} grants, {grants_per_s:.0} grants/s)"
        ));
        row = row.metric("zk_writes", writes as f64).metric("zk_writes_grants", grant_writes as f64);
    } else {
        row.summary.push_str(&format!(" ({grants_per_s:.0} grants/s)"));
    }
    Ok(row.metric("per_s", per_s).metric("grants_per_s", grants_per_s).cpu(cpu))
}

/// Scenario 7: `n` leases (ttl 30 s, a KeepAlive stream heartbeating every 10 s) each with one
/// Observe stream, on a zkcoord instance started for this row (settings as the main one's):
/// its resident memory per lease, and the ZooKeeper connections in use. A fresh process, so
/// that memory freed by earlier scenarios (e.g. scenario 5's 50,000 streams) is not reused
/// and flatters the figure.
pub async fn idle(bench: &Bench, n: usize) -> Result<Row> {
    const TTL: Duration = Duration::from_secs(30);
    let log = bench.dir.join(format!("zkcoord-idle-{n}.log"));
    let instance = GrpcChild::zkcoord(&bench.zk.hosts(), &format!("/idle-{n}"), &log)?;
    let pid = instance.process.pid();
    let per_conn = STREAMS_PER_CONNECTION / 2;
    let channels = connections(instance.addr, n.div_ceil(per_conn)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = rss_kib(pid).ok_or("zkcoord's VmRSS")?;
    let meter = CpuMeter::start(&[("zkcoord", pid), ("zookeeper", bench.zk.process.pid())]).zookeeper(bench.zk.port);
    let election = format!("s7-{n}");
    let chans = channels.clone();
    let setup_start = Instant::now();
    let held = for_each(n, move |i| {
        let channel = chans[i / per_conn].clone();
        let election = election.clone();
        async move {
            let lease = clients::grant(&channel, &format!("s7-{i}"), TTL).await?;
            let keeper = clients::spawn_keepalive(channel.clone(), lease.clone(), TTL / 3).await?;
            let mut observe = clients::retry_unavailable("observe", || async {
                let request = pb::ObserveRequest { election: election.clone() };
                let mut observe = ElectionClient::new(channel.clone()).observe(request).await?.into_inner();
                match observe.message().await? {
                    Some(_) => Ok(observe),
                    None => Err(tonic::Status::internal("observe ended")),
                }
            })
            .await?;
            let observer = tokio::spawn(async move { while let Ok(Some(_)) = observe.message().await {} });
            Ok((lease, keeper, observer))
        }
    })
    .await?;
    let setup_s = setup_start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu = meter.stop();
    let rss_after = rss_kib(pid).ok_or("zkcoord's VmRSS")?;
    let zk_connections = connections_to(pid, bench.zk.port).unwrap_or(0);
    let per_lease_kib = (rss_after as f64 - rss_before as f64) / n as f64;
    let row = Row::new(S7, "zkcoord", &format!("{n} leases + {n} Observe streams"))
        .summary(format!(
            "{per_lease_kib:.1} KiB resident per lease+stream (RSS {:.0} → {:.0} MiB); {zk_connections} ZooKeeper session(s) open; set up in {setup_s:.0} s",
            rss_before as f64 / 1024.0,
            rss_after as f64 / 1024.0
        ))
        .metric("kib_per_lease", per_lease_kib)
        .metric("rss_before_kib", rss_before as f64)
        .metric("rss_after_kib", rss_after as f64)
        .metric("zk_sessions", zk_connections as f64)
        .metric("setup_s", setup_s)
        .cpu(cpu);
    // Stop heartbeating and observing, then revoke, so later runs start clean.
    let leases: Vec<pb::LeaseRef> = held
        .into_iter()
        .map(|(lease, keeper, observer)| {
            keeper.abort();
            observer.abort();
            lease
        })
        .collect();
    let leases = Arc::new(leases);
    for_each(n, move |i| {
        let (channel, lease) = (channels[i / per_conn].clone(), leases[i].clone());
        async move {
            LeaseClient::new(channel).revoke(pb::RevokeRequest { lease: Some(lease) }).await.map_err(ctx("revoke"))?;
            Ok(())
        }
    })
    .await?;
    Ok(row)
}
