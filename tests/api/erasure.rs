//! EraseUser: every message of a user becomes a tombstone, bodies and keys wiped, counts
//! and previews adjusted; threads stay for the peers; a repeat answers 0; and erased
//! means erased on disk (SQLite's file and WAL, PostgreSQL's dump).

use chatd::grpc::pb::{self, EraseUserRequest, ListMessagesRequest, SendMessageRequest};
use chatd::storage::DatabaseUrl;
use tonic::Code;

use crate::helpers::{ChatClientExt, TestApp, assert_error};

const TUTOR: i64 = 42;
const STUDENT: i64 = 7;

async fn erase(app: &TestApp, user_id: i64) -> i64 {
    app.sync()
        .erase_user(EraseUserRequest { user_id })
        .await
        .expect("erase succeeds")
        .into_inner()
        .messages_erased
}

async fn an_erased_user_leaves_tombstones_and_exact_counts(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    let other = app.contact_thread(11, TUTOR + 1, STUDENT).await;
    app.tutor(TUTOR).say(thread.thread_id, "tutor first").await;
    app.student(STUDENT)
        .send(SendMessageRequest {
            thread_id: thread.thread_id,
            body: "student one".into(),
            client_message_id: "k".into(),
        })
        .await;
    app.student(STUDENT)
        .say(thread.thread_id, "student two")
        .await;
    app.student(STUDENT).say(other.thread_id, "elsewhere").await;
    assert_eq!(app.tutor(TUTOR).unread().await.total, 2);
    let deleted_before = app
        .student(STUDENT)
        .delete_message(pb::DeleteMessageRequest {
            thread_id: thread.thread_id,
            seq: 3,
        })
        .await
        .unwrap()
        .into_inner()
        .message
        .unwrap();
    assert!(deleted_before.deleted);

    assert_eq!(erase(&app, STUDENT).await, 2, "seq 2 here and seq 1 there");
    let summary = app.tutor(TUTOR).unread().await;
    assert_eq!(summary.total, 0);
    assert_eq!(app.tutor(TUTOR + 1).unread().await.total, 0);
    let listed = app
        .tutor(TUTOR)
        .list_messages(ListMessagesRequest {
            thread_id: thread.thread_id,
            before_seq: None,
            after_seq: None,
            limit: 10,
        })
        .await
        .unwrap()
        .into_inner();
    let shapes: Vec<(i64, i64, &str, bool, &str)> = listed
        .messages
        .iter()
        .map(|m| {
            (
                m.seq,
                m.sender_id,
                m.body.as_str(),
                m.deleted,
                m.client_message_id.as_str(),
            )
        })
        .collect();
    assert_eq!(
        shapes,
        [
            (3, STUDENT, "", true, ""),
            (2, STUDENT, "", true, ""),
            (1, TUTOR, "tutor first", false, ""),
        ],
        "tombstones in place, bodies and keys wiped, the peer's messages kept"
    );
    // The student's own summary shows the tutor's message (the newest left), the thread stays.
    app.tutor(TUTOR).say(thread.thread_id, "still here?").await;
    let student = app.student(STUDENT).unread().await;
    assert_eq!(student.threads[0].last_message_preview, "still here?");
    // Keys are wiped: the same key sends anew.
    let resent = app
        .student(STUDENT)
        .send(SendMessageRequest {
            thread_id: thread.thread_id,
            body: "back".into(),
            client_message_id: "k".into(),
        })
        .await;
    assert_eq!((resent.seq, resent.deleted), (5, false));
    // A repeat erases what came since, and only that.
    assert_eq!(erase(&app, STUDENT).await, 1);
    assert_eq!(erase(&app, STUDENT).await, 0);
    let result = app.sync().erase_user(EraseUserRequest { user_id: 0 }).await;
    assert_error(result, Code::InvalidArgument, "INVALID_ARGUMENT");
}

