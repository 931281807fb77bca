//! The `zkcoord` command line: subcommands and their flags.
//!
//! Flags are kept as strings here and validated in [`crate::config`], so that every invalid
//! setting is reported the same way (naming the setting, exit code 64) whether it came from a
//! flag, the environment or the config file.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::{config::RawSettings, ctl};

/// zkcoord: leases, leader election and soft locks over gRPC, backed by ZooKeeper.
#[derive(Debug, Parser)]
#[command(name = "zkcoord", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands: `serve` runs the service; the others are its clients (see [`crate::ctl`]).
// Parsed once per process: the size of the `serve` variant (all its flags as strings) costs
// nothing, boxing it would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the zkcoord gRPC API until SIGTERM or SIGINT.
    Serve(ServeArgs),
    /// Show, watch, resign or transfer an election's leader.
    Leader(ctl::LeaderArgs),
    /// List an election's candidates in election order.
    Candidates(ctl::CandidatesArgs),
    /// List, grant, revoke or describe leases.
    Lease(ctl::LeaseArgs),
    /// Show who holds and who waits for soft locks.
    Lock(ctl::LockArgs),
    /// Show, watch and drain shard groups.
    Shards(ctl::ShardsArgs),
    /// Check the grpc.health.v1 status of zkcoord instances (exit 0 only when all SERVING).
    Health(ctl::HealthArgs),
    /// Run a command only while leading an election; stop it when leadership is lost.
    Campaign(ctl::CampaignArgs),
    /// Internal to `campaign`: exec a command that dies with its parent.
    #[command(hide = true)]
    RunChild(ctl::RunChildArgs),
}

