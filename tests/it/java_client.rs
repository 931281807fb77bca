//! The Java client (`clients/java`, package `io.zkcoord.client`) against real zkcoord instances
//! and a real ZooKeeper: `clients/java/src/test/java/io/zkcoord/client/ClientChecks.java` runs
//! one scenario per test (leases with health checks, election with a Curator-style listener,
//! transfer with and without acknowledgement, locks, failover between instances, the validity
//! rule on a frozen instance, shard members, mTLS with a tenant) and asserts the client's
//! behaviour; this driver starts the instances, kills, freezes or shuts them down when the
//! program asks (`cue <what>` on its stdout, answered with `done` on its stdin), and requires
//! the program's success and final line.
//!
//! The classpath is `$ZKCOORD_TEST_JAVA_CLASSPATH` (set by `scripts/test.sh`), or what
//! `clients/java/build.sh` last wrote to `target/java/classpath`. Without one these tests fail
//! (they never silently pass).

#![allow(clippy::unwrap_used)]

use crate::support;

use std::{
    path::Path,
    process::{ExitStatus, Stdio},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines},
    process::{Child, ChildStdin, ChildStdout, Command},
    task::JoinHandle,
    time::Instant,
};

use support::ZkcoordProcess;

/// How long one program may run.
const PROGRAM_TIMEOUT: Duration = Duration::from_secs(180);
/// The line the checks print last when every check passed.
const PASSED: &str = "java client checks passed";
/// The checks' main class.
const CHECKS: &str = "io.zkcoord.client.ClientChecks";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The classpath of the Java client, its checks and the example nodes: `$ZKCOORD_TEST_JAVA_CLASSPATH`,
/// or `target/java/classpath` as `clients/java/build.sh` wrote it. Panics (never skips) when
/// there is none.
pub fn classpath() -> String {
    if let Some(classpath) = std::env::var_os("ZKCOORD_TEST_JAVA_CLASSPATH") {
        return classpath.to_string_lossy().into_owned();
    }
    let written = repo().join("target/java/classpath");
    match std::fs::read_to_string(&written) {
        Ok(classpath) if !classpath.trim().is_empty() => classpath.trim().to_owned(),
        _ => panic!(
            "no Java client build at {}: run scripts/test.sh, or clients/java/build.sh (after `source scripts/lib.sh; \
             ensure_java_client`), or set ZKCOORD_TEST_JAVA_CLASSPATH",
            written.display()
        ),
    }
}

/// `java -cp <classpath> <class> <args>`, its stdout piped.
pub fn java_command(class: &str) -> std::process::Command {
    let mut command = std::process::Command::new("java");
    // Small, quick JVMs: many run at once on a loaded machine.
    command.args(["-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xss512k", "-cp", &classpath(), class]);
    command
}

/// A running Java program: stdout read line by line (and echoed), stderr collected.
struct Program {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: JoinHandle<String>,
    output: String,
    deadline: Instant,
}

/// How a program ended.
struct Ended {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Program {
    fn spawn(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = Command::from(java_command(CHECKS));
        let mut child = command
            .args(args)
            .envs(env.iter().copied())
            .current_dir(repo())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("run java (a JDK is installed by scripts/test.sh)");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut stderr_pipe = child.stderr.take().unwrap();
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = stderr_pipe.read_to_string(&mut text).await;
            text
        });
        Self { child, stdin, stdout, stderr, output: String::new(), deadline: Instant::now() + PROGRAM_TIMEOUT }
    }

    /// The next line of the program's stdout (echoed and kept); `None` once it closed it.
    async fn next_line(&mut self) -> Option<String> {
        let line = tokio::time::timeout_at(self.deadline, self.stdout.next_line())
            .await
            .unwrap_or_else(|_| panic!("the java checks finish within {PROGRAM_TIMEOUT:?}:\n{}", self.output))
            .expect("read the program's stdout")?;
        println!("java: {line}");
        self.output.push_str(&line);
        self.output.push('\n');
        Some(line)
    }

    /// Reads lines until the program asks for something (`cue <what>`: returns `what`) or
    /// closes its stdout (returns `None`).
    async fn next_cue(&mut self) -> Option<String> {
        loop {
            if let Some(what) = self.next_line().await?.strip_prefix("cue ") {
                return Some(what.to_owned());
            }
        }
    }

    /// Tells the program its cue was done.
    async fn done(&mut self) {
        self.stdin.write_all(b"done\n").await.expect("answer the program");
        self.stdin.flush().await.unwrap();
    }

    /// Waits for the end of the program (after its stdout closed).
    async fn wait(mut self) -> Ended {
        let status = tokio::time::timeout_at(self.deadline, self.child.wait())
            .await
            .expect("the java checks exit")
            .expect("wait for java");
        let stderr = self.stderr.await.unwrap();
        Ended { status, stdout: self.output, stderr }
    }
}

