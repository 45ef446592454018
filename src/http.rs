//! The edge gateway: the web frontend's REST/JSON contract, each request translated into
//! a chat.v1 gRPC call to chatd over a real gRPC channel (the path internal callers
//! take), forwarding `authorization` and the W3C `traceparent`/`tracestate` headers.
//!
//! SyncService has no route here: upstream services reach it over gRPC only.

mod error;
mod json;
mod openapi;

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{
    DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, Path, Query, Request, State,
};
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tonic::metadata::MetadataMap;
use tonic::transport::Endpoint;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tracing::Instrument;
use tracing::field::Empty;

pub use error::ApiError;

use crate::domain::DomainError;
use crate::metrics::{HttpLabels, Metrics};
use crate::net::{self, ConnectionLimits, Protocol};
use crate::proto as pb;
use crate::proto::chat_service_client::ChatServiceClient;
use crate::status::edge;
use json::{
    EnsureThreadBody, MarkReadBody, MessageJson, MessagePageJson, ReadStateJson, SendMessageBody,
    StreamTicketJson, ThreadJson, UnreadSummaryJson,
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

/// Headers copied from the HTTP request into the gRPC call's metadata.
const FORWARDED_HEADERS: [&str; 3] = ["authorization", "traceparent", "tracestate"];

/// Everything the gateway needs to know.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    /// chatd's gRPC address, e.g. `http://127.0.0.1:50051`.
    pub upstream: String,
    /// How long one upstream call may take before the client gets 504.
    pub upstream_timeout: Duration,
    /// Origins allowed by CORS; empty turns CORS off.
    pub cors_allowed_origins: Vec<String>,
    /// How the listener treats its connections.
    pub connections: ConnectionLimits,
}

/// chatd's gRPC services as the gateway calls them: gRPC requests in, gRPC responses
/// out. Standalone, a channel over the network; inside `chatd serve`, chatd's own
/// service stack (the same interceptors and layers) with no network hop between.
pub type GrpcService = tower::util::BoxCloneSyncService<
    http::Request<tonic::body::Body>,
    http::Response<tonic::body::Body>,
    tonic::Status,
>;

/// The gateway's state: the way to chatd, and the metrics it counts into and serves.
#[derive(Clone)]
struct GatewayState {
    upstream: GrpcService,
    metrics: Metrics,
}

