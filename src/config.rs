//! Typed configuration of `zkcoord serve`.
//!
//! Every setting comes from, in this precedence: a command-line flag, a `ZKCOORD_*`
//! environment variable, the optional TOML file (`--config` / `ZKCOORD_CONFIG`), the default.
//! Invalid configuration is a [`ConfigError`] that names the setting and where its value came
//! from; `main` prints it on one line and exits with [`EX_USAGE`].
//!
//! Parsing and validating settings happens here; the typed settings of a layer live with that
//! layer ([`ZkConfig`] and [`ZkAuth`] in `zk`, [`TlsConfig`] in `tls`, [`Authz`] in `authz`),
//! re-exported here, so that no layer below depends on this module.

use std::{
    collections::BTreeMap,
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

pub use crate::limits::{MAX_QUOTA, Quotas};
pub use crate::{
    authz::Authz,
    tls::TlsConfig,
    zk::{ZkAuth, ZkConfig},
};
use crate::{limits, validate::Name};

/// Exit code for invalid configuration or usage (BSD `sysexits.h` `EX_USAGE`).
pub const EX_USAGE: i32 = 64;
/// Default gRPC listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7710";
/// Default ZooKeeper connect string.
pub const DEFAULT_ZOOKEEPER: &str = "127.0.0.1:2181/zkcoord";
/// Namespace used when the connect string names no chroot.
pub const DEFAULT_NAMESPACE: &str = "/zkcoord";
/// Default ZooKeeper session timeout.
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(4);
/// Shortest accepted session timeout.
pub const MIN_SESSION_TIMEOUT: Duration = Duration::from_millis(500);
/// Longest accepted session timeout.
pub const MAX_SESSION_TIMEOUT: Duration = Duration::from_secs(120);
/// Default log filter (a `tracing_subscriber::EnvFilter` directive).
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// Default time given to streams to drain at shutdown.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Calls in progress one client connection may have by default: far more than a client
/// needs (a Lock waiting for its keys counts; an open stream does not), far fewer than would
/// let one connection exhaust the instance.
pub const DEFAULT_MAX_CALLS_PER_CONNECTION: &str = "1000";
/// Streams open at once one client connection may have by default (HTTP/2
/// `SETTINGS_MAX_CONCURRENT_STREAMS`; hyper's own default, which tonic removes): every call is
/// a stream, and a client holds a few per lease (KeepAlive, Campaign, Observe).
pub const DEFAULT_MAX_STREAMS_PER_CONNECTION: &str = "200";
/// Health writes per second one lease may cause by default (see `recipe::lease::local`): a
/// client flapping its health costs ZooKeeper at most this many writes a second, and a health
/// change waits at most `1 s / this` for its write.
pub const DEFAULT_HEALTH_WRITES_PER_SECOND: &str = "2";
/// Most health writes per second per lease accepted.
pub const MAX_HEALTH_WRITES_PER_SECOND: u32 = 100;

/// Longest accepted instance id.
pub const MAX_INSTANCE_ID_LEN: usize = 64;
/// The most tenants one deployment may configure: each costs every instance a registration, a
/// janitor and a few ZooKeeper round trips whenever its session is (re-)established.
pub const MAX_TENANTS: usize = 256;

/// The resolved configuration of one zkcoord instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Address the gRPC server listens on.
    pub listen: SocketAddr,
    /// How to reach ZooKeeper.
    pub zookeeper: ZkConfig,
    /// Log filter directive, e.g. `info` or `zkcoord=debug,info`.
    pub log_level: String,
    /// Log output format.
    pub log_format: LogFormat,
    /// How long streams get to drain at shutdown before the server closes.
    pub shutdown_grace: Duration,
    /// This instance's id, unique among the instances serving one namespace.
    pub instance_id: String,
    /// Where the Prometheus endpoint (`GET /metrics`) listens; `None`: no endpoint.
    pub metrics_listen: Option<SocketAddr>,
    /// Calls in progress one client connection may have; more get RESOURCE_EXHAUSTED.
    pub max_calls_per_connection: usize,
    /// Streams (calls of any kind, open streams included) one client connection may have open
    /// at once, advertised as HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`: a client waits for a
    /// stream to end before it opens one more.
    pub max_streams_per_connection: u32,
    /// What one tenant, identity, lease or the whole instance may hold (see [`Quotas`]).
    pub quotas: Quotas,
    /// Writes of one lease's health to ZooKeeper per second, at most; changes reported
    /// meanwhile are coalesced (the latest wins).
    pub health_writes_per_second: u32,
    /// TLS for the gRPC listener; `None`: plaintext.
    pub tls: Option<TlsConfig>,
    /// Which election names and lock keys each client identity may use; `None`: all.
    pub authz: Option<Authz>,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Unresolved setting values from one source (flags or the TOML file), all optional strings.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSettings {
    /// gRPC listen address, `ip:port`.
    pub listen: Option<String>,
    /// ZooKeeper connect string, `host:port[,host:port...][/namespace]`.
    pub zookeeper: Option<String>,
    /// ZooKeeper session timeout, e.g. `6s` or `4000ms`.
    pub session_timeout: Option<String>,
    /// Log filter directive.
    pub log_level: Option<String>,
    /// `text` or `json`.
    pub log_format: Option<String>,
    /// Shutdown drain period, e.g. `10s`.
    pub shutdown_grace: Option<String>,
    /// Instance id (a name); generated when absent.
    pub instance_id: Option<String>,
    /// Prometheus endpoint address, `ip:port`, or `off`.
    pub metrics_listen: Option<String>,
    /// Calls in progress per client connection, 1 to 100000.
    pub max_calls_per_connection: Option<String>,
    /// Streams open at once per client connection, 1 to 100000.
    pub max_streams_per_connection: Option<String>,
    /// Leases per tenant, 1 to 10000000.
    pub max_leases_per_tenant: Option<String>,
    /// Leases per client identity attached to this instance (mTLS), 1 to 10000000.
    pub max_leases_per_identity: Option<String>,
    /// Candidacies per lease, 1 to 10000000.
    pub max_candidacies_per_lease: Option<String>,
    /// Lock requests (holds and queued) per lease, 1 to 10000000.
    pub max_lock_requests_per_lease: Option<String>,
    /// Observe and Watch streams open at once on this instance, 1 to 10000000.
    pub max_observe_streams: Option<String>,
    /// Elections this instance follows at once, 1 to 10000000.
    pub max_watched_elections: Option<String>,
    /// Connections per client identity (mTLS), 1 to 10000000.
    pub max_connections_per_identity: Option<String>,
    /// Grants per second per tenant and client identity, 1 to 10000000.
    pub max_grants_per_second: Option<String>,
    /// Health writes per lease per second, 1 to 100.
    pub health_writes_per_second: Option<String>,
    /// Server certificate chain, PEM file.
    pub tls_cert: Option<String>,
    /// Server private key, PEM file.
    pub tls_key: Option<String>,
    /// CA bundle for client certificates, PEM file; turns on mTLS.
    pub tls_client_ca: Option<String>,
    /// Identity → election/lock name rules, TOML file.
    pub authz_file: Option<String>,
    /// ZooKeeper credentials, `digest:<user>:<password>` (environment or file; no flag).
    pub zookeeper_auth: Option<String>,
    /// A file holding the ZooKeeper credentials, `digest:<user>:<password>`.
    pub zookeeper_auth_file: Option<String>,
    /// The tenants clients may name in the `zkcoord-tenant` header, comma-separated.
    pub tenants: Option<String>,
}

/// Where a setting's value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A command-line flag.
    Flag,
    /// An environment variable.
    Env,
    /// The TOML config file.
    File(PathBuf),
    /// The built-in default.
    Default,
}

