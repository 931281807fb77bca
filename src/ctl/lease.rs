//! `zkcoord lease list|grant|revoke|ttl`: leases.

use std::{collections::BTreeMap, process::ExitCode, time::Duration};

use clap::{Args, Subcommand};
use serde_json::{Value, json};
use zkcoord_client::pb::{self, lease_client::LeaseClient};

use super::{
    ClientArgs, Ctl, CtlError,
    output::{self, Format, Table},
    parse_duration,
};

/// `zkcoord lease ...`.
#[derive(Debug, Args)]
pub struct LeaseArgs {
    /// Where the zkcoord instances are and how to talk to them.
    #[command(flatten)]
    pub client: ClientArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: LeaseCommand,
}

/// The `lease` subcommands.
#[derive(Debug, Subcommand)]
pub enum LeaseCommand {
    /// List every live lease.
    List,
    /// Grant a lease and print its id and secret. Nothing keeps it alive: it ends after its
    /// ttl unless a KeepAlive stream takes it over.
    Grant {
        /// Time to live, 1s to 1h, e.g. 3s.
        #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
        ttl: Duration,
        /// The owner's name, e.g. ledger-node-a.
        #[arg(long, value_name = "NAME")]
        owner: String,
        /// A metadata entry; repeat for more.
        #[arg(long = "meta", value_parser = parse_entry, value_name = "KEY=VALUE")]
        metadata: Vec<(String, String)>,
    },
    /// End a lease now, releasing everything bound to it.
    Revoke {
        /// The lease id.
        id: i64,
        /// The lease's secret.
        #[arg(long, env = "ZKCOORD_LEASE_SECRET", hide_env_values = true, value_name = "SECRET")]
        secret: String,
    },
    /// Describe one lease and what is bound to it.
    Ttl {
        /// The lease id.
        id: i64,
    },
}

/// Runs a `lease` subcommand.
///
/// # Errors
/// The call's failure.
pub async fn run(args: LeaseArgs) -> Result<ExitCode, CtlError> {
    let ctl = Ctl::new(&args.client)?;
    match args.command {
        LeaseCommand::List => list(&ctl).await,
        LeaseCommand::Grant { ttl, owner, metadata } => grant(&ctl, ttl, owner, metadata).await,
        LeaseCommand::Revoke { id, secret } => {
            let request = pb::RevokeRequest { lease: Some(pb::LeaseRef { id, secret }) };
            ctl.call(format!("lease revoke {id}"), |channel| {
                let request = request.clone();
                async move { LeaseClient::new(channel).revoke(request).await }
            })
            .await?;
            match ctl.format {
                Format::Table => println!("lease {id} revoked"),
                Format::Json => output::print_json(&json!({ "lease_id": id.to_string(), "revoked": true })),
            }
            Ok(ExitCode::SUCCESS)
        }
        LeaseCommand::Ttl { id } => ttl(&ctl, id).await,
    }
}

