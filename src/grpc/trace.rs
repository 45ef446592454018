//! A span per chat.v1 call, with OpenTelemetry's RPC conventions (rpc.system,
//! rpc.service, rpc.method, rpc.grpc.status_code), continuing the caller's W3C trace.
//! Health checks and reflection are not traced: probes call them constantly.
//!
//! Here too every request's metadata is held to `net::MAX_HEADER_LIST_BYTES`, and every
//! chat.v1 call gets its deadline: the client's `grpc-timeout` or the
//! server's ceiling, whichever comes first, answered DEADLINE_EXCEEDED with ErrorInfo.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower_layer::Layer;
use tower_service::Service;
use tracing::Instrument;
use tracing::field::Empty;

use crate::metrics::{RequestMetrics, RequestSeries, RpcLabels};
use crate::{net, status, telemetry};

/// Every chat.v1 method, by the name metrics label it with. A path that is none of
/// these (a client calling a method that does not exist) is counted as `(unknown)`.
pub const RPCS: [&str; 18] = [
    "chat.v1.ChatService/EnsureThread",
    "chat.v1.ChatService/CreateStreamTicket",
    "chat.v1.ChatService/GetUnreadSummary",
    "chat.v1.ChatService/WatchUnreadSummary",
    "chat.v1.ChatService/MarkRead",
    "chat.v1.ChatService/MarkUnread",
    "chat.v1.ChatService/SendMessage",
    "chat.v1.ChatService/EditMessage",
    "chat.v1.ChatService/DeleteMessage",
    "chat.v1.ChatService/ListMessages",
    "chat.v1.ChatService/ListThreads",
    "chat.v1.ChatService/MuteThread",
    "chat.v1.ChatService/UnmuteThread",
    "chat.v1.SyncService/UpsertRelation",
    "chat.v1.SyncService/UpsertContactAccess",
    "chat.v1.SyncService/UpsertInquiry",
    "chat.v1.SyncService/RemoveMessage",
    "chat.v1.SyncService/EraseUser",
];

