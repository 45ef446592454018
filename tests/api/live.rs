//! WatchThread and SetTyping: an open window gets every change of its thread (new,
//! edited, deleted messages, horizons, writability) in version order with no gap, from
//! a snapshot or from a version it resumes after, from any replica; typing reaches it
//! and is throttled; strangers and bad versions are refused; a reader that stops
//! reading is ended and resumes losing nothing.

use std::time::Duration;

use chatd::domain::Role;
use chatd::grpc::pb::{self, Side, thread_event::Event};
use tonic::Code;

use crate::helpers::{
    Backend, Bearer, ChatClient, ChatClientExt, TestApp, WATCH_LIMITS, assert_error, mark_read,
};
use crate::watch::whole_seconds_ahead;
use crate::window::{Window, current_version, next_event, watch_request, watch_thread};

const TUTOR: i64 = 42;
const STUDENT: i64 = 7;

async fn edit(client: &mut ChatClient, thread_id: i64, seq: i64, body: &str) {
    client
        .edit_message(pb::EditMessageRequest {
            thread_id,
            seq,
            body: body.into(),
        })
        .await
        .expect("edit");
}

async fn delete(client: &mut ChatClient, thread_id: i64, seq: i64) {
    client
        .delete_message(pb::DeleteMessageRequest { thread_id, seq })
        .await
        .expect("delete");
}

/// Both participants' windows, opened on a new thread before anything happens in it,
/// follow every kind of change and end equal to what ListMessages says to each.
async fn windows_follow_every_change_and_equal_list_messages(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    let id = thread.thread_id;
    let mut tutor_events = watch_thread(&mut app.tutor(TUTOR), id, 0).await;
    let mut student_events = watch_thread(&mut app.student(STUDENT), id, 0).await;
    let mut tutor_window = Window::new(Side::Tutor);
    let mut student_window = Window::new(Side::Student);
    tutor_window.apply(next_event(&mut tutor_events).await);
    student_window.apply(next_event(&mut student_events).await);
    assert!(tutor_window.writable && student_window.writable);

    let (mut tutor, mut student) = (app.tutor(TUTOR), app.student(STUDENT));
    let hi = student.say(id, "hi").await;
    let hello = tutor.say(id, "hello").await;
    edit(&mut student, id, hi.seq, "hi there").await;
    delete(&mut student, id, hi.seq).await;
    student.mark_read(mark_read(id, None)).await.unwrap();
    tutor
        .mark_unread(pb::MarkUnreadRequest {
            thread_id: id,
            from_seq: hello.seq,
        })
        .await
        .unwrap();
    // A read that moves nothing is not a change.
    student.mark_read(mark_read(id, None)).await.unwrap();

    let version = current_version(&mut app.tutor(TUTOR), id).await;
    tutor_window.follow_to(&mut tutor_events, version).await;
    student_window.follow_to(&mut student_events, version).await;
    assert_eq!(
        tutor_window.kinds,
        [
            "snapshot", "created", "read", "created", "read", "edited", "deleted", "read", "read",
        ],
        "each change once, in the order it committed"
    );
    assert_eq!(tutor_window.messages, student_window.messages);
    tutor_window.assert_matches(&mut tutor, id).await;
    student_window.assert_matches(&mut student, id).await;
    assert_eq!(
        student_window.peer_read,
        hello.seq - 1,
        "the tutor's MarkUnread shows"
    );
}

/// A client that reconnects with the last version it received gets every change after
/// it, in order, then what happens next, live.
async fn a_window_resumes_after_its_last_version(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    let id = thread.thread_id;
    let mut student = app.student(STUDENT);
    for n in 1..=3 {
        student.say(id, &format!("m{n}")).await;
    }
    // Each send is two changes: the message, then its sender's horizon.
    assert_eq!(current_version(&mut app.tutor(TUTOR), id).await, 6);
    let mut events = watch_thread(&mut app.tutor(TUTOR), id, 3).await;
    let versions: Vec<i64> = versions_of(&mut events, 3).await;
    assert_eq!(versions, [4, 5, 6], "the missed changes, no snapshot");
    app.tutor(TUTOR).say(id, "live").await;
    let live = next_event(&mut events).await;
    assert_eq!(live.version, 7);
    assert!(
        matches!(&live.event, Some(Event::MessageCreated(m)) if m.body == "live"),
        "{live:?}"
    );
}

