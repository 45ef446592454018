//! The edge gateway: the web frontend's REST/JSON contract, each request translated into
//! a chat.v1 gRPC call to chatd over a real gRPC channel (the path internal callers
//! take), forwarding `authorization` and the W3C `traceparent`/`tracestate` headers.
//!
//! SyncService has no route here: upstream services reach it over gRPC only.
//!
//! In rooms:
//! - `client.rs`: the gateway's way to chatd (a gRPC channel, or chatd's own service
//!   stack in process) and `ChatdCall`, one call on behalf of an HTTP caller.
//! - `extract.rs`: what handlers read from a request (JSON bodies, path ids, queries),
//!   each failure the gateway's JSON error.
//! - `middleware.rs`: what wraps every request (size limits, a span and metrics, CORS).
//! - `routes.rs`: the handlers, one per REST route, and `/metrics`, `/healthz`, `/readyz`.
//! - `json.rs`: the JSON bodies; `error.rs`: gRPC status to HTTP error, in one place;
//!   `openapi.rs`: the OpenAPI document.

mod client;
mod error;
mod extract;
mod json;
pub use json::cloud_event;
mod middleware;
pub(crate) mod openapi;
pub(crate) mod routes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use tokio::net::TcpListener;

pub use client::{GrpcService, in_process};
pub use error::ApiError;
pub use routes::serve_metrics;

use crate::metrics::{HttpLabels, Metrics};
use crate::net::{self, ConnectionLimits, Protocol};
use middleware::{
    AllowedOrigins, cors, refuse_foreign_preflight, refuse_oversized_head, trace_request,
};
use routes::{
    create_stream_ticket, delete_message, edit_message, ensure_thread, healthz, list_messages,
    list_threads, mark_read, mark_unread, method_not_allowed, metrics_endpoint, mute_thread,
    not_found, readyz, send_message, set_typing, thread_events, unmute_thread, unread_summary,
    unread_summary_stream,
};

/// Largest request body accepted: larger ones get 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The longest request target (path and query) the gateway reads: its paths and
/// queries are short, so longer is a mistake or an attack, answered 414.
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// The most header bytes a request may carry (each field's name and value plus 32, as
/// HTTP/2 counts them), answered 431 above it. Below chatd's own gRPC limit
/// (`net::MAX_HEADER_LIST_BYTES`), so whatever the gateway forwards, chatd reads.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Everything the gateway needs to know.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    /// chatd's gRPC address (`--upstream`), e.g. `http://127.0.0.1:50051`.
    pub upstream: String,
    /// How long one upstream call may take before the client gets 504.
    pub upstream_timeout: Duration,
    /// Origins allowed by CORS; empty turns CORS off.
    pub cors_allowed_origins: Vec<String>,
    /// How the listener treats its connections.
    pub connections: ConnectionLimits,
}

/// How long a request body may take to arrive whole (`ConnectionLimits::body_timeout`),
/// for the extractors that read bodies.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyTimeout(pub(crate) Duration);

/// The gateway's state: the way to chatd, and the metrics it counts into and serves.
#[derive(Clone)]
pub(crate) struct GatewayState {
    pub(crate) chatd: GrpcService,
    pub(crate) metrics: Metrics,
}

/// A bound gateway, ready to `run`.
pub struct Gateway {
    listener: TcpListener,
    router: Router,
    connections: ConnectionLimits,
}

impl Gateway {
    /// Binds the gateway's listener, calling chatd at `config.upstream`. `metrics` is
    /// where its requests are counted and what its `/metrics` serves.
    pub async fn build(config: &GatewayConfig, metrics: Metrics) -> Result<Self, String> {
        let chatd = client::remote(&config.upstream, config.upstream_timeout)?;
        Self::build_with(config, metrics, chatd).await
    }

