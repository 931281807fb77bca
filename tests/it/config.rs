//! `zkcoord serve` configuration errors (exit code 64, the setting named) and graceful
//! shutdown on SIGTERM, on the built binary.

#![allow(clippy::unwrap_used)]

use crate::support;

use std::{process::Stdio, time::Duration};

use support::{ZkcoordProcess, zk, zkcoord_command};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

const EX_USAGE: i32 = 64;

/// Runs `zkcoord` with `args` and `env`, expecting it to exit at once; returns (code, stderr).
fn run(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = zkcoord_command();
    cmd.args(args).env_remove("ZKCOORD_CONFIG").stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run zkcoord");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn bad_flag_value_exits_64_naming_the_flag() {
    let (code, stderr) = run(&["serve", "--listen", "not-an-address"], &[]);
    assert_eq!(code, Some(EX_USAGE), "{stderr}");
    assert!(stderr.contains("`listen`") && stderr.contains("--listen"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one-line error: {stderr}");
}

#[test]
fn bad_environment_value_exits_64_naming_the_variable() {
    let (code, stderr) = run(&["serve"], &[("ZKCOORD_SESSION_TIMEOUT", "ten seconds")]);
    assert_eq!(code, Some(EX_USAGE), "{stderr}");
    assert!(stderr.contains("ZKCOORD_SESSION_TIMEOUT"), "{stderr}");
    let (code, stderr) = run(&["serve"], &[("ZKCOORD_ZOOKEEPER", "127.0.0.1:2181/../etc")]);
    assert_eq!(code, Some(EX_USAGE), "{stderr}");
    assert!(stderr.contains("`zookeeper`"), "{stderr}");
    let (code, stderr) = run(&["serve"], &[("ZKCOORD_METRICS_LISTEN", "port 9710")]);
    assert_eq!(code, Some(EX_USAGE), "{stderr}");
    assert!(stderr.contains("`metrics_listen`") && stderr.contains("ZKCOORD_METRICS_LISTEN"), "{stderr}");
    let (code, stderr) = run(&["serve", "--max-calls-per-connection", "0"], &[]);
    assert_eq!(code, Some(EX_USAGE), "{stderr}");
    assert!(stderr.contains("`max_calls_per_connection`"), "{stderr}");
}

#[test]
fn flag_takes_precedence_over_environment() {
    // The environment value is invalid, the flag valid-but-bad in another way: the error must
    // be about the flag, proving the flag was the one used.
    let (code, stderr) = run(&["serve", "--log-format", "xml"], &[("ZKCOORD_LOG_FORMAT", "yaml")]);
    assert_eq!(code, Some(EX_USAGE), "{stderr}");
    assert!(stderr.contains("--log-format") && stderr.contains("xml"), "{stderr}");
}

#[test]
fn bad_config_file_exits_64_naming_the_setting_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("zkcoord.toml");
    std::fs::write(&file, "zookeeper = \"no-port-here\"\n").unwrap();
    let (code, stderr) = run(&["serve", "--config", file.to_str().unwrap()], &[]);
    assert_eq!(code, Some(EX_USAGE), "{stderr}");
    assert!(stderr.contains("`zookeeper`") && stderr.contains("zkcoord.toml"), "{stderr}");

    std::fs::write(&file, "listen = \"127.0.0.1:7710\"\nlisten_port = \"1\"\n").unwrap();
    let (code, stderr) = run(&["serve"], &[("ZKCOORD_CONFIG", file.to_str().unwrap())]);
    assert_eq!(code, Some(EX_USAGE), "{stderr}");
    assert!(stderr.contains("listen_port"), "{stderr}");

    let (code, stderr) = run(&["serve", "--config", "/nonexistent/zkcoord.toml"], &[]);
    assert_eq!(code, Some(EX_USAGE), "{stderr}");
    assert!(stderr.contains("`config`"), "{stderr}");
}

#[test]
fn unknown_flag_exits_64() {
    let (code, stderr) = run(&["serve", "--colour", "blue"], &[]);
    assert_eq!(code, Some(EX_USAGE), "{stderr}");
    let (code, _) = run(&["--help"], &[]);
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn sigterm_turns_health_not_serving_and_exits_cleanly() {
    let zk = zk::shared();
    let mut process = ZkcoordProcess::spawn(&format!("{}{}", zk.hosts(), support::namespace("sigterm")), &[]);
    let channel = support::channel(process.addr).await;
    support::eventually(Duration::from_secs(30), "zkcoord reports SERVING", || async {
        support::health(&channel, "").await == ServingStatus::Serving
    })
    .await;
    let mut watch = HealthClient::new(channel.clone())
        .watch(HealthCheckRequest { service: "zkcoord.v1.Lease".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(watch.message().await.unwrap().unwrap().status(), ServingStatus::Serving);

    process.signal(libc::SIGTERM);
    // The watch must see NOT_SERVING before the stream ends: load balancers drain first.
    let next = tokio::time::timeout(Duration::from_secs(10), watch.message()).await.expect("health watch answers");
    assert_eq!(next.unwrap().unwrap().status(), ServingStatus::NotServing);
    let code = tokio::task::spawn_blocking(move || process.wait_exit(Duration::from_secs(15))).await.unwrap();
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn keeps_serving_when_the_otlp_collector_does_not_answer() {
    let zk = zk::shared();
    // Nothing listens on this port: every span export fails.
    let dead_collector = format!("http://127.0.0.1:{}", zk::free_ports(1)[0]);
    let target = format!("{}{}", zk.hosts(), support::namespace("otlp"));
    let mut process = ZkcoordProcess::spawn_with_env(
        &target,
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &dead_collector),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"), // export attempts during the test, not after it
        ],
    );
    support::wait_serving(process.addr).await;
    let channel = support::channel(process.addr).await;
    for _ in 0..20 {
        // Every call is a span the exporter fails to deliver; calls keep working.
        let granted = support::lease::grant(&channel, "otlp-test", Duration::from_secs(5)).await;
        assert!(granted.lease_id > 0);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(support::health(&channel, "").await, ServingStatus::Serving);
    process.signal(libc::SIGTERM);
    let code = tokio::task::spawn_blocking(move || process.wait_exit(Duration::from_secs(15))).await.unwrap();
    assert_eq!(code, Some(0));
}
