//! What handlers read from a request: JSON bodies, path ids and query parameters, each
//! refused in the gateway's JSON error (naming the field), never in axum's plain text.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::client::ChatdCall;
use super::{ApiError, BodyTimeout, GatewayState, MAX_BODY_BYTES};
use crate::model::canonical_number;
use crate::status::edge;

/// A JSON request body. Unlike `axum::Json`, its failures are the gateway's JSON errors,
/// and an empty body reads as `{}` where the type allows it.
pub(super) struct JsonBody<T>(pub(super) T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_none_or(|value| value.starts_with("application/json"));
        // A compressed body would otherwise fail as "not a JSON object", which hides the cause.
        let encoding = request
            .headers()
            .get(header::CONTENT_ENCODING)
            .map(|value| value.to_str().unwrap_or("?").trim().to_ascii_lowercase())
            .filter(|value| value != "identity");
        if let Some(encoding) = encoding {
            return Err(ApiError::new(
                edge::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "send the body uncompressed: chatd does not decode Content-Encoding {encoding:?}"
                ),
            ));
        }
        let timeout = request
            .extensions()
            .get::<BodyTimeout>()
            .map_or(Duration::MAX, |timeout| timeout.0);
        let bytes = tokio::time::timeout(timeout, Bytes::from_request(request, state))
            .await
            .map_err(|_| {
                ApiError::new(
                    edge::REQUEST_TIMEOUT,
                    format!(
                        "the request body did not arrive whole within {}: send it at once",
                        humantime::format_duration(timeout)
                    ),
                )
            })?
            .map_err(|rejection| {
                let status = rejection.status();
                if status == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        edge::PAYLOAD_TOO_LARGE,
                        format!("the request body is over {MAX_BODY_BYTES} bytes"),
                    )
                } else {
                    ApiError::new(edge::BAD_REQUEST, rejection.body_text())
                }
            })?;
        // No body at all reads as `{}`; anything else must be a JSON object.
        let bytes: &[u8] = if bytes.is_empty() { b"{}" } else { &bytes };
        if !is_json {
            return Err(ApiError::new(
                edge::UNSUPPORTED_MEDIA_TYPE,
                "send the body as application/json",
            ));
        }
        // serde would read `[…]` into a struct too; the contract's bodies are objects.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::new(
                crate::status::of(crate::domain::Reason::InvalidArgument),
                "the body must be a JSON object, like {}",
            ));
        }
        read_json(bytes).map(JsonBody)
    }
}

/// Reads a JSON body into `T`. A value of the wrong type names its field by its JSON
/// path (`up_to_seq`, `items[2].id`) and says what was wanted in JSON's words ("an
/// integer", "a string"), never in Rust's (`i64`, "floating point"); a body that is not
/// JSON at all says where it stops being JSON, and names no field.
fn read_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let (path, error) = match serde_path_to_error::deserialize::<_, T>(&mut deserializer) {
        Ok(value) => match deserializer.end() {
            Ok(()) => return Ok(value),
            Err(error) => (".".to_owned(), error),
        },
        Err(error) => (error.path().to_string(), error.into_inner()),
    };
    if !error.is_data() {
        return Err(ApiError::new(
            crate::status::of(crate::domain::Reason::InvalidArgument),
            format!(
                "the body is not valid JSON: {} (line {}, column {})",
                json_problem(&error),
                error.line(),
                error.column()
            ),
        ));
    }
    let problem = json_problem(&error);
    // A missing field is reported at its parent's path, with its name in the text.
    if let Some(name) = problem
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        let field = match path.as_str() {
            "." => name.to_owned(),
            parent => format!("{parent}.{name}"),
        };
        return Err(ApiError::invalid(&field, "is required"));
    }
    let field = if path == "." { "(the body)" } else { &path };
    Err(ApiError::invalid(field, in_json_terms(&problem)))
}

/// serde_json's message without its " at line L column C" (said separately).
fn json_problem(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// Rewrites serde's "invalid type: floating point `1000.5`, expected i64" as a JSON
/// client reads it: "must be an integer, got the number 1000.5".
fn in_json_terms(problem: &str) -> String {
    let Some((got, wanted)) = problem
        .strip_prefix("invalid type: ")
        .or_else(|| problem.strip_prefix("invalid value: "))
        .and_then(|rest| rest.rsplit_once(", expected "))
    else {
        return problem.to_owned();
    };
    let wanted = match wanted {
        "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" => "an integer",
        "f32" | "f64" => "a number",
        "a boolean" | "bool" => "true or false",
        "a sequence" => "an array",
        "a map" => "an object",
        other if other.starts_with("struct ") => "an object",
        other => other,
    };
    let quoted = |text: &str| text.trim_matches('`').to_owned();
    let got = if let Some(number) = got
        .strip_prefix("floating point ")
        .or_else(|| got.strip_prefix("integer "))
    {
        format!("the number {}", quoted(number))
    } else if let Some(text) = got.strip_prefix("string ") {
        format!("the string {text}")
    } else if let Some(value) = got.strip_prefix("boolean ") {
        quoted(value)
    } else {
        match got {
            "null" | "unit value" => "null".to_owned(),
            "sequence" => "an array".to_owned(),
            "map" => "an object".to_owned(),
            other => other.to_owned(),
        }
    };
    format!("must be {wanted}, got {got}")
}

/// The `{thread_id}` of a path, refused with a JSON error naming it when not an integer.
pub(super) struct ThreadPath(pub(super) i64);

impl<S: Send + Sync> FromRequestParts<S> for ThreadPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::invalid("thread_id", rejection.body_text()))?;
        number("thread_id", &raw).map(ThreadPath)
    }
}

