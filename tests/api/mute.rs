//! MuteThread and UnmuteThread: a muted thread stays in the summary but leaves `total`
//! for `muted_total`, and a mute with an end counts again by itself at that end, in the
//! summary, its etag, the cache and every open stream, with no call from anyone.

use std::time::Duration;

use chatd::grpc::pb::{
    GetUnreadSummaryRequest, MuteThreadRequest, UnmuteThreadRequest, WatchUnreadSummaryResponse,
};
use prost_types::Timestamp;
use tonic::Code;

use crate::helpers::{Backend, ChatClientExt, TestApp, assert_error, mark_read};

const TUTOR: i64 = 42;
const STUDENT: i64 = 7;

fn mute(thread_id: i64, until: Option<Timestamp>) -> MuteThreadRequest {
    MuteThreadRequest { thread_id, until }
}

fn at(time: chrono::DateTime<chrono::Utc>) -> Timestamp {
    Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

async fn a_muted_thread_stays_listed_but_leaves_the_total(app: TestApp) {
    let muted = app.contact_thread(10, TUTOR, STUDENT).await;
    let loud = app.contact_thread(11, TUTOR, STUDENT + 1).await;
    app.student(STUDENT).say(muted.thread_id, "one").await;
    app.student(STUDENT).say(muted.thread_id, "two").await;
    app.student(STUDENT + 1).say(loud.thread_id, "three").await;
    let before = app.tutor(TUTOR).unread().await;
    assert_eq!((before.total, before.muted_total), (3, 0));

    let answer = app
        .tutor(TUTOR)
        .mute_thread(mute(muted.thread_id, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (answer.muted, answer.muted_until, answer.total),
        (true, None, 1),
        "muted until unmuted; the new total"
    );
    let summary = app.tutor(TUTOR).unread().await;
    assert_eq!((summary.total, summary.muted_total), (1, 2));
    assert_ne!(summary.etag, before.etag);
    let line = summary
        .threads
        .iter()
        .find(|t| t.thread_id == muted.thread_id)
        .expect("a muted thread stays listed");
    assert!(line.muted && line.muted_until.is_none());
    assert_eq!(line.unread_count, 2, "muting changes no count");
    // The peer cannot tell.
    assert_eq!(app.student(STUDENT).unread().await.muted_total, 0);
    // Every total leaves it out: MarkRead's too.
    let read = app
        .tutor(TUTOR)
        .mark_read(mark_read(loud.thread_id, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.total, 0);
    // Idempotent both ways.
    let again = app
        .tutor(TUTOR)
        .mute_thread(mute(muted.thread_id, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((again.muted, again.total), (true, 0));
    for _ in 0..2 {
        let unmuted = app
            .tutor(TUTOR)
            .unmute_thread(UnmuteThreadRequest {
                thread_id: muted.thread_id,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (unmuted.muted, unmuted.muted_until, unmuted.total),
            (false, None, 2)
        );
    }
    let summary = app.tutor(TUTOR).unread().await;
    assert_eq!((summary.total, summary.muted_total), (2, 0));
}

async fn a_mute_must_end_ahead_and_be_the_callers(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    let past = at(chrono::Utc::now() - chrono::Duration::seconds(1));
    let result = app
        .tutor(TUTOR)
        .mute_thread(mute(thread.thread_id, Some(past)))
        .await;
    let status = assert_error(result, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert!(status.message().starts_with("until:"), "{status:?}");
    // google.protobuf.Timestamp ends with year 9999: later ones are refused, not stored
    // (and then shown as a year no RFC 3339 reader takes).
    for seconds in [253_402_300_800, 8_210_298_412_799] {
        let beyond = Timestamp { seconds, nanos: 0 };
        let result = app
            .tutor(TUTOR)
            .mute_thread(mute(thread.thread_id, Some(beyond)))
            .await;
        let status = assert_error(result, Code::InvalidArgument, "INVALID_ARGUMENT");
        assert!(status.message().starts_with("until:"), "{status:?}");
    }
    let result = app
        .tutor(TUTOR + 1)
        .mute_thread(mute(thread.thread_id, None))
        .await;
    assert_error(result, Code::NotFound, "THREAD_NOT_FOUND");
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    let answer = app
        .tutor(TUTOR)
        .mute_thread(mute(thread.thread_id, Some(at(later))))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.muted);
    assert_eq!(
        answer.muted_until.map(|t| t.seconds),
        Some(later.timestamp())
    );
}

/// The next update of a stream, within `bound`.
async fn next(
    stream: &mut tonic::Streaming<WatchUnreadSummaryResponse>,
    bound: Duration,
) -> WatchUnreadSummaryResponse {
    tokio::time::timeout(bound, stream.message())
        .await
        .expect("an update in time")
        .expect("the stream is healthy")
        .expect("the stream is open")
}

/// A mute that ends counts again by itself: the stream receives the new summary within
/// 1 s of the end with no call from anyone, and the summary and its etag change.
async fn a_mute_ends_by_itself_everywhere(muter: &TestApp, watcher: &TestApp) {
    let thread = muter.contact_thread(10, TUTOR, STUDENT).await;
    muter.student(STUDENT).say(thread.thread_id, "ping").await;
    let end = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    muter
        .tutor(TUTOR)
        .mute_thread(mute(thread.thread_id, Some(at(end))))
        .await
        .unwrap();
    // The watcher's replica reads (and caches) the muted summary first.
    let muted = watcher.tutor(TUTOR).unread().await;
    assert_eq!((muted.total, muted.muted_total), (0, 1));
    let mut updates = TestApp::watch(&mut watcher.tutor(TUTOR)).await;
    let first = next(&mut updates, Duration::from_secs(10)).await;
    assert_eq!((first.total, first.muted_total), (0, 1));

    let counted = next(&mut updates, Duration::from_secs(10)).await;
    let late = chrono::Utc::now() - end;
    assert_eq!((counted.total, counted.muted_total), (1, 0));
    assert!(!counted.threads[0].muted);
    assert!(
        late <= chrono::Duration::seconds(1),
        "the stream heard of the end {late} after it"
    );
    let polled = watcher
        .tutor(TUTOR)
        .get_unread_summary(GetUnreadSummaryRequest {
            limit: 0,
            if_none_match: muted.etag.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!polled.not_modified, "the old etag is not current");
    assert_eq!(polled.total, 1);
    assert_ne!(polled.etag, muted.etag);
}

async fn a_mute_ends_by_itself(app: TestApp) {
    a_mute_ends_by_itself_everywhere(&app, &app).await;
}

backend_suite!(
    a_muted_thread_stays_listed_but_leaves_the_total,
    a_mute_must_end_ahead_and_be_the_callers,
    a_mute_ends_by_itself,
    the_event_stream_hears_a_mute_end,
);

/// Two replicas: the mute is written through A; B's cache and stream expire by
/// themselves, as nothing tells B of a mute's end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_mute_ends_by_itself_on_every_replica() {
    let a = TestApp::spawn(Backend::Postgres).await;
    let b = a.replica().await;
    a_mute_ends_by_itself_everywhere(&a, &b).await;
}

/// The REST gateway's stream (Server-Sent Events) hears of the end too.
async fn the_event_stream_hears_a_mute_end(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    app.student(STUDENT).say(thread.thread_id, "ping").await;
    let end = chrono::Utc::now() + chrono::Duration::milliseconds(1200);
    app.tutor(TUTOR)
        .mute_thread(mute(thread.thread_id, Some(at(end))))
        .await
        .unwrap();
    let response = reqwest::Client::new()
        .get(app.url("/api/v1/chat/unread-summary/stream"))
        .header(
            "authorization",
            app.bearer(TUTOR, chatd::domain::Role::Tutor),
        )
        .send()
        .await
        .expect("the stream opens");
    let mut events = crate::gateway::EventReader {
        response,
        buffer: String::new(),
    };
    let (_, first) = events.next().await;
    assert_eq!(first["muted_total"], 1);
    assert_eq!(first["threads"][0]["muted"], true);
    assert!(first["threads"][0]["muted_until"].is_string());
    let (kind, counted) = events.next().await;
    let late = chrono::Utc::now() - end;
    assert_eq!(kind, "summary");
    assert_eq!(
        (counted["total"].as_i64(), counted["muted_total"].as_i64()),
        (Some(1), Some(0))
    );
    assert!(
        late <= chrono::Duration::seconds(1),
        "heard {late} after the end"
    );
}
