//! Concurrency is part of correctness: one thread per relation, gap-free seqs, and
//! counters that always agree with a recount, however calls interleave.

use futures::future::join_all;

use chatd::grpc::pb::{ContactAccessState, RelationStatus, SendMessageRequest};
use chatd::model::Side;

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
    for side in [Side::Tutor, Side::Student] {
        let (counter, recount) = app
            .store
            .recount_unread(thread.thread_id, side)
            .await
            .unwrap();
        assert_eq!(counter, recount, "{side:?}'s counter matches the messages");
    }
    let tutor_total = app.tutor(42).unread().await.total;
    let (tutor_counter, _) = app
        .store
        .recount_unread(thread.thread_id, Side::Tutor)
        .await
        .unwrap();
    assert_eq!(tutor_total, tutor_counter);
}

/// Writability is checked inside the write: once UpsertRelation(ARCHIVED) has answered,
/// the thread holds exactly the messages it will ever hold. Senders that raced it were
/// either appended before the archive or refused THREAD_NOT_WRITABLE, never appended
/// after it (a check made before the write's transaction would let some slip in).
async fn no_message_is_accepted_after_the_archive(app: TestApp) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tonic::Code;
    use tonic_types::StatusExt;

    let thread = app.contact_thread(10, 42, 7).await;
    let accepted = Arc::new(AtomicUsize::new(0));
    let (warm, mut warmed) = tokio::sync::watch::channel(0usize);
    let senders: Vec<_> = (0..12)
        .map(|n| {
            let mut client = if n % 2 == 0 {
                app.tutor(42)
            } else {
                app.student(7)
            };
            let (accepted, warm) = (accepted.clone(), warm.clone());
            tokio::spawn(async move {
                loop {
                    match client.send_message(send(thread.thread_id, "racing")).await {
                        Ok(_) => {
                            let total = accepted.fetch_add(1, Ordering::SeqCst) + 1;
                            warm.send_replace(total);
                        }
                        Err(status) => {
                            let reason = status.get_details_error_info().map(|info| info.reason);
                            assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                            assert_eq!(reason.as_deref(), Some("THREAD_NOT_WRITABLE"));
                            return;
                        }
                    }
                }
            })
        })
        .collect();
    // Archive while the senders are busy: after a few dozen messages went in.
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        warmed.wait_for(|total| *total >= 24),
    )
    .await
    .expect("senders append messages")
    .expect("senders run");
    app.relation(10, 42, 7, RelationStatus::Archived, 2).await;
    let newest = |app: &TestApp| {
        let mut reader = app.tutor(42);
        async move {
            reader
                .list_messages(chatd::grpc::pb::ListMessagesRequest {
                    thread_id: thread.thread_id,
                    before_seq: None,
                    after_seq: None,
                    limit: 1,
                })
                .await
                .expect("list")
                .into_inner()
                .messages
                .first()
                .map_or(0, |message| message.seq)
        }
    };
    let at_archive = newest(&app).await;
    let ended = tokio::time::timeout(std::time::Duration::from_secs(20), join_all(senders))
        .await
        .expect("every sender is refused within 20 s of the archive");
    for sender in ended {
        sender.expect("every sender ends refused");
    }
    assert_eq!(
        newest(&app).await,
        at_archive,
        "messages were appended after the archive answered"
    );
    assert_eq!(
        accepted.load(Ordering::SeqCst) as i64,
        at_archive,
        "every acknowledged message is stored, and only those"
    );
}

/// Two users send, edit, delete, mark read and mark unread in one thread at once, from
/// many tasks: afterwards every counter equals a recount from the messages (after the
/// horizon, from the peer, not deleted), every total equals its counters, and each
/// participant's line shows the newest message not deleted. The refusals the rules
/// give under such a race (another's message, deleted already) are the only errors.
async fn counters_hold_under_concurrent_edits_deletes_and_mark_unread(app: TestApp) {
    use chatd::grpc::pb::{DeleteMessageRequest, EditMessageRequest, MarkUnreadRequest};
    use tonic::Code;
    let thread = app.contact_thread(10, 42, 7).await;
    for n in 0..10 {
        let mut client = if n % 2 == 0 {
            app.tutor(42)
        } else {
            app.student(7)
        };
        client.say(thread.thread_id, &format!("seed {n}")).await;
    }
    // Seqs 1, 3, 5, … are the tutor's seeds, 2, 4, … the student's; later ones vary.
    let tasks = (0..120).map(|n: i64| {
        let tutor = n % 2 == 0;
        let mut client = if tutor { app.tutor(42) } else { app.student(7) };
        let seq = 1 + (n * 7) % 16;
        let thread_id = thread.thread_id;
        async move {
            let outcome = match n % 6 {
                0 | 1 => client
                    .send_message(send(thread_id, &format!("m{n}")))
                    .await
                    .map(drop),
                2 => client
                    .edit_message(EditMessageRequest {
                        thread_id,
                        seq,
                        body: format!("edited {n}"),
                    })
                    .await
                    .map(drop),
                3 => client
                    .delete_message(DeleteMessageRequest { thread_id, seq })
                    .await
                    .map(drop),
                4 => client.mark_read(mark_read(thread_id, None)).await.map(drop),
                _ => client
                    .mark_unread(MarkUnreadRequest {
                        thread_id,
                        from_seq: seq,
                    })
                    .await
                    .map(drop),
            };
            match outcome {
                Ok(()) => Ok(()),
                Err(status) => match status.code() {
                    // Another's message, or one deleted meanwhile, or (mark unread) one
                    // not sent yet: what the rules say in such a race.
                    Code::PermissionDenied | Code::FailedPrecondition | Code::NotFound => Ok(()),
                    _ => Err(status),
                },
            }
        }
    });
    let outcomes = join_all(tasks).await;
    let failures: Vec<_> = outcomes.into_iter().filter_map(Result::err).collect();
    assert!(failures.is_empty(), "{failures:?}");
    let listed = app
        .tutor(42)
        .list_messages(chatd::grpc::pb::ListMessagesRequest {
            thread_id: thread.thread_id,
            before_seq: None,
            after_seq: None,
            limit: 200,
        })
        .await
        .unwrap()
        .into_inner()
        .messages;
    let newest_visible = listed.iter().find(|m| !m.deleted);
    for (side, mut client) in [
        (Side::Tutor, app.tutor(42)),
        (Side::Student, app.student(7)),
    ] {
        let (counter, recount) = app
            .store
            .recount_unread(thread.thread_id, side)
            .await
            .unwrap();
        assert_eq!(counter, recount, "{side:?}'s counter matches the messages");
        let summary = client.unread().await;
        assert_eq!(summary.total, counter, "{side:?}'s total");
        if let Some(line) = summary.threads.first() {
            let newest = newest_visible.expect("an unread message is a visible one");
            assert_eq!(
                (
                    line.last_message_preview.as_str(),
                    line.last_message_sender_id
                ),
                (newest.body.as_str(), newest.sender_id),
                "{side:?}'s line shows the newest message not deleted"
            );
        }
    }
}

