//! The seed's UnreadSummaryTestCase and the summary's paging, order and totals.

use chatd::grpc::pb::{GetUnreadSummaryRequest, ThreadKind};

use crate::helpers::{ChatClientExt, TestApp, mark_read, summary};

const TUTOR: i64 = 42;
const STUDENT: i64 = 7;

async fn empty_summary(app: TestApp) {
    app.contact_thread(10, TUTOR, STUDENT).await;
    let response = app.tutor(TUTOR).unread().await;
    assert!(response.threads.is_empty());
    assert_eq!(response.total, 0);
}

async fn unread_messages_are_counted(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    app.student(STUDENT)
        .say(thread.thread_id, "hello tutor")
        .await;
    let response = app.tutor(TUTOR).unread().await;
    assert_eq!(response.total, 1);
    let entry = &response.threads[0];
    assert_eq!(entry.thread_id, thread.thread_id);
    assert_eq!(entry.kind(), ThreadKind::Contact);
    assert_eq!(entry.relation_id, Some(10));
    assert_eq!((entry.tutor_id, entry.student_id), (TUTOR, STUDENT));
    assert_eq!(entry.unread_count, 1);
    assert_eq!(entry.last_message_preview, "hello tutor");
    assert_eq!(entry.last_message_sender_id, STUDENT);
    assert!(entry.last_message_at.is_some());
}

async fn own_messages_are_not_unread(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    app.tutor(TUTOR).say(thread.thread_id, "mine").await;
    let tutor = app.tutor(TUTOR).unread().await;
    assert_eq!(tutor.total, 0);
    assert!(tutor.threads.is_empty());
    let student = app.student(STUDENT).unread().await;
    assert_eq!(student.total, 1);
}

async fn read_messages_are_not_unread(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    for body in ["one", "two", "three"] {
        app.student(STUDENT).say(thread.thread_id, body).await;
    }
    let partly = app
        .tutor(TUTOR)
        .mark_read(mark_read(thread.thread_id, Some(2)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (partly.last_read_seq, partly.unread_count, partly.total),
        (2, 1, 1)
    );
    let all = app
        .tutor(TUTOR)
        .mark_read(mark_read(thread.thread_id, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((all.last_read_seq, all.unread_count, all.total), (3, 0, 0));
    let response = app.tutor(TUTOR).unread().await;
    assert_eq!(response.total, 0);
    assert!(response.threads.is_empty());
}

async fn several_unread_counted_newest_first(app: TestApp) {
    let mut threads = Vec::new();
    for (relation_id, student) in [(10, 7), (11, 8), (12, 9)] {
        threads.push(app.contact_thread(relation_id, TUTOR, student).await);
    }
    // Thread 0 gets 2 messages, thread 1 gets 3, thread 2 gets 1 (sent last: newest).
    for (thread, student, count) in [
        (&threads[0], 7, 2),
        (&threads[1], 8, 3),
        (&threads[2], 9, 1),
    ] {
        for n in 0..count {
            app.student(student)
                .say(thread.thread_id, &format!("m{n}"))
                .await;
        }
    }
    let response = app.tutor(TUTOR).unread().await;
    assert_eq!(response.total, 6);
    let order: Vec<(i64, i64)> = response
        .threads
        .iter()
        .map(|t| (t.thread_id, t.unread_count))
        .collect();
    assert_eq!(
        order,
        vec![
            (threads[2].thread_id, 1),
            (threads[1].thread_id, 3),
            (threads[0].thread_id, 2)
        ]
    );
    // A page of one still reports the total of every thread.
    let page = app
        .tutor(TUTOR)
        .get_unread_summary(summary(1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.threads.len(), 1);
    assert_eq!(page.threads[0].thread_id, threads[2].thread_id);
    assert_eq!(page.total, 6);
}

async fn summary_is_per_role(app: TestApp) {
    // User 42 tutors student 7 and is also a student of tutor 99.
    let as_tutor = app.contact_thread(10, 42, 7).await;
    let as_student = app.contact_thread(11, 99, 42).await;
    app.student(7).say(as_tutor.thread_id, "to my tutor").await;
    app.tutor(99)
        .say(as_student.thread_id, "to my student")
        .await;
    app.tutor(99).say(as_student.thread_id, "again").await;
    let tutor_view = app.tutor(42).unread().await;
    assert_eq!(tutor_view.total, 1);
    assert_eq!(tutor_view.threads[0].thread_id, as_tutor.thread_id);
    let student_view = app.student(42).unread().await;
    assert_eq!(student_view.total, 2);
    assert_eq!(student_view.threads[0].thread_id, as_student.thread_id);
}

async fn preview_is_truncated(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    let long = "ж".repeat(500);
    app.student(STUDENT).say(thread.thread_id, &long).await;
    let response = app.tutor(TUTOR).unread().await;
    assert_eq!(
        response.threads[0].last_message_preview.chars().count(),
        100
    );
}

async fn etag_changes_only_with_the_summary(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    let mut tutor = app.tutor(TUTOR);
    let ask = |etag: &str| GetUnreadSummaryRequest {
        limit: 0,
        if_none_match: etag.to_owned(),
    };
    let first = tutor
        .get_unread_summary(ask(""))
        .await
        .unwrap()
        .into_inner();
    assert!(!first.not_modified);
    assert!(!first.etag.is_empty());
    let again = tutor
        .get_unread_summary(ask(&first.etag))
        .await
        .unwrap()
        .into_inner();
    assert!(again.not_modified, "nothing changed");
    assert!(again.threads.is_empty());
    assert_eq!(again.etag, first.etag);
    // The tutor's own message changes nothing in the tutor's summary.
    app.tutor(TUTOR).say(thread.thread_id, "mine").await;
    let own = tutor
        .get_unread_summary(ask(&first.etag))
        .await
        .unwrap()
        .into_inner();
    assert!(own.not_modified);
    // Another limit is another page: a different etag.
    let other_page = tutor
        .get_unread_summary(GetUnreadSummaryRequest {
            limit: 10,
            if_none_match: first.etag.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!other_page.not_modified);
    // A message from the student changes it, and the new summary comes with it.
    app.student(STUDENT).say(thread.thread_id, "hi").await;
    let changed = tutor
        .get_unread_summary(ask(&first.etag))
        .await
        .unwrap()
        .into_inner();
    assert!(!changed.not_modified);
    assert_eq!(changed.total, 1);
    assert_ne!(changed.etag, first.etag);
    // Reading it changes it again.
    tutor
        .mark_read(mark_read(thread.thread_id, None))
        .await
        .unwrap();
    let read = tutor
        .get_unread_summary(ask(&changed.etag))
        .await
        .unwrap()
        .into_inner();
    assert!(!read.not_modified);
    assert_eq!(read.total, 0);
    // Marking read again with nothing new leaves it current.
    tutor
        .mark_read(mark_read(thread.thread_id, None))
        .await
        .unwrap();
    let same = tutor
        .get_unread_summary(ask(&read.etag))
        .await
        .unwrap()
        .into_inner();
    assert!(same.not_modified);
}

backend_suite!(
    etag_changes_only_with_the_summary,
    empty_summary,
    unread_messages_are_counted,
    own_messages_are_not_unread,
    read_messages_are_not_unread,
    several_unread_counted_newest_first,
    summary_is_per_role,
    preview_is_truncated,
);
