//! What storage reads and writes, typed: sides, kinds and statuses cross this boundary
//! as `crate::model` enums, never as strings, and a stored name this build does not
//! know fails the read instead of reaching a rule.

use chrono::{DateTime, Utc};
use diesel::backend::Backend;
use diesel::deserialize::{self, FromSql, FromStaticSqlRow, Queryable};
use diesel::sql_types::Text;

use crate::domain::rules::{self, MessageView, Participants, ThreadView};
use crate::model::{
    ContactAccessState, InquiryStatus, Message, RelationStatus, Side, SummaryKey, Thread,
    ThreadKind, ThreadUnread,
};

/// Reads the model's enums from their stored names, on either backend.
macro_rules! stored_as_text {
    ($($ty:ident),* $(,)?) => {$(
        impl<DB> FromSql<Text, DB> for $ty
        where
            DB: Backend,
            String: FromSql<Text, DB>,
        {
            fn from_sql(bytes: DB::RawValue<'_>) -> deserialize::Result<Self> {
                let text = String::from_sql(bytes)?;
                $ty::parse(&text).ok_or_else(|| {
                    format!(concat!("unknown stored ", stringify!($ty), " {:?}"), text).into()
                })
            }
        }

        impl<DB> Queryable<Text, DB> for $ty
        where
            DB: Backend,
            Self: FromSql<Text, DB>,
        {
            type Row = Self;

            fn build(row: Self) -> deserialize::Result<Self> {
                Ok(row)
            }
        }
    )*};
}

stored_as_text!(
    Side,
    ThreadKind,
    RelationStatus,
    InquiryStatus,
    ContactAccessState
);

/// Reads a `crate::model` record from a row of its columns, in field order, on either
/// backend.
macro_rules! queryable_record {
    ($record:ident { $($field:ident: $ty:ty),+ $(,)? }) => {
        impl<ST, DB> Queryable<ST, DB> for $record
        where
            DB: Backend,
            ($($ty,)+): FromStaticSqlRow<ST, DB>,
        {
            type Row = ($($ty,)+);

            fn build(row: Self::Row) -> deserialize::Result<Self> {
                let ($($field,)+) = row;
                Ok(Self { $($field),+ })
            }
        }
    };
}

queryable_record!(Thread {
    thread_id: i64,
    kind: ThreadKind,
    relation_id: Option<i64>,
    inquiry_id: Option<i64>,
    tutor_id: i64,
    student_id: i64,
    is_writable: bool,
    created_at: DateTime<Utc>,
});

/// A line of the unread summary as stored: the mute as its raw time (Unix ms), which
/// only the time of reading turns into "muted" (`UnreadRow::line`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadRow {
    pub thread_id: i64,
    pub kind: ThreadKind,
    pub relation_id: Option<i64>,
    pub inquiry_id: Option<i64>,
    pub tutor_id: i64,
    pub student_id: i64,
    pub unread_count: i64,
    pub last_message_at: Option<DateTime<Utc>>,
    pub last_message_preview: String,
    pub last_message_sender_id: i64,
    pub is_writable: bool,
    pub muted_until_ms: Option<i64>,
}

queryable_record!(UnreadRow {
    thread_id: i64,
    kind: ThreadKind,
    relation_id: Option<i64>,
    inquiry_id: Option<i64>,
    tutor_id: i64,
    student_id: i64,
    unread_count: i64,
    last_message_at: Option<DateTime<Utc>>,
    last_message_preview: String,
    last_message_sender_id: i64,
    is_writable: bool,
    muted_until_ms: Option<i64>,
});

impl UnreadRow {
    /// The line as the summary shows it at `now_ms` (`rules::is_muted`).
    pub fn line(self, now_ms: i64) -> ThreadUnread {
        let muted = rules::is_muted(self.muted_until_ms, now_ms);
        ThreadUnread {
            thread_id: self.thread_id,
            kind: self.kind,
            relation_id: self.relation_id,
            inquiry_id: self.inquiry_id,
            tutor_id: self.tutor_id,
            student_id: self.student_id,
            unread_count: self.unread_count,
            last_message_at: self.last_message_at,
            last_message_preview: self.last_message_preview,
            last_message_sender_id: self.last_message_sender_id,
            is_writable: self.is_writable,
            muted,
            muted_until: self
                .muted_until_ms
                .filter(|until| muted && *until != rules::MUTED_FOREVER_MS)
                .and_then(DateTime::from_timestamp_millis),
        }
    }
}

