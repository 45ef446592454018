//! The REST gateway over real HTTP: the seed's three frontend flows, the JSON contract,
//! ETag/304, and every error path as status code and JSON body.

use std::time::Duration;

use chatd::domain::Role;
use chatd::grpc::pb::{ContactAccessState, RelationStatus};
use reqwest::StatusCode;
use reqwest::header::{ETAG, IF_NONE_MATCH};
use serde_json::{Value, json};

use crate::helpers::TestApp;

const TUTOR: i64 = 42;
const STUDENT: i64 = 7;

pub fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// Sends a request and returns its status and JSON body (Null when there is none).
pub async fn call(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.expect("the gateway answers");
    let status = response.status();
    let is_json = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .is_some_and(|v| {
            v.to_str()
                .unwrap_or_default()
                .starts_with("application/json")
        });
    let text = response.text().await.unwrap();
    if text.is_empty() {
        return (status, Value::Null);
    }
    assert!(is_json, "{status} answered non-JSON: {text}");
    (status, serde_json::from_str(&text).expect("a JSON body"))
}

#[track_caller]
pub fn assert_api_error(answer: &(StatusCode, Value), status: u16, code: &str, grpc_status: &str) {
    let (got, body) = answer;
    assert_eq!(got.as_u16(), status, "status of {body}");
    assert_eq!(body["code"], code, "code of {body}");
    assert_eq!(body["grpc_status"], grpc_status, "grpc_status of {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "message of {body}"
    );
}

pub(crate) async fn ensure(
    app: &TestApp,
    user: i64,
    role: Role,
    body: Value,
) -> (StatusCode, Value) {
    call(
        client()
            .post(app.url("/api/v1/chat/threads/negotiation/"))
            .header("authorization", app.bearer(user, role))
            .json(&body),
    )
    .await
}

pub(crate) async fn unread(app: &TestApp, user: i64, role: Role) -> (StatusCode, Value) {
    call(
        client()
            .get(app.url("/api/v1/chat/unread-summary/"))
            .header("authorization", app.bearer(user, role)),
    )
    .await
}

pub(crate) async fn send(
    app: &TestApp,
    user: i64,
    role: Role,
    thread_id: i64,
    body: &str,
) -> (StatusCode, Value) {
    call(
        client()
            .post(app.url(&format!("/api/v1/chat/threads/{thread_id}/messages/")))
            .header("authorization", app.bearer(user, role))
            .json(&json!({ "body": body, "client_message_id": null })),
    )
    .await
}

/// Flow 1: relation accepted → contact unlocked → tutor ensures the thread → sends.
async fn flow_accept_unlock_chat(app: TestApp) {
    app.relation(10, TUTOR, STUDENT, RelationStatus::Active, 1)
        .await;
    app.contact_access(TUTOR, STUDENT, ContactAccessState::Unlocked, 1)
        .await;
    let (status, thread) = ensure(&app, TUTOR, Role::Tutor, json!({ "relation_id": 10 })).await;
    assert_eq!(status, StatusCode::CREATED);
    let thread_id = thread["thread_id"].as_i64().expect("numeric thread_id");
    assert_eq!(thread["kind"], "contact");
    assert_eq!(thread["relation_id"], 10);
    assert_eq!(thread["inquiry_id"], Value::Null);
    assert_eq!(thread["tutor_id"], TUTOR);
    assert_eq!(thread["student_id"], STUDENT);
    assert_eq!(thread["is_writable"], true);
    assert_eq!(thread["created"], true);
    let (status, again) = ensure(&app, TUTOR, Role::Tutor, json!({ "relation_id": 10 })).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["created"], false);
    assert_eq!(again["thread_id"], thread_id);

    let (status, message) = send(
        &app,
        TUTOR,
        Role::Tutor,
        thread_id,
        "Hi! Shall we chat here?",
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(message["seq"], 1);
    assert_eq!(message["sender_id"], TUTOR);
    assert_eq!(message["body"], "Hi! Shall we chat here?");
    assert_eq!(message["client_message_id"], Value::Null);
    let created_at = message["created_at"].as_str().expect("a timestamp");
    chrono::DateTime::parse_from_rfc3339(created_at).expect("RFC 3339");

    let (status, page) = call(
        client()
            .get(app.url(&format!(
                "/api/v1/chat/threads/{thread_id}/messages/?limit=10"
            )))
            .header("authorization", app.bearer(STUDENT, Role::Student)),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["messages"][0]["body"], "Hi! Shall we chat here?");
    assert_eq!(page["has_more"], false);
    assert_eq!(page["peer_last_read_seq"], 1);
}

