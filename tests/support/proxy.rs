//! A loopback TCP proxy that can black-hole traffic (a network partition between one zkcoord
//! instance and ZooKeeper, without touching anything else) or reset its connections (what a
//! killed server with unread requests does: "Connection reset by peer").

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};

/// Forwards `127.0.0.1:<port>` to a target until dropped.
#[derive(Debug)]
pub struct Proxy {
    /// The proxy's address.
    pub addr: SocketAddr,
    cut: watch::Sender<bool>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    /// The connection tasks (not the accept loop): [`Proxy::reset`] aborts them.
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    /// Starts forwarding to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let (cut, cut_rx) = watch::channel(false);
        let tasks = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let registry = connections.clone();
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let cut = cut_rx.clone();
                // Closed with a RST when its task is aborted (see `reset`).
                let _ = inbound.set_zero_linger();
                let task = tokio::spawn(async move {
                    let (mut inbound, outbound) = (inbound, TcpStream::connect(target).await);
                    let Ok(mut outbound) = outbound else { return };
                    // Borrowed halves: unlike owned ones, dropping them sends no FIN, so an
                    // aborted task's sockets close with a RST only.
                    let (ri, wi) = inbound.split();
                    let (ro, wo) = outbound.split();
                    tokio::join!(pipe(ri, wo, cut.clone()), pipe(ro, wi, cut));
                });
                registry.lock().unwrap().push(task);
            }
        });
        tasks.lock().unwrap().push(accept);
        Self { addr, cut, tasks, connections }
    }

    /// Resets every open connection (the client reads ECONNRESET); new ones are accepted.
    pub fn reset(&self) {
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Black-holes all traffic (bytes are held, not delivered) until [`Proxy::heal`].
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Delivers traffic again.
    pub fn heal(&self) {
        self.cut.send_replace(false);
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
    mut cut: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await; // pass the end on
                return;
            }
            Ok(n) => n,
        };
        // While cut, hold the bytes: the peer sees silence, as in a real partition.
        if cut.wait_for(|cut| !cut).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
