//! The client subcommands of the `zkcoord` binary (`leader`, `candidates`, `lease`, `lock`,
//! `shards`, `health`, `campaign`): each talks to running zkcoord instances through `zkcoord-client` and
//! prints an aligned table (default) or JSON (`--output json`).
//!
//! One module per command group; `output` formats, `error` turns failures into a message
//! on stderr and an exit code. Exit codes: 0 success, 1 any other failure (e.g.
//! FAILED_PRECONDITION, a health check not SERVING), 64 bad usage or INVALID_ARGUMENT,
//! 66 NOT_FOUND, 69 zkcoord unreachable or UNAVAILABLE, 77 PERMISSION_DENIED (wrong secret);
//! `campaign` exits with its command's code when the command ends by itself.

pub mod campaign;
pub mod candidates;
pub mod child;
mod error;
pub mod health;
pub mod leader;
pub mod lease;
pub mod lock;
mod output;
pub mod shards;

use std::{future::Future, path::PathBuf, process::ExitCode, time::Duration};

use clap::Args;
use zkcoord_client::{Client, Tls, Transport};

pub use campaign::CampaignArgs;
pub use candidates::CandidatesArgs;
pub use child::RunChildArgs;
pub use error::CtlError;
use error::EX_UNAVAILABLE;
pub use health::HealthArgs;
pub use leader::{LeaderArgs, LeaderCommand};
pub use lease::{LeaseArgs, LeaseCommand};
pub use lock::{LockArgs, LockCommand};
pub use output::Format;
pub use shards::{ShardsArgs, ShardsCommand};

/// The endpoints used when neither `--endpoints` nor `ZKCOORD_ENDPOINTS` is given.
pub(crate) const DEFAULT_ENDPOINTS: &str = "127.0.0.1:7710";

/// Flags every client subcommand takes.
#[derive(Clone, Debug, Args)]
pub struct ClientArgs {
    /// zkcoord instances to talk to; any of them serves any call, the next one is tried when
    /// one is unreachable
    #[arg(
        long,
        global = true,
        env = "ZKCOORD_ENDPOINTS",
        value_name = "HOST:PORT[,HOST:PORT...]",
        value_delimiter = ',',
        default_value = DEFAULT_ENDPOINTS
    )]
    pub endpoints: Vec<String>,
    /// Output format
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// CA certificate(s) (PEM) to trust: talk to zkcoord over TLS
    #[arg(long, global = true, env = "ZKCOORD_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Client certificate chain (PEM) for mTLS (with --key)
    #[arg(long = "cert", id = "client_cert", global = true, env = "ZKCOORD_CERT", value_name = "FILE")]
    pub client_cert: Option<PathBuf>,
    /// Client private key (PEM) for mTLS (with --cert)
    #[arg(long = "key", id = "client_key", global = true, env = "ZKCOORD_KEY", value_name = "FILE")]
    pub client_key: Option<PathBuf>,
    /// The tenant to act in (the zkcoord-tenant header); default: the default tenant
    #[arg(long, global = true, env = "ZKCOORD_TENANT", value_name = "NAME")]
    pub tenant: Option<String>,
    /// Name the server certificate must carry, when not the endpoint's host
    #[arg(long, global = true, env = "ZKCOORD_TLS_DOMAIN", value_name = "NAME")]
    pub tls_domain: Option<String>,
}

impl ClientArgs {
    /// A client of the endpoints (connections are made on first use).
    ///
    /// # Errors
    /// [`CtlError::Usage`] for an endpoint that is not a `host:port` or URI.
    pub(crate) fn client(&self) -> Result<Client, CtlError> {
        let endpoints = self.endpoints.iter().filter(|e| !e.trim().is_empty());
        let client = match self.tls()? {
            Some(tls) => Client::with_tls(endpoints, &tls),
            None => Client::new(endpoints),
        }
        .map_err(|err| CtlError::Usage(format!("--endpoints: {err}")))?;
        match &self.tenant {
            Some(tenant) => client.tenant(tenant).map_err(|err| CtlError::Usage(format!("--tenant: {err}"))),
            None => Ok(client),
        }
    }

