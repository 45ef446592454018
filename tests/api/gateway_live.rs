//! The open window over REST, as a browser has it: the thread's changes as Server-Sent
//! Events (`thread-event`, the version as the SSE id, so `Last-Event-ID` resumes), opened
//! with a stream ticket, and typing announced with a POST.

use chatd::domain::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::gateway::{EventReader, assert_api_error, call, client};
use crate::helpers::{ChatClientExt, TestApp};
use crate::stream_tickets::mint;

const TUTOR: i64 = 42;
const STUDENT: i64 = 7;

fn events_path(thread_id: i64) -> String {
    format!("/api/v1/chat/threads/{thread_id}/events")
}

/// Opens a thread's event stream with `request`, which must answer 200.
async fn open(request: reqwest::RequestBuilder) -> EventReader {
    let response = request.send().await.expect("the gateway answers");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    EventReader {
        response,
        buffer: String::new(),
    }
}

/// The next `thread-event`: its SSE id and its data.
async fn next_thread_event(events: &mut EventReader) -> (String, Value) {
    let (name, id, data) = events.next_with_id().await;
    assert_eq!(name, "thread-event", "{data}");
    (id.expect("a thread-event has an id"), data)
}

/// A browser's window: opened with a ticket, a snapshot first, then the peer's message
/// and its sender's horizon, each with its version as the SSE id; reconnecting with
/// `Last-Event-ID` (or `?after_version=`) resumes right after it.
async fn a_window_over_sse_resumes_with_last_event_id(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    let id = thread.thread_id;
    let ticket = mint(&app, STUDENT, Role::Student).await;
    let mut events =
        open(client().get(app.url(&format!("{}?ticket={ticket}", events_path(id))))).await;
    let (version, snapshot) = next_thread_event(&mut events).await;
    assert_eq!(version, "0");
    assert_eq!(
        snapshot,
        json!({
            "thread_id": id,
            "version": 0,
            "snapshot": {
                "last_seq": 0, "my_last_read_seq": 0, "peer_last_read_seq": 0,
                "writable": true, "reset": false
            }
        })
    );
    app.tutor(TUTOR).say(id, "hello").await;
    let (version, created) = next_thread_event(&mut events).await;
    assert_eq!(version, "1");
    assert_eq!(created["message_created"]["body"], "hello");
    assert_eq!(created["message_created"]["sender_id"], TUTOR);
    let (version, read) = next_thread_event(&mut events).await;
    assert_eq!(version, "2");
    assert_eq!(
        read["read_moved"],
        json!({ "side": "tutor", "last_read_seq": 1 })
    );
    drop(events);

    // EventSource reconnects with Last-Event-ID; a client of its own may use the query.
    let bearer = app.bearer(STUDENT, Role::Student);
    for request in [
        client()
            .get(app.url(&events_path(id)))
            .header("last-event-id", "1"),
        client().get(app.url(&format!("{}?after_version=1", events_path(id)))),
    ] {
        let mut resumed = open(request.header("authorization", &bearer)).await;
        let (version, read) = next_thread_event(&mut resumed).await;
        assert_eq!(version, "2", "right after the last one received");
        assert!(read["read_moved"].is_object(), "{read}");
    }
}

/// Typing over REST: the answer says until when, the peer's window shows it; a
/// stranger and a closed thread are refused as a send is; bad resume points are 400.
async fn typing_and_refusals_over_rest(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    let id = thread.thread_id;
    let mut tutor_window = open(
        client()
            .get(app.url(&events_path(id)))
            .header("authorization", app.bearer(TUTOR, Role::Tutor)),
    )
    .await;
    next_thread_event(&mut tutor_window).await;
    let typing_path = format!("/api/v1/chat/threads/{id}/typing/");
    let (status, body) = call(
        client()
            .post(app.url(&typing_path))
            .header("authorization", app.bearer(STUDENT, Role::Student)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let until = body["until"].as_str().expect("until, RFC 3339").to_owned();
    let (version, shown) = next_thread_event(&mut tutor_window).await;
    assert_eq!(version, "0", "typing is no change of the thread");
    assert_eq!(
        shown["typing"],
        json!({ "side": "student", "until": until })
    );

    let stranger = call(
        client()
            .post(app.url(&typing_path))
            .header("authorization", app.bearer(STUDENT + 1, Role::Student)),
    )
    .await;
    assert_api_error(&stranger, 404, "THREAD_NOT_FOUND", "NOT_FOUND");
    let tutor = app.bearer(TUTOR, Role::Tutor);
    let bad_id = call(
        client()
            .get(app.url(&events_path(id)))
            .header("authorization", &tutor)
            .header("last-event-id", "yesterday"),
    )
    .await;
    assert_api_error(&bad_id, 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT");
    let beyond = call(
        client()
            .get(app.url(&format!("{}?after_version=99", events_path(id))))
            .header("authorization", &tutor),
    )
    .await;
    assert_api_error(&beyond, 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT");
    app.relation(
        10,
        TUTOR,
        STUDENT,
        chatd::grpc::pb::RelationStatus::Archived,
        2,
    )
    .await;
    let (_, state) = next_thread_event(&mut tutor_window).await;
    assert_eq!(state["thread_state"], json!({ "writable": false }));
    let closed = call(
        client()
            .post(app.url(&typing_path))
            .header("authorization", &tutor),
    )
    .await;
    assert_api_error(&closed, 400, "THREAD_NOT_WRITABLE", "FAILED_PRECONDITION");
}

backend_suite!(
    a_window_over_sse_resumes_with_last_event_id,
    typing_and_refusals_over_rest,
);
