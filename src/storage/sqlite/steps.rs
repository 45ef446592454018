//! The steps SQLite's writes share: reading a thread and its participants as a write
//! sees them, counting, moving a horizon, showing a thread's newest message, bumping
//! summary versions. Each write (`storage/writes/`) puts them together in its own
//! order; with one writer, nothing runs between them.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::{RunQueryDsl, SqliteConnection};

use super::reads::{MessageRow, counts_as_unread};
use super::schema::{
    contact_access, events, messages, summary_versions, thread_participants, threads,
};
use crate::model::{ContactAccessState, EventKind, Message, Side, SummaryKey, ThreadKind};
use crate::rules::{self, MessageView};
use crate::storage::writes::ThreadFacts;

/// The current time, in SQLite's SQL, as RFC 3339 text like every stored timestamp.
pub(in crate::storage) const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

/// The time a write stamps, to the microsecond: what PostgreSQL keeps, so a time reads
/// the same from either backend and over gRPC (nanos) and REST (micros) alike.
pub(in crate::storage) fn now_micros() -> DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(6)
}

/// The thread's facts as a write sees them, and its last seq.
pub(in crate::storage) fn thread_facts(
    conn: &mut SqliteConnection,
    thread_id: i64,
) -> QueryResult<Option<(ThreadFacts, i64)>> {
    let row: Option<(i64, ThreadKind, i64, i64, bool)> = threads::table
        .find(thread_id)
        .select((
            threads::last_seq,
            threads::kind,
            threads::tutor_id,
            threads::student_id,
            threads::is_writable,
        ))
        .first(conn)
        .optional()?;
    Ok(
        row.map(|(last_seq, kind, tutor_id, student_id, is_writable)| {
            (
                ThreadFacts {
                    kind,
                    tutor_id,
                    student_id,
                    is_writable,
                    contact_access: None,
                },
                last_seq,
            )
        }),
    )
}

/// The tutor's contact access to the student of a thread, as a write sees it.
pub(in crate::storage) fn contact_access_of(
    conn: &mut SqliteConnection,
    facts: &ThreadFacts,
) -> QueryResult<Option<ContactAccessState>> {
    contact_access::table
        .find((facts.tutor_id, facts.student_id))
        .select(contact_access::state)
        .first::<ContactAccessState>(conn)
        .optional()
}

/// The participant row of `user_id` on `side` of a thread: horizon, unread count,
/// mute. `None` unless they are that participant (rules::thread_for, as a lookup).
pub(in crate::storage) fn participant(
    conn: &mut SqliteConnection,
    thread_id: i64,
    side: Side,
    user_id: i64,
) -> QueryResult<Option<(i64, i64, Option<i64>)>> {
    thread_participants::table
        .find((thread_id, side.as_str()))
        .filter(thread_participants::user_id.eq(user_id))
        .select((
            thread_participants::last_read_seq,
            thread_participants::unread_count,
            thread_participants::muted_until_ms,
        ))
        .first(conn)
        .optional()
}

/// The participant rows of a thread: user, side, horizon, unread count.
pub(in crate::storage) fn participants_of(
    conn: &mut SqliteConnection,
    thread_id: i64,
) -> QueryResult<Vec<(i64, Side, i64, i64)>> {
    thread_participants::table
        .filter(thread_participants::thread_id.eq(thread_id))
        .select((
            thread_participants::user_id,
            thread_participants::side,
            thread_participants::last_read_seq,
            thread_participants::unread_count,
        ))
        .load(conn)
}

/// `rules::counts_as_unread` summed over the thread's messages after `horizon`, for
/// `reader`: after it, from the peer, not deleted.
pub(in crate::storage) fn count_unread(
    conn: &mut SqliteConnection,
    thread_id: i64,
    reader: i64,
    horizon: i64,
) -> QueryResult<i64> {
    messages::table
        .filter(messages::thread_id.eq(thread_id))
        .filter(counts_as_unread(reader, horizon))
        .count()
        .get_result(conn)
}

