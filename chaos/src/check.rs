//! The checker: reads a run's history and finds what must never happen.
//!
//! - **Overlap**: two owners' acting intervals on one resource overlap (the election; a key
//!   with an exclusive hold on either side). An owner's interval for one hold (term, lock
//!   handle) is `[first passing check, min(last valid_until, when it decided to stop)]`.
//! - **Token order**: a hold that began after another conflicting one has a token that is not
//!   greater (fencing tokens grow from one leader / holder to the next).
//! - **Shards**, per shard of the members' group: no two ownerships' acting intervals overlap
//!   (`shard-overlap`; an ownership is one membership's `(shard, epoch)`), and each ownership
//!   that began after another has a greater epoch (`shard-epoch`); after the last fault healed,
//!   every shard is acted on within `bound` (`liveness`). Reported: actions, handoffs between
//!   members and the closest one.
//! - **Store**: the store accepted a write whose token is below one it had already accepted,
//!   or two owners wrote with the same token. Refusals are counted and listed: each is an
//!   owner that wrote with a stale token (fencing caught it).
//! - **Liveness**: after the last fault healed, a leader is acting and a lock is granted
//!   within `bound`. Reported: the longest leaderless gap (against the ttl) and the longest
//!   lock wait.
//! - **Lease loss**: a lease lost while no fault could explain it (only single-instance
//!   faults, none on ZooKeeper, none on the owner's process or links, around the loss).
//! - **Statuses**: every call ended with a documented status: no INTERNAL / UNKNOWN /
//!   UNIMPLEMENTED / DATA_LOSS, and none hung past its deadline (unless its process was
//!   paused).

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    time::Duration,
};

use crate::{
    clock::ms,
    history::{ELECTION, Event, shard_of},
    store::Accepted,
    workload::SHARD_COUNT,
};

/// Limits the checker holds the run to.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// A leader acts, and a lock is granted, within this after the last fault healed.
    pub liveness: Duration,
    /// Faults this long before a lease loss (plus the lease's ttl) may explain it.
    pub loss_excuse: Duration,
}

impl Default for Bounds {
    fn default() -> Self {
        Self { liveness: Duration::from_secs(20), loss_excuse: Duration::from_secs(8) }
    }
}

/// One owner's acting interval for one hold of one resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interval {
    /// The resource (`election` or a lock key).
    pub res: String,
    /// The owner (process name).
    pub owner: String,
    /// The hold (term, lock handle).
    pub hold: String,
    /// The fencing token.
    pub token: u64,
    /// Exclusive (leadership, exclusive lock) or shared.
    pub exclusive: bool,
    /// First passing check.
    pub start: u64,
    /// min(last valid_until, stop).
    pub end: u64,
}

/// One thing that must not happen, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// `overlap`, `token-order`, `store`, `liveness`, `lease-loss`, `status`.
    pub kind: &'static str,
    /// When (ns), for ordering.
    pub t: u64,
    /// What, in one line.
    pub what: String,
}

/// The checker's findings.
#[derive(Debug, Default)]
pub struct Report {
    /// Violations, earliest first.
    pub violations: Vec<Violation>,
    /// Statistics and notes, for the reader.
    pub notes: Vec<String>,
    /// Context of the first violation (nearby events).
    pub context: String,
}

impl Report {
    /// Whether the history passed.
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// The verdict and everything found, for printing.
    pub fn render(&self, t0: u64) -> String {
        let mut out = String::new();
        for note in &self.notes {
            let _ = writeln!(out, "  {note}");
        }
        if self.ok() {
            let _ = writeln!(out, "VERDICT: OK (no violation)");
            return out;
        }
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        for v in &self.violations {
            *kinds.entry(v.kind).or_default() += 1;
        }
        let _ = writeln!(out, "VERDICT: {} VIOLATION(S): {kinds:?}", self.violations.len());
        let first = &self.violations[0];
        let _ = writeln!(out, "FIRST VIOLATION at +{:.3}s [{}]: {}", rel(first.t, t0), first.kind, first.what);
        let mut shown = BTreeSet::new();
        for v in &self.violations {
            if shown.insert(v.kind) && v != first {
                let _ = writeln!(out, "first [{}] at +{:.3}s: {}", v.kind, rel(v.t, t0), v.what);
            }
        }
        let _ = writeln!(out, "all violations (at most 20):");
        for v in self.violations.iter().take(20) {
            let _ = writeln!(out, "  +{:.3}s [{}] {}", rel(v.t, t0), v.kind, v.what);
        }
        let _ = writeln!(out, "context of the first violation:\n{}", self.context);
        out
    }
}

