//! Output of the client subcommands: aligned tables for people, stable JSON for scripts.
//!
//! JSON field names are the protobuf field names (snake_case). 64-bit ids, fencing tokens and
//! shard epochs (`lease_id`, `fencing_token`, `epoch`) are strings, as in the protobuf JSON
//! mapping, so that tools that read numbers as doubles (JavaScript, older jq) keep every digit;
//! counts, terms and durations in milliseconds are numbers. Values (`value`) are shown as UTF-8 text.

use std::{
    fmt,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde_json::{Value, json};
use zkcoord_client::pb;

/// How results are printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns with a header line.
    #[default]
    Table,
    /// One JSON document (streams: one JSON object per line).
    Json,
}

/// Columns of text, printed aligned with two spaces between columns.
#[derive(Debug)]
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with these column headers.
    pub fn new(headers: &[&'static str]) -> Self {
        Self { headers: headers.to_vec(), rows: Vec::new() }
    }

    /// Adds a row (one cell per header).
    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.headers.len());
        self.rows.push(cells);
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let headers = self.headers.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>();
        for row in std::iter::once(&headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', width.saturating_sub(cell.chars().count())));
            }
            writeln!(f, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json(value: &Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string()));
}

/// A health status as the short name shown in tables and JSON, e.g. `NOT_SERVING`.
pub fn status_name(status: i32) -> &'static str {
    match pb::HealthStatus::try_from(status) {
        Ok(pb::HealthStatus::Serving) => "SERVING",
        Ok(pb::HealthStatus::Degraded) => "DEGRADED",
        Ok(pb::HealthStatus::NotServing) => "NOT_SERVING",
        // The protocol treats an unspecified status as SERVING.
        Ok(pb::HealthStatus::Unspecified) | Err(_) => "SERVING",
    }
}

/// A health as one table cell: the status, then the checks that are not SERVING.
pub fn health_cell(health: Option<&pb::Health>) -> String {
    let Some(health) = health else { return "SERVING".into() };
    let failing: Vec<String> = health
        .checks
        .iter()
        .filter(|c| status_name(c.status) != "SERVING")
        .map(|c| {
            if c.message.is_empty() {
                format!("{}={}", c.name, status_name(c.status))
            } else {
                format!("{}={}: {}", c.name, status_name(c.status), c.message)
            }
        })
        .collect();
    if failing.is_empty() {
        status_name(health.status).into()
    } else {
        format!("{} ({})", status_name(health.status), failing.join("; "))
    }
}

/// A health as JSON: `{"status": ..., "checks": [{"name", "status", "message"}]}`.
pub fn health_json(health: Option<&pb::Health>) -> Value {
    let Some(health) = health else { return json!({ "status": "SERVING", "checks": [] }) };
    let checks: Vec<Value> = health
        .checks
        .iter()
        .map(|c| json!({ "name": c.name, "status": status_name(c.status), "message": c.message }))
        .collect();
    json!({ "status": status_name(health.status), "checks": checks })
}

/// A leader as JSON.
pub fn leader_json(leader: &pb::LeaderInfo) -> Value {
    json!({
        "candidate_id": leader.candidate_id,
        "value": text(&leader.value),
        "priority": leader.priority,
        "term": leader.term,
        "fencing_token": leader.fencing_token.to_string(),
        "health": health_json(leader.health.as_ref()),
        "lease_id": leader.lease_id.to_string(),
        "elected_unix_ms": leader.elected_unix_ms,
    })
}

/// Column headers of [`leader_row`].
pub const LEADER_HEADERS: &[&str] =
    &["ELECTION", "LEADER", "PRIORITY", "TERM", "FENCING TOKEN", "LEASE", "HEALTH", "ELECTED", "VALUE"];

/// A leader as a table row under [`LEADER_HEADERS`].
pub fn leader_row(election: &str, leader: &pb::LeaderInfo) -> Vec<String> {
    vec![
        election.to_owned(),
        leader.candidate_id.clone(),
        leader.priority.to_string(),
        leader.term.to_string(),
        leader.fencing_token.to_string(),
        leader.lease_id.to_string(),
        health_cell(leader.health.as_ref()),
        ago(leader.elected_unix_ms),
        or_dash(&text(&leader.value)),
    ]
}

/// Bytes as text (invalid UTF-8 replaced).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Milliseconds as a short duration (`850ms`, `2.4s`, `3m12s`, `2h5m`); `-` for negative
/// values, which zkcoord uses for "not known here".
pub fn millis(ms: i64) -> String {
    if ms < 0 {
        return "-".into();
    }
    short_duration(Duration::from_millis(ms.unsigned_abs()))
}

/// A short, human duration.
pub fn short_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else if secs < 60 {
        let tenths = d.as_millis() / 100;
        if tenths.is_multiple_of(10) { format!("{secs}s") } else { format!("{}.{}s", tenths / 10, tenths % 10) }
    } else if secs < 3600 {
        format!("{}m{}s", secs / 60, secs % 60)
    } else {
        format!("{}h{}m", secs / 3600, (secs % 3600) / 60)
    }
}

/// How long ago a Unix time in milliseconds was, e.g. `12s ago`; `-` when unknown.
pub fn ago(unix_ms: i64) -> String {
    if unix_ms <= 0 {
        return "-".into();
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let elapsed = now.saturating_sub(unix_ms).max(0);
    format!("{} ago", short_duration(Duration::from_millis(elapsed.unsigned_abs())))
}

/// Metadata as one cell: `k=v,k2=v2` (sorted by key), `-` when empty.
pub fn metadata_cell<'a>(entries: impl IntoIterator<Item = (&'a String, &'a String)>) -> String {
    let mut entries: Vec<_> = entries.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    entries.sort();
    if entries.is_empty() { "-".into() } else { entries.join(",") }
}

/// `-` for an empty cell.
pub fn or_dash(cell: &str) -> String {
    if cell.is_empty() { "-".into() } else { cell.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_trim_line_ends() {
        let mut table = Table::new(&["ID", "NAME", "X"]);
        table.row(vec!["1".into(), "alpha".into(), String::new()]);
        table.row(vec!["200".into(), "b".into(), "y".into()]);
        assert_eq!(table.to_string(), "ID   NAME   X\n1    alpha\n200  b      y\n");
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(millis(-1), "-");
        assert_eq!(millis(850), "850ms");
        assert_eq!(millis(2400), "2.4s");
        assert_eq!(millis(3000), "3s");
        assert_eq!(millis(192_000), "3m12s");
        assert_eq!(millis(7_500_000), "2h5m");
    }

    #[test]
    fn health_cells_name_failing_checks() {
        let health = pb::Health {
            status: pb::HealthStatus::NotServing.into(),
            checks: vec![
                pb::HealthCheck {
                    name: "db".into(),
                    status: pb::HealthStatus::NotServing.into(),
                    message: "down".into(),
                },
                pb::HealthCheck {
                    name: "bus".into(),
                    status: pb::HealthStatus::Serving.into(),
                    message: String::new(),
                },
            ],
        };
        assert_eq!(health_cell(Some(&health)), "NOT_SERVING (db=NOT_SERVING: down)");
        assert_eq!(health_cell(None), "SERVING");
        assert_eq!(health_json(Some(&health))["checks"][1]["status"], "SERVING");
    }
}