/// Reads up to the next cue, which must be `what`; when the program ends instead, fails with
/// its output and stderr.
async fn expect_cue(program: &mut Option<Program>, what: &str) {
    let cue = program.as_mut().expect("the program is running").next_cue().await;
    if cue.as_deref() == Some(what) {
        return;
    }
    let ended = program.take().unwrap().wait().await;
    panic!("expected cue {what:?}, got {cue:?} ({}):\n{}\n{}", ended.status, ended.stdout, ended.stderr);
}

/// Waits for the end, which must be a success with the final line.
async fn expect_passed(program: Option<Program>) {
    let mut program = program.expect("the program is running");
    if let Some(cue) = program.next_cue().await {
        panic!("unexpected cue {cue:?}");
    }
    let ended = program.wait().await;
    assert!(
        ended.status.success(),
        "java client checks failed ({}):\n{}\n{}",
        ended.status,
        ended.stdout,
        ended.stderr
    );
    assert_eq!(ended.stdout.lines().last(), Some(PASSED), "{}\n{}", ended.stdout, ended.stderr);
}

/// An in-process instance with its own instance id (the checks tell instances apart by it).
async fn start_named(hosts: &str, ns: &str, name: &str) -> zkcoord::server::Instance {
    let mut config = support::test_config(hosts, ns);
    config.instance_id = format!("{}-{name}", config.instance_id);
    let instance = zkcoord::server::start(config).await.expect("start zkcoord");
    instance.session().wait_connected(Duration::from_secs(30)).await.expect("zkcoord connects to zookeeper");
    instance
}

/// Runs one scenario that needs no cues against two instances sharing a namespace.
async fn run_scenario(scenario: &str) {
    let zk = support::zk::shared();
    let ns = support::namespace(&format!("javaclient-{scenario}"));
    let a = start_named(&zk.hosts(), &ns, "a").await;
    let b = start_named(&zk.hosts(), &ns, "b").await;
    let endpoints = format!("{},{}", a.addr(), b.addr());
    let program = Program::spawn(&["--endpoints", &endpoints, "--scenario", scenario], &[]);
    expect_passed(Some(program)).await;
    a.shutdown().await;
    b.shutdown().await;
}

/// A lease kept alive past several ttls; health checks (passing, failing, throwing, hanging)
/// visible from another instance in TimeToLive; revoked, ended elsewhere, or expired after its
/// keeper stopped.
#[tokio::test]
async fn java_lease_keeper_keeps_leases_with_health() {
    run_scenario("lease").await;
}

/// Elected / Lost events and a Curator-style `LeaderListener` through transfer, resign,
/// health, stopped heartbeats (the leader stops within one ttl, before anyone else is elected),
/// preemption and a revoked lease, between Java candidates on two instances.
#[tokio::test]
async fn java_leader_elector_follows_leadership() {
    run_scenario("election").await;
}

/// Transfer acknowledged by the application (the successor leads then, not before) and not at
/// all (after the deposed leader's validity ran out); the old leader's `leadership()` always
/// ends before the new leader's begins; acknowledging a term still led is refused.
#[tokio::test]
async fn java_transfer_completes_on_the_deposed_leaders_acknowledgement() {
    run_scenario("transfer").await;
}

