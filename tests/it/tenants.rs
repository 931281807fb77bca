//! Tenants: independent groups of clients on one ZooKeeper ensemble and one zkcoord
//! deployment, chosen per request by the `zkcoord-tenant` header. Same names in two tenants
//! never meet, leases belong to the tenant they were granted in, each tenant's state lives
//! under `<namespace>/tenants/<tenant>`, and each tenant's janitor expires its orphaned leases.

#![allow(clippy::unwrap_used)]

use crate::support;

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Status, transport::Channel};
use zkcoord::{
    config::{Config, RawSettings},
    pb::v1::{self as pb, election_client::ElectionClient, lease_client::LeaseClient, lock_client::LockClient},
    server::{Instance, TENANT_HEADER},
};

const WAIT: Duration = Duration::from_secs(15);

/// `message` for `tenant` (`None`: no header, the default tenant).
fn req<T>(tenant: Option<&str>, message: T) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(tenant) = tenant {
        request.metadata_mut().insert(TENANT_HEADER, tenant.parse().unwrap());
    }
    request
}

async fn start_with_tenants(hosts: &str, namespace: &str, tenants: &[&str]) -> Instance {
    let mut config = support::test_config(hosts, namespace);
    config.zookeeper.tenants = tenants.iter().map(|t| (*t).to_owned()).collect();
    support::start_configured(config).await
}

/// A lease: id and secret.
type Lease = (i64, String);

async fn grant(channel: &Channel, tenant: Option<&str>, ttl: Duration) -> Result<Lease, Status> {
    let request = pb::GrantRequest { ttl_ms: ttl.as_millis() as i64, owner: "node".into(), ..Default::default() };
    let granted = LeaseClient::new(channel.clone()).grant(req(tenant, request)).await?.into_inner();
    Ok((granted.lease_id, granted.secret))
}

fn lease_ref(lease: &Lease) -> Option<pb::LeaseRef> {
    Some(pb::LeaseRef { id: lease.0, secret: lease.1.clone() })
}

async fn time_to_live(channel: &Channel, tenant: Option<&str>, id: i64) -> Result<pb::TimeToLiveResponse, Status> {
    let request = req(tenant, pb::TimeToLiveRequest { lease_id: id });
    Ok(LeaseClient::new(channel.clone()).time_to_live(request).await?.into_inner())
}

async fn list(channel: &Channel, tenant: Option<&str>) -> BTreeSet<i64> {
    let response = LeaseClient::new(channel.clone()).list(req(tenant, pb::ListRequest::default())).await.unwrap();
    response.into_inner().leases.iter().map(|l| l.lease_id).collect()
}

/// Campaigns in `tenant` and waits until elected.
async fn elected(
    channel: &Channel,
    tenant: Option<&str>,
    election: &str,
    candidate: &str,
    lease: &Lease,
) -> tonic::Streaming<pb::CampaignResponse> {
    let request = pb::CampaignRequest {
        key: Some(pb::CandidateKey {
            election: election.into(),
            candidate_id: candidate.into(),
            lease: lease_ref(lease),
        }),
        value: candidate.as_bytes().to_vec(),
        ..Default::default()
    };
    let mut stream = ElectionClient::new(channel.clone()).campaign(req(tenant, request)).await.unwrap().into_inner();
    loop {
        let status = tokio::time::timeout(WAIT, stream.message()).await.expect("a status").unwrap().unwrap();
        if status.state() == pb::CandidateState::Elected {
            return stream;
        }
    }
}

async fn leader(channel: &Channel, tenant: Option<&str>, election: &str) -> Option<String> {
    let request = req(tenant, pb::LeaderRequest { election: election.into() });
    let response = ElectionClient::new(channel.clone()).leader(request).await.unwrap().into_inner();
    response.leader.map(|l| l.candidate_id)
}

