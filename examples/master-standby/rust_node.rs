//! One node of a master/standby pair, in Rust (its twin in Python is `python_node.py`): it
//! campaigns for mastership and does "work" — appends `<fencing token> <id>` to a shared file
//! every 50 ms — only while it leads.
//!
//! ```sh
//! cargo run --example master-standby-node -- --endpoints 127.0.0.1:7710 --election ledger \
//!     --id node-a --priority 0 --ttl-ms 2000 --work-file /tmp/work.log --preempt
//! ```
//!
//! It prints one line per event on stdout: `ready <lease id>` once it campaigns,
//! `elected <term> <fencing token>`, `lost <reason>`, and `bye` after a SIGTERM made it resign
//! and revoke its lease.

use std::{io::Write, path::PathBuf, process::ExitCode, time::Duration};

use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};
use zkcoord_client::{
    CampaignOptions, Client, LeaderElector, LeadershipEvent, LeaseKeeper, LeaseOptions, LossReason, pb,
};

/// How often a leader does a unit of work.
const WORK_INTERVAL: Duration = Duration::from_millis(50);

/// One node of a master/standby pair.
#[derive(Debug, Parser)]
struct Args {
    /// zkcoord endpoints, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    endpoints: Vec<String>,
    /// The election.
    #[arg(long)]
    election: String,
    /// This node's candidate id (and lease owner).
    #[arg(long)]
    id: String,
    /// 0 is best.
    #[arg(long, default_value_t = 0)]
    priority: i32,
    /// The lease ttl in milliseconds.
    #[arg(long, default_value_t = 2000)]
    ttl_ms: u64,
    /// The file work is appended to.
    #[arg(long)]
    work_file: PathBuf,
    /// Require preemption: a better candidate takes over from a worse leader.
    #[arg(long)]
    preempt: bool,
}

fn main() -> ExitCode {
    node_main(std::env::args_os())
}

/// Runs the node with `args` (the program name first) until SIGTERM or the end of its
/// candidacy. `tests/it/master_standby.rs` includes this file and calls it in a process of its own.
pub fn node_main(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    let args = Args::parse_from(args);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut sigterm = signal(SignalKind::terminate())?;
    let client = Client::new(&args.endpoints)?;
    let lease = LeaseKeeper::grant(&client, LeaseOptions::new(&args.id, Duration::from_millis(args.ttl_ms))).await?;
    let mut options = CampaignOptions::new(&args.election, &args.id).priority(args.priority);
    if args.preempt {
        options = options.preempt(true);
    }
    let mut elector = LeaderElector::campaign(&client, &lease, options).await?;
    println!("ready {}", lease.id());
    let mut work = tokio::time::interval(WORK_INTERVAL);
    loop {
        tokio::select! {
            _ = sigterm.recv() => break,
            event = elector.next() => match event {
                Some(LeadershipEvent::BecameLeader { term, fencing_token }) => println!("elected {term} {fencing_token}"),
                Some(LeadershipEvent::LostLeadership { reason }) => println!("lost {}", reason_word(reason)),
                None => {
                    println!("lost candidacy-ended");
                    return Err("the candidacy ended".into());
                }
            },
            _ = work.tick() => {
                // The client rule: work only on a leadership the last confirmed heartbeat
                // listed, before its validity runs out — checked right before each unit of
                // work — and pass its fencing token along.
                if let Some(leadership) = elector.leadership() {
                    let token = leadership.fencing_token;
                    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&args.work_file)?;
                    file.write_all(format!("{token} {}\n", args.id).as_bytes())?;
                }
            }
        }
    }
    elector.resign().await?;
    lease.revoke().await?;
    println!("bye");
    Ok(())
}

/// The reason as one lowercase word, as both example nodes print it.
fn reason_word(reason: LossReason) -> &'static str {
    match reason {
        LossReason::Deposed(pb::DeposedReason::Resigned) => "resigned",
        LossReason::Deposed(pb::DeposedReason::LeaseExpired) => "lease-expired",
        LossReason::Deposed(pb::DeposedReason::Preempted) => "preempted",
        LossReason::Deposed(pb::DeposedReason::Unhealthy) => "unhealthy",
        LossReason::Deposed(pb::DeposedReason::Transferred) => "transferred",
        LossReason::Deposed(pb::DeposedReason::Unspecified) => "deposed",
        LossReason::Unconfirmed => "unconfirmed",
        LossReason::LeaseUnconfirmed => "lease-unconfirmed",
        LossReason::LeaseLost => "lease-lost",
        LossReason::StreamBroken => "stream-broken",
    }
}
