//! Shared integration-test support: real ZooKeeper servers ([`zk`]) and zkcoord instances,
//! in-process ([`start_zkcoord`]) or as the built binary ([`ZkcoordProcess`]).

#![allow(clippy::unwrap_used)]

pub mod certs;
pub mod four_letter;
pub mod lease;
pub mod lock;
pub mod owner;
#[allow(dead_code)] // Shared with chaos/ (chaos/src/harness.rs), which uses parts the tests do not.
pub mod proxy;
pub mod requests;
#[allow(dead_code)] // Likewise.
pub mod zk;

use std::{
    future::Future,
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
use zkcoord::{
    config::{Config, LogFormat, ZkConfig},
    server::{self, Instance},
};

/// The ZooKeeper session timeout zkcoord test instances ask for: short, so tests notice
/// lost connections quickly.
pub const TEST_SESSION_TIMEOUT: Duration = Duration::from_secs(2);

/// A namespace no other test (in this process or any other run) uses: `/test-<name>-<pid>-<n>`.
pub fn namespace(name: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("/test-{name}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// A config for an in-process test instance on a free loopback port.
pub fn test_config(hosts: &str, namespace: &str) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        zookeeper: ZkConfig {
            hosts: hosts.to_owned(),
            namespace: namespace.to_owned(),
            session_timeout: TEST_SESSION_TIMEOUT,
            auth: None,
            tenants: Vec::new(),
        },
        log_level: "info".into(),
        log_format: LogFormat::Text,
        shutdown_grace: Duration::from_secs(2),
        instance_id: format!("test-{}", namespace.trim_start_matches('/').replace('/', "-")),
        metrics_listen: None,
        max_calls_per_connection: 1000,
        max_streams_per_connection: 200,
        quotas: zkcoord::config::Quotas::default(),
        health_writes_per_second: 2,
        tls: None,
        authz: None,
    }
}

/// Logs of in-process instances go to the test output when `ZKCOORD_TEST_LOG` is a filter
/// (e.g. `zkcoord=debug`).
fn init_test_log() {
    if let Ok(filter) = std::env::var("ZKCOORD_TEST_LOG") {
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    }
}

/// Starts an in-process zkcoord instance and waits until its ZooKeeper session is connected.
pub async fn start_zkcoord(hosts: &str, namespace: &str) -> Instance {
    start_configured(test_config(hosts, namespace)).await
}

/// [`start_zkcoord`] with a config of the test's own (e.g. [`test_config`] adjusted).
pub async fn start_configured(config: Config) -> Instance {
    init_test_log();
    let instance = server::start(config).await.expect("start zkcoord");
    instance.session().wait_connected(Duration::from_secs(30)).await.expect("zkcoord connects to zookeeper");
    instance
}

/// Waits until the zkcoord at `addr` reports SERVING (its ZooKeeper session is up).
pub async fn wait_serving(addr: SocketAddr) {
    let channel = channel(addr).await;
    eventually(Duration::from_secs(30), "zkcoord reports SERVING", || async {
        health(&channel, "").await == ServingStatus::Serving
    })
    .await;
}

/// A gRPC channel to `addr`.
pub async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.expect("connect to zkcoord")
}

/// The `grpc.health.v1` status of `service` ("" for the whole server).
pub async fn health(channel: &Channel, service: &str) -> ServingStatus {
    let response = HealthClient::new(channel.clone())
        .check(HealthCheckRequest { service: service.into() })
        .await
        .expect("health check answers");
    response.into_inner().status()
}

/// Polls `probe` every 50 ms until it returns true; panics with `what` after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if probe().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The Python interpreter with grpcio: `$ZKCOORD_TEST_PYTHON`, or the venv `scripts/test.sh`
/// creates in `target/pyvenv`. Panics (never skips) when there is none.
pub fn python() -> std::path::PathBuf {
    let path = std::env::var_os("ZKCOORD_TEST_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/pyvenv/bin/python"));
    assert!(
        path.exists(),
        "no Python with grpcio at {}: run scripts/test.sh, which creates it, or set ZKCOORD_TEST_PYTHON",
        path.display()
    );
    path
}

/// A direct ZooKeeper client (no zkcoord in between), for checking state behind zkcoord.
pub async fn zk_client(hosts: &str) -> zookeeper_client::Client {
    zookeeper_client::Client::connect(hosts).await.expect("connect to zookeeper")
}

/// The zkcoord binary as a child process.
#[derive(Debug)]
pub struct ZkcoordProcess {
    child: Child,
    /// The gRPC address it printed.
    pub addr: SocketAddr,
}

/// The built `zkcoord` binary.
pub fn zkcoord_command() -> Command {
    Command::new(env!("CARGO_BIN_EXE_zkcoord"))
}

impl ZkcoordProcess {
    /// Runs `zkcoord serve` with `args` on a free port and waits for its "listening" line.
    pub fn spawn(hosts_and_namespace: &str, args: &[&str]) -> Self {
        Self::spawn_with_env(hosts_and_namespace, args, &[])
    }

    /// [`ZkcoordProcess::spawn`] with extra environment variables.
    pub fn spawn_with_env(hosts_and_namespace: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn_inner(hosts_and_namespace, args, env, Stdio::inherit())
    }

    /// [`ZkcoordProcess::spawn_with_env`] with its log (stderr) captured: every line is echoed to
    /// the test's output and sent to the returned receiver.
    pub fn spawn_with_log(
        hosts_and_namespace: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> (Self, std::sync::mpsc::Receiver<String>) {
        let mut process = Self::spawn_inner(hosts_and_namespace, args, env, Stdio::piped());
        let stderr = process.child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{line}");
                let _ = tx.send(line);
            }
        });
        (process, rx)
    }

    fn spawn_inner(hosts_and_namespace: &str, args: &[&str], env: &[(&str, &str)], stderr: Stdio) -> Self {
        let mut child = zkcoord_command()
            .envs(env.iter().copied())
            .args(["serve", "--listen", "127.0.0.1:0", "--zookeeper", hosts_and_namespace])
            .args(if args.contains(&"--session-timeout") { &[][..] } else { &["--session-timeout", "2s"][..] })
            .args(["--shutdown-grace", "2s"])
            .args(args)
            .env_remove("ZKCOORD_CONFIG")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn zkcoord");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read zkcoord's first line");
        let addr = line
            .trim()
            .strip_prefix("zkcoord listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .expect("an address");
        Self { child, addr }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the process by PID.
    pub fn signal(&self, signal: i32) {
        let status = Command::new("kill").arg(format!("-{signal}")).arg(self.pid().to_string()).status().unwrap();
        assert!(status.success(), "kill -{signal} {}", self.pid());
    }

    /// Waits at most `timeout` for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("zkcoord did not exit within {timeout:?}");
    }
}

impl Drop for ZkcoordProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `signal` (e.g. `-STOP`, `-CONT`, `-KILL`) to process `pid` with `kill`.
pub fn signal(pid: u32, signal: &str) {
    assert!(Command::new("kill").args([signal, &pid.to_string()]).status().unwrap().success(), "kill {signal} {pid}");
}

/// The leader of `election` (default tenant) as the instance behind `channel` sees it.
pub async fn leader(channel: &Channel, election: &str) -> Option<zkcoord::pb::v1::LeaderInfo> {
    zkcoord::pb::v1::election_client::ElectionClient::new(channel.clone())
        .leader(zkcoord::pb::v1::LeaderRequest { election: election.into() })
        .await
        .unwrap()
        .into_inner()
        .leader
}
