//! The servers under test, each a child process on free loopback ports with its data in a temp
//! directory: a standalone ZooKeeper (fsync on, as in production), an etcd 3.4 server, zkcoord
//! (this binary re-executed as `__serve-zkcoord`, running the zkcoord library) and a bare tonic
//! server (`__serve-floor`). Every child gets SIGKILL when the bench dies (PR_SET_PDEATHSIG)
//! and is killed by PID when its handle is dropped.

#![allow(unsafe_code)] // prctl(PR_SET_PDEATHSIG) in pre_exec, so no server outlives the bench.

/// The integration tests' four-letter-word client, shared as-is.
#[path = "../../tests/support/four_letter.rs"]
mod four_letter;

use std::{
    fs,
    io::{BufRead, BufReader},
    net::{SocketAddr, TcpListener},
    os::unix::process::CommandExt,
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

/// The ZooKeeper jar from Debian's `zookeeper` package.
const ZK_JAR: &str = "/usr/share/java/zookeeper.jar";
/// A logging backend for ZooKeeper, from the same package's dependencies.
const SLF4J_JAR: &str = "/usr/share/java/slf4j-simple.jar";
/// etcd from Debian's `etcd-server` package (3.4).
pub const ETCD_BIN: &str = "/usr/bin/etcd";
/// A command the zkcoord and floor children run under (see `GrpcChild::spawn`).
const CHILD_WRAPPER_ENV: &str = "ZKCOORD_BENCH_CHILD_WRAPPER";
/// How long a server may take to start serving.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// ZooKeeper's tick as shipped (sessions from 2 to 20 ticks: 4 s to 40 s).
const ZK_TICK_MS: u64 = 2000;

type Result<T> = std::result::Result<T, String>;

/// Reserves `n` distinct free loopback ports (bound together, then released).
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n).map(|_| TcpListener::bind("127.0.0.1:0")).collect::<std::io::Result<Vec<_>>>();
    let listeners = listeners.map_err(|e| format!("bind a free loopback port: {e}"))?;
    listeners.iter().map(|l| l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())).collect()
}

/// Makes the child die with the bench's main thread, which spawns every server.
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe; it only asks the kernel to SIGKILL the child when
    // the thread that spawned it ends.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// A server child process, killed (SIGKILL, by PID) and reaped when dropped.
#[derive(Debug)]
pub struct Process {
    name: &'static str,
    child: Child,
}

impl Process {
    /// The process id, for `/proc/<pid>/…`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn check_running(&mut self, log: &Path) -> Result<()> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(format!("{} exited with {status}; see {}", self.name, log.display())),
            _ => Ok(()),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn log_file(path: &Path) -> Result<fs::File> {
    fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| format!("open {}: {e}", path.display()))
}

/// A standalone ZooKeeper server with `forceSync=yes`.
#[derive(Debug)]
pub struct ZooKeeper {
    pub process: Process,
    pub port: u16,
}

