//! Concurrency is part of correctness: one thread per relation, gap-free seqs, and
//! counters that always agree with a recount, however calls interleave.

use futures::future::join_all;

use chatd::grpc::pb::{ContactAccessState, RelationStatus, SendMessageRequest};

use crate::helpers::{ChatClientExt, TestApp, ensure_relation, mark_read, send};

async fn concurrent_ensure_creates_one_thread(app: TestApp) {
    app.relation(10, 42, 7, RelationStatus::Active, 1).await;
    app.contact_access(42, 7, ContactAccessState::Unlocked, 1)
        .await;
    let calls = (0..50).map(|n| {
        let mut client = if n % 2 == 0 {
            app.tutor(42)
        } else {
            app.student(7)
        };
        async move { client.ensure_thread(ensure_relation(10)).await }
    });
    let responses: Vec<_> = join_all(calls)
        .await
        .into_iter()
        .map(|r| r.expect("every ensure succeeds").into_inner())
        .collect();
    let created = responses.iter().filter(|r| r.created).count();
    assert_eq!(created, 1, "exactly one call creates the thread");
    let first = responses[0].thread.as_ref().unwrap().thread_id;
    assert!(
        responses
            .iter()
            .all(|r| r.thread.as_ref().unwrap().thread_id == first)
    );
}

async fn concurrent_sends_get_gap_free_seqs(app: TestApp) {
    let thread = app.contact_thread(10, 42, 7).await;
    let calls = (0..40).map(|n| {
        let mut client = if n % 2 == 0 {
            app.tutor(42)
        } else {
            app.student(7)
        };
        async move {
            client
                .send_message(send(thread.thread_id, &format!("m{n}")))
                .await
        }
    });
    let mut seqs: Vec<i64> = join_all(calls)
        .await
        .into_iter()
        .map(|r| {
            r.expect("every send succeeds")
                .into_inner()
                .message
                .unwrap()
                .seq
        })
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=40).collect::<Vec<_>>());
}

async fn concurrent_retries_send_once(app: TestApp) {
    let thread = app.contact_thread(10, 42, 7).await;
    let request = SendMessageRequest {
        thread_id: thread.thread_id,
        body: "only once".into(),
        client_message_id: "k1".into(),
    };
    let calls = (0..20).map(|_| {
        let mut client = app.student(7);
        let request = request.clone();
        async move { client.send_message(request).await }
    });
    let ids: Vec<i64> = join_all(calls)
        .await
        .into_iter()
        .map(|r| {
            r.expect("every retry succeeds")
                .into_inner()
                .message
                .unwrap()
                .message_id
        })
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]));
    let unread = app.tutor(42).unread().await;
    assert_eq!(unread.total, 1);
}

async fn counters_agree_with_recount_under_concurrency(app: TestApp) {
    let thread = app.contact_thread(10, 42, 7).await;
    let sends = (0..30).map(|n| {
        let mut client = if n % 3 == 0 {
            app.tutor(42)
        } else {
            app.student(7)
        };
        async move {
            client
                .send_message(send(thread.thread_id, "x"))
                .await
                .map(|_| ())
        }
    });
    let reads = (0..30).map(|n| {
        let mut client = if n % 2 == 0 {
            app.tutor(42)
        } else {
            app.student(7)
        };
        async move {
            client
                .mark_read(mark_read(thread.thread_id, None))
                .await
                .map(|_| ())
        }
    });
    let (sent, read) = tokio::join!(join_all(sends), join_all(reads));
    assert!(sent.iter().chain(read.iter()).all(Result::is_ok));
    for side in ["tutor", "student"] {
        let (counter, recount) = app
            .store
            .recount_unread(thread.thread_id, side)
            .await
            .unwrap();
        assert_eq!(counter, recount, "{side}'s counter matches the messages");
    }
    let tutor_total = app.tutor(42).unread().await.total;
    let (tutor_counter, _) = app
        .store
        .recount_unread(thread.thread_id, "tutor")
        .await
        .unwrap();
    assert_eq!(tutor_total, tutor_counter);
}

backend_suite!(
    concurrent_ensure_creates_one_thread,
    concurrent_sends_get_gap_free_seqs,
    concurrent_retries_send_once,
    counters_agree_with_recount_under_concurrency,
);
