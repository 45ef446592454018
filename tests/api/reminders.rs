//! The unread reminder's rule as the specification remind_unread.sql is held to: random
//! sends, reads, reads undone, deletions, mutes and unmutes over a few threads, then
//! the reminders the server writes compared with what `rules::reminder_due` and
//! `rules::counts_as_unread` give for every participant, each reminder's unread count
//! and oldest unread message included. Each case is one unread spell: no message falls
//! due before its operations end (the test says so if the machine was too slow). The
//! rule across spells is `events::unread_reminders_come_once_per_spell_and_never_when_muted`.
//!
//! A last thread, created and written to after everything else, is the sentinel: its
//! reminder is due last and has the greatest key, so it comes in the round that reminds
//! everyone else due, after them. What came before it is compared whole: a reader
//! reminded who is not due, or not reminded who is, fails the case.
//! `CHATD_REMINDER_SEED=<n>` reruns a reported seed.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use chatd::grpc::pb::{self, event::Data};
use chatd::rules;

use crate::events::{next, stream_events};
use crate::helpers::{ChatClientExt, TestApp, mark_read};

/// Long enough that a case's operations end before its first message falls due.
const REMINDER_AFTER: Duration = Duration::from_secs(5);
const THREADS: i64 = 6;
const OPERATIONS: usize = 48;

/// What a reminder says: reader, thread, side, unread count, oldest unread message's
/// time (seconds, nanos), peer.
type Reminder = (i64, i64, i32, i64, (i64, i32), i64);

fn sent_at(message: &pb::Message) -> (i64, i32) {
    let at = message.created_at.expect("a message has its time");
    (at.seconds, at.nanos)
}

/// Thread `n`'s participants: (tutor, student).
fn pair(n: i64) -> (i64, i64) {
    (100 + n, 200 + n % 3)
}

