//! A flow worker, in Rust (its twin in Python is `python_worker.py`): it shares the steps of a
//! fixed set of flows with other workers through a zkcoord shard group, and writes each step to
//! one SQLite database in a transaction fenced by the shard's epoch, so that the database itself
//! refuses a write from an owner that lost the shard.
//!
//! ```sh
//! cargo run --example flow-worker -- --endpoints 127.0.0.1:7710 --id rs-1 \
//!     --db /tmp/flows.db --log /tmp/rs-1.log
//! ```
//!
//! Flow `flow-<i>` (`i < --flows`) needs `--steps` steps; it belongs to shard
//! FNV-1a-32(flow id) mod `--shards`. The worker works only on flows of shards it owns, checking
//! [`ShardMember::owns`] right before each write (inside the write transaction), and every write
//! first moves the shard's fence: `UPDATE shard_fence SET epoch = E WHERE shard = S AND epoch
//! <= E`; when that updates no row, a newer owner has written, and the transaction is rolled
//! back.
//!
//! It prints `ready <lease id>` once it joined, and `bye` after a SIGTERM made it leave the group
//! (handing its shards off) and revoke its lease. Its log (`--log`, one line per record, written
//! at once; times are `CLOCK_MONOTONIC` nanoseconds, comparable between processes on one
//! machine) is what the test reads; the protocol is in README.md. SQLite is the system's
//! libsqlite3 (rusqlite without its `bundled` feature).

use std::{
    collections::BTreeSet,
    ffi::OsString,
    fs::File,
    io::Write,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{Arc, Mutex},
    time::Duration,
};

use clap::Parser;
use rusqlite::{Connection, Transaction, TransactionBehavior, params};
use tokio::{
    signal::unix::{SignalKind, signal},
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use zkcoord_client::{Client, LeaseKeeper, LeaseOptions, ShardEvent, ShardMember, ShardOptions};

/// How long the stale-write probe waits for a newer owner's first write.
const STALE_PROBE_PATIENCE: Duration = Duration::from_secs(15);
/// Pause when there is nothing to do.
const IDLE: Duration = Duration::from_millis(20);
/// How long a transaction waits for the database's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// A flow worker sharing shards of flows through zkcoord.
#[derive(Clone, Debug, Parser)]
struct Args {
    /// zkcoord endpoints, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    endpoints: Vec<String>,
    /// The shard group.
    #[arg(long, default_value = "flows")]
    group: String,
    /// This worker's member id (and lease owner).
    #[arg(long)]
    id: String,
    /// The SQLite database (created when missing).
    #[arg(long)]
    db: PathBuf,
    /// The worker's log.
    #[arg(long)]
    log: PathBuf,
    /// The number of flows.
    #[arg(long, default_value_t = 100)]
    flows: u32,
    /// The steps each flow needs.
    #[arg(long, default_value_t = 20)]
    steps: i64,
    /// The group's shard count.
    #[arg(long, default_value_t = 64)]
    shards: u32,
    /// The lease ttl in milliseconds.
    #[arg(long, default_value_t = 2000)]
    ttl_ms: u64,
    /// How long one step's work takes, in milliseconds.
    #[arg(long, default_value_t = 10)]
    step_ms: u64,
    /// After losing a shard, write to it once more with the old epoch (the database must refuse).
    #[arg(long)]
    stale_probe: bool,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> ExitCode {
    worker_main(std::env::args_os())
}

/// Runs the worker with `args` (the program name first) until SIGTERM or the end of its
/// membership. `tests/it/flow_workers.rs` includes this file and calls it in a process of its own.
pub fn worker_main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
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

/// The shard of a flow: FNV-1a (32 bits) of its id's UTF-8 bytes, mod the shard count — the
/// same in every worker, whatever its language.
pub fn shard_of(flow: &str, shards: u32) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in flow.bytes() {
        hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
    }
    hash % shards
}

/// `CLOCK_MONOTONIC` now, in nanoseconds (what Python's `time.monotonic_ns()` reads).
fn now_ns() -> i128 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    i128::from(now.tv_sec) * 1_000_000_000 + i128::from(now.tv_nsec)
}