/// Invalid configuration: which setting, from where, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The setting's name, as in the TOML file (`listen`, `zookeeper`, ...).
    pub setting: &'static str,
    /// Where the bad value came from.
    pub source: Source,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flag = self.setting.replace('_', "-");
        let env = env_name(self.setting);
        match &self.source {
            Source::Flag => write!(f, "invalid setting `{}` (flag --{flag}): {}", self.setting, self.message),
            Source::Env => {
                write!(f, "invalid setting `{}` (environment variable {env}): {}", self.setting, self.message)
            }
            Source::File(path) => {
                write!(f, "invalid setting `{}` (config file {}): {}", self.setting, path.display(), self.message)
            }
            Source::Default => write!(f, "invalid setting `{}`: {}", self.setting, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

fn env_name(setting: &str) -> String {
    format!("ZKCOORD_{}", setting.to_ascii_uppercase())
}

impl Config {
    /// Resolves the configuration from flags, the environment (through `env`) and the config
    /// file named by `config_file` (flag) or `ZKCOORD_CONFIG`.
    ///
    /// # Errors
    /// A [`ConfigError`] for the first invalid setting, or for an unreadable or malformed file
    /// (setting `config`).
    pub fn resolve(
        flags: RawSettings,
        config_file: Option<PathBuf>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let (file_settings, file_path) = match config_file
            .map(|p| (p, Source::Flag))
            .or_else(|| env("ZKCOORD_CONFIG").map(|p| (PathBuf::from(p), Source::Env)))
        {
            Some((path, source)) => (load_file(&path, source)?, Some(path)),
            None => (RawSettings::default(), None),
        };
        let pick = |setting: &'static str, flag: Option<String>, file: Option<String>| -> Option<(String, Source)> {
            flag.map(|v| (v, Source::Flag))
                .or_else(|| env(&env_name(setting)).map(|v| (v, Source::Env)))
                .or_else(|| file.map(|v| (v, Source::File(file_path.clone().unwrap_or_default()))))
        };
        let setting = |setting: &'static str, flag: Option<String>, file: Option<String>, default: &str| {
            pick(setting, flag, file).unwrap_or_else(|| (default.to_owned(), Source::Default))
        };
        let fail = |setting: &'static str, source: Source, message: String| ConfigError { setting, source, message };

        let (v, src) = setting("listen", flags.listen, file_settings.listen, DEFAULT_LISTEN);
        let listen = v.parse::<SocketAddr>().map_err(|_| {
            fail("listen", src, format!("{v:?} is not an address of the form ip:port, e.g. 127.0.0.1:7710"))
        })?;

        let (v, src) = setting("session_timeout", flags.session_timeout, file_settings.session_timeout, "4s");
        let session_timeout = parse_duration(&v).map_err(|m| fail("session_timeout", src.clone(), m))?;
        if !(MIN_SESSION_TIMEOUT..=MAX_SESSION_TIMEOUT).contains(&session_timeout) {
            return Err(fail("session_timeout", src, "must be from 500ms to 120s".into()));
        }

        let (v, src) = setting("zookeeper", flags.zookeeper, file_settings.zookeeper, DEFAULT_ZOOKEEPER);
        let (hosts, namespace) = parse_connect_string(&v).map_err(|m| fail("zookeeper", src, m))?;

        let (log_level, src) = setting("log_level", flags.log_level, file_settings.log_level, DEFAULT_LOG_LEVEL);
        if let Err(err) = tracing_subscriber::EnvFilter::try_new(&log_level) {
            return Err(fail("log_level", src, format!("{log_level:?} is not a log filter: {err}")));
        }

        let (v, src) = setting("log_format", flags.log_format, file_settings.log_format, "text");
        let log_format = match v.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            _ => return Err(fail("log_format", src, format!("{v:?} is not one of text, json"))),
        };

        let (v, src) = setting("shutdown_grace", flags.shutdown_grace, file_settings.shutdown_grace, "10s");
        let shutdown_grace = parse_duration(&v).map_err(|m| fail("shutdown_grace", src, m))?;

        let instance_id = match pick("instance_id", flags.instance_id, file_settings.instance_id) {
            Some((id, src)) => {
                if id.len() > MAX_INSTANCE_ID_LEN || Name::parse("instance_id", &id).is_err() {
                    return Err(fail(
                        "instance_id",
                        src,
                        "must be 1 to 64 ASCII letters, digits and . _ - : @, starting with a letter or digit".into(),
                    ));
                }
                id
            }
            None => generated_instance_id(),
        };

        let (v, src) = setting("metrics_listen", flags.metrics_listen, file_settings.metrics_listen, "off");
        let metrics_listen = match v.as_str() {
            "off" | "" => None,
            _ => Some(v.parse::<SocketAddr>().map_err(|_| {
                fail(
                    "metrics_listen",
                    src,
                    format!("{v:?} is not off or an address of the form ip:port, e.g. 0.0.0.0:9710"),
                )
            })?),
        };

        let (v, src) = setting(
            "max_calls_per_connection",
            flags.max_calls_per_connection,
            file_settings.max_calls_per_connection,
            DEFAULT_MAX_CALLS_PER_CONNECTION,
        );
        let max_calls_per_connection = match v.parse::<usize>() {
            Ok(n) if (1..=100_000).contains(&n) => n,
            _ => return Err(fail("max_calls_per_connection", src, format!("{v:?} is not a number from 1 to 100000"))),
        };

        let (v, src) = setting(
            "max_streams_per_connection",
            flags.max_streams_per_connection,
            file_settings.max_streams_per_connection,
            DEFAULT_MAX_STREAMS_PER_CONNECTION,
        );
        let max_streams_per_connection = match v.parse::<u32>() {
            Ok(n) if (1..=100_000).contains(&n) => n,
            _ => {
                return Err(fail("max_streams_per_connection", src, format!("{v:?} is not a number from 1 to 100000")));
            }
        };

        let quota = |setting_name: &'static str, flag: Option<String>, file: Option<String>, default: usize| {
            let (v, src) = pick(setting_name, flag, file).unwrap_or_else(|| (default.to_string(), Source::Default));
            match v.parse::<usize>() {
                Ok(n) if (1..=MAX_QUOTA).contains(&n) => Ok(n),
                _ => Err(fail(setting_name, src, format!("{v:?} is not a number from 1 to {MAX_QUOTA}"))),
            }
        };
        let quotas = Quotas {
            leases_per_tenant: quota(
                "max_leases_per_tenant",
                flags.max_leases_per_tenant,
                file_settings.max_leases_per_tenant,
                limits::DEFAULT_LEASES_PER_TENANT,
            )?,
            leases_per_identity: quota(
                "max_leases_per_identity",
                flags.max_leases_per_identity,
                file_settings.max_leases_per_identity,
                limits::DEFAULT_LEASES_PER_IDENTITY,
            )?,
            candidacies_per_lease: quota(
                "max_candidacies_per_lease",
                flags.max_candidacies_per_lease,
                file_settings.max_candidacies_per_lease,
                limits::DEFAULT_CANDIDACIES_PER_LEASE,
            )?,
            lock_requests_per_lease: quota(
                "max_lock_requests_per_lease",
                flags.max_lock_requests_per_lease,
                file_settings.max_lock_requests_per_lease,
                limits::DEFAULT_LOCK_REQUESTS_PER_LEASE,
            )?,
            observe_streams: quota(
                "max_observe_streams",
                flags.max_observe_streams,
                file_settings.max_observe_streams,
                limits::DEFAULT_OBSERVE_STREAMS,
            )?,
            watched_elections: quota(
                "max_watched_elections",
                flags.max_watched_elections,
                file_settings.max_watched_elections,
                limits::DEFAULT_WATCHED_ELECTIONS,
            )?,
            connections_per_identity: quota(
                "max_connections_per_identity",
                flags.max_connections_per_identity,
                file_settings.max_connections_per_identity,
                limits::DEFAULT_CONNECTIONS_PER_IDENTITY,
            )?,
            grants_per_second: quota(
                "max_grants_per_second",
                flags.max_grants_per_second,
                file_settings.max_grants_per_second,
                limits::DEFAULT_GRANTS_PER_SECOND,
            )?,
        };
        let (v, src) = setting(
            "health_writes_per_second",
            flags.health_writes_per_second,
            file_settings.health_writes_per_second,
            DEFAULT_HEALTH_WRITES_PER_SECOND,
        );
        let health_writes_per_second = match v.parse::<u32>() {
            Ok(n) if (1..=MAX_HEALTH_WRITES_PER_SECOND).contains(&n) => n,
            _ => return Err(fail("health_writes_per_second", src, format!("{v:?} is not a number from 1 to 100"))),
        };

        let (v, src) = setting("tenants", flags.tenants, file_settings.tenants, "");
        let tenants = parse_tenants(&v).map_err(|m| fail("tenants", src, m))?;

        let (tls, authz) = resolve_tls(
            pick("tls_cert", flags.tls_cert, file_settings.tls_cert),
            pick("tls_key", flags.tls_key, file_settings.tls_key),
            pick("tls_client_ca", flags.tls_client_ca, file_settings.tls_client_ca),
            pick("authz_file", flags.authz_file, file_settings.authz_file),
            &tenants,
        )?;

        let auth = resolve_zookeeper_auth(
            pick("zookeeper_auth", flags.zookeeper_auth, file_settings.zookeeper_auth),
            pick("zookeeper_auth_file", flags.zookeeper_auth_file, file_settings.zookeeper_auth_file),
        )?;

        Ok(Self {
            listen,
            zookeeper: ZkConfig { hosts, namespace, session_timeout, auth, tenants },
            log_level,
            log_format,
            shutdown_grace,
            instance_id,
            metrics_listen,
            max_calls_per_connection,
            max_streams_per_connection,
            quotas,
            health_writes_per_second,
            tls,
            authz,
        })
    }
}

