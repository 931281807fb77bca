//! The client subcommands of the built `zkcoord` binary against a real ZooKeeper and an
//! in-process zkcoord: table and JSON output, error messages and exit codes, `leader watch`,
//! `shards` (show, watch, drain), and `campaign -- CMD` running its command only while leading.

#![allow(clippy::unwrap_used)]

use crate::{
    shards::{Member, check_exclusive},
    support,
};

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;
use zkcoord_client::{
    CampaignOptions, Client, LeaderElector, LeadershipEvent, LeaseKeeper, LeaseOptions, LockGuard, LockOptions,
};

const WAIT: Duration = Duration::from_secs(30);
const EX_USAGE: i32 = 64;
const EX_NOINPUT: i32 = 66;
const EX_UNAVAILABLE: i32 = 69;
const EX_NOPERM: i32 = 77;

/// The outcome of one `zkcoord` run.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Asserts success and parses stdout as JSON.
    fn json(&self) -> Value {
        assert_eq!(self.code, Some(0), "{self:?}");
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    /// Asserts success and returns the lines of stdout.
    fn lines(&self) -> Vec<&str> {
        assert_eq!(self.code, Some(0), "{self:?}");
        self.stdout.lines().collect()
    }
}

/// A `zkcoord` command with ZKCOORD_* variables of the caller's environment removed.
fn command() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_zkcoord"));
    for var in ["ZKCOORD_ENDPOINTS", "ZKCOORD_LEASE_SECRET", "ZKCOORD_CONFIG", "ZKCOORD_TENANT"] {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    cmd
}

