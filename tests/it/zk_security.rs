//! ZooKeeper security: digest authentication of zkcoord's session and the ACL of everything it
//! creates. Other ZooKeeper clients (unauthenticated, or authenticated as someone else) can
//! read zkcoord's state but not change it; zkcoord keeps its identity across a ZooKeeper
//! restart and across a session expiry; instances sharing the credentials cooperate.

#![allow(clippy::unwrap_used)]

use crate::support;

use std::time::{Duration, Instant};

use support::{
    ZkcoordProcess,
    lease::{grant, lease_ref},
    lock::{EXCLUSIVE, Locker},
    proxy::Proxy,
    zk::Standalone,
};
use tonic::{Code, transport::Channel};
use tonic_health::pb::health_check_response::ServingStatus;
use zkcoord::{
    config::{Config, RawSettings, ZkAuth},
    pb::v1::{self as pb, election_client::ElectionClient, lease_client::LeaseClient},
    server::{Instance, SessionStatus},
};
use zookeeper_client::{Acl, Client, CreateMode, Permission};

const CREDENTIALS: &str = "digest:zkcoord:s3cret-pw";
const WAIT: Duration = Duration::from_secs(30);

/// An in-process instance authenticating with `credentials`.
async fn start_authenticated(hosts: &str, namespace: &str, credentials: &str) -> Instance {
    let mut config = support::test_config(hosts, namespace);
    config.zookeeper.auth = Some(ZkAuth::parse(credentials).unwrap());
    support::start_configured(config).await
}

/// A direct client, authenticated with `credentials` when given.
async fn zk_as(hosts: &str, credentials: Option<&str>) -> Client {
    let mut connector = Client::connector();
    if let Some(credentials) = credentials {
        connector = connector.with_auth("digest", credentials.as_bytes());
    }
    connector.connect(hosts).await.expect("connect to zookeeper")
}

/// Campaigns for `election` and returns the stream once the candidate is elected.
async fn elected(channel: &Channel, election: &str, lease: &(i64, String)) -> tonic::Streaming<pb::CampaignResponse> {
    let mut stream = ElectionClient::new(channel.clone())
        .campaign(pb::CampaignRequest {
            key: Some(pb::CandidateKey {
                election: election.into(),
                candidate_id: "node-a".into(),
                lease: lease_ref(lease.0, &lease.1),
            }),
            value: b"10.0.0.1:9000".to_vec(),
            ..Default::default()
        })
        .await
        .expect("campaign")
        .into_inner();
    loop {
        let status = tokio::time::timeout(WAIT, stream.message()).await.expect("a status").unwrap().unwrap();
        if status.state() == pb::CandidateState::Elected {
            return stream;
        }
    }
}

/// Every znode under `root` (depth first), `root` included.
async fn tree(client: &Client, root: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_owned()];
    while let Some(path) = todo.pop() {
        if let Ok(children) = client.list_children(&path).await {
            todo.extend(children.iter().map(|c| format!("{path}/{c}")));
        }
        out.push(path);
    }
    out
}

/// Checks that `client` can read every znode under `ns` but change none of them.
async fn read_only(client: &Client, ns: &str, who: &str) {
    let paths = tree(client, ns).await;
    assert!(paths.len() >= 10, "{who}: zkcoord's state is visible: {paths:?}");
    for path in &paths {
        client.get_data(path).await.unwrap_or_else(|e| panic!("{who}: read {path}: {e}"));
        let denied = |op: &str, result: Result<(), zookeeper_client::Error>| {
            assert_eq!(result, Err(zookeeper_client::Error::NoAuth), "{who}: {op} {path}");
        };
        denied("set_data", client.set_data(path, b"tampered", None).await.map(|_| ()));
        denied(
            "create under",
            client
                .create(
                    &format!("{path}/intruder"),
                    b"",
                    &CreateMode::Persistent.with_acls(zookeeper_client::Acls::anyone_all()),
                )
                .await
                .map(|_| ()),
        );
        denied("set_acl", client.set_acl(path, &zookeeper_client::Acls::anyone_all(), None).await.map(|_| ()));
        if path != ns {
            denied("delete", client.delete(path, None).await);
        }
    }
}