/// Resolves `tls_cert`, `tls_key`, `tls_client_ca` and `authz_file` (an empty value counts as
/// unset), loading the files so that unusable ones are configuration errors; the rules may
/// name only the configured `tenants`.
fn resolve_tls(
    cert: Option<(String, Source)>,
    key: Option<(String, Source)>,
    client_ca: Option<(String, Source)>,
    authz_file: Option<(String, Source)>,
    tenants: &[String],
) -> Result<(Option<TlsConfig>, Option<Authz>), ConfigError> {
    let set = |value: Option<(String, Source)>| value.filter(|(v, _)| !v.is_empty());
    let (cert, key, client_ca, authz_file) = (set(cert), set(key), set(client_ca), set(authz_file));
    let fail = |setting: &'static str, source: &Source, message: String| ConfigError {
        setting,
        source: source.clone(),
        message,
    };
    let (cert, key) = match (cert, key) {
        (None, None) => (None, None),
        (Some((_, src)), None) => return Err(fail("tls_cert", &src, "needs tls_key as well (both or neither)".into())),
        (None, Some((_, src))) => return Err(fail("tls_key", &src, "needs tls_cert as well (both or neither)".into())),
        (Some(cert), Some(key)) => (Some(cert), Some(key)),
    };
    if let (Some((_, src)), None) = (&client_ca, &cert) {
        return Err(fail(
            "tls_client_ca",
            src,
            "needs tls_cert and tls_key (mTLS is TLS with client certificates)".into(),
        ));
    }
    if let (Some((_, src)), None) = (&authz_file, &client_ca) {
        return Err(fail(
            "authz_file",
            src,
            "needs tls_client_ca (identities come from verified client certificates)".into(),
        ));
    }
    let tls = match (&cert, &key) {
        (Some((cert_path, cert_src)), Some((key_path, key_src))) => {
            let tls = TlsConfig {
                cert: PathBuf::from(cert_path),
                key: PathBuf::from(key_path),
                client_ca: client_ca.as_ref().map(|(path, _)| PathBuf::from(path)),
            };
            if let Err(err) = crate::tls::ServerTls::load(tls.clone()) {
                let src = match err.setting {
                    "tls_key" => key_src,
                    "tls_client_ca" => client_ca.as_ref().map_or(cert_src, |(_, src)| src),
                    _ => cert_src,
                };
                return Err(fail(err.setting, src, err.message));
            }
            Some(tls)
        }
        _ => None,
    };
    let authz = match &authz_file {
        Some((path, src)) => {
            let rules = Authz::load(Path::new(path)).map_err(|m| fail("authz_file", src, m))?;
            rules.check_tenants(tenants).map_err(|m| fail("authz_file", src, format!("{path}: {m}")))?;
            Some(rules)
        }
        None => None,
    };
    Ok((tls, authz))
}

