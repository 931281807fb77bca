//! A loopback TCP proxy that can stall traffic silently: a network partition between one
//! zkcoord instance and ZooKeeper, between two ZooKeeper members (see
//! `zk::Ensemble::start_with_quorum_proxies`), or between a client and an instance, without
//! touching anything else. A stalled direction holds its bytes and never closes the
//! connection: the peer sees silence, as behind a dead switch. It can also reset its
//! connections (what a killed server with unread requests does: "Connection reset by peer").

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    runtime::Handle,
    sync::watch,
    task::JoinHandle,
};

/// Which way traffic is stalled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the connecting side to the target (requests).
    Upstream,
    /// From the target back to the connecting side (responses).
    Downstream,
    /// Both ways.
    Both,
}

/// Forwards `127.0.0.1:<port>` to a target until dropped.
#[derive(Debug)]
pub struct Proxy {
    /// The proxy's address.
    pub addr: SocketAddr,
    /// The address it forwards to.
    pub target: SocketAddr,
    up: watch::Sender<bool>,
    down: watch::Sender<bool>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    /// The connection tasks (not the accept loop): [`Proxy::reset`] aborts them.
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    /// Starts forwarding to `target` on the current tokio runtime.
    pub async fn start(target: SocketAddr) -> Self {
        Self::start_on(&Handle::current(), target)
    }

    /// Starts forwarding to `target` on `runtime` (callable outside any runtime, e.g. from a
    /// thread that then blocks: the proxy keeps working as long as `runtime` runs).
    pub fn start_on(runtime: &Handle, target: SocketAddr) -> Self {
        Self::start_patient(runtime, target, Duration::ZERO)
    }

    /// [`Proxy::start_on`], retrying the connection to `target` for up to `patience` when it is
    /// refused (the accepted connection waits meanwhile). A proxy accepts at once, so without
    /// patience a peer that is about to listen (a freshly elected ZooKeeper leader) looks like
    /// an established connection that is reset at once, not like a refused one to retry.
    pub fn start_patient(runtime: &Handle, target: SocketAddr, patience: Duration) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        listener.set_nonblocking(true).expect("nonblocking proxy listener");
        let addr = listener.local_addr().expect("proxy addr");
        let (up, up_rx) = watch::channel(false);
        let (down, down_rx) = watch::channel(false);
        let tasks = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let registry = connections.clone();
        let _entered = runtime.enter();
        let listener = TcpListener::from_std(listener).expect("register proxy listener");
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let (up, down) = (up_rx.clone(), down_rx.clone());
                // Closed with a RST when its task is aborted (see `reset`).
                let _ = inbound.set_zero_linger();
                let task = tokio::spawn(async move {
                    let mut inbound = inbound;
                    let deadline = tokio::time::Instant::now() + patience;
                    let outbound = loop {
                        match TcpStream::connect(target).await {
                            Ok(outbound) => break outbound,
                            Err(_) if tokio::time::Instant::now() < deadline => {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                            Err(_) => return,
                        }
                    };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let mut outbound = outbound;
                    // Borrowed halves: unlike owned ones, dropping them sends no FIN, so an
                    // aborted task's sockets close with a RST only.
                    let (ri, wi) = inbound.split();
                    let (ro, wo) = outbound.split();
                    tokio::join!(pipe(ri, wo, up), pipe(ro, wi, down));
                });
                let mut registry = registry.lock().unwrap();
                registry.retain(|t: &JoinHandle<()>| !t.is_finished());
                registry.push(task);
            }
        });
        tasks.lock().unwrap().push(accept);
        Self { addr, target, up, down, tasks, connections }
    }

    /// Resets every open connection (the client reads ECONNRESET); new ones are accepted.
    pub fn reset(&self) {
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Stops forwarding in `direction` without closing anything (bytes are held, not
    /// delivered) until [`Proxy::resume`]. New connections are still accepted (and stall).
    pub fn stall(&self, direction: Direction) {
        if matches!(direction, Direction::Upstream | Direction::Both) {
            self.up.send_replace(true);
        }
        if matches!(direction, Direction::Downstream | Direction::Both) {
            self.down.send_replace(true);
        }
    }

    /// Forwards both directions again, held bytes first.
    pub fn resume(&self) {
        self.up.send_replace(false);
        self.down.send_replace(false);
    }

    /// Whether any direction is stalled.
    pub fn is_stalled(&self) -> bool {
        *self.up.borrow() || *self.down.borrow()
    }

    /// Black-holes all traffic: [`Proxy::stall`] both directions.
    pub fn cut(&self) {
        self.stall(Direction::Both);
    }

    /// Delivers traffic again: [`Proxy::resume`].
    pub fn heal(&self) {
        self.resume();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for task in self.tasks.lock().unwrap().drain(..).chain(self.connections.lock().unwrap().drain(..)) {
            task.abort();
        }
    }
}

async fn pipe(
    mut from: tokio::net::tcp::ReadHalf<'_>,
    mut to: tokio::net::tcp::WriteHalf<'_>,
    mut stalled: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                // Pass the end on (a FIN), but not through a stall either.
                let _ = stalled.wait_for(|stalled| !stalled).await;
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        // While stalled, hold the bytes: the peer sees silence, as in a real partition.
        if stalled.wait_for(|stalled| !stalled).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
