//! `zkcoord-bench`: zkcoord side by side with etcd's Election, Lock and Lease services and with
//! ZooKeeper recipes used directly, in one run on one machine (issue 7).
//!
//! It starts everything itself on loopback ports with temp data directories — a standalone
//! ZooKeeper (forceSync=yes), an etcd 3.4 server, zkcoord (the zkcoord library in a child
//! process of its own: this binary re-executed, so that its CPU time and memory are measured
//! apart from the load generator's and it runs the same build) — runs the scenarios in
//! priority order, prints a Markdown table and writes the figures as JSON. Every server is
//! stopped by PID at the end.
//!
//! ```text
//! cargo run --release -p zkcoord-bench -- [--quick] [--json out.json] [--only 1,4] [--no-etcd]
//! ```

mod breakdown;
mod child;
mod clients;
mod etcd;
mod measure;
mod scenarios;
mod servers;

use std::{
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use clap::Parser;
use serde::Serialize;

use crate::{
    measure::Row,
    scenarios::{Bench, Sys},
    servers::{Etcd, GrpcChild, ZooKeeper},
};

/// zkcoord vs etcd vs ZooKeeper recipes, side by side.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// A smoke run: tiny counts, seconds in all.
    #[arg(long)]
    quick: bool,
    /// Write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Run only these scenarios (issue 7's numbers, comma-separated), e.g. `1,4`.
    #[arg(long, value_delimiter = ',')]
    only: Vec<u32>,
    /// Do not start etcd (its rows say "not measured").
    #[arg(long)]
    no_etcd: bool,
    /// Stop starting new scenarios after this many seconds (the rest say "not measured").
    #[arg(long, default_value_t = 1800)]
    budget_s: u64,
}

/// The JSON file.
#[derive(Debug, Serialize)]
struct Report {
    /// When the run started (seconds since the Unix epoch).
    started_unix_s: u64,
    /// The command line.
    command: String,
    /// CPUs available to the bench (servers and generator share them).
    cores: usize,
    quick: bool,
    versions: Versions,
    rows: Vec<Row>,
    /// Per scenario, the main zkcoord instance's span times ([`breakdown`]).
    breakdowns: Vec<(String, breakdown::Breakdown)>,
}

#[derive(Debug, Serialize)]
struct Versions {
    zookeeper: String,
    etcd: String,
}