/// Multi-key exclusive locks exclude (tryLock blocked with the holders, lock timing out on the
/// server), unlock hands keys to waiters with greater tokens, shared locks share, holds end
/// with the lease; try-with-resources unlocks.
#[tokio::test]
async fn java_locks_exclude_share_and_unlock() {
    run_scenario("lock").await;
}

/// The heartbeat and Campaign streams move to the next endpoint when their instance is killed
/// (SIGKILL) and again when the next one shuts down gracefully; the lease and the leadership
/// (same term) survive both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_client_fails_over_between_instances_and_the_lease_survives() {
    let zk = support::zk::shared();
    let ns = support::namespace("javaclient-failover");
    let first = ZkcoordProcess::spawn(&format!("{}{ns}", zk.hosts()), &[]);
    support::wait_serving(first.addr).await;
    let second = start_named(&zk.hosts(), &ns, "second").await;
    let third = start_named(&zk.hosts(), &ns, "third").await;
    let endpoints = format!("{},{},{}", first.addr, second.addr(), third.addr());
    let mut program = Some(Program::spawn(&["--endpoints", &endpoints, "--scenario", "failover"], &[]));
    expect_cue(&mut program, "kill-first").await;
    drop(first); // SIGKILL by PID, and reaped
    program.as_mut().unwrap().done().await;
    expect_cue(&mut program, "shutdown-second").await;
    second.shutdown().await;
    program.as_mut().unwrap().done().await;
    expect_passed(program).await;
    third.shutdown().await;
}

/// The instance serving a waiting `LockGuard.lock` is killed (SIGKILL): the client releases the
/// request left queued there under its lease before retrying on the other instance, so it gets
/// the keys once their holder lets go and leaves no orphan hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_lock_completes_elsewhere_without_an_orphan_when_its_instance_is_killed() {
    let zk = support::zk::shared();
    let ns = support::namespace("javaclient-lock-crash");
    let first = ZkcoordProcess::spawn(&format!("{}{ns}", zk.hosts()), &[]);
    support::wait_serving(first.addr).await;
    let second = start_named(&zk.hosts(), &ns, "second").await;
    let endpoints = format!("{},{}", first.addr, second.addr());
    let mut program = Some(Program::spawn(&["--endpoints", &endpoints, "--scenario", "lock_crash"], &[]));
    expect_cue(&mut program, "kill-first").await;
    drop(first); // SIGKILL by PID, and reaped
    program.as_mut().unwrap().done().await;
    expect_passed(program).await;
    second.shutdown().await;
}

/// The validity rule: a leader whose only instance freezes (SIGSTOP: no answer, no message)
/// stops acting (`isLeader()` false) by the send time of its last confirmed heartbeat + ttl,
/// reported by the elector's timer; the candidate on the other instance leads only after that.
/// A leader whose Campaign stream is on the frozen instance (heartbeats elsewhere) and is
/// transferred away stops when a confirmed heartbeat no longer lists it, and its
/// acknowledgement lets the successor lead at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_leader_on_a_frozen_instance_stops_by_its_validity() {
    let zk = support::zk::shared();
    let ns = support::namespace("javaclient-frozen");
    let first = ZkcoordProcess::spawn(&format!("{}{ns}", zk.hosts()), &[]);
    support::wait_serving(first.addr).await;
    let second = start_named(&zk.hosts(), &ns, "second").await;
    let endpoints = format!("{},{}", first.addr, second.addr());
    let mut program = Some(Program::spawn(&["--endpoints", &endpoints, "--scenario", "frozen"], &[]));
    expect_cue(&mut program, "freeze-first").await;
    support::signal(first.pid(), "-STOP");
    program.as_mut().unwrap().done().await;
    expect_cue(&mut program, "kill-first").await;
    drop(first); // SIGKILL by PID (a stopped process too), and reaped
    program.as_mut().unwrap().done().await;
    expect_passed(program).await;
    second.shutdown().await;
}

