//! The one table of what clients see when something fails: each error reason with its
//! gRPC code and its HTTP status, side by side, so the two transports cannot disagree.
//!
//! Below both transports: `grpc/` builds a `tonic::Status` from it and `http/` an HTTP
//! answer, and neither reaches into the other. One test pins the whole table.

use http::StatusCode;
use tonic::Code;

use crate::domain::Reason;

/// An error as it travels: the `ErrorInfo.reason`, the gRPC code, the HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode {
    pub reason: &'static str,
    pub grpc: Code,
    pub http: StatusCode,
}

const fn code(reason: &'static str, grpc: Code, http: StatusCode) -> ErrorCode {
    ErrorCode { reason, grpc, http }
}

/// The `ErrorInfo.domain` of every chatd error.
pub const ERROR_DOMAIN: &str = "chatd.chat.v1";

/// The row of a domain reason.
pub fn of(reason: Reason) -> ErrorCode {
    use StatusCode as H;
    let (grpc, http) = match reason {
        Reason::InvalidArgument => (Code::InvalidArgument, H::BAD_REQUEST),
        Reason::TokenMissing
        | Reason::TokenExpired
        | Reason::TokenInvalid
        | Reason::TicketInvalid => (Code::Unauthenticated, H::UNAUTHORIZED),
        Reason::RoleNotAllowed | Reason::ContactAccessLocked | Reason::NotMessageSender => {
            (Code::PermissionDenied, H::FORBIDDEN)
        }
        Reason::RelationNotFound
        | Reason::InquiryNotFound
        | Reason::ThreadNotFound
        | Reason::MessageNotFound => (Code::NotFound, H::NOT_FOUND),
        // FAILED_PRECONDITION is 400, as in google.rpc's mapping: the request cannot
        // succeed until the state changes.
        Reason::RelationNotActive
        | Reason::ThreadNotWritable
        | Reason::ParticipantsImmutable
        | Reason::MessageDeleted
        | Reason::MarkUnreadTooFar => (Code::FailedPrecondition, H::BAD_REQUEST),
        // OUT_OF_RANGE is 400 too: the position is past what the log keeps.
        Reason::EventsExpired => (Code::OutOfRange, H::BAD_REQUEST),
        // A full disk too: RESOURCE_EXHAUSTED, and its HTTP status by the standard
        // mapping; the reason says which resource, and that waiting will not help.
        Reason::TooManyStreams
        | Reason::StreamTooSlow
        | Reason::RateLimited
        | Reason::StorageFull => (Code::ResourceExhausted, H::TOO_MANY_REQUESTS),
        Reason::DatabaseUnavailable => (Code::Unavailable, H::SERVICE_UNAVAILABLE),
        Reason::Internal => (Code::Internal, H::INTERNAL_SERVER_ERROR),
    };
    code(reason.as_str(), grpc, http)
}

/// Refusals made by the REST gateway itself, before or instead of a call to chatd.
pub mod edge {
    use super::{Code, ErrorCode, StatusCode as H, code};

    pub const UNKNOWN_PATH: ErrorCode = code("NOT_FOUND", Code::NotFound, H::NOT_FOUND);
    pub const METHOD_NOT_ALLOWED: ErrorCode = code(
        "METHOD_NOT_ALLOWED",
        Code::Unimplemented,
        H::METHOD_NOT_ALLOWED,
    );
    pub const PAYLOAD_TOO_LARGE: ErrorCode = code(
        "PAYLOAD_TOO_LARGE",
        Code::ResourceExhausted,
        H::PAYLOAD_TOO_LARGE,
    );
    pub const UNSUPPORTED_MEDIA_TYPE: ErrorCode = code(
        "UNSUPPORTED_MEDIA_TYPE",
        Code::Unimplemented,
        H::UNSUPPORTED_MEDIA_TYPE,
    );
    pub const BAD_REQUEST: ErrorCode = code("BAD_REQUEST", Code::InvalidArgument, H::BAD_REQUEST);
    /// chatd could not be reached (connection refused, reset, not serving).
    pub const UPSTREAM_UNAVAILABLE: ErrorCode = code(
        "UPSTREAM_UNAVAILABLE",
        Code::Unavailable,
        H::SERVICE_UNAVAILABLE,
    );
    /// chatd did not answer within the gateway's upstream timeout.
    pub const UPSTREAM_TIMEOUT: ErrorCode = code(
        "UPSTREAM_TIMEOUT",
        Code::DeadlineExceeded,
        H::GATEWAY_TIMEOUT,
    );

    /// The request line's target is longer than the gateway reads.
    pub const URI_TOO_LONG: ErrorCode =
        code("URI_TOO_LONG", Code::InvalidArgument, H::URI_TOO_LONG);

    /// The request's body did not arrive whole within the body timeout.
    pub const REQUEST_TIMEOUT: ErrorCode = code(
        "REQUEST_TIMEOUT",
        Code::DeadlineExceeded,
        H::REQUEST_TIMEOUT,
    );

