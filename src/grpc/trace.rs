//! A span per chat.v1 call, with OpenTelemetry's RPC conventions (rpc.system,
//! rpc.service, rpc.method, rpc.grpc.status_code), continuing the caller's W3C trace.
//! Health checks and reflection are not traced: probes call them constantly.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;
use tracing::Instrument;
use tracing::field::Empty;

use crate::metrics::{RequestMetrics, RpcLabels};
use crate::{status, telemetry};

/// Every chat.v1 method, by the name metrics label it with. A path that is none of
/// these (a client calling a method that does not exist) is counted as `(unknown)`.
pub const RPCS: [&str; 9] = [
    "chat.v1.ChatService/EnsureThread",
    "chat.v1.ChatService/GetUnreadSummary",
    "chat.v1.ChatService/WatchUnreadSummary",
    "chat.v1.ChatService/MarkRead",
    "chat.v1.ChatService/SendMessage",
    "chat.v1.ChatService/ListMessages",
    "chat.v1.SyncService/UpsertRelation",
    "chat.v1.SyncService/UpsertContactAccess",
    "chat.v1.SyncService/UpsertInquiry",
];

/// tonic refuses a request message over the size limit as OUT_OF_RANGE, with no
/// details. chatd answers nothing else with OUT_OF_RANGE, so such an answer is that
/// refusal: it becomes RESOURCE_EXHAUSTED `REQUEST_TOO_LARGE`, with ErrorInfo.
fn too_large_is_resource_exhausted<Body: Default>(
    response: http::Response<Body>,
) -> http::Response<Body> {
    let out_of_range = response
        .headers()
        .get("grpc-status")
        .is_some_and(|code| code.as_bytes() == b"11");
    if !out_of_range {
        return response;
    }
    let refusal = status::status(
        status::request::TOO_LARGE,
        format!(
            "the request message is over {} bytes: send less",
            crate::grpc::MAX_REQUEST_BYTES
        ),
    );
    let (parts, ()) = refusal.into_http::<()>().into_parts();
    http::Response::from_parts(parts, Body::default())
}

/// Wraps the gRPC server's routes in `RpcTrace`, counting into `metrics`.
#[derive(Debug, Clone)]
pub struct RpcTraceLayer {
    metrics: RequestMetrics<RpcLabels>,
}

impl RpcTraceLayer {
    /// Every method's OK series exists from the start, at zero.
    pub fn new(metrics: RequestMetrics<RpcLabels>) -> Self {
        for rpc in RPCS {
            metrics.declare(&RpcLabels { rpc, code: "OK" });
        }
        Self { metrics }
    }
}

impl<S> Layer<S> for RpcTraceLayer {
    type Service = RpcTrace<S>;

    fn layer(&self, inner: S) -> RpcTrace<S> {
        RpcTrace {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RpcTrace<S> {
    inner: S,
    metrics: RequestMetrics<RpcLabels>,
}

impl<S, B, ResponseBody> Service<http::Request<B>> for RpcTrace<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResponseBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    ResponseBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The clone is not ready yet; the ready one serves this call (tower's convention).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let path = request.uri().path().trim_start_matches('/');
        let Some((service, method)) = path.split_once('/').filter(|(s, _)| s.starts_with("chat."))
        else {
            return Box::pin(inner.call(request));
        };
        let rpc = RPCS
            .into_iter()
            .find(|known| *known == path)
            .unwrap_or("(unknown)");
        let span = if telemetry::exporting() {
            let span = tracing::info_span!(
                "rpc",
                otel.name = %path,
                otel.kind = "server",
                otel.status_code = Empty,
                rpc.system = "grpc",
                rpc.service = %service,
                rpc.method = %method,
                rpc.grpc.status_code = Empty,
                trace_id = Empty,
                span_id = Empty,
            );
            telemetry::extract_parent(&span, request.headers());
            span
        } else {
            // Only log context: the method says which call a log line belongs to.
            tracing::info_span!("rpc", rpc)
        };
        let metrics = self.metrics.clone();
        let started = std::time::Instant::now();
        let future = inner.call(request).instrument(span.clone());
        Box::pin(async move {
            let response = too_large_is_resource_exhausted(future.await?);
            // Errors of unary calls travel in the response headers (trailers-only);
            // a response without grpc-status there carries OK or streams.
            let code = response
                .headers()
                .get("grpc-status")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.parse::<i32>().ok())
                .unwrap_or(0);
            span.record("rpc.grpc.status_code", code);
            span.in_scope(|| {
                tracing::debug!(
                    code,
                    elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
                    "rpc finished"
                );
            });
            let code_name = status::code_name(tonic::Code::from(code));
            metrics.observe(
                &RpcLabels {
                    rpc,
                    code: code_name,
                },
                started.elapsed(),
            );
            if matches!(code, 2 | 4 | 12 | 13 | 14 | 15) {
                // Server faults (UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL,
                // UNAVAILABLE, DATA_LOSS), per the RPC conventions.
                span.record("otel.status_code", "ERROR");
            }
            Ok(response)
        })
    }
}
