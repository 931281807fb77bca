//! `zkcoord lock holders KEY [--prefix]`: who holds and who waits for soft locks.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Value, json};
use zkcoord_client::pb;

use super::{
    ClientArgs, Ctl, CtlError,
    output::{self, Format, Table},
};

/// `zkcoord lock ...`.
#[derive(Debug, Args)]
pub struct LockArgs {
    /// Where the zkcoord instances are and how to talk to them.
    #[command(flatten)]
    pub client: ClientArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: LockCommand,
}

/// The `lock` subcommands.
#[derive(Debug, Subcommand)]
pub enum LockCommand {
    /// List the holders and waiter counts of a key, or of every key with a prefix.
    Holders {
        /// The key, or the key prefix with --prefix (an empty prefix lists every key).
        #[arg(default_value = "")]
        key: String,
        /// Treat KEY as a prefix.
        #[arg(long)]
        prefix: bool,
    },
}

/// Runs a `lock` subcommand.
///
/// # Errors
/// The call's failure.
pub async fn run(args: LockArgs) -> Result<ExitCode, CtlError> {
    let ctl = Ctl::new(&args.client)?;
    let LockCommand::Holders { key, prefix } = args.command;
    let what = if prefix { format!("lock holders {key:?} --prefix") } else { format!("lock holders {key}") };
    let keys = ctl.client().holders(&key, prefix).await.map_err(|err| ctl.error(err, what))?;
    match ctl.format {
        Format::Table => {
            let mut table = Table::new(&["KEY", "MODE", "OWNER", "LEASE", "FENCING TOKEN", "SINCE", "WAITERS"]);
            for key in &keys {
                let waiters = key.waiters.to_string();
                if key.holders.is_empty() {
                    let dash = || "-".to_owned();
                    table.row(vec![key.key.clone(), dash(), dash(), dash(), dash(), dash(), waiters.clone()]);
                }
                for holder in &key.holders {
                    table.row(vec![
                        key.key.clone(),
                        mode_name(holder.mode()).into(),
                        holder.owner.clone(),
                        holder.lease_id.to_string(),
                        holder.fencing_token.to_string(),
                        output::ago(holder.since_unix_ms),
                        waiters.clone(),
                    ]);
                }
            }
            print!("{table}");
        }
        Format::Json => {
            let keys: Vec<Value> = keys
                .iter()
                .map(|key| {
                    let holders: Vec<Value> = key
                        .holders
                        .iter()
                        .map(|h| {
                            json!({
                                "owner": h.owner,
                                "lease_id": h.lease_id.to_string(),
                                "mode": mode_name(h.mode()),
                                "since_unix_ms": h.since_unix_ms,
                                "fencing_token": h.fencing_token.to_string(),
                            })
                        })
                        .collect();
                    json!({ "key": key.key, "holders": holders, "waiters": key.waiters })
                })
                .collect();
            output::print_json(&json!({ "keys": keys }));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn mode_name(mode: pb::LockMode) -> &'static str {
    match mode {
        pb::LockMode::Exclusive => "exclusive",
        pb::LockMode::Shared => "shared",
        pb::LockMode::Unspecified => "unknown",
    }
}
