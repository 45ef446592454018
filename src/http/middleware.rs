//! What wraps every request: refusing oversized heads, a span and metrics per request,
//! and CORS for the origins an operator allows.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tracing::Instrument;
use tracing::field::Empty;

use super::{ApiError, GatewayState, MAX_HEADER_BYTES, MAX_URI_BYTES};
use crate::metrics::HttpLabels;
use crate::status::edge;

/// Refuses, in the JSON every error has, a request whose target or headers are over
/// what the gateway reads: 414 and 431, the client's to fix.
pub(super) async fn refuse_oversized_head(
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |target| target.as_str().len());
    if target > MAX_URI_BYTES {
        return ApiError::new(
            edge::URI_TOO_LONG,
            format!(
                "the request target is {target} bytes, over the {MAX_URI_BYTES} this API reads"
            ),
        )
        .into_response();
    }
    let headers = crate::net::header_list_bytes(request.headers());
    if headers > MAX_HEADER_BYTES {
        return ApiError::new(
            crate::status::request::HEADERS_TOO_LARGE,
            format!(
                "the request headers take {headers} bytes, over the {MAX_HEADER_BYTES} this API \
                 reads: send a shorter Authorization, traceparent or tracestate"
            ),
        )
        .into_response();
    }
    next.run(request).await
}

/// A span per HTTP request, with OpenTelemetry's HTTP conventions (http.request.method,
/// http.route, http.response.status_code), continuing the caller's W3C trace.
pub(super) async fn trace_request(
    State(state): State<GatewayState>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned());
    let method = method_name(request.method());
    let span = if crate::telemetry::exporting() {
        let span = tracing::info_span!(
            "http",
            otel.name = %format!("{method} {}", route.as_deref().unwrap_or("(unmatched)")),
            otel.kind = "server",
            otel.status_code = Empty,
            http.request.method = %method,
            http.route = route,
            url.path = %request.uri().path(),
            http.response.status_code = Empty,
            trace_id = Empty,
            span_id = Empty,
        );
        crate::telemetry::extract_parent(&span, request.headers());
        span
    } else {
        // Only log context: method and route say which request a log line belongs to.
        tracing::info_span!("http", method, route = route.as_deref())
    };
    let started = std::time::Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    span.in_scope(|| {
        tracing::debug!(
            status = response.status().as_u16(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "http request finished"
        );
    });
    let labels = HttpLabels {
        method,
        route: route.unwrap_or_else(|| "(unmatched)".to_owned()),
        status: response.status().as_u16(),
    };
    state.metrics.http.observe(&labels, started.elapsed());
    if response.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    response
}

/// A request method as metrics label it; methods outside HTTP's own are one label.
fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

/// The origins `--cors-allow-origin` names (none: no cross-origin call is allowed).
pub(crate) struct AllowedOrigins(pub Vec<String>);

/// Answers a browser's CORS preflight from an origin the gateway does not allow with 403
/// CORS_NOT_ALLOWED, saying which flag allows it: without this, with CORS off, the
/// preflight's OPTIONS met "this path does not take that method", which reads like a
/// wrong route. (The browser still reports a CORS failure; its network panel shows why.)
pub(super) async fn refuse_foreign_preflight(
    State(allowed): State<Arc<AllowedOrigins>>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let headers = request.headers();
    let preflight = request.method() == Method::OPTIONS
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let origin = headers
        .get(header::ORIGIN)
        .map(|origin| String::from_utf8_lossy(origin.as_bytes()).into_owned());
    match origin {
        Some(origin) if preflight && !allowed.0.contains(&origin) => {
            let allowing = match allowed.0.as_slice() {
                [] => "this gateway allows no cross-origin calls".to_owned(),
                some => format!("this gateway allows only {}", some.join(", ")),
            };
            ApiError::new(
                edge::CORS_NOT_ALLOWED,
                format!(
                    "a cross-origin call from {origin}: {allowing}. Start it with \
                     --cors-allow-origin {origin} (CHATD_CORS_ALLOW_ORIGINS), or serve the page \
                     from the gateway's own origin"
                ),
            )
            .into_response()
        }
        _ => next.run(request).await,
    }
}

pub(super) fn cors(origins: &[String]) -> Result<CorsLayer, String> {
    let origins = origins
        .iter()
        .map(|origin| {
            HeaderValue::from_str(origin).map_err(|_| format!("bad CORS origin {origin:?}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_NONE_MATCH,
            HeaderName::from_static("traceparent"),
            HeaderName::from_static("tracestate"),
        ])
        // Every response header the docs tell a browser to read.
        .expose_headers([header::ETAG, header::RETRY_AFTER])
        .max_age(Duration::from_secs(600)))
}