/// A user's total on one side at `now_ms`: the unread messages of their threads that
/// are not muted (rules::counts_in_total).
pub(in crate::storage) fn total_of(
    conn: &mut SqliteConnection,
    user_id: i64,
    side: Side,
    now_ms: i64,
) -> QueryResult<i64> {
    let lines: Vec<(i64, Option<i64>)> = thread_participants::table
        .filter(thread_participants::user_id.eq(user_id))
        .filter(thread_participants::side.eq(side.as_str()))
        .filter(thread_participants::unread_count.gt(0))
        .select((
            thread_participants::unread_count,
            thread_participants::muted_until_ms,
        ))
        .load(conn)?;
    Ok(lines
        .into_iter()
        .filter(|(_, muted_until)| rules::counts_in_total(rules::is_muted(*muted_until, now_ms)))
        .map(|(unread, _)| unread)
        .sum())
}

/// Sets a reader's horizon and unread count, and says whether their summary changed
/// (rules::read_changes), bumping its version when it did.
pub(in crate::storage) fn set_horizon(
    conn: &mut SqliteConnection,
    thread_id: i64,
    side: Side,
    user_id: i64,
    (horizon_before, unread_before): (i64, i64),
    (horizon, unread): (i64, i64),
) -> QueryResult<bool> {
    if (horizon, unread) != (horizon_before, unread_before) {
        diesel::update(thread_participants::table.find((thread_id, side.as_str())))
            .set((
                thread_participants::last_read_seq.eq(horizon),
                thread_participants::unread_count.eq(unread),
            ))
            .execute(conn)?;
    }
    let changed = rules::read_changes(unread_before, unread);
    if changed {
        bump_versions(conn, &[SummaryKey::new(user_id, side)])?;
    }
    Ok(changed)
}

/// Bumps the versions of `keys`' summaries, creating them at 1: one prepared upsert
/// per key (the single writer cannot deadlock, so order does not matter here).
pub(in crate::storage) fn bump_versions(
    conn: &mut SqliteConnection,
    keys: &[SummaryKey],
) -> QueryResult<()> {
    for key in keys {
        diesel::insert_into(summary_versions::table)
            .values((
                summary_versions::user_id.eq(key.user_id),
                summary_versions::side.eq(key.side.as_str()),
                summary_versions::version.eq(1),
            ))
            .on_conflict((summary_versions::user_id, summary_versions::side))
            .do_update()
            .set(summary_versions::version.eq(summary_versions::version + 1))
            .execute(conn)?;
    }
    Ok(())
}

/// One change of a thread's messages or horizons, as its log keeps it (see the
/// migration `thread_log`; writability changes are logged by `upsert_fact`'s SQL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::storage) struct LogEntry {
    pub kind: EventKind,
    pub side: Option<Side>,
    pub seq: i64,
    pub flag: bool,
    /// A horizon's unread count after it moved.
    pub unread: Option<i64>,
}

impl LogEntry {
    /// A change of the message at `seq`.
    pub(in crate::storage) fn message(kind: EventKind, seq: i64) -> Self {
        Self {
            kind,
            side: None,
            seq,
            flag: false,
            unread: None,
        }
    }

    /// A deletion, by moderation or not.
    pub(in crate::storage) fn deleted(seq: i64, by_moderation: bool) -> Self {
        Self {
            flag: by_moderation,
            ..Self::message(EventKind::MessageDeleted, seq)
        }
    }

    /// `side`'s horizon moved to `horizon`, leaving `unread` messages unread there.
    pub(in crate::storage) fn horizon(
        kind: EventKind,
        side: Side,
        horizon: i64,
        unread: i64,
    ) -> Self {
        Self {
            side: Some(side),
            unread: Some(unread),
            ..Self::message(kind, horizon)
        }
    }
}

