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

use tonic::transport::{Channel, Endpoint};

use crate::{
    Error,
    pb::{election_client::ElectionClient, lease_client::LeaseClient, lock_client::LockClient},
};

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
}

impl Client {
    /// A client of the instances at `endpoints` (`host:port` or `http://host:port`).
    /// Connections are made lazily, on first use.
    ///
    /// # Errors
    /// [`Error::NoEndpoints`], [`Error::InvalidEndpoint`].
    pub fn new<I, S>(endpoints: I) -> Result<Self, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut names = Vec::new();
        let mut channels = Vec::new();
        for endpoint in endpoints {
            let endpoint = endpoint.as_ref().trim();
            let uri = if endpoint.contains("://") { endpoint.to_owned() } else { format!("http://{endpoint}") };
            let invalid = |reason: String| Error::InvalidEndpoint { endpoint: endpoint.to_owned(), reason };
            let channel = Endpoint::from_shared(uri)
                .map_err(|e| invalid(e.to_string()))?
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
        Ok(Self { inner: Arc::new(Inner { names, channels, current: AtomicUsize::new(0) }) })
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

    /// The channel of endpoint `index`.
    pub(crate) fn channel(&self, index: usize) -> Channel {
        self.inner.channels[index % self.endpoints()].clone()
    }

    /// A Lease service client on the current endpoint.
    pub fn leases(&self) -> LeaseClient<Channel> {
        LeaseClient::new(self.channel(self.current()))
    }

    /// An Election service client on the current endpoint.
    pub fn elections(&self) -> ElectionClient<Channel> {
        ElectionClient::new(self.channel(self.current()))
    }

    /// A Lock service client on the current endpoint.
    pub fn locks(&self) -> LockClient<Channel> {
        LockClient::new(self.channel(self.current()))
    }

    /// Runs `call` on the current endpoint and, while it answers UNAVAILABLE, on each next
    /// one (every endpoint once). Only for calls that are safe to repeat.
    ///
    /// # Errors
    /// The last endpoint's status.
    pub async fn retrying<T, F, Fut>(&self, mut call: F) -> Result<T, Error>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let mut at = self.current();
        let mut last = None;
        for _ in 0..self.endpoints() {
            match call(self.channel(at)).await {
                Ok(value) => return Ok(value),
                Err(status) if status.code() == tonic::Code::Unavailable => {
                    last = Some(status);
                    at = self.rotate(at);
                }
                Err(status) => return Err(status.into()),
            }
        }
        Err(last.map_or(Error::NoEndpoints, Error::from))
    }
}
