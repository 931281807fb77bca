//! One zkcoord instance: the gRPC server (zkcoord services, `grpc.health.v1`, reflection v1
//! and v1alpha), its ZooKeeper session, and graceful shutdown.
//!
//! Besides [`start`] and [`Instance`], the constants a client or test of the wire API needs:
//! service names, limits, the tenant header, stable messages.

use std::{io, net::SocketAddr, time::Duration};

use tokio::{net::TcpListener, task::JoinHandle};
use tokio_stream::{StreamExt, wrappers::TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic_health::{ServingStatus, server::HealthReporter};
use tower::util::MapResponseLayer;

pub use crate::{
    api::tenant::TENANT_HEADER,
    error::{
        TOO_MANY_CANDIDACIES, TOO_MANY_CONNECTIONS, TOO_MANY_ELECTIONS, TOO_MANY_GRANTS, TOO_MANY_IDENTITY_LEASES,
        TOO_MANY_LOCK_REQUESTS, TOO_MANY_OBSERVE_STREAMS, TOO_MANY_TENANT_LEASES, UNDECODABLE_REQUEST,
    },
    limits::TOO_LARGE_MESSAGE,
    tls::ServerTls,
    zk::{SessionStatus, ZkSession},
};
use crate::{
    api::{Context, election::ElectionService, lease::LeaseService, lock::LockService, shards::ShardsService},
    authz::live::LiveAuthz,
    config::Config,
    limits::{self, ConnectionCounts, InstanceLimits},
    metrics::{self, Metrics, Sources, rpc_layer::RpcMetricsLayer},
    pb::{
        self,
        v1::{
            election_server::ElectionServer, lease_server::LeaseServer, lock_server::LockServer,
            shards_server::ShardsServer,
        },
    },
    recipe::instance::Incarnation,
    tenant::{Recipes, Tenants},
};

/// The largest request message accepted, in bytes (1,000 lock keys of 128 bytes fit easily).
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// The `grpc.health.v1` service name that is SERVING for as long as the process serves at all,
/// whether or not ZooKeeper is reachable: for liveness probes (restarting zkcoord does not bring
/// ZooKeeper back). Readiness probes use `""`, which follows the ZooKeeper session.
pub const LIVENESS_SERVICE: &str = "zkcoord.liveness";

/// How often HTTP/2 keepalive pings probe idle client connections.
const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// How long a keepalive ping may stay unanswered before the connection is dropped.
const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long shutdown waits, at least, for lock calls to withdraw what they queued once the gRPC
/// server has stopped (even when the grace period is over: its calls were just cut off).
const LOCK_WITHDRAW_TIME: Duration = Duration::from_secs(1);

/// A running zkcoord instance.
#[derive(Debug)]
pub struct Instance {
    addr: SocketAddr,
    session: ZkSession,
    tenants: Tenants,
    health: JoinHandle<()>,
    shutdown: CancellationToken,
    grace: Duration,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    metrics_addr: Option<SocketAddr>,
    tls: Option<ServerTls>,
}

/// Binds `config.listen`, starts the ZooKeeper session and serves until [`Instance::shutdown`].
///
/// The server accepts calls at once; health is NOT_SERVING until the ZooKeeper session is
/// connected, and calls that need ZooKeeper answer UNAVAILABLE until then.
///
/// # Errors
/// When the listen address cannot be bound, or the TLS files cannot be used.
pub async fn start(config: Config) -> io::Result<Instance> {
    let tls = config.tls.clone().map(ServerTls::load).transpose().map_err(io::Error::other)?;
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let incarnation = Incarnation::new(&config.instance_id);
    let session = ZkSession::start(config.zookeeper.clone(), Some(incarnation.registration(&addr.to_string())));
    let shutdown = CancellationToken::new();
    let limits = InstanceLimits::new(config.quotas);
    // The default tenant's recipes over the namespace, and each configured tenant's.
    let health_writes = config.health_writes_per_second;
    let default_tenant =
        Recipes::start(None, session.clone(), incarnation.clone(), shutdown.clone(), &limits, health_writes);
    let tenants = Tenants::start(
        default_tenant,
        &session,
        &config.zookeeper.tenants,
        &incarnation,
        &shutdown,
        &limits,
        health_writes,
    );
    let metrics = Metrics::new();
    let metrics_addr = match config.metrics_listen {
        Some(metrics_listen) => {
            let listener = TcpListener::bind(metrics_listen).await?;
            let metrics_addr = listener.local_addr()?;
            let sources = Sources { session: session.clone(), tenants: tenants.clone() };
            tokio::spawn(metrics::endpoint::serve(listener, metrics.clone(), sources, shutdown.clone()));
            tokio::spawn(metrics::zk_probe::run(session.clone(), metrics.clone(), shutdown.clone()));
            tracing::info!(%metrics_addr, "metrics at /metrics");
            Some(metrics_addr)
        }
        None => None,
    };
    let ctx = Context {
        session: session.clone(),
        shutdown: shutdown.clone(),
        instance_id: config.instance_id.clone(),
        tenants: tenants.clone(),
        authz: config.authz.clone().map(|rules| LiveAuthz::new(rules, config.zookeeper.tenants.clone())),
        limits,
        tls: tls.clone(),
        holdings: crate::api::holdings::Holdings::default(),
    };
    if let Some(authz) = &ctx.authz {
        authz.spawn_reloader(shutdown.clone());
    }
    crate::api::holdings::spawn_enforcer(ctx.clone());

    let (reporter, health) = tonic_health::server::health_reporter();
    set_health(&reporter, ServingStatus::NotServing).await;
    reporter.set_service_status(LIVENESS_SERVICE, ServingStatus::Serving).await;
    let health_task = tokio::spawn(follow_session(session.clone(), reporter, shutdown.clone()));

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(io::Error::other)?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(io::Error::other)?;

    let router = Server::builder()
        // One span per call: exported through OTLP when configured (see `telemetry`).
        .trace_fn(|request| {
            let method = request.uri().path();
            tracing::info_span!("grpc", otel.name = %method, rpc.method = %method)
        })
        .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
        // tonic removes hyper's default limit (200); without one a client could open any number.
        .max_concurrent_streams(config.max_streams_per_connection)
        .concurrency_limit_per_connection(config.max_calls_per_connection)
        .load_shed(true)
        .layer(RpcMetricsLayer::new(metrics))
        .layer(MapResponseLayer::new(limits::oversized_as_resource_exhausted::<tonic::body::Body>))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(LeaseServer::new(LeaseService::new(ctx.clone())).max_decoding_message_size(MAX_REQUEST_BYTES))
        .add_service(
            ElectionServer::new(ElectionService::new(ctx.clone())).max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add_service(LockServer::new(LockService::new(ctx.clone())).max_decoding_message_size(MAX_REQUEST_BYTES))
        .add_service(ShardsServer::new(ShardsService::new(ctx)).max_decoding_message_size(MAX_REQUEST_BYTES));
    let stop = shutdown.clone();
    let server = match &tls {
        Some(tls) => {
            tls.spawn_reloader(shutdown.clone());
            let connections = ConnectionCounts::new(config.quotas.connections_per_identity);
            let incoming = tls.incoming(listener, connections, shutdown.clone());
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, async move { stop.cancelled().await }))
        }
        None => {
            // Nagle off on every accepted connection (tonic only does it for listeners it binds
            // itself; the TLS acceptor does it too): with it on, a stream's small answers
            // (KeepAlive acks, Campaign and Observe events) wait for the peer's delayed ACK —
            // heartbeat round trips of ~7 ms instead of ~0.25 ms.
            let incoming = TcpListenerStream::new(listener).map(|accepted| {
                if let Ok(stream) = &accepted
                    && let Err(err) = stream.set_nodelay(true)
                {
                    tracing::warn!(error = %err, "cannot set TCP_NODELAY");
                }
                accepted
            });
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, async move { stop.cancelled().await }))
        }
    };
    let tls_mode = match &tls {
        Some(tls) if tls.requires_client_certificates() => "mtls",
        Some(_) => "tls",
        None => "off",
    };
    tracing::info!(%addr, instance = %config.instance_id, namespace = %config.zookeeper.namespace, tls = tls_mode, tenants = ?config.zookeeper.tenants, "zkcoord serving");
    Ok(Instance {
        addr,
        session,
        tenants,
        health: health_task,
        shutdown,
        grace: config.shutdown_grace,
        server,
        metrics_addr,
        tls,
    })
}

