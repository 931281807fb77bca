//! The master/standby example (`examples/master-standby`): a Rust node (priority 0) and a Python
//! node (priority 1) -- and, in the second test, a Java and a Kotlin node on the Java client --
//! all doing "work" only while they lead, in one election with preemption,
//! against two zkcoord instances and a real ZooKeeper. The master is killed (the standby takes
//! over), comes back (it takes over again, gracefully), and is upgraded the way an operator
//! would roll it (transfer away, stop, restart). The work file proves that at every moment at
//! most one node worked: each line carries the fencing token of its writer's term.
//!
//! The Rust node is `examples/master-standby/rust_node.rs`, compiled into this test binary
//! and run as a process of its own: the test binary runs itself with the ignored test
//! [`rust_node_process`] and the node's arguments in `MASTER_STANDBY_NODE_ARGS`. (The
//! example's own binary is not built by `cargo test`, which builds examples as test harnesses.)

#![allow(clippy::unwrap_used)]

use crate::support;

#[allow(dead_code)] // its `main` is the example binary's
#[path = "../../examples/master-standby/rust_node.rs"]
mod rust_node;

/// The environment variable carrying the node's arguments (one per line) to [`rust_node_process`].
const NODE_ARGS: &str = "MASTER_STANDBY_NODE_ARGS";

/// Not a test: the entry point of a Rust node process, started by [`Node::rust`].
#[test]
#[ignore = "the Rust node's entry point, run in its own process by the master/standby test"]
fn rust_node_process() {
    let args = std::env::var(NODE_ARGS).expect("run by the master/standby test");
    let args = std::iter::once("master-standby-node").chain(args.lines()).map(std::ffi::OsString::from);
    let code = rust_node::node_main(args);
    std::process::exit(if code == std::process::ExitCode::SUCCESS { 0 } else { 1 });
}

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use zkcoord::pb::v1::{self as pb, election_client::ElectionClient};

/// The lease ttl of both nodes.
const TTL_MS: u64 = 1000;
/// How long any expected step may take: generous, CI machines are slow.
const STEP: Duration = Duration::from_secs(15);

/// One node process and the lines it prints.
struct Node {
    name: &'static str,
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Node {
    fn start(name: &'static str, mut command: Command, priority: u8, endpoints: &str, work: &Path) -> Self {
        let (priority, ttl) = (priority.to_string(), TTL_MS.to_string());
        let args = [
            "--endpoints",
            endpoints,
            "--election",
            "ledger",
            "--id",
            name,
            "--priority",
            &priority,
            "--ttl-ms",
            &ttl,
            "--preempt",
            "--work-file",
            work.to_str().unwrap(),
        ];
        if command.get_program() == std::env::current_exe().unwrap() {
            command.env(NODE_ARGS, args.join("\n"));
        } else {
            command.args(args);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { name, child, lines }
    }

    /// The Rust node (`examples/master-standby/rust_node.rs`), in a process of its own.
    fn rust(name: &'static str, priority: u8, endpoints: &str, work: &Path) -> Self {
        let mut command = Command::new(std::env::current_exe().unwrap());
        // The test's name in this binary: its module path without the crate's name.
        let test = concat!(module_path!(), "::rust_node_process").split_once("::").expect("a module path").1;
        command.args([test, "--exact", "--ignored", "--nocapture", "--quiet", "--test-threads=1"]);
        Self::start(name, command, priority, endpoints, work)
    }

    /// The Python node (`examples/master-standby/python_node.py`).
    fn python(name: &'static str, priority: u8, endpoints: &str, work: &Path) -> Self {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/master-standby/python_node.py");
        let mut command = Command::new(support::python());
        command.arg(script);
        Self::start(name, command, priority, endpoints, work)
    }

    /// The Java node (`examples/master-standby/JavaNode.java`, built by `clients/java/build.sh`).
    fn java(name: &'static str, priority: u8, endpoints: &str, work: &Path) -> Self {
        Self::start(name, crate::java_client::java_command("JavaNode"), priority, endpoints, work)
    }

    /// The Kotlin node (`examples/master-standby/KotlinNode.kt`, built by `clients/java/build.sh`
    /// with Debian's kotlinc).
    fn kotlin(name: &'static str, priority: u8, endpoints: &str, work: &Path) -> Self {
        let classpath = crate::java_client::classpath();
        assert!(
            classpath.contains("zkcoord-kotlin-node.jar"),
            "the Kotlin node was not built (no kotlinc): run scripts/test.sh, or `source scripts/lib.sh; ensure_java_client`"
        );
        Self::start(name, crate::java_client::java_command("KotlinNodeKt"), priority, endpoints, work)
    }

    /// Waits for a line starting with `prefix` (skipping others) and returns it.
    fn expect(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => {
                    println!("{}: {line}", self.name);
                    return line;
                }
                Ok(line) => println!("{}: {line}", self.name),
                Err(_) => panic!("{} did not print {prefix:?} within {STEP:?}", self.name),
            }
        }
    }

