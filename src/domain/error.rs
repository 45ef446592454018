//! The domain's one error type, and the stable reason each variant carries to clients.

/// What kind of failure an error is, independent of any transport. The gRPC layer maps
/// it to a status code and the gateway maps that status code to HTTP, in one place each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidArgument,
    Unauthenticated,
    PermissionDenied,
    NotFound,
    FailedPrecondition,
    ResourceExhausted,
    Unavailable,
    Internal,
}

/// Everything a chatd operation can refuse or fail with. Each variant's doc names the
/// kind and the `ErrorInfo.reason` that clients see.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// InvalidArgument, `INVALID_ARGUMENT`: a request field is missing or out of range.
    #[error("{field}: {problem}")]
    InvalidArgument {
        field: &'static str,
        problem: String,
    },
    /// Unauthenticated, `TOKEN_MISSING`.
    #[error("missing bearer token: send `authorization: Bearer <JWT>`")]
    TokenMissing,
    /// Unauthenticated, `TOKEN_EXPIRED`.
    #[error("the bearer token has expired: mint a new one")]
    TokenExpired,
    /// Unauthenticated, `TOKEN_INVALID`: malformed, badly signed or with wrong claims.
    #[error("invalid bearer token: {0}")]
    TokenInvalid(String),
    /// PermissionDenied, `ROLE_NOT_ALLOWED`: a valid token whose role may not call this service.
    #[error("role {role} may not call {service}")]
    RoleNotAllowed {
        role: &'static str,
        service: &'static str,
    },
    /// NotFound, `RELATION_NOT_FOUND`: no such relation, or the caller is not in it.
    #[error("relation {0} not found")]
    RelationNotFound(i64),
    /// FailedPrecondition, `RELATION_NOT_ACTIVE`.
    #[error("relation {0} is not active")]
    RelationNotActive(i64),
    /// PermissionDenied, `CONTACT_ACCESS_LOCKED`: the tutor has no unlocked contact access.
    #[error("contact access to student {student_id} is not unlocked for this tutor")]
    ContactAccessLocked { student_id: i64 },
    /// NotFound, `INQUIRY_NOT_FOUND`: no such inquiry, or the caller is not in it.
    #[error("inquiry {0} not found")]
    InquiryNotFound(i64),
    /// NotFound, `THREAD_NOT_FOUND`: no such thread, or the caller is not in it.
    #[error("thread {0} not found")]
    ThreadNotFound(i64),
    /// FailedPrecondition, `THREAD_NOT_WRITABLE`: its relation or inquiry no longer allows messages.
    #[error("thread {0} is not writable")]
    ThreadNotWritable(i64),
    /// FailedPrecondition, `PARTICIPANTS_IMMUTABLE`: an upsert tried to change who is in a fact.
    #[error("the tutor_id/student_id of {entity} {id} cannot change")]
    ParticipantsImmutable { entity: &'static str, id: i64 },
    /// ResourceExhausted, `TOO_MANY_STREAMS`: the caller (or the server) has as many
    /// summary streams open as allowed.
    #[error("too many unread summary streams {scope} (at most {limit}): close one and retry")]
    TooManyStreams { limit: usize, scope: &'static str },
    /// Unavailable, `DATABASE_UNAVAILABLE`: the database cannot be reached; retry later.
    #[error("the database is unavailable, retry later")]
    Unavailable(String),
    /// Internal, `INTERNAL`: a bug or corrupt data. Details are logged, never sent.
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

    /// The upper-case reason clients switch on (and localize); stable across releases.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidArgument { .. } => "INVALID_ARGUMENT",
            Self::TokenMissing => "TOKEN_MISSING",
            Self::TokenExpired => "TOKEN_EXPIRED",
            Self::TokenInvalid(_) => "TOKEN_INVALID",
            Self::RoleNotAllowed { .. } => "ROLE_NOT_ALLOWED",
            Self::RelationNotFound(_) => "RELATION_NOT_FOUND",
            Self::RelationNotActive(_) => "RELATION_NOT_ACTIVE",
            Self::ContactAccessLocked { .. } => "CONTACT_ACCESS_LOCKED",
            Self::InquiryNotFound(_) => "INQUIRY_NOT_FOUND",
            Self::ThreadNotFound(_) => "THREAD_NOT_FOUND",
            Self::ThreadNotWritable(_) => "THREAD_NOT_WRITABLE",
            Self::ParticipantsImmutable { .. } => "PARTICIPANTS_IMMUTABLE",
            Self::TooManyStreams { .. } => "TOO_MANY_STREAMS",
            Self::Unavailable(_) => "DATABASE_UNAVAILABLE",
            Self::Internal(_) => "INTERNAL",
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidArgument { .. } => ErrorKind::InvalidArgument,
            Self::TokenMissing | Self::TokenExpired | Self::TokenInvalid(_) => {
                ErrorKind::Unauthenticated
            }
            Self::RoleNotAllowed { .. } | Self::ContactAccessLocked { .. } => {
                ErrorKind::PermissionDenied
            }
            Self::RelationNotFound(_) | Self::InquiryNotFound(_) | Self::ThreadNotFound(_) => {
                ErrorKind::NotFound
            }
            Self::RelationNotActive(_)
            | Self::ThreadNotWritable(_)
            | Self::ParticipantsImmutable { .. } => ErrorKind::FailedPrecondition,
            Self::TooManyStreams { .. } => ErrorKind::ResourceExhausted,
            Self::Unavailable(_) => ErrorKind::Unavailable,
            Self::Internal(_) => ErrorKind::Internal,
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