/// Runs `zkcoord ARGS --endpoints ENDPOINTS` to completion (at most [`WAIT`]).
async fn zkcoord(endpoints: &str, args: &[&str]) -> Run {
    let mut cmd = command();
    cmd.args(args).arg("--endpoints").arg(endpoints);
    let output = tokio::time::timeout(WAIT, cmd.output()).await.expect("zkcoord finishes").expect("run zkcoord");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The header line of a table, split into its column names.
fn header(line: &str) -> Vec<String> {
    line.split("  ").map(str::trim).filter(|c| !c.is_empty()).map(str::to_owned).collect()
}

/// The whitespace-separated cells of a table row.
fn cells(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// `--tenant` acts in a tenant: a lease granted there is listed there and only there; the
/// Rust client's `Client::tenant` sees the same.
#[tokio::test]
async fn tenant_flag_and_client_tenant_act_in_that_tenant() {
    let zk = support::zk::shared();
    let mut config = support::test_config(&zk.hosts(), &support::namespace("cli-tenant"));
    config.zookeeper.tenants = vec!["blue".into()];
    let instance = zkcoord::server::start(config).await.unwrap();
    instance.session().wait_connected(Duration::from_secs(30)).await.unwrap();
    let endpoint = instance.addr().to_string();

    let client = zkcoord_client::Client::new([&endpoint]).unwrap().tenant("blue").unwrap();
    let lease = zkcoord_client::LeaseKeeper::grant(
        &client,
        zkcoord_client::LeaseOptions::new("blue-node", Duration::from_secs(5)),
    )
    .await
    .unwrap();
    let blue = zkcoord(&endpoint, &["lease", "list", "--tenant", "blue", "-o", "json"]).await;
    let listed: serde_json::Value = serde_json::from_str(&blue.lines().join("\n")).unwrap();
    assert!(blue.stdout.contains("blue-node"), "{listed}");
    let default = zkcoord(&endpoint, &["lease", "list", "-o", "json"]).await;
    assert!(!default.stdout.contains("blue-node"), "the default tenant does not see it: {}", default.stdout);
    let unknown = zkcoord(&endpoint, &["lease", "list", "--tenant", "green"]).await;
    assert_eq!(unknown.code, Some(77), "an unlisted tenant is PERMISSION_DENIED: {unknown:?}");
    lease.revoke().await.unwrap();
    instance.shutdown().await;
}

#[tokio::test]
async fn read_commands_print_tables_and_json() {
    let zk = support::zk::shared();
    let instance = support::start_zkcoord(&zk.hosts(), &support::namespace("cli-read")).await;
    let endpoints = instance.addr().to_string();
    let client = Client::new([&endpoints]).unwrap();

    let lease_a = LeaseKeeper::grant(
        &client,
        LeaseOptions::new("owner-a", Duration::from_secs(10)).metadata("zone", "eu-1").metadata("rack", "r7"),
    )
    .await
    .unwrap();
    let lease_b = LeaseKeeper::grant(&client, LeaseOptions::new("owner-b", Duration::from_secs(10))).await.unwrap();
    let mut node_a = LeaderElector::campaign(
        &client,
        &lease_a,
        CampaignOptions::new("ledger", "node-a").priority(0).value("10.0.0.1:9000"),
    )
    .await
    .unwrap();
    let became = tokio::time::timeout(WAIT, node_a.next()).await.unwrap().unwrap();
    let LeadershipEvent::BecameLeader { term, fencing_token } = became else { panic!("{became:?}") };
    let _node_b =
        LeaderElector::campaign(&client, &lease_b, CampaignOptions::new("ledger", "node-b").priority(5)).await.unwrap();
    let _guard = LockGuard::acquire(&client, &lease_a, LockOptions::exclusive(["order-17"])).await.unwrap();
    support::eventually(WAIT, "node-b is listed", || async {
        zkcoord(&endpoints, &["candidates", "ledger", "-o", "json"]).await.json()["candidates"]
            .as_array()
            .is_some_and(|c| c.len() == 2)
    })
    .await;

    // leader get
    let run = zkcoord(&endpoints, &["leader", "get", "ledger"]).await;
    let lines = run.lines();
    assert_eq!(
        header(lines[0]),
        ["ELECTION", "LEADER", "PRIORITY", "TERM", "FENCING TOKEN", "LEASE", "HEALTH", "ELECTED", "VALUE"],
        "{run:?}"
    );
    let row = cells(lines[1]);
    assert_eq!(
        row[..6],
        ["ledger", "node-a", "0", &term.to_string(), &fencing_token.to_string(), &lease_a.id().to_string()]
    );
    assert_eq!(row[6], "SERVING");
    assert_eq!(row.last(), Some(&"10.0.0.1:9000"));
    assert_eq!(lines.len(), 2, "{run:?}");
    let json = zkcoord(&endpoints, &["leader", "get", "ledger", "--output", "json"]).await.json();
    assert_eq!(json["election"], "ledger");
    let leader = &json["leader"];
    assert_eq!(leader["candidate_id"], "node-a");
    assert_eq!(leader["term"], term);
    assert_eq!(leader["fencing_token"], fencing_token.to_string());
    assert_eq!(leader["lease_id"], lease_a.id().to_string());
    assert_eq!(leader["value"], "10.0.0.1:9000");
    assert_eq!(leader["priority"], 0);
    assert_eq!(leader["health"]["status"], "SERVING");
    assert!(leader["elected_unix_ms"].as_i64().unwrap() > 0);

    // An election without leader.
    let run = zkcoord(&endpoints, &["leader", "get", "nobody-here"]).await;
    assert_eq!(run.lines(), ["election nobody-here has no leader"]);
    let json = zkcoord(&endpoints, &["leader", "get", "nobody-here", "-o", "json"]).await.json();
    assert!(json["leader"].is_null(), "{json}");

    // candidates
    let run = zkcoord(&endpoints, &["candidates", "ledger"]).await;
    let lines = run.lines();
    assert_eq!(
        header(lines[0]),
        ["CANDIDATE", "PRIORITY", "ELIGIBLE", "LEADER", "HEALTH", "LEASE", "POSITION", "VALUE"]
    );
    assert_eq!(cells(lines[1])[..7], ["node-a", "0", "yes", "yes", "SERVING", &lease_a.id().to_string(), "0"]);
    assert_eq!(cells(lines[2])[..6], ["node-b", "5", "yes", "no", "SERVING", &lease_b.id().to_string()]);
    assert_eq!(lines.len(), 3, "{run:?}");
    let json = zkcoord(&endpoints, &["candidates", "ledger", "-o", "json"]).await.json();
    assert_eq!(json["term"], term);
    assert_eq!(json["preempt"], "off");
    let candidates = json["candidates"].as_array().unwrap();
    assert_eq!(candidates[0]["candidate_id"], "node-a");
    assert_eq!(candidates[0]["leader"], true);
    assert_eq!(candidates[0]["eligible"], true);
    assert_eq!(candidates[0]["value"], "10.0.0.1:9000");
    assert_eq!(candidates[1]["candidate_id"], "node-b");
    assert_eq!(candidates[1]["priority"], 5);
    assert_eq!(candidates[1]["leader"], false);
    assert_eq!(candidates[1]["lease_id"], lease_b.id().to_string());

    // lease list
    let run = zkcoord(&endpoints, &["lease", "list"]).await;
    let lines = run.lines();
    assert_eq!(
        header(lines[0]),
        ["LEASE", "OWNER", "TTL", "REMAINING", "SINCE HEARTBEAT", "HEALTH", "INSTANCE", "GRANTED", "METADATA"]
    );
    let row_a = lines.iter().find(|l| l.contains("owner-a")).unwrap_or_else(|| panic!("{run:?}"));
    assert!(row_a.starts_with(&lease_a.id().to_string()), "{row_a}");
    assert!(row_a.trim_end().ends_with("rack=r7,zone=eu-1"), "{row_a}");
    assert!(cells(row_a).contains(&"10s"), "{row_a}");
    assert!(lines.iter().any(|l| l.contains("owner-b")), "{run:?}");
    let json = zkcoord(&endpoints, &["lease", "list", "-o", "json"]).await.json();
    let leases = json["leases"].as_array().unwrap();
    assert_eq!(leases.len(), 2, "{json}");
    let a = leases.iter().find(|l| l["owner"] == "owner-a").unwrap();
    assert_eq!(a["lease_id"], lease_a.id().to_string());
    assert_eq!(a["metadata"]["zone"], "eu-1");
    assert_eq!(a["granted_ttl_ms"], 10_000);
    assert_eq!(a["health"]["status"], "SERVING");

    // lease ttl, with bindings
    let id_a = lease_a.id().to_string();
    let run = zkcoord(&endpoints, &["lease", "ttl", &id_a]).await;
    let lines = run.lines();
    assert_eq!(header(lines[0])[..2], ["LEASE", "OWNER"]);
    assert_eq!(cells(lines[1])[..2], [id_a.as_str(), "owner-a"]);
    assert_eq!(lines[2], "");
    assert_eq!(header(lines[3]), ["BINDING", "NAME", "ID"]);
    let bindings: Vec<Vec<&str>> = lines[4..].iter().map(|l| cells(l)).collect();
    assert!(bindings.contains(&vec!["candidacy", "ledger", "node-a"]), "{run:?}");
    assert!(bindings.iter().any(|b| b[..2] == ["lock", "order-17"]), "{run:?}");
    let json = zkcoord(&endpoints, &["lease", "ttl", &id_a, "-o", "json"]).await.json();
    assert_eq!(json["lease"]["owner"], "owner-a");
    assert_eq!(json["lease"]["metadata"]["rack"], "r7");
    let remaining = json["lease"]["remaining_ttl_ms"].as_i64().unwrap();
    assert!((0..=10_000).contains(&remaining), "{json}");
    let bindings = json["bindings"].as_array().unwrap();
    assert!(
        bindings.iter().any(|b| b["kind"] == "candidacy" && b["name"] == "ledger" && b["id"] == "node-a"),
        "{json}"
    );
    assert!(bindings.iter().any(|b| b["kind"] == "lock" && b["name"] == "order-17"), "{json}");

    // lock holders, one key and by prefix
    for args in [&["lock", "holders", "order-17"][..], &["lock", "holders", "order-", "--prefix"][..]] {
        let run = zkcoord(&endpoints, args).await;
        let lines = run.lines();
        assert_eq!(header(lines[0]), ["KEY", "MODE", "OWNER", "LEASE", "FENCING TOKEN", "SINCE", "WAITERS"]);
        let row = cells(lines[1]);
        assert_eq!(row[..4], ["order-17", "exclusive", "owner-a", id_a.as_str()], "{run:?}");
        assert_eq!(row.last(), Some(&"0"));
        assert_eq!(lines.len(), 2, "{run:?}");
    }
    let json = zkcoord(&endpoints, &["lock", "holders", "order-17", "-o", "json"]).await.json();
    let key = &json["keys"][0];
    assert_eq!(key["key"], "order-17");
    assert_eq!(key["waiters"], 0);
    assert_eq!(key["holders"][0]["owner"], "owner-a");
    assert_eq!(key["holders"][0]["mode"], "exclusive");
    assert_eq!(key["holders"][0]["lease_id"], id_a);
    assert!(key["holders"][0]["fencing_token"].as_str().unwrap().parse::<u64>().unwrap() > 0);
    let json = zkcoord(&endpoints, &["lock", "holders", "no-such-key", "-o", "json"]).await.json();
    assert_eq!(json["keys"].as_array().map(Vec::len), Some(0), "{json}");

    // health
    let run = zkcoord(&endpoints, &["health"]).await;
    let lines = run.lines();
    assert_eq!(header(lines[0]), ["ENDPOINT", "SERVICE", "STATUS"]);
    let services: Vec<Vec<&str>> = lines[1..].iter().map(|l| cells(l)).collect();
    assert_eq!(
        services,
        ["(server)", "zkcoord.v1.Lease", "zkcoord.v1.Election", "zkcoord.v1.Lock"].map(|s| vec![
            endpoints.as_str(),
            s,
            "SERVING"
        ])
    );
    let json = zkcoord(&endpoints, &["health", "-o", "json"]).await.json();
    assert_eq!(json["serving"], true);
    assert_eq!(json["endpoints"][0]["endpoint"], endpoints);
    assert_eq!(json["endpoints"][0]["services"][0]["service"], "");
    assert_eq!(json["endpoints"][0]["services"][0]["status"], "SERVING");
    assert_eq!(json["endpoints"][0]["services"].as_array().map(Vec::len), Some(4));

    lease_a.revoke().await.unwrap();
    lease_b.revoke().await.unwrap();
    instance.shutdown().await;
}

/// A loopback address where nothing listens.
fn closed_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

#[tokio::test]
async fn unreachable_service_exits_69_with_a_clear_message() {
    let closed = closed_endpoint();
    for args in [
        &["leader", "get", "ledger"][..],
        &["leader", "get", "ledger", "-o", "json"][..],
        &["candidates", "ledger"][..],
        &["lease", "list"][..],
        &["lease", "ttl", "42"][..],
        &["lock", "holders", "k"][..],
        &["leader", "transfer", "ledger"][..],
        &["shards", "show", "flows"][..],
        &["shards", "drain", "flows", "w1"][..],
    ] {
        let run = zkcoord(&closed, args).await;
        assert_eq!(run.code, Some(EX_UNAVAILABLE), "{args:?}: {run:?}");
        assert!(run.stderr.starts_with(&format!("error: cannot reach zkcoord at {closed}: ")), "{run:?}");
        assert!(run.stderr.contains("Connection refused"), "{run:?}");
        assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
        assert!(run.stdout.is_empty(), "{run:?}");
    }
    let run = zkcoord(&closed, &["health"]).await;
    assert_eq!(run.code, Some(EX_UNAVAILABLE), "{run:?}");
    assert!(run.stderr.contains(&format!("cannot reach zkcoord at {closed}")), "{run:?}");

    // The endpoints also come from the environment.
    let output = command().args(["lease", "list"]).env("ZKCOORD_ENDPOINTS", &closed).output().await.unwrap();
    assert_eq!(output.status.code(), Some(EX_UNAVAILABLE));
    assert!(String::from_utf8_lossy(&output.stderr).contains(&closed));
}

#[tokio::test]
async fn an_instance_without_zookeeper_is_reported_not_serving_and_unavailable() {
    // zkcoord serves at once but cannot reach its ZooKeeper: health NOT_SERVING, calls
    // UNAVAILABLE (sent by zkcoord, so not "cannot reach").
    let config = support::test_config(&closed_endpoint(), &support::namespace("cli-nozk"));
    let instance = zkcoord::server::start(config).await.unwrap();
    let endpoints = instance.addr().to_string();

    let run = zkcoord(&endpoints, &["health"]).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    let rows: Vec<Vec<&str>> = run.stdout.lines().skip(1).map(cells).collect();
    assert_eq!(rows.len(), 4, "{run:?}");
    assert!(rows.iter().all(|r| r[2] == "NOT_SERVING"), "{run:?}");
    let run = zkcoord(&endpoints, &["health", "-o", "json"]).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    let json: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["serving"], false);
    assert_eq!(json["endpoints"][0]["services"][0]["status"], "NOT_SERVING");

    let run = zkcoord(&endpoints, &["leader", "get", "ledger"]).await;
    assert_eq!(run.code, Some(EX_UNAVAILABLE), "{run:?}");
    assert!(run.stderr.starts_with("error: leader get ledger: zkcoord cannot answer now"), "{run:?}");

    // Health checks every endpoint: one healthy and one unreachable is still a failure.
    let zk = support::zk::shared();
    let healthy = support::start_zkcoord(&zk.hosts(), &support::namespace("cli-health2")).await;
    let both = format!("{},{}", healthy.addr(), closed_endpoint());
    let run = zkcoord(&both, &["health"]).await;
    assert_eq!(run.code, Some(EX_UNAVAILABLE), "{run:?}");
    assert_eq!(run.stdout.lines().count(), 5, "{run:?}");
    healthy.shutdown().await;
    instance.shutdown().await;
}

#[tokio::test]
async fn a_second_endpoint_is_used_when_the_first_is_unreachable() {
    let zk = support::zk::shared();
    let instance = support::start_zkcoord(&zk.hosts(), &support::namespace("cli-failover")).await;
    let endpoints = format!("{},{}", closed_endpoint(), instance.addr());
    let json = zkcoord(&endpoints, &["lease", "list", "-o", "json"]).await.json();
    assert_eq!(json["leases"], serde_json::json!([]));
    instance.shutdown().await;
}

#[tokio::test]
async fn errors_from_zkcoord_are_named_and_mapped_to_exit_codes() {
    let zk = support::zk::shared();
    let instance = support::start_zkcoord(&zk.hosts(), &support::namespace("cli-errors")).await;
    let endpoints = instance.addr().to_string();

    // grant, describe, revoke with a wrong secret, revoke, describe again
    let granted = zkcoord(
        &endpoints,
        &["lease", "grant", "--ttl", "20s", "--owner", "cli-owner", "--meta", "zone=eu-1", "-o", "json"],
    )
    .await
    .json();
    let id = granted["lease_id"].as_str().unwrap().to_owned();
    let secret = granted["secret"].as_str().unwrap().to_owned();
    assert!(id.parse::<i64>().unwrap() > 0);
    assert!(!secret.is_empty());
    assert_eq!(granted["ttl_ms"], 20_000);
    let json = zkcoord(&endpoints, &["lease", "ttl", &id, "-o", "json"]).await.json();
    assert_eq!(json["lease"]["owner"], "cli-owner");
    assert_eq!(json["lease"]["metadata"]["zone"], "eu-1");
    assert_eq!(json["bindings"], serde_json::json!([]));

    let run = zkcoord(&endpoints, &["lease", "revoke", &id, "--secret", "wrong"]).await;
    assert_eq!(run.code, Some(EX_NOPERM), "{run:?}");
    assert_eq!(run.stderr.trim(), format!("error: lease revoke {id}: permission denied: wrong lease secret"));
    let run = zkcoord(&endpoints, &["lease", "revoke", &id, "--secret", &secret]).await;
    assert_eq!(run.lines(), [format!("lease {id} revoked")]);

    let run = zkcoord(&endpoints, &["lease", "ttl", &id]).await;
    assert_eq!(run.code, Some(EX_NOINPUT), "{run:?}");
    assert_eq!(run.stderr.trim(), format!("error: lease ttl {id}: not found: lease not found"));
    assert!(run.stdout.is_empty());

    // A name zkcoord rejects, and a transfer with no leader.
    let run = zkcoord(&endpoints, &["candidates", "bad/name"]).await;
    assert_eq!(run.code, Some(EX_USAGE), "{run:?}");
    assert!(run.stderr.starts_with("error: candidates bad/name: invalid argument: "), "{run:?}");
    let run = zkcoord(&endpoints, &["leader", "transfer", "nobody-here"]).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.starts_with("error: leader transfer nobody-here: refused: "), "{run:?}");

    // Bad flags are usage errors.
    let run = zkcoord(&endpoints, &["lease", "grant", "--ttl", "soon", "--owner", "x"]).await;
    assert_eq!(run.code, Some(EX_USAGE), "{run:?}");
    assert!(run.stderr.contains("soon"), "{run:?}");
    instance.shutdown().await;
}

