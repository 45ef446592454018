//! The one place a `DomainError` becomes a `tonic::Status`: the code from its kind and a
//! google.rpc.ErrorInfo carrying its reason (plus a BadRequest naming the bad field).

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::{DomainError, ErrorKind};

/// The `ErrorInfo.domain` of every chatd error.
pub const ERROR_DOMAIN: &str = "chatd.chat.v1";

pub fn code_of(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::Unauthenticated => Code::Unauthenticated,
        ErrorKind::PermissionDenied => Code::PermissionDenied,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::ResourceExhausted => Code::ResourceExhausted,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::Internal => Code::Internal,
    }
}

impl From<DomainError> for Status {
    fn from(error: DomainError) -> Self {
        // Internal details stay in the log: clients get the generic message only.
        match &error {
            DomainError::Internal(detail) => tracing::error!(%detail, "internal error"),
            DomainError::Unavailable(detail) => tracing::warn!(%detail, "database unavailable"),
            _ => {}
        }
        let mut details = ErrorDetails::with_error_info(
            error.reason(),
            ERROR_DOMAIN,
            error
                .field()
                .map(|field| ("field".to_owned(), field.to_owned()))
                .into_iter()
                .collect::<HashMap<_, _>>(),
        );
        if let Some(field) = error.field() {
            details.add_bad_request_violation(field, error.to_string());
        }
        Status::with_error_details(code_of(error.kind()), error.to_string(), details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins the whole table: every reason with its gRPC code.
    #[test]
    fn every_error_has_its_code_and_reason() {
        let table = [
            (
                DomainError::invalid("body", "empty"),
                Code::InvalidArgument,
                "INVALID_ARGUMENT",
            ),
            (
                DomainError::TokenMissing,
                Code::Unauthenticated,
                "TOKEN_MISSING",
            ),
            (
                DomainError::TokenExpired,
                Code::Unauthenticated,
                "TOKEN_EXPIRED",
            ),
            (
                DomainError::TokenInvalid("x".into()),
                Code::Unauthenticated,
                "TOKEN_INVALID",
            ),
            (
                DomainError::RoleNotAllowed {
                    role: "tutor",
                    service: "s",
                },
                Code::PermissionDenied,
                "ROLE_NOT_ALLOWED",
            ),
            (
                DomainError::RelationNotFound(1),
                Code::NotFound,
                "RELATION_NOT_FOUND",
            ),
            (
                DomainError::RelationNotActive(1),
                Code::FailedPrecondition,
                "RELATION_NOT_ACTIVE",
            ),
            (
                DomainError::ContactAccessLocked { student_id: 1 },
                Code::PermissionDenied,
                "CONTACT_ACCESS_LOCKED",
            ),
            (
                DomainError::InquiryNotFound(1),
                Code::NotFound,
                "INQUIRY_NOT_FOUND",
            ),
            (
                DomainError::ThreadNotFound(1),
                Code::NotFound,
                "THREAD_NOT_FOUND",
            ),
            (
                DomainError::ThreadNotWritable(1),
                Code::FailedPrecondition,
                "THREAD_NOT_WRITABLE",
            ),
            (
                DomainError::ParticipantsImmutable {
                    entity: "relation",
                    id: 1,
                },
                Code::FailedPrecondition,
                "PARTICIPANTS_IMMUTABLE",
            ),
            (
                DomainError::Unavailable("down".into()),
                Code::Unavailable,
                "DATABASE_UNAVAILABLE",
            ),
            (
                DomainError::Internal("bug".into()),
                Code::Internal,
                "INTERNAL",
            ),
        ];
        for (error, code, reason) in table {
            let status = Status::from(error);
            assert_eq!(status.code(), code);
            let info = status.get_details_error_info().expect("ErrorInfo attached");
            assert_eq!(info.reason, reason);
            assert_eq!(info.domain, ERROR_DOMAIN);
        }
    }

    #[test]
    fn internal_details_are_not_sent() {
        let status = Status::from(DomainError::Internal("secret table name".into()));
        assert!(!status.message().contains("secret"));
    }
}