impl Instance {
    /// The address the gRPC server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of the Prometheus endpoint, when enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The listener's TLS, when configured.
    pub fn tls(&self) -> Option<&ServerTls> {
        self.tls.as_ref()
    }

    /// The instance's ZooKeeper session.
    pub fn session(&self) -> &ZkSession {
        &self.session
    }

    /// How many leases are attached to this instance (in the default tenant).
    pub fn local_lease_count(&self) -> usize {
        self.tenants.default_tenant().leases.local_count()
    }

    /// Stops the instance gracefully: health turns NOT_SERVING, streams end with UNAVAILABLE
    /// so clients move to another instance, in-flight calls get up to the configured grace
    /// period to finish, lock calls withdraw what they queued (within the grace period, or
    /// [`LOCK_WITHDRAW_TIME`] if that is over), then the ZooKeeper session is closed.
    pub async fn shutdown(self) {
        tracing::info!(grace = ?self.grace, "shutting down");
        let deadline = tokio::time::Instant::now() + self.grace;
        self.shutdown.cancel();
        // The health task turns everything NOT_SERVING as its last act.
        let _ = self.health.await;
        let mut server = self.server;
        match tokio::time::timeout(self.grace, &mut server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(err))) => tracing::error!(error = %err, "grpc server failed"),
            Ok(Err(err)) => tracing::error!(error = %err, "grpc server task failed"),
            Err(_) => {
                tracing::warn!("grace period over; closing the remaining connections");
                server.abort();
            }
        }
        let tenants = self.tenants.all();
        let drained = futures_util::future::join_all(tenants.iter().map(|t| t.locks.drain()));
        let until = deadline.max(tokio::time::Instant::now() + LOCK_WITHDRAW_TIME);
        if tokio::time::timeout_at(until, drained).await.is_err() {
            tracing::warn!("lock calls still withdrawing their requests; their leases' end will");
        }
        self.session.close().await;
        tracing::info!("shut down");
    }

    /// Waits until the gRPC server stops by itself (it only does on a fatal error).
    ///
    /// # Errors
    /// The server's error.
    pub async fn wait_failed(&mut self) -> io::Result<()> {
        match (&mut self.server).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(io::Error::other(err)),
            Err(err) => Err(io::Error::other(err)),
        }
    }
}

/// Keeps `grpc.health.v1` in step with the ZooKeeper session: SERVING exactly while it is
/// connected. At shutdown it sets NOT_SERVING and ends; it is the only writer of health
/// after start-up, so no late SERVING can follow.
async fn follow_session(session: ZkSession, reporter: HealthReporter, shutdown: CancellationToken) {
    let mut status = session.watch_status();
    loop {
        let connected = status.borrow_and_update().is_connected();
        set_health(&reporter, if connected { ServingStatus::Serving } else { ServingStatus::NotServing }).await;
        tokio::select! {
            () = shutdown.cancelled() => break,
            changed = status.changed() => if changed.is_err() { break },
        }
        if *status.borrow() == SessionStatus::Closed {
            break;
        }
    }
    set_health(&reporter, ServingStatus::NotServing).await;
    reporter.set_service_status(LIVENESS_SERVICE, ServingStatus::NotServing).await;
}

async fn set_health(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for service in pb::SERVICE_NAMES {
        reporter.set_service_status(service, status).await;
    }
}