#[tokio::test]
async fn leader_watch_prints_each_change_and_stops_after_count() {
    let zk = support::zk::shared();
    let instance = support::start_zkcoord(&zk.hosts(), &support::namespace("cli-watch")).await;
    let endpoints = instance.addr().to_string();
    let client = Client::new([&endpoints]).unwrap();

    let mut watch = command()
        .args(["leader", "watch", "ledger", "--count", "3", "-o", "json", "--endpoints", &endpoints])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut next = async || -> Value {
        let line = tokio::time::timeout(WAIT, lines.next_line()).await.expect("an event in time").unwrap();
        serde_json::from_str(&line.expect("a line, not the end")).unwrap()
    };

    let first = next().await;
    assert_eq!(first["election"], "ledger");
    assert_eq!(first["sequence"], 1);
    assert!(first["leader"].is_null(), "{first}");

    let lease_a = LeaseKeeper::grant(&client, LeaseOptions::new("owner-a", Duration::from_secs(10))).await.unwrap();
    let mut node_a =
        LeaderElector::campaign(&client, &lease_a, CampaignOptions::new("ledger", "node-a")).await.unwrap();
    let Some(LeadershipEvent::BecameLeader { term, fencing_token }) = node_a.next().await else { panic!() };
    let second = next().await;
    assert_eq!(second["leader"]["candidate_id"], "node-a");
    assert_eq!(second["term"], term);
    assert_eq!(second["leader"]["fencing_token"], fencing_token.to_string());

    node_a.resign().await.unwrap();
    let third = next().await;
    assert!(third["leader"].is_null(), "{third}");
    let status = tokio::time::timeout(WAIT, watch.wait()).await.expect("watch exits after 3 events").unwrap();
    assert_eq!(status.code(), Some(0));

    // The table form: one sentence per change.
    let run = zkcoord(&endpoints, &["leader", "watch", "ledger", "--count", "1"]).await;
    assert_eq!(run.lines(), [format!("term {term}: election ledger has no leader")]);
    let mut node_b =
        LeaderElector::campaign(&client, &lease_a, CampaignOptions::new("ledger", "node-b")).await.unwrap();
    let Some(LeadershipEvent::BecameLeader { term, fencing_token }) = node_b.next().await else { panic!() };
    let run = zkcoord(&endpoints, &["leader", "watch", "ledger", "--count", "1"]).await;
    let line = run.lines()[0].to_owned();
    assert!(
        line.starts_with(&format!(
            "term {term}: node-b leads election ledger (priority 0, fencing token {fencing_token}, lease {}",
            lease_a.id()
        )),
        "{line}"
    );
    lease_a.revoke().await.unwrap();
    instance.shutdown().await;
}

