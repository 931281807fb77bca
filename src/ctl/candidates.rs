//! `zkcoord candidates NAME`: an election's candidates in election order.

use std::process::ExitCode;

use clap::Args;
use serde_json::json;
use zkcoord_client::pb;

use super::{
    ClientArgs, Ctl, CtlError,
    output::{self, Format, Table},
};

/// `zkcoord candidates NAME`.
#[derive(Debug, Args)]
pub struct CandidatesArgs {
    /// Where the zkcoord instances are and how to talk to them.
    #[command(flatten)]
    pub client: ClientArgs,
    /// The election's name.
    pub name: String,
}

/// Lists the candidates.
///
/// # Errors
/// The call's failure.
pub async fn run(args: CandidatesArgs) -> Result<ExitCode, CtlError> {
    let ctl = Ctl::new(&args.client)?;
    let name = args.name;
    let response = ctl.client().candidates(&name).await.map_err(|err| ctl.error(err, format!("candidates {name}")))?;
    match ctl.format {
        Format::Table => {
            let mut table =
                Table::new(&["CANDIDATE", "PRIORITY", "ELIGIBLE", "LEADER", "HEALTH", "LEASE", "POSITION", "VALUE"]);
            for c in &response.candidates {
                table.row(vec![
                    c.candidate_id.clone(),
                    c.priority.to_string(),
                    yes_no(c.eligible),
                    yes_no(c.leader),
                    output::health_cell(c.health.as_ref()),
                    c.lease_id.to_string(),
                    c.position.to_string(),
                    output::or_dash(&output::text(&c.value)),
                ]);
            }
            print!("{table}");
        }
        Format::Json => {
            let candidates: Vec<_> = response
                .candidates
                .iter()
                .map(|c| {
                    json!({
                        "candidate_id": c.candidate_id,
                        "priority": c.priority,
                        "eligible": c.eligible,
                        "leader": c.leader,
                        "health": output::health_json(c.health.as_ref()),
                        "lease_id": c.lease_id.to_string(),
                        "position": c.position,
                        "value": output::text(&c.value),
                    })
                })
                .collect();
            let preempt = match response.preempt() {
                pb::PreemptPolicy::On => "on",
                pb::PreemptPolicy::Off | pb::PreemptPolicy::Unspecified => "off",
            };
            output::print_json(&json!({
                "election": name,
                "term": response.term,
                "preempt": preempt,
                "candidates": candidates,
            }));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.into()
}
