//! `GET /openapi.json`: the OpenAPI 3 description of the REST surface, kept beside the
//! routes it describes (and checked by schemathesis in CI against the running gateway).

use axum::http::header;
use axum::response::IntoResponse;

/// The document, as served.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

pub async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON)
}

#[cfg(test)]
mod tests {
    #[test]
    fn is_valid_json_with_every_route() {
        let doc: serde_json::Value = serde_json::from_str(super::OPENAPI_JSON).unwrap();
        assert_eq!(doc["openapi"], "3.0.3");
        for path in [
            "/api/v1/chat/threads/negotiation/",
            "/api/v1/chat/threads/",
            "/api/v1/chat/unread-summary/",
            "/api/v1/chat/threads/{thread_id}/read/",
            "/api/v1/chat/threads/{thread_id}/messages/",
            "/api/v1/chat/unread-summary/stream",
            "/api/v1/chat/unread-summary/stream-ticket",
            "/api/v1/chat/threads/{thread_id}/messages/{seq}/",
            "/api/v1/chat/threads/{thread_id}/unread/",
            "/api/v1/chat/threads/{thread_id}/mute/",
        ] {
            assert!(doc["paths"][path].is_object(), "{path} is documented");
        }
    }

    /// The pattern a message body must match: no NUL, and a visible character
    /// (`domain::INVISIBLE`), so that a body the schema allows is one chatd accepts.
    fn body_pattern() -> String {
        let class: String = crate::domain::INVISIBLE
            .iter()
            .map(|(first, last)| match first == last {
                true => format!("\\u{:04x}", *first as u32),
                false => format!("\\u{:04x}-\\u{:04x}", *first as u32, *last as u32),
            })
            .collect();
        format!("^[^\\u0000]*[^{class}][^\\u0000]*$")
    }

    #[test]
    fn the_body_pattern_is_the_rule_of_visible_characters() {
        let doc: serde_json::Value = serde_json::from_str(super::OPENAPI_JSON).unwrap();
        for schema in ["SendMessageRequest", "EditMessageRequest"] {
            assert_eq!(
                doc["components"]["schemas"][schema]["properties"]["body"]["pattern"],
                body_pattern(),
                "{schema}"
            );
        }
    }

    /// The events the stream sends are the ones the document names, with their schemas.
    #[test]
    fn the_stream_events_are_documented() {
        use crate::http::routes::{SSE_STREAM_ERROR, SSE_SUMMARY};
        let doc: serde_json::Value = serde_json::from_str(super::OPENAPI_JSON).unwrap();
        let events = &doc["paths"]["/api/v1/chat/unread-summary/stream"]["get"]["responses"]["200"]
            ["x-sse-events"];
        let named = events.as_object().expect("x-sse-events");
        assert_eq!(named.len(), 2, "{events}");
        assert_eq!(
            events[SSE_SUMMARY]["$ref"],
            "#/components/schemas/SummaryEvent"
        );
        assert_eq!(
            events[SSE_STREAM_ERROR]["$ref"],
            "#/components/schemas/Error"
        );
        assert!(doc["components"]["schemas"]["SummaryEvent"].is_object());
    }
}
