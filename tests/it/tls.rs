//! TLS and mTLS on the gRPC listener, client identities and the `authz_file` rules, and
//! certificate reload, with certificates generated at test time (rcgen).

#![allow(clippy::unwrap_used)]

use crate::support;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use rustls::{
    AlertDescription, CertificateError,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
};
use support::{
    certs::{Ca, Leaf},
    eventually,
    lease::{grant, lease_ref},
    lock::{EXCLUSIVE, Locker},
    zk, zkcoord_command,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::{
    Code,
    transport::{Certificate, Channel, ClientTlsConfig, Identity},
};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
use zkcoord::{
    config::{Authz, Config, TlsConfig},
    pb::v1::{self as pb, election_client::ElectionClient, lease_client::LeaseClient},
    server::{self, Instance},
};

/// How long one connection attempt plus one call may take.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a reload may take to be seen (files are polled every second).
pub(crate) const RELOAD_WAIT: Duration = Duration::from_secs(15);
/// How long a refused connection may take to fail: well below [`CALL_TIMEOUT`], so that one
/// that merely hangs is never taken for a refusal.
const REFUSAL_TIME: Duration = Duration::from_secs(3);

/// The files of one instance's TLS setup.
pub(crate) struct Files {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
    pub(crate) client_ca: PathBuf,
    pub(crate) authz: PathBuf,
}

impl Files {
    pub(crate) fn new(server: &Leaf, client_ca: &Ca) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let files = Self {
            cert: dir.path().join("server.crt"),
            key: dir.path().join("server.key"),
            client_ca: dir.path().join("client-ca.crt"),
            authz: dir.path().join("authz.toml"),
            _dir: dir,
        };
        files.replace_server(server);
        std::fs::write(&files.client_ca, &client_ca.pem).unwrap();
        files
    }

    /// Replaces the server certificate and key the way deployment tools do: write aside, then
    /// rename over (the key first, so that the pair is only briefly inconsistent).
    fn replace_server(&self, server: &Leaf) {
        replace(&self.key, &server.key);
        replace(&self.cert, &server.cert);
    }

    pub(crate) fn tls(&self, mtls: bool) -> TlsConfig {
        TlsConfig { cert: self.cert.clone(), key: self.key.clone(), client_ca: mtls.then(|| self.client_ca.clone()) }
    }
}

pub(crate) fn replace(path: &Path, contents: &str) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, contents).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

/// Starts an in-process instance with `tls` (and `authz`) and waits for its ZooKeeper session.
pub(crate) async fn start(name: &str, tls: TlsConfig, authz: Option<Authz>) -> Instance {
    if let Ok(filter) = std::env::var("ZKCOORD_TEST_LOG") {
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    }
    let zk = zk::shared();
    let config = Config { tls: Some(tls), authz, ..support::test_config(&zk.hosts(), &support::namespace(name)) };
    let instance = server::start(config).await.expect("start zkcoord with TLS");
    instance.session().wait_connected(Duration::from_secs(30)).await.expect("zkcoord connects to zookeeper");
    instance
}

/// A client's TLS setup: the CA it trusts for the server, and its own certificate if any.
pub(crate) fn client_tls(server_ca: &Ca, client: Option<&Leaf>) -> ClientTlsConfig {
    let config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&server_ca.pem)).domain_name("localhost");
    match client {
        Some(leaf) => config.identity(Identity::from_pem(&leaf.cert, &leaf.key)),
        None => config,
    }
}

/// A TLS channel to `addr`.
pub(crate) async fn connect(addr: SocketAddr, tls: ClientTlsConfig) -> Result<Channel, String> {
    let endpoint = Channel::from_shared(format!("https://localhost:{}", addr.port()))
        .unwrap()
        .tls_config(tls)
        .map_err(|e| format!("tls config: {e}"))?;
    let connected = tokio::time::timeout(CALL_TIMEOUT, endpoint.connect()).await;
    connected.map_err(|_| "connect timed out".to_owned())?.map_err(|e| format!("connect: {e:?}"))
}