/// `zookeeper_auth` or the contents of `zookeeper_auth_file` (not both), parsed; errors never
/// show the secret.
fn resolve_zookeeper_auth(
    value: Option<(String, Source)>,
    file: Option<(String, Source)>,
) -> Result<Option<ZkAuth>, ConfigError> {
    match (value, file) {
        (None, None) => Ok(None),
        (Some(_), Some((_, source))) => Err(ConfigError {
            setting: "zookeeper_auth_file",
            source,
            message: "set either zookeeper_auth or zookeeper_auth_file, not both".into(),
        }),
        (Some((value, source)), None) => ZkAuth::parse(&value).map(Some).map_err(|message| ConfigError {
            setting: "zookeeper_auth",
            source,
            message,
        }),
        (None, Some((path, source))) => {
            let fail =
                |message: String| ConfigError { setting: "zookeeper_auth_file", source: source.clone(), message };
            let text = std::fs::read_to_string(&path).map_err(|e| fail(format!("cannot read {path}: {e}")))?;
            ZkAuth::parse(&text).map(Some).map_err(|m| fail(format!("{path}: {m}")))
        }
    }
}

fn load_file(path: &Path, source: Source) -> Result<RawSettings, ConfigError> {
    let fail = |message: String| ConfigError { setting: "config", source: source.clone(), message };
    let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
    // Accept integers as well as strings, so `session_timeout = 6000` style files fail with a
    // clear message rather than a type error.
    let table: BTreeMap<String, toml::Value> =
        toml::from_str(&text).map_err(|e| fail(format!("{} is not valid TOML: {}", path.display(), e.message())))?;
    let mut strings = toml::Table::new();
    for (key, value) in table {
        let value = match value {
            toml::Value::String(s) => s,
            other => {
                return Err(ConfigError {
                    setting: "config",
                    source: source.clone(),
                    message: format!("{}: `{key}` must be a string, not {}", path.display(), other.type_str()),
                });
            }
        };
        strings.insert(key, toml::Value::String(value));
    }
    RawSettings::deserialize(strings).map_err(|e| fail(format!("{}: {}", path.display(), e.message())))
}