impl ZooKeeper {
    /// Starts a standalone server in `dir` and waits until it serves.
    pub fn start(dir: &Path) -> Result<Self> {
        if !Path::new(ZK_JAR).exists() {
            return Err(format!("{ZK_JAR} is missing: install Debian's zookeeper package (scripts/lib.sh)"));
        }
        let dir = dir.join("zookeeper");
        let data = dir.join("data");
        fs::create_dir_all(&data).map_err(|e| format!("create {}: {e}", data.display()))?;
        let port = free_ports(1)?[0];
        let cfg = format!(
            "tickTime={ZK_TICK_MS}\ninitLimit=10\nsyncLimit=5\ndataDir={}\nclientPort={port}\n\
             clientPortAddress=127.0.0.1\nadmin.enableServer=false\n4lw.commands.whitelist=*\n\
             maxClientCnxns=0\nmaxSessionTimeout=60000\nforceSync=yes\n",
            data.display()
        );
        fs::write(dir.join("zoo.cfg"), cfg).map_err(|e| format!("write zoo.cfg: {e}"))?;
        let log_path = dir.join("zk.log");
        let log = log_file(&log_path)?;
        let mut cmd = Command::new("java");
        cmd.args(["-Xmx2g", "-Dzookeeper.jmx.log4j.disable=true", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn"])
            .arg("-cp")
            .arg(format!("{ZK_JAR}:{SLF4J_JAR}"))
            .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
            .arg(dir.join("zoo.cfg"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        die_with_parent(&mut cmd);
        let child = cmd.spawn().map_err(|e| format!("spawn java (install a JRE: scripts/lib.sh): {e}"))?;
        let mut zk = Self { process: Process { name: "zookeeper", child }, port };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            zk.process.check_running(&log_path)?;
            if zk.four_letter("srvr").is_some_and(|s| s.contains("Mode:")) {
                return Ok(zk);
            }
            if Instant::now() > deadline {
                return Err(format!("zookeeper did not serve within {START_TIMEOUT:?}"));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn hosts(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Sends a four-letter word and returns the answer (within 5 s).
    pub fn four_letter(&self, word: &str) -> Option<String> {
        four_letter::four_letter(([127, 0, 0, 1], self.port).into(), word, Duration::from_secs(5))
    }

    /// The writes and packets counted by the server on `port` (from `srvr`).
    pub fn counters(port: u16) -> Option<crate::measure::ZkCounters> {
        let srvr = four_letter::four_letter(([127, 0, 0, 1], port).into(), "srvr", Duration::from_secs(5))?;
        crate::measure::ZkCounters::parse(&srvr)
    }

    /// The last zxid's counter (from `srvr`): the number of writes, within one epoch.
    pub fn zxid(&self) -> Option<u64> {
        Self::counters(self.port).map(|counters| counters.writes)
    }
}

/// An etcd 3.4 server (single member).
#[derive(Debug)]
pub struct Etcd {
    pub process: Process,
    pub client_url: String,
}

impl Etcd {
    /// Whether the etcd binary is installed.
    pub fn installed() -> bool {
        Path::new(ETCD_BIN).exists()
    }

    /// Starts etcd with its data in `dir`; does not wait for it to serve (see [`Etcd::wait_serving`]).
    pub fn start(dir: &Path) -> Result<Self> {
        let dir = dir.join("etcd");
        fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let ports = free_ports(2)?;
        let client_url = format!("http://127.0.0.1:{}", ports[0]);
        let peer_url = format!("http://127.0.0.1:{}", ports[1]);
        let log = log_file(&dir.join("etcd.log"))?;
        let mut cmd = Command::new(ETCD_BIN);
        cmd.args(["--name", "bench", "--data-dir"])
            .arg(dir.join("data"))
            .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("bench={peer_url}"), "--initial-cluster-state", "new"])
            .args(["--logger", "zap", "--log-level", "warn", "--log-outputs", "stderr"])
            .env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        die_with_parent(&mut cmd);
        let child = cmd.spawn().map_err(|e| format!("spawn {ETCD_BIN}: {e}"))?;
        Ok(Self { process: Process { name: "etcd", child }, client_url })
    }

    /// Waits until etcd answers a Status call.
    pub async fn wait_serving(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.process.child.try_wait() {
                return Err(format!("etcd exited with {status}"));
            }
            if let Ok(mut client) = crate::etcd::Client::connect(&self.client_url, None).await
                && client.status().await.is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("etcd did not serve within {START_TIMEOUT:?}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A gRPC server child: this binary re-executed with a hidden subcommand that prints
/// `listening on <addr>` and serves until its stdin closes.
#[derive(Debug)]
pub struct GrpcChild {
    pub process: Process,
    pub addr: SocketAddr,
    /// Held open (the child stops when it closes), and the child's stdout: the zkcoord child
    /// answers `breakdown` on them ([`GrpcChild::breakdown`]).
    pipes: std::sync::Mutex<(std::process::ChildStdin, BufReader<std::process::ChildStdout>)>,
}

impl GrpcChild {
    /// zkcoord (the library, in a process of its own) against `zk_hosts` under `namespace`.
    ///
    /// Grants are not paced (`max_grants_per_second` at its maximum): scenarios grant their
    /// leases (up to 50,000) as fast as they can to set up; scenario 11 measures the default.
    /// Observe streams are not capped either (`max_observe_streams` at its maximum; the
    /// default, 10,000, refuses scenario 7's 50,000).
    pub fn zkcoord(zk_hosts: &str, namespace: &str, log: &Path) -> Result<Self> {
        let unpaced = format!("max_grants_per_second={}", zkcoord::config::MAX_QUOTA);
        let uncapped = format!("max_observe_streams={}", zkcoord::config::MAX_QUOTA);
        Self::spawn("zkcoord", &["__serve-zkcoord", zk_hosts, namespace, &unpaced, &uncapped], log)
    }

    /// [`GrpcChild::zkcoord`] with `setting=value` overrides (see `child::serve_zkcoord`).
    pub fn zkcoord_with(zk_hosts: &str, namespace: &str, log: &Path, settings: &[String]) -> Result<Self> {
        let mut args = vec!["__serve-zkcoord", zk_hosts, namespace];
        args.extend(settings.iter().map(String::as_str));
        Self::spawn("zkcoord", &args, log)
    }

    /// A bare tonic server with only `grpc.health.v1` (the overhead floor).
    pub fn floor(log: &Path) -> Result<Self> {
        Self::spawn("bare tonic", &["__serve-floor"], log)
    }

    /// Runs this binary with `args`, under the command in `$ZKCOORD_BENCH_CHILD_WRAPPER` if set
    /// (whitespace-separated, e.g. `heaptrack -o /tmp/zkcoord`: a profiler; lines it prints
    /// before the child's `listening on` are skipped, and the process measured is then the
    /// wrapper's, so its resident memory is not the server's).
    fn spawn(name: &'static str, args: &[&str], log: &Path) -> Result<Self> {
        let exe = std::env::current_exe().map_err(|e| format!("find the bench binary: {e}"))?;
        let wrapper = std::env::var(CHILD_WRAPPER_ENV).unwrap_or_default();
        let mut cmd = match wrapper.split_whitespace().collect::<Vec<_>>().split_first() {
            Some((program, wrapper_args)) => {
                let mut cmd = Command::new(program);
                cmd.args(wrapper_args).arg(exe);
                cmd
            }
            None => Command::new(exe),
        };
        cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(log_file(log)?);
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn().map_err(|e| format!("spawn {name}: {e}"))?;
        let stdin = child.stdin.take().ok_or("no stdin pipe")?;
        let stdout = child.stdout.take().ok_or("no stdout pipe")?;
        let mut process = Process { name, child };
        let mut line = String::new();
        let mut stdout = BufReader::new(stdout);
        // A wrapper's own lines come first (at most a few).
        for _ in 0..if wrapper.trim().is_empty() { 1 } else { 20 } {
            line.clear();
            stdout.read_line(&mut line).map_err(|e| format!("read {name}'s first line: {e}"))?;
            if line.is_empty() || line.starts_with("listening on ") {
                break;
            }
        }
        let Some(addr) = line.trim().strip_prefix("listening on ") else {
            process.check_running(log)?;
            return Err(format!("{name}: unexpected first line {line:?}; see {}", log.display()));
        };
        let addr = addr.parse().map_err(|e| format!("{name}: bad address {addr:?}: {e}"))?;
        Ok(Self { process, addr, pipes: std::sync::Mutex::new((stdin, stdout)) })
    }

    /// The zkcoord child's span times since the last call (see [`crate::breakdown`]). Blocks
    /// for the child's answer (a JSON line, at once).
    pub fn breakdown(&self) -> Result<crate::breakdown::Breakdown> {
        use std::io::Write;
        let mut pipes = self.pipes.lock().map_err(|_| "breakdown pipes poisoned")?;
        let (stdin, stdout) = &mut *pipes;
        writeln!(stdin, "breakdown").and_then(|()| stdin.flush()).map_err(|e| format!("ask for a breakdown: {e}"))?;
        let mut line = String::new();
        stdout.read_line(&mut line).map_err(|e| format!("read a breakdown: {e}"))?;
        serde_json::from_str(&line).map_err(|e| format!("breakdown {line:?}: {e}"))
    }
}