fn rel(t: u64, t0: u64) -> f64 {
    (t as f64 - t0 as f64) / 1e9
}

/// A fault with its start and heal times.
#[derive(Clone, Debug)]
struct Fault {
    kind: String,
    target: String,
    start: u64,
    heal: u64,
}

fn faults_of(events: &[Event]) -> Vec<Fault> {
    let mut open: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut faults = Vec::new();
    let end = events.iter().map(event_time).max().unwrap_or(0);
    for e in events {
        if let Event::Fault { t, kind, target, phase } = e {
            if phase == "start" {
                open.insert((kind.clone(), target.clone()), *t);
            } else if let Some(start) = open.remove(&(kind.clone(), target.clone())) {
                faults.push(Fault { kind: kind.clone(), target: target.clone(), start, heal: *t });
            }
        }
    }
    faults.extend(open.into_iter().map(|((kind, target), start)| Fault { kind, target, start, heal: end }));
    faults.sort_by_key(|f| f.start);
    faults
}

/// The time of an event (a call's end).
pub fn event_time(e: &Event) -> u64 {
    match e {
        Event::Cert { t, .. }
        | Event::Stop { t, .. }
        | Event::Write { t, .. }
        | Event::Status { t, .. }
        | Event::Lease { t, .. }
        | Event::Fault { t, .. }
        | Event::Run { t, .. } => *t,
        Event::Call { t1, .. } => *t1,
    }
}

fn event_owner(e: &Event) -> Option<&str> {
    match e {
        Event::Cert { owner, .. }
        | Event::Stop { owner, .. }
        | Event::Write { owner, .. }
        | Event::Status { owner, .. }
        | Event::Lease { owner, .. }
        | Event::Call { owner, .. } => Some(owner),
        _ => None,
    }
}

/// The acting intervals of a history.
pub fn intervals(events: &[Event]) -> Vec<Interval> {
    let mut by_hold: BTreeMap<(String, String, String), Interval> = BTreeMap::new();
    for e in events {
        if let Event::Cert { t, until, owner, res, hold, token, exclusive } = e {
            let i = by_hold.entry((res.clone(), owner.clone(), hold.clone())).or_insert_with(|| Interval {
                res: res.clone(),
                owner: owner.clone(),
                hold: hold.clone(),
                token: *token,
                exclusive: *exclusive,
                start: *t,
                end: *until,
            });
            i.start = i.start.min(*t);
            i.end = i.end.max(*until);
        }
    }
    let mut stops: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    for e in events {
        if let Event::Stop { t, owner, res, hold } = e {
            let key = (res.clone(), owner.clone(), hold.clone());
            // The last stop of a hold (a hold may pause and resume, e.g. a term across a
            // broken stream); its interval covers the whole span.
            let s = stops.entry(key).or_insert(*t);
            *s = (*s).max(*t);
        }
    }
    let mut out: Vec<Interval> = by_hold
        .into_iter()
        .map(|(key, mut i)| {
            if let Some(&stop) = stops.get(&key)
                && stop >= i.start
            {
                i.end = i.end.min(stop);
            }
            i
        })
        .collect();
    out.sort_by_key(|i| (i.res.clone(), i.start));
    out
}

fn describe(i: &Interval, t0: u64) -> String {
    format!(
        "{} {} hold {} token {} [+{:.3}s, +{:.3}s]",
        i.owner,
        if i.exclusive { "exclusive" } else { "shared" },
        i.hold,
        i.token,
        rel(i.start, t0),
        rel(i.end, t0)
    )
}

