//! The REST gateway over real HTTP: the seed's three frontend flows, the JSON contract,
//! ETag/304, and every error path as status code and JSON body.

use std::time::Duration;

use chatd::domain::Role;
use chatd::grpc::pb::{ContactAccessState, RelationStatus};
use chatd::http::{Gateway, GatewayConfig};
use chatd::metrics::Metrics;
use reqwest::StatusCode;
use reqwest::header::{ETAG, IF_NONE_MATCH};
use serde_json::{Value, json};

use crate::harness::{Proxy, Route};
use crate::helpers::{Backend, SECRET, TestApp};

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

async fn ensure(app: &TestApp, user: i64, role: Role, body: Value) -> (StatusCode, Value) {
    call(
        client()
            .post(app.url("/api/v1/chat/threads/negotiation/"))
            .header("authorization", app.bearer(user, role))
            .json(&body),
    )
    .await
}

async fn unread(app: &TestApp, user: i64, role: Role) -> (StatusCode, Value) {
    call(
        client()
            .get(app.url("/api/v1/chat/unread-summary/"))
            .header("authorization", app.bearer(user, role)),
    )
    .await
}

async fn send(
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

async fn bad_http_input_gets_json_errors(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    let tutor = app.bearer(TUTOR, Role::Tutor);
    let messages = app.url(&format!(
        "/api/v1/chat/threads/{}/messages/",
        thread.thread_id
    ));
    let ensure_url = app.url("/api/v1/chat/threads/negotiation/");

    let malformed = call(
        client()
            .post(&ensure_url)
            .header("authorization", &tutor)
            .header("content-type", "application/json")
            .body("{\"relation_id\": "),
    )
    .await;
    assert_api_error(&malformed, 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT");

    assert_eq!(
        malformed.1.get("field"),
        None,
        "a body that is not JSON is no one field's fault: {}",
        malformed.1
    );

    let wrong_type = call(
        client()
            .post(&ensure_url)
            .header("authorization", &tutor)
            .json(&json!({ "relation_id": "ten" })),
    )
    .await;
    assert_api_error(&wrong_type, 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT");
    assert_eq!(wrong_type.1["field"], "relation_id", "{}", wrong_type.1);
    // The field by its JSON name, the problem in JSON's words, not Rust's.
    let fraction = call(
        client()
            .post(app.url(&format!("/api/v1/chat/threads/{}/read/", thread.thread_id)))
            .header("authorization", &tutor)
            .json(&json!({ "up_to_seq": 1000.0 })),
    )
    .await;
    assert_api_error(&fraction, 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT");
    assert_eq!(fraction.1["field"], "up_to_seq", "{}", fraction.1);
    assert_eq!(
        fraction.1["message"],
        "up_to_seq: must be an integer, got the number 1000.0"
    );
    assert!(
        wrong_type.1["message"]
            .as_str()
            .unwrap()
            .contains("relation_id"),
        "{}",
        wrong_type.1
    );

    let unknown_target = call(
        client()
            .post(&ensure_url)
            .header("authorization", &tutor)
            .json(&json!({ "student_id": 7 })),
    )
    .await;
    assert_api_error(&unknown_target, 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT");
    assert_eq!(unknown_target.1["field"], "target");
    let both = call(
        client()
            .post(&ensure_url)
            .header("authorization", &tutor)
            .json(&json!({ "relation_id": 10, "inquiry_id": 5 })),
    )
    .await;
    assert_api_error(&both, 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT");

    let not_numeric = call(
        client()
            .post(app.url("/api/v1/chat/threads/abc/messages/"))
            .header("authorization", &tutor)
            .json(&json!({ "body": "x" })),
    )
    .await;
    assert_api_error(&not_numeric, 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT");
    assert_eq!(not_numeric.1["field"], "thread_id");
    // One thread has one URL: "+4" and "04" are not other spellings of thread 4.
    for spelling in [
        format!("+{}", thread.thread_id),
        format!("0{}", thread.thread_id),
    ] {
        let lenient = call(
            client()
                .get(app.url(&format!("/api/v1/chat/threads/{spelling}/messages/")))
                .header("authorization", &tutor),
        )
        .await;
        assert_api_error(&lenient, 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT");
        assert_eq!(lenient.1["field"], "thread_id", "{spelling}");
    }
    let lenient_seq = call(
        client()
            .patch(app.url(&format!(
                "/api/v1/chat/threads/{}/messages/01/",
                thread.thread_id
            )))
            .header("authorization", &tutor)
            .json(&json!({ "body": "x" })),
    )
    .await;
    assert_api_error(&lenient_seq, 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT");
    assert_eq!(lenient_seq.1["field"], "seq");
    let lenient_limit = call(
        client()
            .get(format!("{messages}?limit=+5"))
            .header("authorization", &tutor),
    )
    .await;
    assert_api_error(&lenient_limit, 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT");
    assert_eq!(lenient_limit.1["field"], "limit");

    let too_large = call(
        client()
            .post(&messages)
            .header("authorization", &tutor)
            .json(&json!({ "body": "x".repeat(70 * 1024) })),
    )
    .await;
    assert_api_error(&too_large, 413, "PAYLOAD_TOO_LARGE", "RESOURCE_EXHAUSTED");

    let not_json = call(
        client()
            .post(&messages)
            .header("authorization", &tutor)
            .header("content-type", "text/plain")
            .body("hello"),
    )
    .await;
    assert_api_error(&not_json, 415, "UNSUPPORTED_MEDIA_TYPE", "UNIMPLEMENTED");
    // A compressed body is refused for its encoding, not as "not a JSON object".
    let compressed = call(
        client()
            .post(&messages)
            .header("authorization", &tutor)
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(vec![0x1f, 0x8b, 0x08, 0x00]),
    )
    .await;
    assert_api_error(&compressed, 415, "UNSUPPORTED_MEDIA_TYPE", "UNIMPLEMENTED");
    assert!(
        compressed.1["message"]
            .as_str()
            .unwrap_or("")
            .contains("gzip"),
        "{:?}",
        compressed.1
    );
    let identity = call(
        client()
            .post(&messages)
            .header("authorization", &tutor)
            .header("content-encoding", "identity")
            .json(&json!({ "body": "plain" })),
    )
    .await;
    assert_eq!(identity.0, 201, "{:?}", identity.1);

    let empty_body = call(
        client()
            .post(&messages)
            .header("authorization", &tutor)
            .json(&json!({ "body": "  " })),
    )
    .await;
    assert_api_error(&empty_body, 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT");
    assert_eq!(empty_body.1["field"], "body");

    let wrong_method = call(client().delete(&messages).header("authorization", &tutor)).await;
    assert_api_error(&wrong_method, 405, "METHOD_NOT_ALLOWED", "UNIMPLEMENTED");

    let unknown_path = call(
        client()
            .get(app.url("/api/v1/chat/nope/"))
            .header("authorization", &tutor),
    )
    .await;
    assert_api_error(&unknown_path, 404, "NOT_FOUND", "NOT_FOUND");

    // SyncService has no REST route, not even by its gRPC path.
    let sync = call(
        client()
            .post(app.url("/chat.v1.SyncService/UpsertRelation"))
            .header("authorization", app.bearer(1, Role::Service))
            .json(&json!({})),
    )
    .await;
    assert_api_error(&sync, 404, "NOT_FOUND", "NOT_FOUND");

    let array_body = call(
        client()
            .post(app.url(&format!("/api/v1/chat/threads/{}/read/", thread.thread_id)))
            .header("authorization", &tutor)
            .json(&json!([])),
    )
    .await;
    assert_api_error(&array_body, 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT");
    let blank_body = call(
        client()
            .post(app.url(&format!("/api/v1/chat/threads/{}/read/", thread.thread_id)))
            .header("authorization", &tutor)
            .header("content-type", "application/json")
            .body(" "),
    )
    .await;
    assert_api_error(&blank_body, 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT");
    let null_target = call(
        client()
            .post(&ensure_url)
            .header("authorization", &tutor)
            .json(&json!({ "relation_id": 10, "inquiry_id": null })),
    )
    .await;
    assert_api_error(&null_target, 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT");
    // Credentials are checked before the body: a caller without them learns that first.
    let anonymous_bad_body = call(
        client()
            .post(&ensure_url)
            .json(&json!({ "relation_id": 0, "inquiry_id": 0 })),
    )
    .await;
    assert_api_error(&anonymous_bad_body, 401, "TOKEN_MISSING", "UNAUTHENTICATED");
    let repeated_param = call(
        client()
            .get(app.url("/api/v1/chat/unread-summary/?limit=1&limit=2"))
            .header("authorization", &tutor),
    )
    .await;
    assert_api_error(&repeated_param, 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT");

    let bad_limit = call(
        client()
            .get(app.url("/api/v1/chat/unread-summary/?limit=abc"))
            .header("authorization", &tutor),
    )
    .await;
    assert_api_error(&bad_limit, 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT");
    let big_limit = call(
        client()
            .get(app.url("/api/v1/chat/unread-summary/?limit=500"))
            .header("authorization", &tutor),
    )
    .await;
    assert_api_error(&big_limit, 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT");
    assert_eq!(big_limit.1["field"], "limit");
}

/// Oversized request heads are the client's fault, answered in the JSON every error
/// has: a target over 8 KiB is 414, headers over 16 KiB are 431.
async fn oversized_request_heads_get_json_errors(app: TestApp) {
    let tutor = app.bearer(TUTOR, Role::Tutor);
    let long_target = call(
        client()
            .get(app.url(&format!(
                "/api/v1/chat/unread-summary/?limit=1&pad={}",
                "x".repeat(9 * 1024)
            )))
            .header("authorization", &tutor),
    )
    .await;
    assert_api_error(&long_target, 414, "URI_TOO_LONG", "INVALID_ARGUMENT");
    for header in ["authorization", "traceparent", "tracestate"] {
        let too_large = call(
            client()
                .get(app.url("/api/v1/chat/unread-summary/"))
                .header("authorization", &tutor)
                .header(header, "a".repeat(17 * 1024)),
        )
        .await;
        assert_api_error(&too_large, 431, "HEADERS_TOO_LARGE", "INVALID_ARGUMENT");
    }
}

async fn chatd_errors_map_to_http(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    let no_token = call(client().get(app.url("/api/v1/chat/unread-summary/"))).await;
    assert_api_error(&no_token, 401, "TOKEN_MISSING", "UNAUTHENTICATED");
    let service = call(
        client()
            .get(app.url("/api/v1/chat/unread-summary/"))
            .header("authorization", app.bearer(1, Role::Service)),
    )
    .await;
    assert_api_error(&service, 403, "ROLE_NOT_ALLOWED", "PERMISSION_DENIED");
    let stranger = send(&app, 99, Role::Student, thread.thread_id, "hi").await;
    assert_api_error(&stranger, 404, "THREAD_NOT_FOUND", "NOT_FOUND");
    let missing = ensure(&app, TUTOR, Role::Tutor, json!({ "relation_id": 999 })).await;
    assert_api_error(&missing, 404, "RELATION_NOT_FOUND", "NOT_FOUND");
    app.relation(10, TUTOR, STUDENT, RelationStatus::Archived, 2)
        .await;
    let archived = send(&app, STUDENT, Role::Student, thread.thread_id, "hi").await;
    assert_api_error(&archived, 400, "THREAD_NOT_WRITABLE", "FAILED_PRECONDITION");
}

async fn paths_work_without_trailing_slash(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    let (status, _) = call(
        client()
            .post(app.url(&format!(
                "/api/v1/chat/threads/{}/messages",
                thread.thread_id
            )))
            .header("authorization", app.bearer(STUDENT, Role::Student))
            .json(&json!({ "body": "no slash" })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, summary) = call(
        client()
            .get(app.url("/api/v1/chat/unread-summary"))
            .header("authorization", app.bearer(TUTOR, Role::Tutor)),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(summary["total"], 1);
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
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut name, mut data) = (String::new(), String::new());
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        name = value.trim().to_owned();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.trim());
                    }
                }
                if !data.is_empty() {
                    return (name, serde_json::from_str(&data).expect("JSON event data"));
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
    bad_http_input_gets_json_errors,
    oversized_request_heads_get_json_errors,
    chatd_errors_map_to_http,
    paths_work_without_trailing_slash,
    health_readiness_and_openapi,
    etag_and_304_without_the_cache with |config| config.summary_cache.budget_bytes = 0,
);

/// chatd down → 503 with the JSON error; chatd back → the gateway recovers by itself.
/// The gateway's upstream is a proxy on a port of its own, refusing until chatd is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_is_503_then_recovers() {
    let proxy = Proxy::start(Route::Refuse).await;
    let gateway = Gateway::build(
        &GatewayConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            upstream: format!("http://{}", proxy.addr),
            upstream_timeout: Duration::from_secs(5),
            cors_allowed_origins: Vec::new(),
            connections: chatd::net::ConnectionLimits::default(),
        },
        Metrics::new(),
    )
    .await
    .unwrap();
    let base = format!("http://{}", gateway.local_addr());
    tokio::spawn(gateway.run(std::future::pending()));

    let signer = chatd::auth::TokenSigner::from_secret(SECRET.as_bytes(), None, None);
    let token = format!(
        "Bearer {}",
        signer
            .sign(TUTOR, Role::Tutor, Duration::from_secs(60))
            .unwrap()
    );
    let summary = || {
        client()
            .get(format!("{base}/api/v1/chat/unread-summary/"))
            .header("authorization", &token)
    };

    let down = call(summary()).await;
    assert_api_error(&down, 503, "UPSTREAM_UNAVAILABLE", "UNAVAILABLE");
    let not_ready = call(client().get(format!("{base}/readyz"))).await;
    assert_api_error(&not_ready, 503, "UPSTREAM_UNAVAILABLE", "UNAVAILABLE");
    let (status, _) = call(client().get(format!("{base}/healthz"))).await;
    assert_eq!(status, StatusCode::OK, "the gateway itself is alive");

    let chatd = TestApp::spawn_with(Backend::Sqlite, |config| {
        config.http = None;
    })
    .await;
    proxy.set(Route::Forward(
        chatd.grpc.trim_start_matches("http://").parse().unwrap(),
    ));
    let (status, body) = call(summary()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["total"], 0);
}

/// A standalone gateway forwards headers up to its own limit, and chatd reads them: a
/// token just under the limit reaches chatd's authentication (refused as a token, not a 500).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_gateway_forwards_large_headers_chatd_reads() {
    let chatd = TestApp::spawn_with(Backend::Sqlite, |config| config.http = None).await;
    let gateway = Gateway::build(
        &GatewayConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            upstream: chatd.grpc.clone(),
            upstream_timeout: Duration::from_secs(5),
            cors_allowed_origins: Vec::new(),
            connections: chatd::net::ConnectionLimits::default(),
        },
        Metrics::new(),
    )
    .await
    .unwrap();
    let base = format!("http://{}", gateway.local_addr());
    tokio::spawn(gateway.run(std::future::pending()));
    let large_token = format!("Bearer {}", "a".repeat(16 * 1024 - 450));
    let refused = call(
        client()
            .get(format!("{base}/api/v1/chat/unread-summary/"))
            .header("authorization", large_token),
    )
    .await;
    assert_api_error(&refused, 401, "TOKEN_INVALID", "UNAUTHENTICATED");
}

/// CORS is off by default and answers preflights for configured origins only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_allows_only_configured_origins() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let preflight = |base: String, origin: &'static str| {
        client()
            .request(
                reqwest::Method::OPTIONS,
                format!("{base}/api/v1/chat/unread-summary/"),
            )
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type,if-none-match",
            )
    };
    let default = preflight(app.http.clone(), "https://app.example")
        .send()
        .await
        .unwrap();
    assert!(
        default
            .headers()
            .get("access-control-allow-origin")
            .is_none(),
        "off by default"
    );
    // Refused as CORS, saying which flag allows it, not as a wrong method or route.
    let default = (default.status(), default.json::<Value>().await.unwrap());
    assert_api_error(&default, 403, "CORS_NOT_ALLOWED", "PERMISSION_DENIED");
    let message = default.1["message"].as_str().unwrap();
    assert!(
        message.contains("--cors-allow-origin https://app.example"),
        "{message}"
    );
    // An OPTIONS that is no preflight is still a method the path does not take.
    let plain = call(client().request(
        reqwest::Method::OPTIONS,
        app.url("/api/v1/chat/unread-summary/"),
    ))
    .await;
    assert_api_error(&plain, 405, "METHOD_NOT_ALLOWED", "UNIMPLEMENTED");

    let gateway = Gateway::build(
        &GatewayConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            upstream: app.grpc.clone(),
            upstream_timeout: Duration::from_secs(5),
            cors_allowed_origins: vec!["https://app.example".into()],
            connections: chatd::net::ConnectionLimits::default(),
        },
        Metrics::new(),
    )
    .await
    .unwrap();
    let base = format!("http://{}", gateway.local_addr());
    tokio::spawn(gateway.run(std::future::pending()));
    let allowed = preflight(base.clone(), "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let allowed_headers = allowed.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for name in ["authorization", "content-type", "if-none-match"] {
        assert!(
            allowed_headers.contains(name),
            "a browser may send {name}: {allowed_headers}"
        );
    }
    // The actual request: the page's script may read the ETag.
    let answered = client()
        .get(format!("{base}/api/v1/chat/unread-summary/"))
        .header("origin", "https://app.example")
        .header("authorization", app.bearer(TUTOR, Role::Tutor))
        .send()
        .await
        .unwrap();
    assert_eq!(answered.status(), StatusCode::OK);
    assert_eq!(
        answered.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    // Every header the docs tell a browser to read: the ETag of a poll, the
    // Retry-After of a 429.
    let exposed = answered.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for header in ["etag", "retry-after"] {
        assert!(exposed.contains(header), "{header} in {exposed}");
    }
    let other = preflight(base, "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    let other = (other.status(), other.json::<Value>().await.unwrap());
    assert_api_error(&other, 403, "CORS_NOT_ALLOWED", "PERMISSION_DENIED");
    assert!(
        other.1["message"]
            .as_str()
            .unwrap()
            .contains("allows only https://app.example"),
        "{}",
        other.1
    );
}

/// A body sent a byte at a time cannot hold its connection: each byte resets the idle
/// timeout, but the whole body must arrive within the body timeout, or the answer is
/// 408 REQUEST_TIMEOUT in the usual JSON, long before the trickle would have ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_is_cut_off_with_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = TestApp::spawn_with(Backend::Sqlite, |config| {
        config.connections.body_timeout = Duration::from_secs(1);
    })
    .await;
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    let addr = app.http.trim_start_matches("http://").to_owned();
    let socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut reader, mut writer) = socket.into_split();
    // 100 bytes promised, one sent every 200 ms: 20 s to finish.
    let head = format!(
        "POST /api/v1/chat/threads/{}/messages/ HTTP/1.1\r\nhost: {addr}\r\n\
         authorization: {}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n",
        thread.thread_id,
        app.bearer(TUTOR, Role::Tutor)
    );
    writer.write_all(head.as_bytes()).await.unwrap();
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            if writer.write_all(b" ").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut answer))
        .await
        .expect("answered and closed within 10 s, not after the 20 s trickle");
    assert!(read.is_ok(), "{read:?}");
    trickle.abort();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let body: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap_or(""))
        .unwrap_or_else(|e| panic!("a JSON body ({e}): {answer}"));
    assert_eq!(body["code"], "REQUEST_TIMEOUT", "{body}");
    assert_eq!(body["grpc_status"], "DEADLINE_EXCEEDED", "{body}");
}
