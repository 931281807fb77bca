//! `CLOCK_MONOTONIC` in nanoseconds: comparable between the processes of one machine, which
//! is what lets the checker compare one process's intervals with another's.

use std::sync::OnceLock;

use tokio::time::Instant;

/// Now, in nanoseconds of `CLOCK_MONOTONIC`.
pub fn now_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A tokio (= std, = `CLOCK_MONOTONIC` on Linux) instant in nanoseconds of `CLOCK_MONOTONIC`,
/// through one pair of readings taken at the first call.
pub fn ns_of(instant: Instant) -> u64 {
    static BASE: OnceLock<(Instant, u64)> = OnceLock::new();
    let (base, base_ns) = *BASE.get_or_init(|| (Instant::now(), now_ns()));
    if instant >= base {
        base_ns + (instant - base).as_nanos() as u64
    } else {
        base_ns.saturating_sub((base - instant).as_nanos() as u64)
    }
}

/// Milliseconds between two readings, for reports.
pub fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}
