//! The one place a gRPC `Status` becomes an HTTP error, and the JSON error body every
//! gateway error has: `{"code": "<REASON>", "message": "...", "grpc_status": "<CODE>"}`.
//! Statuses and codes come from the shared table in `crate::status`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tonic_types::StatusExt;

use crate::domain::{DomainError, Reason};
use crate::status::{self, ErrorCode, edge};

/// An error as the REST client sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiError {
    #[serde(skip)]
    pub status: StatusCode,
    /// The ErrorInfo reason (e.g. `THREAD_NOT_FOUND`), stable for clients to switch on.
    pub code: String,
    pub message: String,
    /// The gRPC status code name behind it (e.g. `NOT_FOUND`).
    pub grpc_status: &'static str,
    /// The request field at fault, for INVALID_ARGUMENT.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// When to retry (a google.rpc.RetryInfo), sent as `Retry-After`.
    #[serde(skip)]
    pub retry_after: Option<std::time::Duration>,
}

impl ApiError {
    /// An error of a row of the status table.
    pub fn new(row: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status: row.http,
            code: row.reason.to_owned(),
            message: message.into(),
            grpc_status: status::code_name(row.grpc),
            field: None,
            retry_after: None,
        }
    }

    /// A request the gateway refuses before calling chatd: 400 INVALID_ARGUMENT.
    pub fn invalid(field: &str, problem: impl std::fmt::Display) -> Self {
        let mut error = Self::new(
            status::of(Reason::InvalidArgument),
            format!("{field}: {problem}"),
        );
        error.field = Some(field.to_owned());
        error
    }
}

/// A refusal the domain states (say, a missing token), answered by the gateway itself.
impl From<DomainError> for ApiError {
    fn from(error: DomainError) -> Self {
        let mut api = Self::new(status::of(error.reason()), error.to_string());
        api.field = error.field().map(str::to_owned);
        api
    }
}

impl From<tonic::Status> for ApiError {
    fn from(answer: tonic::Status) -> Self {
        match answer.get_details_error_info() {
            Some(info) => {
                // chatd's reasons have their row; a reason this build does not know (a
                // newer chatd) travels with the standard mapping of its code.
                let row = Reason::parse(&info.reason)
                    .map(status::of)
                    .unwrap_or(ErrorCode {
                        reason: "",
                        grpc: answer.code(),
                        http: status::http_status(answer.code()),
                    });
                let mut error = Self::new(row, answer.message());
                error.code = info.reason;
                error.field = info.metadata.get("field").cloned();
                error.retry_after = answer
                    .get_details_retry_info()
                    .and_then(|retry| retry.retry_delay);
                error
            }
            // No ErrorInfo: chatd did not answer (connection refused, timeout, ...).
            None => {
                tracing::warn!(code = ?answer.code(), message = answer.message(), "call to chatd failed");
                // A status made on this side of the wire (it carries the local error
                // that ended the call) means chatd could not be reached or dropped the
                // connection. CANCELLED likewise: the gateway never cancels its calls.
                let local = std::error::Error::source(&answer).is_some();
                match answer.code() {
                    tonic::Code::Unavailable | tonic::Code::Cancelled => Self::new(
                        edge::UPSTREAM_UNAVAILABLE,
                        "chatd is unavailable, retry later",
                    ),
                    tonic::Code::Unknown if local => Self::new(
                        edge::UPSTREAM_UNAVAILABLE,
                        "chatd is unavailable, retry later",
                    ),
                    tonic::Code::DeadlineExceeded => Self::new(
                        edge::UPSTREAM_TIMEOUT,
                        "chatd did not answer in time, retry later",
                    ),
                    // Named by its code where that is one of chatd's reasons, so `code`
                    // stays within the documented list; else INTERNAL.
                    code => Self::new(
                        ErrorCode {
                            reason: Some(status::code_name(code))
                                .filter(|name| status::is_reason(name))
                                .unwrap_or("INTERNAL"),
                            grpc: code,
                            http: status::http_status(code),
                        },
                        answer.message(),
                    ),
                }
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(&self)).into_response();
        if let Some(wait) = self.retry_after {
            // Whole seconds, at least 1 (RFC 9110: delay-seconds), rounded up.
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(seconds.max(1)),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_errors_keep_their_reason_and_field() {
        let answer = tonic::Status::from(DomainError::invalid("body", "empty"));
        let error = ApiError::from(answer);
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        assert_eq!(error.code, "INVALID_ARGUMENT");
        assert_eq!(error.grpc_status, "INVALID_ARGUMENT");
        assert_eq!(error.field.as_deref(), Some("body"));
        let body = serde_json::to_value(&error).unwrap();
        assert_eq!(body["code"], "INVALID_ARGUMENT");
        assert_eq!(body["message"], "body: empty");
    }

    #[test]
    fn a_rate_limit_says_when_to_retry_in_whole_seconds() {
        for (millis, header) in [(200, "1"), (1000, "1"), (1500, "2")] {
            let answer = tonic::Status::from(DomainError::RateLimited {
                retry_after: std::time::Duration::from_millis(millis),
            });
            let response = ApiError::from(answer).into_response();
            assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(response.headers()["retry-after"], header, "{millis} ms");
        }
    }

    #[test]
    fn every_domain_reason_reaches_http_by_the_table() {
        for &reason in Reason::ALL {
            let row = status::of(reason);
            let answer = <tonic::Status as tonic_types::StatusExt>::with_error_details(
                row.grpc,
                "x",
                tonic_types::ErrorDetails::with_error_info(
                    reason.as_str(),
                    status::ERROR_DOMAIN,
                    std::collections::HashMap::new(),
                ),
            );
            let error = ApiError::from(answer);
            assert_eq!(error.status, row.http, "{}", row.reason);
            assert_eq!(error.code, row.reason);
        }
    }

    #[test]
    fn unreachable_upstream_is_503() {
        for lost in [
            tonic::Status::unavailable("tcp connect error"),
            tonic::Status::cancelled("operation was canceled"),
        ] {
            let error = ApiError::from(lost);
            assert_eq!(error.status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(error.code, "UPSTREAM_UNAVAILABLE");
            assert!(!error.message.contains("tcp"), "no transport details leak");
        }
    }
}