async fn versions_of(events: &mut crate::window::Events, count: usize) -> Vec<i64> {
    let mut versions = Vec::new();
    for _ in 0..count {
        versions.push(next_event(events).await.version);
    }
    versions
}

/// Only participants watch; a version that is negative or beyond the thread's is a
/// client's bug, said as such.
async fn strangers_and_bad_versions_are_refused(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    let id = thread.thread_id;
    let request = watch_request;
    let stranger = app.tutor(TUTOR + 1).watch_thread(request(id, 0)).await;
    assert_error(stranger, Code::NotFound, "THREAD_NOT_FOUND");
    let missing = app.tutor(TUTOR).watch_thread(request(id + 1000, 0)).await;
    assert_error(missing, Code::NotFound, "THREAD_NOT_FOUND");
    let negative = app.tutor(TUTOR).watch_thread(request(id, -1)).await;
    let status = assert_error(negative, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert!(status.message().contains("after_version"), "{status:?}");
    let beyond = app.tutor(TUTOR).watch_thread(request(id, 5)).await;
    let status = assert_error(beyond, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert!(status.message().contains("beyond"), "{status:?}");
    let stranger_typing = app
        .student(STUDENT + 1)
        .set_typing(pb::SetTypingRequest { thread_id: id })
        .await;
    assert_error(stranger_typing, Code::NotFound, "THREAD_NOT_FOUND");
}

/// The student types: the tutor's window shows it, until 5 s from then; typing again
/// within 2 s answers the same end and sends nothing.
async fn typing_reaches_the_window_once_per_interval(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    let id = thread.thread_id;
    let mut events = watch_thread(&mut app.tutor(TUTOR), id, 0).await;
    next_event(&mut events).await;
    let mut student = app.student(STUDENT);
    let typing = |thread_id| pb::SetTypingRequest { thread_id };
    let first = student.set_typing(typing(id)).await.unwrap().into_inner();
    let until = first.until.expect("until");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (now + 3..=now + 6).contains(&until.seconds),
        "{until:?} ~5 s ahead"
    );
    let shown = next_event(&mut events).await;
    assert_eq!(shown.version, 0, "typing changes no version");
    let Some(Event::Typing(shown)) = shown.event else {
        panic!("{shown:?}")
    };
    assert_eq!(shown.side(), Side::Student);
    assert_eq!(shown.until, Some(until));
    let again = student.set_typing(typing(id)).await.unwrap().into_inner();
    assert_eq!(
        again.until,
        Some(until),
        "within 2 s, the standing announcement"
    );
    student.say(id, "sent").await;
    let next = next_event(&mut events).await;
    assert!(
        matches!(next.event, Some(Event::MessageCreated(_))),
        "no second typing event: {next:?}"
    );
}

/// An archived relation closes the thread: both windows are told, and typing is
/// refused as a send is.
async fn a_closed_thread_disables_both_composers(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    let id = thread.thread_id;
    let mut tutor_events = watch_thread(&mut app.tutor(TUTOR), id, 0).await;
    let mut student_events = watch_thread(&mut app.student(STUDENT), id, 0).await;
    next_event(&mut tutor_events).await;
    next_event(&mut student_events).await;
    app.relation(10, TUTOR, STUDENT, pb::RelationStatus::Archived, 2)
        .await;
    for events in [&mut tutor_events, &mut student_events] {
        let event = next_event(events).await;
        assert_eq!(event.version, 1);
        assert_eq!(
            event.event,
            Some(Event::ThreadState(pb::ThreadState { writable: false }))
        );
    }
    let typing = app
        .student(STUDENT)
        .set_typing(pb::SetTypingRequest { thread_id: id })
        .await;
    assert_error(typing, Code::FailedPrecondition, "THREAD_NOT_WRITABLE");
    app.relation(10, TUTOR, STUDENT, pb::RelationStatus::Active, 3)
        .await;
    let reopened = next_event(&mut tutor_events).await;
    assert_eq!(
        reopened.event,
        Some(Event::ThreadState(pb::ThreadState { writable: true }))
    );
}

/// The seed's "Revoke → button disabled": revoking contact access disables the tutor's
/// composer, not the student's; the tutor may not type.
async fn revoked_contact_access_disables_the_tutors_composer(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    let id = thread.thread_id;
    let mut tutor_events = watch_thread(&mut app.tutor(TUTOR), id, 0).await;
    let mut student_events = watch_thread(&mut app.student(STUDENT), id, 0).await;
    next_event(&mut tutor_events).await;
    next_event(&mut student_events).await;
    app.contact_access(TUTOR, STUDENT, pb::ContactAccessState::Revoked, 2)
        .await;
    let state = |event: pb::ThreadEvent| match event.event {
        Some(Event::ThreadState(state)) => state.writable,
        other => panic!("{other:?}"),
    };
    assert!(!state(next_event(&mut tutor_events).await));
    assert!(
        state(next_event(&mut student_events).await),
        "the student still writes"
    );
    let typing = app
        .tutor(TUTOR)
        .set_typing(pb::SetTypingRequest { thread_id: id })
        .await;
    assert_error(typing, Code::PermissionDenied, "CONTACT_ACCESS_LOCKED");
    app.student(STUDENT)
        .set_typing(pb::SetTypingRequest { thread_id: id })
        .await
        .expect("the student may type");
    let typing = next_event(&mut tutor_events).await;
    assert!(matches!(typing.event, Some(Event::Typing(_))), "{typing:?}");
    // A change of state that changes nothing the tutor may do is not logged.
    app.contact_access(TUTOR, STUDENT, pb::ContactAccessState::Locked, 3)
        .await;
    app.contact_access(TUTOR, STUDENT, pb::ContactAccessState::Unlocked, 4)
        .await;
    let unlocked = next_event(&mut tutor_events).await;
    assert_eq!(unlocked.version, 2, "LOCKED after REVOKED was no change");
    assert!(state(unlocked));
}

/// A reader that takes nothing while its thread changes is ended once its buffer has
/// been full for the stall timeout, with STREAM_TOO_SLOW; resuming from the last
/// version it took, it gets everything else, and its window equals ListMessages.
async fn a_reader_that_stops_reading_is_ended_and_loses_nothing(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    let id = thread.thread_id;
    // A receive window of 1 KiB: the server can push only a few events past the buffer.
    let channel = tonic::transport::Endpoint::from_shared(app.grpc.clone())
        .unwrap()
        .initial_stream_window_size(Some(1024))
        .connect()
        .await
        .unwrap();
    let mut slow_client = pb::chat_service_client::ChatServiceClient::with_interceptor(
        channel,
        Bearer(Some(app.bearer(TUTOR, Role::Tutor))),
    );
    let mut events = watch_thread(&mut slow_client, id, 0).await;
    let mut window = Window::new(Side::Tutor);
    window.apply(next_event(&mut events).await);
    let mut student = app.student(STUDENT);
    for n in 0..200 {
        student.say(id, &format!("message {n} of a burst")).await;
    }
    // The server gives up on the reader by itself; it says so in its metrics.
    tokio::time::timeout(Duration::from_secs(30), async {
        while app.series("chatd_thread_streams_too_slow_total").await < 1 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the stalled stream is ended within 30 s");
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(10), events.message())
            .await
            .expect("the stream answers")
        {
            Ok(Some(event)) => window.apply(event),
            other => break other,
        }
    };
    assert_error(ended, Code::ResourceExhausted, "STREAM_TOO_SLOW");
    assert!(
        window.version < 400,
        "ended before the reader took everything"
    );
    let mut resumed = watch_thread(&mut app.tutor(TUTOR), id, window.version).await;
    window.follow_to(&mut resumed, 400).await;
    window.assert_matches(&mut app.tutor(TUTOR), id).await;
}

/// Thread streams and summary streams share the caller's stream limit.
async fn thread_streams_count_among_the_callers_streams(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    let mut open = Vec::new();
    for _ in 0..WATCH_LIMITS.per_user - 1 {
        let mut events = watch_thread(&mut app.tutor(TUTOR), thread.thread_id, 0).await;
        next_event(&mut events).await;
        open.push(events);
    }
    let _summary = TestApp::watch(&mut app.tutor(TUTOR)).await;
    let refused = app
        .tutor(TUTOR)
        .watch_thread(watch_request(thread.thread_id, 0))
        .await;
    assert_error(refused, Code::ResourceExhausted, "TOO_MANY_STREAMS");
    drop(open.pop());
    // The place is freed once the server has seen the stream go.
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let retry = app
                .tutor(TUTOR)
                .watch_thread(watch_request(thread.thread_id, 0))
                .await;
            if retry.is_ok() {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("a closed stream frees its place");
}

/// A thread stream lasts as long as its token.
async fn a_thread_stream_ends_when_its_token_expires(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    let exp = whole_seconds_ahead(3);
    let mut tutor = app.chat_with_header(Some(app.bearer_until(TUTOR, Role::Tutor, exp)));
    let mut events = watch_thread(&mut tutor, thread.thread_id, 0).await;
    next_event(&mut events).await;
    let ended = tokio::time::timeout(Duration::from_secs(10), events.message())
        .await
        .expect("the stream ends within 10 s of its token's exp");
    assert!(std::time::SystemTime::now() >= exp, "ended before exp");
    assert_error(ended, Code::Unauthenticated, "TOKEN_EXPIRED");
}

backend_suite!(
    windows_follow_every_change_and_equal_list_messages,
    a_window_resumes_after_its_last_version,
    strangers_and_bad_versions_are_refused,
    typing_reaches_the_window_once_per_interval,
    a_closed_thread_disables_both_composers,
    revoked_contact_access_disables_the_tutors_composer,
    a_reader_that_stops_reading_is_ended_and_loses_nothing with |config| {
        config.watch_stall_timeout = Duration::from_secs(1)
    },
    thread_streams_count_among_the_callers_streams,
    a_thread_stream_ends_when_its_token_expires with |config| {
        config.auth.leeway = Duration::ZERO
    },
);

/// Two replicas on one PostgreSQL database: a window on B gets what A commits, and the
/// typing announced on A, through the fan-out; a window that was closed meanwhile
/// resumes on A from its last version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_window_on_one_replica_follows_another() {
    let a = TestApp::spawn(Backend::Postgres).await;
    let b = a.replica().await;
    let thread = a.contact_thread(10, TUTOR, STUDENT).await;
    let id = thread.thread_id;
    let mut on_b = watch_thread(&mut b.tutor(TUTOR), id, 0).await;
    let mut window = Window::new(Side::Tutor);
    window.apply(next_event(&mut on_b).await);
    a.student(STUDENT).say(id, "via replica A").await;
    window.follow_to(&mut on_b, 2).await;
    a.student(STUDENT)
        .set_typing(pb::SetTypingRequest { thread_id: id })
        .await
        .unwrap();
    let typing = next_event(&mut on_b).await;
    assert!(matches!(typing.event, Some(Event::Typing(_))), "{typing:?}");
    drop(on_b);
    a.student(STUDENT).say(id, "while away").await;
    let mut on_a = watch_thread(&mut a.tutor(TUTOR), id, window.version).await;
    window.follow_to(&mut on_a, 4).await;
    window.assert_matches(&mut a.tutor(TUTOR), id).await;
}

/// A notification that never came (here: a change made behind chatd's back, so none was
/// sent) is made up for when the replica's listener reconnects: every window on it
/// reads its thread's log again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_windows_reread_the_log_when_the_listener_reconnects() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    let id = thread.thread_id;
    app.student(STUDENT).say(id, "one").await;
    let mut events = watch_thread(&mut app.tutor(TUTOR), id, 0).await;
    assert_eq!(next_event(&mut events).await.version, 2);
    let database = app.database();
    database
        .execute_inside(&format!(
            "UPDATE threads SET version = 3 WHERE thread_id = {id}; \
             INSERT INTO events (kind, thread_id, thread_version, side, seq, created_at) \
             VALUES ('chat.thread.read', {id}, 3, 'tutor', 1, now())"
        ))
        .await;
    database
        .execute_inside(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()",
        )
        .await;
    let caught_up = next_event(&mut events).await;
    assert_eq!(
        caught_up.version, 3,
        "read from the log after the reconnect"
    );
    assert_eq!(
        caught_up.event,
        Some(Event::ReadMoved(pb::ReadMoved {
            side: Side::Tutor.into(),
            last_read_seq: 1
        }))
    );
}
