//! The Python client package (`clients/python`, `zkcoord_client`) against real zkcoord
//! instances and a real ZooKeeper: `clients/python/tests/client_checks.py` runs one scenario per
//! test (leases with health checks, election, locks, failover between instances) and asserts
//! the client's behaviour; this driver starts the instances, kills or shuts them down when the
//! script asks (`cue <what>` on its stdout, answered with `done` on its stdin), and requires the
//! script's success and final line.
//!
//! The Python interpreter is `$ZKCOORD_TEST_PYTHON`, or the venv `scripts/test.sh` creates in
//! `target/pyvenv`. Without one these tests fail (they never silently pass).

#![allow(clippy::unwrap_used)]

use crate::support;

use std::{
    path::{Path, PathBuf},
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

/// How long one script may run.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);
/// The line the script prints last when every check passed.
const PASSED: &str = "python client checks passed";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A running `python <script> <args>`: stdout read line by line (and echoed), stderr collected.
struct Script {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: JoinHandle<String>,
    output: String,
    deadline: Instant,
}

/// How a script ended.
struct Ended {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Script {
    fn spawn(script: &Path, args: &[&str]) -> Self {
        Self::spawn_with_env(script, args, &[])
    }

    fn spawn_with_env(script: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(support::python())
            .envs(env.iter().copied())
            .arg(script)
            .args(args)
            .current_dir(repo())
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("run python");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut stderr_pipe = child.stderr.take().unwrap();
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = stderr_pipe.read_to_string(&mut text).await;
            text
        });
        Self { child, stdin, stdout, stderr, output: String::new(), deadline: Instant::now() + SCRIPT_TIMEOUT }
    }

    /// The next line of the script's stdout (echoed and kept); `None` once it closed it.
    async fn next_line(&mut self) -> Option<String> {
        let line = tokio::time::timeout_at(self.deadline, self.stdout.next_line())
            .await
            .unwrap_or_else(|_| panic!("the python script finishes within {SCRIPT_TIMEOUT:?}:\n{}", self.output))
            .expect("read the script's stdout")?;
        println!("python: {line}");
        self.output.push_str(&line);
        self.output.push('\n');
        Some(line)
    }

    /// The next line, which must start with `prefix`; returns the rest.
    async fn expect_line(&mut self, prefix: &str) -> String {
        let line = self.next_line().await;
        match line.as_deref().and_then(|l| l.strip_prefix(prefix)) {
            Some(rest) => rest.to_owned(),
            None => panic!("expected a line starting with {prefix:?}, got {line:?}; output so far:\n{}", self.output),
        }
    }

    /// Reads lines until the script asks for something (`cue <what>`: returns `what`) or
    /// closes its stdout (returns `None`).
    async fn next_cue(&mut self) -> Option<String> {
        loop {
            if let Some(what) = self.next_line().await?.strip_prefix("cue ") {
                return Some(what.to_owned());
            }
        }
    }

    /// Sends SIGTERM to the script, by PID.
    fn terminate(&self) {
        let pid = self.child.id().expect("the script is running");
        let status = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status().unwrap();
        assert!(status.success(), "kill -TERM {pid}");
    }

    /// Tells the script its cue was done.
    async fn done(&mut self) {
        self.stdin.write_all(b"done\n").await.expect("answer the script");
        self.stdin.flush().await.unwrap();
    }

    /// Waits for the end of the script (after its stdout closed).
    async fn wait(mut self) -> Ended {
        let status = tokio::time::timeout_at(self.deadline, self.child.wait())
            .await
            .expect("the python script exits")
            .expect("wait for python");
        let stderr = self.stderr.await.unwrap();
        Ended { status, stdout: self.output, stderr }
    }
}

/// An in-process instance with its own instance id (the script tells instances apart by it).
async fn start_named(hosts: &str, ns: &str, name: &str) -> zkcoord::server::Instance {
    let mut config = support::test_config(hosts, ns);
    config.instance_id = format!("{}-{name}", config.instance_id);
    let instance = zkcoord::server::start(config).await.expect("start zkcoord");
    instance.session().wait_connected(Duration::from_secs(30)).await.expect("zkcoord connects to zookeeper");
    instance
}

fn checks_script() -> PathBuf {
    repo().join("clients/python/tests/client_checks.py")
}