/// Checks a history (all processes' events, the store's accepted writes).
pub fn check(events: &[Event], accepted: &[Accepted], bounds: Bounds) -> Report {
    let mut report = Report::default();
    let t0 = origin(events);
    let faults = faults_of(events);
    let all = intervals(events);
    let mut by_res: BTreeMap<&str, Vec<&Interval>> = BTreeMap::new();
    let mut by_shard: BTreeMap<u32, Vec<&Interval>> = BTreeMap::new();
    for i in &all {
        match shard_of(&i.res) {
            Some(shard) => by_shard.entry(shard).or_default().push(i),
            None => by_res.entry(&i.res).or_default().push(i),
        }
    }
    let mut v = Vec::new();
    for list in by_res.values() {
        check_overlap(list, t0, &mut v);
        check_tokens(list, t0, &mut v);
    }
    check_shards(events, &by_shard, bounds, t0, &mut v, &mut report.notes);
    check_store(events, accepted, t0, &mut v, &mut report.notes);
    check_liveness(events, &all, bounds, t0, &mut v, &mut report.notes);
    check_leases(events, &faults, bounds, t0, &mut v, &mut report.notes);
    check_calls(events, &faults, &mut v, &mut report.notes);
    let elections = by_res.get(ELECTION).map_or(0, Vec::len);
    let holds: usize = by_res.values().map(Vec::len).sum::<usize>() - elections;
    let ownerships: usize = by_shard.values().map(Vec::len).sum();
    report.notes.insert(
        0,
        format!(
            "{} acting intervals: {} leadership terms, {} lock holds on {} keys, {} shard ownerships on {} shards; {} faults",
            all.len(),
            elections,
            holds,
            by_res.len().saturating_sub(usize::from(elections > 0)),
            ownerships,
            by_shard.len(),
            faults.len()
        ),
    );
    v.sort_by_key(|v| v.t);
    if let Some(first) = v.first() {
        report.context = context(events, &faults, first, t0);
    }
    report.violations = v;
    report
}

/// The time reports count from: the run's `begin` (when the orchestrator started the
/// clients), else the earliest event.
pub fn origin(events: &[Event]) -> u64 {
    run_time(events, "begin").unwrap_or_else(|| events.iter().map(event_time).min().unwrap_or(0))
}

fn run_time(events: &[Event], which: &str) -> Option<u64> {
    events.iter().find_map(|e| match e {
        Event::Run { t, phase } if phase == which => Some(*t),
        _ => None,
    })
}

fn check_overlap(list: &[&Interval], t0: u64, v: &mut Vec<Violation>) {
    // Sorted by start; `active` holds earlier intervals that may still reach later ones.
    let mut active: Vec<&Interval> = Vec::new();
    for &b in list {
        active.retain(|a| a.end > b.start);
        for a in &active {
            if a.owner != b.owner && (a.exclusive || b.exclusive) && a.start < b.end {
                v.push(Violation {
                    kind: "overlap",
                    t: b.start,
                    what: format!(
                        "{}: {} overlaps {} by {:.1} ms",
                        b.res,
                        describe(a, t0),
                        describe(b, t0),
                        ms(a.end.min(b.end) - b.start)
                    ),
                });
            }
        }
        active.push(b);
    }
}

fn check_tokens(list: &[&Interval], t0: u64, v: &mut Vec<Violation>) {
    // Highest token of earlier-starting exclusive intervals, and of any.
    let mut max_excl: Option<&Interval> = None;
    let mut max_any: Option<&Interval> = None;
    for &b in list {
        let bar = if b.exclusive { max_any } else { max_excl };
        if let Some(a) = bar
            && a.owner != b.owner
            && a.token >= b.token
        {
            v.push(Violation {
                kind: "token-order",
                t: b.start,
                what: format!(
                    "{}: {} began after {} with a token not greater",
                    b.res,
                    describe(b, t0),
                    describe(a, t0)
                ),
            });
        }
        if b.exclusive && max_excl.is_none_or(|a| b.token > a.token) {
            max_excl = Some(b);
        }
        if max_any.is_none_or(|a| b.token > a.token) {
            max_any = Some(b);
        }
    }
}

/// A shard ownership in one line.
fn describe_ownership(i: &Interval, t0: u64) -> String {
    format!("{} epoch {} (hold {}) [+{:.3}s, +{:.3}s]", i.owner, i.token, i.hold, rel(i.start, t0), rel(i.end, t0))
}

