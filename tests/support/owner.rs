//! A lease owner in its own process (tests/python/lease_owner.py): a real client that tests
//! can SIGKILL or SIGSTOP.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, ChildStdout, Command, Stdio},
    time::Duration,
};

/// A running owner that has granted its lease and seen its first heartbeat confirmed.
#[derive(Debug)]
pub struct Owner {
    /// The process.
    pub child: Child,
    /// Its lease id.
    pub id: i64,
    /// Its lease secret.
    pub secret: String,
    /// The rest of its output (one line per heartbeat, then how it ended).
    pub out: BufReader<ChildStdout>,
}

impl Owner {
    /// Starts an owner of a lease with `ttl` heartbeating every `interval` on `addr`.
    pub async fn spawn(addr: SocketAddr, ttl: Duration, interval: Duration) -> Self {
        // Blocking reads: off the runtime, which may also serve an in-process zkcoord.
        tokio::task::spawn_blocking(move || Self::spawn_blocking(addr, ttl, interval)).await.expect("owner spawned")
    }

    fn spawn_blocking(addr: SocketAddr, ttl: Duration, interval: Duration) -> Self {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/lease_owner.py");
        let mut child = Command::new(super::python())
            .arg(script)
            .args(["--addr", &addr.to_string()])
            .args(["--ttl-ms", &ttl.as_millis().to_string(), "--interval-ms", &interval.as_millis().to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the python owner");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("read the owner's first line");
        let mut words = line.trim().strip_prefix("lease ").unwrap_or_else(|| panic!("unexpected {line:?}")).split(' ');
        let id = words.next().and_then(|w| w.parse().ok()).expect("a lease id");
        let secret = words.next().expect("a secret").to_owned();
        line.clear();
        out.read_line(&mut line).expect("read a heartbeat line");
        assert_eq!(line.trim(), "beat confirmed=True");
        Self { child, id, secret, out }
    }

    /// Sends `signal` (e.g. "-KILL", "-STOP") to the process by PID.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args([signal, &pid]).status().expect("run kill").success());
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