/// Mutes and unmutes of both participants racing sends in the same thread: every call
/// succeeds (no deadlock between a mute's locks and a send's, answered INTERNAL and
/// losing the send), none waits a second for one, and every acknowledged send is stored.
async fn mutes_racing_sends_neither_deadlock_nor_lose_a_send(app: TestApp) {
    use chatd::grpc::pb::{MuteThreadRequest, UnmuteThreadRequest};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    let thread = app.contact_thread(10, 42, 7).await;
    let thread_id = thread.thread_id;
    let sending = std::sync::Arc::new(AtomicBool::new(true));
    let slowest = |calls: &[Duration]| calls.iter().max().copied().unwrap_or_default();
    let senders = (0..4).map(|n| {
        let mut client = if n % 2 == 0 {
            app.tutor(42)
        } else {
            app.student(7)
        };
        async move {
            let mut acknowledged = Vec::new();
            let mut took = Vec::new();
            for m in 0..60 {
                let started = Instant::now();
                let sent = client
                    .send_message(send(thread_id, &format!("sender {n} message {m}")))
                    .await
                    .unwrap_or_else(|status| panic!("send {n}/{m} failed: {status:?}"));
                took.push(started.elapsed());
                acknowledged.push(sent.into_inner().message.expect("a message").seq);
            }
            (acknowledged, took)
        }
    });
    let muters = [(42, true), (7, false)].map(|(user, tutor)| {
        let mut client = if tutor {
            app.tutor(user)
        } else {
            app.student(user)
        };
        let sending = sending.clone();
        async move {
            let mut took = Vec::new();
            while sending.load(Ordering::Relaxed) {
                let started = Instant::now();
                client
                    .mute_thread(MuteThreadRequest {
                        thread_id,
                        until: None,
                    })
                    .await
                    .unwrap_or_else(|status| panic!("mute failed: {status:?}"));
                client
                    .unmute_thread(UnmuteThreadRequest { thread_id })
                    .await
                    .unwrap_or_else(|status| panic!("unmute failed: {status:?}"));
                took.push(started.elapsed() / 2);
            }
            took
        }
    });
    let sends = async {
        let done = join_all(senders).await;
        sending.store(false, Ordering::Relaxed);
        done
    };
    let (sends, mutes) = tokio::join!(sends, join_all(muters));
    let mut stored: Vec<i64> = sends.iter().flat_map(|(seqs, _)| seqs.clone()).collect();
    stored.sort_unstable();
    assert_eq!(
        stored,
        (1..=240).collect::<Vec<_>>(),
        "every send acknowledged once"
    );
    let page = app
        .tutor(42)
        .list_messages(chatd::grpc::pb::ListMessagesRequest {
            thread_id,
            after_seq: Some(0),
            limit: 200,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        page.has_more && page.messages.len() == 200,
        "every acknowledged send stored"
    );
    let sends_slowest = sends
        .iter()
        .map(|(_, took)| slowest(took))
        .max()
        .unwrap_or_default();
    let mutes_slowest = mutes
        .iter()
        .map(|took| slowest(took))
        .max()
        .unwrap_or_default();
    assert!(
        sends_slowest < Duration::from_secs(1) && mutes_slowest < Duration::from_secs(1),
        "no call waits on a deadlock: slowest send {sends_slowest:?}, mute {mutes_slowest:?}"
    );
    assert!(
        mutes.iter().all(|took| !took.is_empty()),
        "both participants muted meanwhile"
    );
}

backend_suite!(
    mutes_racing_sends_neither_deadlock_nor_lose_a_send,
    counters_hold_under_concurrent_edits_deletes_and_mark_unread,
    no_message_is_accepted_after_the_archive,
    concurrent_ensure_creates_one_thread,
    concurrent_sends_get_gap_free_seqs,
    concurrent_retries_send_once,
    counters_agree_with_recount_under_concurrency,
);