/// Runs one scenario that needs no cues against two instances sharing a namespace.
async fn run_scenario(scenario: &str) {
    let zk = support::zk::shared();
    let ns = support::namespace(&format!("pyclient-{scenario}"));
    let a = support::start_zkcoord(&zk.hosts(), &ns).await;
    let b = support::start_zkcoord(&zk.hosts(), &ns).await;
    let endpoints = format!("{},{}", a.addr(), b.addr());
    let mut script = Script::spawn(&checks_script(), &["--endpoints", &endpoints, "--scenario", scenario]);
    if let Some(cue) = script.next_cue().await {
        panic!("unexpected cue {cue:?}");
    }
    let ended = script.wait().await;
    assert_passed(&ended);
    a.shutdown().await;
    b.shutdown().await;
}

/// Reads up to the next cue, which must be `what` (then returns true). When the script ends
/// instead, fails with its output and stderr.
async fn expect_cue(script: &mut Option<Script>, what: &str) -> bool {
    let cue = script.as_mut().expect("the script is running").next_cue().await;
    if cue.as_deref() == Some(what) {
        return true;
    }
    let ended = script.take().unwrap().wait().await;
    panic!("expected cue {what:?}, got {cue:?} ({}):\n{}\n{}", ended.status, ended.stdout, ended.stderr);
}

fn assert_passed(ended: &Ended) {
    assert!(
        ended.status.success(),
        "python client checks failed ({}):\n{}\n{}",
        ended.status,
        ended.stdout,
        ended.stderr
    );
    assert_eq!(ended.stdout.lines().last(), Some(PASSED), "{}\n{}", ended.stdout, ended.stderr);
}

/// The Python client over mTLS and in a tenant: leases, locks and election work, another
/// tenant does not see them, and a client without a certificate is refused.
#[tokio::test]
async fn python_client_speaks_mtls_in_a_tenant() {
    let ca = support::certs::Ca::new("python ca");
    let (server, client) = (ca.server(), ca.client("py-node"));
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
    let mut config = support::test_config(&zk.hosts(), &support::namespace("pyclient-tls"));
    config.tls = Some(tls);
    config.zookeeper.tenants = vec!["a".into()];
    let instance = zkcoord::server::start(config).await.expect("start zkcoord with TLS");
    instance.session().wait_connected(Duration::from_secs(30)).await.unwrap();
    let endpoint = instance.addr().to_string();
    let mut script = Script::spawn_with_env(
        &checks_script(),
        &["--endpoints", &endpoint, "--scenario", "tls"],
        &[("ZKCOORD_TEST_TLS_DIR", dir.path().to_str().unwrap())],
    );
    if let Some(cue) = script.next_cue().await {
        panic!("unexpected cue {cue:?}");
    }
    assert_passed(&script.wait().await);
    instance.shutdown().await;
}

/// The committed stubs (`clients/python/zkcoord_client/_pb`) are what `generate.py` makes of
/// `proto/` now.
#[test]
fn python_client_stubs_match_the_protos() {
    let output = std::process::Command::new(support::python())
        .arg(repo().join("clients/python/generate.py"))
        .arg("--check")
        .output()
        .expect("run generate.py --check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "stale python stubs:\n{stdout}\n{stderr}");
    assert!(stdout.contains("stubs up to date"), "{stdout}");
}

/// A lease kept alive past several ttls; health checks (passing, failing, raising, hanging)
/// visible from another instance in TimeToLive; revoked, ended elsewhere, or expired after
/// the keeper closed.
#[tokio::test]
async fn python_lease_keeper_keeps_leases_with_health() {
    run_scenario("lease").await;
}

/// BecameLeader / LostLeadership through transfer, resign, health, stopped heartbeats (the
/// leader stops within one ttl), preemption and a revoked lease, between Python candidates on
/// two instances.
#[tokio::test]
async fn python_leader_elector_follows_leadership() {
    run_scenario("election").await;
}

/// Transfer: acknowledged automatically (at once), by the application after it stopped (at
/// that moment) and not at all (after the deposed leader's validity ran out); the old
/// leader's `leadership()` always ends before the new leader's begins (sampled in one process).
#[tokio::test]
async fn python_transfer_completes_on_the_deposed_leaders_acknowledgement() {
    run_scenario("transfer").await;
}

/// Exclusive locks exclude (try_lock blocked, lock timing out), unlock hands keys to waiters
/// with greater tokens, shared locks share, holds end with the lease.
#[tokio::test]
async fn python_locks_exclude_share_and_unlock() {
    run_scenario("lock").await;
}

/// The heartbeat and Campaign streams move to the next endpoint when their instance is killed
/// (SIGKILL) and again when the next one shuts down gracefully; the lease and the leadership
/// (same term) survive both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_fails_over_between_instances() {
    let zk = support::zk::shared();
    let ns = support::namespace("pyclient-failover");
    let first = ZkcoordProcess::spawn(&format!("{}{ns}", zk.hosts()), &[]);
    support::wait_serving(first.addr).await;
    let second = start_named(&zk.hosts(), &ns, "second").await;
    let third = start_named(&zk.hosts(), &ns, "third").await;
    let endpoints = format!("{},{},{}", first.addr, second.addr(), third.addr());
    let mut script = Script::spawn(&checks_script(), &["--endpoints", &endpoints, "--scenario", "failover"]);

    assert_eq!(script.next_cue().await.as_deref(), Some("kill-first"));
    drop(first); // SIGKILL by PID, and reaped
    script.done().await;
    assert_eq!(script.next_cue().await.as_deref(), Some("shutdown-second"));
    second.shutdown().await;
    script.done().await;
    assert_eq!(script.next_cue().await, None);
    assert_passed(&script.wait().await);
    third.shutdown().await;
}