// ---- shards ----

/// `shards members|show|watch|drain|undrain` against one instance and a group of two members,
/// one of which never releases (so its handoffs stay visible for its ttl + about a second);
/// no shard is valid for two members at any sampled moment.
#[tokio::test]
async fn shards_commands_show_members_ranges_handoffs_and_drain() {
    let zk = support::zk::shared();
    let instance = support::start_zkcoord(&zk.hosts(), &support::namespace("cli-shards")).await;
    let endpoints = instance.addr().to_string();
    let channel = support::channel(instance.addr()).await;
    let group = "flows";
    let d1 = Member::join(&channel, group, "d1", 8, 1, false).await;
    support::eventually(WAIT, "d1 owns all", || async { d1.valid().len() == 8 }).await;
    let d2 = Member::join(&channel, group, "d2", 8, 1, true).await;
    let stop = CancellationToken::new();
    let checker = check_exclusive(vec![d1.validity.clone(), d2.validity.clone()], stop.clone());
    support::eventually(WAIT, "4/4", || async { d1.valid().len() == 4 && d2.valid().len() == 4 }).await;
    let (epoch1, epoch2) = (d1.valid()[&0].to_string(), d2.valid()[&4].to_string());
    assert_eq!(d1.valid().keys().copied().collect::<Vec<_>>(), [0, 1, 2, 3], "sticky: d1 kept its lowest");

    // members
    let run = zkcoord(&endpoints, &["shards", "members", group]).await;
    let lines = run.lines();
    assert_eq!(header(lines[0]), ["MEMBER", "LEASE", "WEIGHT", "HEALTH", "DRAINED", "LEAVING", "OWNED", "LABELS"]);
    assert_eq!(cells(lines[1]), ["d1", &d1.lease_id.to_string(), "1", "SERVING", "no", "no", "4", "-"]);
    assert_eq!(cells(lines[2])[..1], ["d2"]);
    assert_eq!(lines.len(), 3, "{run:?}");
    let json = zkcoord(&endpoints, &["shards", "members", group, "-o", "json"]).await.json();
    assert_eq!(json["group"], group);
    assert_eq!(json["shard_count"], 8);
    assert_eq!(json["members"][0]["member_id"], "d1");
    assert_eq!(json["members"][0]["lease_id"], d1.lease_id.to_string());
    assert_eq!(json["members"][0]["owned"], 4);
    assert_eq!(json["members"][0]["health"]["status"], "SERVING");
    assert_eq!(json["members"][1]["drained"], false);
    assert_eq!(json["drained"], serde_json::json!([]));

    // show
    let run = zkcoord(&endpoints, &["shards", "show", group]).await;
    let lines = run.lines();
    assert_eq!(header(lines[0]), ["MEMBER", "HEALTH", "DRAINED", "LEAVING", "OWNED", "HANDING OFF", "SHARDS"]);
    assert_eq!(cells(lines[1]), ["d1", "SERVING", "no", "no", "4", "0", "0-3"]);
    assert_eq!(cells(lines[2]), ["d2", "SERVING", "no", "no", "4", "0", "4-7"]);
    assert_eq!(lines[3], "");
    assert_eq!(header(lines[4]), ["SHARDS", "STATE", "OWNER", "EPOCH", "TARGET"]);
    assert_eq!(cells(lines[5]), ["0-3", "OWNED", "d1", &epoch1, "-"]);
    assert_eq!(cells(lines[6]), ["4-7", "OWNED", "d2", &epoch2, "-"]);
    assert_eq!(lines.len(), 7, "{run:?}");
    let json = zkcoord(&endpoints, &["shards", "show", group, "-o", "json"]).await.json();
    assert_eq!(json["shard_count"], 8);
    assert_eq!((json["handing_off"].as_u64(), json["unassigned"].as_u64()), (Some(0), Some(0)), "{json}");
    assert_eq!(json["members"][0]["shards"], serde_json::json!([{ "first": 0, "last": 3, "epoch": epoch1 }]));
    assert_eq!(json["ranges"][1]["owner"], "d2");
    assert_eq!(json["ranges"][1]["state"], "OWNED");
    assert_eq!(json["ranges"][1]["epoch"], epoch2);

    // watch, then drain d1: its shards are handed off (it never releases), then d2 owns all.
    let mut watch = command()
        .args(["shards", "watch", group, "--count", "3", "-o", "json", "--endpoints", &endpoints])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut watched = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut next = async || -> Value {
        let line = tokio::time::timeout(WAIT, watched.next_line()).await.expect("a change in time").unwrap();
        serde_json::from_str(&line.expect("a line, not the end")).unwrap()
    };
    let first = next().await;
    assert_eq!(first["group"], group);
    assert_eq!(first["sequence"], 1);
    assert_eq!(first["ranges"].as_array().map(Vec::len), Some(2), "{first}");
    let run = zkcoord(&endpoints, &["shards", "drain", group, "d1"]).await;
    assert_eq!(run.lines(), ["member d1 of group flows drained"]);
    let second = next().await;
    let handing_off = &second["ranges"][0];
    assert_eq!(
        [&handing_off["state"], &handing_off["owner"], &handing_off["target"]],
        ["HANDING_OFF", "d1", "d2"],
        "{second}"
    );
    assert_eq!(handing_off["last"], 3, "{second}");
    // While the handoff runs (d1's ttl + about a second).
    let json = zkcoord(&endpoints, &["shards", "show", group, "-o", "json"]).await.json();
    if json["handing_off"] == 4 {
        assert_eq!(json["members"][0]["handing_off"], 4, "{json}");
        assert_eq!(json["members"][0]["drained"], true, "{json}");
        assert_eq!(json["members"][0]["owned"], 0, "{json}");
    } else {
        eprintln!("the handoff completed before `shards show` ran: {json}");
    }
    let third = next().await;
    let owners: Vec<(&Value, &Value)> =
        third["ranges"].as_array().unwrap().iter().map(|r| (&r["state"], &r["owner"])).collect();
    assert!(owners.iter().all(|(state, owner)| *state == "OWNED" && *owner == "d2"), "{third}");
    let status = tokio::time::timeout(WAIT, watch.wait()).await.expect("watch exits after 3 changes").unwrap();
    assert_eq!(status.code(), Some(0));
    support::eventually(WAIT, "d2 owns all", || async { d2.valid().len() == 8 && d1.valid().is_empty() }).await;
    let run = zkcoord(&endpoints, &["shards", "show", group]).await;
    assert_eq!(cells(run.lines()[1]), ["d1", "SERVING", "yes", "no", "0", "0", "-"], "{run:?}");

    // undrain: d2 releases at once, d1 gets its share back.
    let json = zkcoord(&endpoints, &["shards", "undrain", group, "d1", "-o", "json"]).await.json();
    assert_eq!(json, serde_json::json!({ "group": group, "member_id": "d1", "drained": false }));
    support::eventually(WAIT, "4/4 again", || async { d1.valid().len() == 4 && d2.valid().len() == 4 }).await;
    let run = zkcoord(&endpoints, &["shards", "watch", group, "--count", "1"]).await;
    let line = run.lines()[0].to_owned();
    assert!(line.starts_with("flows (8 shards): 0-3 d2 (epoch "), "{line}");
    assert!(line.contains("; 4-7 d1 (epoch "), "{line}");

    // A group that does not exist, a bad name.
    let run = zkcoord(&endpoints, &["shards", "show", "nothing-here"]).await;
    assert_eq!(run.code, Some(EX_NOINPUT), "{run:?}");
    assert_eq!(run.stderr.trim(), "error: shards show nothing-here: not found: shard group not found");
    let run = zkcoord(&endpoints, &["shards", "drain", "nothing-here", "d1"]).await;
    assert_eq!(run.code, Some(EX_NOINPUT), "{run:?}");
    let run = zkcoord(&endpoints, &["shards", "watch", "nothing-here", "--count", "1"]).await;
    assert_eq!(run.lines(), ["group nothing-here does not exist"]);
    let run = zkcoord(&endpoints, &["shards", "members", "bad/name"]).await;
    assert_eq!(run.code, Some(EX_USAGE), "{run:?}");

    stop.cancel();
    assert!(checker.await.unwrap() > 10);
    drop((d1, d2));
    instance.shutdown().await;
}

