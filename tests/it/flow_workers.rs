//! The flow-workers example (`examples/flow-workers`): Rust and Python workers share 64 shards
//! of flows through zkcoord (two instances, a real ZooKeeper) and write every step of every flow
//! to one SQLite database in transactions fenced by the shard's epoch. One worker is killed
//! (SIGKILL), one drained (the Drain rpc), one added. Then the database shows every flow fully
//! processed, each step once, and per shard the epochs of its writes never going back (no
//! stale owner's write accepted: each worker also tries one on purpose after losing a shard,
//! and the database refuses it); the workers' logs show no shard owned by two workers at
//! overlapping validity windows (`CLOCK_MONOTONIC`, one machine).
//!
//! The Rust worker is `examples/flow-workers/rust_worker.rs`, compiled into this test binary and
//! run as a process of its own: the test binary runs itself with the ignored test
//! [`rust_worker_process`] and the worker's arguments in `FLOW_WORKER_ARGS` (as
//! `master_standby` does with its node).

#![allow(clippy::unwrap_used)]

use crate::support;

#[allow(dead_code)] // its `main` is the example binary's
#[path = "../../examples/flow-workers/rust_worker.rs"]
mod rust_worker;

/// The environment variable carrying the worker's arguments (one per line) to
/// [`rust_worker_process`].
const WORKER_ARGS: &str = "FLOW_WORKER_ARGS";

/// Not a test: the entry point of a Rust worker process, started by [`Worker::rust`].
#[test]
#[ignore = "the Rust worker's entry point, run in its own process by the flow-workers test"]
fn rust_worker_process() {
    let args = std::env::var(WORKER_ARGS).expect("run by the flow-workers test");
    let args = std::iter::once("flow-worker").chain(args.lines()).map(std::ffi::OsString::from);
    let code = rust_worker::worker_main(args);
    std::process::exit(if code == std::process::ExitCode::SUCCESS { 0 } else { 1 });
}

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use zkcoord::pb::v1::{self as pb, shards_client::ShardsClient};

const GROUP: &str = "flows";
const FLOWS: u32 = 100;
const STEPS: i64 = 20;
const SHARDS: u32 = 64;
const TTL_MS: u64 = 2000;
/// How long any expected step may take: generous, CI machines are slow.
const STEP: Duration = Duration::from_secs(30);

/// One worker process, the lines it prints and its log.
struct Worker {
    id: &'static str,
    child: Child,
    lines: mpsc::Receiver<String>,
    log: PathBuf,
}

