//! The one ZooKeeper session of a zkcoord instance, kept alive for the life of the process.
//!
//! A background task connects, creates the namespace and its directories, and publishes the
//! session's status on a `watch` channel. When the session expires (or ZooKeeper rejects it)
//! the task establishes a new one; until then [`ZkSession::client`] answers
//! [`Error::Unavailable`]. Every zkcoord instance uses exactly this one session, whatever the
//! number of leases, candidacies or locks it serves.
//!
//! What recipes must assume (Curator's SUSPENDED vs LOST):
//! * `Disconnected`: the session may still be alive in the ensemble, and ephemerals with it;
//!   but this instance cannot know what changes, so it must not confirm anything.
//! * `Connecting` after a previous session: the previous session is gone, with its
//!   ephemerals and watches; state must be re-read.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use zookeeper_client::{Acls, Client, CreateMode, SessionState};

use crate::{
    error::{Error, Result},
    zk::{
        Zk, ZkAuth, acl, foreign, layout,
        proof::{self, Proof, ProofTiming, Proofs},
    },
};

/// Shortest pause between two failed connection attempts.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between two failed connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long a graceful close waits for ZooKeeper to acknowledge it.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// The log detail of a tenant root the client library refuses as a chroot (never expected:
/// tenant names are validated).
const BAD_TENANT_ROOT: &str = "bad tenant root";

/// How to reach ZooKeeper and where zkcoord's state lives there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZkConfig {
    /// Comma-separated `host:port` list, without chroot.
    pub hosts: String,
    /// Absolute znode path under which all of zkcoord's state lives, e.g. `/zkcoord`.
    pub namespace: String,
    /// Requested ZooKeeper session timeout (the ensemble may negotiate another).
    pub session_timeout: Duration,
    /// Credentials the session authenticates with (`zookeeper_auth` or `zookeeper_auth_file`);
    /// `None`: unauthenticated, znodes with an open ACL.
    pub auth: Option<ZkAuth>,
    /// The tenants besides the default one (`tenants`), each with its state under
    /// `<namespace>/tenants/<name>`; empty: only the default tenant.
    pub tenants: Vec<String>,
}

/// The status of zkcoord's ZooKeeper session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionStatus {
    /// No session: connecting for the first time, or after the previous session expired.
    Connecting,
    /// Connected since `since`; requests are served.
    Connected {
        /// The ZooKeeper session id.
        session_id: i64,
        /// Numbers the connections of this process, across sessions: it changes on every
        /// (re-)connection, so "still the same connection" is `generation` equality.
        generation: u64,
        /// When this connection was (re-)established.
        since: Instant,
    },
    /// The session exists but its connection was lost at `since`; it may reconnect or expire.
    Disconnected {
        /// When the connection was lost.
        since: Instant,
    },
    /// The session was closed (`ZkSession::close`, at shutdown).
    Closed,
}

impl SessionStatus {
    /// True when requests can be served.
    pub fn is_connected(&self) -> bool {
        matches!(self, Self::Connected { .. })
    }

    /// The connection generation while connected, else 0.
    pub fn generation(&self) -> u64 {
        match self {
            Self::Connected { generation, .. } => *generation,
            _ => 0,
        }
    }
}

/// The session's status, with the client to use while it is connected.
#[derive(Clone, Debug)]
struct Connection {
    status: SessionStatus,
    client: Option<Client>,
}

/// The ephemeral znode that registers this instance while its session lives.
#[derive(Clone, Debug)]
pub struct Registration {
    /// Path under the namespace, e.g. `/instances/<incarnation>`.
    pub path: String,
    /// The znode's data.
    pub data: Vec<u8>,
}

/// Handle to the instance's ZooKeeper session. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ZkSession {
    shared: watch::Receiver<Connection>,
    status: watch::Receiver<SessionStatus>,
    cancel: CancellationToken,
    /// The ACL of every znode created through this session ([`acl::for_session`]).
    acls: Acls<'static>,
    /// The namespace (absolute).
    namespace: Arc<str>,
    /// The absolute chroot of a tenant's view ([`ZkSession::for_tenant`]); `None`: the
    /// namespace itself (the default tenant).
    scope: Option<Arc<str>>,
    /// Proofs that the session is alive in the ensemble and reads are current (see [`proof`]).
    proofs: Proofs,
    /// Znodes skipped as not zkcoord's, counted for every tenant together (see [`foreign`]).
    skipped: Arc<foreign::Skipped>,
}

