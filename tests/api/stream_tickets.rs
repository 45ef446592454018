//! Stream tickets: how a browser's EventSource, which cannot send `Authorization`,
//! opens the unread-summary stream. A ticket is minted with the bearer token, opens one
//! stream as its minter, and is refused (401 TICKET_INVALID, in JSON) once used, when
//! stale, or when unknown, on any replica.

use std::time::{Duration, SystemTime};

use chatd::domain::Role;
use chatd::grpc::pb;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tonic::Code;

use crate::gateway::{EventReader, assert_api_error, call, client};
use crate::helpers::{Backend, ChatClientExt, TestApp, assert_error};
use crate::watch::whole_seconds_ahead;

const TUTOR: i64 = 42;
const STUDENT: i64 = 7;

/// POST …/stream-ticket as `user`: the minted ticket.
pub async fn mint(app: &TestApp, user: i64, role: Role) -> String {
    let response = client()
        .post(app.url("/api/v1/chat/unread-summary/stream-ticket"))
        .header("authorization", app.bearer(user, role))
        .send()
        .await
        .expect("the gateway answers");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["cache-control"],
        "no-store",
        "a secret is not cached"
    );
    let body: Value = response.json().await.expect("a JSON body");
    assert_eq!(body["expires_in"], 30);
    let ticket = body["ticket"].as_str().expect("a ticket").to_owned();
    assert_eq!(ticket.len(), 64);
    assert!(ticket.bytes().all(|b| b.is_ascii_hexdigit()), "{ticket}");
    ticket
}

fn stream_url(app: &TestApp, ticket: &str) -> String {
    app.url(&format!(
        "/api/v1/chat/unread-summary/stream?ticket={ticket}"
    ))
}

/// Opens the event stream with a ticket and no `Authorization`, as EventSource does.
async fn open_with_ticket(app: &TestApp, ticket: &str) -> EventReader {
    let response = client()
        .get(stream_url(app, ticket))
        .send()
        .await
        .expect("the gateway answers");
    assert_eq!(response.status(), StatusCode::OK);
    EventReader {
        response,
        buffer: String::new(),
    }
}

/// The browser's flow: mint with the token, open the stream with the ticket, see one's
/// own summary change; the same URL again (EventSource's retry) is refused in JSON.
async fn a_ticket_opens_one_stream_as_its_minter(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    let ticket = mint(&app, STUDENT, Role::Student).await;
    let mut events = open_with_ticket(&app, &ticket).await;
    let (name, mut first) = events.next().await;
    assert_eq!(name, "summary");
    assert!(
        first
            .as_object_mut()
            .and_then(|summary| summary.remove("etag"))
            .is_some_and(|etag| etag.as_str().is_some_and(|tag| tag.starts_with('"'))),
        "a summary event carries its quoted etag"
    );
    assert_eq!(
        first,
        json!({ "threads": [], "total": 0, "muted_total": 0 })
    );
    app.tutor(TUTOR)
        .say(thread.thread_id, "to the student")
        .await;
    let (name, summary) = events.next().await;
    assert_eq!(name, "summary");
    assert_eq!(summary["total"], 1, "the student's summary: {summary}");
    assert_eq!(
        summary["threads"][0]["last_message_preview"],
        "to the student"
    );

    let reused = call(client().get(stream_url(&app, &ticket))).await;
    assert_api_error(&reused, 401, "TICKET_INVALID", "UNAUTHENTICATED");
    assert!(
        reused.1["message"]
            .as_str()
            .is_some_and(|m| m.contains("mint a new one")),
        "says what to do: {}",
        reused.1
    );
}

/// At the per-user stream limit the mint itself is refused, in JSON, so a browser learns
/// TOO_MANY_STREAMS (and falls back to polling) instead of retrying an EventSource that
/// cannot say why it failed; a closed stream makes room again.
async fn minting_at_the_stream_limit_says_too_many_streams(app: TestApp) {
    let mut open = Vec::new();
    for _ in 0..crate::helpers::WATCH_LIMITS.per_user {
        let ticket = mint(&app, TUTOR, Role::Tutor).await;
        let mut events = open_with_ticket(&app, &ticket).await;
        assert_eq!(events.next().await.0, "summary");
        open.push(events);
    }
    let refused = call(
        client()
            .post(app.url("/api/v1/chat/unread-summary/stream-ticket"))
            .header("authorization", app.bearer(TUTOR, Role::Tutor)),
    )
    .await;
    assert_api_error(&refused, 429, "TOO_MANY_STREAMS", "RESOURCE_EXHAUSTED");
    // Another user is not held to this one's limit.
    mint(&app, STUDENT, Role::Student).await;

    drop(open.pop());
    let room = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let answer = client()
                .post(app.url("/api/v1/chat/unread-summary/stream-ticket"))
                .header("authorization", app.bearer(TUTOR, Role::Tutor))
                .send()
                .await
                .expect("the gateway answers");
            if answer.status() == StatusCode::OK {
                return;
            }
            assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS);
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(room.is_ok(), "a closed stream frees its place");
}