    /// The same, calling chatd through `chatd` (see `in_process`).
    pub async fn build_with(
        config: &GatewayConfig,
        metrics: Metrics,
        chatd: GrpcService,
    ) -> Result<Self, String> {
        let router = router(config, metrics, chatd)?;
        let listener = crate::net::bind(config.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
        Ok(Self {
            listener,
            router,
            connections: config.connections,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serves until `shutdown` completes, then finishes in-flight requests and returns.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), String> {
        tracing::info!(addr = %self.local_addr(), "chatd REST gateway listening");
        net::serve(
            self.listener,
            self.connections,
            Protocol::Http,
            self.router,
            shutdown,
        )
        .await;
        Ok(())
    }
}

/// The REST routes that answer a successful call, as metrics label them: each series
/// exists from the start.
const API_ROUTES: [(&str, &str, u16); 14] = [
    ("POST", "/api/v1/chat/threads/negotiation/", 201),
    ("GET", "/api/v1/chat/threads/", 200),
    ("GET", "/api/v1/chat/unread-summary/", 200),
    ("GET", "/api/v1/chat/unread-summary/", 304),
    ("POST", "/api/v1/chat/unread-summary/stream-ticket", 200),
    ("POST", "/api/v1/chat/threads/{thread_id}/read/", 200),
    ("POST", "/api/v1/chat/threads/{thread_id}/messages/", 201),
    ("GET", "/api/v1/chat/threads/{thread_id}/messages/", 200),
    (
        "PATCH",
        "/api/v1/chat/threads/{thread_id}/messages/{seq}/",
        200,
    ),
    (
        "DELETE",
        "/api/v1/chat/threads/{thread_id}/messages/{seq}/",
        200,
    ),
    ("POST", "/api/v1/chat/threads/{thread_id}/unread/", 200),
    ("PUT", "/api/v1/chat/threads/{thread_id}/mute/", 200),
    ("DELETE", "/api/v1/chat/threads/{thread_id}/mute/", 200),
    ("POST", "/api/v1/chat/threads/{thread_id}/typing/", 200),
];

/// The REST routes, each path with and without its trailing slash.
pub fn router(
    config: &GatewayConfig,
    metrics: Metrics,
    chatd: GrpcService,
) -> Result<Router, String> {
    for (method, route, status) in API_ROUTES {
        metrics.http.declare(&HttpLabels {
            method,
            route: route.to_owned(),
            status,
        });
    }
    let state = GatewayState { chatd, metrics };
    let mut router = Router::new();
    for (path, route) in [
        ("/api/v1/chat/threads/negotiation/", post(ensure_thread)),
        ("/api/v1/chat/threads/", get(list_threads)),
        ("/api/v1/chat/unread-summary/", get(unread_summary)),
        (
            "/api/v1/chat/unread-summary/stream",
            get(unread_summary_stream),
        ),
        (
            "/api/v1/chat/unread-summary/stream-ticket",
            post(create_stream_ticket),
        ),
        ("/api/v1/chat/threads/{thread_id}/read/", post(mark_read)),
        (
            "/api/v1/chat/threads/{thread_id}/messages/",
            post(send_message).get(list_messages),
        ),
        (
            "/api/v1/chat/threads/{thread_id}/messages/{seq}/",
            axum::routing::patch(edit_message).delete(delete_message),
        ),
        (
            "/api/v1/chat/threads/{thread_id}/unread/",
            post(mark_unread),
        ),
        (
            "/api/v1/chat/threads/{thread_id}/mute/",
            put(mute_thread).delete(unmute_thread),
        ),
        (
            "/api/v1/chat/threads/{thread_id}/events",
            get(thread_events),
        ),
        ("/api/v1/chat/threads/{thread_id}/typing/", post(set_typing)),
    ] {
        // The same route with and without the trailing slash.
        let twin = match path.strip_suffix('/') {
            Some(bare) => bare.to_owned(),
            None => format!("{path}/"),
        };
        router = router.route(path, route.clone()).route(&twin, route);
    }
    let mut router = router
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi::document))
        .route("/metrics", get(metrics_endpoint))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::Extension(BodyTimeout(
            config.connections.body_timeout,
        )))
        .layer(axum::middleware::from_fn(refuse_oversized_head));
    if !config.cors_allowed_origins.is_empty() {
        router = router.layer(cors(&config.cors_allowed_origins)?);
    }
    // Outside CORS, which would answer every preflight itself; inside the trace, so a
    // refused preflight is logged and counted like any answer.
    let allowed = Arc::new(AllowedOrigins(config.cors_allowed_origins.clone()));
    Ok(router
        .layer(axum::middleware::from_fn_with_state(
            allowed,
            refuse_foreign_preflight,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            trace_request,
        ))
        .with_state(state))
}
