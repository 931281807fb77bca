//! Scenario 10: a shard group of `n` shards over `m` members on one zkcoord instance — the time
//! from a join to a balanced table, from a graceful leave to a balanced table, and from a
//! member's crash to all its shards re-owned; the shards moved against the minimum; ZooKeeper
//! writes per handoff; zkcoord's resident memory. zkcoord only (etcd and ZooKeeper have no
//! shard manager; the README cites Kafka's and Helix's published figures).

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use tokio::{sync::mpsc, task::JoinHandle};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Streaming, transport::Channel};
use zkcoord_client::pb::{self, lease_client::LeaseClient, shards_client::ShardsClient};

use super::Bench;
use crate::{
    clients::{self, Result, ctx},
    measure::{Row, fmt_ms, ms, rss_kib},
};

const S10: &str = "10 shard rebalance";
const GROUP: &str = "bench-flows";
/// Members' lease ttl.
const TTL: Duration = Duration::from_secs(3);
/// Members sharing one connection (two streams each).
const MEMBERS_PER_CONNECTION: usize = 50;
/// Longest wait for a table to settle.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);

/// A member: its lease kept by a KeepAlive stream naming the group, and a Watch stream whose
/// revocations it releases at once (one Release per Watch message).
struct Member {
    id: String,
    key: pb::MemberKey,
    tasks: Vec<JoinHandle<()>>,
}

impl Member {
    async fn join(channel: &Channel, id: &str, shards: u32) -> Result<Self> {
        let lease = clients::grant(channel, id, TTL).await?;
        let key = pb::MemberKey { group: GROUP.into(), member_id: id.into(), lease: Some(lease.clone()) };
        ShardsClient::new(channel.clone())
            .join(pb::JoinRequest { key: Some(key.clone()), shard_count: shards, weight: 1, labels: BTreeMap::new() })
            .await
            .map_err(ctx("join"))?;
        let heartbeats = keepalive(channel.clone(), lease).await?;
        let watch = ShardsClient::new(channel.clone())
            .watch(pb::WatchRequest { key: Some(key.clone()) })
            .await
            .map_err(ctx("watch"))?
            .into_inner();
        let releases = tokio::spawn(release_revoked(channel.clone(), key.clone(), watch));
        Ok(Self { id: id.to_owned(), key, tasks: vec![heartbeats, releases] })
    }

    /// Stops heartbeating and releasing: a crash, as far as zkcoord can tell.
    fn crash(&self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.crash();
    }
}

async fn keepalive(channel: Channel, lease: pb::LeaseRef) -> Result<JoinHandle<()>> {
    let (tx, rx) = mpsc::channel(4);
    let beat = pb::KeepAliveRequest {
        lease: Some(lease),
        health: None,
        elections: vec![],
        shard_groups: vec![GROUP.to_owned()],
    };
    tx.send(beat.clone()).await.map_err(ctx("keepalive"))?;
    let mut answers =
        LeaseClient::new(channel).keep_alive(ReceiverStream::new(rx)).await.map_err(ctx("keepalive"))?.into_inner();
    Ok(tokio::spawn(async move {
        let mut tick = tokio::time::interval(TTL / 3);
        loop {
            tick.tick().await;
            if tx.send(beat.clone()).await.is_err() {
                return;
            }
            if !matches!(answers.message().await, Ok(Some(_))) {
                return;
            }
        }
    }))
}

async fn release_revoked(channel: Channel, key: pb::MemberKey, mut watch: Streaming<pb::WatchResponse>) {
    let mut client = ShardsClient::new(channel);
    while let Ok(Some(message)) = watch.message().await {
        let shards: Vec<pb::ReleasedShard> = message
            .events
            .iter()
            .filter(|e| e.kind() == pb::shard_event::Kind::Revoke)
            .map(|e| pb::ReleasedShard { shard: e.shard, epoch: e.epoch })
            .collect();
        if !shards.is_empty() {
            let _ = client.release(pb::ReleaseRequest { key: Some(key.clone()), shards }).await;
        }
    }
}

/// The group's table, shard by shard: `(owner, state)`.
type Table = Vec<(String, pb::ShardState)>;

fn table_of(response: &pb::ObserveGroupResponse) -> Table {
    let mut table = Vec::with_capacity(response.shard_count as usize);
    for range in &response.ranges {
        for _ in range.first..=range.last {
            table.push((range.owner.clone(), range.state()));
        }
    }
    table
}

/// Balanced over `members`: every shard OWNED by one of them, each within one shard of its share.
fn balanced(table: &Table, members: &[&str]) -> bool {
    if table.is_empty() || members.is_empty() {
        return false;
    }
    let mut counts: BTreeMap<&str, usize> = members.iter().map(|m| (*m, 0)).collect();
    for (owner, state) in table {
        if *state != pb::ShardState::Owned {
            return false;
        }
        match counts.get_mut(owner.as_str()) {
            Some(count) => *count += 1,
            None => return false,
        }
    }
    let (floor, ceil) = (table.len() / members.len(), table.len().div_ceil(members.len()));
    counts.values().all(|c| *c == floor || *c == ceil)
}

/// Shards whose owner differs between two tables.
fn moved(before: &Table, after: &Table) -> usize {
    before.iter().zip(after).filter(|(b, a)| b.0 != a.0).count()
}

