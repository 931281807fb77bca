//! Real ZooKeeper servers for tests, started from the Debian `zookeeper` package's jars as
//! child processes on free loopback ports: standalone or a 3-node ensemble, with kill -9 and
//! restart of any member by PID, and optionally quorum links through pausable proxies
//! ([`Ensemble::start_with_quorum_proxies`]) so that one member can be cut off from its peers
//! while its clients stay connected to it.

#![allow(unsafe_code)] // prctl(PR_SET_PDEATHSIG) in pre_exec, so no JVM outlives its test.

use std::{
    fs,
    net::TcpListener,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{OnceLock, mpsc},
    thread,
    time::{Duration, Instant},
};

/// The ZooKeeper jar from Debian's `zookeeper` package (its manifest names its dependencies).
const ZK_JAR: &str = "/usr/share/java/zookeeper.jar";
/// A logging backend for the server, from the same package's dependencies.
const SLF4J_JAR: &str = "/usr/share/java/slf4j-simple.jar";
/// How long a server may take to start serving.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a quorum proxy retries a refused connection to a peer (see
/// `Proxy::start_patient`): a follower connecting to a leader that is not listening yet waits
/// instead of being reset and starting a new election.
const PEER_PATIENCE: Duration = Duration::from_secs(2);
/// ZooKeeper's tick: short, so that sessions as short as 400 ms can be negotiated in tests.
pub const TICK_MS: u64 = 200;

/// One ZooKeeper server process (standalone, or a member of an ensemble).
#[derive(Debug)]
pub struct ZkServer {
    /// 1-based member id (1 for a standalone server).
    pub id: u32,
    /// The client port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

/// Reserves `n` distinct free loopback ports (bound together, then released).
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> =
        (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port")).collect();
    listeners.iter().map(|l| l.local_addr().expect("local addr").port()).collect()
}

fn config_text(data_dir: &Path, port: u16, peers: &[(u32, u16, u16)]) -> String {
    let mut cfg = format!(
        "tickTime={TICK_MS}\ninitLimit=50\nsyncLimit=10\ndataDir={}\nclientPort={port}\n\
         clientPortAddress=127.0.0.1\nadmin.enableServer=false\n4lw.commands.whitelist=*\n\
         maxClientCnxns=0\nmaxSessionTimeout=60000\nforceSync=no\nreconfigEnabled=false\n",
        data_dir.display()
    );
    for (id, quorum, election) in peers {
        cfg.push_str(&format!("server.{id}=127.0.0.1:{quorum}:{election}\n"));
    }
    cfg
}

impl ZkServer {
    /// The server's directory (its `zoo.cfg`, `zk.log` and `data/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn prepare(dir: PathBuf, id: u32, port: u16, peers: &[(u32, u16, u16)]) -> Self {
        let data = dir.join("data");
        fs::create_dir_all(&data).expect("create data dir");
        if !peers.is_empty() {
            fs::write(data.join("myid"), format!("{id}\n")).expect("write myid");
        }
        fs::write(dir.join("zoo.cfg"), config_text(&data, port, peers)).expect("write zoo.cfg");
        Self { id, port, dir, child: None }
    }

    /// Starts the server process (again, after [`ZkServer::kill`]); does not wait for it to
    /// serve.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "zookeeper {} is already running", self.id);
        assert!(
            Path::new(ZK_JAR).exists(),
            "{ZK_JAR} is missing: install Debian's zookeeper package (scripts/test.sh does)"
        );
        let log = fs::OpenOptions::new().create(true).append(true).open(self.dir.join("zk.log")).expect("open log");
        let mut cmd = Command::new("java");
        cmd.args(["-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Dzookeeper.jmx.log4j.disable=true"])
            .arg("-cp")
            .arg(format!("{ZK_JAR}:{SLF4J_JAR}"))
            .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
            .arg(self.dir.join("zoo.cfg"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to SIGKILL the child when
        // the thread that spawned it ends, so no server outlives a crashed test.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        self.child = Some(cmd.spawn().expect("spawn java (install a JRE: scripts/test.sh does)"));
    }

    /// Waits until the server serves clients (`srvr` shows a `Mode:`; `ruok` answers earlier).
    pub fn wait_serving(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("zookeeper {} exited with {status}; see {}", self.id, self.dir.join("zk.log").display());
            }
            if self.four_letter("srvr").is_some_and(|s| s.contains("Mode:")) {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
        panic!("zookeeper {} did not serve within {START_TIMEOUT:?}", self.id);
    }

    /// The server's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server with SIGKILL (by PID) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `kill` then `spawn` and `wait_serving` (same ports, same data).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_serving();
    }

