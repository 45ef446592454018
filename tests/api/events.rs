//! EventService/StreamEvents: every committed change is one event, in commit order
//! (positions), each thread's in version order; a consumer resumes after its last
//! position and filters by type; retention trims and resuming before it is
//! EVENTS_EXPIRED; unread reminders come once per unread spell and never for a muted
//! thread; only services may read, and bad requests are refused.

use std::collections::HashSet;
use std::time::Duration;

use chatd::domain::Role;
use chatd::grpc::pb::{self, event::Data};
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{Bearer, ChatClientExt, TestApp, assert_error, mark_read};

const TUTOR: i64 = 42;
const STUDENT: i64 = 7;

pub type Events = tonic::Streaming<pb::Event>;

pub async fn stream_events(app: &TestApp, after_position: i64, types: &[&str]) -> Events {
    app.events()
        .stream_events(pb::StreamEventsRequest {
            after_position,
            types: types.iter().map(|t| t.to_string()).collect(),
        })
        .await
        .expect("StreamEvents opens")
        .into_inner()
}

pub async fn next(events: &mut Events) -> pb::Event {
    tokio::time::timeout(Duration::from_secs(10), events.message())
        .await
        .expect("an event within 10 s")
        .expect("the stream is healthy")
        .expect("the stream goes on")
}

/// Takes events until one of type `last` (inclusive).
pub async fn until(events: &mut Events, last: &str) -> Vec<pb::Event> {
    let mut taken = Vec::new();
    loop {
        let event = next(events).await;
        let done = event.r#type == last;
        taken.push(event);
        if done {
            return taken;
        }
    }
}

/// Positions rise, ids are unique, and each thread's versions rise.
pub fn assert_ordered(events: &[pb::Event]) {
    let mut ids = HashSet::new();
    let mut versions = std::collections::HashMap::new();
    for pair in events.windows(2) {
        assert!(
            pair[0].position < pair[1].position,
            "positions rise: {pair:?}"
        );
    }
    for event in events {
        assert!(ids.insert(event.id.clone()), "id {} once", event.id);
        if event.thread_version > 0 {
            let last = versions
                .insert(event.thread_id, event.thread_version)
                .unwrap_or(0);
            assert!(
                last < event.thread_version,
                "thread {} in version order",
                event.thread_id
            );
        }
    }
}

