//! `zkcoord leader get|watch|resign|transfer`: an election's leadership.

use std::{process::ExitCode, time::Duration};

use clap::{Args, Subcommand};
use serde_json::json;
use zkcoord_client::pb::{self, election_client::ElectionClient};

use super::{
    ClientArgs, Ctl, CtlError,
    output::{self, Format, Table},
};

/// `zkcoord leader ...`.
#[derive(Debug, Args)]
pub struct LeaderArgs {
    /// Where the zkcoord instances are and how to talk to them.
    #[command(flatten)]
    pub client: ClientArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: LeaderCommand,
}

/// The `leader` subcommands.
#[derive(Debug, Subcommand)]
pub enum LeaderCommand {
    /// Show an election's current leader.
    Get {
        /// The election's name.
        name: String,
    },
    /// Print an election's leadership now and on every change, until interrupted.
    Watch {
        /// The election's name.
        name: String,
        /// Exit after this many events.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Withdraw a candidacy; when it leads, the next eligible candidate is elected.
    Resign {
        /// The election's name.
        name: String,
        /// The candidate id.
        #[arg(long, value_name = "ID")]
        candidate: String,
        /// The candidacy's lease id.
        #[arg(long, value_name = "ID")]
        lease: i64,
        /// The lease's secret.
        #[arg(long, env = "ZKCOORD_LEASE_SECRET", hide_env_values = true, value_name = "SECRET")]
        secret: String,
        /// Resign only if the candidate leads this term.
        #[arg(long, value_name = "TERM")]
        term: Option<i64>,
    },
    /// Hand leadership over gracefully: the leader is deposed, then the target elected.
    Transfer {
        /// The election's name.
        name: String,
        /// The candidate to hand over to; the next eligible candidate when absent.
        #[arg(long, value_name = "ID")]
        to: Option<String>,
        /// Transfer only if this is the current term.
        #[arg(long, value_name = "TERM")]
        term: Option<i64>,
    },
}

/// Runs a `leader` subcommand.
///
/// # Errors
/// The call's failure.
pub async fn run(args: LeaderArgs) -> Result<ExitCode, CtlError> {
    let ctl = Ctl::new(&args.client)?;
    match args.command {
        LeaderCommand::Get { name } => get(&ctl, &name).await,
        LeaderCommand::Watch { name, count } => watch(&ctl, &name, count).await,
        LeaderCommand::Resign { name, candidate, lease, secret, term } => {
            let key = pb::CandidateKey {
                election: name.clone(),
                candidate_id: candidate.clone(),
                lease: Some(pb::LeaseRef { id: lease, secret }),
            };
            let request = pb::ResignRequest { key: Some(key), term: term.unwrap_or(0), stay_candidate: false };
            ctl.call(format!("leader resign {name} --candidate {candidate}"), |channel| {
                let request = request.clone();
                async move { ElectionClient::new(channel).resign(request).await }
            })
            .await?;
            match ctl.format {
                Format::Table => println!("candidate {candidate} resigned from election {name}"),
                Format::Json => {
                    output::print_json(&json!({ "election": name, "candidate_id": candidate, "resigned": true }));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        LeaderCommand::Transfer { name, to, term } => {
            let request = pb::TransferRequest {
                election: name.clone(),
                target_candidate_id: to.unwrap_or_default(),
                from: None,
                term: term.unwrap_or(0),
            };
            // Not repeated once an instance received it: a second transfer would move
            // leadership on again.
            let response = ctl
                .call_once(format!("leader transfer {name}"), |channel| {
                    let request = request.clone();
                    async move { ElectionClient::new(channel).transfer(request).await }
                })
                .await?;
            print_leader(ctl.format, &name, response.leader.as_ref());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `leader get NAME`.
async fn get(ctl: &Ctl, name: &str) -> Result<ExitCode, CtlError> {
    let request = pb::LeaderRequest { election: name.to_owned() };
    let response = ctl
        .call(format!("leader get {name}"), |channel| {
            let request = request.clone();
            async move { ElectionClient::new(channel).leader(request).await }
        })
        .await?;
    print_leader(ctl.format, name, response.leader.as_ref());
    Ok(ExitCode::SUCCESS)
}

/// Prints a leader (or its absence) as a one-row table or `{"election", "leader"}`.
fn print_leader(format: Format, election: &str, leader: Option<&pb::LeaderInfo>) {
    match format {
        Format::Table => match leader {
            Some(leader) => {
                let mut table = Table::new(output::LEADER_HEADERS);
                table.row(output::leader_row(election, leader));
                print!("{table}");
            }
            None => println!("election {election} has no leader"),
        },
        Format::Json => {
            output::print_json(&json!({ "election": election, "leader": leader.map(output::leader_json) }));
        }
    }
}

/// `leader watch NAME [--count N]`: follows Observe streams, moving to the next endpoint
/// when one breaks, and prints each distinct leadership state once.
async fn watch(ctl: &Ctl, name: &str, count: Option<u64>) -> Result<ExitCode, CtlError> {
    let request = pb::ObserveRequest { election: name.to_owned() };
    let what = format!("leader watch {name}");
    let mut printed = 0u64;
    let mut last: Option<(i64, Option<(String, u64)>)> = None;
    let mut first = true;
    loop {
        if count.is_some_and(|count| printed >= count) {
            return Ok(ExitCode::SUCCESS);
        }
        let opened = ctl
            .call(what.clone(), |channel| {
                let request = request.clone();
                async move { ElectionClient::new(channel).observe(request).await }
            })
            .await;
        let mut stream = match opened {
            Ok(stream) => stream,
            // The first failure is reported; later ones are waited out.
            Err(err) if first => return Err(err),
            Err(err) => {
                eprintln!("zkcoord: {err}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        first = false;
        let ended = loop {
            match stream.message().await {
                Ok(Some(state)) => {
                    // A new stream starts with the current state, maybe one already printed.
                    let key = (state.term, state.leader.as_ref().map(|l| (l.candidate_id.clone(), l.fencing_token)));
                    if last.as_ref() == Some(&key) {
                        continue;
                    }
                    last = Some(key);
                    print_change(ctl.format, name, &state);
                    printed += 1;
                    if count.is_some_and(|count| printed >= count) {
                        return Ok(ExitCode::SUCCESS);
                    }
                }
                Ok(None) => break "the stream ended".to_owned(),
                Err(status) => break format!("{}: {}", status.code(), status.message()),
            }
        };
        eprintln!("zkcoord: watching {name}: {ended}; reconnecting");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Prints one leadership state: a line of text, or a JSON object on one line.
fn print_change(format: Format, election: &str, state: &pb::ObserveResponse) {
    match format {
        Format::Table => match &state.leader {
            Some(leader) => println!(
                "term {}: {} leads election {election} (priority {}, fencing token {}, lease {}, {})",
                state.term,
                leader.candidate_id,
                leader.priority,
                leader.fencing_token,
                leader.lease_id,
                output::health_cell(leader.health.as_ref()),
            ),
            None => println!("term {}: election {election} has no leader", state.term),
        },
        Format::Json => println!(
            "{}",
            json!({
                "election": election,
                "sequence": state.sequence,
                "term": state.term,
                "leader": state.leader.as_ref().map(output::leader_json),
            })
        ),
    }
}