/// Flow 2: the student writes → the tutor's bell shows the badge → the tutor reads → gone.
async fn flow_badge_appears_and_clears(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    let (_, empty) = unread(&app, TUTOR, Role::Tutor).await;
    assert_eq!(
        empty,
        json!({ "threads": [], "total": 0, "muted_total": 0 })
    );

    send(
        &app,
        STUDENT,
        Role::Student,
        thread.thread_id,
        "When is our next lesson?",
    )
    .await;
    let (status, summary) = unread(&app, TUTOR, Role::Tutor).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(summary["total"], 1);
    let entry = &summary["threads"][0];
    assert_eq!(entry["thread_id"], thread.thread_id);
    assert_eq!(entry["kind"], "contact");
    assert_eq!(entry["relation_id"], 10);
    assert_eq!(entry["inquiry_id"], Value::Null);
    assert_eq!(entry["unread_count"], 1);
    assert_eq!(entry["last_message_preview"], "When is our next lesson?");
    assert_eq!(entry["last_message_sender_id"], STUDENT);
    assert_eq!(entry["muted"], false);
    assert_eq!(entry["muted_until"], Value::Null);
    chrono::DateTime::parse_from_rfc3339(entry["last_message_at"].as_str().unwrap())
        .expect("RFC 3339");

    // The frontend sends {} (or nothing) to read everything.
    let (status, read) = call(
        client()
            .post(app.url(&format!("/api/v1/chat/threads/{}/read/", thread.thread_id)))
            .header("authorization", app.bearer(TUTOR, Role::Tutor)),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        read,
        json!({ "thread_id": thread.thread_id, "last_read_seq": 1, "unread_count": 0, "total": 0 })
    );
    let (_, cleared) = unread(&app, TUTOR, Role::Tutor).await;
    assert_eq!(cleared["total"], 0);
}

/// Flow 3: contact access revoked → the tutor's ensure is refused (the button disables).
async fn flow_revoked_access_refuses_the_tutor(app: TestApp) {
    app.contact_thread(10, TUTOR, STUDENT).await;
    app.contact_access(TUTOR, STUDENT, ContactAccessState::Revoked, 2)
        .await;
    let answer = ensure(&app, TUTOR, Role::Tutor, json!({ "relation_id": 10 })).await;
    assert_api_error(&answer, 403, "CONTACT_ACCESS_LOCKED", "PERMISSION_DENIED");
    // The student is not affected.
    let (status, _) = ensure(&app, STUDENT, Role::Student, json!({ "relation_id": 10 })).await;
    assert_eq!(status, StatusCode::OK);
}

