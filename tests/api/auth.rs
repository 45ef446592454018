//! Bearer tokens: missing, malformed, expired or forged tokens are UNAUTHENTICATED; the
//! wrong role is PERMISSION_DENIED.

use std::time::{Duration, SystemTime};

use chatd::auth::TokenSigner;
use chatd::domain::Role;
use chatd::grpc::pb::UpsertRelationRequest;
use chatd::grpc::pb::sync_service_client::SyncServiceClient;
use tonic::Code;

use crate::helpers::{Bearer, SECRET, TestApp, assert_error, epoch_seconds, signed, summary};

/// An UpsertRelation any service could send.
fn any_relation() -> UpsertRelationRequest {
    UpsertRelationRequest {
        relation_id: 1,
        tutor_id: 42,
        student_id: 7,
        status: 2,
        version: 1,
    }
}

async fn tokens_are_checked(app: TestApp) {
    let result = app
        .chat_with_header(None)
        .get_unread_summary(summary(0))
        .await;
    assert_error(result, Code::Unauthenticated, "TOKEN_MISSING");

    let result = app
        .chat_with_header(Some("Basic abc".into()))
        .get_unread_summary(summary(0))
        .await;
    assert_error(result, Code::Unauthenticated, "TOKEN_INVALID");
    let result = app
        .chat_with_header(Some("Bearer not.a.jwt".into()))
        .get_unread_summary(summary(0))
        .await;
    assert_error(result, Code::Unauthenticated, "TOKEN_INVALID");

    let signer = TokenSigner::from_secret(SECRET.as_bytes(), None, None);
    let expired = signer
        .sign_until(
            42,
            Role::Tutor,
            SystemTime::now() - Duration::from_secs(3600),
        )
        .unwrap();
    let result = app
        .chat_with_header(Some(format!("Bearer {expired}")))
        .get_unread_summary(summary(0))
        .await;
    assert_error(result, Code::Unauthenticated, "TOKEN_EXPIRED");

    let forger = TokenSigner::from_secret(b"another-secret-another-secret-another", None, None);
    let forged = forger
        .sign(42, Role::Tutor, Duration::from_secs(60))
        .unwrap();
    let result = app
        .chat_with_header(Some(format!("Bearer {forged}")))
        .get_unread_summary(summary(0))
        .await;
    assert_error(result, Code::Unauthenticated, "TOKEN_INVALID");

    let valid = app.tutor(42).get_unread_summary(summary(0)).await;
    assert!(valid.is_ok(), "{valid:?}");
}

async fn roles_are_checked(app: TestApp) {
    let request = any_relation();
    let service = app.token(1, Role::Service);
    let result = app
        .chat_with_header(Some(format!("Bearer {service}")))
        .get_unread_summary(summary(0))
        .await;
    assert_error(result, Code::PermissionDenied, "ROLE_NOT_ALLOWED");

    for role in [Role::Tutor, Role::Student] {
        let token = app.token(42, role);
        let mut client = SyncServiceClient::with_interceptor(
            app.channel(),
            Bearer(Some(format!("Bearer {token}"))),
        );
        assert_error(
            client.upsert_relation(request).await,
            Code::PermissionDenied,
            "ROLE_NOT_ALLOWED",
        );
    }
    let mut anonymous = SyncServiceClient::with_interceptor(app.channel(), Bearer(None));
    assert_error(
        anonymous.upsert_relation(request).await,
        Code::Unauthenticated,
        "TOKEN_MISSING",
    );
}

/// A correctly signed token whose role chatd does not know is a known caller without
/// the right: PERMISSION_DENIED, not UNAUTHENTICATED (which would send the client to
/// log in again, forever).
async fn an_unknown_role_is_permission_denied(app: TestApp) {
    let admin =
        signed(serde_json::json!({ "sub": "42", "role": "admin", "exp": epoch_seconds(600) }));
    let result = app
        .chat_with_header(Some(format!("Bearer {admin}")))
        .get_unread_summary(summary(0))
        .await;
    let status = assert_error(result, Code::PermissionDenied, "ROLE_NOT_ALLOWED");
    assert!(status.message().contains("admin"), "{status:?}");
    let mut sync =
        SyncServiceClient::with_interceptor(app.channel(), Bearer(Some(format!("Bearer {admin}"))));
    let request = any_relation();
    assert_error(
        sync.upsert_relation(request).await,
        Code::PermissionDenied,
        "ROLE_NOT_ALLOWED",
    );
}

