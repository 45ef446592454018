//! Every rule of chatd, stated once, as plain functions over `crate::model`'s nouns: the
//! ground floor of the house, beside `model`. It names nothing else of chatd, so every
//! layer above (storage, the domain, the transports) may call it.
//!
//! This module is the specification the rest is checked against. Storage decides each
//! write with these functions (SQLite's writer calls them; each PostgreSQL statement
//! says which one it implements in SQL, so that a concurrent change cannot slip between
//! check and write, in one round trip), and the model-based test (`tests/api/model`)
//! drives random operations through the real server on both backends, comparing every
//! answer and summary with a model built from these functions alone.
//!
//! - Membership: a user is in a thread, relation or inquiry on one side when that
//!   side's participant id is theirs. Anything else does not exist for them. The two
//!   participants are two users: a tutor is never their own student.
//! - Sides: a tutor token acts on the tutor side, a student token on the student side;
//!   service tokens take no side.
//! - Facts: an upsert applies when its version is newer than the stored one and names
//!   the same participants; one naming others is refused, one not newer changes nothing.
//! - Writability: a contact thread takes messages while its relation is ACTIVE, a
//!   negotiation thread while its inquiry is OPEN or ACCEPTED.
//! - Contact access: a tutor opens and writes a contact thread only with UNLOCKED
//!   contact access to that student. Students need none.
//! - Messages: only their sender edits or deletes them (a moderation service removes
//!   any); a deleted message stays as a tombstone (seq, sender, created_at kept, body
//!   gone) and cannot be edited; an edit obeys the rules of writing.
//! - Horizons: sending moves the sender's read horizon to the new message; MarkRead
//!   moves it forward to the requested seq, clamped to the thread's last seq, and
//!   never back; MarkUnread sets it just before one of the thread's newest 100
//!   messages, the one call that may move it back.
//! - Unread: a user's unread messages in a thread are those after their horizon, not
//!   sent by them, and not deleted.
//! - Mutes: a participant may mute a thread, until a time or until they unmute it;
//!   while muted, its unread messages leave their total for `muted_total`.
//! - The summary: a user's threads with unread messages, by the newest message not
//!   deleted (newest first), each with that message's preview and the mute; the total
//!   counts every unread message of threads not muted.
//! - Whose summary changes (its version is bumped in the same write, and caches,
//!   watchers and other replicas are told after commit): a participant's, whenever
//!   the line their summary shows for the thread changes, which is when their unread
//!   count changes, or the thread's last message or writability changes while they
//!   have unread messages there.
//! - The thread's log: every committed change a participant's window shows gets the
//!   thread's next version, in the same write: a message sent (and its sender's
//!   horizon moving to it), edited or deleted; a horizon moved by MarkRead or
//!   MarkUnread; a side's writability changing. A write that changes none of these
//!   (a read that leaves the horizon where it was, a delete of a tombstone, a mute)
//!   logs nothing.

use std::cmp::Ordering;

use crate::model::{
    ContactAccessState, EventKind, InquiryStatus, RelationStatus, Role, Side, ThreadKind,
};

/// How much of a message the unread summary shows, in characters.
pub const PREVIEW_CHARS: usize = 100;

/// How far back MarkUnread reaches: one of the thread's newest this many messages.
pub const MARK_UNREAD_WINDOW: i64 = 100;

/// The stored `muted_until_ms` of a mute that lasts until unmuted.
pub const MUTED_FOREVER_MS: i64 = i64::MAX;

/// Why a rule refuses an operation. The domain turns each into the error clients see,
/// with the ids of the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    RelationNotFound,
    RelationNotActive,
    InquiryNotFound,
    ThreadNotFound,
    ThreadNotWritable,
    ContactAccessLocked,
    MessageNotFound,
    NotMessageSender,
    MessageDeleted,
    MarkUnreadTooFar,
}

/// The two participants of a thread, relation or inquiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Participants {
    pub tutor_id: i64,
    pub student_id: i64,
}

impl Participants {
    /// The user on `side`.
    pub fn on(self, side: Side) -> i64 {
        match side {
            Side::Tutor => self.tutor_id,
            Side::Student => self.student_id,
        }
    }