    /// A browser's CORS preflight from an origin the gateway was not told to allow.
    pub const CORS_NOT_ALLOWED: ErrorCode =
        code("CORS_NOT_ALLOWED", Code::PermissionDenied, H::FORBIDDEN);

    pub const ALL: [ErrorCode; 10] = [
        UNKNOWN_PATH,
        METHOD_NOT_ALLOWED,
        PAYLOAD_TOO_LARGE,
        UNSUPPORTED_MEDIA_TYPE,
        BAD_REQUEST,
        UPSTREAM_UNAVAILABLE,
        UPSTREAM_TIMEOUT,
        URI_TOO_LONG,
        REQUEST_TIMEOUT,
        CORS_NOT_ALLOWED,
    ];
}

/// Requests chatd's gRPC server refuses before any handler sees them.
pub mod request {
    use super::{Code, ErrorCode, StatusCode as H, code};

    /// The request message cannot be decoded (truncated, not protobuf, a string that
    /// is not UTF-8): the client's fault.
    pub const MALFORMED: ErrorCode =
        code("MALFORMED_REQUEST", Code::InvalidArgument, H::BAD_REQUEST);
    /// The request message is over the size chatd accepts.
    pub const TOO_LARGE: ErrorCode = code(
        "REQUEST_TOO_LARGE",
        Code::ResourceExhausted,
        H::PAYLOAD_TOO_LARGE,
    );

    /// The call did not finish within its deadline (the client's or the server's).
    pub const DEADLINE_EXCEEDED: ErrorCode = code(
        "DEADLINE_EXCEEDED",
        Code::DeadlineExceeded,
        H::GATEWAY_TIMEOUT,
    );

    /// The request's headers are larger than chatd reads (gRPC) or the gateway
    /// forwards (REST): a token or trace header out of all proportion.
    pub const HEADERS_TOO_LARGE: ErrorCode = code(
        "HEADERS_TOO_LARGE",
        Code::InvalidArgument,
        H::REQUEST_HEADER_FIELDS_TOO_LARGE,
    );

    pub const ALL: [ErrorCode; 4] = [MALFORMED, TOO_LARGE, DEADLINE_EXCEEDED, HEADERS_TOO_LARGE];
}

/// A `tonic::Status` of a table row, with its ErrorInfo.
pub fn status(row: ErrorCode, message: impl Into<String>) -> tonic::Status {
    use tonic_types::{ErrorDetails, StatusExt};
    let details =
        ErrorDetails::with_error_info(row.reason, ERROR_DOMAIN, std::collections::HashMap::new());
    tonic::Status::with_error_details(row.grpc, message, details)
}

/// The standard gRPC → HTTP mapping, for a status that names no reason this build knows.
pub fn http_status(code: Code) -> StatusCode {
    use StatusCode as H;
    match code {
        Code::Ok => H::OK,
        Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => H::BAD_REQUEST,
        Code::Unauthenticated => H::UNAUTHORIZED,
        Code::PermissionDenied => H::FORBIDDEN,
        Code::NotFound => H::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => H::CONFLICT,
        Code::ResourceExhausted => H::TOO_MANY_REQUESTS,
        Code::Unimplemented => H::NOT_IMPLEMENTED,
        Code::Unavailable => H::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => H::GATEWAY_TIMEOUT,
        Code::Cancelled | Code::Unknown | Code::Internal | Code::DataLoss => {
            H::INTERNAL_SERVER_ERROR
        }
    }
}

/// The upper-case name of a gRPC code, as `grpc_status` in JSON errors and metrics say it.
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

/// Every row of the table: the domain's reasons, the gateway's, and the requests'.
pub fn all_rows() -> impl Iterator<Item = ErrorCode> {
    Reason::ALL
        .iter()
        .map(|reason| of(*reason))
        .chain(edge::ALL)
        .chain(request::ALL)
}

