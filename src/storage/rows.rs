//! What storage reads, typed: sides, kinds and statuses cross this boundary as
//! `crate::model` enums, never as strings, and a stored name this build does not know
//! fails the read instead of reaching a rule. (Each write's request and outcome are in
//! its own file under `writes/`; rows with one spelling per backend, in `reads.rs`.)

use chrono::{DateTime, Utc};
use diesel::backend::Backend;
use diesel::deserialize::{self, FromSql, Queryable};
use diesel::sql_types::Text;

use crate::model::{
    ContactAccessState, EventKind, InquiryStatus, Message, RelationStatus, Side, Thread,
    ThreadKind, ThreadUnread,
};
use crate::storage::writes::ThreadFacts;

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
    ContactAccessState,
    EventKind
);

/// A thread as a window opening on it first shows it (read in one statement, so it is
/// exactly the thread at `version`), and how far back its log reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadWindow {
    /// With the tutor's contact access, whichever side reads it.
    pub facts: ThreadFacts,
    pub version: i64,
    pub last_seq: i64,
    pub tutor_read_seq: i64,
    pub student_read_seq: i64,
    /// The oldest version the log still holds (`None`: it holds none).
    pub oldest_logged: Option<i64>,
}

/// One change of a thread, as its log keeps it: a message change carries the message
/// as it is now (a log keeps no text of its own).
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedChange {
    pub version: i64,
    pub kind: EventKind,
    /// Horizon changes: whose.
    pub side: Option<Side>,
    /// Message changes: the message's seq; horizon changes: the horizon.
    pub seq: i64,
    /// Deletions: by moderation; writability changes: the thread's own writability.
    pub flag: bool,
    /// Writability changes: the tutor's contact access then.
    pub contact_access: Option<ContactAccessState>,
    pub message: Option<Message>,
}

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

/// One event of the outbox, numbered: what the services around chatd receive, with the
/// thread it is of and, for a message's event (or a reminder: the oldest unread), the
/// message as it is now (the log keeps no text of its own).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub position: i64,
    /// Stable: assigned once, at insert.
    pub event_id: i64,
    pub kind: EventKind,
    /// 0 for events of no thread.
    pub thread_id: i64,
    /// `None` for events that are no change of the thread's windows.
    pub thread_version: Option<i64>,
    pub side: Option<Side>,
    pub user_id: Option<i64>,
    pub seq: i64,
    pub flag: bool,
    pub contact_access: Option<ContactAccessState>,
    pub amount: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub thread: Option<Thread>,
    pub message: Option<Message>,
}

/// How far the outbox reaches: the newest position given, and the newest one retention
/// trimmed (resuming before it is EVENTS_EXPIRED).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EventBounds {
    pub last_position: i64,
    pub trimmed_through: i64,
}
