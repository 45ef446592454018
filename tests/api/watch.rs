//! WatchUnreadSummary: a snapshot, then one update per change, coalesced; across
//! replicas through PostgreSQL NOTIFY; limited; ended cleanly on shutdown.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chatd::domain::Role;
use chatd::grpc::pb::{RelationStatus, WatchUnreadSummaryResponse};
use tonic::Code;

use crate::helpers::{Backend, ChatClientExt, TestApp, WATCH_LIMITS, assert_error, mark_read};

const TUTOR: i64 = 42;
const STUDENT: i64 = 7;

/// The next update, which must come within 10 s (a bound, not a synchronization).
pub async fn next(
    stream: &mut tonic::Streaming<WatchUnreadSummaryResponse>,
) -> WatchUnreadSummaryResponse {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("an update within 10 s")
        .expect("the stream is healthy")
        .expect("the stream is open")
}

async fn snapshot_first_then_each_change(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    let mut updates = TestApp::watch(&mut app.tutor(TUTOR)).await;
    let first = next(&mut updates).await;
    assert_eq!(first.total, 0);
    assert!(first.threads.is_empty());

    app.student(STUDENT).say(thread.thread_id, "ping").await;
    let after_message = next(&mut updates).await;
    assert_eq!(after_message.total, 1);
    assert_eq!(after_message.threads[0].last_message_preview, "ping");
    assert!(after_message.threads[0].is_writable);

    // The tutor reads on another device: this stream learns of it too.
    app.tutor(TUTOR)
        .mark_read(mark_read(thread.thread_id, None))
        .await
        .unwrap();
    let after_read = next(&mut updates).await;
    assert_eq!(after_read.total, 0);
    assert_ne!(after_read.etag, after_message.etag);
}

/// What the coalescing window is for: a burst of messages after an update becomes one
/// more update, not one per message. The first message is sent at once; the nineteen
/// sent one after another right after that update (each answered before the next)
/// make exactly one more update, at the window's end. (With the window at 0 each
/// message is read and sent as it comes, and this fails.) The test waits for the first
/// update before the burst: a watcher that reads a little late would otherwise see two
/// messages in its "first" update, which is correct and not what this checks.
async fn a_burst_is_coalesced_into_one_update(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    let mut updates = TestApp::watch(&mut app.tutor(TUTOR)).await;
    assert_eq!(next(&mut updates).await.total, 0);
    let mut student = app.student(STUDENT);
    student.say(thread.thread_id, "m1").await;
    let first = next(&mut updates).await;
    assert_eq!(first.total, 1, "the first message is sent at once");
    for n in 2..=20 {
        student.say(thread.thread_id, &format!("m{n}")).await;
    }
    let rest = next(&mut updates).await;
    assert_eq!(rest.total, 20, "the other nineteen make one update");
}

/// The first change after a quiet spell is sent at once, whatever the coalescing
/// window: with a 30 s window, waiting it out would miss the 10 s bound of `next`.
/// What follows within the window after a send still gathers into one update.
async fn the_first_change_is_sent_without_waiting_out_the_window(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    let mut updates = TestApp::watch(&mut app.tutor(TUTOR)).await;
    assert_eq!(next(&mut updates).await.total, 0);
    app.student(STUDENT).say(thread.thread_id, "now").await;
    assert_eq!(next(&mut updates).await.total, 1);
}

async fn a_thread_becoming_unwritable_is_sent(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    app.student(STUDENT).say(thread.thread_id, "hello").await;
    let mut updates = TestApp::watch(&mut app.tutor(TUTOR)).await;
    assert!(next(&mut updates).await.threads[0].is_writable);
    app.relation(10, TUTOR, STUDENT, RelationStatus::Archived, 2)
        .await;
    let update = next(&mut updates).await;
    assert!(!update.threads[0].is_writable);
    assert_eq!(update.total, 1);
}

async fn streams_per_user_are_limited(app: TestApp) {
    let mut open = Vec::new();
    for _ in 0..WATCH_LIMITS.per_user {
        let mut stream = TestApp::watch(&mut app.tutor(TUTOR)).await;
        next(&mut stream).await;
        open.push(stream);
    }
    let refused = app
        .tutor(TUTOR)
        .watch_unread_summary(chatd::grpc::pb::WatchUnreadSummaryRequest::default())
        .await;
    assert_error(refused, Code::ResourceExhausted, "TOO_MANY_STREAMS");
    // Another user is not affected.
    let mut other = TestApp::watch(&mut app.tutor(TUTOR + 1)).await;
    next(&mut other).await;
}

async fn streams_end_cleanly_on_shutdown(mut app: TestApp) {
    let mut updates = TestApp::watch(&mut app.tutor(TUTOR)).await;
    next(&mut updates).await;
    // Graceful shutdown must not wait forever on an open stream.
    let stopped = tokio::time::timeout(Duration::from_secs(10), app.stop()).await;
    assert_eq!(
        stopped.expect("shutdown completes with a stream open"),
        Ok(())
    );
    let end = tokio::time::timeout(Duration::from_secs(10), updates.message())
        .await
        .expect("the stream ends");
    assert!(matches!(end, Ok(None)), "{end:?}");
}

/// A whole second `seconds` from now: a token's `exp` to the second, as JWTs carry it.
pub fn whole_seconds_ahead(seconds: u64) -> SystemTime {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    UNIX_EPOCH + Duration::from_secs(now.as_secs() + seconds)
}