    /// Asserts that the node prints nothing starting with `prefix` for `quiet`.
    fn expect_no(&mut self, prefix: &str, quiet: Duration) {
        let deadline = Instant::now() + quiet;
        while let Ok(line) = self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            println!("{}: {line}", self.name);
            assert!(!line.starts_with(prefix), "{} printed {line:?}", self.name);
        }
    }

    /// The fencing token of an `elected <term> <token>` line.
    fn elected(&mut self) -> u64 {
        self.expect("elected ").split(' ').nth(2).unwrap().parse().unwrap()
    }

    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM: the node resigns, revokes its lease and says `bye`.
    fn stop(mut self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        self.expect("bye");
        let deadline = Instant::now() + STEP;
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "{} did not exit after bye", self.name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Checks the work file against the terms (token, node) in their order: tokens grow across
/// terms; written in time order, one worker at a time means the tokens never go down, and each
/// token belongs to exactly one node, whose term it is; every term did work.
fn assert_one_worker_at_a_time(work: &Path, tokens: &[(u64, &str)]) {
    println!("terms: {tokens:?}");
    assert!(tokens.windows(2).all(|w| w[0].0 < w[1].0), "fencing tokens grow across terms: {tokens:?}");
    let written = std::fs::read_to_string(work).unwrap();
    let mut owner_of = BTreeMap::new();
    let mut last = 0;
    for line in written.lines() {
        let (token, id) = line.split_once(' ').unwrap();
        let token: u64 = token.parse().unwrap();
        assert!(token >= last, "work with token {token} after work with token {last}: two workers at once");
        last = token;
        assert_eq!(*owner_of.entry(token).or_insert(id.to_owned()), id, "token {token} used by two nodes");
        assert!(tokens.contains(&(token, owner_of[&token].as_str())), "{line:?} is not from a term's leader");
    }
    assert_eq!(owner_of.len(), tokens.len(), "every term did work: {owner_of:?}");
}

/// Waits until the work file has a line from `id` with `token`.
fn until_working(work: &Path, id: &str, token: u64) {
    let deadline = Instant::now() + STEP;
    let line = format!("{token} {id}");
    while !std::fs::read_to_string(work).unwrap_or_default().lines().any(|l| l == line) {
        assert!(Instant::now() < deadline, "{id} never worked with token {token}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn master_and_standby_fail_over_preempt_and_roll_with_one_worker_at_a_time() {
    let zk = support::zk::shared();
    let ns = support::namespace("master-standby");
    let a = support::start_zkcoord(&zk.hosts(), &ns).await;
    let b = support::start_zkcoord(&zk.hosts(), &ns).await;
    let endpoints = format!("{},{}", a.addr(), b.addr());
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work.log");
    let mut elections = ElectionClient::new(support::channel(b.addr()).await);
    let mut tokens = Vec::new(); // (token, node) in the order of the terms

    let (mut master, mut standby) = tokio::task::block_in_place(|| {
        let mut master = Node::rust("rust-master", 0, &endpoints, &work);
        master.expect("ready ");
        tokens.push((master.elected(), "rust-master"));
        let mut standby = Node::python("python-standby", 1, &endpoints, &work);
        standby.expect("ready ");
        until_working(&work, "rust-master", tokens[0].0);
        (master, standby)
    });

    // 1. kill -9 the master: the standby takes over once the master's lease has expired.
    tokio::task::block_in_place(|| {
        master.kill9();
        let killed = Instant::now();
        let token = standby.elected();
        println!("standby elected {:?} after the master was killed (ttl {TTL_MS} ms)", killed.elapsed());
        tokens.push((token, "python-standby"));
        until_working(&work, "python-standby", token);
    });

    // 2. The master comes back: with preemption it takes over again, the standby told first.
    master = tokio::task::block_in_place(|| {
        let mut master = Node::rust("rust-master", 0, &endpoints, &work);
        master.expect("ready ");
        assert_eq!(standby.expect("lost "), "lost preempted");
        tokens.push((master.elected(), "rust-master"));
        until_working(&work, "rust-master", tokens[2].0);
        master
    });

    // 3. Rolling upgrade of the master: transfer away, stop it, start the new version.
    let request = pb::TransferRequest {
        election: "ledger".into(),
        target_candidate_id: "python-standby".into(),
        from: None,
        term: 0,
    };
    let leader = elections.transfer(request).await.unwrap().into_inner().leader.unwrap();
    assert_eq!(leader.candidate_id, "python-standby");
    tokio::task::block_in_place(|| {
        assert_eq!(master.expect("lost "), "lost transferred");
        tokens.push((standby.elected(), "python-standby"));
        // Preemption does not undo the operator's transfer.
        master.expect_no("elected", Duration::from_millis(1500));
    });
    master = tokio::task::block_in_place(|| {
        master.stop();
        let mut master = Node::rust("rust-master", 0, &endpoints, &work);
        master.expect("ready ");
        assert_eq!(standby.expect("lost "), "lost preempted");
        tokens.push((master.elected(), "rust-master"));
        until_working(&work, "rust-master", tokens[4].0);
        master
    });

    // 4. Rolling upgrade of the standby: it does not disturb the master.
    tokio::task::block_in_place(|| {
        standby.stop();
        standby = Node::python("python-standby", 1, &endpoints, &work);
        standby.expect("ready ");
        master.expect_no("lost", Duration::from_millis(1000));
        standby.expect_no("elected", Duration::from_millis(100));
        master.stop();
        tokens.push((standby.elected(), "python-standby"));
        until_working(&work, "python-standby", tokens[5].0);
        standby.stop();
    });

    // Terms: tokens grow, and the leaders alternate as driven above; one worker at a time.
    assert_one_worker_at_a_time(&work, &tokens);
    a.shutdown().await;
    b.shutdown().await;
}

/// Mastership handed over among four nodes in three languages -- Rust, Python, Java and Kotlin
/// (on the Java client) -- in one election with preemption: each leaves gracefully (SIGTERM:
/// resign) or is killed (SIGKILL: the next one waits for its lease to expire), an operator's
/// Transfer moves mastership to a chosen node, and the restarted Rust master preempts. The work
/// file shows one worker at a time, each with its own term's fencing token.
#[tokio::test(flavor = "multi_thread")]
async fn mastership_is_handed_over_among_rust_python_java_and_kotlin_nodes() {
    let zk = support::zk::shared();
    let ns = support::namespace("master-standby-jvm");
    let a = support::start_zkcoord(&zk.hosts(), &ns).await;
    let b = support::start_zkcoord(&zk.hosts(), &ns).await;
    let endpoints = format!("{},{}", a.addr(), b.addr());
    let on_b = format!("{},{}", b.addr(), a.addr());
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work.log");
    let mut elections = ElectionClient::new(support::channel(b.addr()).await);
    let mut tokens = Vec::new(); // (token, node) in the order of the terms

    let (mut python, mut java, mut kotlin) = tokio::task::block_in_place(|| {
        let mut rust = Node::rust("rust-node", 0, &endpoints, &work);
        rust.expect("ready ");
        tokens.push((rust.elected(), "rust-node"));
        // One after the other: JVMs starting together are slow on a loaded machine.
        let mut python = Node::python("python-node", 1, &on_b, &work);
        python.expect("ready ");
        let mut java = Node::java("java-node", 3, &endpoints, &work);
        java.expect("ready ");
        let mut kotlin = Node::kotlin("kotlin-node", 2, &on_b, &work);
        kotlin.expect("ready ");
        until_working(&work, "rust-node", tokens[0].0);
        // 1. The Rust master leaves gracefully: the Python node (next priority) takes over.
        rust.stop();
        tokens.push((python.elected(), "python-node"));
        until_working(&work, "python-node", tokens[1].0);
        (python, java, kotlin)
    });

    // 2. An operator moves mastership to the Kotlin node (priority 2): the Python node, moved
    // away, does not preempt back, and the Java node (priority 3) is worse.
    let request = pb::TransferRequest {
        election: "ledger".into(),
        target_candidate_id: "kotlin-node".into(),
        from: None,
        term: 0,
    };
    let leader = elections.transfer(request).await.unwrap().into_inner().leader.unwrap();
    assert_eq!(leader.candidate_id, "kotlin-node");
    tokio::task::block_in_place(|| {
        assert_eq!(python.expect("lost "), "lost transferred");
        tokens.push((kotlin.elected(), "kotlin-node"));
        until_working(&work, "kotlin-node", tokens[2].0);
        // 3. The Python node leaves, then the Kotlin master dies: the Java node takes over once
        // the Kotlin node's lease has expired.
        python.stop();
        java.expect_no("elected", Duration::from_millis(300));
        kotlin.kill9();
        tokens.push((java.elected(), "java-node"));
        until_working(&work, "java-node", tokens[3].0);
        // 4. The Rust master comes back and preempts the Java node, which hears it first.
        let mut rust = Node::rust("rust-node", 0, &endpoints, &work);
        rust.expect("ready ");
        assert_eq!(java.expect("lost "), "lost preempted");
        tokens.push((rust.elected(), "rust-node"));
        until_working(&work, "rust-node", tokens[4].0);
        // 5. The Rust master leaves again: the Java node takes over at once.
        rust.stop();
        tokens.push((java.elected(), "java-node"));
        until_working(&work, "java-node", tokens[5].0);
        java.stop();
    });
    assert_one_worker_at_a_time(&work, &tokens);
    a.shutdown().await;
    b.shutdown().await;
}
