//! TLS and mTLS for the gRPC listener.
//!
//! [`ServerTls`] holds the current rustls configuration, rebuilt from the PEM files when they
//! change ([`reload`]), and turns a TCP listener into a stream of established TLS connections
//! for tonic's `serve_with_incoming_shutdown`:
//!
//! * one task accepts TCP connections and never waits for a handshake;
//! * each handshake runs in its own task, bounded by [`HANDSHAKE_TIMEOUT`], with the
//!   configuration current when its ClientHello arrived;
//! * established connections reach tonic through a channel, each carrying a [`TlsPeer`]
//!   (tonic puts it in every request's extensions) with the client certificate's identity
//!   ([`identity`]) when mTLS is on.

pub mod identity;
pub mod reload;

use std::{
    fmt, io,
    net::SocketAddr,
    path::PathBuf,
    pin::Pin,
    sync::{
        Arc, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use rustls::{ServerConfig, pki_types::CertificateDer, server::danger::ClientCertVerifier};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch},
};
use tokio_rustls::{LazyConfigAcceptor, server::TlsStream};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;

use crate::limits::{ConnectionCounts, ConnectionSlot, REFUSED_CONNECTION_LINGER};

/// TLS for the gRPC listener: PEM files, re-read when they change (see [`ServerTls`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    /// The server certificate chain, leaf first.
    pub cert: PathBuf,
    /// The server certificate's private key.
    pub key: PathBuf,
    /// CA certificates client certificates must chain to; when set, clients must present one
    /// (mTLS). `None`: no client certificates.
    pub client_ca: Option<PathBuf>,
}

/// How long a client gets to complete the TLS handshake after connecting.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Established connections queued for tonic.
const ESTABLISHED_QUEUE: usize = 64;
/// Pause after a failed `accept` (e.g. out of file descriptors) before the next one.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// An unusable TLS file: which setting names it, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {message}")]
pub struct TlsError {
    /// `tls_cert`, `tls_key` or `tls_client_ca`.
    pub setting: &'static str,
    /// What is wrong.
    pub message: String,
}

impl TlsError {
    fn new(setting: &'static str, message: String) -> Self {
        Self { setting, message }
    }
}

/// TLS for one listener: the current configuration, replaced when the files change.
#[derive(Clone)]
pub struct ServerTls {
    shared: Arc<LoadedTls>,
}

/// The files of a [`ServerTls`], the configuration loaded from them and how their reloads went.
struct LoadedTls {
    files: TlsConfig,
    /// The configuration in use and its client certificate verifier (mTLS).
    config: RwLock<Arc<Loaded>>,
    reloads: AtomicU64,
    reload_failures: AtomicU64,
    /// Counts the configurations put in use (the first is 0).
    generation: watch::Sender<u64>,
}

/// A configuration built from the files, with its client certificate verifier.
type Loaded = (Arc<ServerConfig>, Option<Arc<dyn ClientCertVerifier>>);

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.shared.files)
            .field("reloads", &self.reloads())
            .field("reload_failures", &self.reload_failures())
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads the files named in `files`.
    ///
    /// # Errors
    /// A [`TlsError`] naming the setting whose file is unreadable or unusable.
    pub(crate) fn load(files: TlsConfig) -> Result<Self, TlsError> {
        let (config, verifier) = reload::load(&files)?;
        let loaded = (Arc::new(config), verifier);
        Ok(Self {
            shared: Arc::new(LoadedTls {
                files,
                config: RwLock::new(Arc::new(loaded)),
                reloads: AtomicU64::new(0),
                reload_failures: AtomicU64::new(0),
                generation: watch::Sender::new(0),
            }),
        })
    }

    /// Whether clients must present a certificate (mTLS).
    pub(crate) fn requires_client_certificates(&self) -> bool {
        self.shared.files.client_ca.is_some()
    }

    /// How many times changed files were loaded and put in use.
    pub fn reloads(&self) -> u64 {
        self.shared.reloads.load(Ordering::Relaxed)
    }

    /// How many times changed files could not be used (the previous configuration stayed).
    pub fn reload_failures(&self) -> u64 {
        self.shared.reload_failures.load(Ordering::Relaxed)
    }

    fn current(&self) -> Arc<ServerConfig> {
        self.shared.config.read().unwrap_or_else(PoisonError::into_inner).0.clone()
    }

    /// Announces every configuration put in use after the first.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.shared.generation.subscribe()
    }

    /// Whether the client certificate of `peer` would still be accepted by the configuration
    /// in use (its client CA may have been replaced since the handshake). Verifies the
    /// certificate again only when the configuration changed since the handshake; `true`
    /// without mTLS.
    pub fn still_trusts(&self, peer: &TlsPeer) -> bool {
        if *self.shared.generation.borrow() == peer.generation {
            return true;
        }
        let loaded = self.shared.config.read().unwrap_or_else(PoisonError::into_inner).clone();
        let (Some(verifier), Some((end_entity, intermediates))) =
            (&loaded.1, peer.chain.as_deref().and_then(<[_]>::split_first))
        else {
            return loaded.1.is_none(); // without mTLS now, every connection is fine
        };
        verifier.verify_client_cert(end_entity, intermediates, rustls::pki_types::UnixTime::now()).is_ok()
    }

    /// Starts watching the files for changes, until `shutdown`.
    pub(crate) fn spawn_reloader(&self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(reload::watch(self.shared.clone(), shutdown))
    }

    /// The established TLS connections on `listener`, until `shutdown` (or until the stream
    /// is dropped). Failed handshakes are logged at debug level and never appear.
    ///
    /// With mTLS, each connection is counted against its identity's `connections`; one past
    /// the limit is marked ([`TlsPeer::over_connection_limit`]) and closed after
    /// [`REFUSED_CONNECTION_LINGER`].
    pub(crate) fn incoming(
        &self,
        listener: TcpListener,
        connections: Arc<ConnectionCounts>,
        shutdown: CancellationToken,
    ) -> ReceiverStream<Result<TlsConnection, io::Error>> {
        let (tx, rx) = mpsc::channel(ESTABLISHED_QUEUE);
        tokio::spawn(accept_loop(self.clone(), listener, connections, tx, shutdown));
        ReceiverStream::new(rx)
    }
}