#[tokio::test]
async fn other_clients_can_read_but_not_touch_zkcoords_state() {
    let zk = support::zk::shared();
    let ns = support::namespace("zksec-acl");
    let a = start_authenticated(&zk.hosts(), &ns, CREDENTIALS).await;
    let b = start_authenticated(&zk.hosts(), &ns, CREDENTIALS).await;
    let (ca, cb) = (support::channel(a.addr()).await, support::channel(b.addr()).await);

    // zkcoord works: a lease, a leader, a lock.
    let granted = grant(&ca, "node-a", Duration::from_secs(30)).await;
    let lease = (granted.lease_id, granted.secret.clone());
    let _campaign = elected(&ca, "ledger-master", &lease).await;
    let locker = Locker::with_lease(&ca, lease.clone());
    locker.lock(&["order-1"], EXCLUSIVE, 5000).await.expect("lock");

    // Everything zkcoord created carries its identity with ALL and the world with READ.
    let owner = zk_as(&zk.hosts(), Some("zkcoord:s3cret-pw")).await;
    let mut digest = None;
    for path in tree(&owner, &ns).await {
        let (acl, _) = owner.get_acl(&path).await.unwrap();
        let world: Vec<&Acl> = acl.iter().filter(|a| a.scheme() == "world").collect();
        assert_eq!(world.len(), 1, "{path}: {acl:?}");
        assert_eq!((world[0].id(), world[0].permission()), ("anyone", Permission::READ), "{path}");
        let ours: Vec<&Acl> = acl.iter().filter(|a| a.scheme() == "digest").collect();
        assert_eq!(ours.len(), 1, "{path}: {acl:?}");
        assert_eq!(ours[0].permission(), Permission::ALL, "{path}");
        assert!(ours[0].id().starts_with("zkcoord:"), "{path}: {acl:?}");
        assert!(!ours[0].id().contains("s3cret"), "ZooKeeper stores a hash, not the password");
        assert_eq!(*digest.get_or_insert_with(|| ours[0].id().to_owned()), ours[0].id(), "{path}: one identity");
    }

    // An unauthenticated client and one authenticated as someone else look but cannot touch.
    read_only(&support::zk_client(&zk.hosts()).await, &ns, "anonymous").await;
    read_only(&zk_as(&zk.hosts(), Some("mallory:other-pw")).await, &ns, "mallory").await;

    // Instances with the same credentials share the state: revoke on b what a granted.
    LeaseClient::new(cb.clone())
        .revoke(pb::RevokeRequest { lease: lease_ref(lease.0, &lease.1) })
        .await
        .expect("b revokes a's lease");
    let gone = LeaseClient::new(ca.clone()).time_to_live(pb::TimeToLiveRequest { lease_id: lease.0 }).await;
    assert_eq!(gone.unwrap_err().code(), Code::NotFound);
    let on_b = grant(&cb, "node-b", Duration::from_secs(30)).await;
    let listed = LeaseClient::new(ca.clone()).list(pb::ListRequest::default()).await.unwrap().into_inner().leases;
    assert!(listed.iter().any(|l| l.lease_id == on_b.lease_id), "a sees b's lease");

    a.shutdown().await;
    b.shutdown().await;
}