    /// Membership: `user_id` is in it on `side`.
    pub fn includes(self, user_id: i64, side: Side) -> bool {
        self.on(side) == user_id
    }

    /// A fact pushed upstream names two different users: with one user on both sides,
    /// their own messages would count as unread for themselves.
    pub fn distinct(self) -> bool {
        self.tutor_id != self.student_id
    }
}

/// The side a role acts on; services take no side in a thread.
pub fn side_of(role: Role) -> Option<Side> {
    match role {
        Role::Tutor => Some(Side::Tutor),
        Role::Student => Some(Side::Student),
        Role::Service => None,
    }
}

/// What an upsert of a fact does, given the stored fact (its participants and version).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpsertOutcome {
    Applied,
    /// The stored version is as new or newer: nothing changed.
    Stale,
    /// The upsert names other participants than the stored fact: refused.
    ParticipantsChanged,
}

/// Facts: a newer version of the same participants applies; other participants are
/// refused whatever the version; anything else changes nothing.
pub fn upsert_outcome(
    stored: Option<(Participants, i64)>,
    pushed: Participants,
    version: i64,
) -> UpsertOutcome {
    match stored {
        None => UpsertOutcome::Applied,
        Some((participants, _)) if participants != pushed => UpsertOutcome::ParticipantsChanged,
        Some((_, stored_version)) if version > stored_version => UpsertOutcome::Applied,
        Some(_) => UpsertOutcome::Stale,
    }
}

impl RelationStatus {
    /// A contact thread takes messages while its relation is ACTIVE. EnsureThread on a
    /// relation asks the same of it.
    pub fn allows_messages(self) -> bool {
        self == RelationStatus::Active
    }
}

impl InquiryStatus {
    /// A negotiation thread takes messages while its inquiry is OPEN or ACCEPTED.
    pub fn allows_messages(self) -> bool {
        matches!(self, InquiryStatus::Open | InquiryStatus::Accepted)
    }
}

impl ContactAccessState {
    /// Only UNLOCKED access lets a tutor reach a student.
    pub fn lets_tutor_contact(self) -> bool {
        self == ContactAccessState::Unlocked
    }
}

/// The values of `all` that `rule` allows: how a rule over a few states is handed to
/// SQL as data (`= ANY(:unlocking)`).
pub fn allowing<T: Copy>(all: &[T], rule: impl Fn(T) -> bool) -> Vec<T> {
    all.iter().copied().filter(|value| rule(*value)).collect()
}

/// The contact access states that let a tutor write (`lets_tutor_contact`).
pub fn unlocking_states() -> Vec<ContactAccessState> {
    allowing(
        ContactAccessState::ALL,
        ContactAccessState::lets_tutor_contact,
    )
}

/// Whether a participant on `side` needs the tutor's contact access to a thread of
/// `kind`: tutors on contact threads do; students and negotiation threads do not.
pub fn needs_contact_access(side: Side, kind: ThreadKind) -> bool {
    side == Side::Tutor && kind == ThreadKind::Contact
}

/// Whether a tutor with `access` (none stored counts as LOCKED) may contact the student.
pub fn contact_allowed(access: Option<ContactAccessState>) -> bool {
    access.is_some_and(ContactAccessState::lets_tutor_contact)
}

/// EnsureThread on a relation: the caller is in it on their side, it is ACTIVE, and a
/// tutor has contact access; in that order, so a stranger learns nothing of its status.
pub fn may_open_relation_thread(
    caller: i64,
    side: Side,
    relation: Option<(Participants, RelationStatus)>,
    access: Option<ContactAccessState>,
) -> Result<(), Refusal> {
    let (participants, status) = relation
        .filter(|(participants, _)| participants.includes(caller, side))
        .ok_or(Refusal::RelationNotFound)?;
    let _ = participants;
    if !status.allows_messages() {
        return Err(Refusal::RelationNotActive);
    }
    if needs_contact_access(side, ThreadKind::Contact) && !contact_allowed(access) {
        return Err(Refusal::ContactAccessLocked);
    }
    Ok(())
}

