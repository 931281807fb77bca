//! `zkcoord campaign NAME -- CMD ARGS...`: run a command only while leading an election, like
//! `etcdctl elect` with a command or `consul lock`.
//!
//! The campaign grants itself a lease (kept alive in the background), campaigns with it, and:
//! - when elected, starts CMD with `ZKCOORD_FENCING_TOKEN`, `ZKCOORD_TERM`,
//!   `ZKCOORD_ELECTION`, `ZKCOORD_CANDIDATE_ID` and `ZKCOORD_LEASE_ID` in its environment;
//! - when it loses leadership (transferred, preempted, unhealthy, lease not confirmed ...),
//!   sends CMD SIGTERM, then SIGKILL after `--grace`, and goes on campaigning;
//! - when CMD exits by itself while leading, resigns, revokes the lease and exits with CMD's
//!   exit code (128 + the signal number when CMD was killed by a signal);
//! - on SIGTERM or SIGINT, stops CMD the same way, resigns, revokes the lease and exits 0;
//! - when the candidacy itself ends (its lease expired, or someone resigned it), stops CMD and
//!   campaigns again with a new lease.
//!
//! It follows the client rule (see the crate `zkcoord-client`): CMD runs only while the lease's
//! last confirmed heartbeat lists the leadership, and is SIGKILLed at the latest when that
//! heartbeat's send time + ttl passes, whatever `--grace` says. On DEPOSED the campaign stops
//! CMD and only then acknowledges the deposition, so the successor starts after CMD has stopped
//! (or, without the acknowledgement, after this leadership's validity ran out). Commands should
//! still pass `ZKCOORD_FENCING_TOKEN` to what they write: a paused process cannot be stopped in
//! time by anyone. When the campaign process itself is killed with SIGKILL, CMD is killed with
//! it (see [`super::child`]) and the lease expires after its ttl.
//!
//! Progress goes to stderr, one line per event (a JSON object per line with `--output json`);
//! stdout and stdin are CMD's.

use std::{
    ffi::OsString,
    io,
    process::{ExitCode, ExitStatus},
    time::Duration,
};

use clap::Args;
use serde_json::{Value, json};
use tokio::signal::unix::{Signal, SignalKind, signal};
use zkcoord_client::{
    CampaignOptions, LeaderElector, LeadershipEvent, LeaseKeeper, LeaseOptions, LossReason, pb::DeposedReason,
};

use super::{
    ClientArgs, Ctl, CtlError,
    child::{self, Child},
    output::Format,
    parse_duration,
};