/// Per shard: no two ownerships overlap, epochs grow from one ownership to the next, and every
/// shard is acted on soon after the last fault healed; notes the actions and handoffs seen.
fn check_shards(
    events: &[Event],
    by_shard: &BTreeMap<u32, Vec<&Interval>>,
    bounds: Bounds,
    t0: u64,
    v: &mut Vec<Violation>,
    notes: &mut Vec<String>,
) {
    let mut checks = 0usize;
    let (mut writes, mut refused) = (0usize, 0usize);
    for e in events {
        match e {
            Event::Cert { res, .. } if shard_of(res).is_some() => checks += 1,
            Event::Write { res, accepted, .. } if shard_of(res).is_some() => {
                writes += 1;
                refused += usize::from(!accepted);
            }
            _ => {}
        }
    }
    if by_shard.is_empty() && checks == 0 {
        return;
    }
    let same = |a: &Interval, b: &Interval| a.owner == b.owner && a.hold == b.hold;
    let (mut handoffs, mut returns) = (0usize, 0usize);
    // The closest handoff between members: (gap, shard, the new ownership's start).
    let mut closest: Option<(i128, u32, u64)> = None;
    let owners: BTreeSet<&str> = by_shard.values().flatten().map(|i| i.owner.as_str()).collect();
    for (&shard, list) in by_shard {
        // Sorted by start; `active` holds earlier ownerships that may still reach later ones.
        let mut active: Vec<&Interval> = Vec::new();
        let mut newest: Option<&Interval> = None;
        let mut latest_end: Option<&Interval> = None;
        for &b in list {
            active.retain(|a| a.end > b.start);
            for a in active.iter().filter(|a| !same(a, b) && a.start < b.end) {
                v.push(Violation {
                    kind: "shard-overlap",
                    t: b.start,
                    what: format!(
                        "shard {shard}: {} overlaps {} by {:.1} ms",
                        describe_ownership(a, t0),
                        describe_ownership(b, t0),
                        ms(a.end.min(b.end) - b.start)
                    ),
                });
            }
            active.push(b);
            if let Some(a) = newest
                && !same(a, b)
                && a.token >= b.token
            {
                v.push(Violation {
                    kind: "shard-epoch",
                    t: b.start,
                    what: format!(
                        "shard {shard}: {} began after {} with an epoch not greater",
                        describe_ownership(b, t0),
                        describe_ownership(a, t0)
                    ),
                });
            }
            if newest.is_none_or(|a| b.token > a.token) {
                newest = Some(b);
            }
            if let Some(a) = latest_end {
                if a.owner != b.owner {
                    handoffs += 1;
                    let gap = i128::from(b.start) - i128::from(a.end);
                    if closest.is_none_or(|(g, _, _)| gap < g) {
                        closest = Some((gap, shard, b.start));
                    }
                } else if a.hold != b.hold {
                    returns += 1;
                }
            }
            if latest_end.is_none_or(|a| b.end > a.end) {
                latest_end = Some(b);
            }
        }
    }
    notes.push(format!(
        "shards: {checks} passing checks, {writes} actions (store writes; {refused} refused) on {} shards by {} members; {} ownerships, {handoffs} handoffs between members, {returns} to the same member again",
        by_shard.len(),
        owners.len(),
        by_shard.values().map(Vec::len).sum::<usize>(),
    ));
    if let Some((gap, shard, at)) = closest {
        notes.push(format!(
            "closest shard handoff: {:.1} ms between the old owner's end and the new owner's first action (shard {shard}, at +{:.3}s)",
            gap as f64 / 1e6,
            rel(at, t0)
        ));
    }
    let Some(quiet) = run_time(events, "quiet") else { return };
    let bound = bounds.liveness.as_nanos() as u64;
    let mut slowest: Option<(u64, u32)> = None;
    for shard in 0..SHARD_COUNT {
        let list = by_shard.get(&shard).map_or(&[][..], Vec::as_slice);
        let first = list.iter().filter(|i| i.end > quiet).map(|i| i.start.max(quiet)).min();
        match first {
            Some(t) if t - quiet <= bound => {
                if slowest.is_none_or(|(s, _)| t - quiet > s) {
                    slowest = Some((t - quiet, shard));
                }
            }
            other => v.push(Violation {
                kind: "liveness",
                t: quiet + bound,
                what: format!(
                    "shard {shard}: nobody acted on it within {:?} after the last fault healed; first after: {}",
                    bounds.liveness,
                    other.map_or("never".to_owned(), |t| format!("+{:.3}s", rel(t, t0)))
                ),
            }),
        }
    }
    if let Some((wait, shard)) = slowest {
        notes.push(format!(
            "after the last fault healed: every shard was acted on within {:.0} ms (the last: shard {shard})",
            ms(wait)
        ));
    }
}

fn check_store(events: &[Event], accepted: &[Accepted], t0: u64, v: &mut Vec<Violation>, notes: &mut Vec<String>) {
    let mut last: BTreeMap<&str, &Accepted> = BTreeMap::new();
    for w in accepted {
        if let Some(prev) = last.get(w.res.as_str()) {
            if w.token < prev.token {
                v.push(Violation {
                    kind: "store",
                    t: w.t,
                    what: format!(
                        "{}: accepted token {} from {} after {} from {}",
                        w.res, w.token, w.owner, prev.token, prev.owner
                    ),
                });
            } else if w.token == prev.token && w.owner != prev.owner {
                v.push(Violation {
                    kind: "store",
                    t: w.t,
                    what: format!("{}: {} and {} both wrote with token {}", w.res, prev.owner, w.owner, w.token),
                });
            }
        }
        last.insert(&w.res, w);
    }
    let refused: Vec<&Event> = events.iter().filter(|e| matches!(e, Event::Write { accepted: false, .. })).collect();
    notes.push(format!(
        "store: {} writes accepted, {} refused (stale tokens fenced off)",
        accepted.len(),
        refused.len()
    ));
    for e in refused.iter().take(5) {
        if let Event::Write { t, owner, res, token, highest, .. } = e {
            notes
                .push(format!("  refused at +{:.3}s: {owner} wrote {res} with token {token} < {highest}", rel(*t, t0)));
        }
    }
}