async fn a_case_of_random_writes_reminds_exactly_whom_the_rule_names(app: TestApp) {
    let seed = std::env::var("CHATD_REMINDER_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut reminders = stream_events(&app, 0, &["chat.unread.reminder"]).await;
    let mut threads = Vec::new();
    for n in 0..THREADS {
        let (tutor, student) = pair(n);
        threads.push(app.contact_thread(700 + n, tutor, student).await.thread_id);
    }
    // Who has the thread muted now, by (thread, side): by the answers to mute and unmute.
    let mut muted: HashMap<(i64, i32), bool> = HashMap::new();
    let mut last_seq: HashMap<i64, i64> = HashMap::new();
    let mut steps = Vec::new();
    let mut first_send: Option<Instant> = None;
    for _ in 0..OPERATIONS {
        let n = rng.i64(0..THREADS);
        let thread = threads[n as usize];
        let (tutor, student) = pair(n);
        let side = if rng.bool() {
            pb::Side::Tutor
        } else {
            pb::Side::Student
        };
        let mut client = match side {
            pb::Side::Tutor => app.tutor(tutor),
            _ => app.student(student),
        };
        let seq = rng.i64(1..=last_seq.get(&thread).copied().unwrap_or(0).max(1));
        let outcome = match rng.u8(0..20) {
            0..=8 => {
                let sent = client.say(thread, "hello").await;
                first_send.get_or_insert_with(Instant::now);
                last_seq.insert(thread, sent.seq);
                format!("sent {}", sent.seq)
            }
            9..=11 => {
                let up_to = rng.bool().then_some(seq);
                let read = client.mark_read(mark_read(thread, up_to)).await;
                format!("read up to {up_to:?}: {}", read.is_ok())
            }
            12..=13 => {
                let request = pb::MarkUnreadRequest {
                    thread_id: thread,
                    from_seq: seq,
                };
                let undone = client.mark_unread(request).await;
                format!("unread from {seq}: {}", undone.is_ok())
            }
            14..=15 => {
                let request = pb::DeleteMessageRequest {
                    thread_id: thread,
                    seq,
                };
                let deleted = client.delete_message(request).await;
                format!("deleted {seq}: {}", deleted.is_ok())
            }
            16..=17 => {
                let request = pb::MuteThreadRequest {
                    thread_id: thread,
                    until: None,
                };
                let answered = client.mute_thread(request).await.is_ok();
                if answered {
                    muted.insert((thread, side as i32), true);
                }
                format!("muted: {answered}")
            }
            _ => {
                let request = pb::UnmuteThreadRequest { thread_id: thread };
                let answered = client.unmute_thread(request).await.is_ok();
                if answered {
                    muted.insert((thread, side as i32), false);
                }
                format!("unmuted: {answered}")
            }
        };
        steps.push(format!("thread {thread}, {side:?}: {outcome}"));
    }
    let (tutor, student) = (190, 290);
    let sentinel = app.contact_thread(799, tutor, student).await.thread_id;
    let last = app.tutor(tutor).say(sentinel, "the last message").await;
    let took = first_send.map_or(Duration::ZERO, |first| first.elapsed());
    assert!(
        took + Duration::from_secs(1) < REMINDER_AFTER,
        "the case's writes took {took:?}, within a second of the reminder delay {REMINDER_AFTER:?}, so \
         reminders may have come before its end: the machine is too loaded for this test"
    );
    let case = format!(
        "seed {seed} (CHATD_REMINDER_SEED reruns it):\n{}",
        steps.join("\n")
    );

    let mut expected = BTreeSet::new();
    for (n, &thread) in threads.iter().enumerate() {
        let (tutor, student) = pair(n as i64);
        let page = app
            .tutor(tutor)
            .list_messages(pb::ListMessagesRequest {
                thread_id: thread,
                limit: 100,
                ..Default::default()
            })
            .await
            .expect("ListMessages")
            .into_inner();
        let sides = [
            (pb::Side::Tutor, tutor, student, page.last_read_seq),
            (pb::Side::Student, student, tutor, page.peer_last_read_seq),
        ];
        for (side, reader, peer, horizon) in sides {
            let mut unread: Vec<&pb::Message> = page
                .messages
                .iter()
                .filter(|m| rules::counts_as_unread(m.seq, m.sender_id, m.deleted, reader, horizon))
                .collect();
            unread.sort_by_key(|m| m.seq);
            let is_muted = muted.get(&(thread, side as i32)).copied().unwrap_or(false);
            let due = rules::reminder_due(
                unread.iter().map(|m| sent_at(m)),
                &sent_at(&last),
                is_muted,
                None,
                horizon,
            );
            if let (true, Some(oldest)) = (due, unread.first()) {
                let count = unread.len() as i64;
                expected.insert((reader, thread, side as i32, count, sent_at(oldest), peer));
            }
        }
    }

    let mut reminded: BTreeSet<Reminder> = BTreeSet::new();
    loop {
        let event = next(&mut reminders).await;
        let Some(Data::UnreadReminder(r)) = event.data else {
            panic!("a reminder: {event:?}");
        };
        if r.thread_id == sentinel {
            assert_eq!((r.user_id, r.unread_count), (student, 1), "the sentinel's");
            break;
        }
        let at = r
            .oldest_unread_at
            .expect("the oldest unread message's time");
        let reminder = (
            r.user_id,
            r.thread_id,
            r.side,
            r.unread_count,
            (at.seconds, at.nanos),
            r.peer_id,
        );
        assert!(reminded.insert(reminder), "reminded twice: {r:?}\n{case}");
    }
    assert_eq!(
        reminded, expected,
        "the reminders written (left) against the rule's (right)\n{case}"
    );
}

backend_suite!(
    a_case_of_random_writes_reminds_exactly_whom_the_rule_names with |config: &mut chatd::config::ServeConfig| {
        config.events.unread_reminder_after = REMINDER_AFTER;
    },
);