/// A stream lasts as long as its token: live until `exp` (read exactly, with no
/// leeway here), then ended with UNAUTHENTICATED TOKEN_EXPIRED though nothing changed.
async fn a_stream_ends_when_its_token_expires(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    let exp = whole_seconds_ahead(4);
    let mut tutor = app.chat_with_header(Some(app.bearer_until(TUTOR, Role::Tutor, exp)));
    let mut updates = TestApp::watch(&mut tutor).await;
    assert_eq!(next(&mut updates).await.total, 0);
    app.student(STUDENT)
        .say(thread.thread_id, "before exp")
        .await;
    assert_eq!(next(&mut updates).await.total, 1, "live before exp");

    let ended = tokio::time::timeout(Duration::from_secs(10), updates.message())
        .await
        .expect("the stream ends within 10 s of its token's exp");
    assert!(SystemTime::now() >= exp, "ended before exp");
    assert_error(ended, Code::Unauthenticated, "TOKEN_EXPIRED");
}

backend_suite!(
    snapshot_first_then_each_change,
    a_thread_becoming_unwritable_is_sent,
    streams_per_user_are_limited,
    streams_end_cleanly_on_shutdown,
    // Far longer than twenty sends take, far shorter than `next`'s bound.
    a_burst_is_coalesced_into_one_update with |config| {
        config.watch_coalesce = Duration::from_secs(4)
    },
    the_first_change_is_sent_without_waiting_out_the_window with |config| {
        config.watch_coalesce = Duration::from_secs(30)
    },
    a_stream_ends_when_its_token_expires with |config| config.auth.leeway = Duration::ZERO,
);

/// Two replicas on one PostgreSQL database: a watcher on B sees a message accepted by A,
/// and a MarkRead made on A by the same user's other device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_changes_on_one_replica_reach_watchers_on_another() {
    let a = TestApp::spawn(Backend::Postgres).await;
    let b = a.replica().await;
    let thread = a.contact_thread(10, TUTOR, STUDENT).await;
    let mut on_b = TestApp::watch(&mut b.tutor(TUTOR)).await;
    assert_eq!(next(&mut on_b).await.total, 0);

    a.student(STUDENT)
        .say(thread.thread_id, "via replica A")
        .await;
    let update = next(&mut on_b).await;
    assert_eq!(update.total, 1);
    assert_eq!(update.threads[0].last_message_preview, "via replica A");

    a.tutor(TUTOR)
        .mark_read(mark_read(thread.thread_id, None))
        .await
        .unwrap();
    assert_eq!(next(&mut on_b).await.total, 0);
}

/// A lost listener connection is re-established, and watchers then get a fresh
/// snapshot: here a change made behind chatd's back (so never notified) shows up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_listener_reconnects_and_resends_the_summary() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    app.student(STUDENT).say(thread.thread_id, "one").await;
    let mut updates = TestApp::watch(&mut app.tutor(TUTOR)).await;
    assert_eq!(next(&mut updates).await.total, 1);

    let database = app.database();
    database
        .execute_inside(&format!(
            "UPDATE thread_participants SET unread_count = 5 WHERE thread_id = {} AND side = 'tutor'",
            thread.thread_id
        ))
        .await;
    database
        .execute_inside(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()",
        )
        .await;
    assert_eq!(
        next(&mut updates).await.total,
        5,
        "the resync after reconnecting shows it"
    );
}

/// The same across two OS processes: replica B is the `chatd` binary, started as a
/// user would (`chatd serve`), on the database replica A (in this process) uses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_chatd_processes_share_updates() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let a = TestApp::spawn(Backend::Postgres).await;
    let thread = a.contact_thread(10, TUTOR, STUDENT).await;
    let chatd::storage::DatabaseUrl::Postgres(url) = a.database().url() else {
        unreachable!("a PostgreSQL test app")
    };
    let mut replica_b = tokio::process::Command::new(env!("CARGO_BIN_EXE_chatd"))
        .args(["serve", "--listen", "127.0.0.1:0", "--http", "off"])
        .env("DATABASE_URL", &url)
        .env("CHATD_JWT_SECRET", crate::helpers::SECRET)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("chatd starts");
    // It binds port 0 itself and says where in its log (no port chosen here and rebound).
    let mut log = BufReader::new(replica_b.stderr.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = log.next_line().await.unwrap() {
            if line.contains("chatd gRPC listening") {
                let addr = line
                    .split_whitespace()
                    .find_map(|word| word.strip_prefix("addr="))
                    .expect("the listening line names its address");
                return addr.to_owned();
            }
        }
        panic!("replica B exited before listening");
    })
    .await
    .expect("replica B listens within 30 s");
    tokio::spawn(async move { while let Ok(Some(_)) = log.next_line().await {} });

    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut tutor_on_b = chatd::grpc::pb::chat_service_client::ChatServiceClient::with_interceptor(
        channel,
        crate::helpers::Bearer(Some(a.bearer(TUTOR, chatd::domain::Role::Tutor))),
    );
    let mut on_b = TestApp::watch(&mut tutor_on_b).await;
    assert_eq!(next(&mut on_b).await.total, 0);

    a.student(STUDENT)
        .say(thread.thread_id, "from process A")
        .await;
    let update = next(&mut on_b).await;
    assert_eq!(update.total, 1);
    assert_eq!(update.threads[0].last_message_preview, "from process A");
    a.tutor(TUTOR)
        .mark_read(mark_read(thread.thread_id, None))
        .await
        .unwrap();
    assert_eq!(next(&mut on_b).await.total, 0);
}
