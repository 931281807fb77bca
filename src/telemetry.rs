//! Logging and tracing: `tracing` to stderr (text or JSON), plus OpenTelemetry trace export
//! over OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//!
//! Export is batched in the background: a collector that does not answer costs dropped spans
//! and a warning, never a stalled or failed request.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::{EnvFilter, layer::SubscriberExt, util::SubscriberInitExt};

use crate::config::LogFormat;

/// Environment variable that turns OTLP trace export on.
pub const OTLP_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// Keeps the trace exporter alive; flushes and shuts it down when dropped.
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(err) = provider.shutdown()
        {
            eprintln!("zkcoord: trace exporter shutdown: {err}");
        }
    }
}

/// Installs the global `tracing` subscriber. Must be called once, inside the Tokio runtime
/// (the OTLP exporter needs it).
///
/// # Errors
/// When the OTLP exporter cannot be built from its environment variables.
pub fn init(log_level: &str, format: LogFormat) -> Result<TelemetryGuard, Box<dyn std::error::Error>> {
    let filter = EnvFilter::try_new(log_level)?;
    let provider = match std::env::var_os(OTLP_ENDPOINT_ENV) {
        Some(_) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic().build()?;
            let resource = opentelemetry_sdk::Resource::builder().with_service_name("zkcoord").build();
            Some(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
        }
        None => None,
    };
    let otel = provider.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("zkcoord")));
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    match format {
        LogFormat::Text => {
            registry.with(tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(std::io::stderr)).try_init()?
        }
        LogFormat::Json => {
            registry.with(tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr)).try_init()?
        }
    }
    Ok(TelemetryGuard { provider })
}
