//! The history: what every process did and heard, as JSON lines, one file per process in the
//! run directory (`<owner>.jsonl`; the fault schedule in `faults.jsonl`).

use std::{
    fs::{File, OpenOptions},
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    sync::Mutex,
};

use serde::{Deserialize, Serialize};

/// The resource every candidate's leadership acts on.
pub const ELECTION: &str = "election";
/// What shard resources are named with: shard `n` of the members' group is `shard-<n>`.
pub const SHARD_PREFIX: &str = "shard-";

/// The resource of shard `shard`.
pub fn shard_res(shard: u32) -> String {
    format!("{SHARD_PREFIX}{shard}")
}

/// The shard a resource is, if it is one.
pub fn shard_of(res: &str) -> Option<u32> {
    res.strip_prefix(SHARD_PREFIX)?.parse().ok()
}

/// One entry of the history. Times are `CLOCK_MONOTONIC` nanoseconds ([`crate::clock`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum Event {
    /// A passing check: `owner` may act on `res` as hold `hold` (a term, a lock handle, a
    /// shard's `<lease>/<epoch>`) with `token` (a shard's epoch), until `until`. Candidates
    /// record every passing check; lockers and shard members the first one of a hold, each one
    /// whose `until` moved and (members) each one right before an action (the checker needs
    /// only the first check, the last `until` and the stop).
    Cert { t: u64, until: u64, owner: String, res: String, hold: String, token: u64, exclusive: bool },
    /// `owner` decided to stop acting on `res` as `hold` (a failed check, an unlock, the end).
    Stop { t: u64, owner: String, res: String, hold: String },
    /// A write to the store with `token`, accepted or refused (the highest token it had seen).
    Write { t: u64, owner: String, res: String, token: u64, accepted: bool, highest: u64 },
    /// A call and the status it ended with (`code` is `Ok`, a gRPC code name, or `Hang` when
    /// it did not end within its deadline plus a margin).
    Call { t0: u64, t1: u64, owner: String, rpc: String, code: String, message: String, deadline_ms: u64 },
    /// Something the process heard: a leadership event, a lease status change.
    Status { t: u64, owner: String, what: String },
    /// A lease of `owner`: `granted`, `lost`.
    Lease { t: u64, owner: String, lease: i64, state: String, ttl_ms: u64 },
    /// A fault began (`start`) or was healed (`heal`); `target` names what it hit (e.g.
    /// `zkcoord-1`, `zk-2`, `cand-0`, `lock-3->zkcoord-1`).
    Fault { t: u64, kind: String, target: String, phase: String },
    /// The run: `begin` (clients started; reports count from here), `start` (warm-up over,
    /// faults begin), `quiet` (last fault healed), `end`.
    Run { t: u64, phase: String },
}

/// Appends events to one JSON-lines file (one `write` per line, so a killed process loses at
/// most the line it was writing).
#[derive(Debug)]
pub struct Recorder {
    file: Mutex<File>,
}

impl Recorder {
    /// Opens (appends to) `path`.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self { file: Mutex::new(file) })
    }

    /// Appends `event`.
    pub fn record(&self, event: &Event) {
        let mut line = serde_json::to_string(event).expect("events serialize");
        line.push('\n');
        let mut file = self.file.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(error) = file.write_all(line.as_bytes()) {
            eprintln!("zkcoord-chaos: cannot record an event: {error}");
        }
    }
}

/// Every `*.jsonl` file of `dir` (not the store's), each event with the file it came from.
pub fn load(dir: &Path) -> std::io::Result<Vec<Event>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    let mut events = Vec::new();
    for path in files {
        for (n, line) in BufReader::new(File::open(&path)?).lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str(&line) {
                Ok(event) => events.push(event),
                // A process killed mid-write leaves a torn last line; nothing else may be.
                Err(error) => eprintln!("zkcoord-chaos: {}:{}: skipped: {error}", path.display(), n + 1),
            }
        }
    }
    Ok(events)
}