/// `instant` on the `CLOCK_MONOTONIC` scale, in nanoseconds.
fn instant_ns(instant: Instant) -> i128 {
    let (ns, now) = (now_ns(), Instant::now());
    if instant >= now {
        ns + i128::try_from((instant - now).as_nanos()).unwrap_or(i128::MAX / 2)
    } else {
        ns - i128::try_from((now - instant).as_nanos()).unwrap_or(i128::MAX / 2)
    }
}

/// The worker's log: one line per record, written at once (a kill -9 loses nothing written).
#[derive(Debug)]
struct Log(Mutex<File>);

impl Log {
    fn write(&self, line: std::fmt::Arguments<'_>) {
        let mut file = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // A log that cannot be written is not worth stopping the work for.
        let _ = file.write_all(format!("{line}\n").as_bytes());
    }
}

/// A connection that waits up to [`BUSY_TIMEOUT`] for the database's write lock.
fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let db = Connection::open(path)?;
    db.busy_timeout(BUSY_TIMEOUT)?;
    Ok(db)
}

/// Creates the tables, the shards' fences (epoch 0) and the flows (at position 0) unless they
/// exist: every worker does it, the first one creates them.
fn init(db: &mut Connection, flows: u32, shards: u32) -> rusqlite::Result<()> {
    db.query_row("PRAGMA journal_mode = WAL", [], |row| row.get::<_, String>(0))?;
    let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS shard_fence (shard INTEGER PRIMARY KEY, epoch INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS checkpoints (flow TEXT PRIMARY KEY, shard INTEGER NOT NULL,
             position INTEGER NOT NULL, epoch INTEGER NOT NULL, worker TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS steps (id INTEGER PRIMARY KEY AUTOINCREMENT, flow TEXT NOT NULL,
             step INTEGER NOT NULL, shard INTEGER NOT NULL, epoch INTEGER NOT NULL, worker TEXT NOT NULL);",
    )?;
    for shard in 0..shards {
        tx.execute("INSERT OR IGNORE INTO shard_fence (shard, epoch) VALUES (?1, 0)", params![shard])?;
    }
    for i in 0..flows {
        let flow = format!("flow-{i}");
        tx.execute(
            "INSERT OR IGNORE INTO checkpoints (flow, shard, position, epoch, worker) VALUES (?1, ?2, 0, 0, '')",
            params![flow, shard_of(&flow, shards)],
        )?;
    }
    tx.commit()
}

/// Within a transaction: moves the shard's fence to `epoch` unless a newer owner's epoch is
/// there; false when it is (then the transaction must be rolled back: dropping it does).
fn fence(tx: &Transaction<'_>, shard: u32, epoch: i64) -> rusqlite::Result<bool> {
    Ok(tx.execute("UPDATE shard_fence SET epoch = ?1 WHERE shard = ?2 AND epoch <= ?1", params![epoch, shard])? == 1)
}

/// A shard's epoch as SQLite stores it (zkcoord's epochs are ZooKeeper zxids: below 2^63).
fn sql_epoch(epoch: u64) -> i64 {
    i64::try_from(epoch).unwrap_or(i64::MAX)
}

struct Worker {
    args: Args,
    member: ShardMember,
    db: Connection,
    log: Arc<Log>,
    /// (shard, epoch) whose fence this worker moved.
    claimed: BTreeSet<(u32, u64)>,
    /// (shard, epoch) a newer owner has written.
    refused: BTreeSet<(u32, u64)>,
    ended: bool,
}

impl Worker {
    /// Takes every pending event. A revoked shard is not worked on from its event on; asking
    /// for the next event releases it (the handling is over).
    async fn take_events(&mut self) {
        let mut revoked = Vec::new();
        loop {
            // Polled once: an event that is there, or none (which releases what was revoked).
            match tokio::time::timeout(Duration::ZERO, self.member.next()).await {
                Ok(Some(ShardEvent::Assigned { shard, epoch })) => {
                    self.log.write(format_args!("assigned {shard} {epoch}"))
                }
                Ok(Some(ShardEvent::Revoked { shard, epoch })) => {
                    self.log.write(format_args!("gave-up {shard} {epoch} {}", now_ns()));
                    revoked.push((shard, epoch));
                }
                Ok(None) => {
                    self.ended = true;
                    break;
                }
                Err(_) => break,
            }
        }
        if self.args.stale_probe
            && let Some(&(shard, epoch)) = revoked.iter().find(|r| self.claimed.contains(r))
        {
            let (db, log) = (self.args.db.clone(), self.log.clone());
            std::thread::spawn(move || stale_probe(&db, &log, shard, epoch));
        }
    }

    /// Moves the fence of a shard this worker now owns, before any work on it: from then on the
    /// database refuses the previous owners' writes.
    fn claim(&mut self, shard: u32, epoch: u64) -> rusqlite::Result<()> {
        let tx = self.db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let Some(owned) = self.member.owns(shard).filter(|o| o.epoch == epoch) else { return Ok(()) };
        let (check, until) = (now_ns(), instant_ns(owned.until));
        if check >= until {
            return Ok(()); // ran out since owns() answered
        }
        if !fence(&tx, shard, sql_epoch(epoch))? {
            self.refused.insert((shard, epoch));
            self.log.write(format_args!("refused {shard} {epoch}"));
            return Ok(());
        }
        tx.commit()?;
        self.claimed.insert((shard, epoch));
        self.log.write(format_args!("claim {shard} {epoch} {check} {until}"));
        Ok(())
    }

    /// Does step `position + 1` of `flow` and records it, fenced by `epoch`.
    fn step(&mut self, flow: &str, shard: u32, epoch: u64, position: i64) -> rusqlite::Result<()> {
        std::thread::sleep(Duration::from_millis(self.args.step_ms)); // the work
        let tx = self.db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // The client rule, right before the write (holding the database's write lock).
        let Some(owned) = self.member.owns(shard).filter(|o| o.epoch == epoch) else { return Ok(()) };
        let (check, until) = (now_ns(), instant_ns(owned.until));
        if check >= until {
            return Ok(()); // ran out since owns() answered
        }
        if !fence(&tx, shard, sql_epoch(epoch))? {
            self.refused.insert((shard, epoch));
            self.log.write(format_args!("refused {shard} {epoch}"));
            return Ok(());
        }
        let current: i64 =
            tx.query_row("SELECT position FROM checkpoints WHERE flow = ?1", params![flow], |r| r.get(0))?;
        if current != position {
            self.log.write(format_args!("conflict {flow} {position} {current}"));
            return Ok(());
        }
        let (next, id) = (position + 1, &self.args.id);
        tx.execute(
            "INSERT INTO steps (flow, step, shard, epoch, worker) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![flow, next, shard, sql_epoch(epoch), id],
        )?;
        tx.execute(
            "UPDATE checkpoints SET position = ?1, epoch = ?2, worker = ?3 WHERE flow = ?4",
            params![next, sql_epoch(epoch), id, flow],
        )?;
        tx.commit()?;
        self.log.write(format_args!("step {flow} {next} {shard} {epoch} {check} {until}"));
        Ok(())
    }

    /// Claims newly owned shards and does one step of a flow of an owned shard; false when
    /// there was nothing to do. A database error (e.g. its lock not had within 10 s) rolls back
    /// and is logged; the worker goes on.
    fn work_once(&mut self) -> bool {
        match self.try_work_once() {
            Ok(worked) => worked,
            Err(error) => {
                self.log.write(format_args!("db-error {}", error.to_string().replace(' ', "_")));
                false
            }
        }
    }

    fn try_work_once(&mut self) -> rusqlite::Result<bool> {
        let owned: Vec<(u32, u64)> = self.member.owned().iter().map(|o| (o.shard, o.epoch)).collect();
        for &(shard, epoch) in &owned {
            if !self.claimed.contains(&(shard, epoch)) && !self.refused.contains(&(shard, epoch)) {
                self.claim(shard, epoch)?;
            }
        }
        let workable: Vec<(u32, u64)> = owned.into_iter().filter(|o| self.claimed.contains(o)).collect();
        if workable.is_empty() {
            return Ok(false);
        }
        let mut query = self.db.prepare_cached("SELECT flow, shard, position FROM checkpoints WHERE position < ?1")?;
        let pending: Vec<(String, u32, i64, u64)> = query
            .query_map(params![self.args.steps], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?, r.get::<_, i64>(2)?))
            })?
            .filter_map(Result::ok)
            .filter_map(|(flow, shard, position)| {
                workable.iter().find(|w| w.0 == shard).map(|&(_, epoch)| (flow, shard, position, epoch))
            })
            .collect();
        drop(query);
        if pending.is_empty() {
            return Ok(false);
        }
        // Spread the work over the flows (no randomness crate needed: the clock's low bits).
        let pick = usize::try_from(now_ns().rem_euclid(1 << 20)).unwrap_or(0) % pending.len();
        let (flow, shard, position, epoch) = &pending[pick];
        self.step(flow, *shard, *epoch, *position)?;
        Ok(true)
    }
}