/// Parses `123ms`, `6s` or `2m`.
fn parse_duration(value: &str) -> Result<Duration, String> {
    let bad = || format!("{value:?} is not a duration such as 500ms, 6s or 2m");
    let split = value.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = value.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad())?;
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "s" => Ok(Duration::from_secs(number)),
        "m" => number.checked_mul(60).map(Duration::from_secs).ok_or_else(bad),
        _ => Err(bad()),
    }
}

/// Splits `host:port[,host:port...][/chroot]` into the host list and the namespace.
fn parse_connect_string(value: &str) -> Result<(String, String), String> {
    let (hosts, namespace) = match value.find('/') {
        Some(i) => (&value[..i], &value[i..]),
        None => (value, DEFAULT_NAMESPACE),
    };
    if hosts.is_empty() {
        return Err(format!("{value:?} names no ZooKeeper server; expected host:port[,host:port...][/namespace]"));
    }
    for host in hosts.split(',') {
        let port_ok =
            host.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
        if !port_ok {
            return Err(format!("{host:?} is not of the form host:port"));
        }
    }
    if namespace == "/" {
        return Err("the namespace must not be the ZooKeeper root; use e.g. /zkcoord".into());
    }
    for segment in namespace[1..].split('/') {
        if Name::parse("zookeeper", segment).is_err() {
            return Err(format!(
                "namespace {namespace:?} must be /-separated names of ASCII letters, digits and . _ - : @"
            ));
        }
    }
    if namespace == "/zookeeper" || namespace.starts_with("/zookeeper/") {
        return Err("the namespace must not be under /zookeeper, which ZooKeeper reserves".into());
    }
    Ok((hosts.to_owned(), namespace.to_owned()))
}

