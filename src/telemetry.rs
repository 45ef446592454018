//! Logs and traces. Logs go to stderr as text (default) or JSON lines; spans go to an
//! OpenTelemetry collector over OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and
//! nothing is exported (no exporter, no OpenTelemetry layer) when it is not.
//!
//! Trace context travels as W3C `traceparent`/`tracestate`: `extract_parent` continues
//! a caller's trace, `inject_current` hands it on to the next hop.

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::{Context, global};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing::level_filters::LevelFilter;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, with the fields of the spans in scope (trace_id, span_id).
    Json,
}

/// The installed telemetry; `shutdown` flushes spans not yet exported.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Installs logging, and tracing export when the standard `OTEL_EXPORTER_OTLP_*`
    /// variables name an endpoint (service name, sampler and resource attributes also
    /// come from the standard `OTEL_*` variables).
    pub fn init(format: LogFormat) -> Result<Self, String> {
        let configured = [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        ]
        .iter()
        .any(|name| std::env::var(name).is_ok_and(|value| !value.is_empty()));
        let exporter = if configured {
            Some(
                opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .build()
                    .map_err(|e| format!("cannot build the OTLP exporter: {e}"))?,
            )
        } else {
            None
        };
        Self::init_with(format, exporter)
    }

    /// Installs logging and, given an exporter, span export through it.
    pub fn init_with(
        format: LogFormat,
        exporter: Option<opentelemetry_otlp::SpanExporter>,
    ) -> Result<Self, String> {
        global::set_text_map_propagator(TraceContextPropagator::new());
        EXPORTING.store(exporter.is_some(), std::sync::atomic::Ordering::Relaxed);
        let provider = exporter.map(|exporter| {
            SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource())
                .build()
        });
        // Spans of chatd only, request and storage spans included; the log filter below
        // does not decide what is traced.
        let traces = provider.as_ref().map(|provider| {
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("chatd"))
                .with_filter(Targets::new().with_target("chatd", LevelFilter::DEBUG))
        });
        let logs_filter =
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        let logs = match format {
            // Colours only for a person at a terminal: log files and collectors get plain
            // text (and each call's span skips formatting escape codes).
            LogFormat::Text => tracing_subscriber::fmt::layer()
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_writer(std::io::stderr)
                .with_filter(logs_filter)
                .boxed(),
            LogFormat::Json => tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(true)
                .with_span_list(true)
                .with_writer(std::io::stderr)
                .with_filter(logs_filter)
                .boxed(),
        };
        tracing_subscriber::registry()
            .with(logs)
            .with(traces)
            .try_init()
            .map_err(|e| format!("cannot install logging: {e}"))?;
        Ok(Self { provider })
    }

    /// Exports every finished span now.
    pub fn flush(&self) {
        if let Some(provider) = &self.provider
            && let Err(error) = provider.force_flush()
        {
            tracing::warn!(%error, "could not export spans");
        }
    }

    /// Exports the spans not yet exported and stops the exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            eprintln!("chatd: could not export the last spans: {error}");
        }
    }
}

/// The standard resource (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES), named `chatd`
/// unless those name it otherwise.
fn resource() -> Resource {
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    let builder = Resource::builder();
    if named {
        builder.build()
    } else {
        builder.with_service_name("chatd").build()
    }
}

/// Reads W3C trace context from HTTP headers (gRPC metadata travels as HTTP/2 headers).
struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Writes W3C trace context into gRPC metadata.
struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            value.parse(),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// Whether spans are exported (an OTLP endpoint is configured). Without export a
/// request's span is only context for log lines, and stays lean: its OpenTelemetry
/// attributes would be formatted on every call for nobody.
pub fn exporting() -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed)
}

static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes `span` continue the trace named by the request's `traceparent`, if any, and
/// records its ids as `trace_id`/`span_id` fields, so JSON log lines carry them.
pub fn extract_parent(span: &Span, headers: &http::HeaderMap) {
    let parent =
        global::get_text_map_propagator(|propagator| propagator.extract(&HeaderExtractor(headers)));
    // Fails only when no OpenTelemetry layer is installed: nothing to continue then.
    let _ = span.set_parent(parent);
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if span_context.is_valid() {
        span.record("trace_id", span_context.trace_id().to_string());
        span.record("span_id", span_context.span_id().to_string());
    }
}

/// Writes the current span's trace context into outgoing gRPC metadata. Without an
/// OpenTelemetry layer there is no current context and `metadata` is left as it is.
pub fn inject_current(metadata: &mut tonic::metadata::MetadataMap) {
    let context: Context = Span::current().context();
    if context.span().span_context().is_valid() {
        global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&context, &mut MetadataInjector(metadata));
        });
    }
}