/// `ShardMember`: shards shared between members on two instances, released automatically
/// (at once) or manually (drained, undrained, leaving), nothing moving when the first instance
/// is killed (SIGKILL), a member whose heartbeats stop owning nothing after its validity and
/// its shards moving only then; every member's `owned()` sampled all along, never two owners
/// of a shard at once, epochs growing with every move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_shard_members_share_shards_and_never_overlap() {
    let zk = support::zk::shared();
    let ns = support::namespace("javaclient-shards");
    let first = ZkcoordProcess::spawn(&format!("{}{ns}", zk.hosts()), &[]);
    support::wait_serving(first.addr).await;
    let second = start_named(&zk.hosts(), &ns, "second").await;
    let endpoints = format!("{},{}", first.addr, second.addr());
    let mut program = Some(Program::spawn(&["--endpoints", &endpoints, "--scenario", "shards"], &[]));
    expect_cue(&mut program, "kill-first").await;
    drop(first); // SIGKILL by PID, and reaped
    program.as_mut().unwrap().done().await;
    expect_passed(program).await;
    second.shutdown().await;
}

/// The Java client over mTLS and in a tenant: leases, locks and election work, the default
/// tenant does not see them, and a client without a certificate is refused.
#[tokio::test]
async fn java_client_speaks_mtls_in_a_tenant() {
    let ca = support::certs::Ca::new("java ca");
    let (server, client) = (ca.server(), ca.client("java-node"));
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, contents: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    };
    let tls = zkcoord::config::TlsConfig {
        cert: write("server.crt", &server.cert),
        key: write("server.key", &server.key),
        client_ca: Some(write("ca.crt", &ca.pem)),
    };
    write("client.crt", &client.cert);
    write("client.key", &client.key);
    let zk = support::zk::shared();
    let mut config = support::test_config(&zk.hosts(), &support::namespace("javaclient-tls"));
    config.tls = Some(tls);
    config.zookeeper.tenants = vec!["a".into()];
    let instance = zkcoord::server::start(config).await.expect("start zkcoord with TLS");
    instance.session().wait_connected(Duration::from_secs(30)).await.unwrap();
    let endpoint = instance.addr().to_string();
    let program = Program::spawn(
        &["--endpoints", &endpoint, "--scenario", "tls"],
        &[("ZKCOORD_TEST_TLS_DIR", dir.path().to_str().unwrap())],
    );
    expect_passed(Some(program)).await;
    instance.shutdown().await;
}

/// The Java client's pure rules without a server (`UnitChecks.java`): Watch messages as events
/// (a new stream's snapshot revokes what moved on), health check results, a validity that runs
/// out by time alone, what a confirmed heartbeat lists.
#[test]
fn java_client_rules_hold_without_a_server() {
    let output = java_command("io.zkcoord.client.UnitChecks").current_dir(repo()).output().expect("run java");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "java unit checks failed:\n{stdout}\n{stderr}");
    assert_eq!(stdout.lines().last(), Some("java unit checks passed"), "{stdout}\n{stderr}");
}

/// The versions `clients/java/pom.xml` declares are the ones the tests run with: grpc-java and
/// protobuf-java as Debian ships them (the jars on the classpath).
#[test]
fn java_pom_matches_the_tested_versions() {
    let pom = std::fs::read_to_string(repo().join("clients/java/pom.xml")).unwrap();
    let grpc = std::fs::read_link("/usr/share/java/grpc-core.jar").unwrap();
    let protobuf = std::fs::read_link("/usr/share/java/protobuf.jar").unwrap();
    let version = |link: &Path, prefix: &str| {
        let name = link.file_name().unwrap().to_string_lossy().into_owned();
        name.strip_prefix(prefix).and_then(|n| n.strip_suffix(".jar")).unwrap().to_owned()
    };
    let (grpc, protobuf) = (version(&grpc, "grpc-core-"), version(&protobuf, "protobuf-"));
    assert!(pom.contains(&format!("<grpc.version>{grpc}</grpc.version>")), "pom.xml declares grpc-java {grpc}");
    assert!(
        pom.contains(&format!("<protobuf.version>{protobuf}</protobuf.version>")),
        "pom.xml declares protobuf-java {protobuf}"
    );
}
