//! Znode data *proven current*: what heartbeat answers list (leaderships, shard ownerships)
//! must be current as of a session proof (see [`crate::zk::proof`]).
//!
//! # Timing argument
//!
//! One view per znode, kept by a data watch. A view is current as of the start `t0` of a
//! session proof when its watch was armed before `t0` and no event had arrived when the proof
//! arrived, or when it was read after the proof arrived. A caller answering at `c` uses a view
//! only when it is current as of some `t0 > c − window` (`window ≤ 1 s`): so if the znode was
//! changed by a write committed at `D`, no answer given after `D + window` uses the old data.
//! (Users state what that means for their owners: see `recipe::election::leadership`.)
//!
//! # Cost
//!
//! No ZooKeeper request per use: one read when a view is first used or its watch fired, one
//! watch per znode in use. Views unused for [`IDLE`] are dropped.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures_util::FutureExt;

use crate::{
    error::Result,
    sync_util::lock,
    zk::{Proof, Zk, ZkSession},
};

/// A view not asked about for this long is dropped (its watch is then ignored).
pub const IDLE: Duration = Duration::from_secs(60);

type Armed = Pin<Box<dyn Future<Output = zookeeper_client::WatchedEvent> + Send>>;

/// Decodes a znode's data and its `mzxid` into the value views keep.
pub type Decode<T> = fn(&[u8], u64) -> Result<T>;

/// One znode's value as last read, and how current it is known to be.
struct View<T> {
    /// The value; `None` when the znode does not exist.
    value: Option<Arc<T>>,
    /// The watch armed by the read of `value`, on connection `generation`.
    watch: Option<Armed>,
    generation: u64,
    /// When the read that armed `watch` had completed.
    armed_at: Option<Instant>,
    /// The proof start as of which `value` is known current.
    current_as_of: Option<Instant>,
    used: Option<Instant>,
}

impl<T> Default for View<T> {
    fn default() -> Self {
        Self { value: None, watch: None, generation: 0, armed_at: None, current_as_of: None, used: None }
    }
}

/// Proven views of znodes of one session (per tenant), decoded to `T`.
pub struct ProvenViews<T> {
    session: ZkSession,
    decode: Decode<T>,
    views: Mutex<Views<T>>,
}

/// The views by path, and how many there were after the last sweep of idle ones.
struct Views<T> {
    by_path: HashMap<String, Arc<tokio::sync::Mutex<View<T>>>>,
    swept_at: usize,
}

impl<T> std::fmt::Debug for ProvenViews<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProvenViews").field("views", &lock(&self.views).by_path.len()).finish()
    }
}

impl<T: Send + Sync + 'static> ProvenViews<T> {
    /// Views over `session`, decoding with `decode`.
    pub fn new(session: ZkSession, decode: Decode<T>) -> Self {
        Self { session, decode, views: Mutex::new(Views { by_path: HashMap::new(), swept_at: 0 }) }
    }

    /// The value of `path` current as of `proof` (see the module docs): `Ok(None)` when the
    /// znode does not exist, `Err` when this instance cannot tell (a read failed, or the view
    /// is not current within the proof's window). Costs a ZooKeeper read only for a view used
    /// for the first time or whose watch fired.
    ///
    /// # Cancellation safety
    /// Safe to cancel: a cancelled read leaves the view to be read again.
    pub async fn current(&self, path: &str, proof: Proof) -> Result<Option<Arc<T>>> {
        let client = self.session.client()?;
        let view = self.view(path);
        let mut view = view.lock().await;
        view.used = Some(Instant::now());
        refresh(&client, path, &mut view, proof, self.decode).await?;
        if view.current_as_of.is_none_or(|t| Instant::now() >= t + proof.timing.window) {
            return Err(crate::Error::Unavailable);
        }
        Ok(view.value.clone())
    }

    fn view(&self, path: &str) -> Arc<tokio::sync::Mutex<View<T>>> {
        let mut views = lock(&self.views);
        if let Some(view) = views.by_path.get(path) {
            return view.clone();
        }
        // Sweep idle views on insertion (no task of its own), once their number doubled since
        // the last sweep: a sweep costs the number of views, so each insertion costs O(1)
        // amortized however many distinct paths are asked about.
        if views.by_path.len() >= (2 * views.swept_at).max(64) {
            let now = Instant::now();
            views.by_path.retain(|_, v| match v.try_lock() {
                Ok(v) => v.used.is_some_and(|used| now < used + IDLE),
                Err(_) => true, // in use
            });
            views.swept_at = views.by_path.len();
        }
        views.by_path.entry(path.to_owned()).or_default().clone()
    }
}

/// Brings `view` up to `proof` (see the module docs): keeps it when its watch, armed before
/// the proof began, has not fired; otherwise reads the znode again (after the proof arrived,
/// so the read is current as of its start) and re-arms the watch.
async fn refresh<T>(client: &Zk, path: &str, view: &mut View<T>, proof: Proof, decode: Decode<T>) -> Result<()> {
    if view.generation != proof.generation {
        view.watch = None;
        view.current_as_of = None;
    }
    if view.current_as_of.is_some_and(|t| t >= proof.started) {
        return Ok(());
    }
    if let Some(watch) = view.watch.as_mut() {
        let fired = watch.now_or_never().is_some();
        if !fired && view.armed_at.is_some_and(|armed| armed < proof.started) {
            view.current_as_of = Some(proof.started);
            return Ok(());
        }
        if fired {
            view.watch = None;
        }
        if !fired {
            // Armed after this proof began: current as of the proof it was read after.
            return Ok(());
        }
    }
    let (value, watch): (Option<Arc<T>>, Armed) = match client.get_and_watch_data(path).await? {
        Some((data, stat, watcher)) => {
            let value = decode(&data, u64::try_from(stat.mzxid).unwrap_or(0))?;
            (Some(Arc::new(value)), Box::pin(watcher.changed()))
        }
        None => {
            let (_, watcher) = client.check_and_watch_stat(path).await?;
            (None, Box::pin(watcher.changed()))
        }
    };
    view.value = value;
    view.watch = Some(watch);
    view.generation = proof.generation;
    view.armed_at = Some(Instant::now());
    view.current_as_of = Some(proof.started);
    Ok(())
}