/// Whether `name` is one of the reasons clients are told of.
pub fn is_reason(name: &str) -> bool {
    all_rows().any(|row| row.reason == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table, the proto's `enum ErrorReason`, the OpenAPI error `code` enum and the
    /// README's table of reasons name the same reasons: none can drift from the others.
    #[test]
    fn every_reason_is_listed_in_the_proto_the_openapi_and_the_readme() {
        let table: std::collections::BTreeSet<&str> = all_rows().map(|row| row.reason).collect();
        let proto: std::collections::BTreeSet<&str> = (1..)
            .map_while(|n| crate::proto::ErrorReason::try_from(n).ok())
            .map(|reason| reason.as_str_name())
            .collect();
        assert_eq!(proto, table, "proto enum ErrorReason");
        let doc: serde_json::Value =
            serde_json::from_str(crate::http::openapi::OPENAPI_JSON).unwrap();
        let openapi: std::collections::BTreeSet<&str> =
            doc["components"]["schemas"]["Error"]["properties"]["code"]["enum"]
                .as_array()
                .unwrap()
                .iter()
                .map(|name| name.as_str().unwrap())
                .collect();
        assert_eq!(openapi, table, "OpenAPI Error.code");
        let readme = include_str!("../docs/errors.md");
        for row in all_rows() {
            let line = readme
                .lines()
                .find(|line| line.starts_with(&format!("| `{}` |", row.reason)))
                .unwrap_or_else(|| {
                    panic!("docs/errors.md's table of reasons lacks {}", row.reason)
                });
            assert!(
                line.contains(code_name(row.grpc)) && line.contains(&row.http.as_u16().to_string()),
                "docs/errors.md's row of {} gives its gRPC code {} and HTTP status {}: {line}",
                row.reason,
                code_name(row.grpc),
                row.http.as_u16()
            );
        }
    }

    /// Pins the whole table: every reason a client can see, its gRPC code, its HTTP status.
    #[test]
    fn every_reason_has_its_code_and_status() {
        let expected = [
            ("INVALID_ARGUMENT", Code::InvalidArgument, 400),
            ("TOKEN_MISSING", Code::Unauthenticated, 401),
            ("TOKEN_EXPIRED", Code::Unauthenticated, 401),
            ("TOKEN_INVALID", Code::Unauthenticated, 401),
            ("TICKET_INVALID", Code::Unauthenticated, 401),
            ("ROLE_NOT_ALLOWED", Code::PermissionDenied, 403),
            ("RELATION_NOT_FOUND", Code::NotFound, 404),
            ("RELATION_NOT_ACTIVE", Code::FailedPrecondition, 400),
            ("CONTACT_ACCESS_LOCKED", Code::PermissionDenied, 403),
            ("INQUIRY_NOT_FOUND", Code::NotFound, 404),
            ("THREAD_NOT_FOUND", Code::NotFound, 404),
            ("THREAD_NOT_WRITABLE", Code::FailedPrecondition, 400),
            ("PARTICIPANTS_IMMUTABLE", Code::FailedPrecondition, 400),
            ("MESSAGE_NOT_FOUND", Code::NotFound, 404),
            ("NOT_MESSAGE_SENDER", Code::PermissionDenied, 403),
            ("MESSAGE_DELETED", Code::FailedPrecondition, 400),
            ("MARK_UNREAD_TOO_FAR", Code::FailedPrecondition, 400),
            ("RATE_LIMITED", Code::ResourceExhausted, 429),
            ("TOO_MANY_STREAMS", Code::ResourceExhausted, 429),
            ("STREAM_TOO_SLOW", Code::ResourceExhausted, 429),
            ("EVENTS_EXPIRED", Code::OutOfRange, 400),
            ("DATABASE_UNAVAILABLE", Code::Unavailable, 503),
            ("STORAGE_FULL", Code::ResourceExhausted, 429),
            ("INTERNAL", Code::Internal, 500),
            ("NOT_FOUND", Code::NotFound, 404),
            ("METHOD_NOT_ALLOWED", Code::Unimplemented, 405),
            ("PAYLOAD_TOO_LARGE", Code::ResourceExhausted, 413),
            ("UNSUPPORTED_MEDIA_TYPE", Code::Unimplemented, 415),
            ("BAD_REQUEST", Code::InvalidArgument, 400),
            ("UPSTREAM_UNAVAILABLE", Code::Unavailable, 503),
            ("UPSTREAM_TIMEOUT", Code::DeadlineExceeded, 504),
            ("URI_TOO_LONG", Code::InvalidArgument, 414),
            ("REQUEST_TIMEOUT", Code::DeadlineExceeded, 408),
            ("CORS_NOT_ALLOWED", Code::PermissionDenied, 403),
            ("MALFORMED_REQUEST", Code::InvalidArgument, 400),
            ("REQUEST_TOO_LARGE", Code::ResourceExhausted, 413),
            ("DEADLINE_EXCEEDED", Code::DeadlineExceeded, 504),
            ("HEADERS_TOO_LARGE", Code::InvalidArgument, 431),
        ];
        let table: Vec<_> = all_rows()
            .map(|row| (row.reason, row.grpc, row.http.as_u16()))
            .collect();
        assert_eq!(table, expected);
    }

    /// A domain reason's HTTP status is what the standard mapping gives its gRPC code,
    /// so a client that only knows the code still reads the same answer.
    #[test]
    fn domain_reasons_follow_the_standard_mapping() {
        for &reason in Reason::ALL {
            let row = of(reason);
            assert_eq!(http_status(row.grpc), row.http, "{}", row.reason);
        }
    }

    #[test]
    fn standard_mapping() {
        let table = [
            (Code::OutOfRange, 400),
            (Code::AlreadyExists, 409),
            (Code::Aborted, 409),
            (Code::Unimplemented, 501),
            (Code::DeadlineExceeded, 504),
            (Code::Unknown, 500),
            (Code::DataLoss, 500),
            (Code::Cancelled, 500),
        ];
        for (code, http) in table {
            assert_eq!(http_status(code).as_u16(), http, "{code:?}");
        }
    }
}