/// The instance serving a waiting Python `lock()` is killed (SIGKILL): the client releases the
/// request left queued there under its lease before retrying on the other instance, so it gets
/// the keys once their holder lets go and leaves no orphan hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_lock_completes_elsewhere_without_an_orphan_when_its_instance_is_killed() {
    let zk = support::zk::shared();
    let ns = support::namespace("pyclient-lock-crash");
    let first = ZkcoordProcess::spawn(&format!("{}{ns}", zk.hosts()), &[]);
    support::wait_serving(first.addr).await;
    let second = start_named(&zk.hosts(), &ns, "second").await;
    let endpoints = format!("{},{}", first.addr, second.addr());
    let mut script = Script::spawn(&checks_script(), &["--endpoints", &endpoints, "--scenario", "lock_crash"]);
    assert_eq!(script.next_cue().await.as_deref(), Some("kill-first"));
    drop(first); // SIGKILL by PID, and reaped
    script.done().await;
    assert_eq!(script.next_cue().await, None);
    assert_passed(&script.wait().await);
    second.shutdown().await;
}

/// `ShardMember`: shards shared between members on two instances, released automatically
/// (at once) or manually (drained, undrained, leaving), nothing moving when the first instance
/// is killed (SIGKILL), a member whose heartbeats stop owning nothing after its validity and
/// its shards moving only then; every member's `owned()` sampled all along, never two owners
/// of a shard at once, epochs growing with every move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_shard_members_share_shards_and_never_overlap() {
    let zk = support::zk::shared();
    let ns = support::namespace("pyclient-shards");
    let first = ZkcoordProcess::spawn(&format!("{}{ns}", zk.hosts()), &[]);
    support::wait_serving(first.addr).await;
    let second = start_named(&zk.hosts(), &ns, "second").await;
    let endpoints = format!("{},{}", first.addr, second.addr());
    let mut script = Some(Script::spawn(&checks_script(), &["--endpoints", &endpoints, "--scenario", "shards"]));
    if expect_cue(&mut script, "kill-first").await {
        drop(first); // SIGKILL by PID, and reaped
        script.as_mut().unwrap().done().await;
    }
    let mut script = script.expect("the script is running");
    assert_eq!(script.next_cue().await, None);
    assert_passed(&script.wait().await);
    second.shutdown().await;
}

/// A leader whose only instance freezes (SIGSTOP: no answer, no message) stops acting by the
/// send time of its last confirmed heartbeat + ttl, reported by the elector's timer; the
/// candidate on the other instance leads only after that. A leader whose Campaign stream is on
/// the frozen instance (heartbeats elsewhere) and is transferred away stops when a confirmed
/// heartbeat no longer lists it, and its acknowledgement lets the successor lead at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_leader_on_a_frozen_instance_stops_by_its_validity() {
    let zk = support::zk::shared();
    let ns = support::namespace("pyclient-frozen");
    let first = ZkcoordProcess::spawn(&format!("{}{ns}", zk.hosts()), &[]);
    support::wait_serving(first.addr).await;
    let second = start_named(&zk.hosts(), &ns, "second").await;
    let endpoints = format!("{},{}", first.addr, second.addr());
    let script = Script::spawn(&checks_script(), &["--endpoints", &endpoints, "--scenario", "frozen"]);

    let mut script = Some(script);
    if expect_cue(&mut script, "freeze-first").await {
        let pid = first.pid().to_string();
        assert!(
            std::process::Command::new("kill").args(["-STOP", &pid]).status().unwrap().success(),
            "kill -STOP {pid}"
        );
        script.as_mut().unwrap().done().await;
    }
    if expect_cue(&mut script, "kill-first").await {
        drop(first); // SIGKILL by PID (a stopped process too), and reaped
        script.as_mut().unwrap().done().await;
    }
    let mut script = script.expect("the script is running");
    assert_eq!(script.next_cue().await, None);
    assert_passed(&script.wait().await);
    second.shutdown().await;
}

