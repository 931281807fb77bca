//! Where a zkcoord instance's time goes, from its own spans: every call runs in a `grpc` span
//! (`rpc.method`) and every ZooKeeper request in a `zookeeper` span (`zk.op`) below the call's
//! (`zkcoord::zk::Zk`), so the time between a span's creation and its close is the time the
//! instance spent on the call, and on each request (sent, queued behind the session's earlier
//! requests, answered). [`SpanTimes`] sums them by call and request in the instance's process;
//! the bench asks for the sums over its stdin (`child.rs`) after each scenario and prints them
//! beside the table ([`table`]). Requests outside any call (election watches, proofs are not
//! traced, the janitor) are summed under no call.
//!
//! The two kinds of spans exist at zkcoord's default `info` level whether or not this layer
//! is there; the layer adds a clock read and a map update per span.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Instant,
};

use serde::{Deserialize, Serialize};
use tracing::{
    Subscriber,
    field::{Field, Visit},
    span,
};
use tracing_subscriber::{Layer, layer::Context, registry::LookupSpan};

/// The time of the spans of one call method and request kind.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Spent {
    /// Spans closed.
    pub count: u64,
    /// Their summed lifetimes, in seconds.
    pub seconds: f64,
}

/// Sums by (call method, request): `("/zkcoord.v1.Lock/Lock", "")` is the calls themselves,
/// `("/zkcoord.v1.Lock/Lock", "multi")` their `multi` requests, `("", "get_data")` requests
/// sent outside any call.
pub type Sums = BTreeMap<(String, String), Spent>;

/// The layer summing span lifetimes (see the module docs); clones share the sums.
#[derive(Debug, Clone, Default)]
pub struct SpanTimes {
    sums: Arc<Mutex<Sums>>,
}

impl SpanTimes {
    /// The sums since the last call, which starts new ones.
    pub fn take(&self) -> Sums {
        std::mem::take(&mut *self.sums.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

/// What a timed span carries.
struct Timing {
    method: String,
    op: String,
    start: Instant,
}

/// Reads `rpc.method` or `zk.op`.
#[derive(Default)]
struct Fields {
    method: Option<String>,
    op: Option<String>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "rpc.method" => self.method = Some(value.trim_matches('"').to_owned()),
            "zk.op" => self.op = Some(value.trim_matches('"').to_owned()),
            _ => {}
        }
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for SpanTimes {
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let name = attrs.metadata().name();
        if name != "grpc" && name != "zookeeper" {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let timing = if name == "grpc" {
            Timing { method: fields.method.unwrap_or_default(), op: String::new(), start: Instant::now() }
        } else {
            let method = span
                .scope()
                .skip(1)
                .find_map(|parent| {
                    parent.extensions().get::<Timing>().filter(|t| t.op.is_empty()).map(|t| t.method.clone())
                })
                .unwrap_or_default();
            Timing { method, op: fields.op.unwrap_or_default(), start: Instant::now() }
        };
        span.extensions_mut().insert(timing);
    }

    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let extensions = span.extensions();
        let Some(timing) = extensions.get::<Timing>() else { return };
        let seconds = timing.start.elapsed().as_secs_f64();
        let mut sums = self.sums.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let spent = sums.entry((timing.method.clone(), timing.op.clone())).or_default();
        spent.count += 1;
        spent.seconds += seconds;
    }
}

/// The sums of one scenario, as sent from the instance to the bench (one JSON line).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Breakdown {
    /// `(method, op, spent)`: see [`Sums`].
    pub spans: Vec<(String, String, Spent)>,
}

impl From<Sums> for Breakdown {
    fn from(sums: Sums) -> Self {
        Self { spans: sums.into_iter().map(|((method, op), spent)| (method, op, spent)).collect() }
    }
}

/// One call method's own spans (summed), and its requests' by kind.
type CallSpans<'a> = (Option<Spent>, Vec<(&'a str, Spent)>);

/// The breakdowns of the scenarios as a Markdown table: per call method, the calls, their mean
/// time in the instance, and per call the ZooKeeper requests of each kind with their mean time.
pub fn table(scenarios: &[(String, Breakdown)]) -> String {
    let mut out = String::from(
        "| scenario | call | calls | mean time in the instance ms | ZooKeeper requests per call (mean ms each) |\n|---|---|---|---|---|\n",
    );
    for (scenario, breakdown) in scenarios {
        let mut calls: BTreeMap<&str, CallSpans<'_>> = BTreeMap::new();
        for (method, op, spent) in &breakdown.spans {
            let entry = calls.entry(method.as_str()).or_default();
            if op.is_empty() {
                entry.0 = Some(*spent);
            } else {
                entry.1.push((op.as_str(), *spent));
            }
        }
        for (method, (call, requests)) in calls {
            let short = method.rsplit('/').next().unwrap_or(method);
            let (name, calls_n, mean) = match call {
                Some(call) if call.count > 0 => (
                    short.to_owned(),
                    call.count.to_string(),
                    format!("{:.3}", call.seconds * 1000.0 / call.count as f64),
                ),
                _ if method.is_empty() => ("(no call: watches, janitor)".to_owned(), "–".into(), "–".into()),
                _ => (short.to_owned(), "–".into(), "–".into()),
            };
            let per = call.map(|c| c.count).filter(|&n| n > 0);
            let requests = requests
                .iter()
                .map(|(op, spent)| {
                    let each = spent.seconds * 1000.0 / spent.count as f64;
                    match per {
                        Some(n) => format!("{op} {:.2} ({each:.3})", spent.count as f64 / n as f64),
                        None => format!("{op} ×{} ({each:.3})", spent.count),
                    }
                })
                .collect::<Vec<_>>()
                .join(" · ");
            out.push_str(&format!("| {scenario} | {name} | {calls_n} | {mean} | {requests} |\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::prelude::*;

    use super::*;

    #[test]
    fn requests_are_summed_under_the_call_they_were_sent_for() {
        let times = SpanTimes::default();
        let subscriber = tracing_subscriber::registry().with(times.clone());
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..2 {
                let call = tracing::info_span!("grpc", rpc.method = %"/zkcoord.v1.Lock/Lock");
                let _in_call = call.enter();
                drop(tracing::info_span!("zookeeper", zk.op = "multi"));
                drop(tracing::info_span!("zookeeper", zk.op = "get_children"));
            }
            drop(tracing::info_span!("zookeeper", zk.op = "get_data"));
            drop(tracing::info_span!("other"));
        });
        let sums = times.take();
        let count = |method: &str, op: &str| sums.get(&(method.to_owned(), op.to_owned())).map(|s| s.count);
        assert_eq!(count("/zkcoord.v1.Lock/Lock", ""), Some(2));
        assert_eq!(count("/zkcoord.v1.Lock/Lock", "multi"), Some(2));
        assert_eq!(count("/zkcoord.v1.Lock/Lock", "get_children"), Some(2));
        assert_eq!(count("", "get_data"), Some(1));
        assert_eq!(sums.len(), 4, "{sums:?}");
        assert!(times.take().is_empty(), "taking starts new sums");
        let table = table(&[("1 lock".into(), sums.into())]);
        assert!(table.contains("| 1 lock | Lock | 2 |"), "{table}");
        assert!(table.contains("multi 1.00"), "{table}");
    }
}