impl Worker {
    fn start(id: &'static str, mut command: Command, endpoints: &str, dir: &Path) -> Self {
        let (log, db) = (dir.join(format!("{id}.log")), dir.join("flows.db"));
        let (flows, steps, shards, ttl) =
            (FLOWS.to_string(), STEPS.to_string(), SHARDS.to_string(), TTL_MS.to_string());
        let args = [
            "--endpoints",
            endpoints,
            "--group",
            GROUP,
            "--id",
            id,
            "--db",
            db.to_str().unwrap(),
            "--log",
            log.to_str().unwrap(),
            "--flows",
            &flows,
            "--steps",
            &steps,
            "--shards",
            &shards,
            "--ttl-ms",
            &ttl,
            "--stale-probe",
        ];
        if command.get_program() == std::env::current_exe().unwrap() {
            command.env(WORKER_ARGS, args.join("\n"));
        } else {
            command.args(args);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {id}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut worker = Self { id, child, lines, log };
        worker.expect("ready ");
        worker
    }

    /// The Rust worker (`examples/flow-workers/rust_worker.rs`), in a process of its own.
    fn rust(id: &'static str, endpoints: &str, dir: &Path) -> Self {
        let mut command = Command::new(std::env::current_exe().unwrap());
        // The test's name in this binary: its module path without the crate's name.
        let test = concat!(module_path!(), "::rust_worker_process").split_once("::").expect("a module path").1;
        command.args([test, "--exact", "--ignored", "--nocapture", "--quiet", "--test-threads=1"]);
        Self::start(id, command, endpoints, dir)
    }

    /// The Python worker (`examples/flow-workers/python_worker.py`).
    fn python(id: &'static str, endpoints: &str, dir: &Path) -> Self {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/flow-workers/python_worker.py");
        let mut command = Command::new(support::python());
        command.arg(script).env("PYTHONUNBUFFERED", "1");
        Self::start(id, command, endpoints, dir)
    }

    /// Waits for a line starting with `prefix` (skipping others) and returns it.
    fn expect(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => {
                    println!("{}: {line}", self.id);
                    return line;
                }
                Ok(line) => println!("{}: {line}", self.id),
                Err(_) => panic!("{} did not print {prefix:?} within {STEP:?}", self.id),
            }
        }
    }

    fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM: the worker leaves the group, revokes its lease and says `bye`.
    fn stop(mut self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        self.expect("bye");
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{} exited with {status}", self.id);
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The database, opened by the test to read it (the workers create it).
fn open(dir: &Path) -> rusqlite::Connection {
    let db = rusqlite::Connection::open(dir.join("flows.db")).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    db
}

/// The number of steps done so far.
fn steps_done(db: &rusqlite::Connection) -> i64 {
    db.query_row("SELECT COALESCE(SUM(position), 0) FROM checkpoints", [], |r| r.get(0)).unwrap()
}

/// Waits (blocking) until `probe` holds, printing `what` when it does.
fn until(what: &str, timeout: Duration, mut probe: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !probe() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("-- {what}");
}

/// How many shards each member owns (members only; a member that is gone is absent).
async fn owned(shards: &mut ShardsClient<tonic::transport::Channel>) -> BTreeMap<String, u32> {
    let members = shards
        .members(pb::MembersRequest { group: GROUP.into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .members;
    members.into_iter().map(|m| (m.member_id, m.owned)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_workers_process_every_step_once_through_a_kill_a_drain_and_a_join() {
    let zk = support::zk::shared();
    let ns = support::namespace("flow-workers");
    let hosts = format!("{}{}", zk.hosts(), ns);
    let a = support::ZkcoordProcess::spawn(&hosts, &[]);
    let b = support::ZkcoordProcess::spawn(&hosts, &[]);
    support::wait_serving(a.addr).await;
    support::wait_serving(b.addr).await;
    let (ab, ba) = (format!("{},{}", a.addr, b.addr), format!("{},{}", b.addr, a.addr));
    let mut shards = ShardsClient::new(support::channel(b.addr).await);
    let dir = tempfile::tempdir().unwrap();
    let total = i64::from(FLOWS) * STEPS;
    let started = Instant::now();

    // Three workers, two Rust and one Python... and one more Python, all working.
    let (rs1, mut py2, py3) = tokio::task::block_in_place(|| {
        let rs1 = Worker::rust("rs-1", &ab, dir.path());
        let py2 = Worker::python("py-2", &ba, dir.path());
        let py3 = Worker::python("py-3", &ab, dir.path());
        let db = open(dir.path());
        until("the three workers are working (15 %)", STEP, || {
            let busy = [&rs1, &py2, &py3].iter().all(|w| log_of(w).iter().any(|r| matches!(r, Record::Step { .. })));
            busy && steps_done(&db) >= total * 15 / 100
        });
        (rs1, py2, py3)
    });

    // 1. kill -9 py-2: its shards move once its lease has expired (its validity ran out).
    tokio::task::block_in_place(|| py2.kill9());
    let killed = Instant::now();
    support::eventually(STEP, "py-2's shards moved to rs-1 and py-3", || async {
        let owned = owned(&mut shards.clone()).await;
        !owned.contains_key("py-2") && owned.values().sum::<u32>() == SHARDS
    })
    .await;
    println!("-- py-2's shards moved {:?} after the kill", killed.elapsed());
    tokio::task::block_in_place(|| {
        let db = open(dir.path());
        until("35 % done", STEP, || steps_done(&db) >= total * 35 / 100);
    });

    // 2. Drain rs-1: it releases every shard (and tries one stale write, refused).
    shards.drain(pb::DrainRequest { group: GROUP.into(), member_id: "rs-1".into() }).await.unwrap();
    support::eventually(STEP, "py-3 owns every shard", || async {
        let owned = owned(&mut shards.clone()).await;
        owned.get("rs-1") == Some(&0) && owned.get("py-3") == Some(&SHARDS)
    })
    .await;
    tokio::task::block_in_place(|| {
        let db = open(dir.path());
        until("50 % done", STEP, || steps_done(&db) >= total / 2);
    });

    // 3. Add rs-4: it gets half the shards from py-3.
    let rs4 = tokio::task::block_in_place(|| Worker::rust("rs-4", &ba, dir.path()));
    support::eventually(STEP, "rs-4 owns half the shards", || async {
        owned(&mut shards.clone()).await.get("rs-4") == Some(&(SHARDS / 2))
    })
    .await;
    tokio::task::block_in_place(|| {
        let db = open(dir.path());
        until("every flow is done", STEP, || steps_done(&db) == total);
        // The stale-write probes (after the drain, after rs-4 joined) have had their chance.
        until("a stale write was tried and refused", STEP, || {
            [&rs1, &py3].iter().all(|w| log_of(w).iter().any(|r| matches!(r, Record::Stale { refused: true, .. })))
        });
    });
    let workers =
        [("rs-1", rs1.log.clone()), ("py-2", py2.log.clone()), ("py-3", py3.log.clone()), ("rs-4", rs4.log.clone())];
    tokio::task::block_in_place(|| {
        for worker in [rs1, py3, rs4] {
            worker.stop();
        }
    });
    println!("-- done in {:?}", started.elapsed());

    check_database(&open(dir.path()));
    let logs: Vec<(&str, Vec<Record>)> = workers.iter().map(|(id, path)| (*id, read_log(path))).collect();
    check_logs(&logs);
    drop(py2);
    drop((a, b));
}

/// Every flow fully processed, each step once, by the shard's owner; per shard, the epochs of
/// its writes (in commit order) never go back and each belongs to one worker.
fn check_database(db: &rusqlite::Connection) {
    let unfinished: i64 =
        db.query_row("SELECT COUNT(*) FROM checkpoints WHERE position != ?1", [STEPS], |r| r.get(0)).unwrap();
    assert_eq!(unfinished, 0, "unfinished flows");
    let mut query = db.prepare("SELECT id, flow, step, shard, epoch, worker FROM steps ORDER BY id").unwrap();
    let rows: Vec<(i64, String, i64, u32, i64, String)> = query
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), usize::try_from(i64::from(FLOWS) * STEPS).unwrap(), "one row per step");
    let mut next_step: BTreeMap<&str, i64> = BTreeMap::new();
    let mut last_epoch: BTreeMap<u32, i64> = BTreeMap::new();
    let mut writer_of: BTreeMap<(u32, i64), &str> = BTreeMap::new();
    for (id, flow, step, shard, epoch, worker) in &rows {
        assert!(flow.starts_with("flow-"), "row {id}: a stale write was accepted: {flow} {shard} {epoch} {worker}");
        assert_eq!(*shard, rust_worker::shard_of(flow, SHARDS), "row {id}: {flow} in the wrong shard");
        let expected = next_step.entry(flow).or_insert(1);
        assert_eq!(step, expected, "row {id}: {flow} step {step} (done twice, or out of order)");
        *expected += 1;
        let last = last_epoch.entry(*shard).or_insert(0);
        assert!(epoch >= last, "row {id}: shard {shard} written with epoch {epoch} after {last} ({worker})");
        *last = *epoch;
        let writer = writer_of.entry((*shard, *epoch)).or_insert(worker);
        assert_eq!(writer, worker, "row {id}: shard {shard} epoch {epoch} written by two workers");
    }
    let writers: BTreeSet<&str> = rows.iter().map(|r| r.5.as_str()).collect();
    assert_eq!(writers, BTreeSet::from(["py-2", "py-3", "rs-1", "rs-4"]), "every worker worked");
    let moved = last_epoch.len();
    println!(
        "-- database: {} steps, {moved} shards written, {} (shard, epoch) ownerships",
        rows.len(),
        writer_of.len()
    );
}

/// One line of a worker's log (the protocol in examples/flow-workers/README.md).
#[derive(Debug)]
enum Record {
    /// A write (a claim of the fence, or a step) checked at `check` to be valid until `until`.
    Step {
        shard: u32,
        epoch: u64,
        check: i128,
        until: i128,
    },
    /// The worker gave the shard up at `at`: no write from then on.
    GaveUp {
        shard: u32,
        epoch: u64,
        at: i128,
    },
    /// A deliberate stale write: refused, or (a broken fence) accepted.
    Stale {
        refused: bool,
    },
    /// Anything that should never happen: a normal write refused by the fence, a conflict, a
    /// database error.
    Bad(String),
    Other,
}

fn log_of(worker: &Worker) -> Vec<Record> {
    read_log(&worker.log)
}

fn read_log(path: &Path) -> Vec<Record> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            let n = |i: usize| -> i128 { f[i].parse().unwrap_or_else(|_| panic!("bad log line {line:?}")) };
            let shard = |i: usize| u32::try_from(n(i)).unwrap();
            let epoch = |i: usize| u64::try_from(n(i)).unwrap();
            match f[0] {
                "claim" => Record::Step { shard: shard(1), epoch: epoch(2), check: n(3), until: n(4) },
                "step" => Record::Step { shard: shard(3), epoch: epoch(4), check: n(5), until: n(6) },
                "gave-up" => Record::GaveUp { shard: shard(1), epoch: epoch(2), at: n(3) },
                "stale" if f[3] == "refused" => Record::Stale { refused: true },
                "stale" if f[3] == "skipped" => Record::Other,
                "stale" => Record::Stale { refused: false },
                "refused" | "conflict" | "db-error" => Record::Bad(line.to_owned()),
                _ => Record::Other,
            }
        })
        .collect()
}