/// Misbehaves on purpose: once a newer owner has written to `shard`, writes a step to it with
/// the epoch this worker lost, without asking `owns()`. The fence must refuse it.
fn stale_probe(path: &Path, log: &Log, shard: u32, epoch: u64) {
    let outcome = (|| -> rusqlite::Result<&'static str> {
        let mut db = connect(path)?;
        let deadline = std::time::Instant::now() + STALE_PROBE_PATIENCE;
        loop {
            let fenced: i64 =
                db.query_row("SELECT epoch FROM shard_fence WHERE shard = ?1", params![shard], |r| r.get(0))?;
            if fenced > sql_epoch(epoch) {
                break;
            }
            if std::time::Instant::now() >= deadline {
                return Ok("skipped");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if !fence(&tx, shard, sql_epoch(epoch))? {
            return Ok("refused");
        }
        // Accepted: a broken fence. Recorded, so that the database shows it too.
        tx.execute(
            "INSERT INTO steps (flow, step, shard, epoch, worker) VALUES (?1, 0, ?2, ?3, 'stale-probe')",
            params![format!("stale-probe-{shard}"), shard, sql_epoch(epoch)],
        )?;
        tx.commit()?;
        Ok("ACCEPTED")
    })();
    match outcome {
        Ok(outcome) => log.write(format_args!("stale {shard} {epoch} {outcome}")),
        Err(error) => log.write(format_args!("db-error {}", error.to_string().replace(' ', "_"))),
    }
}

async fn run(args: Args) -> Result<(), BoxError> {
    let stop = CancellationToken::new();
    let mut sigterm = signal(SignalKind::terminate())?;
    let on_signal = stop.clone();
    tokio::spawn(async move {
        sigterm.recv().await;
        on_signal.cancel();
    });
    let log = Arc::new(Log(Mutex::new(File::options().create(true).append(true).open(&args.log)?)));
    let mut db = connect(&args.db)?;
    init(&mut db, args.flows, args.shards)?;
    let client = Client::new(&args.endpoints)?;
    let lease = LeaseKeeper::grant(&client, LeaseOptions::new(&args.id, Duration::from_millis(args.ttl_ms))).await?;
    let member = ShardMember::join(&client, &lease, ShardOptions::new(&args.group, &args.id, args.shards)).await?;
    log.write(format_args!("joined {} {}", args.id, lease.id()));
    println!("ready {}", lease.id());
    let mut worker = Worker { args, member, db, log, claimed: BTreeSet::new(), refused: BTreeSet::new(), ended: false };
    while !stop.is_cancelled() {
        worker.take_events().await;
        if worker.ended {
            println!("membership-ended");
            return Err("the membership ended".into());
        }
        // The work blocks (SQLite, the step's work): off the runtime's other tasks.
        if !tokio::task::block_in_place(|| worker.work_once()) {
            tokio::select! {
                () = stop.cancelled() => {}
                () = tokio::time::sleep(IDLE) => {}
            }
        }
    }
    // Leaving gives every shard up at once: no work on any of them from here on.
    for (shard, epoch) in &worker.claimed {
        worker.log.write(format_args!("gave-up {shard} {epoch} {}", now_ns()));
    }
    let left = worker.member.leave(Duration::from_secs(10)).await?;
    worker.log.write(format_args!("left {left}"));
    lease.revoke().await?;
    println!("bye");
    Ok(())
}