/// Takes the outbox's next `count` positions and returns the last. SQLite's one writer
/// commits its transactions in the order it runs them, so a position given here, in
/// the write's own transaction, is already in commit order: no row is numbered twice
/// (PostgreSQL's writes leave it to the sequencer, `writes/outbox.rs`).
pub(in crate::storage) fn next_positions(
    conn: &mut SqliteConnection,
    count: i64,
) -> QueryResult<i64> {
    use super::schema::event_sequence;
    diesel::update(event_sequence::table.find(1))
        .set(event_sequence::last_position.eq(event_sequence::last_position + count))
        .returning(event_sequence::last_position)
        .get_result(conn)
}

/// Appends `entries` to a thread's log as its next versions, in order, and returns the
/// version the thread is at after them.
pub(in crate::storage) fn log(
    conn: &mut SqliteConnection,
    thread_id: i64,
    entries: &[LogEntry],
) -> QueryResult<i64> {
    let count = entries.len() as i64;
    let version: i64 = diesel::update(threads::table.find(thread_id))
        .set(threads::version.eq(threads::version + count))
        .returning(threads::version)
        .get_result(conn)?;
    let now = now_micros();
    let last_position = next_positions(conn, count)?;
    let positions = last_position - count + 1..;
    for ((at, entry), position) in (version - count + 1..).zip(entries).zip(positions) {
        diesel::insert_into(events::table)
            .values((
                events::position.eq(position),
                events::kind.eq(entry.kind.as_str()),
                events::thread_id.eq(thread_id),
                events::thread_version.eq(at),
                events::side.eq(entry.side.map(Side::as_str)),
                events::seq.eq(entry.seq),
                events::flag.eq(entry.flag),
                events::amount.eq(entry.unread),
                events::created_at.eq(now),
            ))
            .execute(conn)?;
    }
    Ok(version)
}

/// An event for the services around chatd that is no change of a thread's window (it
/// takes no version): created, muted, unmuted, erased, reminded.
#[derive(Debug, Clone, Copy)]
pub(in crate::storage) struct Note {
    pub kind: EventKind,
    /// 0 for events of no thread.
    pub thread_id: i64,
    pub side: Option<Side>,
    pub user_id: Option<i64>,
    pub seq: i64,
    pub amount: Option<i64>,
}

impl Note {
    pub(in crate::storage) fn of_thread(kind: EventKind, thread_id: i64) -> Self {
        Self {
            kind,
            thread_id,
            side: None,
            user_id: None,
            seq: 0,
            amount: None,
        }
    }
}

/// Appends an event of no version to the log.
pub(in crate::storage) fn note(conn: &mut SqliteConnection, note: Note) -> QueryResult<()> {
    let position = next_positions(conn, 1)?;
    diesel::insert_into(events::table)
        .values((
            events::position.eq(position),
            events::kind.eq(note.kind.as_str()),
            events::thread_id.eq(note.thread_id),
            events::side.eq(note.side.map(Side::as_str)),
            events::user_id.eq(note.user_id),
            events::seq.eq(note.seq),
            events::amount.eq(note.amount),
            events::created_at.eq(now_micros()),
        ))
        .execute(conn)?;
    Ok(())
}

pub(in crate::storage) fn bump_revision(
    conn: &mut SqliteConnection,
    thread_id: i64,
) -> QueryResult<()> {
    diesel::update(threads::table.find(thread_id))
        .set(threads::revision.eq(threads::revision + 1))
        .execute(conn)?;
    Ok(())
}

/// The message a sender sent to a thread under an idempotency key, if any.
pub(in crate::storage) fn message_by_key(
    conn: &mut SqliteConnection,
    thread_id: i64,
    sender_id: i64,
    key: &str,
) -> QueryResult<Option<Message>> {
    messages::table
        .filter(messages::thread_id.eq(thread_id))
        .filter(messages::sender_id.eq(sender_id))
        .filter(messages::client_message_id.eq(key))
        .select(MessageRow::as_select())
        .first(conn)
        .optional()
        .map(|found| found.map(Message::from))
}

