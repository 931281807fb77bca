//! Noticing that files changed, by polling their metadata: what the TLS certificate reload
//! ([`crate::tls`]) and the `authz_file` reload ([`crate::authz::live`]) rely on.
//!
//! A file counts as changed when its modification time, length or inode changed, so a file
//! replaced by rename — as Kubernetes does with Secret and ConfigMap volumes — is noticed even
//! when its time and length stay the same. A file that disappears (or reappears) counts as a
//! change too; what to do about it is the caller's decision.

use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::PathBuf,
    time::{Duration, SystemTime},
};

use tokio_util::sync::CancellationToken;

/// How often watched files are checked.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// A version of some files: modification time, length and inode of each (`None`: unreadable).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Fingerprint(Vec<Option<(SystemTime, u64, u64)>>);

impl Fingerprint {
    fn of(paths: &[PathBuf]) -> Self {
        Self(
            paths
                .iter()
                .map(|path| fs::metadata(path).ok().and_then(|m| Some((m.modified().ok()?, m.len(), m.ino()))))
                .collect(),
        )
    }
}

/// Polls a set of files every [`POLL_INTERVAL`].
#[derive(Debug)]
pub struct Poller {
    paths: Vec<PathBuf>,
    seen: Fingerprint,
    interval: tokio::time::Interval,
}

impl Poller {
    /// Starts from the files' current version: only later changes are reported.
    pub fn new(paths: Vec<PathBuf>) -> Self {
        let seen = Fingerprint::of(&paths);
        let mut interval = tokio::time::interval(POLL_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self { paths, seen, interval }
    }

    /// Waits until some file changed since the last call (or since [`Poller::new`]); `false`
    /// when `shutdown` fired first.
    ///
    /// # Cancellation safety
    /// Cancellation safe: a change is only consumed by a call that returns it.
    pub async fn changed(&mut self, shutdown: &CancellationToken) -> bool {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return false,
                _ = self.interval.tick() => {}
            }
            let now = Fingerprint::of(&self.paths);
            if now != self.seen {
                self.seen = now;
                return true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_file_replaced_by_rename_is_a_change_and_an_untouched_one_is_not() {
        let dir = tempfile::tempdir().expect("test setup");
        let path = dir.path().join("rules.toml");
        fs::write(&path, "same").expect("test setup");
        let mut poller = Poller::new(vec![path.clone()]);
        let shutdown = CancellationToken::new();
        let unchanged = tokio::time::timeout(POLL_INTERVAL * 3, poller.changed(&shutdown)).await;
        assert!(unchanged.is_err(), "no change reported for an untouched file");

        let aside = dir.path().join("rules.new");
        fs::write(&aside, "same").expect("test setup");
        fs::rename(&aside, &path).expect("test setup");
        assert!(poller.changed(&shutdown).await);

        fs::remove_file(&path).expect("test setup");
        assert!(poller.changed(&shutdown).await, "a removed file is a change");
        shutdown.cancel();
        assert!(!poller.changed(&shutdown).await);
    }
}