fn types(events: &[pb::Event]) -> Vec<&str> {
    events.iter().map(|event| event.r#type.as_str()).collect()
}

/// Every kind of change, made through the API, is one event of its type with its
/// data, in the order the changes committed.
async fn every_change_is_one_event_in_commit_order(app: TestApp) {
    let mut events = stream_events(&app, 0, &[]).await;
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    let id = thread.thread_id;
    let (mut tutor, mut student) = (app.tutor(TUTOR), app.student(STUDENT));
    let hi = tutor.say(id, "hi").await;
    student
        .edit_message(pb::EditMessageRequest {
            thread_id: id,
            seq: 1,
            body: "x".into(),
        })
        .await
        .expect_err("not the sender");
    tutor
        .edit_message(pb::EditMessageRequest {
            thread_id: id,
            seq: hi.seq,
            body: "hi!".into(),
        })
        .await
        .unwrap();
    student.mark_read(mark_read(id, None)).await.unwrap();
    student
        .mark_unread(pb::MarkUnreadRequest {
            thread_id: id,
            from_seq: hi.seq,
        })
        .await
        .unwrap();
    student
        .mute_thread(pb::MuteThreadRequest {
            thread_id: id,
            until: None,
        })
        .await
        .unwrap();
    student
        .unmute_thread(pb::UnmuteThreadRequest { thread_id: id })
        .await
        .unwrap();
    tutor
        .delete_message(pb::DeleteMessageRequest {
            thread_id: id,
            seq: hi.seq,
        })
        .await
        .unwrap();
    app.relation(10, TUTOR, STUDENT, pb::RelationStatus::Archived, 2)
        .await;
    app.sync()
        .erase_user(pb::EraseUserRequest { user_id: TUTOR })
        .await
        .unwrap();

    let mut seen = until(&mut events, "chat.user.erased").await;
    // The erasure wipes the tombstone's key too, which logs it once more.
    let erased = seen.pop().expect("the erasure");
    while seen
        .last()
        .is_some_and(|e| e.r#type == "chat.message.deleted" && seen.len() > 9)
    {
        seen.pop();
    }
    seen.push(erased);
    assert_eq!(
        types(&seen),
        [
            "chat.thread.created",
            "chat.message.created",
            "chat.thread.read",
            "chat.message.edited",
            "chat.thread.read",
            "chat.thread.marked_unread",
            "chat.thread.muted",
            "chat.thread.unmuted",
            "chat.message.deleted",
            "chat.thread.writability_changed",
            "chat.user.erased",
        ]
    );
    assert_ordered(&seen);
    match &seen[0].data {
        Some(Data::ThreadCreated(created)) => {
            assert_eq!(
                (created.thread_id, created.tutor_id, created.student_id),
                (id, TUTOR, STUDENT)
            );
        }
        other => panic!("thread created carries the thread: {other:?}"),
    }
    assert_eq!(seen[0].thread_version, 0, "no version: windows start at 0");
    // The log keeps no text: a message's event shows the message as it is when the
    // event is read, so a replay after the erasure shows no text.
    let mut replay = stream_events(&app, 0, &["chat.message.created"]).await;
    match next(&mut replay).await.data {
        Some(Data::MessageCreated(message)) => {
            assert_eq!((message.seq, message.sender_id), (hi.seq, TUTOR));
            assert_eq!(message.body, "", "erased since");
            assert_eq!(message.client_message_id, "", "its key too");
            assert!(message.deleted);
        }
        other => panic!("message created carries the message: {other:?}"),
    }
    let read = |event: &pb::Event| match &event.data {
        Some(Data::ThreadRead(read) | Data::ThreadMarkedUnread(read)) => *read,
        other => panic!("a read event: {other:?}"),
    };
    assert_eq!(
        read(&seen[2]).user_id,
        TUTOR,
        "the sender's own horizon moves to their message"
    );
    let student_read = read(&seen[4]);
    assert_eq!(
        (
            student_read.user_id,
            student_read.last_read_seq,
            student_read.unread
        ),
        (STUDENT, 1, 0)
    );
    let unread = read(&seen[5]);
    assert_eq!((unread.last_read_seq, unread.unread), (0, 1));
    match &seen[6].data {
        Some(Data::ThreadMuted(mute)) => {
            assert_eq!(mute.user_id, STUDENT);
            assert!(mute.until.is_none(), "muted until unmuted");
        }
        other => panic!("muted: {other:?}"),
    }
    match &seen[8].data {
        Some(Data::MessageDeleted(deleted)) => assert!(!deleted.removed_by_moderation),
        other => panic!("deleted: {other:?}"),
    }
    match &seen[9].data {
        Some(Data::WritabilityChanged(w)) => {
            assert!(!w.is_writable && !w.tutor_may_write && !w.student_may_write)
        }
        other => panic!("writability: {other:?}"),
    }
    match &seen[10].data {
        Some(Data::UserErased(erased)) => {
            assert_eq!((erased.user_id, erased.messages_erased), (TUTOR, 0))
        }
        other => panic!("erased: {other:?}"),
    }
    assert_eq!(seen[10].thread_id, 0, "of no thread");
}

/// A consumer that resumes after the last position it processed gets the rest, no
/// gap and no repeat; a type filter gives only those types.
async fn a_consumer_resumes_after_its_position_and_filters_by_type(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    let mut tutor = app.tutor(TUTOR);
    for body in ["one", "two", "three"] {
        tutor.say(thread.thread_id, body).await;
    }
    let mut all = stream_events(&app, 0, &[]).await;
    let first: Vec<pb::Event> = vec![
        next(&mut all).await,
        next(&mut all).await,
        next(&mut all).await,
    ];
    drop(all);
    let mut rest = stream_events(&app, first[2].position, &[]).await;
    tutor.say(thread.thread_id, "four").await;
    let mut seen = first.clone();
    while seen.len() < 9 {
        seen.push(next(&mut rest).await);
    }
    assert_ordered(&seen);
    let positions: Vec<i64> = seen.iter().map(|e| e.position).collect();
    assert_eq!(
        positions,
        (positions[0]..positions[0] + 9).collect::<Vec<_>>(),
        "no gap"
    );

    let mut created = stream_events(&app, 0, &["chat.message.created"]).await;
    let mut got = Vec::new();
    while got.len() < 4 {
        let event = next(&mut created).await;
        assert_eq!(event.r#type, "chat.message.created");
        match event.data {
            Some(Data::MessageCreated(message)) => got.push(message.body),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got, ["one", "two", "three", "four"]);
}

/// Users' tokens, unknown types and positions that were never given are refused.
async fn only_services_and_valid_requests(app: TestApp) {
    let mut as_tutor = pb::event_service_client::EventServiceClient::with_interceptor(
        app.channel(),
        Bearer(Some(app.bearer(TUTOR, Role::Tutor))),
    );
    let refused = as_tutor
        .stream_events(pb::StreamEventsRequest::default())
        .await;
    assert_error(refused, Code::PermissionDenied, "ROLE_NOT_ALLOWED");
    let unknown = app
        .events()
        .stream_events(pb::StreamEventsRequest {
            after_position: 0,
            types: vec!["chat.nope".into()],
        })
        .await;
    let status = assert_error(unknown, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert!(
        status.message().contains("chat.message.created"),
        "names the known types: {status:?}"
    );
    let negative = app
        .events()
        .stream_events(pb::StreamEventsRequest {
            after_position: -1,
            types: vec![],
        })
        .await;
    assert_error(negative, Code::InvalidArgument, "INVALID_ARGUMENT");
    let future = app
        .events()
        .stream_events(pb::StreamEventsRequest {
            after_position: 1_000_000,
            types: vec![],
        })
        .await;
    assert_error(future, Code::InvalidArgument, "INVALID_ARGUMENT");
}

/// Retention trims old events; resuming before what it trimmed is EVENTS_EXPIRED,
/// naming where the log starts now, and 0 starts there.
async fn retention_trims_and_resuming_before_it_is_expired(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    app.tutor(TUTOR).say(thread.thread_id, "old").await;
    // A consumer resumes after a position it was given: wait for the first to be
    // numbered (PostgreSQL numbers after the commit) before resuming after it.
    let mut log = stream_events(&app, 0, &[]).await;
    let first = next(&mut log).await.position;
    drop(log);
    let expired = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let asked = app
                .events()
                .stream_events(pb::StreamEventsRequest {
                    after_position: first,
                    types: vec![],
                })
                .await;
            match asked {
                Err(status) => return status,
                // Not trimmed yet: retention runs every half of it (here 0.5 s).
                Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await
    .expect("trimmed within 20 s");
    assert_eq!(expired.code(), Code::OutOfRange, "{expired:?}");
    let info = expired.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "EVENTS_EXPIRED");
    let oldest: i64 = info.metadata["oldest_position"]
        .parse()
        .expect("a position");
    assert!(oldest > first, "trimmed past position {first}: {info:?}");
    let mut events = stream_events(&app, 0, &[]).await;
    app.tutor(TUTOR).say(thread.thread_id, "new").await;
    let event = next(&mut events).await;
    assert!(event.position > oldest, "0 starts after what was trimmed");
}

/// A message unread for --unread-reminder-after brings one reminder for its reader's
/// thread; more messages in the same spell bring none; reading starts a new spell; a
/// muted thread never brings one.
async fn unread_reminders_come_once_per_spell_and_never_when_muted(app: TestApp) {
    let mut reminders = stream_events(&app, 0, &["chat.unread.reminder"]).await;
    let open = app.contact_thread(10, TUTOR, STUDENT).await.thread_id;
    let muted = app.contact_thread(11, TUTOR, STUDENT + 1).await.thread_id;
    app.student(STUDENT + 1)
        .mute_thread(pb::MuteThreadRequest {
            thread_id: muted,
            until: None,
        })
        .await
        .unwrap();
    let mut tutor = app.tutor(TUTOR);
    tutor.say(muted, "you muted me").await;
    let first = tutor.say(open, "first").await;
    let reminder = next(&mut reminders).await;
    match &reminder.data {
        Some(Data::UnreadReminder(r)) => {
            assert_eq!(
                (r.user_id, r.thread_id, r.unread_count, r.peer_id),
                (STUDENT, open, 1, TUTOR)
            );
            assert_eq!(r.side, pb::Side::Student as i32);
            assert_eq!(r.oldest_unread_at, first.created_at);
        }
        other => panic!("a reminder: {other:?}"),
    }
    tutor.say(open, "second, same spell").await;
    let mut student = app.student(STUDENT);
    student.mark_read(mark_read(open, None)).await.unwrap();
    tutor.say(open, "third, a new spell").await;
    let again = next(&mut reminders).await;
    match &again.data {
        Some(Data::UnreadReminder(r)) => {
            assert_eq!(
                (r.user_id, r.thread_id, r.unread_count),
                (STUDENT, open, 1),
                "one per spell, the muted thread never"
            );
        }
        other => panic!("a reminder: {other:?}"),
    }
}

/// A backlog of more readers due than one round reminds, over more threads than one
/// round looks through (rounds go on where the last stopped): every reader due is
/// reminded, and none twice.
async fn a_backlog_of_reminders_reaches_every_reader_once(app: TestApp) {
    const READERS: i64 = 250;
    let mut reminders = stream_events(&app, 0, &["chat.unread.reminder"]).await;
    let mut due = HashSet::new();
    for n in 0..READERS {
        let (tutor, student) = (3000 + n, 4000 + n);
        let thread = app.contact_thread(500 + n, tutor, student).await.thread_id;
        app.tutor(tutor).say(thread, "are you there?").await;
        due.insert((student, thread));
    }
    let mut reminded = HashSet::new();
    while reminded.len() < due.len() {
        match next(&mut reminders).await.data {
            Some(Data::UnreadReminder(r)) => {
                assert!(
                    reminded.insert((r.user_id, r.thread_id)),
                    "reminded twice: {r:?}"
                );
            }
            other => panic!("a reminder: {other:?}"),
        }
    }
    assert_eq!(reminded, due);
}

/// Writers in several threads at once: a consumer following live receives exactly
/// what a replay from 0 gives afterwards (none skipped for committing after a later
/// one), each thread's changes at versions 1, 2, 3, … in order.
async fn a_live_consumer_misses_nothing_under_concurrent_writes(app: TestApp) {
    const THREADS: i64 = 6;
    const SENDS: usize = 20;
    let mut live = stream_events(&app, 0, &[]).await;
    let mut writers = tokio::task::JoinSet::new();
    for n in 0..THREADS {
        let id = app
            .contact_thread(100 + n, 1000 + n, 2000 + n)
            .await
            .thread_id;
        let mut tutor = app.tutor(1000 + n);
        writers.spawn(async move {
            for i in 0..SENDS {
                tutor.say(id, &format!("{n}-{i}")).await;
            }
        });
    }
    writers.join_all().await;
    // Each thread: created; each send: the message and its sender's horizon.
    let expected = (THREADS as usize) * (1 + 2 * SENDS);
    let mut followed = Vec::new();
    while followed.len() < expected {
        followed.push(next(&mut live).await);
    }
    let mut replay = stream_events(&app, 0, &[]).await;
    let mut replayed = Vec::new();
    while replayed.len() < expected {
        replayed.push(next(&mut replay).await);
    }
    assert_ordered(&followed);
    let ids = |events: &[pb::Event]| {
        events
            .iter()
            .map(|e| (e.position, e.id.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&followed), ids(&replayed), "live and replay agree");
    let mut versions: std::collections::BTreeMap<i64, Vec<i64>> = Default::default();
    for event in followed.iter().filter(|e| e.thread_version > 0) {
        versions
            .entry(event.thread_id)
            .or_default()
            .push(event.thread_version);
    }
    for (thread, seen) in versions {
        assert_eq!(
            seen,
            (1..=2 * SENDS as i64).collect::<Vec<_>>(),
            "thread {thread}"
        );
    }
}

backend_suite!(
    every_change_is_one_event_in_commit_order,
    a_live_consumer_misses_nothing_under_concurrent_writes,
    a_consumer_resumes_after_its_position_and_filters_by_type,
    only_services_and_valid_requests,
    retention_trims_and_resuming_before_it_is_expired with |config: &mut chatd::config::ServeConfig| {
        config.events.retention = Duration::from_secs(1);
    },
    unread_reminders_come_once_per_spell_and_never_when_muted with |config: &mut chatd::config::ServeConfig| {
        config.events.unread_reminder_after = Duration::from_millis(300);
    },
    a_backlog_of_reminders_reaches_every_reader_once with |config: &mut chatd::config::ServeConfig| {
        // Long enough for most of the backlog to fall due in the same sweep, whose
        // rounds look through 7 threads each.
        config.events.unread_reminder_after = Duration::from_secs(2);
        config.events.unread_reminder_window = 7;
    },
);