/// Parses the `tenants` setting: comma-separated names (the rules of every zkcoord name, see
/// [`Name`]), no duplicates, at most [`MAX_TENANTS`]; empty: none.
///
/// # Errors
/// A message for the config error.
fn parse_tenants(value: &str) -> Result<Vec<String>, String> {
    let mut tenants: Vec<String> = Vec::new();
    for tenant in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        if Name::parse("tenants", tenant).is_err() {
            return Err(format!(
                "{tenant:?} is not a tenant name: 1 to 128 ASCII letters, digits and . _ - : @, starting with a letter or digit"
            ));
        }
        if tenants.iter().any(|t| t == tenant) {
            return Err(format!("{tenant:?} is listed twice"));
        }
        tenants.push(tenant.to_owned());
    }
    if tenants.len() > MAX_TENANTS {
        return Err(format!("at most {MAX_TENANTS} tenants"));
    }
    Ok(tenants)
}

/// This machine's hostname for generated names (instance and candidate ids): see [`name_safe`].
pub(crate) fn name_safe_hostname(max_chars: usize) -> String {
    name_safe(&std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default(), max_chars)
}

/// `host` cut to ASCII letters, digits and `-` (characters every name allows) and to at most
/// `max_chars` of them; `zkcoord` when nothing is left.
fn name_safe(host: &str, max_chars: usize) -> String {
    let safe: String = host.trim().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(max_chars).collect();
    if safe.is_empty() { "zkcoord".into() } else { safe }
}