/// EnsureThread on an inquiry: the caller is in it on their side. (Its status decides
/// only whether the thread takes messages.)
pub fn may_open_inquiry_thread(
    caller: i64,
    side: Side,
    inquiry: Option<Participants>,
) -> Result<(), Refusal> {
    match inquiry {
        Some(participants) if participants.includes(caller, side) => Ok(()),
        _ => Err(Refusal::InquiryNotFound),
    }
}

/// A thread as a write of one of its participants sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadView {
    pub kind: ThreadKind,
    pub participants: Participants,
    pub is_writable: bool,
    /// The tutor's contact access to the student (none stored: `None`).
    pub contact_access: Option<ContactAccessState>,
}

/// A thread exists for a caller only when they are in it on their side.
pub fn thread_for(
    caller: i64,
    side: Side,
    thread: Option<ThreadView>,
) -> Result<ThreadView, Refusal> {
    thread
        .filter(|thread| thread.participants.includes(caller, side))
        .ok_or(Refusal::ThreadNotFound)
}

/// Whether a participant on `side` may write in the thread now: it takes messages, and
/// a tutor of a contact thread has contact access.
pub fn may_write(side: Side, thread: &ThreadView) -> Result<(), Refusal> {
    if !thread.is_writable {
        return Err(Refusal::ThreadNotWritable);
    }
    if needs_contact_access(side, thread.kind) && !contact_allowed(thread.contact_access) {
        return Err(Refusal::ContactAccessLocked);
    }
    Ok(())
}

/// A message as the rules of editing and deleting see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageView {
    pub sender_id: i64,
    pub deleted: bool,
}

/// EditMessage: the message exists, the caller sent it, it is not deleted, and the
/// caller may write in the thread now (`may_write`), in that order.
pub fn may_edit(
    caller: i64,
    side: Side,
    thread: &ThreadView,
    message: Option<MessageView>,
) -> Result<(), Refusal> {
    let message = message.ok_or(Refusal::MessageNotFound)?;
    if message.sender_id != caller {
        return Err(Refusal::NotMessageSender);
    }
    if message.deleted {
        return Err(Refusal::MessageDeleted);
    }
    may_write(side, thread)
}

/// What SendMessage does for a participant: a key seen before answers the first
/// message (even where the thread no longer takes messages, so a retry of what was
/// sent is never refused); anything else is appended, if the caller may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendDecision {
    Replay,
    Append,
}

/// SendMessage, in order: the thread exists for the caller (`thread_for`), a key seen
/// before is a replay, then `may_write`.
pub fn send_decision(
    caller: i64,
    side: Side,
    thread: Option<ThreadView>,
    key_seen_before: bool,
) -> Result<SendDecision, Refusal> {
    let thread = thread_for(caller, side, thread)?;
    if key_seen_before {
        return Ok(SendDecision::Replay);
    }
    may_write(side, &thread)?;
    Ok(SendDecision::Append)
}

/// RemoveMessage (a moderation service): any message that exists, deleted or not.
pub fn may_remove(message: Option<MessageView>) -> Result<(), Refusal> {
    message.map(|_| ()).ok_or(Refusal::MessageNotFound)
}

/// DeleteMessage: the message exists and the caller sent it; writable or not, deleted
/// already or not (deleting again answers the same tombstone).
pub fn may_delete(caller: i64, message: Option<MessageView>) -> Result<(), Refusal> {
    match message {
        None => Err(Refusal::MessageNotFound),
        Some(message) if message.sender_id != caller => Err(Refusal::NotMessageSender),
        Some(_) => Ok(()),
    }
}

/// MarkUnread: `from_seq` is a message of the thread (a tombstone is one too) among
/// its newest `MARK_UNREAD_WINDOW`.
pub fn may_mark_unread(from_seq: i64, last_seq: i64) -> Result<(), Refusal> {
    if from_seq > last_seq {
        return Err(Refusal::MessageNotFound);
    }
    if from_seq <= last_seq - MARK_UNREAD_WINDOW {
        return Err(Refusal::MarkUnreadTooFar);
    }
    Ok(())
}

/// The horizon sending leaves its sender: their own new message, so sending reads
/// everything before it.
pub fn horizon_after_send(seq: i64) -> i64 {
    seq
}

