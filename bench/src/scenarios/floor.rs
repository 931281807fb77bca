//! Scenario 8: the overhead floor — trivial unary calls on zkcoord against the same call on a
//! bare tonic server (only `grpc.health.v1`, in a process of its own like zkcoord), one
//! client, one call at a time.

use std::time::Instant;

use tonic::{Code, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use zkcoord_client::pb::{self, election_client::ElectionClient, lease_client::LeaseClient};

use super::Bench;
use crate::{
    clients::{self, Result, ctx},
    measure::{CpuMeter, Latencies, Row},
    servers::GrpcChild,
};

const S8: &str = "8 overhead floor";

/// A server process to measure: name and pid.
type Server = (&'static str, u32);

#[derive(Debug, Clone, Copy)]
enum Call {
    Health,
    Leader,
    TimeToLive,
}

async fn call(channel: &Channel, call: Call) -> Result<()> {
    match call {
        Call::Health => {
            HealthClient::new(channel.clone())
                .check(HealthCheckRequest { service: String::new() })
                .await
                .map_err(ctx("health check"))?;
        }
        Call::Leader => {
            let answer =
                ElectionClient::new(channel.clone()).leader(pb::LeaderRequest { election: "s8-empty".into() }).await;
            if let Err(status) = answer
                && status.code() != Code::NotFound
            {
                return Err(format!("leader: {status}"));
            }
        }
        Call::TimeToLive => {
            let answer = LeaseClient::new(channel.clone()).time_to_live(pb::TimeToLiveRequest { lease_id: 1 }).await;
            match answer {
                Err(status) if status.code() == Code::NotFound => {}
                Err(status) => return Err(format!("time to live: {status}")),
                Ok(_) => return Err("time to live: lease 1 exists".into()),
            }
        }
    }
    Ok(())
}

async fn measure(
    channel: &Channel,
    what: Call,
    n: usize,
    servers: &[Server],
) -> Result<(Latencies, crate::measure::CpuUse)> {
    for _ in 0..(n / 10).max(10) {
        call(channel, what).await?;
    }
    let mut lat = Latencies::with_capacity(n);
    let meter = CpuMeter::start(servers);
    for _ in 0..n {
        let start = Instant::now();
        call(channel, what).await?;
        lat.push(start.elapsed());
    }
    Ok((lat, meter.stop()))
}

/// Scenario 8: `n` calls of each kind.
pub async fn floor(bench: &Bench, n: usize) -> Result<Vec<Row>> {
    let bare = GrpcChild::floor(&bench.dir.join("floor.log"))?;
    let bare_channel = clients::channel(bare.addr).await?;
    let zkc_channel = clients::channel(bench.zkcoord.addr).await?;
    let zkcoord_servers = [("zkcoord", bench.zkcoord.process.pid()), ("zookeeper", bench.zk.process.pid())];
    let cases: [(&str, &str, &Channel, Call, &[Server]); 4] = [
        ("bare tonic", "grpc.health.v1 Check", &bare_channel, Call::Health, &[("bare tonic", bare.process.pid())]),
        ("zkcoord", "grpc.health.v1 Check", &zkc_channel, Call::Health, &zkcoord_servers),
        ("zkcoord", "Election.Leader, empty election", &zkc_channel, Call::Leader, &zkcoord_servers),
        ("zkcoord", "Lease.TimeToLive, unknown lease", &zkc_channel, Call::TimeToLive, &zkcoord_servers),
    ];
    let mut rows = Vec::new();
    for (system, variant, channel, what, servers) in cases {
        let row = match measure(channel, what, n, servers).await {
            Ok((mut lat, cpu)) => Row::new(S8, system, variant).latencies(&mut lat, true).cpu(cpu),
            Err(err) => Row::not_measured(S8, system, variant, err),
        };
        rows.push(row);
    }
    Ok(rows)
}