    /// `127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Sends a four-letter word and returns the answer, or `None` if the server does not answer
    /// (within 2 s).
    pub fn four_letter(&self, word: &str) -> Option<String> {
        super::four_letter::four_letter(([127, 0, 0, 1], self.port).into(), word, Duration::from_secs(2))
    }

    /// The server's `Mode:` (`standalone`, `leader`, `follower`), if it serves.
    pub fn mode(&self) -> Option<String> {
        let srvr = self.four_letter("srvr")?;
        srvr.lines().find_map(|l| l.strip_prefix("Mode: ")).map(str::to_owned)
    }

    /// The last zxid the server has seen (from `srvr`), if it serves.
    pub fn zxid(&self) -> Option<u64> {
        let srvr = self.four_letter("srvr")?;
        let hex = srvr.lines().find_map(|l| l.strip_prefix("Zxid: 0x"))?;
        u64::from_str_radix(hex.trim(), 16).ok()
    }
}

impl Drop for ZkServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A standalone ZooKeeper server in its own temp directory.
#[derive(Debug)]
pub struct Standalone {
    pub server: ZkServer,
    _dir: tempfile::TempDir,
}

impl Standalone {
    /// Starts a standalone server and waits until it serves.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_ports(1)[0];
        let mut server = ZkServer::prepare(dir.path().to_path_buf(), 1, port, &[]);
        server.spawn();
        server.wait_serving();
        Self { server, _dir: dir }
    }

    /// The connect string (no chroot).
    pub fn hosts(&self) -> String {
        self.server.address()
    }
}

/// A 3-node ZooKeeper ensemble on loopback.
#[derive(Debug)]
pub struct Ensemble {
    pub members: Vec<ZkServer>,
    /// `quorum[i][j]`: the quorum and election proxies member `i + 1` reaches member `j + 1`
    /// through (empty without quorum proxies; `None` on the diagonal).
    quorum: Vec<Vec<Option<[super::proxy::Proxy; 2]>>>,
    /// Keeps the runtime the quorum proxies run on alive (it stops when this is dropped).
    _proxy_runtime: Option<mpsc::Sender<()>>,
    _dir: Option<tempfile::TempDir>,
}