/// The horizon MarkRead leaves: the requested seq (default: the last), clamped to the
/// thread's last seq, and never below the current horizon.
pub fn horizon_after_mark_read(current: i64, requested: Option<i64>, last_seq: i64) -> i64 {
    current.max(requested.unwrap_or(last_seq).min(last_seq))
}

/// The horizon MarkUnread leaves: just before `from_seq`, so it and the peer's
/// messages after it count as unread again.
pub fn horizon_after_mark_unread(from_seq: i64) -> i64 {
    from_seq - 1
}

/// Whether a message counts as unread for `reader` at `horizon`: it comes after the
/// horizon, someone else sent it, and it is not deleted. Storage keeps the sum of
/// this over a thread in a counter, adjusted by every write that changes it (a send,
/// a read, a delete, a mark-unread), and the model-based test holds the two equal.
pub fn counts_as_unread(
    seq: i64,
    sender_id: i64,
    deleted: bool,
    reader: i64,
    horizon: i64,
) -> bool {
    seq > horizon && sender_id != reader && !deleted
}

/// Whether a participant's thread is muted at `now_ms` (Unix ms): a mute that has not
/// ended. A mute ends by itself at its time, with no write.
pub fn is_muted(muted_until_ms: Option<i64>, now_ms: i64) -> bool {
    muted_until_ms.is_some_and(|until| until > now_ms)
}

/// Whether a participant is reminded of a thread now (`--unread-reminder-after`): a
/// message counts as unread for them (`counts_as_unread`) and was sent at or before
/// `due_before`, the thread is not muted for them, and they were not reminded at their
/// current horizon yet. One reminder per unread spell: a spell begins when the horizon
/// moves. The reminder names the oldest unread message and the unread count then.
/// remind_unread.sql applies it in one statement; the reminder model test holds it there.
pub fn reminder_due<T: PartialOrd>(
    unread_sent_at: impl IntoIterator<Item = T>,
    due_before: &T,
    muted: bool,
    reminded_at_horizon: Option<i64>,
    horizon: i64,
) -> bool {
    !muted
        && reminded_at_horizon != Some(horizon)
        && unread_sent_at
            .into_iter()
            .any(|sent_at| sent_at <= *due_before)
}

/// How a participant's mute shows at `now_ms`: `None` when not muted (never muted, or
/// its time has passed), `Some(None)` muted until unmuted, `Some(Some(ms))` muted until
/// that time. Summaries, MuteThread's answer and whose summary a mute changes all read
/// it from here.
pub fn mute_shown(muted_until_ms: Option<i64>, now_ms: i64) -> Option<Option<i64>> {
    muted_until_ms
        .filter(|_| is_muted(muted_until_ms, now_ms))
        .map(|until| (until != MUTED_FOREVER_MS).then_some(until))
}

/// Whether a mute or unmute changed the participant's summary: the thread has a line
/// there and its mute shows differently.
pub fn mute_changes(unread: i64, before: Option<i64>, after: Option<i64>, now_ms: i64) -> bool {
    participant_changed(
        unread,
        unread,
        mute_shown(before, now_ms) != mute_shown(after, now_ms),
    )
}

/// When a summary's mutes next end by themselves (Unix ms): the earliest mute time
/// still ahead among its threads with unread messages. The summary changes then, with
/// no write: caches, etags and streams must expire by it.
pub fn next_mute_end(
    muted_until_ms: impl IntoIterator<Item = Option<i64>>,
    now_ms: i64,
) -> Option<i64> {
    muted_until_ms
        .into_iter()
        .flatten()
        .filter(|until| *until > now_ms && *until != MUTED_FOREVER_MS)
        .min()
}

/// The start of a message that the unread summary shows.
pub fn preview(body: &str) -> String {
    body.chars().take(PREVIEW_CHARS).collect()
}

/// Whether a thread has a line in its participant's summary: they have unread messages.
pub fn in_summary(unread: i64) -> bool {
    unread > 0
}

/// Whether a line's unread messages count in the summary's `total` (else in its
/// `muted_total`).
pub fn counts_in_total(muted: bool) -> bool {
    !muted
}

