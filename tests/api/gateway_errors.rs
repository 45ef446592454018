//! The REST gateway's refusals: every bad request, oversized head and chatd error gets
//! the JSON error body with the right status, and paths work with or without a slash.

use chatd::domain::Role;
use chatd::grpc::pb::RelationStatus;
use reqwest::StatusCode;
use serde_json::json;

use crate::gateway::{assert_api_error, call, client, ensure, send};
use crate::helpers::TestApp;

const TUTOR: i64 = 42;
const STUDENT: i64 = 7;

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

backend_suite!(
    bad_http_input_gets_json_errors,
    oversized_request_heads_get_json_errors,
    chatd_errors_map_to_http,
    paths_work_without_trailing_slash,
);
