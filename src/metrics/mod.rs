//! Prometheus metrics: what the instance serves (RPCs by method and code, with latencies),
//! what it holds (leases, elections and shard groups followed, lock calls), and how its
//! ZooKeeper session is doing (connected, round-trip time). Exposed as OpenMetrics text on
//! `GET /metrics` at `metrics_listen` ([`endpoint`]).
//!
//! RPC figures are recorded by a tower layer ([`rpc_layer`]); ZooKeeper round trips by a probe
//! ([`zk_probe`]); everything else is sampled from the recipes when scraped, from memory (a
//! scrape never reads ZooKeeper).
//!
//! Label cardinality is bounded by what the instance serves and by a cap: `tenant` by the
//! configured tenants, `method` by the served methods, `election` and `group` by the elections
//! and shard groups this instance follows *now* that **exist** in ZooKeeper (following a name
//! nobody campaigns or joins in — an Observe of a random name — adds no series; series
//! disappear when the instance stops following), and at most [`MAX_NAMED_SERIES`] elections and
//! as many shard groups per instance get series of their own: the rest (by tenant, then name)
//! are summed into one series per tenant labelled [`OTHER`] (`election_candidates` and
//! `shard_group_members`, `shard_group_handoffs` sum; `election_has_leader` counts the elections
//! with a leader; the per-member, handoff-duration and unowned-time series are kept for named
//! groups only). `member` is bounded by the members of the named groups (one series per member
//! of a followed group; a group of a thousand members followed here has a thousand).

pub mod endpoint;
pub mod rpc_layer;
pub mod zk_probe;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use prost::Message;

use crate::{
    recipe::shards::GroupWatch,
    sync_util::lock,
    tenant::Tenants,
    zk::{ZkSession, foreign::Kind},
};

/// The most elections, and separately the most shard groups, that get series of their own
/// (labelled with their name) per instance; the rest share [`OTHER`].
pub const MAX_NAMED_SERIES: usize = 1000;
/// The `election` or `group` label of the series summing those beyond [`MAX_NAMED_SERIES`].
/// Not a valid name (names cannot contain parentheses), so no election or group shares it.
pub const OTHER: &str = "(other)";

/// Hands out names to series until `left` runs out, then [`OTHER`].
#[derive(Debug)]
struct NameBudget {
    left: usize,
}

impl NameBudget {
    const fn new(cap: usize) -> Self {
        Self { left: cap }
    }

    /// The label for `name`: itself while there is room, else [`OTHER`].
    fn label(&mut self, name: String) -> String {
        match self.left.checked_sub(1) {
            Some(left) => {
                self.left = left;
                name
            }
            None => OTHER.to_owned(),
        }
    }
}

/// Label of RPC counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    method: String,
    code: String,
}

/// Label of RPC latencies.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

/// Label of per-tenant figures (`""`: the default tenant).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabels {
    tenant: String,
}

/// Label of skipped znodes (see `zk::foreign`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

/// Label of per-election figures.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ElectionLabels {
    tenant: String,
    election: String,
}

/// Label of per-shard-group figures.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabels {
    tenant: String,
    group: String,
}

/// Label of per-member figures of a shard group.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MemberLabels {
    tenant: String,
    group: String,
    member: String,
}

type Seconds = Family<MethodLabels, Histogram, fn() -> Histogram>;
type GroupSeconds = Family<GroupLabels, Histogram, fn() -> Histogram>;
type FloatCounter = Counter<f64, std::sync::atomic::AtomicU64>;

/// Handoff duration buckets: 5 ms (a prompt Release) to about 160 s (a ttl of a minute or two
/// run out without a Release).
fn handoff_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 16))
}

/// Latency buckets: 0.25 ms to about 8 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// Where scrape-time figures come from.
#[derive(Clone, Debug)]
pub struct Sources {
    /// The instance's ZooKeeper session.
    pub session: ZkSession,
    /// The recipes of every tenant.
    pub tenants: Tenants,
}

