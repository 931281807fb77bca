//! Endpoints and calls: a client knows several zkcoord instances and moves to the next one
//! when the current one is unreachable.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tonic::{
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};

use crate::{
    Error,
    pb::{election_client::ElectionClient, lease_client::LeaseClient, lock_client::LockClient},
};

/// The gRPC metadata header that names the tenant of a call.
pub const TENANT_HEADER: &str = "zkcoord-tenant";

/// What every call of a [`Client`] goes through: the endpoint's channel, plus the tenant
/// header when the client has a tenant ([`Client::tenant`]).
pub type Transport = InterceptedService<Channel, TenantHeader>;

/// Adds the tenant header to every call (nothing for the default tenant).
#[derive(Clone, Debug, Default)]
pub struct TenantHeader(Option<MetadataValue<Ascii>>);

impl Interceptor for TenantHeader {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(tenant) = &self.0 {
            request.metadata_mut().insert(TENANT_HEADER, tenant.clone());
        }
        Ok(request)
    }
}

/// How long connecting to one endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A handle on a set of zkcoord instances (any of them serves any call). Cheap to clone.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    names: Vec<String>,
    channels: Vec<Channel>,
    current: AtomicUsize,
    tenant: TenantHeader,
}

/// How to reach zkcoord instances that serve TLS (`tls_cert`/`tls_key`) and, for mTLS
/// (`tls_client_ca`), which certificate to present.
#[derive(Clone, Debug, Default)]
pub struct Tls {
    ca_pem: Option<Vec<u8>>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
    domain: Option<String>,
}

impl Tls {
    /// TLS, trusting the CA certificate(s) in `ca_pem` (PEM).
    pub fn new(ca_pem: impl Into<Vec<u8>>) -> Self {
        Self { ca_pem: Some(ca_pem.into()), ..Self::default() }
    }

    /// Presents this client certificate chain and private key (PEM) for mTLS.
    pub fn identity(mut self, cert_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> Self {
        self.identity = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// Checks the server certificate against `domain` instead of each endpoint's host.
    pub fn domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }

    /// The tonic TLS configuration, for channels made outside [`Client`].
    pub fn client_config(&self) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new();
        if let Some(ca) = &self.ca_pem {
            config = config.ca_certificate(Certificate::from_pem(ca));
        }
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        if let Some(domain) = &self.domain {
            config = config.domain_name(domain.clone());
        }
        config
    }
}

/// The tonic endpoint for `endpoint` (`host:port`, or a URI): `https` with `tls`, `http`
/// without; for channels made outside [`Client`] (which uses it for each of its endpoints).
///
/// # Errors
/// [`Error::InvalidEndpoint`], also for TLS settings tonic refuses.
pub fn endpoint_of(endpoint: &str, tls: Option<&Tls>) -> Result<Endpoint, Error> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let uri = if endpoint.contains("://") { endpoint.to_owned() } else { format!("{scheme}://{endpoint}") };
    let invalid = |reason: String| Error::InvalidEndpoint { endpoint: endpoint.to_owned(), reason };
    let builder = Endpoint::from_shared(uri).map_err(|e| invalid(e.to_string()))?;
    match tls {
        Some(tls) => builder.tls_config(tls.client_config()).map_err(|e| invalid(e.to_string())),
        None => Ok(builder),
    }
}