/// One health call on `channel`.
pub(crate) async fn health(channel: &Channel) -> Result<ServingStatus, String> {
    let mut client = HealthClient::new(channel.clone());
    let call = client.check(HealthCheckRequest { service: String::new() });
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(response)) => Ok(response.into_inner().status()),
        // With its source: the transport error, if that is what failed the call.
        Ok(Err(status)) => Err(format!("{status:?}")),
        Err(_) => Err("health call timed out".into()),
    }
}

/// Connects over a new connection and makes one health call.
async fn health_over(addr: SocketAddr, tls: ClientTlsConfig) -> Result<ServingStatus, String> {
    health(&connect(addr, tls).await?).await
}

/// What a bare TLS client (rustls, trusting `server_ca`, presenting `client` if any) is told
/// when it connects to `addr` and, handshake done, waits for the server's first word without
/// sending any: the TLS error that ends the connection — its own verdict on the server's
/// certificate, or the server's alert about its own. Unlike a gRPC client, it cannot lose the
/// server's alert to a write on a closed connection. Panics when no TLS error comes within
/// [`REFUSAL_TIME`].
async fn tls_error(addr: SocketAddr, server_ca: &Ca, client: Option<&Leaf>) -> rustls::Error {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(server_ca.pem.as_bytes()).unwrap()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        Some(leaf) => config
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(leaf.cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => config.with_no_client_auth(),
    };
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("TCP connects");
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await?;
        tls.read(&mut [0; 1]).await
    };
    let ended = tokio::time::timeout(REFUSAL_TIME, attempt).await;
    let err = match ended {
        Err(_) => panic!("no TLS error within {REFUSAL_TIME:?}: the connection hangs"),
        Ok(Ok(n)) => panic!("the connection ended without a TLS error (read {n} bytes)"),
        Ok(Err(err)) => err,
    };
    match err.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(tls) => tls.clone(),
        None => panic!("not a TLS error: {err:?}"),
    }
}

/// Asserts that TLS refuses a client trusting `server_ca` and presenting `client`, and why:
/// a bare TLS client gets `expected` ([`tls_error`]), and a gRPC call fails at the transport
/// (not with a status from zkcoord), quickly (not a timeout).
async fn assert_tls_refuses(addr: SocketAddr, server_ca: &Ca, client: Option<&Leaf>, expected: rustls::Error) {
    assert_eq!(tls_error(addr, server_ca, client).await, expected);
    let started = Instant::now();
    let result = health_over(addr, client_tls(server_ca, client)).await;
    let failed_after = started.elapsed();
    let err = result.expect_err("the refused client was served");
    assert!(failed_after < REFUSAL_TIME, "the gRPC call took {failed_after:?} to fail: {err}");
    assert!(err.contains("tonic::transport::Error(Transport"), "not a transport error: {err}");
}