fn generated_instance_id() -> String {
    let host = name_safe_hostname(40);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{host}-{}-{nanos:08x}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn hostnames_are_cut_to_name_characters() {
        assert_eq!(name_safe("node_7.example.com\n", 40), "node7examplecom");
        assert_eq!(name_safe("rack-12-node-3", 6), "rack-1");
        assert_eq!(name_safe("  \n", 40), "zkcoord");
        assert_eq!(name_safe("_._", 40), "zkcoord");
    }

    #[test]
    fn defaults() {
        let config = Config::resolve(RawSettings::default(), None, no_env).expect("defaults are valid");
        assert_eq!(config.listen, DEFAULT_LISTEN.parse().expect("valid"));
        assert_eq!(config.zookeeper.hosts, "127.0.0.1:2181");
        assert_eq!(config.zookeeper.namespace, "/zkcoord");
        assert_eq!(config.zookeeper.session_timeout, DEFAULT_SESSION_TIMEOUT);
        assert_eq!(config.shutdown_grace, DEFAULT_SHUTDOWN_GRACE);
        assert_eq!(config.max_streams_per_connection, 200);
        assert_eq!(config.health_writes_per_second, 2);
        assert!(Name::parse("id", &config.instance_id).is_ok(), "{}", config.instance_id);
    }

    #[test]
    fn flag_beats_env_beats_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("zkcoord.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:3\"\nsession_timeout = \"3s\"\nlog_format = \"json\"\n")
            .expect("write");
        let env = |name: &str| match name {
            "ZKCOORD_LISTEN" => Some("127.0.0.1:2".to_string()),
            "ZKCOORD_SESSION_TIMEOUT" => Some("2s".to_string()),
            _ => None,
        };
        let flags = RawSettings { listen: Some("127.0.0.1:1".into()), ..Default::default() };
        let config = Config::resolve(flags, Some(file), env).expect("valid");
        assert_eq!(config.listen.port(), 1);
        assert_eq!(config.zookeeper.session_timeout, Duration::from_secs(2));
        assert_eq!(config.log_format, LogFormat::Json);
    }

    #[test]
    fn errors_name_setting_and_source() {
        let err = Config::resolve(RawSettings { listen: Some("nope".into()), ..Default::default() }, None, no_env)
            .expect_err("invalid");
        assert_eq!((err.setting, err.source.clone()), ("listen", Source::Flag));
        assert!(err.to_string().contains("--listen"), "{err}");
        let env = |name: &str| (name == "ZKCOORD_SESSION_TIMEOUT").then(|| "10 seconds".to_string());
        let err = Config::resolve(RawSettings::default(), None, env).expect_err("invalid");
        assert_eq!(err.setting, "session_timeout");
        assert!(err.to_string().contains("ZKCOORD_SESSION_TIMEOUT"), "{err}");
    }

    #[test]
    fn health_writes_per_second_is_1_to_100() {
        let flags = |v: &str| RawSettings { health_writes_per_second: Some(v.into()), ..Default::default() };
        assert_eq!(Config::resolve(flags("100"), None, no_env).expect("valid").health_writes_per_second, 100);
        let env = |name: &str| (name == "ZKCOORD_HEALTH_WRITES_PER_SECOND").then(|| "1".to_string());
        assert_eq!(Config::resolve(RawSettings::default(), None, env).expect("valid").health_writes_per_second, 1);
        for bad in ["0", "101", "-1", "2.5", "x", ""] {
            let err = Config::resolve(flags(bad), None, no_env).expect_err(bad);
            assert_eq!((err.setting, err.source), ("health_writes_per_second", Source::Flag), "{bad}");
        }
    }

    #[test]
    fn max_streams_per_connection_is_1_to_100000() {
        let flags = |v: &str| RawSettings { max_streams_per_connection: Some(v.into()), ..Default::default() };
        let config = Config::resolve(flags("4"), None, no_env).expect("valid");
        assert_eq!(config.max_streams_per_connection, 4);
        let env = |name: &str| (name == "ZKCOORD_MAX_STREAMS_PER_CONNECTION").then(|| "100000".to_string());
        assert_eq!(
            Config::resolve(RawSettings::default(), None, env).expect("valid").max_streams_per_connection,
            100_000
        );
        for bad in ["0", "100001", "-1", "many", ""] {
            let err = Config::resolve(flags(bad), None, no_env).expect_err(bad);
            assert_eq!((err.setting, err.source), ("max_streams_per_connection", Source::Flag), "{bad}");
        }
    }

    #[test]
    fn quotas_are_1_to_10000000() {
        let config = Config::resolve(RawSettings::default(), None, no_env).expect("defaults");
        assert_eq!(config.quotas, Quotas::default());
        let flags = RawSettings {
            max_leases_per_tenant: Some("1".into()),
            max_connections_per_identity: Some("10000000".into()),
            ..Default::default()
        };
        let env = |name: &str| match name {
            "ZKCOORD_MAX_WATCHED_ELECTIONS" => Some("7".to_string()),
            "ZKCOORD_MAX_GRANTS_PER_SECOND" => Some("50".to_string()),
            _ => None,
        };
        let quotas = Config::resolve(flags, None, env).expect("valid").quotas;
        assert_eq!((quotas.leases_per_tenant, quotas.connections_per_identity), (1, 10_000_000));
        assert_eq!((quotas.watched_elections, quotas.grants_per_second), (7, 50));
        for bad in ["0", "10000001", "-1", "many", ""] {
            let flags = RawSettings { max_observe_streams: Some(bad.into()), ..Default::default() };
            let err = Config::resolve(flags, None, no_env).expect_err(bad);
            assert_eq!((err.setting, err.source), ("max_observe_streams", Source::Flag), "{bad}");
        }
    }

    #[test]
    fn connect_strings() {
        assert_eq!(
            parse_connect_string("a:1,b:2/team/zk").expect("valid"),
            ("a:1,b:2".to_string(), "/team/zk".to_string())
        );
        for bad in ["", "/x", "a", "a:x", "a:1/", "a:1/../x", "a:1//x", "a:1/zookeeper", "a:1/zookeeper/q", "a:0"] {
            assert!(parse_connect_string(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("6s"), Ok(Duration::from_secs(6)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        for bad in ["", "6", "s", "6h", "-1s", "1.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn file_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:1\"\ncolour = \"blue\"\n").expect("write");
        let err = Config::resolve(RawSettings::default(), Some(file.clone()), no_env).expect_err("unknown key");
        assert_eq!(err.setting, "config");
        assert!(err.to_string().contains("colour"), "{err}");
        std::fs::write(&file, "session_timeout = 6000\n").expect("write");
        let err = Config::resolve(RawSettings::default(), Some(file), no_env).expect_err("wrong type");
        assert!(err.to_string().contains("session_timeout"), "{err}");
        let err = Config::resolve(RawSettings::default(), Some(dir.path().join("missing.toml")), no_env)
            .expect_err("missing");
        assert!(err.to_string().contains("cannot read"), "{err}");
    }

    #[test]
    fn tenant_lists() {
        assert_eq!(parse_tenants(""), Ok(vec![]));
        assert_eq!(parse_tenants(" a , b-2,"), Ok(vec!["a".to_string(), "b-2".to_string()]));
        for bad in ["a/b", "..", "a,a", ".x", "a b"] {
            assert!(parse_tenants(bad).is_err(), "{bad}");
        }
        let many = (0..=MAX_TENANTS).map(|i| format!("t{i}")).collect::<Vec<_>>().join(",");
        assert!(parse_tenants(&many).is_err());
    }

    #[test]
    fn tls_settings_go_together() {
        let flags = |cert: &str, key: &str, ca: &str, authz: &str| RawSettings {
            tls_cert: Some(cert.into()),
            tls_key: Some(key.into()),
            tls_client_ca: Some(ca.into()),
            authz_file: Some(authz.into()),
            ..Default::default()
        };
        // Empty values count as unset: plaintext.
        let config = Config::resolve(flags("", "", "", ""), None, no_env).expect("plaintext");
        assert_eq!((config.tls, config.authz), (None, None));
        for (settings, setting) in [
            (flags("c.pem", "", "", ""), "tls_cert"),
            (flags("", "k.pem", "", ""), "tls_key"),
            (flags("", "", "ca.pem", ""), "tls_client_ca"),
            (flags("", "", "", "authz.toml"), "authz_file"),
        ] {
            let err = Config::resolve(settings, None, no_env).expect_err(setting);
            assert_eq!((err.setting, err.source), (setting, Source::Flag));
        }
        let env = |name: &str| (name == "ZKCOORD_TLS_CERT").then(|| "/nonexistent/server.crt".to_string());
        let err = Config::resolve(RawSettings { tls_key: Some("k.pem".into()), ..Default::default() }, None, env)
            .expect_err("unreadable");
        assert_eq!((err.setting, err.source.clone()), ("tls_cert", Source::Env));
        assert!(err.to_string().contains("ZKCOORD_TLS_CERT"), "{err}");
    }
}
