//! `zkcoord shards show|watch|members|drain|undrain`: a shard group's assignment and members.

use std::{process::ExitCode, time::Duration};

use clap::{Args, Subcommand};
use serde_json::{Value, json};
use zkcoord_client::pb::{self, shards_client::ShardsClient};

use super::{
    ClientArgs, Ctl, CtlError,
    output::{self, Format, Table},
};

/// `zkcoord shards ...`.
#[derive(Debug, Args)]
pub struct ShardsArgs {
    /// Where the zkcoord instances are and how to talk to them.
    #[command(flatten)]
    pub client: ClientArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: ShardsCommand,
}

/// The `shards` subcommands.
#[derive(Debug, Subcommand)]
pub enum ShardsCommand {
    /// Show a group's assignment: each member's shards and every range's owner, epoch and
    /// handoff target.
    Show {
        /// The group's name.
        group: String,
    },
    /// Print a group's assignment now and on every change, until interrupted.
    Watch {
        /// The group's name.
        group: String,
        /// Exit after this many changes.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// List a group's members: lease, weight, health, drained, leaving, shards owned.
    Members {
        /// The group's name.
        group: String,
    },
    /// Take every shard away from a member (handed off in two phases) until undrained.
    Drain {
        /// The group's name.
        group: String,
        /// The member id (need not be a member yet).
        member: String,
    },
    /// Give a drained member its share again.
    Undrain {
        /// The group's name.
        group: String,
        /// The member id.
        member: String,
    },
}

/// Runs a `shards` subcommand.
///
/// # Errors
/// The call's failure.
pub async fn run(args: ShardsArgs) -> Result<ExitCode, CtlError> {
    let ctl = Ctl::new(&args.client)?;
    match args.command {
        ShardsCommand::Show { group } => show(&ctl, &group).await,
        ShardsCommand::Watch { group, count } => watch(&ctl, &group, count).await,
        ShardsCommand::Members { group } => members(&ctl, &group).await,
        ShardsCommand::Drain { group, member } => set_drained(&ctl, &group, &member, true).await,
        ShardsCommand::Undrain { group, member } => set_drained(&ctl, &group, &member, false).await,
    }
}

/// `shards show GROUP`: the Assignment and Members of the group (two calls: a change between
/// them may show in one and not the other).
async fn show(ctl: &Ctl, group: &str) -> Result<ExitCode, CtlError> {
    let what = format!("shards show {group}");
    let request = pb::AssignmentRequest { group: group.to_owned() };
    let assignment = ctl
        .call(what.clone(), |channel| {
            let request = request.clone();
            async move { ShardsClient::new(channel).assignment(request).await }
        })
        .await?;
    let members = fetch_members(ctl, group, what).await?;
    let ranges = &assignment.ranges;
    let in_state = |state: pb::ShardState| -> u32 {
        ranges.iter().filter(|r| r.state() == state).map(|r| r.last - r.first + 1).sum()
    };
    match ctl.format {
        Format::Table => {
            let mut table = Table::new(&["MEMBER", "HEALTH", "DRAINED", "LEAVING", "OWNED", "HANDING OFF", "SHARDS"]);
            for m in &members.members {
                let (owned, handing_off) = member_ranges(ranges, &m.member_id);
                table.row(vec![
                    m.member_id.clone(),
                    output::health_cell(m.health.as_ref()),
                    yes_no(m.drained),
                    yes_no(m.leaving),
                    count(&owned).to_string(),
                    count(&handing_off).to_string(),
                    output::or_dash(&range_list(&owned)),
                ]);
            }
            print!("{table}");
            println!();
            let mut table = Table::new(&["SHARDS", "STATE", "OWNER", "EPOCH", "TARGET"]);
            for r in ranges {
                let epoch = if r.state() == pb::ShardState::Unassigned { "-".to_owned() } else { r.epoch.to_string() };
                table.row(vec![
                    range_cell(r.first, r.last),
                    state_name(r.state()).to_owned(),
                    output::or_dash(&r.owner),
                    epoch,
                    output::or_dash(&r.target),
                ]);
            }
            print!("{table}");
            let others: Vec<&str> = members
                .drained
                .iter()
                .filter(|d| !members.members.iter().any(|m| &m.member_id == *d))
                .map(String::as_str)
                .collect();
            if !others.is_empty() {
                println!("\ndrained, not members: {}", others.join(", "));
            }
        }
        Format::Json => {
            let member_list: Vec<Value> = members
                .members
                .iter()
                .map(|m| {
                    let (owned, handing_off) = member_ranges(ranges, &m.member_id);
                    let shards: Vec<Value> = owned
                        .iter()
                        .map(|r| json!({ "first": r.first, "last": r.last, "epoch": r.epoch.to_string() }))
                        .collect();
                    json!({
                        "member_id": m.member_id,
                        "lease_id": m.lease_id.to_string(),
                        "weight": m.weight,
                        "health": output::health_json(m.health.as_ref()),
                        "drained": m.drained,
                        "leaving": m.leaving,
                        "owned": count(&owned),
                        "handing_off": count(&handing_off),
                        "shards": shards,
                    })
                })
                .collect();
            output::print_json(&json!({
                "group": group,
                "shard_count": assignment.shard_count,
                "handing_off": in_state(pb::ShardState::HandingOff),
                "unassigned": in_state(pb::ShardState::Unassigned),
                "members": member_list,
                "drained": members.drained,
                "ranges": ranges.iter().map(range_json).collect::<Vec<_>>(),
            }));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `shards members GROUP`.
async fn members(ctl: &Ctl, group: &str) -> Result<ExitCode, CtlError> {
    let response = fetch_members(ctl, group, format!("shards members {group}")).await?;
    match ctl.format {
        Format::Table => {
            let mut table =
                Table::new(&["MEMBER", "LEASE", "WEIGHT", "HEALTH", "DRAINED", "LEAVING", "OWNED", "LABELS"]);
            for m in &response.members {
                table.row(vec![
                    m.member_id.clone(),
                    m.lease_id.to_string(),
                    m.weight.to_string(),
                    output::health_cell(m.health.as_ref()),
                    yes_no(m.drained),
                    yes_no(m.leaving),
                    m.owned.to_string(),
                    output::metadata_cell(&m.labels),
                ]);
            }
            print!("{table}");
        }
        Format::Json => {
            let members: Vec<Value> = response
                .members
                .iter()
                .map(|m| {
                    json!({
                        "member_id": m.member_id,
                        "lease_id": m.lease_id.to_string(),
                        "weight": m.weight,
                        "labels": m.labels,
                        "health": output::health_json(m.health.as_ref()),
                        "drained": m.drained,
                        "leaving": m.leaving,
                        "owned": m.owned,
                    })
                })
                .collect();
            output::print_json(&json!({
                "group": group,
                "shard_count": response.shard_count,
                "members": members,
                "drained": response.drained,
            }));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn fetch_members(ctl: &Ctl, group: &str, what: String) -> Result<pb::MembersResponse, CtlError> {
    ctl.client().shard_members(group).await.map_err(|err| ctl.error(err, what))
}

/// `shards drain|undrain GROUP MEMBER`. Safe to repeat: draining a drained member changes
/// nothing.
async fn set_drained(ctl: &Ctl, group: &str, member: &str, drained: bool) -> Result<ExitCode, CtlError> {
    let verb = if drained { "drain" } else { "undrain" };
    let what = format!("shards {verb} {group} {member}");
    if drained {
        let request = pb::DrainRequest { group: group.to_owned(), member_id: member.to_owned() };
        ctl.call(what, |channel| {
            let request = request.clone();
            async move { ShardsClient::new(channel).drain(request).await }
        })
        .await?;
    } else {
        let request = pb::UndrainRequest { group: group.to_owned(), member_id: member.to_owned() };
        ctl.call(what, |channel| {
            let request = request.clone();
            async move { ShardsClient::new(channel).undrain(request).await }
        })
        .await?;
    }
    match ctl.format {
        Format::Table => println!("member {member} of group {group} {verb}ed"),
        Format::Json => output::print_json(&json!({ "group": group, "member_id": member, "drained": drained })),
    }
    Ok(ExitCode::SUCCESS)
}

/// `shards watch GROUP [--count N]`: follows Observe streams, moving to the next endpoint when
/// one breaks, and prints each distinct table once.
async fn watch(ctl: &Ctl, group: &str, count: Option<u64>) -> Result<ExitCode, CtlError> {
    let request = pb::ObserveGroupRequest { group: group.to_owned() };
    let what = format!("shards watch {group}");
    let mut printed = 0u64;
    let mut last: Option<(u32, Vec<pb::ShardRange>)> = None;
    let mut first = true;
    loop {
        if count.is_some_and(|count| printed >= count) {
            return Ok(ExitCode::SUCCESS);
        }
        let opened = ctl
            .call(what.clone(), |channel| {
                let request = request.clone();
                async move { ShardsClient::new(channel).observe(request).await }
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
                    // A new stream starts with the current table, maybe one already printed.
                    let key = (state.shard_count, state.ranges.clone());
                    if last.as_ref() == Some(&key) {
                        continue;
                    }
                    last = Some(key);
                    print_change(ctl.format, group, &state);
                    printed += 1;
                    if count.is_some_and(|count| printed >= count) {
                        return Ok(ExitCode::SUCCESS);
                    }
                }
                Ok(None) => break "the stream ended".to_owned(),
                Err(status) => break format!("{}: {}", status.code(), status.message()),
            }
        };
        eprintln!("zkcoord: watching {group}: {ended}; reconnecting");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Prints one table: a line of text, or a JSON object on one line.
fn print_change(format: Format, group: &str, state: &pb::ObserveGroupResponse) {
    match format {
        Format::Table if state.shard_count == 0 => println!("group {group} does not exist"),
        Format::Table => {
            let parts: Vec<String> = state
                .ranges
                .iter()
                .map(|r| {
                    let shards = range_cell(r.first, r.last);
                    match r.state() {
                        pb::ShardState::Owned => format!("{shards} {} (epoch {})", r.owner, r.epoch),
                        pb::ShardState::HandingOff => format!(
                            "{shards} {} (epoch {}) handing off to {}",
                            r.owner,
                            r.epoch,
                            if r.target.is_empty() { "nobody" } else { &r.target }
                        ),
                        pb::ShardState::Unassigned | pb::ShardState::Unspecified => format!("{shards} unassigned"),
                    }
                })
                .collect();
            println!("{group} ({} shards): {}", state.shard_count, parts.join("; "));
        }
        Format::Json => println!(
            "{}",
            json!({
                "group": group,
                "sequence": state.sequence,
                "shard_count": state.shard_count,
                "ranges": state.ranges.iter().map(range_json).collect::<Vec<_>>(),
            })
        ),
    }
}

/// The ranges `member` owns and those it is handing off.
fn member_ranges<'a>(ranges: &'a [pb::ShardRange], member: &str) -> (Vec<&'a pb::ShardRange>, Vec<&'a pb::ShardRange>) {
    let of = |state: pb::ShardState| ranges.iter().filter(|r| r.owner == member && r.state() == state).collect();
    (of(pb::ShardState::Owned), of(pb::ShardState::HandingOff))
}

/// How many shards the ranges cover.
fn count(ranges: &[&pb::ShardRange]) -> u32 {
    ranges.iter().map(|r| r.last - r.first + 1).sum()
}

/// Ranges as `0-15,32`, merging neighbours (ranges of one owner with different epochs).
fn range_list(ranges: &[&pb::ShardRange]) -> String {
    let mut merged: Vec<(u32, u32)> = Vec::new();
    for r in ranges {
        match merged.last_mut() {
            Some(last) if last.1 + 1 == r.first => last.1 = r.last,
            _ => merged.push((r.first, r.last)),
        }
    }
    merged.iter().map(|&(first, last)| range_cell(first, last)).collect::<Vec<_>>().join(",")
}

/// `3` or `0-15`.
fn range_cell(first: u32, last: u32) -> String {
    if first == last { first.to_string() } else { format!("{first}-{last}") }
}

/// A shard state's short name, as in the protocol (`OWNED`, `HANDING_OFF`, `UNASSIGNED`).
fn state_name(state: pb::ShardState) -> &'static str {
    match state {
        pb::ShardState::Owned => "OWNED",
        pb::ShardState::HandingOff => "HANDING_OFF",
        pb::ShardState::Unassigned | pb::ShardState::Unspecified => "UNASSIGNED",
    }
}

/// A range as JSON; epochs (zxids, like fencing tokens) are strings.
fn range_json(r: &pb::ShardRange) -> Value {
    json!({
        "first": r.first,
        "last": r.last,
        "state": state_name(r.state()),
        "owner": r.owner,
        "epoch": r.epoch.to_string(),
        "target": r.target,
    })
}

fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(first: u32, last: u32, owner: &str, epoch: u64) -> pb::ShardRange {
        pb::ShardRange {
            first,
            last,
            state: pb::ShardState::Owned.into(),
            owner: owner.into(),
            epoch,
            target: String::new(),
        }
    }

    #[test]
    fn a_members_ranges_are_merged_across_epochs() {
        let ranges = [range(0, 3, "a", 7), range(4, 4, "a", 9), range(5, 8, "b", 7), range(9, 9, "a", 7)];
        let (owned, handing_off) = member_ranges(&ranges, "a");
        assert_eq!(range_list(&owned), "0-4,9");
        assert_eq!(count(&owned), 6);
        assert!(handing_off.is_empty());
        assert_eq!(range_list(&[]), "");
    }
}