/// The server does not trust the client's certificate (unknown issuer).
const UNKNOWN_CA: rustls::Error = rustls::Error::AlertReceived(AlertDescription::UnknownCA);
/// The client does not trust the server's certificate.
const UNTRUSTED_SERVER: rustls::Error = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_and_plaintext_is_refused() {
    let ca = Ca::new("server ca");
    let files = Files::new(&ca.server(), &ca);
    let instance = start("tls", files.tls(false), None).await;
    let addr = instance.addr();

    let channel = connect(addr, client_tls(&ca, None)).await.unwrap();
    eventually(Duration::from_secs(30), "SERVING over TLS", || async {
        health(&channel).await == Ok(ServingStatus::Serving)
    })
    .await;

    // A plaintext HTTP/2 client gets no answer from the TLS port: its first bytes are answered
    // with a TLS alert record (content type 21) and the connection is closed, at once.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(REFUSAL_TIME, tcp.read_to_end(&mut answer)).await.expect("closed at once").unwrap();
    assert_eq!(answer.first(), Some(&21), "a TLS alert: {answer:?}");
    let started = Instant::now();
    let plaintext = async {
        let channel =
            Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.map_err(|e| e.to_string())?;
        health(&channel).await
    };
    let result = tokio::time::timeout(CALL_TIMEOUT, plaintext).await.expect("plaintext attempt ends");
    let err = result.expect_err("a plaintext call to the TLS port succeeded");
    assert!(started.elapsed() < REFUSAL_TIME, "the plaintext call took {:?} to fail", started.elapsed());
    assert!(err.contains("tonic::transport::Error(Transport"), "not a transport error: {err}");

    // A client that does not trust the server's CA refuses it.
    let other = Ca::new("other ca");
    assert_tls_refuses(addr, &other, None, UNTRUSTED_SERVER).await;

    // TLS still works after all that.
    assert_eq!(health_over(addr, client_tls(&ca, None)).await, Ok(ServingStatus::Serving));
    instance.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_handshake_does_not_block_other_clients() {
    let ca = Ca::new("server ca");
    let files = Files::new(&ca.server(), &ca);
    let instance = start("tls-stall", files.tls(false), None).await;
    let addr = instance.addr();
    // Clients that connect and never say hello, and one that sends half a ClientHello.
    let mut stalled = Vec::new();
    for _ in 0..3 {
        stalled.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let mut half = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut half, &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await.unwrap();
    stalled.push(half);
    let started = std::time::Instant::now();
    let status = health_over(addr, client_tls(&ca, None)).await;
    assert!(status.is_ok(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "waited {:?} behind stalled handshakes", started.elapsed());
    drop(stalled);
    instance.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_requires_a_client_certificate_from_the_client_ca() {
    let server_ca = Ca::new("server ca");
    let client_ca = Ca::new("client ca");
    let files = Files::new(&server_ca.server(), &client_ca);
    let instance = start("mtls", files.tls(true), None).await;
    let addr = instance.addr();

    let node = client_ca.client("ledger-node-a");
    let channel = connect(addr, client_tls(&server_ca, Some(&node))).await.unwrap();
    eventually(Duration::from_secs(30), "SERVING over mTLS", || async {
        health(&channel).await == Ok(ServingStatus::Serving)
    })
    .await;

    let certificate_required = rustls::Error::AlertReceived(AlertDescription::CertificateRequired);
    assert_tls_refuses(addr, &server_ca, None, certificate_required).await;

    let stranger = Ca::new("unknown ca").client("ledger-node-a");
    assert_tls_refuses(addr, &server_ca, Some(&stranger), UNKNOWN_CA).await;

    // A certificate from the server's CA is not a client certificate either: only tls_client_ca counts.
    let wrong_ca = server_ca.client("ledger-node-a");
    assert_tls_refuses(addr, &server_ca, Some(&wrong_ca), UNKNOWN_CA).await;

    assert_eq!(health(&channel).await, Ok(ServingStatus::Serving));
    instance.shutdown().await;
}

const RULES: &str = r#"
[[allow]]
identity = "ledger-node-*"
elections = ["ledger-*"]
locks = ["orders:*"]

[[allow]]
identity = "intruder"
leases = ["intruder"]
read_elections = ["ledger-*"]
read_locks = ["orders:*"]
"#;

fn campaign_request(election: &str, lease: &(i64, String)) -> pb::CampaignRequest {
    pb::CampaignRequest {
        key: Some(pb::CandidateKey {
            election: election.into(),
            candidate_id: "me".into(),
            lease: lease_ref(lease.0, &lease.1),
        }),
        value: b"me".to_vec(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authz_rules_limit_the_names_an_identity_may_use() {
    let server_ca = Ca::new("server ca");
    let client_ca = Ca::new("client ca");
    let files = Files::new(&server_ca.server(), &client_ca);
    std::fs::write(&files.authz, RULES).unwrap();
    let authz = Authz::load(&files.authz).unwrap();
    let instance = start("authz", files.tls(true), Some(authz)).await;
    let addr = instance.addr();
    let node = connect(addr, client_tls(&server_ca, Some(&client_ca.client("ledger-node-a")))).await.unwrap();
    let intruder = connect(addr, client_tls(&server_ca, Some(&client_ca.client("intruder")))).await.unwrap();
    eventually(Duration::from_secs(30), "SERVING", || async { health(&node).await == Ok(ServingStatus::Serving) })
        .await;

    // ledger-node-a (an old-style rule) may grant leases of any owner; the intruder, leases
    // owned by `intruder`.
    let ttl = Duration::from_secs(60);
    let granted = grant(&node, "ledger-node-a", ttl).await;
    let node_lease = (granted.lease_id, granted.secret);
    let granted = grant(&intruder, "intruder", ttl).await;
    let intruder_lease = (granted.lease_id, granted.secret);

    // ledger-node-a campaigns in ledger-master and is elected.
    let mut elections = ElectionClient::new(node.clone());
    let mut stream = elections.campaign(campaign_request("ledger-master", &node_lease)).await.unwrap().into_inner();
    let first = loop {
        let status = tokio::time::timeout(CALL_TIMEOUT, stream.message()).await.unwrap().unwrap().unwrap();
        if status.state() == pb::CandidateState::Elected {
            break status;
        }
        assert_eq!(status.state(), pb::CandidateState::Queued);
    };

    // ... but not in `other`, nor with lock key users:1.
    let denied = elections.campaign(campaign_request("other", &node_lease)).await.map(|_| ()).unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(denied.message(), "identity not authorized for this election");
    let locker = Locker::with_lease(&node, node_lease.clone());
    let denied = locker.lock(&["users:1"], EXCLUSIVE, 1000).await.unwrap_err();
    assert_eq!(
        (denied.code(), denied.message()),
        (Code::PermissionDenied, "identity not authorized for this lock key")
    );
    let denied = locker.try_lock(&["orders:1", "users:1"], EXCLUSIVE).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let held = locker.lock(&["orders:1"], EXCLUSIVE, 1000).await.unwrap();
    locker.unlock(&held.handle).await.unwrap();

    // The intruder may read (read_elections, read_locks) but not campaign, proclaim, transfer
    // or lock.
    let mut intruder_elections = ElectionClient::new(intruder.clone());
    let leader = intruder_elections.leader(pb::LeaderRequest { election: "ledger-master".into() }).await.unwrap();
    assert_eq!(leader.into_inner().leader.unwrap().candidate_id, "me");
    let denied =
        intruder_elections.campaign(campaign_request("ledger-master", &intruder_lease)).await.map(|_| ()).unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let denied = intruder_elections
        .transfer(pb::TransferRequest { election: "ledger-master".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let denied = intruder_elections
        .proclaim(pb::ProclaimRequest {
            key: campaign_request("ledger-master", &node_lease).key,
            term: first.term,
            value: b"taken over".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let intruder_locker = Locker::with_lease(&intruder, intruder_lease);
    let denied = intruder_locker.lock(&["orders:1"], EXCLUSIVE, 1000).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(intruder_locker.holders("orders:", true).await.is_empty());

    // Denied calls changed nothing: ledger-node-a is still the leader.
    let leader = elections.leader(pb::LeaderRequest { election: "ledger-master".into() }).await.unwrap();
    assert_eq!(leader.into_inner().leader.unwrap().term, first.term);
    drop(stream);
    instance.shutdown().await;
}

/// The `authz_file` is followed: a rewritten file governs new requests on existing
/// connections; a broken rewrite leaves the previous rules in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_authz_rules_apply_to_new_requests() {
    let server_ca = Ca::new("server ca");
    let client_ca = Ca::new("client ca");
    let files = Files::new(&server_ca.server(), &client_ca);
    std::fs::write(&files.authz, RULES).unwrap();
    let instance = start("authz-reload", files.tls(true), Some(Authz::load(&files.authz).unwrap())).await;
    let node =
        connect(instance.addr(), client_tls(&server_ca, Some(&client_ca.client("ledger-node-a")))).await.unwrap();
    eventually(Duration::from_secs(30), "SERVING", || async { health(&node).await == Ok(ServingStatus::Serving) })
        .await;
    let granted = grant(&node, "ledger-node-a", Duration::from_secs(60)).await;
    let locker = Locker::with_lease(&node, (granted.lease_id, granted.secret));
    let held = locker.lock(&["orders:1"], EXCLUSIVE, 1000).await.unwrap();
    locker.unlock(&held.handle).await.unwrap();
    assert_eq!(locker.lock(&["users:1"], EXCLUSIVE, 1000).await.unwrap_err().code(), Code::PermissionDenied);

    replace(&files.authz, "[[allow]]\nidentity = \"ledger-node-*\"\nlocks = [\"users:*\"]\n");
    eventually(RELOAD_WAIT, "users:1 allowed by the new rules", || async {
        match locker.try_lock(&["users:1"], EXCLUSIVE).await {
            Ok(held) => held.acquired && locker.unlock(&held.handle).await.is_ok(),
            Err(status) => {
                assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
                false
            }
        }
    })
    .await;
    let denied = locker.lock(&["orders:1"], EXCLUSIVE, 1000).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "orders:* is no longer allowed");

    // A broken file (an unclosed list) is not used: the previous rules stay in force.
    replace(&files.authz, "[[allow]]\nidentity = \"ledger-node-*\"\nlocks = [\"orders:*\"\n");
    tokio::time::sleep(RELOAD_WAIT / 5).await;
    let held = locker.lock(&["users:2"], EXCLUSIVE, 1000).await.expect("the previous rules stay in force");
    locker.unlock(&held.handle).await.unwrap();
    assert_eq!(locker.lock(&["orders:1"], EXCLUSIVE, 1000).await.unwrap_err().code(), Code::PermissionDenied);
    instance.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_certificate_files_are_used_for_new_connections() {
    let old_ca = Ca::new("old ca");
    let new_ca = Ca::new("new ca");
    let client_ca = Ca::new("client ca");
    let files = Files::new(&old_ca.server(), &client_ca);
    let instance = start("tls-reload", files.tls(true), None).await;
    let addr = instance.addr();
    let tls = instance.tls().unwrap();
    let me = client_ca.client("ledger-node-a");
    let old_client = || client_tls(&old_ca, Some(&me));
    let new_client = || client_tls(&new_ca, Some(&me));

    let established = connect(addr, old_client()).await.unwrap();
    assert!(health(&established).await.is_ok());
    // The new CA is not in use yet.
    assert_tls_refuses(addr, &new_ca, Some(&me), UNTRUSTED_SERVER).await;

    // Replace the server certificate with one from another CA.
    files.replace_server(&new_ca.server());
    eventually(RELOAD_WAIT, "a client trusting only the new CA connects", || async {
        health_over(addr, new_client()).await.is_ok()
    })
    .await;
    assert!(tls.reloads() >= 1);
    // New connections no longer get the old certificate.
    assert_tls_refuses(addr, &old_ca, Some(&me), UNTRUSTED_SERVER).await;
    // Connections made before the reload keep working.
    assert!(health(&established).await.is_ok());

    // A broken replacement is reported and the last good configuration keeps serving.
    let failures = tls.reload_failures();
    replace(&files.cert, "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n");
    eventually(RELOAD_WAIT, "the broken certificate file is noticed", || async { tls.reload_failures() > failures })
        .await;
    assert_eq!(health_over(addr, new_client()).await, Ok(ServingStatus::Serving));
    let reloads = tls.reloads();

    // The client CA is reloaded too: clients of a new client CA get in once it is in the file.
    let other_client_ca = Ca::new("second client ca");
    let other = other_client_ca.client("ledger-node-b");
    files.replace_server(&new_ca.server()); // repair the server certificate
    replace(&files.client_ca, &format!("{}{}", client_ca.pem, other_client_ca.pem));
    eventually(RELOAD_WAIT, "a client of the added client CA connects", || async {
        health_over(addr, client_tls(&new_ca, Some(&other))).await.is_ok()
    })
    .await;
    assert!(tls.reloads() > reloads);
    assert!(health_over(addr, new_client()).await.is_ok());
    instance.shutdown().await;
}

/// Runs `zkcoord serve` with `args`, expecting it to exit at once; returns (code, stderr).
fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = zkcoord_command()
        .arg("serve")
        .args(args)
        .env_remove("ZKCOORD_CONFIG")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn bad_tls_settings_exit_64_naming_the_setting() {
    let ca = Ca::new("ca");
    let files = Files::new(&ca.server(), &ca);
    let (cert, key, client_ca) =
        (files.cert.to_str().unwrap(), files.key.to_str().unwrap(), files.client_ca.to_str().unwrap());
    std::fs::write(&files.authz, "[[allow]]\nidentity = \"a*b\"\n").unwrap();
    let authz = files.authz.to_str().unwrap();
    let other_key = files.authz.with_file_name("other.key");
    std::fs::write(&other_key, ca.server().key).unwrap();
    let garbage = files.authz.with_file_name("garbage.pem");
    std::fs::write(&garbage, "hello").unwrap();
    let ghost = files.authz.with_file_name("ghost.toml");
    std::fs::write(&ghost, "[[allow]]\nidentity = \"node\"\ntenant = \"ghost\"\n").unwrap();
    let ghost = ghost.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--tls-cert", cert], "`tls_cert`"),
        (vec!["--tls-key", key], "`tls_key`"),
        (vec!["--tls-client-ca", client_ca], "`tls_client_ca`"),
        (vec!["--tls-cert", cert, "--tls-key", key, "--authz-file", authz], "`authz_file`"),
        (vec!["--tls-cert", cert, "--tls-key", key, "--tls-client-ca", client_ca, "--authz-file", authz], "a*b"),
        (vec!["--tls-cert", garbage.to_str().unwrap(), "--tls-key", key], "`tls_cert`"),
        (vec!["--tls-cert", cert, "--tls-key", other_key.to_str().unwrap()], "`tls_key`"),
        (vec!["--tls-cert", cert, "--tls-key", key, "--tls-client-ca", "/nonexistent/ca.pem"], "`tls_client_ca`"),
        (vec!["--tls-cert", cert, "--tls-key", key, "--tls-client-ca", client_ca, "--authz-file", ghost], "\"ghost\""),
    ];
    for (args, expected) in cases {
        let (code, stderr) = run(&args);
        assert_eq!(code, Some(64), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one-line error: {stderr}");
    }
}

/// The bundled clients speak TLS too: the Rust client (`Client::with_tls`) grants and keeps a
/// lease over mTLS, and the CLI (`--ca-cert`, `--cert`, `--key`) reads it back; without a
/// client certificate the CLI is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_and_the_cli_connect_over_mtls() {
    let ca = Ca::new("clients-ca");
    let files = Files::new(&ca.server(), &ca);
    let instance = start("tls-clients", files.tls(true), None).await;
    let leaf = ca.client("ledger-node-a");
    let dir = tempfile::tempdir().unwrap();
    let (ca_file, cert_file, key_file) =
        (dir.path().join("ca.crt"), dir.path().join("c.crt"), dir.path().join("c.key"));
    std::fs::write(&ca_file, &ca.pem).unwrap();
    std::fs::write(&cert_file, &leaf.cert).unwrap();
    std::fs::write(&key_file, &leaf.key).unwrap();

    let tls =
        zkcoord_client::Tls::new(ca.pem.clone()).identity(leaf.cert.clone(), leaf.key.clone()).domain("localhost");
    let client = zkcoord_client::Client::with_tls([instance.addr().to_string()], &tls).unwrap();
    let lease = zkcoord_client::LeaseKeeper::grant(
        &client,
        zkcoord_client::LeaseOptions::new("over-mtls", Duration::from_secs(2)),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(lease.is_confirmed(), "heartbeats go over mTLS: {:?}", lease.status());

    let (id, addr) = (lease.id().to_string(), instance.addr().to_string());
    let cli = move |with_cert: bool| {
        let mut command = support::zkcoord_command();
        command.args(["lease", "ttl", &id, "--output", "json"]);
        command.args(["--endpoints", &addr, "--tls-domain", "localhost"]);
        command.arg("--ca-cert").arg(&ca_file);
        if with_cert {
            command.arg("--cert").arg(&cert_file).arg("--key").arg(&key_file);
        }
        command.env_remove("ZKCOORD_ENDPOINTS").output().unwrap()
    };
    let output = tokio::task::spawn_blocking(move || (cli(true), cli(false))).await.unwrap();
    let (with_cert, without_cert) = output;
    let stdout = String::from_utf8_lossy(&with_cert.stdout);
    assert!(with_cert.status.success(), "{stdout}{}", String::from_utf8_lossy(&with_cert.stderr));
    assert!(stdout.contains("over-mtls"), "{stdout}");
    assert!(!without_cert.status.success(), "no client certificate, no answer");
    lease.revoke().await.unwrap();
    instance.shutdown().await;
}

/// Tenants chosen by client identity: a `team-a` node's calls go to tenant `a` without any
/// header, it cannot name tenant `b`, and what it does is invisible from `b`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_bound_to_a_tenant_sees_and_touches_only_that_tenant() {
    let ca = Ca::new("tenant ca");
    let files = Files::new(&ca.server(), &ca);
    let rules = "[[allow]]\nidentity = \"team-a-*\"\ntenant = \"a\"\nelections = [\"*\"]\n\n\
                 [[allow]]\nidentity = \"team-b-*\"\ntenant = \"b\"\nelections = [\"*\"]\n";
    std::fs::write(&files.authz, rules).unwrap();
    let zk = zk::shared();
    let mut config = Config {
        tls: Some(files.tls(true)),
        authz: Some(Authz::load(&files.authz).unwrap()),
        ..support::test_config(&zk.hosts(), &support::namespace("tls-tenants"))
    };
    config.zookeeper.tenants = vec!["a".into(), "b".into()];
    let instance = server::start(config).await.unwrap();
    instance.session().wait_connected(Duration::from_secs(30)).await.unwrap();
    let team_a = connect(instance.addr(), client_tls(&ca, Some(&ca.client("team-a-1")))).await.unwrap();
    let team_b = connect(instance.addr(), client_tls(&ca, Some(&ca.client("team-b-1")))).await.unwrap();

    // No header: team-a's lease and campaign land in tenant a.
    let granted = grant(&team_a, "team-a-1", Duration::from_secs(60)).await;
    let lease = (granted.lease_id, granted.secret);
    let mut stream =
        ElectionClient::new(team_a.clone()).campaign(campaign_request("master", &lease)).await.unwrap().into_inner();
    while tokio::time::timeout(CALL_TIMEOUT, stream.message()).await.unwrap().unwrap().unwrap().state()
        != pb::CandidateState::Elected
    {}
    // team-b (tenant b) sees neither the lease nor the leader.
    let ttl = LeaseClient::new(team_b.clone()).time_to_live(pb::TimeToLiveRequest { lease_id: lease.0 }).await;
    assert_eq!(ttl.unwrap_err().code(), Code::NotFound, "tenant a's lease is invisible from tenant b");
    let leader = ElectionClient::new(team_b.clone())
        .leader(pb::LeaderRequest { election: "master".into() })
        .await
        .unwrap()
        .into_inner();
    assert!(leader.leader.is_none(), "tenant b's election 'master' has no leader");
    // team-a cannot name tenant b.
    let mut request = tonic::Request::new(pb::ListRequest::default());
    request.metadata_mut().insert(zkcoord::server::TENANT_HEADER, "b".parse().unwrap());
    let denied = LeaseClient::new(team_a.clone()).list(request).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    // With its own tenant named explicitly, it finds its lease.
    let mut request = tonic::Request::new(pb::TimeToLiveRequest { lease_id: lease.0 });
    request.metadata_mut().insert(zkcoord::server::TENANT_HEADER, "a".parse().unwrap());
    LeaseClient::new(team_a).time_to_live(request).await.unwrap();
    instance.shutdown().await;
}
