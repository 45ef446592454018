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
            "/api/v1/chat/unread-summary/",
            "/api/v1/chat/threads/{thread_id}/read/",
            "/api/v1/chat/threads/{thread_id}/messages/",
            "/api/v1/chat/unread-summary/stream",
            "/api/v1/chat/unread-summary/stream-ticket",
        ] {
            assert!(doc["paths"][path].is_object(), "{path} is documented");
        }
    }
}