/// `lease list`.
async fn list(ctl: &Ctl) -> Result<ExitCode, CtlError> {
    let leases = ctl.client().list_leases().await.map_err(|err| ctl.error(err, "lease list"))?;
    match ctl.format {
        Format::Table => {
            let mut table = Table::new(LEASE_HEADERS);
            for lease in &leases {
                table.row(lease_row(lease));
            }
            print!("{table}");
        }
        Format::Json => {
            let leases: Vec<Value> = leases.iter().map(lease_json).collect();
            output::print_json(&json!({ "leases": leases }));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `lease grant`.
async fn grant(ctl: &Ctl, ttl: Duration, owner: String, metadata: Vec<(String, String)>) -> Result<ExitCode, CtlError> {
    let request = pb::GrantRequest {
        ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX),
        owner: owner.clone(),
        metadata: metadata.into_iter().collect(),
        health: None,
    };
    // Not repeated once an instance received it: that could grant two leases.
    let granted = ctl
        .call_once(format!("lease grant --owner {owner}"), |channel| {
            let request = request.clone();
            async move { LeaseClient::new(channel).grant(request).await }
        })
        .await?;
    match ctl.format {
        Format::Table => {
            let mut table = Table::new(&["LEASE", "SECRET", "TTL", "INSTANCE"]);
            table.row(vec![
                granted.lease_id.to_string(),
                granted.secret.clone(),
                output::millis(granted.ttl_ms),
                granted.instance.clone(),
            ]);
            print!("{table}");
        }
        Format::Json => output::print_json(&json!({
            "lease_id": granted.lease_id.to_string(),
            "secret": granted.secret,
            "ttl_ms": granted.ttl_ms,
            "instance": granted.instance,
        })),
    }
    Ok(ExitCode::SUCCESS)
}

/// `lease ttl ID`: the lease, then its bindings.
async fn ttl(ctl: &Ctl, id: i64) -> Result<ExitCode, CtlError> {
    let what = format!("lease ttl {id}");
    let request = pb::TimeToLiveRequest { lease_id: id };
    let response =
        ctl.call(what.clone(), |channel| async move { LeaseClient::new(channel).time_to_live(request).await }).await?;
    let lease = response.lease.ok_or_else(|| CtlError::Failed(format!("{what}: zkcoord described no lease")))?;
    match ctl.format {
        Format::Table => {
            let mut table = Table::new(LEASE_HEADERS);
            table.row(lease_row(&lease));
            print!("{table}");
            println!();
            let mut bindings = Table::new(&["BINDING", "NAME", "ID"]);
            for binding in &response.bindings {
                bindings.row(vec![binding_kind(binding).into(), binding.name.clone(), binding.id.clone()]);
            }
            print!("{bindings}");
        }
        Format::Json => {
            let bindings: Vec<Value> = response
                .bindings
                .iter()
                .map(|b| json!({ "kind": binding_kind(b), "name": b.name, "id": b.id }))
                .collect();
            output::print_json(&json!({ "lease": lease_json(&lease), "bindings": bindings }));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Column headers of [`lease_row`].
const LEASE_HEADERS: &[&str] =
    &["LEASE", "OWNER", "TTL", "REMAINING", "SINCE HEARTBEAT", "HEALTH", "INSTANCE", "GRANTED", "METADATA"];

/// A lease as a table row under [`LEASE_HEADERS`].
fn lease_row(lease: &pb::LeaseInfo) -> Vec<String> {
    vec![
        lease.lease_id.to_string(),
        lease.owner.clone(),
        output::millis(lease.granted_ttl_ms),
        output::millis(lease.remaining_ttl_ms),
        output::millis(lease.since_heartbeat_ms),
        output::health_cell(lease.health.as_ref()),
        output::or_dash(&lease.instance),
        output::ago(lease.granted_unix_ms),
        output::metadata_cell(&lease.metadata),
    ]
}

/// A lease as JSON.
fn lease_json(lease: &pb::LeaseInfo) -> Value {
    json!({
        "lease_id": lease.lease_id.to_string(),
        "owner": lease.owner,
        "metadata": lease.metadata.iter().collect::<BTreeMap<_, _>>(),
        "granted_ttl_ms": lease.granted_ttl_ms,
        "remaining_ttl_ms": lease.remaining_ttl_ms,
        "health": output::health_json(lease.health.as_ref()),
        "since_heartbeat_ms": lease.since_heartbeat_ms,
        "instance": lease.instance,
        "granted_unix_ms": lease.granted_unix_ms,
    })
}

fn binding_kind(binding: &pb::Binding) -> &'static str {
    match binding.kind() {
        pb::binding::Kind::Candidacy => "candidacy",
        pb::binding::Kind::Lock => "lock",
        pb::binding::Kind::ShardMember => "shard-member",
        pb::binding::Kind::Unspecified => "unknown",
    }
}

/// Parses `--meta key=value`.
fn parse_entry(entry: &str) -> Result<(String, String), String> {
    match entry.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("{entry:?} is not of the form key=value")),
    }
}