/// Flags of `zkcoord serve`. Each also reads `ZKCOORD_<NAME>` from the environment and
/// `<name>` from the config file, in that precedence.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML config file [env: ZKCOORD_CONFIG]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// gRPC listen address [env: ZKCOORD_LISTEN] [default: 127.0.0.1:7710]
    #[arg(long, value_name = "IP:PORT")]
    pub listen: Option<String>,
    /// ZooKeeper connect string with namespace [env: ZKCOORD_ZOOKEEPER]
    /// [default: 127.0.0.1:2181/zkcoord]
    #[arg(long, value_name = "HOST:PORT[,...][/NAMESPACE]")]
    pub zookeeper: Option<String>,
    /// ZooKeeper session timeout, e.g. 4s [env: ZKCOORD_SESSION_TIMEOUT] [default: 4s]
    #[arg(long, value_name = "DURATION")]
    pub session_timeout: Option<String>,
    /// Log filter, e.g. info or zkcoord=debug [env: ZKCOORD_LOG_LEVEL] [default: info]
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Log format: text or json [env: ZKCOORD_LOG_FORMAT] [default: text]
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Time streams get to drain at shutdown [env: ZKCOORD_SHUTDOWN_GRACE] [default: 10s]
    #[arg(long, value_name = "DURATION")]
    pub shutdown_grace: Option<String>,
    /// This instance's id [env: ZKCOORD_INSTANCE_ID] [default: hostname-pid-random]
    #[arg(long, value_name = "NAME")]
    pub instance_id: Option<String>,
    /// Prometheus endpoint (GET /metrics), or off [env: ZKCOORD_METRICS_LISTEN] [default: off]
    #[arg(long, value_name = "IP:PORT")]
    pub metrics_listen: Option<String>,
    /// Calls in progress per client connection [env: ZKCOORD_MAX_CALLS_PER_CONNECTION]
    /// [default: 1000]
    #[arg(long, value_name = "N")]
    pub max_calls_per_connection: Option<String>,
    /// Streams open at once per client connection [env: ZKCOORD_MAX_STREAMS_PER_CONNECTION]
    /// [default: 200]
    #[arg(long, value_name = "N")]
    pub max_streams_per_connection: Option<String>,
    /// Leases per tenant [env: ZKCOORD_MAX_LEASES_PER_TENANT] [default: 100000]
    #[arg(long, value_name = "N")]
    pub max_leases_per_tenant: Option<String>,
    /// Leases per client identity attached to this instance (mTLS) [env: ZKCOORD_MAX_LEASES_PER_IDENTITY] [default: 10000]
    #[arg(long, value_name = "N")]
    pub max_leases_per_identity: Option<String>,
    /// Candidacies per lease [env: ZKCOORD_MAX_CANDIDACIES_PER_LEASE] [default: 1000]
    #[arg(long, value_name = "N")]
    pub max_candidacies_per_lease: Option<String>,
    /// Lock requests (holds and queued) per lease [env: ZKCOORD_MAX_LOCK_REQUESTS_PER_LEASE] [default: 10000]
    #[arg(long, value_name = "N")]
    pub max_lock_requests_per_lease: Option<String>,
    /// Observe and Watch streams open at once on this instance [env: ZKCOORD_MAX_OBSERVE_STREAMS] [default: 10000]
    #[arg(long, value_name = "N")]
    pub max_observe_streams: Option<String>,
    /// Elections this instance follows at once [env: ZKCOORD_MAX_WATCHED_ELECTIONS] [default: 10000]
    #[arg(long, value_name = "N")]
    pub max_watched_elections: Option<String>,
    /// Connections per client identity (mTLS) [env: ZKCOORD_MAX_CONNECTIONS_PER_IDENTITY] [default: 100]
    #[arg(long, value_name = "N")]
    pub max_connections_per_identity: Option<String>,
    /// Grants per second per tenant and client identity; past it a Grant waits for its turn up
    /// to a second, then is refused [env: ZKCOORD_MAX_GRANTS_PER_SECOND] [default: 200]
    #[arg(long, value_name = "N")]
    pub max_grants_per_second: Option<String>,
    /// Health writes to ZooKeeper per lease per second; changes reported faster are coalesced
    /// (the latest wins) [env: ZKCOORD_HEALTH_WRITES_PER_SECOND] [default: 2]
    #[arg(long, value_name = "N")]
    pub health_writes_per_second: Option<String>,
    /// Server certificate chain (PEM); turns on TLS [env: ZKCOORD_TLS_CERT]
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<String>,
    /// Server private key (PEM) [env: ZKCOORD_TLS_KEY]
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<String>,
    /// CA bundle (PEM) client certificates must chain to; turns on mTLS
    /// [env: ZKCOORD_TLS_CLIENT_CA]
    #[arg(long, value_name = "FILE")]
    pub tls_client_ca: Option<String>,
    /// Rules mapping client identities to election names and lock keys (TOML)
    /// [env: ZKCOORD_AUTHZ_FILE]
    #[arg(long, value_name = "FILE")]
    pub authz_file: Option<String>,
    /// File holding the ZooKeeper credentials, digest:<user>:<password>
    /// [env: ZKCOORD_ZOOKEEPER_AUTH_FILE; the credentials themselves: ZKCOORD_ZOOKEEPER_AUTH]
    /// [default: none, unauthenticated]
    #[arg(long, value_name = "FILE")]
    pub zookeeper_auth_file: Option<String>,
    /// Tenants clients may name in the zkcoord-tenant header, comma-separated
    /// [env: ZKCOORD_TENANTS] [default: none, only the default tenant]
    #[arg(long, value_name = "NAME[,NAME...]")]
    pub tenants: Option<String>,
}

impl ServeArgs {
    /// Splits the flags into the config file path and the flag-level settings.
    pub fn into_settings(self) -> (Option<PathBuf>, RawSettings) {
        let settings = RawSettings {
            listen: self.listen,
            zookeeper: self.zookeeper,
            session_timeout: self.session_timeout,
            log_level: self.log_level,
            log_format: self.log_format,
            shutdown_grace: self.shutdown_grace,
            instance_id: self.instance_id,
            metrics_listen: self.metrics_listen,
            max_calls_per_connection: self.max_calls_per_connection,
            max_streams_per_connection: self.max_streams_per_connection,
            max_leases_per_tenant: self.max_leases_per_tenant,
            max_leases_per_identity: self.max_leases_per_identity,
            max_candidacies_per_lease: self.max_candidacies_per_lease,
            max_lock_requests_per_lease: self.max_lock_requests_per_lease,
            max_observe_streams: self.max_observe_streams,
            max_watched_elections: self.max_watched_elections,
            max_connections_per_identity: self.max_connections_per_identity,
            max_grants_per_second: self.max_grants_per_second,
            health_writes_per_second: self.health_writes_per_second,
            tls_cert: self.tls_cert,
            tls_key: self.tls_key,
            tls_client_ca: self.tls_client_ca,
            authz_file: self.authz_file,
            zookeeper_auth: None,
            zookeeper_auth_file: self.zookeeper_auth_file,
            tenants: self.tenants,
        };
        (self.config, settings)
    }
}
