//! The `authz_file` rules in force, reloaded when the file changes.
//!
//! The file is polled ([`crate::file_change`]); after a change it is read and parsed again,
//! and the new rules apply to every request that starts afterwards. A file that cannot be
//! read or parsed (half written, a typo, removed) is logged and the previous rules stay in
//! force: an operator's mistake never opens or closes everything at once. Each decision (a
//! request's tenant, then its names) takes the rules once; a reload landing between the two
//! decisions of one request can split them across two versions of the rules.
//!
//! Streams outlive the decision that started them: each new version of the rules is announced
//! ([`LiveAuthz::changes`]), and a stream handler re-checks its stream against it and ends the
//! stream (PERMISSION_DENIED, [`crate::error::RIGHTS_WITHDRAWN`]) when the rules no longer allow
//! it ([`crate::api::Context::withdrawn`]). Rights withdrawn by an edit of the file so take
//! effect on running streams within the poll interval ([`crate::file_change`], one second)
//! plus a re-check.

use std::sync::{
    Arc, PoisonError, RwLock,
    atomic::{AtomicU64, Ordering},
};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Authz;
use crate::file_change::Poller;

/// The rules in force. Cheap to clone; clones share the rules.
#[derive(Clone, Debug)]
pub struct LiveAuthz {
    shared: Arc<RulesInForce>,
}

/// The rules in force and how their reloads went, shared by the clones of a [`LiveAuthz`].
#[derive(Debug)]
struct RulesInForce {
    rules: RwLock<Arc<Authz>>,
    /// The configured tenants: reloaded rules may name only these.
    tenants: Vec<String>,
    reloads: AtomicU64,
    reload_failures: AtomicU64,
    /// Counts the versions of the rules put in force; streams re-check on every change.
    version: watch::Sender<u64>,
}

impl LiveAuthz {
    /// Starts with `rules`; they follow their file ([`Authz::source`]) once
    /// [`LiveAuthz::spawn_reloader`] runs. Reloaded rules may name only `tenants`.
    pub fn new(rules: Authz, tenants: Vec<String>) -> Self {
        let shared = RulesInForce {
            rules: RwLock::new(Arc::new(rules)),
            tenants,
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
            version: watch::Sender::new(0),
        };
        Self { shared: Arc::new(shared) }
    }

    /// The rules in force now.
    pub fn current(&self) -> Arc<Authz> {
        self.shared.rules.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Announces every new version of the rules: a receiver sees a change once the rules it
    /// would read with [`LiveAuthz::current`] are new.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.shared.version.subscribe()
    }

    /// How many times the changed file was loaded and put in force (read by the tests).
    #[cfg(test)]
    pub fn reloads(&self) -> u64 {
        self.shared.reloads.load(Ordering::Relaxed)
    }

    /// How many times the changed file could not be used (the previous rules stayed; read by
    /// the tests).
    #[cfg(test)]
    pub fn reload_failures(&self) -> u64 {
        self.shared.reload_failures.load(Ordering::Relaxed)
    }

    /// Follows the rules' file until `shutdown`; `None` when the rules came from no file.
    pub fn spawn_reloader(&self, shutdown: CancellationToken) -> Option<tokio::task::JoinHandle<()>> {
        let path = self.current().source()?.to_owned();
        let live = self.clone();
        // Watching starts now; a change since the rules were first read (at configuration
        // time) is caught by reading the file once more right away.
        let mut poller = Poller::new(vec![path.clone()]);
        Some(tokio::spawn(async move {
            let mut changed = true;
            while changed || poller.changed(&shutdown).await {
                changed = false;
                let (loading, tenants) = (path.clone(), live.shared.tenants.clone());
                let load = move || Authz::load(&loading).and_then(|r| r.check_tenants(&tenants).map(|()| r));
                match tokio::task::spawn_blocking(load).await {
                    Ok(Ok(rules)) if *live.current() == rules => {}
                    Ok(Ok(rules)) => live.replace(rules),
                    Ok(Err(err)) => {
                        live.shared.reload_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %err, "authz_file changed but cannot be used; keeping the previous rules");
                    }
                    Err(err) => {
                        live.shared.reload_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(error = %err, "authz_file reload task failed; keeping the previous rules");
                    }
                }
            }
        }))
    }

    fn replace(&self, rules: Authz) {
        let count = rules.rules.len();
        *self.shared.rules.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(rules);
        self.shared.reloads.fetch_add(1, Ordering::Relaxed);
        self.shared.version.send_modify(|version| *version += 1);
        tracing::info!(rules = count, "authz_file changed; new requests and running streams use the new rules");
    }
}

#[cfg(test)]
mod tests {
    use std::{fs, time::Duration};

    use super::*;
    use crate::authz::{Access, Resource};

    fn write(path: &std::path::Path, text: &str) {
        let aside = path.with_extension("new");
        fs::write(&aside, text).expect("test setup");
        fs::rename(&aside, path).expect("test setup");
    }

    async fn until(what: &str, mut check: impl FnMut() -> bool) {
        for _ in 0..100 {
            if check() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("not reached: {what}");
    }

    #[tokio::test]
    async fn rules_follow_the_file_and_a_broken_file_keeps_the_previous_ones() {
        let dir = tempfile::tempdir().expect("test setup");
        let path = dir.path().join("authz.toml");
        fs::write(&path, "[[allow]]\nidentity = \"node\"\nlocks = [\"a:*\"]\n").expect("test setup");
        let live = LiveAuthz::new(Authz::load(&path).expect("test setup"), vec!["known".into()]);
        let allows = |live: &LiveAuthz, key: &str| {
            live.current().allows(Some("node"), None, Resource::LockKey, Access::Write, [key])
        };
        assert!(allows(&live, "a:1") && !allows(&live, "b:1"));
        let shutdown = CancellationToken::new();
        let mut changes = live.changes();
        let task = live.spawn_reloader(shutdown.clone()).expect("rules from a file are followed");

        write(&path, "[[allow]]\nidentity = \"node\"\nlocks = [\"b:*\"]\n");
        until("the new rules", || allows(&live, "b:1")).await;
        assert!(!allows(&live, "a:1"));
        assert_eq!(live.reloads(), 1);
        assert!(changes.has_changed().expect("sender alive"), "the new rules are announced");
        assert_eq!(*changes.borrow_and_update(), 1);

        write(&path, "[[allow]]\nidentity = \"node\"\nlocks = [\"c:*\"\n");
        until("the failed reload", || live.reload_failures() == 1).await;
        write(&path, "[[allow]]\nidentity = \"node\"\nlocks = [\"c:*\"]\ntenant = \"unknown\"\n");
        until("the second failed reload", || live.reload_failures() == 2).await;
        fs::remove_file(&path).expect("test setup");
        until("the third failed reload", || live.reload_failures() == 3).await;
        assert!(allows(&live, "b:1") && !allows(&live, "c:1"), "the previous rules stay in force");
        assert!(!changes.has_changed().expect("sender alive"), "failed reloads announce nothing");
        shutdown.cancel();
        task.await.expect("test setup");
    }

    #[test]
    fn parsed_rules_have_no_file_to_follow() {
        let live = LiveAuthz::new(Authz::parse("").expect("test setup"), Vec::new());
        assert!(live.spawn_reloader(CancellationToken::new()).is_none());
    }
}