/// `examples/master-standby/python_node.py`, twice: the master (priority 0, preemption on)
/// works alone with its token; on SIGTERM it resigns, revokes and says `bye`, and the standby
/// takes over with a greater token; a restarted master preempts the standby. The work file
/// shows one writer at a time, with tokens that never go back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_master_standby_nodes_hand_over() {
    let zk = support::zk::shared();
    let ns = support::namespace("pyclient-nodes");
    let a = start_named(&zk.hosts(), &ns, "a").await;
    let b = start_named(&zk.hosts(), &ns, "b").await;
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work.log");
    let node_script = repo().join("examples/master-standby/python_node.py");
    let node = |id: &str, priority: &str, endpoints: String, preempt: bool| {
        let mut args = vec!["--endpoints", &endpoints, "--election", "ledger", "--id", id, "--priority", priority];
        args.extend(["--ttl-ms", "1000", "--work-file", work.to_str().unwrap()]);
        if preempt {
            args.push("--preempt");
        }
        Script::spawn(&node_script, &args)
    };
    let on_a = format!("{},{}", a.addr(), b.addr());
    let on_b = format!("{},{}", b.addr(), a.addr());

    let mut master = node("py-master", "0", on_a.clone(), true);
    master.expect_line("ready ").await;
    let first = elected(&mut master).await;
    let mut standby = node("py-standby", "1", on_b, false);
    standby.expect_line("ready ").await;
    until_worked(&work, first.1, 5).await;

    master.terminate();
    assert_eq!(master.next_line().await.as_deref(), Some("bye"));
    let ended = master.wait().await;
    assert!(ended.status.success(), "{}\n{}", ended.stdout, ended.stderr);
    let second = elected(&mut standby).await;
    assert!(second.0 > first.0 && second.1 > first.1, "{first:?} then {second:?}");
    until_worked(&work, second.1, 5).await;

    let mut master = node("py-master", "0", on_a, true);
    master.expect_line("ready ").await;
    assert_eq!(standby.next_line().await.as_deref(), Some("lost preempted"));
    let third = elected(&mut master).await;
    assert!(third.1 > second.1, "{second:?} then {third:?}");
    until_worked(&work, third.1, 5).await;
    // The standby goes first: stopped together, the master's resignation could elect the
    // standby for a moment before its own SIGTERM is handled (a correct but different story).
    for mut node in [standby, master] {
        node.terminate();
        assert_eq!(node.next_line().await.as_deref(), Some("bye"));
        let ended = node.wait().await;
        assert!(ended.status.success(), "{}\n{}", ended.stdout, ended.stderr);
    }

    // One writer per token, tokens never go back, each leader wrote with its own token.
    let lines = work_lines(&work);
    let writers: Vec<(u64, &str)> = lines.iter().map(|(token, id)| (*token, id.as_str())).collect();
    assert!(writers.windows(2).all(|w| w[0].0 <= w[1].0), "tokens never go back: {writers:?}");
    for (token, id) in [(first.1, "py-master"), (second.1, "py-standby"), (third.1, "py-master")] {
        let n = writers.iter().filter(|w| w.0 == token).count();
        assert!(n >= 5, "{id} worked with token {token}: {n} lines");
        assert!(writers.iter().filter(|w| w.0 == token).all(|w| w.1 == id), "only {id} wrote with {token}");
    }
    assert_eq!(writers.len(), writers.iter().filter(|w| [first.1, second.1, third.1].contains(&w.0)).count());
    a.shutdown().await;
    b.shutdown().await;
}

/// Reads a node's `elected <term> <token>` line.
async fn elected(node: &mut Script) -> (i64, u64) {
    let rest = node.expect_line("elected ").await;
    let (term, token) = rest.split_once(' ').expect("elected <term> <token>");
    (term.parse().unwrap(), token.parse().unwrap())
}

/// Waits until the work file has `n` lines with `token`.
async fn until_worked(work: &Path, token: u64, n: usize) {
    support::eventually(Duration::from_secs(15), &format!("{n} units of work with token {token}"), || async {
        work_lines(work).iter().filter(|(t, _)| *t == token).count() >= n
    })
    .await;
}

/// The work file's lines as (token, id).
fn work_lines(path: &Path) -> Vec<(u64, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            let (token, id) = line.split_once(' ').unwrap_or_else(|| panic!("bad work line {line:?}"));
            (token.parse().unwrap(), id.to_owned())
        })
        .collect()
}