impl ZkSession {
    /// Starts the session task. Returns at once; the session connects in the background (see
    /// [`ZkSession::status`]). Each new session creates the namespace, its directories and the
    /// `registration` ephemeral — and the same under the root of each of `config.tenants` —
    /// before it is published as connected, so "connected" implies "registered", in every
    /// tenant.
    ///
    /// With `config.auth`, every (re)connection authenticates with it, and everything the
    /// session creates is writable only by that identity (see [`acl`]); without, a warning
    /// says that zkcoord's state is writable by any ZooKeeper client.
    pub(crate) fn start(config: ZkConfig, registration: Option<Registration>) -> Self {
        let acls = acl::for_session(config.auth.is_some());
        match &config.auth {
            Some(auth) => tracing::info!(
                user = auth.user(),
                "zookeeper: digest authentication; znodes readable by anyone, writable only by this user"
            ),
            None => tracing::warn!(
                namespace = %config.namespace,
                "zookeeper_auth is not set: zkcoord's znodes get an open ACL and any ZooKeeper client can modify them"
            ),
        }
        let (shared_tx, shared) = watch::channel(Connection { status: SessionStatus::Connecting, client: None });
        let (status_tx, status) = watch::channel(SessionStatus::Connecting);
        let cancel = CancellationToken::new();
        let namespace: Arc<str> = config.namespace.as_str().into();
        let task = SessionTask {
            generation: 0.into(),
            config,
            registration,
            shared: shared_tx,
            status: status_tx,
            cancel: cancel.clone(),
        };
        let timing = ProofTiming::for_session(task.config.session_timeout);
        tokio::spawn(task.run());
        let current = shared.clone();
        let proofs = proof::start(
            move || {
                let shared = current.borrow();
                (shared.status, shared.client.clone())
            },
            status.clone(),
            timing,
            cancel.clone(),
        );
        Self { shared, status, cancel, acls, namespace, scope: None, proofs, skipped: Arc::default() }
    }

    /// A view of this session for configured tenant `tenant` (one of `config.tenants`): the
    /// same session, status and ACL, but [`ZkSession::client`] is chrooted to the tenant's
    /// root, so recipes over it see only the tenant's state, with the usual layout.
    pub(crate) fn for_tenant(&self, tenant: &str) -> Self {
        let root = format!("{}{}", self.namespace, layout::tenant(tenant));
        Self { scope: Some(root.into()), ..self.clone() }
    }

    /// Where readers log and count the znodes they skip as not zkcoord's ([`foreign`]).
    pub(crate) fn skipped(&self) -> &foreign::Skipped {
        &self.skipped
    }

    /// The ACL to create znodes with: the one choice of [`acl::for_session`].
    pub(crate) fn acls(&self) -> Acls<'static> {
        self.acls
    }

    /// The chrooted client of the current session.
    ///
    /// # Errors
    /// [`Error::Unavailable`] while there is no connected session.
    pub(crate) fn client(&self) -> Result<Zk> {
        let shared = self.shared.borrow();
        match (&shared.status, &shared.client) {
            (SessionStatus::Connected { .. }, Some(client)) => match &self.scope {
                None => Ok(Zk::new(client.clone())),
                Some(root) => client
                    .clone()
                    .chroot(root.as_ref())
                    .map(Zk::new)
                    .map_err(|_| Error::Internal(BAD_TENANT_ROOT.into())),
            },
            (SessionStatus::Closed, _) => Err(Error::ShuttingDown),
            _ => Err(Error::Unavailable),
        }
    }

    /// The session's liveness proofs.
    pub(crate) fn proofs(&self) -> &Proofs {
        &self.proofs
    }

    /// The latest proof if it counts now on the current connection (while it does, the session
    /// is alive in the ensemble and views current as of its start, see [`proof`]); otherwise
    /// waits up to one proof interval (plus a round trip's allowance) for the next proof.
    /// Cancellation safe.
    pub(crate) async fn proven_soon(&self) -> Option<Proof> {
        let timing = self.proofs.timing();
        self.proofs.within(|| self.status().generation(), timing.interval + timing.window / 2).await
    }

    /// The current status.
    pub fn status(&self) -> SessionStatus {
        *self.status.borrow()
    }

    /// A receiver that sees every status change.
    pub(crate) fn watch_status(&self) -> watch::Receiver<SessionStatus> {
        self.status.clone()
    }

    /// Waits until the session is connected, at most `timeout`.
    ///
    /// # Errors
    /// [`Error::Unavailable`] on timeout. Cancellation safe.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<()> {
        let mut status = self.status.clone();
        tokio::time::timeout(timeout, status.wait_for(SessionStatus::is_connected))
            .await
            .map_err(|_| Error::Unavailable)?
            .map_err(|_| Error::ShuttingDown)?;
        Ok(())
    }

    /// Closes the session (its ephemerals vanish at once rather than at session expiry) and
    /// stops reconnecting, no sooner than [`ProofTiming::lead`] after the last confirmation
    /// (see [`Proofs::last_vouched`]). Waits at most a few seconds for ZooKeeper to
    /// acknowledge.
    pub(crate) async fn close(&self) {
        // Other instances cannot tell this close from an expiry, after which they count the
        // confirmation lead as elapsed (see `recipe::lease::janitor`): let that much pass since
        // the last confirmation first.
        if let Some(last) = self.proofs.last_vouched() {
            tokio::time::sleep_until((last + self.proofs.timing().lead()).into()).await;
        }
        self.cancel.cancel();
        let mut status = self.status.clone();
        let _ = tokio::time::timeout(CLOSE_TIMEOUT * 2, status.wait_for(|s| *s == SessionStatus::Closed)).await;
    }
}