/// Reads Observe until `done(table)`; returns the table.
async fn until(observe: &mut Streaming<pb::ObserveGroupResponse>, done: impl Fn(&Table) -> bool) -> Result<Table> {
    tokio::time::timeout(SETTLE_TIMEOUT, async {
        loop {
            let message = observe.message().await.map_err(ctx("observe"))?.ok_or("observe ended")?;
            let table = table_of(&message);
            if done(&table) {
                return Ok(table);
            }
        }
    })
    .await
    .map_err(|_| format!("the table did not settle within {SETTLE_TIMEOUT:?}"))?
}

/// Runs the scenario with `n` shards over `m` members.
pub async fn rebalance(bench: &Bench, n: u32, m: usize) -> Result<Row> {
    // Each member holds two streams (KeepAlive, Watch): 50 members per connection stay well
    // within `max_streams_per_connection` (200 by default; one connection for 100 members
    // would wait forever for a stream slot).
    let channel = clients::channel(bench.zkcoord.addr).await?;
    let mut member_channel = channel.clone();
    let mut members = Vec::with_capacity(m + 1);
    for i in 0..m {
        if i > 0 && i % MEMBERS_PER_CONNECTION == 0 {
            member_channel = clients::channel(bench.zkcoord.addr).await?;
        }
        members.push(Member::join(&member_channel, &format!("m{i:03}"), n).await?);
    }
    let mut observe = ShardsClient::new(channel.clone())
        .observe(pb::ObserveGroupRequest { group: GROUP.into() })
        .await
        .map_err(ctx("observe"))?
        .into_inner();
    let ids = |members: &[Member]| members.iter().map(|m| m.id.clone()).collect::<Vec<_>>();
    let current = ids(&members);
    let settled = until(&mut observe, |t| balanced(t, &current.iter().map(String::as_str).collect::<Vec<_>>())).await?;

    // A join: how long until balanced, how many shards moved, ZooKeeper writes per handoff.
    let zxid = bench.zk.zxid().ok_or("zookeeper srvr")?;
    let started = Instant::now();
    let newcomer_channel = clients::channel(bench.zkcoord.addr).await?;
    members.push(Member::join(&newcomer_channel, "newcomer", n).await?);
    let current = ids(&members);
    let joined = until(&mut observe, |t| balanced(t, &current.iter().map(String::as_str).collect::<Vec<_>>())).await?;
    let join_time = started.elapsed();
    let join_writes = bench.zk.zxid().ok_or("zookeeper srvr")? - zxid;
    let join_moved = moved(&settled, &joined);
    let join_minimum = joined.iter().filter(|(o, _)| o == "newcomer").count();

    // A graceful leave.
    let leaver = members.remove(0);
    let leaver_owned = joined.iter().filter(|(o, _)| *o == leaver.id).count();
    let started = Instant::now();
    ShardsClient::new(channel.clone())
        .leave(pb::LeaveRequest { key: Some(leaver.key.clone()), wait_ms: 30_000 })
        .await
        .map_err(ctx("leave"))?;
    let current = ids(&members);
    let left = until(&mut observe, |t| balanced(t, &current.iter().map(String::as_str).collect::<Vec<_>>())).await?;
    let leave_time = started.elapsed();
    let leave_moved = moved(&joined, &left);
    drop(leaver);

    // A crash: heartbeats stop; its shards are re-owned once its lease has expired.
    let crashed = members.remove(0);
    let crashed_owned = left.iter().filter(|(o, _)| *o == crashed.id).count();
    let started = Instant::now();
    crashed.crash();
    let current = ids(&members);
    let recovered =
        until(&mut observe, |t| balanced(t, &current.iter().map(String::as_str).collect::<Vec<_>>())).await?;
    let crash_time = started.elapsed();
    let crash_moved = moved(&left, &recovered);
    let rss = rss_kib(bench.zkcoord.process.pid()).unwrap_or(0);

    let writes_per_handoff = join_writes as f64 / join_moved.max(1) as f64;
    let summary = format!(
        "join → balanced {} ms (moved {join_moved}, minimum {join_minimum}); leave → balanced {} ms (moved {leave_moved}, its own {leaver_owned}); crash → re-owned {} ms (ttl {} s; moved {crash_moved}, its own {crashed_owned}); {join_writes} ZooKeeper writes for the join ({writes_per_handoff:.2} per moved shard); zkcoord RSS {} MiB",
        fmt_ms(ms(join_time)),
        fmt_ms(ms(leave_time)),
        fmt_ms(ms(crash_time)),
        TTL.as_secs(),
        rss / 1024,
    );
    drop(members);
    Ok(Row::new(S10, "zkcoord", &format!("{n} shards, {m} members"))
        .metric("join_ms", ms(join_time))
        .metric("join_moved", join_moved as f64)
        .metric("join_minimum", join_minimum as f64)
        .metric("join_zk_writes", join_writes as f64)
        .metric("leave_ms", ms(leave_time))
        .metric("leave_moved", leave_moved as f64)
        .metric("leave_own", leaver_owned as f64)
        .metric("crash_ms", ms(crash_time))
        .metric("crash_moved", crash_moved as f64)
        .metric("crash_own", crashed_owned as f64)
        .metric("rss_kib", rss as f64)
        .summary(summary))
}