// ---- campaign ----

/// A `zkcoord campaign` process with its stderr in a file.
struct Campaign {
    child: tokio::process::Child,
    log: PathBuf,
}

impl Campaign {
    fn spawn(endpoints: &str, dir: &Path, id: &str, flags: &[&str], script: &str) -> Self {
        let log = dir.join(format!("{id}.log"));
        let child = command()
            .args(["campaign", "ledger-cli", "--endpoints", endpoints, "--id", id, "--ttl", "2s", "-o", "json"])
            .args(flags)
            .args(["--", "sh", "-c", script])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self { child, log }
    }

    fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }

    /// The campaign's progress events so far.
    fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill").args(["-s", signal, &self.pid().to_string()]).status().unwrap();
        assert!(status.success());
    }

    async fn exit_code(&mut self, timeout: Duration) -> Option<i32> {
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("campaign did not exit within {timeout:?}: {}", self.log()))
            .unwrap();
        status.code()
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

/// The command each campaign runs: appends its fencing token to `out`, writes its pid to
/// `pid`, and on SIGTERM appends `stopped` and exits.
fn worker(out: &Path, pid: &Path) -> String {
    format!(
        r#"echo "$ZKCOORD_FENCING_TOKEN" >> {out}; echo $$ > {pid}; trap 'echo stopped >> {out}; exit 0' TERM; while :; do sleep 0.1; done"#,
        out = out.display(),
        pid = pid.display()
    )
}