/// A lazily connected channel to `url` (it reconnects by itself, so the gateway
/// recovers without a restart when chatd comes back).
fn remote(url: &str, timeout: Duration) -> Result<GrpcService, String> {
    let channel = Endpoint::from_shared(url.to_owned())
        .map_err(|e| format!("bad upstream URL {url:?}: {e}"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(timeout)
        .tcp_nodelay(true)
        .connect_lazy();
    Ok(GrpcService::new(tower::ServiceExt::map_err(
        channel,
        |error: tonic::transport::Error| tonic::Status::from_error(Box::new(error)),
    )))
}

/// chatd's service stack in this process, answering within `timeout` (a call past it
/// is DEADLINE_EXCEEDED, as the channel's own timeout says it).
pub fn in_process<S>(service: S, timeout: Duration) -> GrpcService
where
    S: tower_service::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let bounded = tower::ServiceBuilder::new()
        .map_err(|error: tower::BoxError| {
            if error.is::<tower::timeout::error::Elapsed>() {
                tonic::Status::deadline_exceeded("chatd did not answer in time")
            } else {
                tonic::Status::from_error(error)
            }
        })
        .timeout(timeout)
        .service(tower::ServiceExt::map_err(
            service,
            |never: std::convert::Infallible| -> tower::BoxError { match never {} },
        ));
    GrpcService::new(bounded)
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
        let upstream = remote(&config.upstream, config.upstream_timeout)?;
        Self::build_with(config, metrics, upstream).await
    }

    /// The same, calling chatd through `upstream` (see `in_process`).
    pub async fn build_with(
        config: &GatewayConfig,
        metrics: Metrics,
        upstream: GrpcService,
    ) -> Result<Self, String> {
        let router = router(config, metrics, upstream)?;
        let listener = TcpListener::bind(config.listen)
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
const API_ROUTES: [(&str, &str, u16); 7] = [
    ("POST", "/api/v1/chat/threads/negotiation/", 201),
    ("GET", "/api/v1/chat/unread-summary/", 200),
    ("GET", "/api/v1/chat/unread-summary/", 304),
    ("POST", "/api/v1/chat/unread-summary/stream-ticket", 200),
    ("POST", "/api/v1/chat/threads/{thread_id}/read/", 200),
    ("POST", "/api/v1/chat/threads/{thread_id}/messages/", 201),
    ("GET", "/api/v1/chat/threads/{thread_id}/messages/", 200),
];

/// The REST routes, each path with and without its trailing slash.
pub fn router(
    config: &GatewayConfig,
    metrics: Metrics,
    upstream: GrpcService,
) -> Result<Router, String> {
    for (method, route, status) in API_ROUTES {
        metrics.http.declare(&HttpLabels {
            method,
            route: route.to_owned(),
            status,
        });
    }
    let state = GatewayState { upstream, metrics };
    let mut router = Router::new();
    for (path, route) in [
        ("/api/v1/chat/threads/negotiation/", post(ensure_thread)),
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
        .layer(axum::middleware::from_fn(refuse_oversized_head))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            trace_request,
        ))
        .with_state(state);
    if !config.cors_allowed_origins.is_empty() {
        router = router.layer(cors(&config.cors_allowed_origins)?);
    }
    Ok(router)
}

/// Refuses, in the JSON every error has, a request whose target or headers are over
/// what the gateway reads: 414 and 431, the client's to fix.
async fn refuse_oversized_head(request: Request, next: axum::middleware::Next) -> Response {
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
    let headers: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum();
    if headers > MAX_HEADER_BYTES {
        return ApiError::new(
            edge::HEADERS_TOO_LARGE,
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
async fn trace_request(
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

/// `GET /metrics`: Prometheus text, or OpenMetrics when the scraper asks for it.
async fn metrics_endpoint(State(state): State<GatewayState>, headers: HeaderMap) -> Response {
    render_metrics(&state.metrics, &headers)
}

fn render_metrics(metrics: &Metrics, headers: &HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok());
    let (content_type, body) = metrics.render(accept);
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// Serves `/metrics` alone on `listener` until `shutdown` (the `--metrics` port of serve).
pub async fn serve_metrics(
    listener: TcpListener,
    connections: ConnectionLimits,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let router = Router::new().route(
        "/metrics",
        get(move |headers: HeaderMap| async move { render_metrics(&metrics, &headers) }),
    );
    net::serve(listener, connections, Protocol::Http, router, shutdown).await;
    Ok(())
}

fn cors(origins: &[String]) -> Result<CorsLayer, String> {
    let origins = origins
        .iter()
        .map(|origin| {
            HeaderValue::from_str(origin).map_err(|_| format!("bad CORS origin {origin:?}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_NONE_MATCH,
            HeaderName::from_static("traceparent"),
            HeaderName::from_static("tracestate"),
        ])
        .expose_headers([header::ETAG])
        .max_age(Duration::from_secs(600)))
}

/// A JSON request body. Unlike `axum::Json`, its failures are the gateway's JSON errors,
/// and an empty body reads as `{}` where the type allows it.
struct JsonBody<T>(T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_none_or(|value| value.starts_with("application/json"));
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                let status = rejection.status();
                if status == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        edge::PAYLOAD_TOO_LARGE,
                        format!("the request body is over {MAX_BODY_BYTES} bytes"),
                    )
                } else {
                    ApiError::new(edge::BAD_REQUEST, rejection.body_text())
                }
            })?;
        // No body at all reads as `{}`; anything else must be a JSON object.
        let bytes: &[u8] = if bytes.is_empty() { b"{}" } else { &bytes };
        if !is_json {
            return Err(ApiError::new(
                edge::UNSUPPORTED_MEDIA_TYPE,
                "send the body as application/json",
            ));
        }
        // serde would read `[…]` into a struct too; the contract's bodies are objects.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::invalid("body", "must be a JSON object"));
        }
        Json::<T>::from_bytes(bytes)
            .map(|Json(value)| JsonBody(value))
            .map_err(|rejection| ApiError::invalid("body", rejection.body_text()))
    }
}