/// How long to wait before campaigning again after the candidacy ended or zkcoord could not
/// be reached.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// `zkcoord campaign NAME [flags] -- CMD ARGS...`.
#[derive(Debug, Args)]
pub struct CampaignArgs {
    /// Where the zkcoord instances are and how to talk to them.
    #[command(flatten)]
    pub client: ClientArgs,
    /// The election's name.
    pub name: String,
    /// Election priority: 0 is the best, 1000 the worst.
    #[arg(long, default_value_t = 0, value_name = "P")]
    pub priority: i32,
    /// Candidate id, also the lease owner [default: HOSTNAME-PID]
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
    /// Lease time to live: how soon others take over when this process dies.
    #[arg(long, default_value = "3s", value_parser = parse_duration, value_name = "DURATION")]
    pub ttl: Duration,
    /// Time CMD gets between SIGTERM and SIGKILL.
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub grace: Duration,
    /// Ask for preemption: a better-priority candidate takes over from a sitting leader (the
    /// election's first campaign decides).
    #[arg(long)]
    pub preempt: bool,
    /// The leader's value others see, e.g. this node's address.
    #[arg(long, value_name = "VALUE")]
    pub value: Option<String>,
    /// The command to run while leading, and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// Campaigns until a signal arrives or CMD exits by itself; see the module docs.
///
/// # Errors
/// When the first lease or candidacy cannot be had, or CMD cannot be started.
pub async fn run(args: CampaignArgs) -> Result<ExitCode, CtlError> {
    let ctl = Ctl::new(&args.client)?;
    let id = args.id.clone().unwrap_or_else(default_id);
    let report = Report { format: ctl.format, election: args.name.clone(), candidate_id: id.clone() };
    let mut signals = Signals::new().map_err(|err| CtlError::Failed(format!("cannot handle signals: {err}")))?;
    let mut first = true;
    loop {
        let (lease, elector) = match candidacy(&ctl, &args, &id).await {
            Ok(candidacy) => candidacy,
            Err(err) if first || !retryable(&err) => return Err(err),
            Err(err) => {
                report.event("retrying", json!({ "error": err.to_string() }), &format!("{err}; retrying"));
                if let Some(name) = signals.within(RETRY_DELAY).await {
                    report.event("interrupted", json!({ "signal": name }), &format!("{name}: exiting"));
                    return Ok(ExitCode::SUCCESS);
                }
                continue;
            }
        };
        first = false;
        report.event(
            "campaigning",
            json!({ "priority": args.priority, "lease_id": lease.id().to_string() }),
            &format!("campaigning with priority {} on lease {}", args.priority, lease.id()),
        );
        let round = Round { args: &args, report: &report, lease, elector, child: None, term: None };
        match round.run(&mut signals).await? {
            RoundEnd::Exit(code) => return Ok(code),
            RoundEnd::CandidacyEnded => {
                report.event("ended", json!({}), "the candidacy ended (lease lost or resigned); campaigning again");
                if let Some(name) = signals.within(RETRY_DELAY).await {
                    report.event("interrupted", json!({ "signal": name }), &format!("{name}: exiting"));
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
    }
}

/// Grants a lease and campaigns with it.
async fn candidacy(ctl: &Ctl, args: &CampaignArgs, id: &str) -> Result<(LeaseKeeper, LeaderElector), CtlError> {
    let options = LeaseOptions::new(id, args.ttl).metadata("pid", std::process::id().to_string());
    let lease = LeaseKeeper::grant(ctl.client(), options)
        .await
        .map_err(|err| ctl.error(err, format!("campaign {}: lease grant", args.name)))?;
    // Acknowledged only once CMD has stopped (see the module docs).
    let mut options = CampaignOptions::new(&args.name, id).priority(args.priority).manual_acknowledgement();
    if args.preempt {
        options = options.preempt(true);
    }
    if let Some(value) = &args.value {
        options = options.value(value.as_bytes());
    }
    match LeaderElector::campaign(ctl.client(), &lease, options).await {
        Ok(elector) => Ok((lease, elector)),
        Err(err) => {
            let _ = lease.revoke().await;
            Err(ctl.error(err, format!("campaign {}", args.name)))
        }
    }
}

/// Whether campaigning again may help.
fn retryable(err: &CtlError) -> bool {
    match err {
        CtlError::Unreachable { .. } => true,
        CtlError::Status { status, .. } => status.code() == tonic::Code::Unavailable,
        _ => false,
    }
}

/// How a round (one lease, one candidacy) ended.
enum RoundEnd {
    /// Exit the process with this code.
    Exit(ExitCode),
    /// The candidacy ended by itself: campaign again.
    CandidacyEnded,
}

/// One lease and candidacy, and the command run while it leads.
struct Round<'a> {
    args: &'a CampaignArgs,
    report: &'a Report,
    lease: LeaseKeeper,
    elector: LeaderElector,
    child: Option<Child>,
    /// The term CMD runs for.
    term: Option<i64>,
}

impl Round<'_> {
    async fn run(mut self, signals: &mut Signals) -> Result<RoundEnd, CtlError> {
        loop {
            tokio::select! {
                name = signals.next() => {
                    self.report.event("interrupted", json!({ "signal": name }), &format!("{name}: stopping"));
                    self.stop_child().await;
                    self.quit().await;
                    return Ok(RoundEnd::Exit(ExitCode::SUCCESS));
                }
                event = self.elector.next() => match event {
                    Some(LeadershipEvent::BecameLeader { term, fencing_token }) => {
                        self.stop_child().await;
                        if let Err(err) = self.start_child(term, fencing_token) {
                            self.quit().await;
                            return Err(err);
                        }
                    }
                    Some(LeadershipEvent::LostLeadership { reason }) => {
                        let name = loss_name(reason);
                        self.report.event("deposed", json!({ "reason": name }), &format!("lost leadership: {name}"));
                        self.stop_child().await;
                        // zkcoord took it away (not merely unconfirmed for a moment): now that
                        // CMD has stopped, say so, so the successor need not wait.
                        let taken = matches!(reason, LossReason::Deposed(_) | LossReason::Unconfirmed);
                        if let (true, Some(term)) = (taken, self.term.take()) {
                            let _ = self.elector.acknowledge(term).await;
                        }
                    }
                    None => {
                        self.stop_child().await;
                        return Ok(RoundEnd::CandidacyEnded);
                    }
                },
                status = wait(&mut self.child) => {
                    let pid = self.child.take().map_or(0, |c| c.pid());
                    let code = status.map_or(1, child::exit_code);
                    self.report.event(
                        "exited",
                        json!({ "pid": pid, "exit_code": code }),
                        &format!("the command (pid {pid}) exited by itself with code {code}; resigning"),
                    );
                    self.quit().await;
                    return Ok(RoundEnd::Exit(ExitCode::from(code)));
                }
            }
        }
    }

    /// Starts the command for `term`.
    fn start_child(&mut self, term: i64, fencing_token: u64) -> Result<(), CtlError> {
        let env = [
            ("ZKCOORD_FENCING_TOKEN", fencing_token.to_string()),
            ("ZKCOORD_TERM", term.to_string()),
            ("ZKCOORD_ELECTION", self.args.name.clone()),
            ("ZKCOORD_CANDIDATE_ID", self.report.candidate_id.clone()),
            ("ZKCOORD_LEASE_ID", self.lease.id().to_string()),
        ];
        let child = Child::spawn(&self.args.command, &env)
            .map_err(|err| CtlError::Failed(format!("cannot start the command: {err}")))?;
        self.report.event(
            "elected",
            json!({ "term": term, "fencing_token": fencing_token.to_string(), "pid": child.pid() }),
            &format!("elected: term {term}, fencing token {fencing_token}; started the command (pid {})", child.pid()),
        );
        self.child = Some(child);
        self.term = Some(term);
        Ok(())
    }

    /// Stops the command, if it runs: SIGTERM, then SIGKILL after the grace period — or
    /// sooner, when the last confirmed heartbeat's validity runs out first.
    async fn stop_child(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let pid = child.pid();
        let now = tokio::time::Instant::now();
        let valid_for =
            self.lease.last_confirmed().map_or(Duration::ZERO, |beat| beat.until.saturating_duration_since(now));
        match child.stop(self.args.grace.min(valid_for)).await {
            Ok((status, killed)) => {
                let code = child::exit_code(status);
                let how = if killed { "killed after the grace period" } else { "stopped" };
                self.report.event(
                    "stopped",
                    json!({ "pid": pid, "exit_code": code, "killed": killed }),
                    &format!("the command (pid {pid}) {how}, exit code {code}"),
                );
            }
            Err(err) => self.report.event(
                "stopped",
                json!({ "pid": pid, "error": err.to_string() }),
                &format!("cannot stop the command (pid {pid}): {err}"),
            ),
        }
    }

    /// Resigns and revokes the lease (each best effort: the lease ends after its ttl anyway).
    async fn quit(self) {
        let id = self.lease.id();
        let resigned = self.elector.resign().await;
        let revoked = self.lease.revoke().await;
        let error = match (resigned, revoked) {
            (Ok(()), Ok(())) => None,
            (Err(err), _) | (_, Err(err)) => Some(err.to_string()),
        };
        match error {
            None => self.report.event("resigned", json!({ "lease_id": id.to_string() }), "resigned, lease revoked"),
            Some(err) => self.report.event(
                "resigned",
                json!({ "lease_id": id.to_string(), "error": err }),
                &format!("resigning failed ({err}); the lease ends after its ttl"),
            ),
        }
    }
}

/// Waits for the command to exit; never resolves when none runs.
async fn wait(child: &mut Option<Child>) -> io::Result<ExitStatus> {
    match child {
        Some(child) => child.wait().await,
        None => std::future::pending().await,
    }
}

/// SIGTERM and SIGINT.
struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    fn new() -> io::Result<Self> {
        Ok(Self { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())? })
    }