type Established = mpsc::Sender<Result<TlsConnection, io::Error>>;

async fn accept_loop(
    tls: ServerTls,
    listener: TcpListener,
    connections: Arc<ConnectionCounts>,
    tx: Established,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            () = tx.closed() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, remote_addr)) => {
                let connections = connections.clone();
                tokio::spawn(handshake(tls.clone(), tcp, remote_addr, connections, tx.clone(), shutdown.clone()));
            }
            Err(err) => {
                tracing::warn!(error = %err, "accepting a connection failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
}

async fn handshake(
    tls: ServerTls,
    tcp: TcpStream,
    remote_addr: SocketAddr,
    connections: Arc<ConnectionCounts>,
    tx: Established,
    shutdown: CancellationToken,
) {
    let _ = tcp.set_nodelay(true);
    let mut generation = 0;
    let handshake = async {
        let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp).await?;
        // The configuration current when the ClientHello arrived: reloads apply to new
        // connections; established ones are checked again (`ServerTls::still_trusts`). Its
        // generation is read first: a reload in between only causes a needless re-check.
        generation = *tls.shared.generation.borrow();
        start.into_stream(tls.current()).await
    };
    let stream = tokio::select! {
        () = shutdown.cancelled() => return,
        result = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake) => match result {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => {
                tracing::debug!(%remote_addr, error = %err, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%remote_addr, "TLS handshake timed out");
                return;
            }
        },
    };
    let chain: Option<Arc<[CertificateDer<'static>]>> =
        stream.get_ref().1.peer_certificates().filter(|chain| !chain.is_empty()).map(Arc::from);
    let identity = chain.as_deref().and_then(<[_]>::first).and_then(|cert| identity::of_certificate(cert));
    if tls.requires_client_certificates() && identity.is_none() {
        tracing::debug!(%remote_addr, "client certificate names no identity (no DNS SAN, no CN); closing");
        return;
    }
    let identity: Option<Arc<str>> = identity.map(Arc::from);
    let slot = identity.as_ref().map(|identity| connections.open(identity));
    let over_connection_limit = matches!(slot, Some(None));
    if over_connection_limit {
        tracing::debug!(%remote_addr, identity = identity.as_deref(), "too many connections for this identity");
    }
    let closes = over_connection_limit.then(|| Box::pin(tokio::time::sleep(REFUSED_CONNECTION_LINGER)));
    let peer = TlsPeer { remote_addr, identity, over_connection_limit, chain, generation };
    let connection = TlsConnection { stream, peer, _slot: slot.flatten(), closes };
    let _ = tx.send(Ok(connection)).await;
}

/// Who is at the other end of a TLS connection; in every request's extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsPeer {
    /// The client's address.
    pub remote_addr: SocketAddr,
    /// The client certificate's identity (first DNS SAN, else subject CN); `None` without mTLS.
    pub identity: Option<Arc<str>>,
    /// The connection is past `max_connections_per_identity`: every zkcoord call on it is
    /// refused, and it closes soon.
    pub over_connection_limit: bool,
    /// The client's certificate chain (end entity first); `None` without mTLS.
    pub chain: Option<Arc<[CertificateDer<'static>]>>,
    /// The generation of the TLS configuration the handshake used ([`ServerTls::changes`]).
    pub generation: u64,
}

/// An established TLS connection with its [`TlsPeer`].
#[derive(Debug)]
pub struct TlsConnection {
    stream: TlsStream<TcpStream>,
    peer: TlsPeer,
    /// Its place among its identity's connections, given back when it closes.
    _slot: Option<ConnectionSlot>,
    /// When a connection past the limit ends: its reads then see end of file.
    closes: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Connected for TlsConnection {
    type ConnectInfo = TlsPeer;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if let Some(closes) = self.closes.as_mut()
            && closes.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Ok(())); // end of file: the server closes the connection
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