impl Client {
    /// A client of the instances at `endpoints` (`host:port` or `http://host:port`), in
    /// plaintext. Connections are made lazily, on first use.
    ///
    /// # Errors
    /// [`Error::NoEndpoints`], [`Error::InvalidEndpoint`].
    pub fn new<I, S>(endpoints: I) -> Result<Self, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::connect(endpoints, None)
    }

    /// A client of the instances at `endpoints` (`host:port` or `https://host:port`) over TLS.
    ///
    /// # Errors
    /// [`Error::NoEndpoints`], [`Error::InvalidEndpoint`] (also for TLS settings tonic
    /// refuses).
    pub fn with_tls<I, S>(endpoints: I, tls: &Tls) -> Result<Self, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::connect(endpoints, Some(tls))
    }

    fn connect<I, S>(endpoints: I, tls: Option<&Tls>) -> Result<Self, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut names = Vec::new();
        let mut channels = Vec::new();
        for endpoint in endpoints {
            let endpoint = endpoint.as_ref().trim();
            let channel = endpoint_of(endpoint, tls)?
                .connect_timeout(CONNECT_TIMEOUT)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(5))
                .connect_lazy();
            names.push(endpoint.to_owned());
            channels.push(channel);
        }
        if channels.is_empty() {
            return Err(Error::NoEndpoints);
        }
        Ok(Self {
            inner: Arc::new(Inner { names, channels, current: AtomicUsize::new(0), tenant: TenantHeader::default() }),
        })
    }

    /// A client of the same endpoints (sharing their connections) whose calls all go to
    /// `tenant` (the `zkcoord-tenant` header); leases, elections and locks of one tenant are
    /// invisible from every other.
    ///
    /// # Errors
    /// [`Error::InvalidTenant`] when `tenant` cannot be a header value.
    pub fn tenant(&self, tenant: &str) -> Result<Self, Error> {
        let value = MetadataValue::try_from(tenant).map_err(|_| Error::InvalidTenant(tenant.to_owned()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                names: self.inner.names.clone(),
                channels: self.inner.channels.clone(),
                current: AtomicUsize::new(self.current()),
                tenant: TenantHeader(Some(value)),
            }),
        })
    }

    /// The number of endpoints.
    pub fn endpoints(&self) -> usize {
        self.inner.channels.len()
    }

    /// The endpoint currently preferred.
    pub fn current(&self) -> usize {
        self.inner.current.load(Ordering::Relaxed) % self.endpoints()
    }

    /// The name of endpoint `index`, as given.
    pub fn endpoint_name(&self, index: usize) -> &str {
        &self.inner.names[index % self.endpoints()]
    }

    /// Moves the preference past `failed` (unless another caller already moved it).
    pub(crate) fn rotate(&self, failed: usize) -> usize {
        let next = (failed + 1) % self.endpoints();
        let _ = self.inner.current.compare_exchange(failed, next, Ordering::Relaxed, Ordering::Relaxed);
        self.current()
    }

    /// The transport of endpoint `index`, for raw calls (`pb::*Client::new(transport)`).
    pub fn channel(&self, index: usize) -> Transport {
        InterceptedService::new(self.inner.channels[index % self.endpoints()].clone(), self.inner.tenant.clone())
    }

    /// A Lease service client on the current endpoint.
    pub fn leases(&self) -> LeaseClient<Transport> {
        LeaseClient::new(self.channel(self.current()))
    }

    /// An Election service client on the current endpoint.
    pub fn elections(&self) -> ElectionClient<Transport> {
        ElectionClient::new(self.channel(self.current()))
    }

    /// A Lock service client on the current endpoint.
    pub fn locks(&self) -> LockClient<Transport> {
        LockClient::new(self.channel(self.current()))
    }

    /// Runs `call` on the current endpoint and, while it answers UNAVAILABLE or its connection
    /// fails (an instance killed mid-call), on each next one (every endpoint once). Only for
    /// calls that are safe to repeat.
    ///
    /// # Errors
    /// The last endpoint's status.
    pub async fn retrying<T, F, Fut>(&self, mut call: F) -> Result<T, Error>
    where
        F: FnMut(Transport) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let mut at = self.current();
        let mut last = None;
        for _ in 0..self.endpoints() {
            match call(self.channel(at)).await {
                Ok(value) => return Ok(value),
                Err(status) if status.code() == tonic::Code::Unavailable || is_transport_failure(&status) => {
                    last = Some(status);
                    at = self.rotate(at);
                }
                Err(status) => return Err(status.into()),
            }
        }
        Err(last.map_or(Error::NoEndpoints, Error::from))
    }
}

/// Whether `status` reports a failed connection rather than an answer of the instance.
fn is_transport_failure(status: &tonic::Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(err) = source {
        if err.is::<tonic::transport::Error>() || err.is::<std::io::Error>() {
            return true;
        }
        source = err.source();
    }
    false
}