/// The message of a thread at `seq`, as stored.
pub(in crate::storage) fn message_at(
    conn: &mut SqliteConnection,
    thread_id: i64,
    seq: i64,
) -> QueryResult<Option<Message>> {
    messages::table
        .filter(messages::thread_id.eq(thread_id))
        .filter(messages::seq.eq(seq))
        .select(MessageRow::as_select())
        .first(conn)
        .optional()
        .map(|found| found.map(Message::from))
}

pub(in crate::storage) fn message_view(message: &Message) -> MessageView {
    MessageView {
        sender_id: message.sender_id,
        deleted: message.deleted(),
    }
}

/// What a thread's line shows of its newest message not deleted (rules::last_visible):
/// its seq (0: none), time, preview and sender.
pub(in crate::storage) type ShownMessage = (i64, Option<DateTime<Utc>>, String, i64);

/// Sets the line every participant row of a thread shows, and the thread's own copy.
pub(in crate::storage) fn show(
    conn: &mut SqliteConnection,
    thread_id: i64,
    shown: &ShownMessage,
) -> QueryResult<()> {
    let (seq, at, preview, sender) = shown;
    diesel::update(threads::table.find(thread_id))
        .set((
            threads::last_visible_seq.eq(seq),
            threads::last_message_at.eq(at),
            threads::last_message_preview.eq(preview),
            threads::last_message_sender_id.eq(sender),
        ))
        .execute(conn)?;
    diesel::update(thread_participants::table.filter(thread_participants::thread_id.eq(thread_id)))
        .set((
            thread_participants::last_message_at.eq(at),
            thread_participants::last_message_preview.eq(preview),
            thread_participants::last_message_sender_id.eq(sender),
        ))
        .execute(conn)?;
    Ok(())
}

/// rules::last_visible among the thread's messages before `seq`.
pub(in crate::storage) fn last_visible_before(
    conn: &mut SqliteConnection,
    thread_id: i64,
    seq: i64,
) -> QueryResult<ShownMessage> {
    let newest: Option<(i64, DateTime<Utc>, String, i64)> = messages::table
        .filter(messages::thread_id.eq(thread_id))
        .filter(messages::seq.lt(seq))
        .filter(messages::deleted_at.is_null())
        .order(messages::seq.desc())
        .select((
            messages::seq,
            messages::created_at,
            messages::body,
            messages::sender_id,
        ))
        .first(conn)
        .optional()?;
    Ok(
        newest.map_or((0, None, String::new(), 0), |(seq, at, body, sender)| {
            (seq, Some(at), rules::preview(&body), sender)
        }),
    )
}

/// After a write changed a thread's messages, brings its participants along: when
/// messages of `sender` went away (their seqs: `gone`), each recipient's unread count
/// drops by those after their horizon (rules::counts_as_unread); the summaries that
/// changed, as rules::participant_changed says with `line_changed`, are bumped and
/// reported.
pub(in crate::storage) fn follow_messages(
    conn: &mut SqliteConnection,
    thread_id: i64,
    sender: i64,
    gone: &[i64],
    line_changed: bool,
) -> QueryResult<Vec<SummaryKey>> {
    let mut changed = Vec::new();
    for (user_id, side, horizon, unread) in participants_of(conn, thread_id)? {
        let dropped = gone
            .iter()
            .filter(|seq| rules::counts_as_unread(**seq, sender, false, user_id, horizon))
            .count() as i64;
        if dropped > 0 {
            diesel::update(thread_participants::table.find((thread_id, side.as_str())))
                .set(thread_participants::unread_count.eq(unread - dropped))
                .execute(conn)?;
        }
        if rules::participant_changed(unread, unread - dropped, line_changed) {
            changed.push(SummaryKey::new(user_id, side));
        }
    }
    bump_versions(conn, &changed)?;
    Ok(changed)
}