/// An instance with other credentials than the namespace's owner is refused by ZooKeeper
/// itself: registering the instance gets NoAuth, the instance logs why, and it does not serve.
#[tokio::test]
async fn an_instance_with_other_credentials_is_locked_out() {
    let zk = support::zk::shared();
    let ns = support::namespace("zksec-other");
    let owner = start_authenticated(&zk.hosts(), &ns, CREDENTIALS).await;
    // The built binary, so that the test reads its log.
    let (intruder, log) = ZkcoordProcess::spawn_with_log(
        &format!("{}{ns}", zk.hosts()),
        &[],
        &[("ZKCOORD_ZOOKEEPER_AUTH", "digest:intruder:pw")],
    );
    // Its first attempt, at once, is refused (then retried with backoff, refused again).
    let refusal = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match log.recv_timeout(left) {
                Ok(line) if line.contains("cannot establish zookeeper session") => return (line, seen),
                Ok(line) => seen.push(line),
                Err(_) => panic!("no refusal logged within 10 s; the log: {seen:#?}"),
            }
        }
    });
    let (refusal, before) = refusal.await.unwrap();
    assert!(
        refusal.contains("cannot register the instance (NoAuth): the namespace belongs to other ZooKeeper credentials"),
        "the refusal names ZooKeeper's NoAuth: {refusal}"
    );
    assert!(!before.iter().any(|line| line.contains("zookeeper session established")), "{before:#?}");
    let channel = support::channel(intruder.addr).await;
    assert_eq!(support::health(&channel, "").await, ServingStatus::NotServing, "the intruder does not serve");
    drop(intruder);
    owner.shutdown().await;
}

#[tokio::test]
async fn existing_open_directories_are_restricted_when_auth_is_turned_on() {
    let zk = support::zk::shared();
    let ns = support::namespace("zksec-upgrade");
    let open = support::start_zkcoord(&zk.hosts(), &ns).await;
    let anonymous = support::zk_client(&zk.hosts()).await;
    let (acl, _) = anonymous.get_acl(&format!("{ns}/leases")).await.unwrap();
    assert!(acl.iter().any(|a| a.scheme() == "world" && a.permission() == Permission::ALL), "open: {acl:?}");
    open.shutdown().await;

    let secured = start_authenticated(&zk.hosts(), &ns, CREDENTIALS).await;
    for dir in ["", "/instances", "/leases", "/elections", "/locks"] {
        let path = format!("{ns}{dir}");
        let (acl, _) = anonymous.get_acl(&path).await.unwrap();
        assert!(!zkcoord::testing::world_writable(&acl), "{path}: {acl:?}");
        let intruder = anonymous
            .create(&format!("{path}/x"), b"", &CreateMode::Persistent.with_acls(zookeeper_client::Acls::anyone_all()))
            .await;
        assert_eq!(intruder.unwrap_err(), zookeeper_client::Error::NoAuth, "{path}");
    }
    secured.shutdown().await;
}

fn session_id(status: SessionStatus) -> Option<i64> {
    match status {
        SessionStatus::Connected { session_id, .. } => Some(session_id),
        _ => None,
    }
}

/// Grants a lease, takes a lock and wins an election, all on fresh names, and checks the
/// lease record's ACL: what a new or resumed session creates is still zkcoord's alone.
async fn still_works(channel: &Channel, zk: &Client, ns: &str, round: &str) {
    let granted = grant(channel, "node", Duration::from_secs(30)).await;
    let lease = (granted.lease_id, granted.secret);
    let _campaign = elected(channel, &format!("election-{round}"), &lease).await;
    Locker::with_lease(channel, lease.clone()).lock(&[&format!("key-{round}")], EXCLUSIVE, 5000).await.expect("lock");
    let (acl, _) = zk.get_acl(&format!("{ns}/leases/{}", lease.0)).await.unwrap();
    assert!(!zkcoord::testing::world_writable(&acl) && acl.iter().any(|a| a.scheme() == "digest"), "{round}: {acl:?}");
}

