//! What a scenario records: latency samples and their percentiles, CPU time of each server
//! process and of the load generator (from `/proc/<pid>/stat`), and the rows of the report.

use std::{collections::BTreeMap, fs, time::Duration};

use serde::Serialize;

/// Clock ticks per second in `/proc/<pid>/stat` (USER_HZ, fixed at 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// Latency samples.
#[derive(Debug, Default, Clone)]
pub struct Latencies {
    samples: Vec<Duration>,
    sorted: bool,
}

impl Latencies {
    pub fn with_capacity(n: usize) -> Self {
        Self { samples: Vec::with_capacity(n), sorted: false }
    }

    pub fn push(&mut self, sample: Duration) {
        self.samples.push(sample);
        self.sorted = false;
    }

    pub fn extend(&mut self, other: Latencies) {
        self.samples.extend(other.samples);
        self.sorted = false;
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// The `q` quantile (0..=1) in milliseconds, nearest rank; NaN without samples.
    pub fn quantile_ms(&mut self, q: f64) -> f64 {
        if self.samples.is_empty() {
            return f64::NAN;
        }
        if !self.sorted {
            self.samples.sort_unstable();
            self.sorted = true;
        }
        let rank = ((q * self.samples.len() as f64).ceil() as usize).clamp(1, self.samples.len());
        ms(self.samples[rank - 1])
    }

    pub fn max_ms(&mut self) -> f64 {
        self.quantile_ms(1.0)
    }
}

/// A duration in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// utime + stime of a process, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    proc_stat_cpu(&stat)
}

/// utime + stime of this process (the load generator), in seconds.
pub fn own_cpu_seconds() -> f64 {
    fs::read_to_string("/proc/self/stat").ok().and_then(|s| proc_stat_cpu(&s)).unwrap_or(f64::NAN)
}

fn proc_stat_cpu(stat: &str) -> Option<f64> {
    // Fields after the command name in parentheses: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

/// Resident memory of a process in KiB (`VmRSS` in `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The established TCP connections of process `pid` to local port `port` (e.g. its ZooKeeper
/// sessions): its socket inodes (`/proc/<pid>/fd`) matched against `/proc/net/tcp`.
pub fn connections_to(pid: u32, port: u16) -> Option<usize> {
    let inodes: std::collections::HashSet<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|fd| fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(target.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let table = fs::read_to_string("/proc/net/tcp").ok()?;
    // Fields: sl, local address, remote address (hex ip:port), state (01: established), ..., inode.
    let remote = format!(":{port:04X}");
    let count = table
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() > 9 && f[2].ends_with(&remote) && f[3] == "01" && inodes.contains(f[9]))
        .count();
    Some(count)
}

/// The number of CPUs this process may run on.
pub fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// ZooKeeper's own counters (`srvr`): transactions and packets, server-wide.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ZkCounters {
    /// The last zxid's counter: transactions logged (writes, failed `multi`s included), within
    /// one epoch.
    pub writes: u64,
    /// Packets received from clients (requests, pings included).
    pub received: u64,
    /// Packets sent to clients (replies and watch events).
    pub sent: u64,
}

impl ZkCounters {
    /// Parses the output of the `srvr` four-letter word.
    pub fn parse(srvr: &str) -> Option<Self> {
        let field = |name: &str| srvr.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
        Some(Self {
            writes: u64::from_str_radix(field("Zxid: 0x")?, 16).ok()? & 0xffff_ffff,
            received: field("Received:")?.parse().ok()?,
            sent: field("Sent:")?.parse().ok()?,
        })
    }

    fn since(self, before: Self) -> Self {
        Self {
            writes: self.writes.saturating_sub(before.writes),
            received: self.received.saturating_sub(before.received),
            sent: self.sent.saturating_sub(before.sent),
        }
    }
}

