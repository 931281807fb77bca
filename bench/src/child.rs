//! The hidden subcommands the bench re-executes itself with, so that each server runs in a
//! process of its own (its CPU time and memory measured apart from the load generator's):
//! `__serve-zkcoord <zk hosts> <namespace> [setting=value ...]` and `__serve-floor`. Each prints
//! `listening on <addr>` once serving and exits when its stdin closes (the bench ended). The
//! zkcoord instance also answers a `breakdown` line on its stdin with one JSON line on its
//! stdout: its spans' times since the last one ([`crate::breakdown`]).

use std::{
    io::{BufRead, Read, Write},
    process::ExitCode,
    time::Duration,
};

use zkcoord::{
    config::{
        Config, DEFAULT_HEALTH_WRITES_PER_SECOND, DEFAULT_MAX_CALLS_PER_CONNECTION, DEFAULT_MAX_STREAMS_PER_CONNECTION,
        DEFAULT_SESSION_TIMEOUT, LogFormat, ZkConfig,
    },
    server,
};

/// zkcoord's production defaults, but on a free loopback port and logging to stderr (at
/// `$ZKCOORD_BENCH_LOG_LEVEL`, a tracing filter, or `info`).
fn zkcoord_config(hosts: &str, namespace: &str) -> Config {
    Config {
        listen: ([127, 0, 0, 1], 0).into(),
        zookeeper: ZkConfig {
            hosts: hosts.to_owned(),
            namespace: namespace.to_owned(),
            session_timeout: DEFAULT_SESSION_TIMEOUT,
            auth: None,
            tenants: Vec::new(),
        },
        log_level: std::env::var("ZKCOORD_BENCH_LOG_LEVEL").unwrap_or_else(|_| "info".into()),
        log_format: LogFormat::Text,
        shutdown_grace: Duration::from_secs(1),
        instance_id: format!("bench-{}", std::process::id()),
        metrics_listen: None,
        max_calls_per_connection: DEFAULT_MAX_CALLS_PER_CONNECTION.parse().expect("a number"),
        max_streams_per_connection: DEFAULT_MAX_STREAMS_PER_CONNECTION.parse().expect("a number"),
        quotas: zkcoord::config::Quotas::default(),
        health_writes_per_second: DEFAULT_HEALTH_WRITES_PER_SECOND.parse().expect("a number"),
        tls: None,
        authz: None,
    }
}

/// Answers `breakdown` lines on stdin with `times`' sums, until stdin reaches end of file (the
/// bench closed it or died).
fn answer_until_stdin_closed(times: &crate::breakdown::SpanTimes) {
    let mut out = std::io::stdout();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { return };
        if line.trim() == "breakdown" {
            let breakdown = crate::breakdown::Breakdown::from(times.take());
            let json = serde_json::to_string(&breakdown).unwrap_or_else(|_| "{}".into());
            let _ = writeln!(out, "{json}");
            let _ = out.flush();
        }
    }
}

/// zkcoord's text logs at `log_level` (as `zkcoord::telemetry::init`, without OTLP), and `times`.
fn init_tracing(log_level: &str, times: crate::breakdown::SpanTimes) -> Result<(), String> {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_new(log_level).map_err(|e| e.to_string())?;
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_ansi(false).with_writer(std::io::stderr))
        .with(times)
        .try_init()
        .map_err(|e| e.to_string())
}

/// Blocks until stdin reaches end of file (the bench closed it or died).
fn wait_stdin_closed() {
    let mut sink = [0u8; 64];
    let mut stdin = std::io::stdin();
    while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
}

fn announce(addr: std::net::SocketAddr) {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "listening on {addr}");
    let _ = out.flush();
}

/// Applies `setting=value` overrides (the abuse scenario's instance): `tenants` (comma-separated)
/// and the quotas `max_leases_per_tenant`, `max_observe_streams`, `max_watched_elections`,
/// `max_grants_per_second`.
fn apply_settings(config: &mut Config, settings: &[String]) -> Result<(), String> {
    for setting in settings {
        let (key, value) = setting.split_once('=').ok_or_else(|| format!("not setting=value: {setting:?}"))?;
        let number = || value.parse::<usize>().map_err(|e| format!("{key}: {e}"));
        match key {
            "tenants" => config.zookeeper.tenants = value.split(',').map(str::to_owned).collect(),
            "max_leases_per_tenant" => config.quotas.leases_per_tenant = number()?,
            "max_observe_streams" => config.quotas.observe_streams = number()?,
            "max_watched_elections" => config.quotas.watched_elections = number()?,
            "max_grants_per_second" => config.quotas.grants_per_second = number()?,
            _ => return Err(format!("unknown setting {key:?}")),
        }
    }
    Ok(())
}

/// `__serve-zkcoord`: one zkcoord instance, as `zkcoord serve` runs it, with `settings`
/// (`setting=value`) applied over the defaults.
pub fn serve_zkcoord(hosts: &str, namespace: &str, settings: &[String]) -> ExitCode {
    let mut config = zkcoord_config(hosts, namespace);
    if let Err(err) = apply_settings(&mut config, settings) {
        eprintln!("zkcoord: {err}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("zkcoord: runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let times = crate::breakdown::SpanTimes::default();
        if let Err(err) = init_tracing(&config.log_level, times.clone()) {
            eprintln!("zkcoord: tracing: {err}");
            return ExitCode::FAILURE;
        }
        let instance = match server::start(config).await {
            Ok(instance) => instance,
            Err(err) => {
                eprintln!("zkcoord: start: {err}");
                return ExitCode::FAILURE;
            }
        };
        if let Err(err) = instance.session().wait_connected(Duration::from_secs(30)).await {
            eprintln!("zkcoord: zookeeper: {err}");
            return ExitCode::FAILURE;
        }
        announce(instance.addr());
        let _ = tokio::task::spawn_blocking(move || answer_until_stdin_closed(&times)).await;
        instance.shutdown().await;
        ExitCode::SUCCESS
    })
}

/// `__serve-floor`: a bare tonic server with nothing but `grpc.health.v1`, configured like
/// zkcoord's (the overhead floor).
pub fn serve_floor() -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("floor: runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let listener = match tokio::net::TcpListener::bind(("127.0.0.1", 0)).await {
            Ok(listener) => listener,
            Err(err) => {
                eprintln!("floor: bind: {err}");
                return ExitCode::FAILURE;
            }
        };
        let Ok(addr) = listener.local_addr() else { return ExitCode::FAILURE };
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
        let serve = tonic::transport::Server::builder().add_service(health).serve_with_incoming(
            tokio_stream::StreamExt::map(tokio_stream::wrappers::TcpListenerStream::new(listener), |accepted| {
                if let Ok(stream) = &accepted {
                    let _ = stream.set_nodelay(true); // as zkcoord does
                }
                accepted
            }),
        );
        announce(addr);
        tokio::select! {
            result = serve => {
                eprintln!("floor: server stopped: {result:?}");
                ExitCode::FAILURE
            }
            _ = tokio::task::spawn_blocking(wait_stdin_closed) => ExitCode::SUCCESS,
        }
    })
}