fn check_liveness(
    events: &[Event],
    all: &[Interval],
    bounds: Bounds,
    t0: u64,
    v: &mut Vec<Violation>,
    notes: &mut Vec<String>,
) {
    let end = run_time(events, "end").unwrap_or_else(|| events.iter().map(event_time).max().unwrap_or(0));
    let quiet = run_time(events, "quiet");
    let ttl_ms = events
        .iter()
        .filter_map(|e| match e {
            Event::Lease { ttl_ms, .. } => Some(*ttl_ms),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    // Leaderless gaps between the end of the warm-up and the end.
    let t0_report = t0;
    let t0 = run_time(events, "start").unwrap_or(t0);
    let mut leads: Vec<(u64, u64)> = all.iter().filter(|i| i.res == ELECTION).map(|i| (i.start, i.end)).collect();
    leads.sort_unstable();
    let mut covered = t0;
    let mut longest = (0u64, t0);
    for &(s, e) in &leads {
        if s > covered && s > t0 && s.saturating_sub(covered) > longest.0 {
            longest = (s - covered, covered);
        }
        covered = covered.max(e);
    }
    if end > covered && end - covered > longest.0 {
        longest = (end - covered, covered);
    }
    let t0 = t0_report;
    notes.push(format!(
        "longest leaderless gap: {:.0} ms from +{:.3}s (largest ttl {ttl_ms} ms)",
        ms(longest.0),
        rel(longest.1, t0)
    ));
    let lock_waits = events.iter().filter_map(|e| match e {
        Event::Call { t0: a, t1: b, rpc, code, .. } if rpc.starts_with("Lock.Lock") && code == "Ok" => {
            Some((b - a, *a))
        }
        _ => None,
    });
    if let Some((wait, at)) = lock_waits.max() {
        notes.push(format!("longest lock wait (granted): {:.0} ms from +{:.3}s", ms(wait), rel(at, t0)));
    }
    let Some(quiet) = quiet else { return };
    let bound = bounds.liveness.as_nanos() as u64;
    let leader_after = leads.iter().filter(|&&(_, e)| e > quiet).map(|&(s, _)| s.max(quiet)).min();
    match leader_after {
        Some(t) if t - quiet <= bound => {
            notes.push(format!("after the last fault healed: a leader acted within {:.0} ms", ms(t - quiet)));
        }
        other => v.push(Violation {
            kind: "liveness",
            t: quiet + bound,
            what: format!(
                "no leader acted within {:?} after the last fault healed (+{:.3}s); first after: {}",
                bounds.liveness,
                rel(quiet, t0),
                other.map_or("never".to_owned(), |t| format!("+{:.3}s", rel(t, t0)))
            ),
        }),
    }
    let lock_after = events
        .iter()
        .filter_map(|e| match e {
            Event::Call { t1, rpc, code, .. } if rpc.starts_with("Lock.Lock") && code == "Ok" && *t1 > quiet => {
                Some(*t1)
            }
            _ => None,
        })
        .min();
    match lock_after {
        Some(t) if t - quiet <= bound => {
            notes.push(format!("after the last fault healed: a lock was granted within {:.0} ms", ms(t - quiet)));
        }
        other => v.push(Violation {
            kind: "liveness",
            t: quiet + bound,
            what: format!(
                "no lock granted within {:?} after the last fault healed; first after: {}",
                bounds.liveness,
                other.map_or("never".to_owned(), |t| format!("+{:.3}s", rel(t, t0)))
            ),
        }),
    }
}

/// Whether `fault` may explain trouble of `owner`: it hit ZooKeeper, or the owner's own
/// process or links.
fn excuses(fault: &Fault, owner: &str) -> bool {
    fault.kind.starts_with("zk-")
        || fault.target == owner
        || fault.target.starts_with(&format!("{owner}->"))
        || fault.target.starts_with(&format!("{owner}:"))
}

fn check_leases(
    events: &[Event],
    faults: &[Fault],
    bounds: Bounds,
    t0: u64,
    v: &mut Vec<Violation>,
    notes: &mut Vec<String>,
) {
    let mut lost = 0;
    for e in events {
        if let Event::Lease { t, owner, lease, state, ttl_ms } = e
            && state == "lost"
        {
            lost += 1;
            let from = t.saturating_sub(ttl_ms * 1_000_000 + bounds.loss_excuse.as_nanos() as u64);
            let near: Vec<&Fault> = faults.iter().filter(|f| f.start <= *t && f.heal >= from).collect();
            if !near.iter().any(|f| excuses(f, owner)) {
                v.push(Violation {
                    kind: "lease-loss",
                    t: *t,
                    what: format!(
                        "{owner} lost lease {lease} (ttl {ttl_ms} ms) at +{:.3}s with no fault on ZooKeeper or on its process/links; faults nearby: {:?}",
                        rel(*t, t0),
                        near.iter().map(|f| format!("{} {}", f.kind, f.target)).collect::<Vec<_>>()
                    ),
                });
            }
        }
    }
    notes.push(format!("leases lost: {lost}"));
}

/// Codes the README's error table does not document (a client-side transport failure shows
/// as UNKNOWN with a transport message; that is the client's, not zkcoord's).
fn undocumented(code: &str, message: &str) -> bool {
    match code {
        "Internal" | "Unimplemented" | "DataLoss" => true,
        "Unknown" => {
            !(message.contains("transport") || message.contains("h2 protocol") || message.contains("connection"))
        }
        _ => false,
    }
}

fn check_calls(events: &[Event], faults: &[Fault], v: &mut Vec<Violation>, notes: &mut Vec<String>) {
    let mut codes: BTreeMap<(String, String), usize> = BTreeMap::new();
    for e in events {
        let Event::Call { t0, t1, owner, rpc, code, message, deadline_ms } = e else { continue };
        *codes.entry((rpc.clone(), code.clone())).or_default() += 1;
        if undocumented(code, message) {
            v.push(Violation { kind: "status", t: *t1, what: format!("{owner}: {rpc} ended {code}: {message}") });
        }
        if code == "Hang" {
            let paused = faults.iter().any(|f| f.target == *owner && f.start <= *t1 && f.heal >= *t0);
            if !paused {
                v.push(Violation {
                    kind: "status",
                    t: *t1,
                    what: format!(
                        "{owner}: {rpc} (deadline {deadline_ms} ms) hung for {:.0} ms: {message}",
                        ms(t1 - t0)
                    ),
                });
            }
        }
    }
    let summary: Vec<String> = codes.iter().map(|((rpc, code), n)| format!("{rpc} {code}: {n}")).collect();
    notes.push(format!("calls: {}", summary.join(", ")));
}

/// Faults and events of the owners involved around a violation.
fn context(events: &[Event], faults: &[Fault], first: &Violation, t0: u64) -> String {
    let mut out = String::new();
    let (from, to) = (first.t.saturating_sub(6_000_000_000), first.t + 2_000_000_000);
    for f in faults.iter().filter(|f| f.start <= to && f.heal >= from) {
        let _ = writeln!(out, "  fault {} {} [+{:.3}s, +{:.3}s]", f.kind, f.target, rel(f.start, t0), rel(f.heal, t0));
    }
    let owners: BTreeSet<&str> = events
        .iter()
        .filter_map(event_owner)
        .filter(|o| first.what.contains(&format!("{o} ")) || first.what.starts_with(&format!("{o}:")))
        .collect();
    let mut nearby: Vec<&Event> = events
        .iter()
        .filter(|e| {
            let t = event_time(e);
            t >= from && t <= to && event_owner(e).is_some_and(|o| owners.contains(o))
        })
        .filter(|e| !matches!(e, Event::Cert { .. } | Event::Write { accepted: true, .. }))
        .collect();
    nearby.sort_by_key(|e| event_time(e));
    for e in nearby.iter().rev().take(40).rev() {
        let _ = writeln!(out, "  +{:.3}s {}", rel(event_time(e), t0), serde_json::to_string(e).unwrap_or_default());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn cert(t: u64, until: u64, owner: &str, token: u64) -> Event {
        Event::Cert {
            t,
            until,
            owner: owner.into(),
            res: ELECTION.into(),
            hold: format!("{owner}/{token}"),
            token,
            exclusive: true,
        }
    }

    fn stop(t: u64, owner: &str, token: u64) -> Event {
        Event::Stop { t, owner: owner.into(), res: ELECTION.into(), hold: format!("{owner}/{token}") }
    }

    fn lock(t: u64, until: u64, owner: &str, key: &str, hold: &str, token: u64, exclusive: bool) -> Event {
        Event::Cert { t, until, owner: owner.into(), res: key.into(), hold: hold.into(), token, exclusive }
    }

    fn kinds(report: &Report) -> Vec<&'static str> {
        report.violations.iter().map(|v| v.kind).collect()
    }

    #[test]
    fn a_clean_handover_passes() {
        let events = vec![
            Event::Run { t: 0, phase: "start".into() },
            cert(S, 3 * S, "a", 10),
            cert(2 * S, 4 * S, "a", 10),
            stop(2 * S + 100, "a", 10),
            cert(2 * S + 200, 5 * S, "b", 11),
            lock(S, 2 * S, "x", "k", "h1", 5, true),
            lock(2 * S, 3 * S, "y", "k", "h2", 6, false),
            lock(2 * S + 1, 3 * S, "z", "k", "h3", 7, false),
        ];
        let report = check(&events, &[], Bounds::default());
        assert!(report.ok(), "{}", report.render(0));
    }

    #[test]
    fn overlapping_leaders_are_caught() {
        // a trusted its heartbeat until 4 s and never stopped; b acted from 3 s.
        let events = vec![cert(S, 4 * S, "a", 10), cert(3 * S, 6 * S, "b", 11)];
        let report = check(&events, &[], Bounds::default());
        assert_eq!(kinds(&report), ["overlap"], "{}", report.render(0));
        assert!(report.violations[0].what.contains("overlaps"));
    }

    #[test]
    fn an_exclusive_hold_overlapping_a_shared_one_is_caught_but_shared_ones_may_overlap() {
        let events = vec![
            lock(S, 3 * S, "x", "k", "h1", 5, false),
            lock(S, 3 * S, "y", "k", "h2", 5, false),
            lock(2 * S, 4 * S, "z", "k", "h3", 6, true),
        ];
        let report = check(&events, &[], Bounds::default());
        assert_eq!(kinds(&report), ["overlap", "overlap"], "{}", report.render(0));
    }

    #[test]
    fn a_token_regression_is_caught() {
        let events = vec![cert(S, 2 * S, "a", 10), stop(2 * S, "a", 10), cert(3 * S, 4 * S, "b", 9)];
        let report = check(&events, &[], Bounds::default());
        assert_eq!(kinds(&report), ["token-order"], "{}", report.render(0));
    }

    #[test]
    fn the_store_must_not_accept_a_lower_token() {
        let w = |t, token, owner: &str| Accepted { t, res: "k".into(), token, owner: owner.into() };
        let report = check(&[], &[w(1, 5, "a"), w(2, 7, "b"), w(3, 6, "a")], Bounds::default());
        assert_eq!(kinds(&report), ["store"]);
    }

    #[test]
    fn a_lease_lost_without_a_fault_is_caught_and_one_under_a_zookeeper_fault_is_not() {
        let lost =
            |t, owner: &str| Event::Lease { t, owner: owner.into(), lease: 1, state: "lost".into(), ttl_ms: 1000 };
        let fault = |t, phase: &str| Event::Fault {
            t,
            kind: "zk-leader-kill".into(),
            target: "zk-1".into(),
            phase: phase.into(),
        };
        let events = vec![fault(S, "start"), fault(3 * S, "heal"), lost(4 * S, "a"), lost(60 * S, "b")];
        let report = check(&events, &[], Bounds::default());
        assert_eq!(kinds(&report), ["lease-loss"]);
        assert!(report.violations[0].what.starts_with("b lost"));
    }

    #[test]
    fn internal_and_hangs_are_caught() {
        let call = |code: &str| Event::Call {
            t0: S,
            t1: 30 * S,
            owner: "a".into(),
            rpc: "Lock.Lock(exclusive)".into(),
            code: code.into(),
            message: "m".into(),
            deadline_ms: 2000,
        };
        let report = check(&[call("Internal"), call("Hang"), call("DeadlineExceeded")], &[], Bounds::default());
        assert_eq!(kinds(&report), ["status", "status"]);
    }

    fn own(t: u64, until: u64, owner: &str, shard: u32, lease: i64, epoch: u64) -> Event {
        Event::Cert {
            t,
            until,
            owner: owner.into(),
            res: crate::history::shard_res(shard),
            hold: format!("{lease}/{epoch}"),
            token: epoch,
            exclusive: true,
        }
    }

    fn disown(t: u64, owner: &str, shard: u32, lease: i64, epoch: u64) -> Event {
        Event::Stop { t, owner: owner.into(), res: crate::history::shard_res(shard), hold: format!("{lease}/{epoch}") }
    }

    #[test]
    fn shard_handoffs_in_epoch_order_pass_and_are_counted() {
        let events = vec![
            own(S, 3 * S, "a", 0, 1, 10),
            disown(2 * S, "a", 0, 1, 10),
            own(2 * S + 1, 4 * S, "b", 0, 2, 12),
            // b's validity ran out; a (a new lease) got it back later with a newer epoch.
            own(5 * S, 6 * S, "a", 0, 3, 20),
            // Another shard, owned by a alone, its validity renewed.
            own(S, 3 * S, "a", 1, 1, 10),
            own(2 * S, 4 * S, "a", 1, 1, 10),
            // Revoked from a and assigned to it again: one check stops the old epoch and
            // allows the new one.
            own(S, 3 * S, "a", 2, 1, 10),
            disown(2 * S, "a", 2, 1, 10),
            own(2 * S, 4 * S, "a", 2, 1, 11),
        ];
        let report = check(&events, &[], Bounds::default());
        assert!(report.ok(), "{}", report.render(0));
        let notes = report.notes.join("\n");
        assert!(notes.contains("6 ownerships, 2 handoffs between members, 1 to the same member again"), "{notes}");
    }

    #[test]
    fn two_members_acting_on_one_shard_at_once_are_caught() {
        // a trusted its heartbeat until 4 s; b acted from 3 s (with a newer epoch).
        let events =
            vec![own(S, 4 * S, "a", 7, 1, 10), own(3 * S, 5 * S, "b", 7, 2, 12), own(3 * S, 5 * S, "b", 8, 2, 12)];
        let report = check(&events, &[], Bounds::default());
        assert_eq!(kinds(&report), ["shard-overlap"], "{}", report.render(0));
        assert!(report.violations[0].what.starts_with("shard 7: a epoch 10"), "{}", report.render(0));
    }

    #[test]
    fn one_member_acting_on_two_epochs_of_a_shard_at_once_is_caught() {
        let events = vec![own(S, 4 * S, "a", 7, 1, 10), own(3 * S, 5 * S, "a", 7, 1, 12)];
        let report = check(&events, &[], Bounds::default());
        assert_eq!(kinds(&report), ["shard-overlap"], "{}", report.render(0));
    }

    #[test]
    fn a_shard_epoch_that_does_not_grow_is_caught() {
        let events = vec![own(S, 2 * S, "a", 3, 1, 10), disown(2 * S, "a", 3, 1, 10), own(3 * S, 4 * S, "b", 3, 2, 10)];
        let report = check(&events, &[], Bounds::default());
        assert_eq!(kinds(&report), ["shard-epoch"], "{}", report.render(0));
    }

    #[test]
    fn a_shard_nobody_acts_on_after_the_last_fault_is_caught() {
        let mut events = vec![
            Event::Run { t: 0, phase: "start".into() },
            cert(S, 50 * S, "c", 1),
            Event::Call {
                t0: 3 * S,
                t1: 3 * S + 1,
                owner: "l".into(),
                rpc: "Lock.Lock(shared)".into(),
                code: "Ok".into(),
                message: String::new(),
                deadline_ms: 2000,
            },
            Event::Run { t: 2 * S, phase: "quiet".into() },
            Event::Run { t: 40 * S, phase: "end".into() },
        ];
        // Every shard but 5 is acted on right after the quiet period began.
        events.extend((0..SHARD_COUNT).filter(|&s| s != 5).map(|s| own(3 * S, 30 * S, "a", s, 1, 10)));
        let report = check(&events, &[], Bounds::default());
        assert_eq!(kinds(&report), ["liveness"], "{}", report.render(0));
        assert!(report.violations[0].what.starts_with("shard 5:"), "{}", report.render(0));
    }

    #[test]
    fn no_leader_after_the_last_fault_is_caught() {
        let events = vec![
            Event::Run { t: 0, phase: "start".into() },
            cert(S, 2 * S, "a", 10),
            Event::Run { t: 3 * S, phase: "quiet".into() },
            Event::Run { t: 40 * S, phase: "end".into() },
        ];
        let report = check(&events, &[], Bounds::default());
        assert_eq!(kinds(&report), ["liveness", "liveness"], "{}", report.render(0));
    }
}
