//! The handlers: one per REST route, each a chat.v1 call through `ChatdCall`, and the
//! gateway's own `/metrics`, `/healthz` and `/readyz`.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::StreamExt;
use tokio::net::TcpListener;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

use super::client::ChatdCall;
use super::extract::{
    JsonBody, MessagePath, PageQuery, QueryParams, StreamCaller, StreamQuery, ThreadPath, query_int,
};
use super::json::{
    EditMessageBody, EnsureThreadBody, MarkReadBody, MarkUnreadBody, MessageJson, MessagePageJson,
    MuteBody, MuteJson, ReadStateJson, SendMessageBody, StreamTicketJson, SummaryEventJson,
    ThreadEventJson, ThreadJson, ThreadListJson, TypingUntilJson, UnreadSummaryJson, quoted_etag,
};
use super::{ApiError, GatewayState};
use crate::metrics::Metrics;
use crate::net::{self, ConnectionLimits, Protocol};
use crate::proto as pb;
use crate::status::edge;

/// `GET /metrics`: Prometheus text, or OpenMetrics when the scraper asks for it.
pub(super) async fn metrics_endpoint(
    State(state): State<GatewayState>,
    headers: HeaderMap,
) -> Response {
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

pub(super) async fn ensure_thread(
    mut chatd: ChatdCall,
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
    let request = chatd.request(pb::EnsureThreadRequest { target });
    let response = chatd.chat.ensure_thread(request).await?.into_inner();
    let thread = response
        .thread
        .ok_or_else(|| ApiError::from(tonic::Status::internal("chatd answered no thread")))?;
    let status = if response.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let thread = ThreadJson::new(thread, response.created).ok_or_else(|| {
        ApiError::from(tonic::Status::internal(
            "chatd answered a thread without created_at",
        ))
    })?;
    Ok((status, Json(thread)).into_response())
}

pub(super) async fn unread_summary(
    mut chatd: ChatdCall,
    headers: HeaderMap,
    QueryParams(query): QueryParams<PageQuery>,
) -> Result<Response, ApiError> {
    let limit = query_int::<i32>("limit", query.limit.as_deref())?.unwrap_or(0);
    // The field as it came: chatd reads it as RFC 9110 says (`*`, lists, weak tags).
    let if_none_match = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect::<Vec<_>>()
        .join(", ");
    let request = chatd.request(pb::GetUnreadSummaryRequest {
        limit,
        if_none_match,
    });
    let summary = chatd.chat.get_unread_summary(request).await?.into_inner();
    let etag = quoted_etag(&summary.etag);
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

/// The SSE event names, as the OpenAPI document describes them.
pub(crate) const SSE_SUMMARY: &str = "summary";
pub(crate) const SSE_STREAM_ERROR: &str = "stream-error";

/// How often an idle event stream sends a comment, so proxies and browsers keep it open.
const SSE_KEEPALIVE: Duration = Duration::from_secs(15);

/// Server-Sent Events: one `summary` event (the unread summary's JSON) per change, from
/// chatd's WatchUnreadSummary stream, with its etag, so the frontend can stop polling. If
/// the stream fails, one `stream-error` event carries the JSON error and the stream ends;
/// not `error`, which EventSource fires for its own transport failures and which could
/// not then tell a server's reason from a dropped connection.
pub(super) async fn unread_summary_stream(
    StreamCaller {
        call: mut chatd,
        ticket,
    }: StreamCaller,
    QueryParams(query): QueryParams<StreamQuery>,
) -> Result<Response, ApiError> {
    let limit = query_int::<i32>("limit", query.limit.as_deref())?.unwrap_or(0);
    let request = chatd.request(pb::WatchUnreadSummaryRequest { limit, ticket });
    let updates = chatd.chat.watch_unread_summary(request).await?.into_inner();
    let events = updates.map(|update| {
        let event = match update {
            Ok(summary) => Event::default()
                .event(SSE_SUMMARY)
                .json_data(SummaryEventJson::from(summary)),
            Err(status) => Event::default()
                .event(SSE_STREAM_ERROR)
                .json_data(ApiError::from(status)),
        };
        // Serializing our own JSON types cannot fail; if it ever did, say so in-band.
        Ok::<_, std::convert::Infallible>(
            event.unwrap_or_else(|_| Event::default().event(SSE_STREAM_ERROR)),
        )
    });
    let sse =
        Sse::new(events).keep_alive(KeepAlive::new().interval(SSE_KEEPALIVE).text("keepalive"));
    // Tell buffering proxies (nginx) to pass events through as they come.
    Ok(([(HeaderName::from_static("x-accel-buffering"), "no")], sse).into_response())
}

/// The SSE event name of a thread's changes.
pub(crate) const SSE_THREAD_EVENT: &str = "thread-event";

/// Server-Sent Events of a thread's changes (WatchThread): one `thread-event` per change,
/// its JSON the ThreadEvent's, its SSE `id` the version, so a client that reconnects with
/// `Last-Event-ID` (or `?after_version=`) resumes with nothing missed or repeated. Ends
/// as the summary stream does: one `stream-error` with the JSON error.
pub(super) async fn thread_events(
    StreamCaller {
        call: mut chatd,
        ticket,
    }: StreamCaller,
    ThreadPath(thread_id): ThreadPath,
    headers: HeaderMap,
    QueryParams(query): QueryParams<StreamQuery>,
) -> Result<Response, ApiError> {
    let last_event_id = headers
        .get("last-event-id")
        .map(|value| value.to_str().unwrap_or("not text"));
    let after_version = match last_event_id {
        Some(id) => query_int::<i64>("Last-Event-ID", Some(id))?,
        None => query_int::<i64>("after_version", query.after_version.as_deref())?,
    }
    .unwrap_or(0);
    let request = chatd.request(pb::WatchThreadRequest {
        thread_id,
        after_version,
        ticket,
    });
    let updates = chatd.chat.watch_thread(request).await?.into_inner();
    let events = updates.map(|update| {
        let event = match update {
            Ok(event) => {
                let version = event.version;
                match ThreadEventJson::new(event) {
                    Some(json) => Event::default()
                        .event(SSE_THREAD_EVENT)
                        .id(version.to_string())
                        .json_data(json),
                    None => Event::default()
                        .event(SSE_STREAM_ERROR)
                        .json_data(ApiError::from(tonic::Status::internal(
                            "chatd sent an empty event",
                        ))),
                }
            }
            Err(status) => Event::default()
                .event(SSE_STREAM_ERROR)
                .json_data(ApiError::from(status)),
        };
        Ok::<_, std::convert::Infallible>(
            event.unwrap_or_else(|_| Event::default().event(SSE_STREAM_ERROR)),
        )
    });
    let sse =
        Sse::new(events).keep_alive(KeepAlive::new().interval(SSE_KEEPALIVE).text("keepalive"));
    Ok(([(HeaderName::from_static("x-accel-buffering"), "no")], sse).into_response())
}

/// Announces the caller typing (SetTyping): `{"until": …}`. Send no body (or `{}`).
pub(super) async fn set_typing(
    mut chatd: ChatdCall,
    ThreadPath(thread_id): ThreadPath,
) -> Result<Json<TypingUntilJson>, ApiError> {
    let request = chatd.request(pb::SetTypingRequest { thread_id });
    let response = chatd.chat.set_typing(request).await?.into_inner();
    TypingUntilJson::new(response)
        .map(Json)
        .ok_or_else(|| ApiError::from(tonic::Status::internal("chatd answered no until")))
}

/// Mints a ticket for `GET …/unread-summary/stream?ticket=`: one stream, within
/// `expires_in` seconds. A secret, so no cache may keep it.
pub(super) async fn create_stream_ticket(mut chatd: ChatdCall) -> Result<Response, ApiError> {
    let request = chatd.request(pb::CreateStreamTicketRequest {});
    let minted = chatd.chat.create_stream_ticket(request).await?.into_inner();
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(StreamTicketJson::from(minted)),
    )
        .into_response())
}