async fn lock(channel: &Channel, tenant: Option<&str>, key: &str, lease: &Lease) -> Result<pb::LockResponse, Status> {
    let request = pb::LockRequest {
        keys: vec![key.into()],
        lease: lease_ref(lease),
        mode: pb::LockMode::Exclusive.into(),
        wait_timeout_ms: 2000,
    };
    Ok(LockClient::new(channel.clone()).lock(req(tenant, request)).await?.into_inner())
}

async fn holders(channel: &Channel, tenant: Option<&str>, key: &str) -> Vec<i64> {
    let request = req(tenant, pb::HoldersRequest { key: key.into(), prefix: false, ..Default::default() });
    let keys = LockClient::new(channel.clone()).holders(request).await.unwrap().into_inner().keys;
    keys.iter().flat_map(|k| k.holders.iter().map(|h| h.lease_id)).collect()
}

#[tokio::test]
async fn tenants_are_independent_and_isolated() {
    let zk = support::zk::shared();
    let ns = support::namespace("tenants");
    let instance = start_with_tenants(&zk.hosts(), &ns, &["a", "b"]).await;
    let channel = support::channel(instance.addr()).await;
    let (a, b) = (Some("a"), Some("b"));

    let lease_a = grant(&channel, a, Duration::from_secs(30)).await.unwrap();
    let lease_b = grant(&channel, b, Duration::from_secs(30)).await.unwrap();
    let lease_default = grant(&channel, None, Duration::from_secs(30)).await.unwrap();

    // The same election in both tenants: two leaders.
    let _campaign_a = elected(&channel, a, "ledger-master", "node-a", &lease_a).await;
    let _campaign_b = elected(&channel, b, "ledger-master", "node-b", &lease_b).await;
    assert_eq!(leader(&channel, a, "ledger-master").await.as_deref(), Some("node-a"));
    assert_eq!(leader(&channel, b, "ledger-master").await.as_deref(), Some("node-b"));
    assert_eq!(leader(&channel, None, "ledger-master").await, None, "the default tenant has no such election");

    // The same lock key in both tenants: two holders.
    lock(&channel, a, "order-1", &lease_a).await.expect("a locks order-1");
    lock(&channel, b, "order-1", &lease_b).await.expect("b locks order-1 too");
    assert_eq!(holders(&channel, a, "order-1").await, vec![lease_a.0]);
    assert_eq!(holders(&channel, b, "order-1").await, vec![lease_b.0]);
    assert!(holders(&channel, None, "order-1").await.is_empty());

    // Each tenant lists its own leases only; the default tenant is unaffected.
    assert_eq!(list(&channel, a).await, BTreeSet::from([lease_a.0]));
    assert_eq!(list(&channel, b).await, BTreeSet::from([lease_b.0]));
    assert_eq!(list(&channel, None).await, BTreeSet::from([lease_default.0]));

    // A lease exists only in the tenant it was granted in.
    assert!(time_to_live(&channel, a, lease_a.0).await.is_ok());
    assert_eq!(time_to_live(&channel, b, lease_a.0).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(time_to_live(&channel, None, lease_a.0).await.unwrap_err().code(), Code::NotFound);
    let revoke =
        LeaseClient::new(channel.clone()).revoke(req(b, pb::RevokeRequest { lease: lease_ref(&lease_a) })).await;
    assert_eq!(revoke.unwrap_err().code(), Code::NotFound);
    assert_eq!(lock(&channel, b, "order-2", &lease_a).await.unwrap_err().code(), Code::NotFound);
    let (tx, rx) = mpsc::channel(1);
    tx.send(pb::KeepAliveRequest { lease: lease_ref(&lease_a), health: None, elections: vec![], shard_groups: vec![] })
        .await
        .unwrap();
    let keep_alive = LeaseClient::new(channel.clone()).keep_alive(req(b, ReceiverStream::new(rx))).await;
    let code = match keep_alive {
        Err(status) => status.code(),
        Ok(stream) => stream.into_inner().message().await.unwrap_err().code(),
    };
    assert_eq!(code, Code::NotFound);
    let campaign_in_b = ElectionClient::new(channel.clone())
        .campaign(req(
            b,
            pb::CampaignRequest {
                key: Some(pb::CandidateKey {
                    election: "other".into(),
                    candidate_id: "x".into(),
                    lease: lease_ref(&lease_a),
                }),
                ..Default::default()
            },
        ))
        .await;
    let code = match campaign_in_b {
        Err(status) => status.code(),
        Ok(stream) => stream.into_inner().message().await.unwrap_err().code(),
    };
    assert_eq!(code, Code::NotFound);

    // In ZooKeeper: a's state is under <ns>/tenants/a, nowhere else.
    let direct = support::zk_client(&zk.hosts()).await;
    let under_a = format!("{ns}/tenants/a");
    assert!(direct.check_stat(&format!("{under_a}/leases/{}", lease_a.0)).await.unwrap().is_some());
    assert!(
        direct.check_stat(&format!("{under_a}/elections/ledger-master/candidates/node-a")).await.unwrap().is_some()
    );
    assert_eq!(direct.list_children(&format!("{under_a}/locks/order-1")).await.unwrap().len(), 1);
    assert_eq!(direct.list_children(&format!("{under_a}/instances")).await.unwrap().len(), 1, "registered in a");
    assert!(direct.check_stat(&format!("{ns}/leases/{}", lease_a.0)).await.unwrap().is_none());
    assert!(direct.check_stat(&format!("{ns}/tenants/b/leases/{}", lease_a.0)).await.unwrap().is_none());
    assert!(direct.check_stat(&format!("{ns}/leases/{}", lease_default.0)).await.unwrap().is_some());
    assert!(direct.check_stat(&format!("{ns}/elections/ledger-master")).await.unwrap().is_none());

    instance.shutdown().await;
}

#[tokio::test]
async fn bad_and_unknown_tenants_are_refused() {
    let zk = support::zk::shared();
    let instance = start_with_tenants(&zk.hosts(), &support::namespace("tenants-bad"), &["a"]).await;
    let channel = support::channel(instance.addr()).await;
    let long = "t".repeat(129);
    for bad in ["a/b", "..", ".", "-a", long.as_str(), "a b"] {
        let status = grant(&channel, Some(bad), Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}: {status:?}");
        assert!(status.message().starts_with("zkcoord-tenant: "), "{status:?}");
    }
    for unknown in ["b", "A", "tenants"] {
        let status = grant(&channel, Some(unknown), Duration::from_secs(5)).await.unwrap_err();
        assert_eq!((status.code(), status.message()), (Code::PermissionDenied, "tenant not allowed"), "{unknown}");
        let status = time_to_live(&channel, Some(unknown), 1).await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
    }
    // Twice the header: refused rather than guessed.
    let mut request = req(Some("a"), pb::ListRequest::default());
    request.metadata_mut().append(TENANT_HEADER, "a".parse().unwrap());
    let status = LeaseClient::new(channel.clone()).list(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    instance.shutdown().await;

    // Without configured tenants, any tenant header is refused and no header still works.
    let plain = support::start_zkcoord(&zk.hosts(), &support::namespace("tenants-none")).await;
    let channel = support::channel(plain.addr()).await;
    assert_eq!(grant(&channel, Some("a"), Duration::from_secs(5)).await.unwrap_err().code(), Code::PermissionDenied);
    grant(&channel, None, Duration::from_secs(5)).await.expect("the default tenant");
    plain.shutdown().await;
}

#[tokio::test]
async fn a_tenants_leases_expire_on_their_home_and_by_its_janitor() {
    let zk = support::zk::shared();
    let ns = support::namespace("tenants-expiry");
    let x = start_with_tenants(&zk.hosts(), &ns, &["a"]).await;
    let y = start_with_tenants(&zk.hosts(), &ns, &["a"]).await;
    let (cx, cy) = (support::channel(x.addr()).await, support::channel(y.addr()).await);
    let ttl = Duration::from_secs(2);

    // Never kept alive: its home ends it after the ttl.
    let granted = Instant::now();
    let idle = grant(&cx, Some("a"), ttl).await.unwrap();
    support::eventually(WAIT, "the idle lease in a expired", || async {
        time_to_live(&cy, Some("a"), idle.0).await.is_err_and(|s| s.code() == Code::NotFound)
    })
    .await;
    assert!(granted.elapsed() >= ttl, "not before its ttl: {:?}", granted.elapsed());

    // Its home gone: the tenant's janitor (on y) ends it after the ttl, with its candidacy.
    let orphan = grant(&cx, Some("a"), ttl).await.unwrap();
    let _campaign = elected(&cx, Some("a"), "ledger-master", "node-x", &orphan).await;
    x.shutdown().await;
    let gone = Instant::now();
    assert!(time_to_live(&cy, Some("a"), orphan.0).await.is_ok(), "the lease outlives its home for a while");
    support::eventually(WAIT, "a's janitor expired the orphaned lease", || async {
        time_to_live(&cy, Some("a"), orphan.0).await.is_err_and(|s| s.code() == Code::NotFound)
    })
    .await;
    // The janitor counts the home's confirmation lead (0.875 s with 2 s sessions) as elapsed
    // once it saw the home go; the home confirmed nothing for that lease.
    assert!(gone.elapsed() >= ttl - Duration::from_millis(900), "not long before its ttl: {:?}", gone.elapsed());
    assert_eq!(leader(&cy, Some("a"), "ledger-master").await, None);
    y.shutdown().await;
}

#[test]
fn the_tenants_setting() {
    let env = |name: &str| (name == "ZKCOORD_TENANTS").then(|| "team-a, team-b".to_string());
    let config = Config::resolve(RawSettings::default(), None, env).unwrap();
    assert_eq!(config.zookeeper.tenants, ["team-a", "team-b"]);
    assert!(Config::resolve(RawSettings::default(), None, |_| None).unwrap().zookeeper.tenants.is_empty());
    for bad in ["a/b", "a,a", ".."] {
        let flags = RawSettings { tenants: Some(bad.into()), ..Default::default() };
        let err = Config::resolve(flags, None, |_| None).unwrap_err();
        assert_eq!(err.setting, "tenants", "{bad}");
        assert!(err.to_string().contains("--tenants"), "{err}");
    }
}

#[tokio::test]
async fn a_tenants_state_gets_zkcoords_acl() {
    let zk = support::zk::shared();
    let ns = support::namespace("tenants-acl");
    let mut config = support::test_config(&zk.hosts(), &ns);
    config.zookeeper.tenants = vec!["a".into()];
    config.zookeeper.auth = Some(zkcoord::config::ZkAuth::parse("digest:zkcoord:pw").unwrap());
    let instance = support::start_configured(config).await;
    let channel = support::channel(instance.addr()).await;
    let lease = grant(&channel, Some("a"), Duration::from_secs(30)).await.unwrap();
    let direct = support::zk_client(&zk.hosts()).await;
    for path in [
        format!("{ns}/tenants"),
        format!("{ns}/tenants/a"),
        format!("{ns}/tenants/a/leases"),
        format!("{ns}/tenants/a/leases/{}", lease.0),
    ] {
        let (acl, _) = direct.get_acl(&path).await.unwrap();
        assert!(!zkcoord::testing::world_writable(&acl), "{path}: {acl:?}");
    }
    assert_eq!(
        direct.delete(&format!("{ns}/tenants/a/leases/{}", lease.0), None).await,
        Err(zookeeper_client::Error::NoAuth)
    );
    instance.shutdown().await;
}