/// The `{thread_id}` of a path, refused with a JSON error naming it when not an integer.
struct ThreadPath(i64);

impl<S: Send + Sync> FromRequestParts<S> for ThreadPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::invalid("thread_id", rejection.body_text()))?;
        raw.parse::<i64>()
            .map(ThreadPath)
            .map_err(|_| ApiError::invalid("thread_id", format!("must be an integer, got {raw:?}")))
    }
}

/// Parses an optional integer query parameter.
fn query_int<T: std::str::FromStr>(field: &str, raw: Option<&str>) -> Result<Option<T>, ApiError> {
    raw.map(|raw| {
        raw.parse::<T>()
            .map_err(|_| ApiError::invalid(field, format!("must be an integer, got {raw:?}")))
    })
    .transpose()
}

/// Query parameters whose failures are the gateway's JSON errors, not axum's plain text.
struct QueryParams<T>(T);

impl<S, T> FromRequestParts<S> for QueryParams<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| QueryParams(value))
            .map_err(|rejection| ApiError::invalid("query", rejection.body_text()))
    }
}

/// A call to chatd on behalf of the HTTP caller: its `authorization` and trace headers
/// become the gRPC metadata of every request made through it.
///
/// It is the first extractor of every API handler and requires the `authorization`
/// header, so a caller without credentials learns that first (401), whatever else is
/// wrong with the request. The token itself is verified by chatd, which holds the keys.
struct Upstream {
    chat: ChatServiceClient<GrpcService>,
    metadata: MetadataMap,
}

impl Upstream {
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        tonic::Request::from_parts(self.metadata.clone(), Extensions::default(), message)
    }
}

impl FromRequestParts<GatewayState> for Upstream {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &GatewayState) -> Result<Self, ApiError> {
        if !parts.headers.contains_key(header::AUTHORIZATION) {
            return Err(ApiError::from(DomainError::TokenMissing));
        }
        Ok(Self::forwarding(parts, state))
    }
}

impl Upstream {
    /// Forwards the request's `authorization` (if any) and trace headers.
    fn forwarding(parts: &Parts, state: &GatewayState) -> Self {
        let mut metadata = MetadataMap::new();
        for name in FORWARDED_HEADERS {
            if let Some(value) = parts.headers.get(name)
                && let Ok(value) = value.to_str()
                && let Ok(value) = value.parse()
            {
                metadata.insert(name, value);
            }
        }
        // When tracing, chatd's span is the child of this request's span, in the same
        // trace as the caller's `traceparent`; otherwise that header goes on as it came.
        crate::telemetry::inject_current(&mut metadata);
        Self {
            chat: ChatServiceClient::new(state.upstream.clone()),
            metadata,
        }
    }
}

/// The event stream's caller: a bearer token like every call, or, for a browser's
/// `EventSource`, which cannot send headers, a stream ticket in the query. The query is
/// never logged (spans carry `url.path` only), and a ticket dies with its first use.
struct StreamCaller {
    upstream: Upstream,
    ticket: String,
}

#[derive(Debug, Deserialize)]
struct StreamQuery {
    limit: Option<String>,
    ticket: Option<String>,
}