pub(super) async fn mark_read(
    mut chatd: ChatdCall,
    ThreadPath(thread_id): ThreadPath,
    JsonBody(body): JsonBody<MarkReadBody>,
) -> Result<Json<ReadStateJson>, ApiError> {
    let request = pb::MarkReadRequest {
        thread_id,
        up_to_seq: body.up_to_seq,
    };
    let state = chatd
        .chat
        .mark_read(chatd.request(request))
        .await?
        .into_inner();
    Ok(Json(ReadStateJson::from(state)))
}

pub(super) async fn send_message(
    mut chatd: ChatdCall,
    ThreadPath(thread_id): ThreadPath,
    JsonBody(body): JsonBody<SendMessageBody>,
) -> Result<Response, ApiError> {
    let request = pb::SendMessageRequest {
        thread_id,
        body: body.body,
        client_message_id: body.client_message_id.unwrap_or_default(),
    };
    let response = chatd
        .chat
        .send_message(chatd.request(request))
        .await?
        .into_inner();
    Ok((StatusCode::CREATED, Json(answered(response.message)?)).into_response())
}

pub(super) async fn list_threads(
    mut chatd: ChatdCall,
    QueryParams(query): QueryParams<PageQuery>,
) -> Result<Json<ThreadListJson>, ApiError> {
    let request = pb::ListThreadsRequest {
        limit: query_int::<i32>("limit", query.limit.as_deref())?.unwrap_or(0),
        page_token: query.page_token.unwrap_or_default(),
    };
    let page = chatd
        .chat
        .list_threads(chatd.request(request))
        .await?
        .into_inner();
    Ok(Json(ThreadListJson::from(page)))
}

