//! ZooKeeper's four-letter words (`srvr`, `cons`, …): one TCP connection per word, the answer
//! read until the server closes it. Standard library only, so that one copy serves the
//! integration tests ([`super::zk`]), the chaos run (`chaos/src/harness.rs`, through `zk.rs`)
//! and the benchmark (`bench/src/servers.rs`), which include this file by `#[path]`.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Sends the four-letter `word` to the ZooKeeper server at `addr` and returns its answer, or
/// `None` if it does not answer: no connection within 500 ms, or no complete answer within
/// `read_timeout`.
pub fn four_letter(addr: SocketAddr, word: &str, read_timeout: Duration) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(read_timeout)).ok()?;
    stream.write_all(word.as_bytes()).ok()?;
    let mut out = String::new();
    stream.read_to_string(&mut out).ok()?;
    Some(out)
}