fn read(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_owned).collect()
}

fn tokens(path: &Path) -> Vec<u64> {
    read(path).iter().filter_map(|l| l.parse().ok()).collect()
}

/// Whether process `pid` is gone (or a zombie waiting to be reaped).
fn dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

fn pid_in(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

async fn eventually_file(what: &str, campaigns: &[&Campaign], probe: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !probe() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting until {what}; logs:\n{}",
            campaigns.iter().map(|c| c.log()).collect::<Vec<_>>().join("\n---\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn campaign_runs_the_command_only_while_leading() {
    let zk = support::zk::shared();
    let instance = support::start_zkcoord(&zk.hosts(), &support::namespace("cli-campaign")).await;
    let endpoints = instance.addr().to_string();
    let dir = tempfile::tempdir().unwrap();
    let (out_a, pid_a, out_b, pid_b) =
        (dir.path().join("a.out"), dir.path().join("a.pid"), dir.path().join("b.out"), dir.path().join("b.pid"));

    let mut a = Campaign::spawn(
        &endpoints,
        dir.path(),
        "node-a",
        &["--priority", "0", "--grace", "5s"],
        &worker(&out_a, &pid_a),
    );
    eventually_file("node-a runs its command", &[&a], || !tokens(&out_a).is_empty() && pid_in(&pid_a).is_some()).await;
    let mut b = Campaign::spawn(
        &endpoints,
        dir.path(),
        "node-b",
        &["--priority", "1", "--grace", "5s"],
        &worker(&out_b, &pid_b),
    );
    support::eventually(WAIT, "node-b is a candidate", || async {
        zkcoord(&endpoints, &["candidates", "ledger-cli", "-o", "json"]).await.json()["candidates"]
            .as_array()
            .is_some_and(|c| c.len() == 2)
    })
    .await;
    let json = zkcoord(&endpoints, &["candidates", "ledger-cli", "-o", "json"]).await.json();
    assert_eq!(json["candidates"][0]["candidate_id"], "node-a", "{json}");
    assert_eq!(json["candidates"][0]["leader"], true, "{json}");
    // Only the leader's command runs.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(read(&out_b).is_empty(), "node-b's command ran while node-a leads: {:?}", read(&out_b));
    let token_a = tokens(&out_a)[0];
    let json = zkcoord(&endpoints, &["leader", "get", "ledger-cli", "-o", "json"]).await.json();
    assert_eq!(json["leader"]["fencing_token"], token_a.to_string());

    // An operator transfer moves the command: node-a's is stopped, node-b's started.
    let json = zkcoord(&endpoints, &["leader", "transfer", "ledger-cli", "-o", "json"]).await.json();
    assert_eq!(json["leader"]["candidate_id"], "node-b", "{json}");
    eventually_file("node-b runs its command", &[&a, &b], || !tokens(&out_b).is_empty()).await;
    eventually_file("node-a's command stopped", &[&a, &b], || read(&out_a).last().is_some_and(|l| l == "stopped"))
        .await;
    let token_b = tokens(&out_b)[0];
    assert!(token_b > token_a, "{token_b} > {token_a}");
    assert!(a.running() && b.running());
    let stopped = a.events().into_iter().find(|e| e["event"] == "stopped").unwrap();
    assert_eq!(stopped["killed"], false, "{stopped}");

    // Killing node-b's campaign process with SIGKILL kills its command too, and node-a takes
    // over once node-b's lease has expired.
    let cmd_b = pid_in(&pid_b).unwrap();
    assert!(!dead(cmd_b));
    b.signal("KILL");
    assert_eq!(b.exit_code(WAIT).await, None);
    eventually_file("node-b's command died with its campaign", &[&a], || dead(cmd_b)).await;
    eventually_file("node-a runs its command again", &[&a], || tokens(&out_a).len() == 2).await;
    assert!(tokens(&out_a)[1] > token_b);

    // SIGTERM: node-a stops its command, resigns, revokes its lease and exits 0.
    let cmd_a = pid_in(&pid_a).unwrap();
    a.signal("TERM");
    assert_eq!(a.exit_code(WAIT).await, Some(0), "{}", a.log());
    assert!(dead(cmd_a));
    assert_eq!(read(&out_a).last().map(String::as_str), Some("stopped"));
    let events: Vec<String> = a.events().iter().map(|e| e["event"].as_str().unwrap().to_owned()).collect();
    assert_eq!(events.last().map(String::as_str), Some("resigned"), "{events:?}");
    let json = zkcoord(&endpoints, &["leader", "get", "ledger-cli", "-o", "json"]).await.json();
    assert!(json["leader"].is_null(), "{json}");
    let json = zkcoord(&endpoints, &["lease", "list", "-o", "json"]).await.json();
    assert_eq!(json["leases"], serde_json::json!([]), "node-a's lease is revoked, node-b's expired");
    instance.shutdown().await;
}

#[tokio::test]
async fn campaign_kills_a_command_that_ignores_sigterm_after_the_grace_period() {
    let zk = support::zk::shared();
    let instance = support::start_zkcoord(&zk.hosts(), &support::namespace("cli-grace")).await;
    let endpoints = instance.addr().to_string();
    let client = Client::new([&endpoints]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("stubborn.pid");

    let script = format!("trap '' TERM; echo $$ > {}; while :; do sleep 0.1; done", pid_file.display());
    let mut a = Campaign::spawn(&endpoints, dir.path(), "stubborn", &["--grace", "2s"], &script);
    eventually_file("the command runs", &[&a], || pid_in(&pid_file).is_some()).await;
    let cmd = pid_in(&pid_file).unwrap();

    // A second candidate, then a transfer to it.
    let lease = LeaseKeeper::grant(&client, LeaseOptions::new("other", Duration::from_secs(10))).await.unwrap();
    let mut other = LeaderElector::campaign(&client, &lease, CampaignOptions::new("ledger-cli", "other").priority(1))
        .await
        .unwrap();
    // The deposed campaign stops its command (SIGTERM, SIGKILL after the 2 s grace) and only
    // then acknowledges: the transfer completes, and "other" leads, after the command died.
    let deposed = Instant::now();
    let json = zkcoord(&endpoints, &["leader", "transfer", "ledger-cli", "--to", "other", "-o", "json"]).await.json();
    assert_eq!(json["leader"]["candidate_id"], "other", "{json}");
    assert!(dead(cmd), "the successor was elected while the old leader's command still ran");
    let took = deposed.elapsed();
    assert!(took >= Duration::from_millis(1500), "transfer done after {took:?}, before the 2 s grace period");
    assert!(matches!(tokio::time::timeout(WAIT, other.next()).await, Ok(Some(LeadershipEvent::BecameLeader { .. }))));
    eventually_file("the stop is reported", &[&a], || a.events().iter().any(|e| e["event"] == "stopped")).await;
    let stopped = a.events().into_iter().find(|e| e["event"] == "stopped").unwrap();
    assert_eq!(stopped["killed"], true, "{stopped}");
    assert_eq!(stopped["exit_code"], 128 + 9, "{stopped}");

    // The campaign goes on: still a candidate, and the command runs again when it leads.
    assert!(a.running());
    other.resign().await.unwrap();
    eventually_file("the command runs again", &[&a], || pid_in(&pid_file).is_some_and(|p| p != cmd)).await;
    a.signal("INT");
    assert_eq!(a.exit_code(WAIT).await, Some(0), "{}", a.log());
    lease.revoke().await.unwrap();
    instance.shutdown().await;
}

#[tokio::test]
async fn campaign_exits_with_the_code_of_a_command_that_ends_by_itself() {
    let zk = support::zk::shared();
    let instance = support::start_zkcoord(&zk.hosts(), &support::namespace("cli-exit")).await;
    let endpoints = instance.addr().to_string();
    let dir = tempfile::tempdir().unwrap();

    let mut a = Campaign::spawn(&endpoints, dir.path(), "short-lived", &[], "sleep 0.5; exit 7");
    assert_eq!(a.exit_code(WAIT).await, Some(7), "{}", a.log());
    let events: Vec<String> = a.events().iter().map(|e| e["event"].as_str().unwrap().to_owned()).collect();
    assert_eq!(events, ["campaigning", "elected", "exited", "resigned"], "{}", a.log());
    let json = zkcoord(&endpoints, &["candidates", "ledger-cli", "-o", "json"]).await.json();
    assert_eq!(json["candidates"], serde_json::json!([]), "resigned");
    let json = zkcoord(&endpoints, &["lease", "list", "-o", "json"]).await.json();
    assert_eq!(json["leases"], serde_json::json!([]), "revoked");

    // A command that does not exist: 127, as in a shell.
    let log = dir.path().join("missing.log");
    let status = command()
        .args(["campaign", "ledger-cli", "--endpoints", &endpoints, "--", "/nonexistent/command"])
        .stderr(std::fs::File::create(&log).unwrap())
        .status()
        .await
        .unwrap();
    assert_eq!(status.code(), Some(127), "{}", std::fs::read_to_string(&log).unwrap());

    // zkcoord unreachable: 69 at once, the command never started.
    let run = zkcoord(&closed_endpoint(), &["campaign", "ledger-cli", "--", "sh", "-c", "exit 3"]).await;
    assert_eq!(run.code, Some(EX_UNAVAILABLE), "{run:?}");
    assert!(run.stderr.contains("cannot reach zkcoord"), "{run:?}");
    instance.shutdown().await;
}