    /// The TLS settings, when `--ca-cert` is given.
    ///
    /// # Errors
    /// [`CtlError::Usage`] for an unreadable file, or `--cert`/`--key` without the other or
    /// without `--ca-cert`.
    pub(crate) fn tls(&self) -> Result<Option<Tls>, CtlError> {
        let read = |flag: &str, path: &PathBuf| {
            std::fs::read(path)
                .map_err(|err| CtlError::Usage(format!("--{flag}: cannot read {}: {err}", path.display())))
        };
        let Some(ca) = &self.ca_cert else {
            if self.client_cert.is_some() || self.client_key.is_some() {
                return Err(CtlError::Usage("--cert and --key need --ca-cert (TLS)".into()));
            }
            return Ok(None);
        };
        let mut tls = Tls::new(read("ca-cert", ca)?);
        match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => tls = tls.identity(read("cert", cert)?, read("key", key)?),
            (None, None) => {}
            _ => return Err(CtlError::Usage("--cert and --key go together".into())),
        }
        if let Some(domain) = &self.tls_domain {
            tls = tls.domain(domain.clone());
        }
        Ok(Some(tls))
    }

    /// The endpoints as given, for messages.
    pub(crate) fn endpoint_list(&self) -> String {
        self.endpoints.join(",")
    }
}

/// A client with what every subcommand needs to call and report: the endpoints for messages
/// and the output format.
#[derive(Debug)]
pub(crate) struct Ctl {
    client: Client,
    endpoints: String,
    /// How to print results.
    pub format: Format,
}

impl Ctl {
    /// A client of `args.endpoints`.
    fn new(args: &ClientArgs) -> Result<Self, CtlError> {
        Ok(Self { client: args.client()?, endpoints: args.endpoint_list(), format: args.output })
    }

    /// The underlying client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Turns a client error into a [`CtlError`] about the request `what`.
    pub fn error(&self, err: zkcoord_client::Error, what: impl Into<String>) -> CtlError {
        CtlError::from_call(err, &self.endpoints, what)
    }

    /// Runs a call that is safe to repeat on each endpoint in turn until one answers with
    /// something other than UNAVAILABLE; `what` describes the request for error messages.
    pub async fn call<T, F, Fut>(&self, what: impl Into<String>, call: F) -> Result<T, CtlError>
    where
        F: FnMut(Transport) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        match self.client.retrying(call).await {
            Ok(response) => Ok(response.into_inner()),
            Err(err) => Err(self.error(err, what)),
        }
    }

    /// Runs a call that must not be repeated once an instance has received it: the next
    /// endpoint is tried only while the current one cannot be reached at all.
    pub async fn call_once<T, F, Fut>(&self, what: impl Into<String>, mut call: F) -> Result<T, CtlError>
    where
        F: FnMut(Transport) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let answered = self
            .client
            .retrying(|channel| {
                let call = call(channel);
                async move {
                    match call.await {
                        Ok(response) => Ok(Ok(response)),
                        // An instance answered UNAVAILABLE: report it, do not repeat the call.
                        Err(status) if !error::is_unreachable(&status) => Ok(Err(status)),
                        Err(status) => Err(status),
                    }
                }
            })
            .await;
        match answered {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(self.error(status.into(), what)),
            Err(err) => Err(self.error(err, what)),
        }
    }
}

/// Runs one client subcommand to completion on a single-threaded runtime and turns its
/// outcome into the process exit code (printing the error, if any, to stderr).
///
/// Single-threaded on purpose: `campaign` relies on its children being forked by the thread
/// that lives as long as the process (see [`child`]).
pub fn run<F>(command: F) -> ExitCode
where
    F: Future<Output = Result<ExitCode, CtlError>>,
{
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(command) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

/// Parses `123ms`, `6s`, `2m` or `1h` (flag values such as `--ttl 3s`).
///
/// # Errors
/// A message naming the expected form.
pub(crate) fn parse_duration(value: &str) -> Result<Duration, String> {
    let bad = || format!("{value:?} is not a duration such as 500ms, 3s, 2m or 1h");
    let split = value.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = value.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let seconds = |factor: u64| number.checked_mul(factor).map(Duration::from_secs).ok_or_else(bad);
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "s" => seconds(1),
        "m" => seconds(60),
        "h" => seconds(3600),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["", "3", "s", "3 s", "1d", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