    /// The next signal's name.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }

    /// Waits `delay`, or less when a signal arrives (then named).
    async fn within(&mut self, delay: Duration) -> Option<&'static str> {
        tokio::time::timeout(delay, self.next()).await.ok()
    }
}

/// Progress lines on stderr.
struct Report {
    format: Format,
    election: String,
    candidate_id: String,
}

impl Report {
    /// Reports `event`: `text` for people, `fields` (plus the event, election and candidate)
    /// as one JSON line.
    fn event(&self, event: &str, fields: Value, text: &str) {
        match self.format {
            Format::Table => eprintln!("zkcoord campaign {} {}: {text}", self.election, self.candidate_id),
            Format::Json => {
                let mut line = json!({ "event": event, "election": self.election, "candidate_id": self.candidate_id });
                if let (Some(line), Value::Object(fields)) = (line.as_object_mut(), fields) {
                    line.extend(fields);
                }
                eprintln!("{line}");
            }
        }
    }
}

/// A short name for why leadership was lost.
fn loss_name(reason: LossReason) -> &'static str {
    match reason {
        LossReason::Deposed(DeposedReason::Resigned) => "resigned",
        LossReason::Deposed(DeposedReason::LeaseExpired) => "lease expired",
        LossReason::Deposed(DeposedReason::Preempted) => "preempted",
        LossReason::Deposed(DeposedReason::Unhealthy) => "unhealthy",
        LossReason::Deposed(DeposedReason::Transferred) => "transferred",
        LossReason::Deposed(DeposedReason::Unspecified) => "deposed",
        LossReason::Unconfirmed => "zkcoord cannot confirm the leadership",
        LossReason::LeaseUnconfirmed => "lease not confirmed",
        LossReason::LeaseLost => "lease lost",
        LossReason::StreamBroken => "campaign stream broken",
    }
}

/// `HOSTNAME-PID`, with the hostname cut to the characters names allow.
fn default_id() -> String {
    format!("{}-{}", crate::config::name_safe_hostname(64), std::process::id())
}