impl FromRequestParts<GatewayState> for StreamCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &GatewayState) -> Result<Self, ApiError> {
        let QueryParams(query) =
            QueryParams::<StreamQuery>::from_request_parts(parts, state).await?;
        let upstream = match &query.ticket {
            Some(_) => Upstream::forwarding(parts, state),
            None => Upstream::from_request_parts(parts, state).await?,
        };
        Ok(Self {
            upstream,
            ticket: query.ticket.unwrap_or_default(),
        })
    }
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    limit: Option<String>,
    before_seq: Option<String>,
}

async fn ensure_thread(
    mut upstream: Upstream,
    JsonBody(body): JsonBody<EnsureThreadBody>,
) -> Result<Response, ApiError> {
    use pb::ensure_thread_request::Target;
    let target = match (body.relation_id, body.inquiry_id) {
        (Some(id), None) => Some(Target::RelationId(id)),
        (None, Some(id)) => Some(Target::InquiryId(id)),
        (None, None) => None, // chatd names the missing target
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "target",
                "set only one of relation_id and inquiry_id",
            ));
        }
    };
    let request = upstream.request(pb::EnsureThreadRequest { target });
    let response = upstream.chat.ensure_thread(request).await?.into_inner();
    let thread = response
        .thread
        .ok_or_else(|| ApiError::from(tonic::Status::internal("chatd answered no thread")))?;
    let status = if response.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(ThreadJson::new(thread, response.created))).into_response())
}

async fn unread_summary(
    mut upstream: Upstream,
    headers: HeaderMap,
    QueryParams(query): QueryParams<PageQuery>,
) -> Result<Response, ApiError> {
    let limit = query_int::<i32>("limit", query.limit.as_deref())?.unwrap_or(0);
    let if_none_match = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .and_then(first_entity_tag)
        .unwrap_or_default();
    let request = upstream.request(pb::GetUnreadSummaryRequest {
        limit,
        if_none_match,
    });
    let summary = upstream
        .chat
        .get_unread_summary(request)
        .await?
        .into_inner();
    let etag = format!("\"{}\"", summary.etag);
    let cache_headers = [
        (header::ETAG, etag),
        // Per-user content: browsers may keep it but must revalidate; shared caches must not mix users.
        (header::CACHE_CONTROL, "private, no-cache".to_owned()),
        (header::VARY, "Authorization".to_owned()),
    ];
    if summary.not_modified {
        return Ok((StatusCode::NOT_MODIFIED, cache_headers).into_response());
    }
    Ok((cache_headers, Json(UnreadSummaryJson::from(summary))).into_response())
}

/// How often an idle event stream sends a comment, so proxies and browsers keep it open.
const SSE_KEEPALIVE: Duration = Duration::from_secs(15);

/// Server-Sent Events: one `summary` event (the unread summary's JSON) per change, from
/// chatd's WatchUnreadSummary stream, so the frontend can stop polling. If the stream
/// fails, one `error` event carries the JSON error, and the stream ends.
async fn unread_summary_stream(
    StreamCaller {
        mut upstream,
        ticket,
    }: StreamCaller,
    QueryParams(query): QueryParams<StreamQuery>,
) -> Result<Response, ApiError> {
    let limit = query_int::<i32>("limit", query.limit.as_deref())?.unwrap_or(0);
    let request = upstream.request(pb::WatchUnreadSummaryRequest { limit, ticket });
    let updates = upstream
        .chat
        .watch_unread_summary(request)
        .await?
        .into_inner();
    let events = updates.map(|update| {
        let event = match update {
            Ok(summary) => Event::default()
                .event("summary")
                .json_data(UnreadSummaryJson::from(summary)),
            Err(status) => Event::default()
                .event("error")
                .json_data(ApiError::from(status)),
        };
        // Serializing our own JSON types cannot fail; if it ever did, say so in-band.
        Ok::<_, std::convert::Infallible>(event.unwrap_or_else(|_| Event::default().event("error")))
    });
    let sse =
        Sse::new(events).keep_alive(KeepAlive::new().interval(SSE_KEEPALIVE).text("keepalive"));
    // Tell buffering proxies (nginx) to pass events through as they come.
    Ok(([(HeaderName::from_static("x-accel-buffering"), "no")], sse).into_response())
}

