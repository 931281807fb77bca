//! Measures the ZooKeeper round trip: one cheap read (`exists` of the namespace root) every
//! [`PROBE_INTERVAL`] while the session is connected.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::Metrics;
use crate::zk::ZkSession;

/// How often the round trip is measured.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// Probes until `shutdown` is cancelled. A failed read is not a round trip and is not
/// recorded (the session state shows the outage).
pub async fn run(session: ZkSession, metrics: Metrics, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(PROBE_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        // While disconnected, the first probe goes out as soon as the session is back.
        let connected = tokio::select! {
            () = shutdown.cancelled() => return,
            connected = session.wait_connected(PROBE_INTERVAL) => connected,
        };
        let (Ok(()), Ok(client)) = (connected, session.client()) else { continue };
        let started = Instant::now();
        if client.check_stat("/").await.is_ok() {
            metrics.record_zk_rtt(started.elapsed());
        }
    }
}