/// CPU time spent by the servers and the generator between [`CpuMeter::start`] and
/// [`CpuMeter::stop`], and ZooKeeper's counters if asked ([`CpuMeter::zookeeper`]).
#[derive(Debug)]
pub struct CpuMeter {
    servers: Vec<(&'static str, u32, f64)>,
    generator: f64,
    wall: std::time::Instant,
    zookeeper: Option<(u16, ZkCounters)>,
}

impl CpuMeter {
    /// Starts measuring the given server processes (name, pid) and this process.
    pub fn start(servers: &[(&'static str, u32)]) -> Self {
        Self {
            servers: servers.iter().map(|&(name, pid)| (name, pid, cpu_seconds(pid).unwrap_or(f64::NAN))).collect(),
            generator: own_cpu_seconds(),
            wall: std::time::Instant::now(),
            zookeeper: None,
        }
    }

    /// Also counts the writes and packets of the ZooKeeper server on `port` (its `srvr`).
    pub fn zookeeper(mut self, port: u16) -> Self {
        self.zookeeper = crate::servers::ZooKeeper::counters(port).map(|before| (port, before));
        self
    }

    pub fn stop(&self) -> CpuUse {
        CpuUse {
            wall_s: self.wall.elapsed().as_secs_f64(),
            servers_s: self
                .servers
                .iter()
                .map(|&(name, pid, before)| (name.to_owned(), cpu_seconds(pid).unwrap_or(f64::NAN) - before))
                .collect(),
            generator_s: own_cpu_seconds() - self.generator,
            zookeeper: self
                .zookeeper
                .and_then(|(port, before)| Some(crate::servers::ZooKeeper::counters(port)?.since(before))),
        }
    }
}

/// CPU seconds used during one measurement.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CpuUse {
    /// Wall-clock seconds of the measurement.
    pub wall_s: f64,
    /// CPU seconds (user + system) of each server process.
    pub servers_s: BTreeMap<String, f64>,
    /// CPU seconds of the load generator (this process, client libraries included).
    pub generator_s: f64,
    /// ZooKeeper's writes and packets during the measurement (all its clients'), when counted.
    pub zookeeper: Option<ZkCounters>,
}

/// One line of the report: a scenario measured on one system, or why it was not measured.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Scenario number and name, e.g. `1 uncontended lock+unlock`.
    pub scenario: String,
    /// `zkcoord`, `etcd`, `zookeeper` (recipe used directly) or `bare tonic`.
    pub system: String,
    /// What was varied, e.g. `ttl 1 s` or `100 keys`; empty when nothing.
    pub variant: String,
    /// The figures, by name (`p50_ms`, `p99_ms`, `per_s`, …).
    pub metrics: BTreeMap<String, f64>,
    /// The figures for humans.
    pub summary: String,
    /// CPU used while measuring; absent when not measured.
    pub cpu: Option<CpuUse>,
    /// Why it was not measured, or a caveat.
    pub note: Option<String>,
    /// The operations measured (lock cycles, resigns), to show ZooKeeper's bill per operation;
    /// absent where a row's samples are not operations (observers, heartbeats).
    pub ops: Option<f64>,
}

impl Row {
    pub fn new(scenario: &str, system: &str, variant: &str) -> Self {
        Self {
            scenario: scenario.to_owned(),
            system: system.to_owned(),
            variant: variant.to_owned(),
            metrics: BTreeMap::new(),
            summary: String::new(),
            cpu: None,
            note: None,
            ops: None,
        }
    }

    /// Sets the operations measured: ZooKeeper's bill is then shown per operation.
    pub fn ops(mut self, ops: usize) -> Self {
        self.ops = Some(ops as f64);
        self
    }

    pub fn not_measured(scenario: &str, system: &str, variant: &str, reason: impl Into<String>) -> Self {
        let mut row = Self::new(scenario, system, variant);
        row.summary = "not measured".into();
        row.note = Some(reason.into());
        row
    }

    pub fn metric(mut self, name: &str, value: f64) -> Self {
        self.metrics.insert(name.to_owned(), value);
        self
    }

    /// Adds p50/p99/p99.9/max and the sample count of `lat` and summarises them.
    pub fn latencies(mut self, lat: &mut Latencies, with_p999: bool) -> Self {
        let (p50, p99, p999, max) = (lat.quantile_ms(0.5), lat.quantile_ms(0.99), lat.quantile_ms(0.999), lat.max_ms());
        self.summary = if with_p999 {
            format!("p50 {} · p99 {} · p99.9 {} ms", fmt_ms(p50), fmt_ms(p99), fmt_ms(p999))
        } else {
            format!("p50 {} · p99 {} ms", fmt_ms(p50), fmt_ms(p99))
        };
        self.summary.push_str(&format!(" (max {}, n={})", fmt_ms(max), lat.len()));
        self.metric("p50_ms", p50)
            .metric("p99_ms", p99)
            .metric("p999_ms", p999)
            .metric("max_ms", max)
            .metric("n", lat.len() as f64)
    }

