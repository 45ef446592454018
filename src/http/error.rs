//! The one place a gRPC `Status` becomes an HTTP error, and the JSON error body every
//! gateway error has: `{"code": "<REASON>", "message": "...", "grpc_status": "<CODE>"}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tonic::Code;
use tonic_types::StatusExt;

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
}

/// The standard gRPC → HTTP mapping. FAILED_PRECONDITION is 400, as in google.rpc's
/// mapping: the request cannot succeed until the state changes (e.g. THREAD_NOT_WRITABLE).
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => {
            StatusCode::BAD_REQUEST
        }
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Cancelled | Code::Unknown | Code::Internal | Code::DataLoss => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

/// The upper-case name of a gRPC code, as grpc-status names it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

impl ApiError {
    fn new(code: Code, reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status: http_status(code),
            code: reason.into(),
            message: message.into(),
            grpc_status: code_name(code),
            field: None,
        }
    }

    /// A request the gateway refuses before calling chatd: 400 INVALID_ARGUMENT.
    pub fn invalid(field: &str, problem: impl std::fmt::Display) -> Self {
        let mut error = Self::new(
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            format!("{field}: {problem}"),
        );
        error.field = Some(field.to_owned());
        error
    }

    /// An HTTP-level refusal (unknown path, wrong method, body too large, ...).
    pub fn http(status: StatusCode, reason: &str, message: impl Into<String>) -> Self {
        let code = match status {
            StatusCode::NOT_FOUND => Code::NotFound,
            StatusCode::PAYLOAD_TOO_LARGE => Code::ResourceExhausted,
            StatusCode::METHOD_NOT_ALLOWED | StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                Code::Unimplemented
            }
            _ => Code::InvalidArgument,
        };
        Self {
            status,
            code: reason.to_owned(),
            message: message.into(),
            grpc_status: code_name(code),
            field: None,
        }
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        match status.get_details_error_info() {
            Some(info) => {
                let mut error = Self::new(status.code(), info.reason, status.message());
                error.field = info.metadata.get("field").cloned();
                error
            }
            // No ErrorInfo: chatd did not answer (connection refused, timeout, ...).
            None => {
                tracing::warn!(code = ?status.code(), message = status.message(), "upstream call failed");
                match status.code() {
                    Code::Unavailable => Self::new(
                        Code::Unavailable,
                        "UPSTREAM_UNAVAILABLE",
                        "chatd is unavailable, retry later",
                    ),
                    Code::DeadlineExceeded => Self::new(
                        Code::DeadlineExceeded,
                        "UPSTREAM_TIMEOUT",
                        "chatd did not answer in time, retry later",
                    ),
                    code => Self::new(code, code_name(code), status.message()),
                }
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(&self)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins the whole mapping table.
    #[test]
    fn grpc_codes_map_to_http_statuses() {
        let table = [
            (Code::InvalidArgument, 400),
            (Code::FailedPrecondition, 400),
            (Code::OutOfRange, 400),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::Aborted, 409),
            (Code::ResourceExhausted, 429),
            (Code::Unimplemented, 501),
            (Code::Unavailable, 503),
            (Code::DeadlineExceeded, 504),
            (Code::Internal, 500),
            (Code::Unknown, 500),
            (Code::DataLoss, 500),
            (Code::Cancelled, 500),
        ];
        for (code, http) in table {
            assert_eq!(http_status(code).as_u16(), http, "{code:?}");
        }
    }

    #[test]
    fn domain_errors_keep_their_reason_and_field() {
        let status = tonic::Status::from(crate::domain::DomainError::invalid("body", "empty"));
        let error = ApiError::from(status);
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        assert_eq!(error.code, "INVALID_ARGUMENT");
        assert_eq!(error.grpc_status, "INVALID_ARGUMENT");
        assert_eq!(error.field.as_deref(), Some("body"));
        let body = serde_json::to_value(&error).unwrap();
        assert_eq!(body["code"], "INVALID_ARGUMENT");
        assert_eq!(body["message"], "body: empty");
    }

    #[test]
    fn unreachable_upstream_is_503() {
        let error = ApiError::from(tonic::Status::unavailable("tcp connect error"));
        assert_eq!(error.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error.code, "UPSTREAM_UNAVAILABLE");
        assert!(!error.message.contains("tcp"), "no transport details leak");
    }
}