/// More messages than one batch: every one is erased, in several transactions.
async fn erasure_goes_batch_by_batch(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    let batch = chatd::domain::ERASE_BATCH;
    let (t, n) = (thread.thread_id, batch + 7);
    let insert = format!(
        "INSERT INTO messages (thread_id, seq, sender_id, body, created_at) \
         SELECT {t}, x, {STUDENT}, 'bulk ' || x, '2026-11-30T00:00:00Z' FROM s"
    );
    let series = match app.database().url() {
        DatabaseUrl::Postgres(_) => {
            format!("WITH s(x) AS (SELECT generate_series(1, {n})) {insert}")
        }
        DatabaseUrl::Sqlite(_) => format!(
            "WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < {n}) {insert}"
        ),
    };
    app.store
        .execute_batch(&format!(
            "{series}; \
             UPDATE threads SET last_seq = {n}, last_visible_seq = {n} WHERE thread_id = {t}; \
             UPDATE thread_participants SET unread_count = {n} WHERE thread_id = {t} AND side = 'tutor'"
        ))
        .await
        .expect("bulk messages");
    assert_eq!(erase(&app, STUDENT).await, batch + 7);
    let (counter, recount) = app
        .store
        .recount_unread(thread.thread_id, chatd::domain::Side::Tutor)
        .await
        .unwrap();
    assert_eq!((counter, recount), (0, 0));
    assert_eq!(app.tutor(TUTOR).unread().await.total, 0);
}

/// What the database keeps on disk, or dumps, as bytes.
async fn on_disk(app: &TestApp) -> Vec<u8> {
    match app.database().url() {
        DatabaseUrl::Sqlite(path) => {
            let mut bytes = std::fs::read(&path).expect("the database file");
            if let Ok(wal) = std::fs::read(format!("{path}-wal")) {
                bytes.extend(wal);
            }
            bytes
        }
        DatabaseUrl::Postgres(url) => {
            let dump = tokio::process::Command::new("pg_dump")
                .arg(&url)
                .output()
                .await
                .expect("pg_dump runs (Debian's postgresql-client)");
            assert!(
                dump.status.success(),
                "{}",
                String::from_utf8_lossy(&dump.stderr)
            );
            dump.stdout
        }
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

async fn erased_text_is_on_disk_nowhere(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    let secret = format!("my phone is 555-{}", std::process::id());
    app.student(STUDENT).say(thread.thread_id, &secret).await;
    app.student(STUDENT)
        .send(SendMessageRequest {
            thread_id: thread.thread_id,
            body: format!("again: {secret}"),
            client_message_id: "secret-key-7".into(),
        })
        .await;
    app.tutor(TUTOR).say(thread.thread_id, "noted").await;
    assert!(
        contains(&on_disk(&app).await, &secret),
        "the text is there before (else this test could not fail)"
    );
    erase(&app, STUDENT).await;
    let after = on_disk(&app).await;
    assert!(!contains(&after, &secret), "erased text found on disk");
    assert!(
        !contains(&after, "secret-key-7"),
        "an erased key found on disk"
    );
}

/// Many keyed messages of both participants, so that the index of keys holds the
/// erased user's keys beside the peer's on shared pages: after erasure neither the
/// file nor the WAL (nor PostgreSQL's dump) holds one of the erased user's keys or
/// bodies, while every one of the peer's is still there.
async fn erased_keys_are_on_disk_nowhere(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    let tag = std::process::id();
    let key = |who: &str, n: usize| format!("{who}-key-{tag}-{n:04}");
    let body = |who: &str, n: usize| format!("{who} says {tag}/{n:04}");
    for n in 0..240 {
        let (mut client, who) = if n % 3 == 0 {
            (app.tutor(TUTOR), "tutor")
        } else {
            (app.student(STUDENT), "student")
        };
        client
            .send(SendMessageRequest {
                thread_id: thread.thread_id,
                body: body(who, n),
                client_message_id: key(who, n),
            })
            .await;
    }
    erase(&app, STUDENT).await;
    let after = on_disk(&app).await;
    let left: Vec<String> = (0..240)
        .filter(|n| n % 3 != 0)
        .flat_map(|n| [key("student", n), body("student", n)])
        .filter(|erased| contains(&after, erased))
        .collect();
    assert!(
        left.is_empty(),
        "erased keys and bodies found on disk: {left:?}"
    );
    let kept = (0..240)
        .filter(|n| n % 3 == 0)
        .all(|n| contains(&after, &key("tutor", n)));
    assert!(
        kept,
        "the peer's keys are kept (else this test could not fail)"
    );
}

backend_suite!(
    erased_keys_are_on_disk_nowhere,
    an_erased_user_leaves_tombstones_and_exact_counts,
    erasure_goes_batch_by_batch,
    erased_text_is_on_disk_nowhere,
);