    pub fn summary(mut self, summary: impl Into<String>) -> Self {
        self.summary = summary.into();
        self
    }

    pub fn cpu(mut self, cpu: CpuUse) -> Self {
        self.cpu = Some(cpu);
        self
    }
}

/// Milliseconds with 3 significant digits or so.
pub fn fmt_ms(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else if v < 10.0 {
        format!("{v:.2}")
    } else if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

/// The number a scenario's name starts with (`10 shard rebalance` → 10), to order by.
pub fn scenario_number(scenario: &str) -> u32 {
    scenario.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(u32::MAX)
}

/// The report as a Markdown table.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| scenario | system | variant | result | server CPU s | generator CPU s | wall s | ZooKeeper writes · packets in · out · CPU ms |\n",
    );
    out.push_str("|---|---|---|---|---|---|---|---|\n");
    for row in rows {
        let (servers, generator, wall) = match &row.cpu {
            Some(cpu) => (
                cpu.servers_s.iter().map(|(name, s)| format!("{name} {s:.2}")).collect::<Vec<_>>().join(" + "),
                format!("{:.2}", cpu.generator_s),
                format!("{:.1}", cpu.wall_s),
            ),
            None => ("–".into(), "–".into(), "–".into()),
        };
        let mut result = row.summary.clone();
        if let Some(note) = &row.note {
            result.push_str(&format!(" — {note}"));
        }
        let bill = zookeeper_bill(row);
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            row.scenario, row.system, row.variant, result, servers, generator, wall, bill
        ));
    }
    out
}

/// ZooKeeper's bill of a row: its writes, packets in and out and CPU, per operation when the
/// row counts operations (else in all); `–` when ZooKeeper was not involved or not counted.
fn zookeeper_bill(row: &Row) -> String {
    let Some(cpu) = &row.cpu else { return "–".into() };
    let (Some(zk), Some(zk_cpu_s)) = (cpu.zookeeper, cpu.servers_s.get("zookeeper")) else { return "–".into() };
    match row.ops.filter(|&ops| ops > 0.0) {
        Some(ops) => format!(
            "{:.2} · {:.2} · {:.2} · {:.3} per op",
            zk.writes as f64 / ops,
            zk.received as f64 / ops,
            zk.sent as f64 / ops,
            zk_cpu_s * 1000.0 / ops
        ),
        None => format!("{} · {} · {} · {:.0} in all", zk.writes, zk.received, zk.sent, zk_cpu_s * 1000.0),
    }
}

/// The figures compared across systems: metric name and label.
const COMPARED: [(&str, &str); 5] = [
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("p999_ms", "p99.9 ms"),
    ("max_ms", "max ms"),
    ("per_s", "per second"),
];

/// The rows measuring the same thing on different systems share a scenario and the numbers
/// in their variant (`64 clients, 100 keys`; scenario 4's variants have none).
fn comparison_key(row: &Row) -> (String, Vec<String>) {
    let numbers =
        row.variant.split(|c: char| !c.is_ascii_digit()).filter(|n| !n.is_empty()).map(str::to_owned).collect();
    (row.scenario.clone(), numbers)
}