struct SessionTask {
    generation: std::sync::atomic::AtomicU64,
    config: ZkConfig,
    registration: Option<Registration>,
    shared: watch::Sender<Connection>,
    status: watch::Sender<SessionStatus>,
    cancel: CancellationToken,
}

impl SessionTask {
    fn publish(&self, status: SessionStatus, client: Option<Client>) {
        if *self.status.borrow() != status {
            tracing::info!(?status, "zookeeper session status");
        }
        self.shared.send_replace(Connection { status, client });
        self.status.send_replace(status);
    }

    async fn run(self) {
        let mut backoff = MIN_BACKOFF;
        while !self.cancel.is_cancelled() {
            self.publish(SessionStatus::Connecting, None);
            let connected = tokio::select! {
                () = self.cancel.cancelled() => break,
                r = connect(&self.config, self.registration.as_ref()) => r,
            };
            match connected {
                Ok(client) => {
                    backoff = MIN_BACKOFF;
                    self.serve(client).await;
                }
                Err(err) => {
                    tracing::warn!(error = %err, hosts = %self.config.hosts, "cannot establish zookeeper session");
                    tokio::select! {
                        () = self.cancel.cancelled() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        self.publish(SessionStatus::Closed, None);
    }

    fn connected(&self, session_id: i64) -> SessionStatus {
        let generation = self.generation.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        SessionStatus::Connected { session_id, generation, since: Instant::now() }
    }

    /// Follows one session until it ends (expired, failed, or closed on cancellation).
    async fn serve(&self, client: Client) {
        let session_id = client.session_id().0;
        let mut watcher = client.state_watcher();
        // The state may have moved on since `connect` returned: start from what it is now.
        let mut state = client.state();
        loop {
            match state {
                SessionState::SyncConnected => self.publish(self.connected(session_id), Some(client.clone())),
                SessionState::Disconnected | SessionState::ConnectedReadOnly => {
                    self.publish(SessionStatus::Disconnected { since: Instant::now() }, Some(client.clone()));
                }
                SessionState::Expired | SessionState::Closed | SessionState::AuthFailed => {
                    tracing::warn!(?state, session_id, "zookeeper session ended; establishing a new one");
                    return;
                }
            }
            state = tokio::select! {
                () = self.cancel.cancelled() => {
                    // Dropping every clone of the client closes the session.
                    self.publish(SessionStatus::Connecting, None);
                    drop(client);
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, wait_terminal(&mut watcher)).await;
                    return;
                }
                state = watcher.changed() => state,
            };
        }
    }
}

async fn wait_terminal(watcher: &mut zookeeper_client::StateWatcher) {
    while !matches!(watcher.changed().await, SessionState::Closed | SessionState::Expired) {}
}

/// Connects a new session (authenticated with `config.auth`, which the client re-sends on
/// every reconnection), prepares the namespace and registers the instance.
async fn connect(config: &ZkConfig, registration: Option<&Registration>) -> Result<Client> {
    let mut connector = Client::connector().with_session_timeout(config.session_timeout);
    if let Some(auth) = &config.auth {
        connector = connector.with_auth(auth.scheme(), &auth.credentials());
    }
    // `connect` itself gives up after about one session timeout; bound it anyway.
    let client = tokio::time::timeout(config.session_timeout * 2, connector.connect(&config.hosts))
        .await
        .map_err(|_| Error::Unavailable)??;
    let authenticated = config.auth.is_some();
    let acls = acl::for_session(authenticated);
    // Creating an existing node needs CREATE on its parent, which may belong to someone else:
    // look first.
    let unrooted = Zk::new(client.clone());
    if unrooted.check_stat(&config.namespace).await?.is_none() {
        match unrooted.mkdir(&config.namespace, &CreateMode::Persistent.with_acls(acls)).await {
            Ok(()) => {}
            Err(zookeeper_client::Error::NoAuth) => {
                return Err(Error::Internal("cannot create the namespace: its parent is not writable (NoAuth)".into()));
            }
            Err(err) => return Err(err.into()),
        }
    }
    let client = client.chroot(config.namespace.as_str()).map_err(|_| Error::Internal("bad namespace".into()))?;
    let zk = Zk::new(client.clone());
    prepare(&zk, authenticated, registration).await?;
    if !config.tenants.is_empty() {
        acl::ensure_directory(&zk, layout::TENANTS, authenticated).await?;
        // Tenants are independent: prepare them concurrently.
        let tenants = config.tenants.iter().map(|tenant| {
            let (client, zk) = (client.clone(), &zk);
            async move {
                acl::ensure_directory(zk, &layout::tenant(tenant), authenticated).await?;
                let root = format!("{}{}", config.namespace, layout::tenant(tenant));
                let client = client.chroot(root).map_err(|_| Error::Internal(BAD_TENANT_ROOT.into()))?;
                prepare(&Zk::new(client), authenticated, registration).await
            }
        });
        futures_util::future::try_join_all(tenants).await?;
    }
    tracing::info!(session_id = client.session_id().0, timeout = ?client.session_timeout(), "zookeeper session established");
    Ok(client)
}

/// Under `client`'s chroot (the namespace, or a tenant's root, which must exist): the
/// directories and the instance's registration.
async fn prepare(client: &Zk, authenticated: bool, registration: Option<&Registration>) -> Result<()> {
    acl::ensure_directory(client, "/", authenticated).await?;
    for path in layout::DIRECTORIES {
        acl::ensure_directory(client, path, authenticated).await?;
    }
    let Some(registration) = registration else { return Ok(()) };
    let ephemeral = CreateMode::Ephemeral.with_acls(acl::for_session(authenticated));
    let data = stamp_session_timeout(&registration.data, client.session_timeout());
    match client.create(&registration.path, &data, &ephemeral).await {
        Ok(Some(_)) => Ok(()),
        // A retried create that had succeeded: ours if our session owns it.
        Ok(None) => {
            let owner = client.check_stat(&registration.path).await?.map(|stat| stat.ephemeral_owner);
            if owner != Some(client.session_id().0) {
                return Err(Error::Internal("instance registration owned by another session".into()));
            }
            Ok(())
        }
        Err(zookeeper_client::Error::NoAuth) => Err(Error::Internal(
            "cannot register the instance (NoAuth): the namespace belongs to other ZooKeeper credentials; check zookeeper_auth".into(),
        )),
        Err(err) => Err(err.into()),
    }
}

/// The registration's data with the session's negotiated timeout added (as
/// `session_timeout_ms`, when the data is a JSON object): what other instances need to know how
/// long before this session's expiry it stopped confirming (see
/// [`ProofTiming::confirmation_lead`]).
fn stamp_session_timeout(data: &[u8], timeout: Duration) -> Vec<u8> {
    match serde_json::from_slice::<serde_json::Value>(data) {
        Ok(serde_json::Value::Object(mut object)) => {
            object.insert("session_timeout_ms".into(), (timeout.as_millis() as u64).into());
            serde_json::to_vec(&object).unwrap_or_else(|_| data.to_vec())
        }
        _ => data.to_vec(),
    }
}