/// The instance's metrics. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Metrics {
    inner: Arc<Instruments>,
}

/// The registry and the metric families registered in it, shared by the clones of [`Metrics`].
#[derive(Debug)]
struct Instruments {
    registry: Registry,
    known_methods: HashSet<String>,
    rpc_requests: Family<RpcLabels, Counter>,
    rpc_seconds: Seconds,
    zk_connected: Gauge,
    zk_rtt_seconds: Histogram,
    leases: Family<TenantLabels, Gauge>,
    heartbeat_lag_seconds: Family<TenantLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    election_candidates: Family<ElectionLabels, Gauge>,
    election_has_leader: Family<ElectionLabels, Gauge>,
    lock_calls_in_progress: Family<TenantLabels, Gauge>,
    lock_acquired: Family<TenantLabels, Counter>,
    lock_released: Family<TenantLabels, Counter>,
    lease_health_writes: Family<TenantLabels, Counter>,
    lease_health_coalesced: Family<TenantLabels, Counter>,
    shard_group_members: Family<GroupLabels, Gauge>,
    shard_group_owned_shards: Family<MemberLabels, Gauge>,
    shard_group_handoffs: Family<GroupLabels, Gauge>,
    shard_group_handoff_seconds: GroupSeconds,
    shard_group_unowned_shard_seconds: Family<GroupLabels, FloatCounter>,
    undecodable_znodes: Family<KindLabels, Counter>,
    /// The group watch each per-group counter and histogram mirrors: a group followed again
    /// (a new watch) starts its series again from zero.
    shard_group_watches: Mutex<HashMap<GroupLabels, u64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Empty metrics, registered under the `zkcoord_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("zkcoord");
        let rpc_requests = Family::<RpcLabels, Counter>::default();
        registry.register("rpc_requests", "gRPC calls by method and status code", rpc_requests.clone());
        let rpc_seconds: Seconds = Family::new_with_constructor(latency_histogram);
        registry.register(
            "rpc_duration_seconds",
            "Time to the response headers (the whole call for unary RPCs, until the stream opened for streams)",
            rpc_seconds.clone(),
        );
        let zk_connected = Gauge::default();
        registry.register("zookeeper_connected", "1 while the ZooKeeper session is connected", zk_connected.clone());
        let zk_rtt_seconds = latency_histogram();
        registry.register(
            "zookeeper_rtt_seconds",
            "Round trip of a ZooKeeper read, probed every 5 s",
            zk_rtt_seconds.clone(),
        );
        let leases = Family::<TenantLabels, Gauge>::default();
        registry.register("leases", "Leases attached to this instance (kept alive through it)", leases.clone());
        let heartbeat_lag_seconds = Family::<TenantLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "heartbeat_lag_seconds",
            "Longest time since a heartbeat among leases attached to this instance",
            heartbeat_lag_seconds.clone(),
        );
        let election_candidates = Family::<ElectionLabels, Gauge>::default();
        registry.register(
            "election_candidates",
            "Candidates per election this instance follows",
            election_candidates.clone(),
        );
        let election_has_leader = Family::<ElectionLabels, Gauge>::default();
        registry.register(
            "election_has_leader",
            "1 when an election this instance follows has a leader",
            election_has_leader.clone(),
        );
        let lock_calls_in_progress = Family::<TenantLabels, Gauge>::default();
        registry.register(
            "lock_calls_in_progress",
            "Lock and TryLock calls being served by this instance (mostly waiters)",
            lock_calls_in_progress.clone(),
        );
        let lock_acquired = Family::<TenantLabels, Counter>::default();
        registry.register("lock_acquired", "Lock requests granted through this instance", lock_acquired.clone());
        let lock_released = Family::<TenantLabels, Counter>::default();
        registry.register("lock_released", "Holds released through this instance (Unlock)", lock_released.clone());
        let lease_health_writes = Family::<TenantLabels, Counter>::default();
        registry.register(
            "lease_health_writes",
            "Writes of a lease's health to ZooKeeper by this instance (at most health_writes_per_second per lease)",
            lease_health_writes.clone(),
        );
        let lease_health_coalesced = Family::<TenantLabels, Counter>::default();
        registry.register(
            "lease_health_changes_coalesced",
            "Health changes reported on heartbeats that needed no write of their own (a later one replaced them before the next write, or the health flapped back)",
            lease_health_coalesced.clone(),
        );
        let shard_group_members = Family::<GroupLabels, Gauge>::default();
        registry.register(
            "shard_group_members",
            "Members per shard group this instance follows",
            shard_group_members.clone(),
        );
        let shard_group_owned_shards = Family::<MemberLabels, Gauge>::default();
        registry.register(
            "shard_group_owned_shards",
            "Shards each member of a followed shard group owns (not being handed off)",
            shard_group_owned_shards.clone(),
        );
        let shard_group_handoffs = Family::<GroupLabels, Gauge>::default();
        registry.register(
            "shard_group_handoffs",
            "Shards being handed off (HANDING_OFF) per followed shard group",
            shard_group_handoffs.clone(),
        );
        let shard_group_handoff_seconds: GroupSeconds = Family::new_with_constructor(handoff_histogram);
        registry.register(
            "shard_group_handoff_duration_seconds",
            "Per shard: from when this instance first saw a handoff to the write of this instance that completed it",
            shard_group_handoff_seconds.clone(),
        );
        let shard_group_unowned_shard_seconds = Family::<GroupLabels, FloatCounter>::default();
        registry.register(
            "shard_group_unowned_shard_seconds",
            "Time x shards UNASSIGNED or HANDING_OFF in a followed shard group, as this instance saw it while following it",
            shard_group_unowned_shard_seconds.clone(),
        );
        let undecodable_znodes = Family::<KindLabels, Counter>::default();
        registry.register(
            "undecodable_znodes",
            "Times a znode in zkcoord's namespace that zkcoord did not write (undecodable data, a foreign name) was skipped, by what it was read as",
            undecodable_znodes.clone(),
        );
        Self {
            inner: Arc::new(Instruments {
                registry,
                known_methods: known_methods(),
                rpc_requests,
                rpc_seconds,
                zk_connected,
                zk_rtt_seconds,
                leases,
                heartbeat_lag_seconds,
                election_candidates,
                election_has_leader,
                lock_calls_in_progress,
                lock_acquired,
                lock_released,
                lease_health_writes,
                lease_health_coalesced,
                shard_group_members,
                shard_group_owned_shards,
                shard_group_handoffs,
                shard_group_handoff_seconds,
                shard_group_unowned_shard_seconds,
                undecodable_znodes,
                shard_group_watches: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Records one RPC. Paths that are not a method of a served service are counted as
    /// `other`, so that clients cannot grow the label set without bound.
    pub fn record_rpc(&self, path: &str, code: tonic::Code, elapsed: Duration) {
        let method = if self.inner.known_methods.contains(path) { path } else { "other" };
        let code = format!("{code:?}");
        self.inner.rpc_requests.get_or_create(&RpcLabels { method: method.to_owned(), code }).inc();
        self.inner
            .rpc_seconds
            .get_or_create(&MethodLabels { method: method.to_owned() })
            .observe(elapsed.as_secs_f64());
    }

    /// Samples one followed shard group: members, shards owned per member, handoffs in
    /// progress; moves its counter and histogram on.
    fn sample_group(&self, labels: &GroupLabels, watch: &GroupWatch) {
        let inner = &self.inner;
        let state = watch.state.borrow().clone();
        let table = state.table.as_ref().filter(|_| state.exists);
        let members = if table.is_some() { state.members.len() } else { 0 };
        inner.shard_group_members.get_or_create(labels).set(i64::try_from(members).unwrap_or(i64::MAX));
        let counts = table.map(|t| t.counts()).unwrap_or_default();
        inner.shard_group_handoffs.get_or_create(labels).set(i64::from(counts.handing_off));
        if let Some(table) = table {
            for member in state.members.values() {
                let owner = member.owner();
                let owned = table.owners.iter().position(|o| *o == owner).and_then(|i| counts.owned.get(i).copied());
                let member_labels = MemberLabels {
                    tenant: labels.tenant.clone(),
                    group: labels.group.clone(),
                    member: member.id.clone(),
                };
                inner.shard_group_owned_shards.get_or_create(&member_labels).set(i64::from(owned.unwrap_or(0)));
            }
        }
        let unowned = inner.shard_group_unowned_shard_seconds.get_or_create(labels);
        let total = watch.unowned_shard_seconds();
        if total > unowned.get() {
            unowned.inc_by(total - unowned.get());
        }
        let histogram = inner.shard_group_handoff_seconds.get_or_create(labels);
        for completed in watch.take_completed_handoffs() {
            for _ in 0..completed.shards {
                histogram.observe(completed.duration.as_secs_f64());
            }
        }
    }

    /// Adds one followed shard group beyond [`MAX_NAMED_SERIES`] to the [`OTHER`] series of
    /// its tenant (`labels`): its members and handoffs in progress.
    fn add_to_other_group(&self, labels: &GroupLabels, watch: &GroupWatch) {
        let state = watch.state.borrow().clone();
        let Some(table) = state.table.as_ref() else { return };
        let members = i64::try_from(state.members.len()).unwrap_or(i64::MAX);
        self.inner.shard_group_members.get_or_create(labels).inc_by(members);
        self.inner.shard_group_handoffs.get_or_create(labels).inc_by(i64::from(table.counts().handing_off));
    }

    /// Records one ZooKeeper round trip.
    pub fn record_zk_rtt(&self, elapsed: Duration) {
        self.inner.zk_rtt_seconds.observe(elapsed.as_secs_f64());
    }

    /// Samples `sources` and encodes every metric as OpenMetrics text.
    pub fn render(&self, sources: &Sources) -> String {
        let inner = &self.inner;
        inner.zk_connected.set(i64::from(sources.session.status().is_connected()));
        for kind in Kind::ALL {
            let counter = inner.undecodable_znodes.get_or_create(&KindLabels { kind: kind.label().to_owned() });
            catch_up(&counter, sources.session.skipped().count(kind));
        }
        inner.election_candidates.clear();
        inner.election_has_leader.clear();
        inner.shard_group_members.clear();
        inner.shard_group_owned_shards.clear();
        inner.shard_group_handoffs.clear();
        let mut watches = lock(&inner.shard_group_watches);
        let mut followed = HashSet::new();
        let (mut elections_named, mut groups_named) =
            (NameBudget::new(MAX_NAMED_SERIES), NameBudget::new(MAX_NAMED_SERIES));
        for recipes in sources.tenants.all() {
            let tenant = recipes.tenant.clone().unwrap_or_default();
            let labels = TenantLabels { tenant: tenant.clone() };
            let (leases, lag) = recipes.leases.local_stats();
            inner.leases.get_or_create(&labels).set(i64::try_from(leases).unwrap_or(i64::MAX));
            inner.heartbeat_lag_seconds.get_or_create(&labels).set(lag.as_secs_f64());
            let (written, coalesced) = recipes.leases.health_write_stats();
            catch_up(&inner.lease_health_writes.get_or_create(&labels), written);
            catch_up(&inner.lease_health_coalesced.get_or_create(&labels), coalesced);
            for election in recipes.elections.summaries().into_iter().filter(|e| e.exists) {
                let labels = ElectionLabels { tenant: tenant.clone(), election: elections_named.label(election.name) };
                let candidates = i64::try_from(election.candidates).unwrap_or(i64::MAX);
                // Adds up in the OTHER series; a named one is set once per render (cleared above).
                inner.election_candidates.get_or_create(&labels).inc_by(candidates);
                inner.election_has_leader.get_or_create(&labels).inc_by(i64::from(election.has_leader));
            }
            let locks = recipes.locks.stats();
            inner
                .lock_calls_in_progress
                .get_or_create(&labels)
                .set(i64::try_from(locks.in_progress).unwrap_or(i64::MAX));
            catch_up(&inner.lock_acquired.get_or_create(&labels), locks.acquired);
            catch_up(&inner.lock_released.get_or_create(&labels), locks.released);
            for (group, watch) in recipes.shards.followed() {
                if !watch.state.borrow().exists {
                    continue;
                }
                let group = groups_named.label(group);
                if group == OTHER {
                    let labels = GroupLabels { tenant: tenant.clone(), group };
                    self.add_to_other_group(&labels, &watch);
                    continue;
                }
                let labels = GroupLabels { tenant: tenant.clone(), group };
                if watches.insert(labels.clone(), watch.id()) != Some(watch.id()) {
                    inner.shard_group_unowned_shard_seconds.remove(&labels);
                    inner.shard_group_handoff_seconds.remove(&labels);
                }
                self.sample_group(&labels, &watch);
                followed.insert(labels);
            }
        }
        watches.retain(|labels, _| {
            let keep = followed.contains(labels);
            if !keep {
                inner.shard_group_unowned_shard_seconds.remove(labels);
                inner.shard_group_handoff_seconds.remove(labels);
            }
            keep
        });
        drop(watches);
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &inner.registry);
        text
    }
}

/// Moves a counter up to `total` (a count kept elsewhere).
fn catch_up(counter: &Counter, total: u64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}

/// `/package.Service/Method` of every RPC zkcoord serves: its own services (from the
/// descriptor set), health and reflection.
fn known_methods() -> HashSet<String> {
    let mut methods: HashSet<String> = [
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    for set in [crate::pb::FILE_DESCRIPTOR_SET, tonic_health::pb::FILE_DESCRIPTOR_SET] {
        let Ok(set) = prost_types::FileDescriptorSet::decode(set) else { continue };
        for file in set.file {
            for service in &file.service {
                for method in &service.method {
                    methods.insert(format!("/{}.{}/{}", file.package(), service.name(), method.name()));
                }
            }
        }
    }
    methods
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_method_is_known_and_nothing_else() {
        let methods = known_methods();
        assert!(methods.contains("/zkcoord.v1.Lock/TryLock"));
        assert!(methods.contains("/zkcoord.v1.Election/Campaign"));
        assert!(methods.contains("/grpc.health.v1.Health/Check"));
        assert!(!methods.contains("/zkcoord.v1.Lock/Steal"));
    }

    #[test]
    fn names_beyond_the_cap_share_the_other_series() {
        let mut budget = NameBudget::new(2);
        let labels: Vec<String> = ["a", "b", "c", "d"].into_iter().map(|n| budget.label(n.to_owned())).collect();
        assert_eq!(labels, ["a", "b", OTHER, OTHER]);
        assert!(crate::validate::Name::parse("election", OTHER).is_err(), "no election can be named like it");
        assert_eq!(NameBudget::new(0).label("a".into()), OTHER);
    }

    #[test]
    fn unknown_paths_share_one_label() {
        let metrics = Metrics::new();
        for i in 0..100 {
            metrics.record_rpc(&format!("/x.Y/Z{i}"), tonic::Code::Unimplemented, Duration::from_millis(1));
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &metrics.inner.registry).expect("encode to a String");
        assert!(text.contains(r#"zkcoord_rpc_requests_total{method="other",code="Unimplemented"} 100"#), "{text}");
    }
}
