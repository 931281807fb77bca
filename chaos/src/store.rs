//! The store the owners write to, as a real database with fencing would: one file per
//! resource holding the highest token seen, updated under `flock`; a write with a lower token
//! is refused. Accepted writes are also appended, in the order the lock serialized them, to
//! `accepted.log` for the checker.

use std::{
    fs::{File, OpenOptions},
    io::{Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
};

use rustix::fs::{FlockOperation, flock};

use crate::clock;

/// The store in `<run dir>/store/`.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// One accepted write, as `accepted.log` has it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Accepted {
    /// When (inside the lock).
    pub t: u64,
    /// The resource.
    pub res: String,
    /// The token.
    pub token: u64,
    /// Who wrote.
    pub owner: String,
}

impl Store {
    /// The store of run directory `run_dir` (created when missing).
    pub fn new(run_dir: &Path) -> std::io::Result<Self> {
        let dir = run_dir.join("store");
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    /// Writes to `res` with `token` if it is at least the highest token seen for `res`.
    /// Returns (accepted, the highest token seen before, when).
    pub fn write(&self, res: &str, token: u64, owner: &str) -> std::io::Result<(bool, u64, u64)> {
        let mut file =
            OpenOptions::new().create(true).truncate(false).read(true).write(true).open(self.dir.join(res))?;
        flock(&file, FlockOperation::LockExclusive)?;
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        let highest: u64 = text.trim().parse().unwrap_or(0);
        let t = clock::now_ns();
        let accepted = token >= highest;
        if accepted {
            file.seek(SeekFrom::Start(0))?;
            file.set_len(0)?;
            file.write_all(token.to_string().as_bytes())?;
            let line = serde_json::to_string(&Accepted { t, res: res.to_owned(), token, owner: owner.to_owned() })
                .expect("serializes");
            let mut log = OpenOptions::new().create(true).append(true).open(self.dir.join("accepted.log"))?;
            log.write_all(format!("{line}\n").as_bytes())?;
        }
        flock(&file, FlockOperation::Unlock)?;
        Ok((accepted, highest, t))
    }

    /// The accepted writes, in the order the store serialized them.
    pub fn accepted(run_dir: &Path) -> std::io::Result<Vec<Accepted>> {
        let path = run_dir.join("store").join("accepted.log");
        let mut text = String::new();
        match File::open(path) {
            Ok(mut f) => {
                f.read_to_string(&mut text)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        }
        Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
    }
}