/// Unknown, malformed, and expired tickets are refused alike.
async fn stale_and_unknown_tickets_are_refused(app: TestApp) {
    for ticket in ["0".repeat(64), "not-a-ticket".to_owned()] {
        let refused = call(client().get(stream_url(&app, &ticket))).await;
        assert_api_error(&refused, 401, "TICKET_INVALID", "UNAUTHENTICATED");
    }
    let ticket = mint(&app, TUTOR, Role::Tutor).await;
    app.database()
        .execute_inside("UPDATE stream_tickets SET expires_at = 0")
        .await;
    let stale = call(client().get(stream_url(&app, &ticket))).await;
    assert_api_error(&stale, 401, "TICKET_INVALID", "UNAUTHENTICATED");

    // Minting needs the bearer token; neither token nor ticket is TOKEN_MISSING.
    let anonymous = call(client().post(app.url("/api/v1/chat/unread-summary/stream-ticket"))).await;
    assert_api_error(&anonymous, 401, "TOKEN_MISSING", "UNAUTHENTICATED");
    let neither = call(client().get(app.url("/api/v1/chat/unread-summary/stream"))).await;
    assert_api_error(&neither, 401, "TOKEN_MISSING", "UNAUTHENTICATED");
}

/// Over gRPC: a ticket opens the stream without metadata; a ticket beside a token is
/// ambiguous and refused; a service token cannot mint one.
async fn grpc_takes_a_ticket_in_place_of_the_token(app: TestApp) {
    let minted = app
        .tutor(TUTOR)
        .create_stream_ticket(pb::CreateStreamTicketRequest {})
        .await
        .expect("a tutor mints")
        .into_inner();
    assert_eq!(minted.expires_in, 30);

    let both = app
        .tutor(TUTOR)
        .watch_unread_summary(pb::WatchUnreadSummaryRequest {
            ticket: minted.ticket.clone(),
            ..Default::default()
        })
        .await;
    assert_error(both, Code::InvalidArgument, "INVALID_ARGUMENT");

    let mut anonymous = app.chat_with_header(None);
    let mut updates = anonymous
        .watch_unread_summary(pb::WatchUnreadSummaryRequest {
            ticket: minted.ticket.clone(),
            ..Default::default()
        })
        .await
        .expect("the ticket opens the stream")
        .into_inner();
    let first = updates.message().await.unwrap().expect("a summary");
    assert_eq!(first.total, 0);

    let again = anonymous
        .watch_unread_summary(pb::WatchUnreadSummaryRequest {
            ticket: minted.ticket,
            ..Default::default()
        })
        .await;
    assert_error(again, Code::Unauthenticated, "TICKET_INVALID");

    let no_token = app
        .chat_with_header(None)
        .create_stream_ticket(pb::CreateStreamTicketRequest {})
        .await;
    assert_error(no_token, Code::Unauthenticated, "TOKEN_MISSING");
    let service = app
        .chat_with_header(Some(app.bearer(1, Role::Service)))
        .create_stream_ticket(pb::CreateStreamTicketRequest {})
        .await;
    assert_error(service, Code::PermissionDenied, "ROLE_NOT_ALLOWED");
}

/// A stream a ticket opened ends when the token that minted the ticket expires, as one
/// opened with that token would (read exactly here: no leeway), and the ticket says it
/// lives no longer than that token.
async fn a_ticket_stream_ends_with_its_minters_token(app: TestApp) {
    let exp = whole_seconds_ahead(4);
    let minted = call(
        client()
            .post(app.url("/api/v1/chat/unread-summary/stream-ticket"))
            .header("authorization", app.bearer_until(TUTOR, Role::Tutor, exp)),
    )
    .await;
    assert_eq!(minted.0, StatusCode::OK, "{}", minted.1);
    let expires_in = minted.1["expires_in"].as_i64().expect("expires_in");
    assert!((1..=4).contains(&expires_in), "expires_in {expires_in}");
    let ticket = minted.1["ticket"].as_str().expect("a ticket").to_owned();

    let mut events = open_with_ticket(&app, &ticket).await;
    assert_eq!(events.next().await.0, "summary");
    let (name, error) = events.next().await;
    assert!(SystemTime::now() >= exp, "ended before the token's exp");
    assert_eq!(name, "stream-error", "{error}");
    assert_eq!(error["code"], "TOKEN_EXPIRED", "{error}");
    assert_eq!(error["grpc_status"], "UNAUTHENTICATED", "{error}");
    let end = tokio::time::timeout(Duration::from_secs(10), events.response.chunk())
        .await
        .expect("the stream closes after its error");
    assert!(matches!(end, Ok(None)), "{end:?}");
}

backend_suite!(
    a_ticket_opens_one_stream_as_its_minter,
    stale_and_unknown_tickets_are_refused,
    minting_at_the_stream_limit_says_too_many_streams,
    grpc_takes_a_ticket_in_place_of_the_token,
    a_ticket_stream_ends_with_its_minters_token with |config| {
        config.auth.leeway = Duration::ZERO
    },
);

/// Tickets live in the shared database: minted on replica A, good once on replica B,
/// then spent on A as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_ticket_is_good_once_on_any_replica() {
    let a = TestApp::spawn(Backend::Postgres).await;
    let b = a.replica().await;
    let ticket = mint(&a, TUTOR, Role::Tutor).await;
    let mut on_b = open_with_ticket(&b, &ticket).await;
    assert_eq!(on_b.next().await.0, "summary");
    let on_a = call(client().get(stream_url(&a, &ticket))).await;
    assert_api_error(&on_a, 401, "TICKET_INVALID", "UNAUTHENTICATED");
}