async fn unread_summary_etag_and_304(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    let summary_request = || {
        client()
            .get(app.url("/api/v1/chat/unread-summary/"))
            .header("authorization", app.bearer(TUTOR, Role::Tutor))
    };
    let first = summary_request().send().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let etag = first.headers()[ETAG].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");

    let unchanged = summary_request()
        .header(IF_NONE_MATCH, &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(unchanged.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(unchanged.headers()[ETAG], etag.as_str());
    assert!(
        unchanged.bytes().await.unwrap().is_empty(),
        "304 has no body"
    );

    send(&app, STUDENT, Role::Student, thread.thread_id, "news").await;
    let changed = summary_request()
        .header(IF_NONE_MATCH, &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), StatusCode::OK);
    assert_ne!(changed.headers()[ETAG], etag.as_str());
    let current = changed.headers()[ETAG].to_str().unwrap().to_owned();
    let body: Value = changed.json().await.unwrap();
    assert_eq!(body["total"], 1);

    // RFC 9110 If-None-Match: `*`, a list, a weak tag and the unquoted form gRPC gives
    // all match the current summary; the tutor's etag never matches the student's.
    let bare = current.trim_matches('"').to_owned();
    for field in [
        "*".to_owned(),
        format!("\"x\", {current}"),
        format!("W/{current}"),
        bare.clone(),
    ] {
        let answer = summary_request()
            .header(IF_NONE_MATCH, &field)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::NOT_MODIFIED, "{field}");
        assert_eq!(answer.headers()[ETAG], current.as_str(), "{field}");
    }
    let as_student = client()
        .get(app.url("/api/v1/chat/unread-summary/"))
        .header("authorization", app.bearer(TUTOR, Role::Student))
        .header(IF_NONE_MATCH, &current)
        .send()
        .await
        .unwrap();
    assert_eq!(as_student.status(), StatusCode::OK, "another owner's etag");
    let other_user = client()
        .get(app.url("/api/v1/chat/unread-summary/"))
        .header("authorization", app.bearer(STUDENT, Role::Student))
        .header(IF_NONE_MATCH, &current)
        .send()
        .await
        .unwrap();
    assert_eq!(other_user.status(), StatusCode::OK, "another user's etag");
}

/// The same without the summary cache: conditions checked against the stored version.
async fn etag_and_304_without_the_cache(app: TestApp) {
    unread_summary_etag_and_304(app).await;
}

async fn health_readiness_and_openapi(app: TestApp) {
    let (status, body) = call(client().get(app.url("/healthz"))).await;
    assert_eq!((status, body), (StatusCode::OK, json!({ "status": "ok" })));
    let (status, body) = call(client().get(app.url("/readyz"))).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({ "status": "ready" }))
    );
    let (status, doc) = call(client().get(app.url("/openapi.json"))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["paths"]["/api/v1/chat/unread-summary/"]["get"].is_object());
}

/// Reads Server-Sent Events from a streaming response body.
pub struct EventReader {
    pub response: reqwest::Response,
    pub buffer: String,
}

impl EventReader {
    /// The next event's (name, data), within 10 s; comments (keepalives) are skipped.
    pub async fn next(&mut self) -> (String, Value) {
        let (name, _, data) = self.next_with_id().await;
        (name, data)
    }

    /// The next event's (name, SSE id, data), within 10 s.
    pub async fn next_with_id(&mut self) -> (String, Option<String>, Value) {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut name, mut id, mut data) = (String::new(), None, String::new());
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        name = value.trim().to_owned();
                    } else if let Some(value) = line.strip_prefix("id:") {
                        id = Some(value.trim().to_owned());
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.trim());
                    }
                }
                if !data.is_empty() {
                    return (
                        name,
                        id,
                        serde_json::from_str(&data).expect("JSON event data"),
                    );
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.response.chunk())
                .await
                .expect("an event within 10 s")
                .expect("the stream is healthy")
                .expect("the stream is open");
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8 events"));
        }
    }
}

