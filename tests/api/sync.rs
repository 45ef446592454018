//! SyncService: versioned upserts that tolerate late and repeated events.

use chatd::grpc::pb::{
    ContactAccessState, InquiryStatus, RelationStatus, UpsertInquiryRequest, UpsertRelationRequest,
};
use tonic::Code;

use crate::helpers::{TestApp, assert_error, ensure_relation, send};

async fn stale_and_duplicate_upserts_change_nothing(app: TestApp) {
    assert!(app.relation(10, 42, 7, RelationStatus::Active, 5).await);
    assert!(
        !app.relation(10, 42, 7, RelationStatus::Active, 5).await,
        "duplicate"
    );
    assert!(
        !app.relation(10, 42, 7, RelationStatus::Archived, 4).await,
        "late"
    );
    assert!(
        app.contact_access(42, 7, ContactAccessState::Unlocked, 2)
            .await
    );
    assert!(
        !app.contact_access(42, 7, ContactAccessState::Revoked, 1)
            .await,
        "late"
    );
    // The late ARCHIVED and REVOKED did not land: the tutor can still open the thread.
    let thread = app
        .tutor(42)
        .ensure_thread(ensure_relation(10))
        .await
        .unwrap()
        .into_inner()
        .thread
        .unwrap();
    assert!(thread.is_writable);
    assert!(
        app.relation(10, 42, 7, RelationStatus::Archived, 6).await,
        "newer applies"
    );
    let result = app
        .tutor(42)
        .send_message(send(thread.thread_id, "x"))
        .await;
    assert_error(result, Code::FailedPrecondition, "THREAD_NOT_WRITABLE");

    assert!(app.inquiry(5, 42, 7, InquiryStatus::Open, 1).await);
    assert!(
        !app.inquiry(5, 42, 7, InquiryStatus::Closed, 1).await,
        "duplicate version"
    );
}

async fn participants_are_immutable(app: TestApp) {
    app.relation(10, 42, 7, RelationStatus::Active, 1).await;
    let repoint = UpsertRelationRequest {
        relation_id: 10,
        tutor_id: 43,
        student_id: 7,
        status: RelationStatus::Active.into(),
        version: 2,
    };
    let result = app.sync().upsert_relation(repoint).await;
    assert_error(result, Code::FailedPrecondition, "PARTICIPANTS_IMMUTABLE");
    // Refused even when the version is stale: re-pointing is never allowed.
    let stale = UpsertRelationRequest {
        version: 1,
        student_id: 8,
        tutor_id: 42,
        ..repoint
    };
    assert_error(
        app.sync().upsert_relation(stale).await,
        Code::FailedPrecondition,
        "PARTICIPANTS_IMMUTABLE",
    );

    app.inquiry(5, 42, 7, InquiryStatus::Open, 1).await;
    let repoint = UpsertInquiryRequest {
        inquiry_id: 5,
        tutor_id: 42,
        student_id: 8,
        status: InquiryStatus::Accepted.into(),
        version: 2,
    };
    let result = app.sync().upsert_inquiry(repoint).await;
    assert_error(result, Code::FailedPrecondition, "PARTICIPANTS_IMMUTABLE");
}

backend_suite!(
    stale_and_duplicate_upserts_change_nothing,
    participants_are_immutable
);