#[tokio::test]
async fn authentication_survives_zookeeper_restart_and_session_expiry() {
    let mut zk = Standalone::start();
    let proxy = Proxy::start(zk.hosts().parse().unwrap()).await;
    let ns = support::namespace("zksec-restart");
    let instance = start_authenticated(&proxy.addr.to_string(), &ns, CREDENTIALS).await;
    let channel = support::channel(instance.addr()).await;
    let observer = zk_as(&zk.hosts(), None).await;
    still_works(&channel, &observer, &ns, "start").await;

    // A ZooKeeper restart: the client reconnects and re-sends its credentials.
    drop(observer);
    let generation = instance.session().status().generation();
    zk.server.restart();
    // The restart blocked this test's runtime: wait for the reconnection itself, not a stale
    // "connected".
    support::eventually(WAIT, "zkcoord reconnected after the restart", || async {
        instance.session().status().generation() > generation
    })
    .await;
    let observer = zk_as(&zk.hosts(), None).await;
    still_works(&channel, &observer, &ns, "restart").await;

    // A session expiry: cut zkcoord off until ZooKeeper has expired its session; the new
    // session authenticates again.
    let before = session_id(instance.session().status()).expect("connected");
    proxy.cut();
    support::eventually(WAIT, "zkcoord noticed the partition", || async {
        !instance.session().status().is_connected()
    })
    .await;
    support::eventually(WAIT, "zookeeper expired zkcoord's session", || {
        let observer = observer.clone();
        let instances = format!("{ns}/instances");
        async move {
            let ephemerals = observer.list_children(&instances).await.unwrap_or_default();
            ephemerals.is_empty()
        }
    })
    .await;
    proxy.heal();
    let mut after = None;
    support::eventually(WAIT, "zkcoord has a new session", || {
        after = session_id(instance.session().status());
        async move { after.is_some_and(|id| id != before) }
    })
    .await;
    still_works(&channel, &observer, &ns, "expiry").await;
    // The registration of the new session is protected too.
    let registrations = observer.list_children(&format!("{ns}/instances")).await.unwrap();
    assert_eq!(registrations.len(), 1);
    let path = format!("{ns}/instances/{}", registrations[0]);
    assert_eq!(observer.delete(&path, None).await, Err(zookeeper_client::Error::NoAuth));
    instance.shutdown().await;
}

#[test]
fn credentials_come_from_env_or_a_file_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("zk-auth");
    std::fs::write(&file, "digest:zkcoord:from-file\n").unwrap();
    let path = file.to_str().unwrap().to_owned();

    let env = |name: &str| (name == "ZKCOORD_ZOOKEEPER_AUTH").then(|| "digest:zkcoord:from-env".to_string());
    let config = Config::resolve(RawSettings::default(), None, env).unwrap();
    assert_eq!(config.zookeeper.auth.as_ref().map(ZkAuth::user), Some("zkcoord"));
    assert!(!format!("{config:?}").contains("from-env"), "Debug hides the password");

    let flags = RawSettings { zookeeper_auth_file: Some(path.clone()), ..Default::default() };
    let config = Config::resolve(flags, None, |_| None).unwrap();
    assert_eq!(config.zookeeper.auth, Some(ZkAuth::parse("digest:zkcoord:from-file").unwrap()));

    let both = RawSettings { zookeeper_auth_file: Some(path), ..Default::default() };
    let err = Config::resolve(both, None, env).unwrap_err();
    assert_eq!(err.setting, "zookeeper_auth_file");

    let bad = |name: &str| (name == "ZKCOORD_ZOOKEEPER_AUTH").then(|| "zkcoord:leaked-pw".to_string());
    let err = Config::resolve(RawSettings::default(), None, bad).unwrap_err();
    assert_eq!(err.setting, "zookeeper_auth");
    assert!(err.to_string().contains("ZKCOORD_ZOOKEEPER_AUTH") && !err.to_string().contains("leaked"), "{err}");

    let missing = RawSettings { zookeeper_auth_file: Some("/nonexistent/zk-auth".into()), ..Default::default() };
    let err = Config::resolve(missing, None, |_| None).unwrap_err();
    assert!(err.to_string().contains("--zookeeper-auth-file"), "{err}");
}

#[test]
fn a_bad_credentials_setting_exits_64() {
    let output = support::zkcoord_command()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("ZKCOORD_ZOOKEEPER_AUTH", "digest:only-a-user")
        .env_remove("ZKCOORD_CONFIG")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("zookeeper_auth"), "{stderr}");
}
