//! The send rate per user: a token bucket per user on each replica for SendMessage and
//! EditMessage, refused with RESOURCE_EXHAUSTED RATE_LIMITED and when to retry.

use std::time::Duration;

use chatd::domain::Role;
use chatd::grpc::pb::EditMessageRequest;
use chatd::limits::SendLimit;
use reqwest::StatusCode;
use tonic::Code;
use tonic_types::StatusExt;

use crate::gateway::{assert_api_error, call, client};
use crate::helpers::{ChatClientExt, TestApp, assert_error, send};

const TUTOR: i64 = 42;
const STUDENT: i64 = 7;

/// One message a second, three at once.
fn limited(config: &mut chatd::config::ServeConfig) {
    config.send_limit = SendLimit {
        per_second: 1.0,
        burst: 3,
    };
}

async fn a_flood_is_refused_with_when_to_retry(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    let mut student = app.student(STUDENT);
    for n in 0..3 {
        student.say(thread.thread_id, &format!("m{n}")).await;
    }
    let refused = student
        .send_message(send(thread.thread_id, "one too many"))
        .await;
    let status = assert_error(refused, Code::ResourceExhausted, "RATE_LIMITED");
    let retry = status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .expect("RetryInfo says when");
    assert!(
        retry > Duration::ZERO && retry <= Duration::from_secs(1),
        "{retry:?}"
    );
    // Edits take from the same bucket.
    let refused = student
        .edit_message(EditMessageRequest {
            thread_id: thread.thread_id,
            seq: 1,
            body: "edited".into(),
        })
        .await;
    assert_error(refused, Code::ResourceExhausted, "RATE_LIMITED");
    // Another user has a bucket of their own.
    app.tutor(TUTOR).say(thread.thread_id, "fine").await;
    // Nothing refused was stored.
    assert_eq!(app.tutor(TUTOR).unread().await.total, 0);
    assert_eq!(app.student(STUDENT).unread().await.total, 1);

    // Over REST: 429, Retry-After in whole seconds, the usual body.
    let response = client()
        .post(app.url(&format!(
            "/api/v1/chat/threads/{}/messages/",
            thread.thread_id
        )))
        .header("authorization", app.bearer(STUDENT, Role::Student))
        .json(&serde_json::json!({ "body": "and again" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .expect("whole seconds");
    assert!(retry_after >= 1, "{retry_after}");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "RATE_LIMITED");
    assert_eq!(body["grpc_status"], "RESOURCE_EXHAUSTED");
}

/// A retry of a message already stored answers that message whatever the limit: the
/// limit is on what a user adds, and a replay adds nothing.
async fn a_replay_over_the_limit_answers_the_stored_message(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    let mut student = app.student(STUDENT);
    let keyed = |n: u32| chatd::grpc::pb::SendMessageRequest {
        thread_id: thread.thread_id,
        body: format!("m{n}"),
        client_message_id: format!("key-{n}"),
    };
    let mut stored = Vec::new();
    for n in 0..3 {
        stored.push(student.send(keyed(n)).await);
    }
    // Over the limit: a new key is refused, the stored ones answer their message.
    let refused = student.send_message(keyed(3)).await;
    assert_error(refused, Code::ResourceExhausted, "RATE_LIMITED");
    for (n, first) in stored.iter().enumerate() {
        let replayed = student
            .send_message(keyed(n as u32))
            .await
            .expect("a replay is answered over the limit")
            .into_inner()
            .message
            .expect("a message");
        assert_eq!(&replayed, first);
    }
    // The key is the sender's own: another participant over their own limit is refused.
    let mut tutor = app.tutor(TUTOR);
    for n in 0..3 {
        tutor.say(thread.thread_id, &format!("t{n}")).await;
    }
    let foreign = tutor.send_message(keyed(0)).await;
    assert_error(foreign, Code::ResourceExhausted, "RATE_LIMITED");
    assert_eq!(
        app.student(STUDENT).unread().await.total,
        3,
        "the tutor's three, nothing more was stored"
    );
}

/// The REST routes of edit, delete, mark unread and mute, with their JSON.
async fn rest_routes_of_the_marketplace(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    app.student(STUDENT).say(thread.thread_id, "helo").await;
    app.student(STUDENT).say(thread.thread_id, "bye").await;
    let base = format!("/api/v1/chat/threads/{}", thread.thread_id);
    let (status, edited) = call(
        client()
            .patch(app.url(&format!("{base}/messages/1/")))
            .header("authorization", app.bearer(STUDENT, Role::Student))
            .json(&serde_json::json!({ "body": "hello" })),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(edited["body"], "hello");
    assert!(edited["edited_at"].is_string());
    assert_eq!(edited["deleted"], false);
    assert_eq!(edited["deleted_at"], serde_json::Value::Null);

    let (status, tombstone) = call(
        client()
            .delete(app.url(&format!("{base}/messages/2")))
            .header("authorization", app.bearer(STUDENT, Role::Student)),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (tombstone["deleted"].as_bool(), tombstone["body"].as_str()),
        (Some(true), Some(""))
    );
    assert!(tombstone["deleted_at"].is_string());
    let answer = call(
        client()
            .delete(app.url(&format!("{base}/messages/2/")))
            .header("authorization", app.bearer(TUTOR, Role::Tutor)),
    )
    .await;
    assert_api_error(&answer, 403, "NOT_MESSAGE_SENDER", "PERMISSION_DENIED");
    let answer = call(
        client()
            .delete(app.url(&format!("{base}/messages/x/")))
            .header("authorization", app.bearer(STUDENT, Role::Student)),
    )
    .await;
    assert_api_error(&answer, 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT");

    let (status, read) = call(
        client()
            .post(app.url(&format!("{base}/unread/")))
            .header("authorization", app.bearer(TUTOR, Role::Tutor))
            .json(&serde_json::json!({ "from_seq": 1 })),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        read,
        serde_json::json!({ "thread_id": thread.thread_id, "last_read_seq": 0, "unread_count": 1, "total": 1 })
    );

    let until = (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339();
    let (status, muted) = call(
        client()
            .put(app.url(&format!("{base}/mute/")))
            .header("authorization", app.bearer(TUTOR, Role::Tutor))
            .json(&serde_json::json!({ "until": until })),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (muted["muted"].as_bool(), muted["total"].as_i64()),
        (Some(true), Some(0))
    );
    assert!(muted["muted_until"].is_string());
    let (_, summary) = call(
        client()
            .get(app.url("/api/v1/chat/unread-summary/"))
            .header("authorization", app.bearer(TUTOR, Role::Tutor)),
    )
    .await;
    assert_eq!(
        (summary["total"].as_i64(), summary["muted_total"].as_i64()),
        (Some(0), Some(1))
    );
    assert_eq!(summary["threads"][0]["muted"], true);
    let answer = call(
        client()
            .put(app.url(&format!("{base}/mute/")))
            .header("authorization", app.bearer(TUTOR, Role::Tutor))
            .json(&serde_json::json!({ "until": "tomorrow" })),
    )
    .await;
    assert_api_error(&answer, 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT");
    assert_eq!(answer.1["field"], "until");
    let (status, unmuted) = call(
        client()
            .delete(app.url(&format!("{base}/mute/")))
            .header("authorization", app.bearer(TUTOR, Role::Tutor)),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        unmuted,
        serde_json::json!({ "thread_id": thread.thread_id, "muted": false, "muted_until": null, "total": 1 })
    );
    // Forever: `{}`.
    let (status, forever) = call(
        client()
            .put(app.url(&format!("{base}/mute")))
            .header("authorization", app.bearer(TUTOR, Role::Tutor))
            .json(&serde_json::json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (forever["muted"].as_bool(), forever["muted_until"].is_null()),
        (Some(true), true)
    );
}

backend_suite!(
    rest_routes_of_the_marketplace,
    a_flood_is_refused_with_when_to_retry with limited,
    a_replay_over_the_limit_answers_the_stored_message with limited,
);
