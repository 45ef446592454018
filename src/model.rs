//! The nouns of chatd that every layer names: roles, sides, thread kinds, the statuses of the
//! facts upstream services push, the key of a user's unread summary, and the records
//! storage reads and the domain hands out (threads, summary lines, messages).
//!
//! Plain values with their stored names and nothing else. The rules about them (which
//! status lets a thread take messages, who is a participant) live in `rules.rs`;
//! this module sits below every other, so storage can keep rows typed without naming
//! the domain.

use chrono::{DateTime, Utc};

/// Declares an enum with the lower- or upper-case name it is stored and sent under:
/// `ALL` its values, `as_str` the name, `parse` the name back.
macro_rules! named_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vdoc])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$(Self::$variant),+];

            /// The name it is stored and sent under.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }

            /// Reads a stored name back; `None` for a name this build does not know.
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some(Self::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// Other modules declare their named enums (reasons, roles) with the same macro.
pub(crate) use named_enum;

/// The largest id chatd accepts anywhere (2^53 − 1): ids reach browsers as JSON numbers,
/// and JavaScript keeps integers exact only up to this, so a larger one would be rounded
/// to another user's or thread's id without a word.
pub const MAX_ID: i64 = (1 << 53) - 1;

/// A number written the one canonical way ("4", never "+4", "04" or " 4"), so one id has
/// one spelling wherever a client writes it: a token's `sub`, a path, a query.
pub fn canonical_number<T: std::str::FromStr + ToString>(text: &str) -> Option<T> {
    text.parse::<T>()
        .ok()
        .filter(|value| value.to_string() == text)
}

/// Declares a number that names one kind of thing, so that one cannot be passed where
/// another is wanted: a call taking a thread, a user and a seq does not compile with two
/// of them swapped. Records read from storage keep plain numbers; calls take these.
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub i64);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

id_type!(
    /// A thread's id.
    ThreadId
);
id_type!(
    /// A user's id: the `sub` of their tokens, the participant ids of facts.
    UserId
);
id_type!(
    /// A message's place in its thread: 1, 2, 3, … with no gaps.
    Seq
);

named_enum!(
    /// The role claim of a token: tutors and students call ChatService, upstream
    /// services (`service`) call SyncService.
    Role { Tutor => "tutor", Student => "student", Service => "service" }
);

named_enum!(
    /// A participant's side of a thread. A user who is a tutor in one relation and a
    /// student in another has two separate summaries, one per side.
    Side { Tutor => "tutor", Student => "student" }
);

impl Side {
    /// The other participant's side.
    pub fn peer(self) -> Side {
        match self {
            Side::Tutor => Side::Student,
            Side::Student => Side::Tutor,
        }
    }
}

named_enum!(
    /// What a thread was opened from.
    ThreadKind { Negotiation => "negotiation", Contact => "contact" }
);
named_enum!(
    /// The lifecycle of a tutor–student relation.
    RelationStatus { Pending => "PENDING", Active => "ACTIVE", Archived => "ARCHIVED" }
);
named_enum!(
    /// Whether a tutor may see (and so chat with) a student's contacts.
    ContactAccessState { Locked => "LOCKED", Unlocked => "UNLOCKED", Revoked => "REVOKED" }
);
named_enum!(
    /// The lifecycle of a student's inquiry to a tutor.
    InquiryStatus { Open => "OPEN", Accepted => "ACCEPTED", Declined => "DECLINED", Closed => "CLOSED" }
);

named_enum!(
    /// What a change of a thread was, as its log (`events`) stores it: the names the
    /// services around chatd receive.
    EventKind {
        MessageCreated => "chat.message.created",
        MessageEdited => "chat.message.edited",
        /// Deleted by its sender, removed by moderation, or erased with its sender.
        MessageDeleted => "chat.message.deleted",
        /// A participant's horizon moved forward (MarkRead, or their own send).
        ThreadRead => "chat.thread.read",
        /// A participant's horizon moved back (MarkUnread).
        ThreadMarkedUnread => "chat.thread.marked_unread",
        /// Whether a participant may write changed (a relation's or inquiry's status,
        /// or the tutor's contact access).
        WritabilityChanged => "chat.thread.writability_changed",
        /// A thread was opened (EnsureThread created it). No version: its windows start at 0.
        ThreadCreated => "chat.thread.created",
        /// A participant muted the thread (private to them: no version).
        ThreadMuted => "chat.thread.muted",
        /// A participant unmuted it.
        ThreadUnmuted => "chat.thread.unmuted",
        /// A user was erased (EraseUser); of no thread.
        UserErased => "chat.user.erased",
        /// A message to a participant stayed unread for `--unread-reminder-after`.
        UnreadReminder => "chat.unread.reminder"
    }
);

