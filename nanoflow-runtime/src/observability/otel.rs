//! OpenTelemetry export (cargo feature `otel`): the run and node spans go to an OTLP collector
//! over HTTP/protobuf, configured by the standard variables:
//!
//! * `OTEL_EXPORTER_OTLP_ENDPOINT` (e.g. `http://127.0.0.1:4318`; spans go to `/v1/traces`) or
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the full URL); export is on when either is set;
//! * `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_SERVICE_NAME` (default:
//!   the program's name), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`;
//! * `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn it off.
//!
//! `serve` installs it beside its log; a program with its own subscriber adds [`layer`].

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use super::TraceParent;
use crate::error::Error;

/// Makes the caller's span (from `traceparent`) the parent of a run's span.
pub(crate) fn set_parent(span: &tracing::Span, parent: &TraceParent) {
    let flags = if parent.sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let remote = SpanContext::new(
        TraceId::from_bytes(parent.trace_id.to_be_bytes()),
        SpanId::from_bytes(parent.parent_id.to_be_bytes()),
        flags,
        true,
        TraceState::default(),
    );
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Whether the environment asks for OTLP export.
pub fn configured() -> bool {
    let endpoint = var("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
        || var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some();
    let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
    endpoint && !disabled
}

/// Keeps the exporter running; exports what is left and stops it when dropped.
#[derive(Debug)]
pub struct OtelGuard {
    provider: SdkTracerProvider,
}

impl OtelGuard {
    /// Exports every finished span now.
    pub fn flush(&self) {
        let _ = self.provider.force_flush();
    }
}

impl Drop for OtelGuard {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "stopping the OpenTelemetry exporter failed");
        }
    }
}

/// A `tracing` layer exporting spans over OTLP as the `OTEL_*` variables say, and the guard to
/// keep while it runs; `None` when no endpoint is configured. Every run and node attempt span
/// is exported (nanoflow's spans and events from `DEBUG`, other crates' from `INFO`).
#[allow(clippy::type_complexity)]
pub fn layer<S>() -> Result<Option<(impl Layer<S>, OtelGuard)>, Error>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    if !configured() {
        return Ok(None);
    }
    // The blocking HTTP client keeps its own runtime on its own thread; build it off any async
    // runtime, which it may not be created in.
    let exporter = std::thread::spawn(|| {
        opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
            .map_err(|e| e.to_string())
    })
    .join()
    .map_err(|_| Error::Config("building the OTLP exporter panicked".into()))?
    .map_err(|e| Error::Config(format!("cannot set up the OTLP exporter: {e}")))?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if var("OTEL_SERVICE_NAME").is_none() {
        let name = std::env::current_exe()
            .ok()
            .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "nanoflow".into());
        resource = resource.with_service_name(name);
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    let tracer = provider.tracer("nanoflow");
    // The exporter's own HTTP client must not feed spans back into the exporter.
    let filter = Targets::new()
        .with_default(LevelFilter::INFO)
        .with_target("nanoflow_runtime", LevelFilter::DEBUG)
        .with_target("opentelemetry", LevelFilter::OFF)
        .with_target("opentelemetry_sdk", LevelFilter::OFF)
        .with_target("opentelemetry_otlp", LevelFilter::OFF)
        .with_target("reqwest", LevelFilter::OFF)
        .with_target("hyper", LevelFilter::OFF)
        .with_target("hyper_util", LevelFilter::OFF);
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(filter);
    Ok(Some((layer, OtelGuard { provider })))
}