impl Ensemble {
    /// Starts `n` members and waits until all serve.
    pub fn start(n: usize) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ensemble = Self::start_in(dir.path(), n, false);
        ensemble._dir = Some(dir);
        ensemble
    }

    /// Starts `n` members whose quorum and election links all go through proxies (one per
    /// ordered pair of members), so [`Ensemble::isolate`] can cut one member off from its
    /// peers while its client port stays open. Waits until all serve.
    ///
    /// Each member gets its own `zoo.cfg`: its own `server.i` entry has its real ports (it
    /// binds them), the others' entries are the ports of its proxies to them. ZooKeeper 3.8
    /// accepts such differing static configs with `reconfigEnabled=false` (the config version
    /// stays 0, nothing is rewritten).
    ///
    /// Caveat: a lower-id member that accepts an election connection from a higher-id one
    /// closes it and dials back the election address the other announced (its real port), so
    /// some election traffic bypasses the proxies. The quorum (data) links do not: an isolated
    /// follower cannot sync with the leader.
    pub fn start_with_quorum_proxies(n: usize) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ensemble = Self::start_in(dir.path(), n, true);
        ensemble._dir = Some(dir);
        ensemble
    }

    /// [`Ensemble::start`] or [`Ensemble::start_with_quorum_proxies`] in `dir` (kept after
    /// the ensemble is dropped, e.g. for its logs).
    pub fn start_in(dir: &Path, n: usize, quorum_proxies: bool) -> Self {
        let ports = free_ports(3 * n);
        let real: Vec<(u32, u16, u16)> = (0..n).map(|i| (i as u32 + 1, ports[3 * i + 1], ports[3 * i + 2])).collect();
        let mut quorum = Vec::new();
        let mut proxy_runtime = None;
        let mut members: Vec<ZkServer> = Vec::new();
        if quorum_proxies {
            let (stop_tx, stop_rx) = mpsc::channel::<()>();
            let (handle_tx, handle_rx) = mpsc::channel();
            thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the quorum proxies");
                handle_tx.send(runtime.handle().clone()).expect("hand over the proxy runtime");
                // Runs the proxies until the ensemble is dropped (the sender goes away).
                runtime.block_on(async move {
                    let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
                });
            });
            let handle = handle_rx.recv().expect("the proxy runtime started");
            for i in 0..n {
                let mut row = Vec::new();
                for (j, &(_, quorum_port, election_port)) in real.iter().enumerate() {
                    row.push((i != j).then(|| {
                        [quorum_port, election_port].map(|port| {
                            super::proxy::Proxy::start_patient(&handle, ([127, 0, 0, 1], port).into(), PEER_PATIENCE)
                        })
                    }));
                }
                quorum.push(row);
            }
            proxy_runtime = Some(stop_tx);
        }
        for i in 0..n {
            let peers: Vec<(u32, u16, u16)> = real
                .iter()
                .enumerate()
                .map(|(j, &(id, q, e))| {
                    match quorum.get(i).and_then(|row: &Vec<Option<[super::proxy::Proxy; 2]>>| row[j].as_ref()) {
                        Some([qp, ep]) => (id, qp.addr.port(), ep.addr.port()),
                        None => (id, q, e),
                    }
                })
                .collect();
            members.push(ZkServer::prepare(dir.join(format!("zk{}", i + 1)), i as u32 + 1, ports[3 * i], &peers));
        }
        members.iter_mut().for_each(ZkServer::spawn);
        members.iter_mut().for_each(ZkServer::wait_serving);
        Self { members, quorum, _proxy_runtime: proxy_runtime, _dir: None }
    }

    /// The proxies on every quorum and election link to or from member index `member`.
    fn links_of(&self, member: usize) -> impl Iterator<Item = &super::proxy::Proxy> {
        assert!(!self.quorum.is_empty(), "isolate/heal need Ensemble::start_with_quorum_proxies");
        self.quorum.iter().enumerate().flat_map(move |(i, row)| {
            row.iter()
                .enumerate()
                .filter(move |(j, _)| i == member || *j == member)
                .filter_map(|(_, pair)| pair.as_ref())
                .flatten()
        })
    }

    /// Cuts member index `member` off from its peers: every quorum and election link to or
    /// from it stalls silently (nothing is closed). Its client port stays open: it keeps
    /// clients connected until it notices it lost the quorum (`syncLimit` ticks), then stops
    /// serving (`srvr` says it is not serving requests) and looks for a leader it cannot reach.
    pub fn isolate(&self, member: usize) {
        self.links_of(member).for_each(|p| p.stall(super::proxy::Direction::Both));
    }

    /// Reconnects member index `member` to its peers (undoes [`Ensemble::isolate`]).
    pub fn heal(&self, member: usize) {
        self.links_of(member).for_each(super::proxy::Proxy::resume);
    }

    /// Whether member index `member` is isolated.
    pub fn is_isolated(&self, member: usize) -> bool {
        self.links_of(member).any(super::proxy::Proxy::is_stalled)
    }

    /// The connect string of all members (no chroot).
    pub fn hosts(&self) -> String {
        self.members.iter().map(ZkServer::address).collect::<Vec<_>>().join(",")
    }

    /// Index of the member that is the ensemble's leader.
    pub fn leader(&self) -> usize {
        self.members.iter().position(|m| m.mode().as_deref() == Some("leader")).expect("the ensemble has a leader")
    }

    /// Index of a member that is a follower.
    pub fn follower(&self) -> usize {
        self.members.iter().position(|m| m.mode().as_deref() == Some("follower")).expect("the ensemble has a follower")
    }
}

/// One standalone server shared by every integration test (all in one test binary) that does
/// not kill ZooKeeper; each test uses its own namespace. It is spawned from a thread that lives as long as the
/// test process, so it dies with the process (PR_SET_PDEATHSIG).
pub fn shared() -> &'static Standalone {
    static SHARED: OnceLock<Standalone> = OnceLock::new();
    SHARED.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            tx.send(Standalone::start()).expect("hand over the shared server");
            // Keep the spawning thread alive: PR_SET_PDEATHSIG fires when it exits.
            loop {
                thread::park();
            }
        });
        rx.recv().expect("shared zookeeper started")
    })
}
