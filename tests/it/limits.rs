//! Limits: calls in progress per connection and request size are bounded, and going past
//! either gets RESOURCE_EXHAUSTED with a stable message, without touching anyone's state.

#![allow(clippy::unwrap_used)]

use crate::support;

use std::time::Duration;

use support::lock::{EXCLUSIVE, Locker};
use tonic::Code;
use zkcoord::pb::v1::{self as pb, lease_client::LeaseClient};

#[tokio::test]
async fn one_connection_cannot_have_more_calls_in_progress_than_allowed() {
    let zk = support::zk::shared();
    let mut config = support::test_config(&zk.hosts(), &support::namespace("limits-calls"));
    config.max_calls_per_connection = 3;
    let instance = zkcoord::server::start(config).await.unwrap();
    instance.session().wait_connected(Duration::from_secs(30)).await.unwrap();

    // Another connection holds the key; three Lock calls on one connection wait for it.
    let holder = Locker::granted(&support::channel(instance.addr()).await, "holder", Duration::from_secs(5)).await;
    let held = holder.lock(&["k"], EXCLUSIVE, 0).await.unwrap();
    let busy = support::channel(instance.addr()).await;
    let waiter = Locker::granted(&busy, "waiter", Duration::from_secs(5)).await;
    let waits: Vec<_> = (0..3)
        .map(|_| {
            let waiter = waiter.clone();
            tokio::spawn(async move { waiter.lock(&["k"], EXCLUSIVE, 10_000).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A fourth call on that connection is refused at once; other connections are not limited.
    let refused = LeaseClient::new(busy.clone()).list(pb::ListRequest {}).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let other = support::channel(instance.addr()).await;
    LeaseClient::new(other).list(pb::ListRequest {}).await.unwrap();

    // Once the waits end, the connection takes calls again.
    holder.unlock(&held.handle).await.unwrap();
    for wait in waits {
        let handle = wait.await.unwrap().unwrap().handle;
        waiter.unlock(&handle).await.unwrap();
    }
    LeaseClient::new(busy).list(pb::ListRequest {}).await.unwrap();
    instance.shutdown().await;
}

#[tokio::test]
async fn an_oversized_request_is_refused_and_changes_nothing() {
    let zk = support::zk::shared();
    let instance = support::start_zkcoord(&zk.hosts(), &support::namespace("limits-size")).await;
    let channel = support::channel(instance.addr()).await;
    let mut leases = LeaseClient::new(channel);
    let huge = "x".repeat(zkcoord::server::MAX_REQUEST_BYTES + 1);
    let request = pb::GrantRequest {
        ttl_ms: 5000,
        owner: "big".into(),
        metadata: [("blob".to_owned(), huge)].into(),
        ..Default::default()
    };
    let refused = leases.grant(request).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(refused.message(), zkcoord::server::TOO_LARGE_MESSAGE);
    assert!(leases.list(pb::ListRequest {}).await.unwrap().into_inner().leases.is_empty(), "no lease was granted");
    instance.shutdown().await;
}