/// Tokens chatd must refuse although correctly signed: not valid yet (a future nbf),
/// or a `sub` that is not the one canonical way to write a user id (so "+10000" and
/// "010000" do not also mean user 10000). Refusals say what is wrong in the contract's
/// words, never the token parser's.
async fn odd_tokens_are_refused_in_plain_words(app: TestApp) {
    let call = |token: String| {
        let mut client = app.chat_with_header(Some(format!("Bearer {token}")));
        async move { client.get_unread_summary(summary(0)).await }
    };
    let later = signed(serde_json::json!({
        "sub": "42", "role": "tutor", "exp": epoch_seconds(7200), "nbf": epoch_seconds(3600)
    }));
    let status = assert_error(call(later).await, Code::Unauthenticated, "TOKEN_INVALID");
    assert!(status.message().contains("not valid yet"), "{status:?}");
    for sub in ["+10000", "010000"] {
        let odd =
            signed(serde_json::json!({ "sub": sub, "role": "tutor", "exp": epoch_seconds(600) }));
        let status = assert_error(call(odd).await, Code::Unauthenticated, "TOKEN_INVALID");
        assert!(
            status.message().contains("decimal digits"),
            "{sub}: {status:?}"
        );
    }
    // alg "none": no signature at all.
    let unsigned = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiI0MiIsInJvbGUiOiJ0dXRvciIsImV4cCI6OTk5OTk5OTk5OX0.";
    let status = assert_error(
        call(unsigned.into()).await,
        Code::Unauthenticated,
        "TOKEN_INVALID",
    );
    assert!(status.message().contains("alg must be HS256"), "{status:?}");
    assert!(
        !status.message().contains("variant"),
        "no parser internals: {status:?}"
    );
    let canonical =
        signed(serde_json::json!({ "sub": "10000", "role": "tutor", "exp": epoch_seconds(600) }));
    assert!(call(canonical).await.is_ok());
    // A user id a browser would round is no user id.
    let past_json = signed(
        serde_json::json!({ "sub": "9007199254740992", "role": "tutor", "exp": epoch_seconds(600) }),
    );
    let status = assert_error(
        call(past_json).await,
        Code::Unauthenticated,
        "TOKEN_INVALID",
    );
    assert!(status.message().contains("9007199254740991"), "{status:?}");
    let largest = signed(
        serde_json::json!({ "sub": "9007199254740991", "role": "tutor", "exp": epoch_seconds(600) }),
    );
    assert!(call(largest).await.is_ok());
}

/// A 100 KB token is refused in gRPC's terms, INVALID_ARGUMENT `HEADERS_TOO_LARGE`
/// saying the limit, not as HTTP/2's bare 431 (which a gRPC client reports as UNKNOWN);
/// metadata just under 64 KiB is read.
async fn an_oversized_token_gets_a_grpc_status(app: TestApp) {
    let mut huge = app.chat_with_header(Some(format!("Bearer {}", "a".repeat(100_000))));
    let status = assert_error(
        huge.get_unread_summary(summary(0)).await,
        Code::InvalidArgument,
        "HEADERS_TOO_LARGE",
    );
    assert!(status.message().contains("65536"), "{status:?}");

    let mut request = tonic::Request::new(summary(0));
    let pad = "p".repeat(60 * 1024).parse().unwrap();
    request.metadata_mut().insert("x-pad", pad);
    assert!(app.tutor(42).get_unread_summary(request).await.is_ok());
}

backend_suite!(
    an_oversized_token_gets_a_grpc_status,
    tokens_are_checked,
    roles_are_checked,
    an_unknown_role_is_permission_denied,
    odd_tokens_are_refused_in_plain_words,
);
