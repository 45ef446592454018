//! The inbox and catching up: ListThreads lists every thread of the caller, read or
//! not, newest last message first, in keyset pages that hold still while messages
//! arrive; ListMessages with `after_seq` reads what came after a seq, oldest first.

use chatd::grpc::pb::{self, ListMessagesRequest, ListThreadsRequest, MuteThreadRequest};
use tonic::Code;

use crate::gateway::{assert_api_error, call, client};
use crate::helpers::{ChatClientExt, TestApp, assert_error, mark_read};

const TUTOR: i64 = 42;

fn page(limit: i32, page_token: &str) -> ListThreadsRequest {
    ListThreadsRequest {
        limit,
        page_token: page_token.to_owned(),
    }
}

/// The ids of a page, and its next page token.
async fn inbox(app: &TestApp, limit: i32, token: &str) -> (Vec<i64>, String) {
    let answer = app
        .tutor(TUTOR)
        .list_threads(page(limit, token))
        .await
        .expect("the inbox")
        .into_inner();
    (
        answer.threads.iter().map(|t| t.thread_id).collect(),
        answer.next_page_token,
    )
}

/// Three threads: `read` (its message read), `quiet` (no message: placed by when it was
/// created) and `muted` (newest message, muted). All three are listed, newest activity
/// first, whatever their unread state; one page at a time, each exactly once.
async fn the_inbox_lists_every_thread_newest_first(app: TestApp) {
    let read = app.contact_thread(10, TUTOR, 7).await;
    let muted = app.contact_thread(11, TUTOR, 8).await;
    app.student(7).say(read.thread_id, "read it").await;
    let quiet = app.contact_thread(12, TUTOR, 9).await;
    app.student(8).say(muted.thread_id, "newest").await;
    app.tutor(TUTOR)
        .mark_read(mark_read(read.thread_id, None))
        .await
        .unwrap();
    app.tutor(TUTOR)
        .mute_thread(MuteThreadRequest {
            thread_id: muted.thread_id,
            until: None,
        })
        .await
        .unwrap();

    let all = app
        .tutor(TUTOR)
        .list_threads(page(0, ""))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<i64> = all.threads.iter().map(|t| t.thread_id).collect();
    assert_eq!(ids, [muted.thread_id, quiet.thread_id, read.thread_id]);
    assert!(all.next_page_token.is_empty(), "one page holds them all");
    assert!(all.threads[0].muted && all.threads[0].unread_count == 1);
    assert!(all.threads[1].last_message_at.is_none() && all.threads[1].unread_count == 0);
    assert_eq!(all.threads[2].last_message_preview, "read it");
    assert_eq!(all.threads[2].unread_count, 0);
    // The student sees their own thread only, on their side.
    let student = app
        .student(7)
        .list_threads(page(0, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(student.threads.len(), 1);
    assert_eq!(student.threads[0].thread_id, read.thread_id);

    // A page at a time: each thread once, the last page without a token.
    let (first, token) = inbox(&app, 1, "").await;
    assert_eq!(first, [muted.thread_id]);
    // A message arriving meanwhile moves its thread to the top, above the pages read
    // so far: the next pages neither repeat nor skip what they had not reached.
    app.student(7).say(read.thread_id, "again").await;
    let (second, token) = inbox(&app, 1, &token).await;
    assert_eq!(second, [quiet.thread_id]);
    assert!(token.is_empty(), "the last page");
    let (top, _) = inbox(&app, 1, "").await;
    assert_eq!(top, [read.thread_id]);

    let bad = app.tutor(TUTOR).list_threads(page(0, "not-a-token")).await;
    let status = assert_error(bad, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert!(status.message().starts_with("page_token"), "{status:?}");
    let too_many = app.tutor(TUTOR).list_threads(page(201, "")).await;
    assert_error(too_many, Code::InvalidArgument, "INVALID_ARGUMENT");

    // REST: the same pages, the last one's token null.
    let (status, body) = call(
        client()
            .get(app.url("/api/v1/chat/threads/?limit=2"))
            .header(
                "authorization",
                app.bearer(TUTOR, chatd::domain::Role::Tutor),
            ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["threads"][0]["thread_id"], read.thread_id);
    assert_eq!(body["threads"][1]["thread_id"], muted.thread_id);
    assert_eq!(body["threads"][1]["muted"], true);
    let token = body["next_page_token"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let (_, last) = call(
        client()
            .get(app.url(&format!("/api/v1/chat/threads/?limit=2&page_token={token}")))
            .header(
                "authorization",
                app.bearer(TUTOR, chatd::domain::Role::Tutor),
            ),
    )
    .await;
    assert_eq!(last["threads"][0]["thread_id"], quiet.thread_id);
    assert_eq!(
        last["threads"][0]["last_message_at"],
        serde_json::Value::Null
    );
    // No message shown: no sender either, null like its siblings (not a user id 0).
    assert_eq!(
        last["threads"][0]["last_message_sender_id"],
        serde_json::Value::Null
    );
    assert_eq!(body["threads"][0]["last_message_sender_id"], 7);
    assert_eq!(last["next_page_token"], serde_json::Value::Null);
}

fn after(thread_id: i64, after_seq: i64, limit: i32) -> ListMessagesRequest {
    ListMessagesRequest {
        thread_id,
        after_seq: Some(after_seq),
        limit,
        ..Default::default()
    }
}

/// After a reconnect a client asks for what came after the last seq it has: oldest
/// first, a page at a time, `has_more` while more follow.
async fn catching_up_reads_after_a_seq_oldest_first(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, 7).await;
    for n in 1..=5 {
        app.student(7).say(thread.thread_id, &format!("m{n}")).await;
    }
    let seqs =
        |page: &pb::ListMessagesResponse| page.messages.iter().map(|m| m.seq).collect::<Vec<_>>();
    let first = app
        .tutor(TUTOR)
        .list_messages(after(thread.thread_id, 2, 2))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seqs(&first), [3, 4]);
    assert!(first.has_more);
    let rest = app
        .tutor(TUTOR)
        .list_messages(after(thread.thread_id, 4, 2))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seqs(&rest), [5]);
    assert!(!rest.has_more);
    let from_start = app
        .tutor(TUTOR)
        .list_messages(after(thread.thread_id, 0, 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seqs(&from_start), [1, 2, 3, 4, 5]);

    let both = app
        .tutor(TUTOR)
        .list_messages(ListMessagesRequest {
            before_seq: Some(3),
            ..after(thread.thread_id, 1, 0)
        })
        .await;
    let status = assert_error(both, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert!(status.message().starts_with("after_seq"), "{status:?}");

    let url = |query: &str| {
        app.url(&format!(
            "/api/v1/chat/threads/{}/messages/?{query}",
            thread.thread_id
        ))
    };
    let bearer = app.bearer(TUTOR, chatd::domain::Role::Tutor);
    let (status, body) = call(
        client()
            .get(url("after_seq=4&limit=1"))
            .header("authorization", &bearer),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["messages"][0]["seq"], 5);
    assert_eq!(body["has_more"], false);
    let refused = call(
        client()
            .get(url("after_seq=3&before_seq=5"))
            .header("authorization", &bearer),
    )
    .await;
    assert_api_error(&refused, 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT");

    // One time, one value: gRPC's Timestamp and REST's RFC 3339 text of the same
    // created_at agree to the nanosecond (both backends keep microseconds).
    let over_grpc = rest.messages[0].created_at.expect("created_at");
    let over_rest = body["messages"][0]["created_at"]
        .as_str()
        .expect("created_at")
        .to_owned();
    let parsed = chrono::DateTime::parse_from_rfc3339(&over_rest).expect("RFC 3339");
    assert_eq!(
        (parsed.timestamp(), parsed.timestamp_subsec_nanos() as i32),
        (over_grpc.seconds, over_grpc.nanos),
        "{over_rest} vs {over_grpc:?}"
    );
    assert_eq!(over_grpc.nanos % 1000, 0, "microseconds: {over_grpc:?}");
}

backend_suite!(
    the_inbox_lists_every_thread_newest_first,
    catching_up_reads_after_a_seq_oldest_first,
);
