//! The one place a `DomainError` becomes a `tonic::Status`: the code from the status
//! table (`crate::status`) and a google.rpc.ErrorInfo carrying the reason, plus a
//! BadRequest naming the bad field.

use std::collections::HashMap;

use tonic::Status;
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::DomainError;
use crate::status::{self, ERROR_DOMAIN};

/// When a client should try again after DATABASE_UNAVAILABLE (RetryInfo): about when a
/// restarting database answers again; clients back off from it.
const UNAVAILABLE_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

impl From<DomainError> for Status {
    fn from(error: DomainError) -> Self {
        // Internal details stay in the log: clients get the generic message only.
        match &error {
            DomainError::Internal(detail) => tracing::error!(%detail, "internal error"),
            // Storage says it once per episode (`storage::Episodes`), not once per call.
            DomainError::Unavailable(detail) => tracing::debug!(%detail, "database unavailable"),
            _ => {}
        }
        let row = status::of(error.reason());
        let mut metadata: HashMap<String, String> = error
            .field()
            .map(|field| ("field".to_owned(), field.to_owned()))
            .into_iter()
            .collect();
        if let DomainError::EventsExpired {
            trimmed_through, ..
        } = &error
        {
            metadata.insert("oldest_position".to_owned(), trimmed_through.to_string());
        }
        let mut details = ErrorDetails::with_error_info(row.reason, ERROR_DOMAIN, metadata);
        if let Some(field) = error.field() {
            details.add_bad_request_violation(field, error.to_string());
        }
        match &error {
            DomainError::RateLimited { retry_after } => {
                details.set_retry_info(Some(*retry_after));
            }
            // A database that restarts, or calls that conflicted past chatd's own
            // retries: worth another try shortly, with backoff.
            DomainError::Unavailable(_) => {
                details.set_retry_info(Some(UNAVAILABLE_RETRY));
            }
            _ => {}
        }
        Status::with_error_details(row.grpc, error.to_string(), details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Reason;

    #[test]
    fn every_error_carries_its_reason_and_code() {
        let errors = [
            DomainError::invalid("body", "empty"),
            DomainError::TokenMissing,
            DomainError::RoleNotAllowed {
                role: "admin".into(),
                service: "s",
            },
            DomainError::ThreadNotWritable(1),
            DomainError::Unavailable("down".into()),
        ];
        for error in errors {
            let reason = error.reason();
            let status = Status::from(error);
            assert_eq!(status.code(), status::of(reason).grpc);
            let info = status.get_details_error_info().expect("ErrorInfo attached");
            assert_eq!(info.reason, reason.as_str());
            assert_eq!(info.domain, ERROR_DOMAIN);
        }
        let limited = Status::from(DomainError::RateLimited {
            retry_after: std::time::Duration::from_millis(1500),
        });
        let retry = limited
            .get_details_retry_info()
            .expect("RetryInfo attached");
        assert_eq!(
            retry.retry_delay,
            Some(std::time::Duration::from_millis(1500))
        );
        let bad = Status::from(DomainError::invalid("body", "empty"));
        let violations = bad.get_details_bad_request().expect("BadRequest attached");
        assert_eq!(violations.field_violations[0].field, "body");
        assert_eq!(
            Reason::parse("INVALID_ARGUMENT"),
            Some(Reason::InvalidArgument)
        );
    }

    #[test]
    fn internal_details_are_not_sent() {
        let status = Status::from(DomainError::Internal("secret table name".into()));
        assert!(!status.message().contains("secret"));
    }
}