/// tonic refuses a request message over the size limit as OUT_OF_RANGE, with no
/// details. chatd's own OUT_OF_RANGE (EVENTS_EXPIRED) always carries its ErrorInfo, so
/// an OUT_OF_RANGE without details is that refusal: it becomes RESOURCE_EXHAUSTED
/// `REQUEST_TOO_LARGE`, with ErrorInfo.
fn too_large_is_resource_exhausted<Body: Default>(
    response: http::Response<Body>,
) -> http::Response<Body> {
    let out_of_range = response
        .headers()
        .get("grpc-status")
        .is_some_and(|code| code.as_bytes() == b"11");
    if !out_of_range || response.headers().contains_key("grpc-status-details-bin") {
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

/// The client's `grpc-timeout` (up to 8 digits and a unit, per gRPC over HTTP/2), or
/// `None` when it sent none or one that does not parse (then only the ceiling holds).
fn client_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// The answer to a call that ran out of time.
fn deadline_exceeded<Body: Default>(deadline: Duration) -> http::Response<Body> {
    let refusal = status::status(
        status::request::DEADLINE_EXCEEDED,
        format!(
            "the call did not finish within its deadline of {} ms (the client's grpc-timeout \
             or the server's --call-timeout): the database may be slow or down; retry with backoff",
            deadline.as_millis()
        ),
    );
    let (parts, ()) = refusal.into_http::<()>().into_parts();
    http::Response::from_parts(parts, Body::default())
}

/// The answer to a request whose headers are over what chatd reads.
fn headers_too_large<Body: Default>(header_bytes: usize) -> http::Response<Body> {
    let refusal = status::status(
        status::request::HEADERS_TOO_LARGE,
        format!(
            "the request metadata takes {header_bytes} bytes, over the {} chatd reads: send a \
             shorter authorization token, traceparent or tracestate",
            net::MAX_HEADER_LIST_BYTES
        ),
    );
    let (parts, ()) = refusal.into_http::<()>().into_parts();
    http::Response::from_parts(parts, Body::default())
}

/// Wraps the gRPC server's routes in `RpcTrace`, counting into `metrics`.
#[derive(Debug, Clone)]
pub struct RpcTraceLayer {
    metrics: RpcMetrics,
    call_timeout: Duration,
}

/// Where calls are counted: each method's OK series held at hand (most calls end OK,
/// and counting them needs no lookup), the family for the rest.
#[derive(Debug, Clone)]
struct RpcMetrics {
    family: RequestMetrics<RpcLabels>,
    ok: Arc<[RequestSeries; RPCS.len()]>,
}

impl RpcMetrics {
    /// Counts a call of `rpc`, which is `RPCS[known]` (`known` is `None` for a method
    /// chatd does not have).
    fn observe(
        &self,
        (known, rpc): (Option<usize>, &'static str),
        code: &'static str,
        elapsed: Duration,
    ) {
        match known.and_then(|index| self.ok.get(index)) {
            Some(series) if code == "OK" => series.observe(elapsed),
            _ => self.family.observe(&RpcLabels { rpc, code }, elapsed),
        }
    }
}

impl RpcTraceLayer {
    /// Every method's OK series exists from the start, at zero. No chat.v1 call runs
    /// longer than `call_timeout` before it answers (a stream, before its first message).
    pub fn new(family: RequestMetrics<RpcLabels>, call_timeout: Duration) -> Self {
        let ok = RPCS.map(|rpc| family.series(&RpcLabels { rpc, code: "OK" }));
        Self {
            metrics: RpcMetrics {
                family,
                ok: Arc::new(ok),
            },
            call_timeout,
        }
    }
}

impl<S> Layer<S> for RpcTraceLayer {
    type Service = RpcTrace<S>;

    fn layer(&self, inner: S) -> RpcTrace<S> {
        RpcTrace {
            inner,
            metrics: self.metrics.clone(),
            call_timeout: self.call_timeout,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RpcTrace<S> {
    inner: S,
    metrics: RpcMetrics,
    call_timeout: Duration,
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
        let header_bytes = net::header_list_bytes(request.headers());
        if header_bytes > net::MAX_HEADER_LIST_BYTES {
            let refusal = headers_too_large(header_bytes);
            return Box::pin(async move { Ok(refusal) });
        }
        // The clone is not ready yet; the ready one serves this call (tower's convention).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let path = request.uri().path().trim_start_matches('/');
        let Some((service, method)) = path.split_once('/').filter(|(s, _)| s.starts_with("chat."))
        else {
            return Box::pin(inner.call(request));
        };
        let known = RPCS.iter().position(|known| *known == path);
        let rpc = known.and_then(|index| RPCS.get(index)).copied();
        let rpc = rpc.unwrap_or("(unknown)");
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
        let deadline = client_timeout(request.headers())
            .map_or(self.call_timeout, |client| client.min(self.call_timeout));
        let started = std::time::Instant::now();
        let future = inner.call(request).instrument(span.clone());
        Box::pin(async move {
            // At the deadline the call's future is dropped and its database work with
            // it: the caller learns it may have to retry (writes are idempotent by
            // client_message_id), and the server's statement timeout ends the rest.
            let response = match tokio::time::timeout(deadline, future).await {
                Ok(answered) => too_large_is_resource_exhausted(answered?),
                Err(_) => deadline_exceeded(deadline),
            };
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
            metrics.observe((known, rpc), code_name, started.elapsed());
            if matches!(code, 2 | 4 | 12 | 13 | 14 | 15) {
                // Server faults (UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL,
                // UNAVAILABLE, DATA_LOSS), per the RPC conventions.
                span.record("otel.status_code", "ERROR");
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeout_of(value: &str) -> Option<Duration> {
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-timeout", value.parse().unwrap());
        client_timeout(&headers)
    }

    #[test]
    fn grpc_timeouts_parse_in_every_unit_and_bad_ones_are_ignored() {
        assert_eq!(timeout_of("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(timeout_of("3M"), Some(Duration::from_secs(180)));
        assert_eq!(timeout_of("5S"), Some(Duration::from_secs(5)));
        assert_eq!(timeout_of("250m"), Some(Duration::from_millis(250)));
        assert_eq!(
            timeout_of("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(timeout_of("7n"), Some(Duration::from_nanos(7)));
        for bad in ["", "S", "123456789S", "5s", "-5S", "5 S", "1.5S"] {
            assert_eq!(timeout_of(bad), None, "{bad:?}");
        }
    }
}
