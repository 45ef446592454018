//! The domain's one error type, and the stable reason each variant carries to clients.
//! Which gRPC code and HTTP status a reason travels with is `crate::status`'s table.

crate::model::named_enum!(
    /// The upper-case reasons clients switch on (and localize); stable across releases.
    Reason {
        InvalidArgument => "INVALID_ARGUMENT",
        TokenMissing => "TOKEN_MISSING",
        TokenExpired => "TOKEN_EXPIRED",
        TokenInvalid => "TOKEN_INVALID",
        TicketInvalid => "TICKET_INVALID",
        RoleNotAllowed => "ROLE_NOT_ALLOWED",
        RelationNotFound => "RELATION_NOT_FOUND",
        RelationNotActive => "RELATION_NOT_ACTIVE",
        ContactAccessLocked => "CONTACT_ACCESS_LOCKED",
        InquiryNotFound => "INQUIRY_NOT_FOUND",
        ThreadNotFound => "THREAD_NOT_FOUND",
        ThreadNotWritable => "THREAD_NOT_WRITABLE",
        ParticipantsImmutable => "PARTICIPANTS_IMMUTABLE",
        MessageNotFound => "MESSAGE_NOT_FOUND",
        NotMessageSender => "NOT_MESSAGE_SENDER",
        MessageDeleted => "MESSAGE_DELETED",
        MarkUnreadTooFar => "MARK_UNREAD_TOO_FAR",
        RateLimited => "RATE_LIMITED",
        TooManyStreams => "TOO_MANY_STREAMS",
        StreamTooSlow => "STREAM_TOO_SLOW",
        EventsExpired => "EVENTS_EXPIRED",
        DatabaseUnavailable => "DATABASE_UNAVAILABLE",
        StorageFull => "STORAGE_FULL",
        Internal => "INTERNAL",
    }
);

/// Everything a chatd operation can refuse or fail with. Each variant's doc names the
/// `ErrorInfo.reason` clients see; `crate::status` gives its gRPC code and HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// `INVALID_ARGUMENT`: a request field is missing or out of range.
    #[error("{field}: {problem}")]
    InvalidArgument {
        field: &'static str,
        problem: String,
    },
    /// `TOKEN_MISSING`.
    #[error("missing bearer token: send `authorization: Bearer <JWT>`")]
    TokenMissing,
    /// `TOKEN_EXPIRED`.
    #[error("the bearer token has expired: mint a new one")]
    TokenExpired,
    /// `TOKEN_INVALID`: malformed, badly signed or with wrong claims.
    #[error("invalid bearer token: {0}")]
    TokenInvalid(String),
    /// `TICKET_INVALID`: a stream ticket that is unknown, used already or expired.
    #[error(
        "the stream ticket is unknown, used already or expired: a ticket opens one stream \
         within {ttl_seconds} s of being minted; mint a new one"
    )]
    TicketInvalid { ttl_seconds: u64 },
    /// `ROLE_NOT_ALLOWED`: a correctly signed token whose role may not call this
    /// service, including a role chatd does not know. The caller is known; logging in
    /// again would not help, so this is not UNAUTHENTICATED.
    #[error("role {role:?} may not call {service}")]
    RoleNotAllowed { role: String, service: &'static str },
    /// `RELATION_NOT_FOUND`: no such relation, or the caller is not in it.
    #[error("relation {0} not found")]
    RelationNotFound(i64),
    /// `RELATION_NOT_ACTIVE`.
    #[error("relation {0} is not active")]
    RelationNotActive(i64),
    /// `CONTACT_ACCESS_LOCKED`: the tutor has no unlocked contact access.
    #[error("contact access to student {student_id} is not unlocked for this tutor")]
    ContactAccessLocked { student_id: i64 },
    /// `INQUIRY_NOT_FOUND`: no such inquiry, or the caller is not in it.
    #[error("inquiry {0} not found")]
    InquiryNotFound(i64),
    /// `THREAD_NOT_FOUND`: no such thread, or the caller is not in it.
    #[error("thread {0} not found")]
    ThreadNotFound(i64),
    /// `THREAD_NOT_WRITABLE`: its relation or inquiry no longer allows messages.
    #[error("thread {0} is not writable")]
    ThreadNotWritable(i64),
    /// `PARTICIPANTS_IMMUTABLE`: an upsert tried to change who is in a fact.
    #[error("the tutor_id/student_id of {entity} {id} cannot change")]
    ParticipantsImmutable { entity: &'static str, id: i64 },
    /// `MESSAGE_NOT_FOUND`: no message with that seq in the thread.
    #[error("thread {thread_id} has no message {seq}")]
    MessageNotFound { thread_id: i64, seq: i64 },
    /// `NOT_MESSAGE_SENDER`: only a message's sender may edit or delete it.
    #[error("message {seq} was sent by the other participant: only its sender may change it")]
    NotMessageSender { seq: i64 },
    /// `MESSAGE_DELETED`: a deleted message cannot be edited.
    #[error("message {seq} is deleted and cannot be edited")]
    MessageDeleted { seq: i64 },
    /// `MARK_UNREAD_TOO_FAR`: MarkUnread reaches back over the newest 100 messages only.
    #[error(
        "from_seq {from_seq} is too far back: mark unread from one of the newest {window} \
         messages (from_seq above {oldest_allowed})"
    )]
    MarkUnreadTooFar {
        from_seq: i64,
        window: i64,
        oldest_allowed: i64,
    },
    /// `RATE_LIMITED`: the caller writes faster than the limit per user; retry after
    /// `retry_after`.
    #[error("too many messages too fast: retry in {} ms", retry_after.as_millis().max(1))]
    RateLimited { retry_after: std::time::Duration },
    /// `TOO_MANY_STREAMS`: the caller (or the server) has as many streams open (summary
    /// and thread streams together) as allowed.
    #[error("too many streams {scope} (at most {limit}): close one and retry")]
    TooManyStreams { limit: usize, scope: &'static str },
    /// `STREAM_TOO_SLOW`: a thread stream's reader left its buffer full for
    /// `--watch-stall-timeout`; it resumes with the last version it received.
    #[error(
        "this stream's reader left {buffered} events untaken for too long and the stream \
         was ended: reconnect with {cursor} set to the last one received (nothing is lost)"
    )]
    StreamTooSlow {
        buffered: usize,
        /// The request field a reader resumes with.
        cursor: &'static str,
    },
    /// `EVENTS_EXPIRED`: StreamEvents from a position retention has trimmed past.
    #[error(
        "the events after position {after_position} are no longer kept (--events-retention \
         trimmed up to {trimmed_through}): resume from {trimmed_through}, or 0 for the oldest kept, \
         knowing that the events between were missed"
    )]
    EventsExpired {
        after_position: i64,
        trimmed_through: i64,
    },
    /// `DATABASE_UNAVAILABLE`: the database cannot be reached; retry later.
    #[error("the database is unavailable, retry later")]
    Unavailable(String),
    /// `STORAGE_FULL`: the database has no room for the write; reads still work. Not
    /// transient: it lasts until the operator frees disk space.
    #[error(
        "the database has no room left to store this: writes fail until its operator frees \
         disk space (reads still work)"
    )]
    StorageFull(String),
    /// `INTERNAL`: a bug or corrupt data. Details are logged, never sent.
    #[error("internal error")]
    Internal(String),
}