fn main() -> ExitCode {
    let mut argv = std::env::args().skip(1);
    match argv.next().as_deref() {
        Some("__serve-zkcoord") => {
            let (Some(hosts), Some(namespace)) = (argv.next(), argv.next()) else {
                eprintln!("usage: __serve-zkcoord <hosts> <namespace> [setting=value ...]");
                return ExitCode::FAILURE;
            };
            return child::serve_zkcoord(&hosts, &namespace, &argv.collect::<Vec<_>>());
        }
        Some("__serve-floor") => return child::serve_floor(),
        _ => {}
    }
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("zkcoord-bench: runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("zkcoord-bench: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Scenario numbers in the order they are run (issue 7's priorities, then issue 17's abuse).
const PRIORITY: [u32; 11] = [1, 4, 9, 3, 2, 8, 6, 10, 5, 7, 11];

async fn run(args: Args) -> Result<(), String> {
    let started = std::time::SystemTime::now();
    let begin = Instant::now();
    let budget = Duration::from_secs(args.budget_s);
    let cores = measure::cores();
    let dir = tempfile::Builder::new().prefix("zkcoord-bench-").tempdir().map_err(|e| format!("temp dir: {e}"))?;
    eprintln!(
        "zkcoord-bench: {cores} cores (shared by the servers and the load generator); data in {}",
        dir.path().display()
    );

    eprintln!("starting zookeeper (standalone, forceSync=yes)…");
    let zk = ZooKeeper::start(dir.path())?;
    let zk_version = zk
        .four_letter("srvr")
        .and_then(|s| s.lines().next().map(|l| l.trim_start_matches("Zookeeper version: ").to_owned()))
        .unwrap_or_default();
    let etcd = if args.no_etcd {
        Err("etcd not started (--no-etcd)".to_owned())
    } else if !Etcd::installed() {
        Err(format!("{} is not installed (Debian package etcd-server; scripts/lib.sh ensure_etcd)", servers::ETCD_BIN))
    } else {
        eprintln!("starting etcd…");
        let mut etcd = Etcd::start(dir.path())?;
        etcd.wait_serving().await?;
        Ok(etcd)
    };
    let etcd_version = match &etcd {
        Ok(_) => std::process::Command::new(servers::ETCD_BIN)
            .arg("--version")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).lines().next().map(str::to_owned))
            .unwrap_or_default(),
        Err(_) => String::new(),
    };
    eprintln!("starting zkcoord…");
    let zkcoord = GrpcChild::zkcoord(&zk.hosts(), "/zkcoord", &dir.path().join("zkcoord.log"))?;
    let bench = Bench { quick: args.quick, dir: dir.path().to_path_buf(), zk, etcd, zkcoord };
    {
        let client = clients::zookeeper(&bench.zk.hosts(), Duration::from_secs(6)).await?;
        clients::zk_mkdir(&client, "/direct").await?;
    }

    // Only the scenarios that weigh ZooKeeper's CPU per operation need it warm.
    let weighs_zookeeper = |n: u32| [1, 2, 3, 4, 9].contains(&n);
    if !args.quick && (args.only.is_empty() || args.only.iter().copied().any(weighs_zookeeper)) {
        eprintln!("warming up ZooKeeper's JVM (lock cycles, unmeasured)…");
        scenarios::lock::warm_up(&bench).await?;
    }

    let mut rows = Vec::new();
    let mut breakdowns = Vec::new();
    for number in PRIORITY {
        if !args.only.is_empty() && !args.only.contains(&number) {
            continue;
        }
        if begin.elapsed() > budget {
            rows.push(Row::not_measured(&scenario_name(number), "all", "", "time budget (--budget-s) used up"));
            continue;
        }
        eprintln!("scenario {number}…");
        let _ = bench.zkcoord.breakdown(); // from now on
        let new_rows = run_scenario(&bench, number).await;
        match bench.zkcoord.breakdown() {
            Ok(breakdown) if !breakdown.spans.is_empty() => breakdowns.push((scenario_name(number), breakdown)),
            Ok(_) => {}
            Err(err) => eprintln!("  no breakdown of scenario {number}: {err}"),
        }
        for row in &new_rows {
            eprintln!(
                "  {} {} {}: {}{}",
                row.scenario,
                row.system,
                row.variant,
                row.summary,
                row.note.as_deref().map(|n| format!(" — {n}")).unwrap_or_default()
            );
        }
        rows.extend(new_rows);
    }
    rows.sort_by_key(|row| measure::scenario_number(&row.scenario));

    let command =
        std::env::args().map(|a| if a.contains(' ') { format!("{a:?}") } else { a }).collect::<Vec<_>>().join(" ");
    println!(
        "zkcoord-bench — {cores} cores shared by servers and load generator; zookeeper {zk_version}; {etcd_version}"
    );
    println!("{}", measure::table(&rows));
    println!("zkcoord against etcd and the direct ZooKeeper recipe (same variant, same run):\n");
    println!("{}", measure::ratios(&rows));
    breakdowns.sort_by_key(|(scenario, _)| measure::scenario_number(scenario));
    println!("Where the main zkcoord instance's time went, by call (its spans; setup calls included):\n");
    println!("{}", breakdown::table(&breakdowns));
    if let Some(path) = args.json {
        let report = Report {
            started_unix_s: started.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            command,
            cores,
            quick: args.quick,
            versions: Versions { zookeeper: zk_version, etcd: etcd_version },
            rows,
            breakdowns,
        };
        let text = serde_json::to_string_pretty(&report).map_err(|e| format!("json: {e}"))?;
        std::fs::write(&path, text).map_err(|e| format!("write {}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn scenario_name(number: u32) -> String {
    match number {
        1 => "1 uncontended lock+unlock",
        2 => "2 contended lock",
        3 => "3 leader crash failover",
        4 => "4 resign → next leader",
        5 => "5 leadership fan-out",
        6 => "6 lease keepalive",
        7 => "7 idle scale",
        8 => "8 overhead floor",
        9 => "9 transfer → successor elected",
        10 => "10 shard rebalance",
        11 => "11 abuse",
        _ => "unknown",
    }
    .to_owned()
}

/// Runs one scenario on every system it applies to; a failure becomes a "not measured" row.
async fn run_scenario(bench: &Bench, number: u32) -> Vec<Row> {
    let q = bench.quick;
    let name = scenario_name(number);
    let mut rows = Vec::new();
    let all = [Sys::Zkcoord, Sys::Etcd, Sys::ZooKeeper];
    match number {
        1 => {
            let n = if q { 100 } else { 5000 };
            for sys in all {
                rows.push(outcome(&name, sys, "1 key", scenarios::lock::uncontended(bench, sys, n).await));
            }
        }
        4 => {
            let n = if q { 10 } else { 300 };
            for sys in all {
                rows.push(outcome(&name, sys, "", scenarios::election::resign(bench, sys, n).await));
            }
        }
        3 => {
            let runs = if q { 1 } else { 5 };
            let cases = [(Sys::Zkcoord, 1), (Sys::Zkcoord, 3), (Sys::Etcd, 2), (Sys::ZooKeeper, 4)];
            for (sys, ttl_s) in cases {
                if q && ttl_s == 3 {
                    continue;
                }
                let variant = format!("ttl {ttl_s} s");
                let result = scenarios::election::failover(bench, sys, Duration::from_secs(ttl_s), runs).await;
                rows.push(outcome(&name, sys, &variant, result));
            }
        }
        2 => {
            let (clients, duration) = if q { (8, Duration::from_millis(500)) } else { (64, Duration::from_secs(10)) };
            for keys in [1, 100] {
                for sys in all {
                    let variant = format!("{clients} clients, {keys} keys");
                    let result = scenarios::lock::contended(bench, sys, clients, keys, duration).await;
                    rows.push(outcome(&name, sys, &variant, result));
                }
            }
        }
        8 => {
            let n = if q { 100 } else { 5000 };
            match scenarios::floor::floor(bench, n).await {
                Ok(floor) => rows.extend(floor),
                Err(err) => rows.push(Row::not_measured(&name, "all", "", err)),
            }
        }
        6 => {
            let (n, window) = if q { (100, Duration::from_secs(2)) } else { (10_000, Duration::from_secs(10)) };
            for sys in all {
                let result = scenarios::lease::keepalive(bench, sys, n, Duration::from_secs(3), window).await;
                rows.push(outcome(&name, sys, &format!("{n} leases"), result));
            }
        }
        5 => {
            let sizes: &[usize] = if q { &[50] } else { &[1_000, 10_000, 50_000] };
            for &n in sizes {
                for sys in all {
                    let result = scenarios::election::fanout(bench, sys, n).await;
                    rows.push(outcome(&name, sys, &format!("{n} Observe streams"), result));
                }
            }
        }
        7 => {
            let sizes: &[usize] = if q { &[200] } else { &[10_000, 50_000] };
            for &n in sizes {
                let result = scenarios::lease::idle(bench, n).await;
                rows.push(outcome(&name, Sys::Zkcoord, &format!("{n} leases + {n} Observe streams"), result));
            }
        }
        9 => {
            let n = if q { 10 } else { 300 };
            rows.push(outcome(&name, Sys::Zkcoord, "", scenarios::election::transfer(bench, n).await));
        }
        10 => {
            let (n, m) = if q { (64, 5) } else { (1024, 100) };
            rows.push(outcome(&name, Sys::Zkcoord, "", scenarios::shards::rebalance(bench, n, m).await));
        }
        11 => {
            let sizes = if q { scenarios::abuse::Sizes::quick() } else { scenarios::abuse::Sizes::full() };
            match scenarios::abuse::abuse(bench, &sizes).await {
                Ok(abuse) => rows.extend(abuse),
                Err(err) => rows.push(Row::not_measured(&name, "zkcoord", "", err)),
            }
        }
        _ => rows.push(Row::not_measured(&name, "all", "", "no such scenario")),
    }
    rows
}

/// A measured row, or a "not measured" row with the error.
fn outcome(scenario: &str, sys: Sys, variant: &str, result: Result<Row, String>) -> Row {
    result.unwrap_or_else(|err| Row::not_measured(scenario, sys.name(), variant, err))
}