/// The `{thread_id}` and `{seq}` of a message's path, refused with a JSON error naming
/// the one that is not an integer.
pub(super) struct MessagePath(pub(super) i64, pub(super) i64);

impl<S: Send + Sync> FromRequestParts<S> for MessagePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path((thread_id, seq)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::invalid("path", rejection.body_text()))?;
        Ok(MessagePath(
            number("thread_id", &thread_id)?,
            number("seq", &seq)?,
        ))
    }
}

/// An integer of a path or query, written in canonical decimal ("4", not "+4" or "04"),
/// so one resource has one URL and caches and logs see one key for it.
fn number<T: std::str::FromStr + ToString>(field: &str, raw: &str) -> Result<T, ApiError> {
    canonical_number(raw).ok_or_else(|| {
        ApiError::invalid(
            field,
            format!("must be an integer in plain decimal (no '+', no leading zeros), got {raw:?}"),
        )
    })
}

/// Parses an optional integer query parameter.
pub(super) fn query_int<T: std::str::FromStr + ToString>(
    field: &str,
    raw: Option<&str>,
) -> Result<Option<T>, ApiError> {
    raw.map(|raw| number(field, raw)).transpose()
}

/// Query parameters whose failures are the gateway's JSON errors, not axum's plain text.
pub(super) struct QueryParams<T>(pub(super) T);

impl<S, T> FromRequestParts<S> for QueryParams<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| QueryParams(value))
            .map_err(|rejection| ApiError::invalid("query", rejection.body_text()))
    }
}

/// The event stream's caller: a bearer token like every call, or, for a browser's
/// `EventSource`, which cannot send headers, a stream ticket in the query. The query is
/// never logged (spans carry `url.path` only), and a ticket dies with its first use.
pub(super) struct StreamCaller {
    pub(super) call: ChatdCall,
    pub(super) ticket: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct StreamQuery {
    pub(super) limit: Option<String>,
    pub(super) ticket: Option<String>,
    /// The thread stream's resume point (`Last-Event-ID`, when sent, wins).
    pub(super) after_version: Option<String>,
}

impl FromRequestParts<GatewayState> for StreamCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &GatewayState) -> Result<Self, ApiError> {
        let QueryParams(query) =
            QueryParams::<StreamQuery>::from_request_parts(parts, state).await?;
        let call = match &query.ticket {
            Some(_) => ChatdCall::forwarding(parts, state),
            None => ChatdCall::from_request_parts(parts, state).await?,
        };
        Ok(Self {
            call,
            ticket: query.ticket.unwrap_or_default(),
        })
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct PageQuery {
    pub(super) limit: Option<String>,
    pub(super) before_seq: Option<String>,
    pub(super) after_seq: Option<String>,
    pub(super) page_token: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Body {
        #[serde(default)]
        #[expect(dead_code, reason = "read only to be refused")]
        up_to_seq: Option<i64>,
        #[expect(dead_code, reason = "read only to be refused")]
        body: String,
    }

    fn refusal(json: &str) -> ApiError {
        read_json::<Body>(json.as_bytes()).expect_err("refused")
    }

    #[test]
    fn json_errors_name_the_json_field_in_json_terms() {
        let error = refusal(r#"{"body": "hi", "up_to_seq": 1000.5}"#);
        assert_eq!(error.field.as_deref(), Some("up_to_seq"));
        assert_eq!(
            error.message,
            "up_to_seq: must be an integer, got the number 1000.5"
        );
        let error = refusal(r#"{"body": 5}"#);
        assert_eq!(error.field.as_deref(), Some("body"));
        assert_eq!(error.message, "body: must be a string, got the number 5");
        let error = refusal(r#"{"up_to_seq": 3}"#);
        assert_eq!(error.field.as_deref(), Some("body"));
        assert_eq!(error.message, "body: is required");
        let error = refusal(r#"{"body": "x", "up_to_seq": "3"}"#);
        assert_eq!(
            error.message,
            "up_to_seq: must be an integer, got the string \"3\""
        );
    }

    #[test]
    fn a_body_that_is_not_json_names_no_field() {
        let error = refusal(r#"{"body": "x",}"#);
        assert_eq!(error.field, None);
        assert!(
            error.message.starts_with("the body is not valid JSON:"),
            "{}",
            error.message
        );
        assert!(!error.message.contains("i64"), "{}", error.message);
        let error = refusal(r#"{"body": "x"} trailing"#);
        assert_eq!(error.field, None);
    }
}