pub(super) async fn list_messages(
    mut chatd: ChatdCall,
    ThreadPath(thread_id): ThreadPath,
    QueryParams(query): QueryParams<PageQuery>,
) -> Result<Json<MessagePageJson>, ApiError> {
    let request = pb::ListMessagesRequest {
        thread_id,
        before_seq: query_int("before_seq", query.before_seq.as_deref())?,
        after_seq: query_int("after_seq", query.after_seq.as_deref())?,
        limit: query_int::<i32>("limit", query.limit.as_deref())?.unwrap_or(0),
    };
    let page = chatd
        .chat
        .list_messages(chatd.request(request))
        .await?
        .into_inner();
    MessagePageJson::new(page).map(Json).ok_or_else(|| {
        ApiError::from(tonic::Status::internal(
            "chatd answered a message without created_at",
        ))
    })
}

pub(super) async fn edit_message(
    mut chatd: ChatdCall,
    MessagePath(thread_id, seq): MessagePath,
    JsonBody(body): JsonBody<EditMessageBody>,
) -> Result<Json<MessageJson>, ApiError> {
    let request = pb::EditMessageRequest {
        thread_id,
        seq,
        body: body.body,
    };
    let response = chatd
        .chat
        .edit_message(chatd.request(request))
        .await?
        .into_inner();
    Ok(Json(answered(response.message)?))
}

pub(super) async fn delete_message(
    mut chatd: ChatdCall,
    MessagePath(thread_id, seq): MessagePath,
) -> Result<Json<MessageJson>, ApiError> {
    let request = pb::DeleteMessageRequest { thread_id, seq };
    let response = chatd
        .chat
        .delete_message(chatd.request(request))
        .await?
        .into_inner();
    Ok(Json(answered(response.message)?))
}

pub(super) async fn mark_unread(
    mut chatd: ChatdCall,
    ThreadPath(thread_id): ThreadPath,
    JsonBody(body): JsonBody<MarkUnreadBody>,
) -> Result<Json<ReadStateJson>, ApiError> {
    let request = pb::MarkUnreadRequest {
        thread_id,
        from_seq: body.from_seq,
    };
    let state = chatd
        .chat
        .mark_unread(chatd.request(request))
        .await?
        .into_inner();
    Ok(Json(ReadStateJson::from(state)))
}

pub(super) async fn mute_thread(
    mut chatd: ChatdCall,
    ThreadPath(thread_id): ThreadPath,
    JsonBody(body): JsonBody<MuteBody>,
) -> Result<Json<MuteJson>, ApiError> {
    let until = body
        .until
        .map(|until| {
            chrono::DateTime::parse_from_rfc3339(&until)
                .map(|at| prost_types::Timestamp {
                    seconds: at.timestamp(),
                    nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
                })
                .map_err(|_| {
                    ApiError::invalid(
                        "until",
                        format!(
                            "must be an RFC 3339 time like 2026-12-01T09:00:00Z, got {until:?}"
                        ),
                    )
                })
        })
        .transpose()?;
    let request = pb::MuteThreadRequest { thread_id, until };
    let state = chatd
        .chat
        .mute_thread(chatd.request(request))
        .await?
        .into_inner();
    Ok(Json(MuteJson::from(state)))
}

pub(super) async fn unmute_thread(
    mut chatd: ChatdCall,
    ThreadPath(thread_id): ThreadPath,
) -> Result<Json<MuteJson>, ApiError> {
    let request = pb::UnmuteThreadRequest { thread_id };
    let state = chatd
        .chat
        .unmute_thread(chatd.request(request))
        .await?
        .into_inner();
    Ok(Json(MuteJson::from(state)))
}

/// The message an answer must carry, as JSON.
fn answered(message: Option<pb::Message>) -> Result<MessageJson, ApiError> {
    message.and_then(MessageJson::new).ok_or_else(|| {
        ApiError::from(tonic::Status::internal(
            "chatd answered no message, or one without created_at",
        ))
    })
}

/// Liveness: the gateway process answers.
pub(super) async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Readiness: chatd answers its gRPC health check with SERVING.
pub(super) async fn readyz(
    State(state): State<GatewayState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let status = HealthClient::new(state.chatd.clone())
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

pub(super) async fn not_found() -> ApiError {
    ApiError::new(edge::UNKNOWN_PATH, "no such path: see /openapi.json")
}

pub(super) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        edge::METHOD_NOT_ALLOWED,
        "this path does not take that method: see /openapi.json",
    )
}
