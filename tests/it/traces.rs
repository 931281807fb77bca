//! OpenTelemetry traces: the zkcoord binary exports over OTLP/gRPC to an in-process collector
//! (a tonic server implementing the collector's TraceService); each RPC is a span and each
//! ZooKeeper request made for it is a child span in the same trace.

#![allow(clippy::unwrap_used)]

use crate::support;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    trace::v1::Span,
};
use support::{
    ZkcoordProcess,
    lock::{EXCLUSIVE, Locker},
};
use tokio_stream::wrappers::TcpListenerStream;

/// Keeps every span it is sent.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

/// The spans named `name`.
fn named<'a>(spans: &'a [Span], name: &str) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.name == name).collect()
}

/// The string value of `span`'s attribute `key`, if it has one.
fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    span.attributes.iter().find(|kv| kv.key == key).and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
        Value::StringValue(value) => Some(value.as_str()),
        _ => None,
    })
}

/// The spans whose parent is `parent`, in its trace.
fn children<'a>(spans: &'a [Span], parent: &Span) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.parent_span_id == parent.span_id && s.trace_id == parent.trace_id).collect()
}

#[tokio::test]
async fn rpcs_and_the_zookeeper_requests_below_them_arrive_as_parent_and_child_spans() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

    let zk = support::zk::shared();
    let target = format!("{}{}", zk.hosts(), support::namespace("traces"));
    let mut process = ZkcoordProcess::spawn_with_env(
        &target,
        &[],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint), ("OTEL_BSP_SCHEDULE_DELAY", "100")],
    );
    support::wait_serving(process.addr).await;
    let channel = support::channel(process.addr).await;
    let locker = Locker::granted(&channel, "traced", Duration::from_secs(5)).await;
    let held = locker.lock(&["k"], EXCLUSIVE, 0).await.unwrap();
    locker.unlock(&held.handle).await.unwrap();
    // SIGTERM flushes the exporter before zkcoord exits.
    process.signal(libc::SIGTERM);
    let code = tokio::task::spawn_blocking(move || process.wait_exit(Duration::from_secs(15))).await.unwrap();
    assert_eq!(code, Some(0));

    let spans = collector.spans.lock().unwrap().clone();
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    for (rpc, zk_request) in [
        ("/zkcoord.v1.Lease/Grant", "create"),
        ("/zkcoord.v1.Lock/Lock", "multi"),
        ("/zkcoord.v1.Lock/Unlock", "multi"),
    ] {
        let calls = named(&spans, rpc);
        assert_eq!(calls.len(), 1, "one {rpc} span among {names:?}");
        let call = calls[0];
        assert!(call.parent_span_id.is_empty(), "{rpc} is a root span");
        let below: Vec<&str> = children(&spans, call).iter().map(|s| s.name.as_str()).collect();
        assert!(below.contains(&zk_request), "{rpc} has a {zk_request} child span, has {below:?}");
        for child in children(&spans, call) {
            assert!(
                child.start_time_unix_nano >= call.start_time_unix_nano,
                "{rpc}'s child {} starts inside it",
                child.name
            );
            // Every request names its operation and a path (a transaction: its first one's).
            assert_eq!(attribute(child, "zk.op"), Some(child.name.as_str()), "{rpc}'s child {}", child.name);
            let path = attribute(child, "zk.path").unwrap_or_default();
            assert!(path.starts_with('/'), "{rpc}'s child {} has zk.path {path:?}", child.name);
        }
    }
    server.abort();
}
