//! Sending, idempotency, listing and read horizons.

use chatd::grpc::pb::{ListMessagesRequest, SendMessageRequest};
use tonic::Code;

use crate::helpers::{ChatClientExt, TestApp, assert_error, mark_read, send};

const TUTOR: i64 = 42;
const STUDENT: i64 = 7;

fn list(thread_id: i64, before_seq: Option<i64>, limit: i32) -> ListMessagesRequest {
    ListMessagesRequest {
        thread_id,
        before_seq,
        after_seq: None,
        limit,
    }
}

async fn messages_get_consecutive_seqs(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    let mut seqs = Vec::new();
    for n in 0..3 {
        let client = if n % 2 == 0 {
            app.student(STUDENT)
        } else {
            app.tutor(TUTOR)
        };
        let message = client
            .clone()
            .send_message(send(thread.thread_id, "hi"))
            .await
            .unwrap()
            .into_inner()
            .message
            .unwrap();
        assert_eq!(message.thread_id, thread.thread_id);
        assert!(message.created_at.is_some());
        seqs.push(message.seq);
    }
    assert_eq!(seqs, vec![1, 2, 3]);
}

async fn same_client_message_id_returns_the_first_message(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    let request = SendMessageRequest {
        thread_id: thread.thread_id,
        body: "once".into(),
        client_message_id: "retry-1".into(),
    };
    let first = app.student(STUDENT).send(request.clone()).await;
    let retry = app.student(STUDENT).send(request.clone()).await;
    assert_eq!(retry, first);
    assert_eq!(first.client_message_id, "retry-1");
    // Only one message, one unread.
    let tutor = app.tutor(TUTOR).unread().await;
    assert_eq!(tutor.total, 1);
    // The same key from the other participant is their own message.
    let other = app.tutor(TUTOR).send(request).await;
    assert_ne!(other.message_id, first.message_id);
    // No key: every call sends.
    let a = app
        .student(STUDENT)
        .send(send(thread.thread_id, "same"))
        .await;
    let b = app
        .student(STUDENT)
        .send(send(thread.thread_id, "same"))
        .await;
    assert_ne!(a.message_id, b.message_id);
}

async fn list_pages_newest_first_with_horizons(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    for n in 1..=5 {
        app.student(STUDENT)
            .say(thread.thread_id, &format!("m{n}"))
            .await;
    }
    app.tutor(TUTOR)
        .mark_read(mark_read(thread.thread_id, Some(3)))
        .await
        .unwrap();
    let page = app
        .tutor(TUTOR)
        .list_messages(list(thread.thread_id, None, 2))
        .await
        .unwrap()
        .into_inner();
    let seqs: Vec<i64> = page.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, vec![5, 4]);
    assert!(page.has_more);
    assert_eq!(page.last_read_seq, 3);
    // The student sent message 5, so their horizon is 5.
    assert_eq!(page.peer_last_read_seq, 5);
    let rest = app
        .tutor(TUTOR)
        .list_messages(list(thread.thread_id, Some(4), 0))
        .await
        .unwrap()
        .into_inner();
    let seqs: Vec<i64> = rest.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, vec![3, 2, 1]);
    assert!(!rest.has_more);
    assert_eq!(rest.messages[2].body, "m1");
    let student_view = app
        .student(STUDENT)
        .list_messages(list(thread.thread_id, None, 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (student_view.last_read_seq, student_view.peer_last_read_seq),
        (5, 3)
    );
}

async fn mark_read_clamps_and_never_moves_back(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    for _ in 0..3 {
        app.student(STUDENT).say(thread.thread_id, "x").await;
    }
    let beyond = app
        .tutor(TUTOR)
        .mark_read(mark_read(thread.thread_id, Some(99)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((beyond.last_read_seq, beyond.unread_count), (3, 0));
    let back = app
        .tutor(TUTOR)
        .mark_read(mark_read(thread.thread_id, Some(1)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (back.last_read_seq, back.unread_count, back.total),
        (3, 0, 0)
    );
    assert_eq!(back.thread_id, thread.thread_id);
}

async fn sending_reads_what_came_before(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    app.student(STUDENT).say(thread.thread_id, "question").await;
    app.student(STUDENT).say(thread.thread_id, "another").await;
    app.tutor(TUTOR).say(thread.thread_id, "answer").await;
    let tutor = app.tutor(TUTOR).unread().await;
    assert_eq!(
        tutor.total, 0,
        "replying moves the tutor's horizon past the questions"
    );
}

async fn strangers_cannot_read_or_mark(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    app.student(STUDENT).say(thread.thread_id, "private").await;
    let stranger = app.student(8);
    let result = stranger
        .clone()
        .list_messages(list(thread.thread_id, None, 0))
        .await;
    assert_error(result, Code::NotFound, "THREAD_NOT_FOUND");
    let result = stranger
        .clone()
        .mark_read(mark_read(thread.thread_id, None))
        .await;
    assert_error(result, Code::NotFound, "THREAD_NOT_FOUND");
    let result = app
        .tutor(TUTOR)
        .list_messages(list(thread.thread_id + 1000, None, 0))
        .await;
    assert_error(result, Code::NotFound, "THREAD_NOT_FOUND");
}

backend_suite!(
    messages_get_consecutive_seqs,
    same_client_message_id_returns_the_first_message,
    list_pages_newest_first_with_horizons,
    mark_read_clamps_and_never_moves_back,
    sending_reads_what_came_before,
    strangers_cannot_read_or_mark,
);