/// No shard owned by two workers at overlapping validity windows: a worker's window of (shard,
/// epoch) runs from its first write's check to the end of its last write's validity, or to when
/// it gave the shard up if earlier. No stale write accepted, at least one refused; nothing bad.
fn check_logs(logs: &[(&str, Vec<Record>)]) {
    // (shard) -> [(start, end, worker, epoch)]
    let mut windows: BTreeMap<u32, Vec<(i128, i128, &str, u64)>> = BTreeMap::new();
    let mut refused = 0;
    for (worker, records) in logs {
        let mut acted: BTreeMap<(u32, u64), (i128, i128, i128)> = BTreeMap::new(); // first check, last check, max until
        let mut gave_up: BTreeMap<(u32, u64), i128> = BTreeMap::new();
        for record in records {
            match record {
                Record::Step { shard, epoch, check, until } => {
                    assert!(check < until, "{worker}: wrote {shard}/{epoch} past its validity");
                    let w = acted.entry((*shard, *epoch)).or_insert((*check, *check, *until));
                    *w = (w.0.min(*check), w.1.max(*check), w.2.max(*until));
                }
                Record::GaveUp { shard, epoch, at } => {
                    gave_up.entry((*shard, *epoch)).or_insert(*at);
                }
                Record::Stale { refused: true } => refused += 1,
                Record::Stale { refused: false } => panic!("{worker}: a stale write was accepted"),
                Record::Bad(line) => panic!("{worker}: {line}"),
                Record::Other => {}
            }
        }
        for ((shard, epoch), (first, last, until)) in acted {
            let end = match gave_up.get(&(shard, epoch)) {
                Some(&at) => {
                    assert!(last < at, "{worker}: wrote {shard}/{epoch} after giving it up");
                    until.min(at)
                }
                None => until,
            };
            windows.entry(shard).or_default().push((first, end, worker, epoch));
        }
    }
    let mut moves = 0;
    for (shard, list) in &mut windows {
        list.sort();
        for (i, later) in list.iter().enumerate() {
            for earlier in &list[..i] {
                if earlier.2 != later.2 {
                    assert!(
                        earlier.1 <= later.0,
                        "shard {shard}: {} (epoch {}) valid until {} but {} (epoch {}) wrote at {}",
                        earlier.2,
                        earlier.3,
                        earlier.1,
                        later.2,
                        later.3,
                        later.0
                    );
                }
            }
        }
        moves += list.windows(2).filter(|w| w[0].2 != w[1].2).count();
        assert!(list.windows(2).all(|w| w[0].3 < w[1].3), "shard {shard}: epochs grow with every window: {list:?}");
    }
    assert!(refused >= 2, "stale writes refused: {refused}");
    println!("-- logs: {moves} moves between workers, no overlapping windows; {refused} stale writes refused");
}

/// The log check itself: a handoff after a give-up passes, two workers' overlapping windows of
/// a shard do not.
#[test]
fn the_log_check_finds_overlapping_windows() {
    let step = |shard, epoch, check, until| Record::Step { shard, epoch, check, until };
    let refused = || Record::Stale { refused: true };
    let handed_off = [
        ("a", vec![step(1, 10, 100, 500), Record::GaveUp { shard: 1, epoch: 10, at: 200 }, refused()]),
        ("b", vec![step(1, 20, 300, 900), refused()]),
    ];
    check_logs(&handed_off);
    let overlapping = [("a", vec![step(1, 10, 100, 500), refused()]), ("b", vec![step(1, 20, 300, 900), refused()])];
    assert!(std::panic::catch_unwind(|| check_logs(&overlapping)).is_err(), "the overlap is found");
}