impl DomainError {
    /// Builds an `InvalidArgument` naming the offending field.
    pub fn invalid(field: &'static str, problem: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field,
            problem: problem.into(),
        }
    }

    pub fn reason(&self) -> Reason {
        match self {
            Self::InvalidArgument { .. } => Reason::InvalidArgument,
            Self::TokenMissing => Reason::TokenMissing,
            Self::TokenExpired => Reason::TokenExpired,
            Self::TokenInvalid(_) => Reason::TokenInvalid,
            Self::TicketInvalid { .. } => Reason::TicketInvalid,
            Self::RoleNotAllowed { .. } => Reason::RoleNotAllowed,
            Self::RelationNotFound(_) => Reason::RelationNotFound,
            Self::RelationNotActive(_) => Reason::RelationNotActive,
            Self::ContactAccessLocked { .. } => Reason::ContactAccessLocked,
            Self::InquiryNotFound(_) => Reason::InquiryNotFound,
            Self::ThreadNotFound(_) => Reason::ThreadNotFound,
            Self::ThreadNotWritable(_) => Reason::ThreadNotWritable,
            Self::ParticipantsImmutable { .. } => Reason::ParticipantsImmutable,
            Self::MessageNotFound { .. } => Reason::MessageNotFound,
            Self::NotMessageSender { .. } => Reason::NotMessageSender,
            Self::MessageDeleted { .. } => Reason::MessageDeleted,
            Self::MarkUnreadTooFar { .. } => Reason::MarkUnreadTooFar,
            Self::RateLimited { .. } => Reason::RateLimited,
            Self::TooManyStreams { .. } => Reason::TooManyStreams,
            Self::StreamTooSlow { .. } => Reason::StreamTooSlow,
            Self::EventsExpired { .. } => Reason::EventsExpired,
            Self::Unavailable(_) => Reason::DatabaseUnavailable,
            Self::StorageFull(_) => Reason::StorageFull,
            Self::Internal(_) => Reason::Internal,
        }
    }

    /// The request field an `InvalidArgument` is about.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Self::InvalidArgument { field, .. } => Some(field),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip_by_name() {
        for &reason in Reason::ALL {
            assert_eq!(Reason::parse(reason.as_str()), Some(reason));
        }
        assert_eq!(Reason::parse("NOT_A_REASON"), None);
    }
}