impl EventKind {
    /// Whether the kind is a change of a thread its windows follow (it takes the
    /// thread's next version); the others are for the services around chatd only.
    pub fn is_versioned(self) -> bool {
        matches!(
            self,
            EventKind::MessageCreated
                | EventKind::MessageEdited
                | EventKind::MessageDeleted
                | EventKind::ThreadRead
                | EventKind::ThreadMarkedUnread
                | EventKind::WritabilityChanged
        )
    }
}

/// Whose unread summary: one user on one side. Writes report the keys they changed;
/// caches, watchers and other replicas are told by key. Keys sort by user, then side:
/// writes that bump several summary versions take their rows in that order, so no two
/// writes can wait on each other in a cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SummaryKey {
    pub user_id: i64,
    pub side: Side,
}

impl SummaryKey {
    pub fn new(user_id: i64, side: Side) -> Self {
        Self { user_id, side }
    }
}

/// A thread as its participants see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Thread {
    pub thread_id: i64,
    pub kind: ThreadKind,
    pub relation_id: Option<i64>,
    pub inquiry_id: Option<i64>,
    pub tutor_id: i64,
    pub student_id: i64,
    pub is_writable: bool,
    pub created_at: DateTime<Utc>,
}

/// One line of a user's unread summary: a thread with unread messages.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ThreadUnread {
    pub thread_id: i64,
    pub kind: ThreadKind,
    pub relation_id: Option<i64>,
    pub inquiry_id: Option<i64>,
    pub tutor_id: i64,
    pub student_id: i64,
    pub unread_count: i64,
    /// The newest message not deleted; `None` when there is none.
    pub last_message_at: Option<DateTime<Utc>>,
    pub last_message_preview: String,
    pub last_message_sender_id: i64,
    pub is_writable: bool,
    /// Whether the summary's owner had muted it when it was read.
    pub muted: bool,
    /// When that mute ends by itself; `None` when not muted, or muted until unmuted.
    pub muted_until: Option<DateTime<Utc>>,
}

/// A message as stored and as its thread's participants read it.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub message_id: i64,
    pub thread_id: i64,
    pub seq: i64,
    pub sender_id: i64,
    pub body: String,
    pub created_at: DateTime<Utc>,
    pub client_message_id: Option<String>,
    pub edited_at: Option<DateTime<Utc>>,
    /// Set on a tombstone: the message was deleted (its body is empty).
    pub deleted_at: Option<DateTime<Utc>>,
}

impl Message {
    pub fn deleted(&self) -> bool {
        self.deleted_at.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for side in Side::ALL {
            assert_eq!(Side::parse(side.as_str()), Some(*side));
        }
        for status in InquiryStatus::ALL {
            assert_eq!(InquiryStatus::parse(status.as_str()), Some(*status));
        }
        assert_eq!(RelationStatus::parse("active"), None, "names are exact");
    }

    #[test]
    fn keys_sort_by_user_then_side() {
        let mut keys = [
            SummaryKey::new(9, Side::Tutor),
            SummaryKey::new(1, Side::Student),
            SummaryKey::new(1, Side::Tutor),
        ];
        keys.sort();
        assert_eq!(
            keys,
            [
                SummaryKey::new(1, Side::Tutor),
                SummaryKey::new(1, Side::Student),
                SummaryKey::new(9, Side::Tutor),
            ]
        );
    }
}

/// Which page of a thread's messages to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessagesFrom {
    /// The newest, newest first.
    Newest,
    /// Those before a seq, newest first (paging back through history).
    Before(i64),
    /// Those after a seq, oldest first (catching up after a reconnect).
    After(i64),
}