queryable_record!(Message {
    message_id: i64,
    thread_id: i64,
    seq: i64,
    sender_id: i64,
    body: String,
    created_at: DateTime<Utc>,
    client_message_id: Option<String>,
    edited_at: Option<DateTime<Utc>>,
    deleted_at: Option<DateTime<Utc>>,
});

/// A page of a user's unread summary.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UnreadPage {
    /// Newest last message first, at most the asked limit.
    pub rows: Vec<ThreadUnread>,
    /// Unread messages of every thread of the user not muted, not only the page's.
    pub total: i64,
    /// Unread messages of the user's muted threads.
    pub muted_total: i64,
    /// When one of the user's mutes next ends by itself (Unix ms), over every thread
    /// with unread messages (`rules::next_mute_end`): the page is good until then.
    pub changes_at: Option<i64>,
    /// The summary's version, read in the same statement as the page; `None` when the
    /// page is empty (the statement had no row to carry it).
    pub version: Option<i64>,
}

/// A relation or an inquiry as stored: who is in it, its status, the owner's version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Queryable)]
pub struct Fact<S> {
    pub tutor_id: i64,
    pub student_id: i64,
    pub status: S,
    pub version: i64,
}

/// Everything EnsureThread reads about a relation, in one round trip: the relation,
/// the tutor's contact access to the student, and the thread if it exists.
#[derive(Debug, Clone, PartialEq)]
pub struct RelationTarget {
    pub fact: Fact<RelationStatus>,
    pub contact_access: Option<ContactAccessState>,
    pub thread: Option<Thread>,
}

/// Everything EnsureThread reads about an inquiry, in one round trip.
#[derive(Debug, Clone, PartialEq)]
pub struct InquiryTarget {
    pub fact: Fact<InquiryStatus>,
    pub thread: Option<Thread>,
}

/// What a thread is created from, with the statuses of that fact that let it take
/// messages (the domain's writability rule, which the create reads under the fact
/// row's lock, so a status change cannot slip between the read and the insert).
#[derive(Debug, Clone, PartialEq)]
pub enum NewThread {
    Relation {
        relation_id: i64,
        writable: Vec<RelationStatus>,
    },
    Inquiry {
        inquiry_id: i64,
        writable: Vec<InquiryStatus>,
    },
}

/// A message to append.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub thread_id: i64,
    pub side: Side,
    pub sender_id: i64,
    pub body: String,
    pub preview: String,
    pub client_message_id: Option<String>,
    /// The contact access states that let a tutor write a contact thread.
    pub unlocking: Vec<ContactAccessState>,
}

/// What the thread looked like to a write, under its lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadFacts {
    pub kind: ThreadKind,
    pub tutor_id: i64,
    pub student_id: i64,
    pub is_writable: bool,
    /// The tutor's contact access to the student, read (and locked) only when the
    /// sender is the tutor of a contact thread.
    pub contact_access: Option<ContactAccessState>,
}

impl ThreadFacts {
    /// The thread as the rules read it.
    pub fn view(&self) -> ThreadView {
        ThreadView {
            kind: self.kind,
            participants: Participants {
                tutor_id: self.tutor_id,
                student_id: self.student_id,
            },
            is_writable: self.is_writable,
            contact_access: self.contact_access,
        }
    }
}

/// What one SendMessage write did, and what it saw: the domain reads its rules' answer
/// (not found, not writable, locked) from these facts.
#[derive(Debug, Clone, PartialEq)]
pub struct SendAttempt {
    /// `None`: no such thread.
    pub thread: Option<ThreadFacts>,
    /// The message appended by this write.
    pub sent: Option<Message>,
    /// The first message with the same `client_message_id` (a retry).
    pub replayed: Option<Message>,
    /// The summaries this write changed (empty unless `sent`).
    pub changed: Vec<SummaryKey>,
}