/// The frontend's replacement for polling: the unread summary as Server-Sent Events.
async fn unread_summary_as_server_sent_events(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    let response = client()
        .get(app.url("/api/v1/chat/unread-summary/stream"))
        .header("authorization", app.bearer(TUTOR, Role::Tutor))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut events = EventReader {
        response,
        buffer: String::new(),
    };
    let (name, mut first) = events.next().await;
    assert_eq!(name, "summary");
    let etag = first
        .as_object_mut()
        .and_then(|summary| summary.remove("etag"))
        .expect("a summary event carries its etag");
    assert_eq!(
        first,
        json!({ "threads": [], "total": 0, "muted_total": 0 })
    );

    send(
        &app,
        STUDENT,
        Role::Student,
        thread.thread_id,
        "pushed, not polled",
    )
    .await;
    let (name, summary) = events.next().await;
    assert_eq!(name, "summary");
    assert_ne!(summary["etag"], etag, "a changed summary has a new etag");
    // A client falling back to polling starts from the etag it last heard.
    let poll = |etag: &Value| {
        client()
            .get(app.url("/api/v1/chat/unread-summary/"))
            .header("authorization", app.bearer(TUTOR, Role::Tutor))
            .header("if-none-match", etag.as_str().expect("a quoted etag"))
            .send()
    };
    assert_eq!(poll(&summary["etag"]).await.unwrap().status(), 304);
    assert_eq!(poll(&etag).await.unwrap().status(), 200);
    assert_eq!(summary["total"], 1);
    assert_eq!(
        summary["threads"][0]["last_message_preview"],
        "pushed, not polled"
    );
    assert_eq!(summary["threads"][0]["is_writable"], true);

    // Past the per-user limit: 429 with the JSON error.
    let mut open = Vec::new();
    for _ in 1..crate::helpers::WATCH_LIMITS.per_user {
        let response = client()
            .get(app.url("/api/v1/chat/unread-summary/stream/"))
            .header("authorization", app.bearer(TUTOR, Role::Tutor))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        open.push(response);
    }
    let refused = call(
        client()
            .get(app.url("/api/v1/chat/unread-summary/stream"))
            .header("authorization", app.bearer(TUTOR, Role::Tutor)),
    )
    .await;
    assert_api_error(&refused, 429, "TOO_MANY_STREAMS", "RESOURCE_EXHAUSTED");
}

/// Prometheus text at /metrics, on the REST port and on the metrics-only port, counting
/// this application's own activity (another test's server counts into its own registry,
/// so exact figures hold), and OpenMetrics when the scraper asks for it.
async fn metrics_show_the_named_series(app: TestApp) {
    let (_, first) = call_text(client().get(&app.metrics)).await;
    for series in [
        "chat_thread_ensured_total{created=\"true\"} 0",
        "chatd_messages_sent_total 0",
        "chatd_rpc_requests_total{rpc=\"chat.v1.ChatService/SendMessage\",code=\"OK\"} 0",
    ] {
        assert!(
            first.contains(series),
            "before any call, {series} at zero:\n{first}"
        );
    }
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    send(&app, STUDENT, Role::Student, thread.thread_id, "counted").await;
    let _stream = TestApp::watch(&mut app.tutor(TUTOR)).await;
    for url in [app.url("/metrics"), app.metrics.clone()] {
        let (content_type, text) = call_text(client().get(&url)).await;
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        for series in [
            "# HELP chatd_messages_sent_total ",
            "chatd_rpc_requests_total{rpc=\"chat.v1.ChatService/SendMessage\",code=\"OK\"} 1",
            "chatd_rpc_requests_duration_seconds_bucket{",
            "chatd_http_requests_total{method=\"POST\",route=\"/api/v1/chat/threads/{thread_id}/messages/\",status=\"201\"} 1",
            "chatd_http_requests_duration_seconds_count{",
            "chat_thread_ensured_total{created=\"true\"} 1",
            "chatd_threads_created_total{kind=\"contact\"} 1",
            "chatd_messages_sent_total 1",
            "chatd_db_pool_connections{state=\"in_use\"}",
            "chatd_db_pool_max_connections 8",
            "chatd_db_pool_waiting ",
            "chatd_watch_streams 1",
            "chatd_fanout_up ",
            "chatd_storage_full 0",
        ] {
            assert!(text.contains(series), "{url} lacks {series}:\n{text}");
        }
    }
    let (content_type, text) = call_text(
        client()
            .get(&app.metrics)
            .header("accept", "application/openmetrics-text; version=1.0.0"),
    )
    .await;
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
}

/// Sends a request and returns its content type and text.
async fn call_text(request: reqwest::RequestBuilder) -> (String, String) {
    let response = request.send().await.expect("answers");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    (content_type, response.text().await.unwrap())
}

backend_suite!(
    metrics_show_the_named_series,
    unread_summary_as_server_sent_events,
    flow_accept_unlock_chat,
    flow_badge_appears_and_clears,
    flow_revoked_access_refuses_the_tutor,
    unread_summary_etag_and_304,
    health_readiness_and_openapi,
    etag_and_304_without_the_cache with |config| config.summary_cache.budget_bytes = 0,
);