/// Mints a ticket for `GET …/unread-summary/stream?ticket=`: one stream, within
/// `expires_in` seconds. A secret, so no cache may keep it.
async fn create_stream_ticket(mut upstream: Upstream) -> Result<Response, ApiError> {
    let request = upstream.request(pb::CreateStreamTicketRequest {});
    let minted = upstream
        .chat
        .create_stream_ticket(request)
        .await?
        .into_inner();
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(StreamTicketJson::from(minted)),
    )
        .into_response())
}

/// The opaque tag of an `If-None-Match` header (first of a list, weak or strong).
fn first_entity_tag(header: &str) -> Option<String> {
    let tag = header.split(',').next()?.trim();
    let tag = tag.strip_prefix("W/").unwrap_or(tag);
    let tag = tag.strip_prefix('"')?.strip_suffix('"')?;
    Some(tag.to_owned())
}

async fn mark_read(
    mut upstream: Upstream,
    ThreadPath(thread_id): ThreadPath,
    JsonBody(body): JsonBody<MarkReadBody>,
) -> Result<Json<ReadStateJson>, ApiError> {
    let request = pb::MarkReadRequest {
        thread_id,
        up_to_seq: body.up_to_seq,
    };
    let state = upstream
        .chat
        .mark_read(upstream.request(request))
        .await?
        .into_inner();
    Ok(Json(ReadStateJson::from(state)))
}

async fn send_message(
    mut upstream: Upstream,
    ThreadPath(thread_id): ThreadPath,
    JsonBody(body): JsonBody<SendMessageBody>,
) -> Result<Response, ApiError> {
    let request = pb::SendMessageRequest {
        thread_id,
        body: body.body,
        client_message_id: body.client_message_id.unwrap_or_default(),
    };
    let response = upstream
        .chat
        .send_message(upstream.request(request))
        .await?
        .into_inner();
    let message = response
        .message
        .ok_or_else(|| ApiError::from(tonic::Status::internal("chatd answered no message")))?;
    Ok((StatusCode::CREATED, Json(MessageJson::from(message))).into_response())
}

async fn list_messages(
    mut upstream: Upstream,
    ThreadPath(thread_id): ThreadPath,
    QueryParams(query): QueryParams<PageQuery>,
) -> Result<Json<MessagePageJson>, ApiError> {
    let request = pb::ListMessagesRequest {
        thread_id,
        before_seq: query_int("before_seq", query.before_seq.as_deref())?,
        limit: query_int::<i32>("limit", query.limit.as_deref())?.unwrap_or(0),
    };
    let page = upstream
        .chat
        .list_messages(upstream.request(request))
        .await?
        .into_inner();
    Ok(Json(MessagePageJson::from(page)))
}

/// Liveness: the gateway process answers.
async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Readiness: chatd answers its gRPC health check with SERVING.
async fn readyz(State(state): State<GatewayState>) -> Result<Json<serde_json::Value>, ApiError> {
    let status = HealthClient::new(state.upstream.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?
        .into_inner()
        .status;
    if status == ServingStatus::Serving as i32 {
        Ok(Json(serde_json::json!({ "status": "ready" })))
    } else {
        Err(ApiError::from(tonic::Status::unavailable(
            "chatd is not serving",
        )))
    }
}

async fn not_found() -> ApiError {
    ApiError::new(edge::UNKNOWN_PATH, "no such path: see /openapi.json")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        edge::METHOD_NOT_ALLOWED,
        "this path does not take that method: see /openapi.json",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_tags() {
        assert_eq!(first_entity_tag("\"v3.l50\"").as_deref(), Some("v3.l50"));
        assert_eq!(
            first_entity_tag("W/\"v3.l50\", \"x\"").as_deref(),
            Some("v3.l50")
        );
        assert_eq!(first_entity_tag("*"), None);
    }
}