/// zkcoord against etcd and the direct ZooKeeper recipe, as a Markdown table: for each
/// scenario and variant measured on zkcoord and at least one other, its latency quantiles (or
/// throughput) and ZooKeeper's CPU per operation, with the ratios zkcoord ÷ etcd and
/// zkcoord ÷ recipe (below 1 is better for zkcoord, except throughput, where above 1 is).
pub fn ratios(rows: &[Row]) -> String {
    let mut out = String::from(
        "| scenario | variant | figure | zkcoord | etcd | recipe | zkcoord ÷ etcd | zkcoord ÷ recipe |\n|---|---|---|---|---|---|---|---|\n",
    );
    let measured = |row: &&Row| row.note.is_none() && !row.metrics.is_empty();
    for zk in rows.iter().filter(|r| r.system == "zkcoord").filter(measured) {
        let key = comparison_key(zk);
        let other =
            |system: &str| rows.iter().filter(measured).find(|r| r.system == system && comparison_key(r) == key);
        let (etcd, recipe) = (other("etcd"), other("zookeeper"));
        if etcd.is_none() && recipe.is_none() {
            continue;
        }
        let cell = |row: Option<&Row>, value: Option<f64>| match (row, value) {
            (Some(_), Some(v)) if v.is_finite() => fmt_figure(v),
            _ => "–".to_owned(),
        };
        let ratio = |mine: f64, theirs: Option<f64>| match theirs {
            Some(theirs) if theirs > 0.0 && mine.is_finite() => format!("{:.2}×", mine / theirs),
            _ => "–".to_owned(),
        };
        let mut figures: Vec<(&str, f64, Option<f64>, Option<f64>)> = Vec::new();
        for (metric, label) in COMPARED {
            // p99.9 where the row shows it (enough samples); the max where it is the figure
            // (the last of the observers).
            let shown = match metric {
                "p999_ms" => zk.summary.contains("p99.9"),
                "max_ms" => zk.summary.contains("last observer"),
                _ => true,
            };
            let Some(&mine) = zk.metrics.get(metric).filter(|_| shown) else { continue };
            let theirs = |row: Option<&Row>| row.and_then(|r| r.metrics.get(metric).copied());
            let (e, r) = (theirs(etcd), theirs(recipe));
            if e.is_some() || r.is_some() {
                figures.push((label, mine, e, r));
            }
        }
        let zk_cpu_per_op = |row: Option<&Row>| {
            let row = row?;
            let ops = row.ops?;
            Some(row.cpu.as_ref()?.servers_s.get("zookeeper")? * 1000.0 / ops)
        };
        if let (Some(mine), Some(theirs)) = (zk_cpu_per_op(Some(zk)), zk_cpu_per_op(recipe)) {
            figures.push(("ZooKeeper CPU ms per op", mine, None, Some(theirs)));
        }
        for (label, mine, e, r) in figures {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
                zk.scenario,
                zk.variant,
                label,
                fmt_figure(mine),
                cell(etcd, e),
                cell(recipe, r),
                ratio(mine, e),
                ratio(mine, r)
            ));
        }
    }
    out
}

/// A figure with 3 significant digits or so (milliseconds or counts).
fn fmt_figure(v: f64) -> String {
    if v >= 1000.0 { format!("{v:.0}") } else { fmt_ms(v) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_compare_the_same_variant_across_systems() {
        let row = |system: &str, variant: &str, p50: f64| {
            Row::new("2 contended lock", system, variant).metric("p50_ms", p50).metric("per_s", 1000.0 / p50)
        };
        let rows = [
            row("zkcoord", "64 clients, 1 key", 4.0),
            row("etcd", "64 clients, 1 key", 2.0),
            row("zookeeper", "64 clients, 1 key", 8.0),
            row("zkcoord", "64 clients, 100 keys", 3.0),
            row("etcd", "64 clients, 100 keys", 1.0),
        ];
        let table = ratios(&rows);
        assert!(table.contains("| 64 clients, 1 key | p50 ms | 4.00 | 2.00 | 8.00 | 2.00× | 0.50× |"), "{table}");
        assert!(table.contains("| 64 clients, 100 keys | p50 ms | 3.00 | 1.00 | – | 3.00× | – |"), "{table}");
        assert!(table.contains("| 64 clients, 1 key | per second | 250 | 500 | 125 | 0.50× | 2.00× |"), "{table}");
    }

    #[test]
    fn zookeeper_counters_are_read_from_srvr() {
        let srvr = "Zookeeper version: 3.8.0\nLatency min/avg/max: 0/0.2/9\nReceived: 1200\nSent: 1300\n\
                    Connections: 2\nOutstanding: 0\nZxid: 0x20000001f\nMode: standalone\nNode count: 5\n";
        let counters = ZkCounters::parse(srvr).expect("parsed");
        assert_eq!((counters.writes, counters.received, counters.sent), (0x1f, 1200, 1300));
        let later = ZkCounters { writes: 0x2f, received: 1500, sent: 1700 };
        let used = later.since(counters);
        assert_eq!((used.writes, used.received, used.sent), (16, 300, 400));
    }
}
