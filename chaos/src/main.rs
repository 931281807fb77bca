//! `zkcoord-chaos`: zkcoord's own Jepsen. `run` starts ZooKeeper, zkcoord instances and
//! client processes (this binary again, as `candidate`, `locker` and `member`), injects faults
//! from a seeded schedule, then `check`s the history. See `chaos/README.md`.

mod certify;
mod check;
mod clock;
mod cluster;
mod faults;
mod harness;
mod history;
mod procs;
mod rng;
mod store;
mod workload;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "zkcoord-chaos", about = "Fault injection against zkcoord, with a history checker")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// A whole run: cluster, workload, faults, then the checker. Exit code 1 on a violation.
    Run(RunArgs),
    /// Checks the history of an earlier run directory again.
    Check {
        /// The run directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// (internal) One candidate process.
    Candidate {
        #[command(flatten)]
        common: CommonArgs,
        /// Campaign priority (0 best).
        #[arg(long, default_value_t = 10)]
        priority: i32,
        /// Lease ttl in ms.
        #[arg(long, default_value_t = 2000)]
        ttl_ms: u64,
        /// Resign and exit after this many ms.
        #[arg(long)]
        lifetime_ms: Option<u64>,
        /// Ignore validity: keep acting for 5 ttl after the last confirmation.
        #[arg(long)]
        broken: bool,
    },
    /// (internal) One locker process.
    Locker {
        #[command(flatten)]
        common: CommonArgs,
        /// Lease ttl in ms.
        #[arg(long, default_value_t = 2000)]
        ttl_ms: u64,
    },
    /// (internal) One shard member process.
    Member {
        #[command(flatten)]
        common: CommonArgs,
        /// Lease ttl in ms.
        #[arg(long, default_value_t = 2000)]
        ttl_ms: u64,
        /// Wait this many ms before the first Join.
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        /// Ignore revocations and validity: keep acting on a shard for 5 ttl after the last
        /// confirmation that listed it.
        #[arg(long)]
        broken: bool,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Seed of the fault schedule and the workload (printed; replays the same schedule).
    #[arg(long)]
    seed: Option<u64>,
    /// The whole run, e.g. 120s, 30m.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    duration: Duration,
    /// Run directory (must be empty or absent): history, logs, report.txt.
    #[arg(long)]
    dir: PathBuf,
    /// Candidate processes.
    #[arg(long, default_value_t = 3)]
    candidates: usize,
    /// Locker processes.
    #[arg(long, default_value_t = 8)]
    lockers: usize,
    /// Shard member processes (group `chaos`, 16 shards).
    #[arg(long, default_value_t = 3)]
    members: usize,
    /// Candidate 0 and member 0 ignore validity (the checker must catch both).
    #[arg(long)]
    broken: bool,
    /// Comma-separated fault kinds (default: all). Known: see `faults.rs` / the README.
    #[arg(long, value_delimiter = ',')]
    faults: Option<Vec<faults::FaultKind>>,
    /// Fault-free time at the end, e.g. 20s.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    quiet: Duration,
    /// The zkcoord binary (default: `zkcoord` beside this binary).
    #[arg(long)]
    zkcoord: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct CommonArgs {
    #[arg(long)]
    name: String,
    #[arg(long)]
    dir: PathBuf,
    #[arg(long, value_delimiter = ',')]
    endpoints: Vec<String>,
    #[arg(long)]
    seed: u64,
    #[arg(long)]
    until_ns: u64,
}

impl From<CommonArgs> for workload::Common {
    fn from(a: CommonArgs) -> Self {
        Self { name: a.name, dir: a.dir, endpoints: a.endpoints, seed: a.seed, until_ns: a.until_ns }
    }
}

/// `500ms`, `30s`, `30m`, `2h`, or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("bad duration {s:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("bad duration unit in {s:?} (ms, s, m, h)")),
    }
}

fn client_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Cmd::Run(args) => run(args),
        Cmd::Check { dir } => {
            let report = history::load(&dir).and_then(|events| {
                let accepted = store::Store::accepted(&dir)?;
                Ok((check::check(&events, &accepted, check::Bounds::default()), events))
            });
            report.map(|(report, events)| {
                println!("{}", report.render(check::origin(&events)));
                report.ok()
            })
        }
        Cmd::Candidate { common, priority, ttl_ms, lifetime_ms, broken } => client_runtime().and_then(|rt| {
            let args = workload::CandidateArgs {
                ttl: Duration::from_millis(ttl_ms),
                priority,
                lifetime: lifetime_ms.map(Duration::from_millis),
                broken,
            };
            rt.block_on(workload::candidate(common.into(), args)).map(|()| true)
        }),
        Cmd::Locker { common, ttl_ms } => client_runtime()
            .and_then(|rt| rt.block_on(workload::locker(common.into(), Duration::from_millis(ttl_ms))).map(|()| true)),
        Cmd::Member { common, ttl_ms, delay_ms, broken } => client_runtime().and_then(|rt| {
            let args = workload::MemberArgs {
                ttl: Duration::from_millis(ttl_ms),
                delay: Duration::from_millis(delay_ms),
                broken,
            };
            rt.block_on(workload::member(common.into(), args)).map(|()| true)
        }),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("zkcoord-chaos: {error}");
            ExitCode::from(2)
        }
    }
}

fn run(args: RunArgs) -> std::io::Result<bool> {
    let seed = args.seed.unwrap_or_else(|| clock::now_ns() ^ u64::from(std::process::id()));
    let zkcoord = match args.zkcoord {
        Some(path) => path,
        None => std::env::current_exe()?.with_file_name("zkcoord"),
    };
    if !zkcoord.exists() {
        return Err(std::io::Error::other(format!(
            "{} is missing: build it first (cargo build -p zkcoord) or pass --zkcoord",
            zkcoord.display()
        )));
    }
    let opts = cluster::RunOptions {
        seed,
        duration: args.duration,
        dir: args.dir,
        candidates: args.candidates,
        lockers: args.lockers,
        members: args.members,
        broken: args.broken,
        faults: args.faults.unwrap_or_else(|| faults::ALL.to_vec()),
        quiet: args.quiet,
        zkcoord,
    };
    Ok(cluster::run(opts)?.ok())
}