/// A message to edit: the editor's side and id, and the new body with its preview.
#[derive(Debug, Clone)]
pub struct MessageEdit {
    pub thread_id: i64,
    pub seq: i64,
    pub side: Side,
    pub editor_id: i64,
    pub body: String,
    pub preview: String,
    /// The contact access states that let a tutor write a contact thread.
    pub unlocking: Vec<ContactAccessState>,
}

/// Who deletes a message: its sender (on their side), or a moderation service, which
/// may remove any message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleter {
    Sender { user_id: i64, side: Side },
    Moderator,
}

/// What one write to a message (an edit or a delete) did, and what it saw.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageAttempt {
    /// `None`: no such thread.
    pub thread: Option<ThreadFacts>,
    /// The message as the write found it (`None`: no message with that seq).
    pub found: Option<MessageView>,
    /// The message as it is after the write: changed by it, or as it was (a tombstone
    /// deleted before answers as itself).
    pub message: Option<Message>,
    /// Whether this write changed it.
    pub changed_message: bool,
    /// The summaries this write changed.
    pub changed: Vec<SummaryKey>,
}

/// What one MarkUnread write did, and what it saw.
#[derive(Debug, Clone, PartialEq)]
pub struct MarkUnreadAttempt {
    /// `None`: no such thread.
    pub thread: Option<ThreadFacts>,
    /// The thread's last seq, which the rule of how far back is about.
    pub last_seq: i64,
    /// `None` when the caller is not the participant, or the rule refused.
    pub state: Option<ReadStateRow>,
}

/// A participant's mute as a write left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MuteRow {
    pub muted_until_ms: Option<i64>,
    /// The participant's new total (threads not muted).
    pub total: i64,
    /// Whether their summary changed.
    pub changed: bool,
}

/// What one mute or unmute did, and what it saw.
#[derive(Debug, Clone, PartialEq)]
pub struct MuteAttempt {
    /// `None`: no such thread.
    pub thread: Option<ThreadFacts>,
    /// `None` when the caller is not the thread's participant on that side.
    pub state: Option<MuteRow>,
}

/// What one batch of an erasure did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ErasedBatch {
    /// Messages this batch turned into tombstones (they were not deleted before).
    pub erased: i64,
    /// Messages the batch wiped (tombstones before included); fewer than the batch's
    /// limit when the thread has no more.
    pub wiped: i64,
    /// The highest seq the batch reached: the next batch starts after it.
    pub last_seq: i64,
    /// The summaries this batch changed.
    pub changed: Vec<SummaryKey>,
}

/// What one MarkRead write did, and what it saw.
#[derive(Debug, Clone, PartialEq)]
pub struct MarkReadAttempt {
    /// `None`: no such thread.
    pub thread: Option<ThreadFacts>,
    /// `None` when the caller is not the thread's participant on that side.
    pub state: Option<ReadStateRow>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadStateRow {
    pub last_read_seq: i64,
    pub unread_count: i64,
    pub total: i64,
    /// Whether the reader's summary changed (its unread count in this thread did).
    pub changed: bool,
}

/// A thread's two read horizons and whose they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Horizons {
    pub tutor_id: i64,
    pub student_id: i64,
    pub tutor_read_seq: i64,
    pub student_read_seq: i64,
}

/// A page of messages, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct MessagePageRows {
    pub messages: Vec<Message>,
    pub has_more: bool,
}

/// A stream ticket to keep: the hash of its secret, whom it was minted for, until when
/// it opens a stream, and when that stream's access ends (both Unix ms).
#[derive(Debug, Clone)]
pub struct NewTicket {
    pub ticket_hash: String,
    pub user_id: i64,
    pub role: &'static str,
    pub expires_at: i64,
    pub access_ends_at: i64,
}

/// A redeemed ticket: the user id, the role's name and when access ends (Unix ms).
pub type RedeemedTicket = (i64, String, i64);

/// A thread's place in its participant's inbox (`rules::inbox_position`, then the
/// thread id): where the next page of ListThreads starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboxCursor {
    pub position: DateTime<Utc>,
    pub thread_id: i64,
}