/// The message a thread's line shows (its preview, time and sender): the newest one
/// not deleted. `None`: every message is deleted, or there is none.
pub fn last_visible<'m, M>(
    messages: impl DoubleEndedIterator<Item = &'m M>,
    deleted: impl Fn(&M) -> bool,
) -> Option<&'m M>
where
    M: 'm,
{
    messages.rev().find(|message| !deleted(message))
}

/// The order of a summary's lines: newest last message first, then the higher thread
/// id (storage: `ORDER BY last_message_at DESC, thread_id DESC`).
pub fn summary_order<T: Ord>(a: (T, i64), b: (T, i64)) -> Ordering {
    b.0.cmp(&a.0).then(b.1.cmp(&a.1))
}

/// Where a thread stands in its participant's inbox (ListThreads): at its last
/// visible message's time, or, with none, at its creation (storage:
/// `COALESCE(last_message_at, thread_created_at)`). The inbox is ordered by
/// `summary_order` over (position, thread_id): every thread, read or not.
pub fn inbox_position<T>(last_message_at: Option<T>, created_at: T) -> T {
    last_message_at.unwrap_or(created_at)
}

/// Whose summary a write changes: a participant's, when the line their summary shows
/// for the thread is not the same after as before (`None`: no line).
pub fn summary_changed<L: PartialEq>(before: Option<L>, after: Option<L>) -> bool {
    before != after
}

/// `summary_changed` for one participant of a write: their unread count in the thread
/// went from `unread_before` to `unread_after`, and the rest of the thread's line (its
/// last message, writability, their mute) changed or not. A thread without unread
/// messages has no line, so nothing else about it shows.
pub fn participant_changed(unread_before: i64, unread_after: i64, line_changed: bool) -> bool {
    summary_changed(
        in_summary(unread_before).then_some((unread_before, false)),
        in_summary(unread_after).then_some((unread_after, line_changed)),
    )
}

/// The summaries a new message changes: the peer's always (one more unread message,
/// a new last message), the sender's only when they had unread messages there, which
/// sending reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendChanges {
    pub peer: bool,
    pub sender: bool,
}

pub fn send_changes(sender_unread_before: i64) -> SendChanges {
    SendChanges {
        peer: true,
        sender: participant_changed(sender_unread_before, 0, true),
    }
}

/// Whether a thread's writability changing (its relation or inquiry moved) changed a
/// participant's summary: only where the thread has a line, as for any change of it.
pub fn writability_changes(unread: i64) -> bool {
    participant_changed(unread, unread, true)
}

/// Whether a read (MarkRead, MarkUnread) changed the reader's summary: only their
/// unread count in the thread moves.
pub fn read_changes(unread_before: i64, unread_after: i64) -> bool {
    participant_changed(unread_before, unread_after, false)
}

/// What a send adds to its thread's log, in order: the message, then its sender's
/// horizon moving to it (`horizon_after_send`), which always moves, since a new
/// message is after every horizon.
pub const SEND_LOGS: [EventKind; 2] = [EventKind::MessageCreated, EventKind::ThreadRead];

/// What a read that moved a horizon from `before` to `after` logs: nothing when it did
/// not move, `chat.thread.read` forward, `chat.thread.marked_unread` back.
pub fn read_logs(before: i64, after: i64) -> Option<EventKind> {
    match after.cmp(&before) {
        Ordering::Equal => None,
        Ordering::Greater => Some(EventKind::ThreadRead),
        Ordering::Less => Some(EventKind::ThreadMarkedUnread),
    }
}

/// Whether a participant on `side` may write in the thread (`may_write`), as their
/// window shows it: the composer is enabled exactly when a send would be allowed.
pub fn writable_for(side: Side, thread: &ThreadView) -> bool {
    may_write(side, thread).is_ok()
}

/// Whether a change of the tutor's contact access changes what a contact thread lets
/// its tutor do (`lets_tutor_contact`), and so is logged in each of their contact
/// threads (`None`: no access stored, which locks).
pub fn contact_access_logs(
    before: Option<ContactAccessState>,
    after: Option<ContactAccessState>,
) -> bool {
    contact_allowed(before) != contact_allowed(after)
}

#[cfg(test)]
mod tests;
