//! The seed's ContactThreadTestCase, and negotiation threads: who may open which thread.

use chatd::grpc::pb::{ContactAccessState, InquiryStatus, RelationStatus, ThreadKind};
use tonic::Code;

use crate::helpers::{ChatClientExt, TestApp, assert_error, ensure_inquiry, ensure_relation, send};

const TUTOR: i64 = 42;
const STUDENT: i64 = 7;

async fn relation_must_be_active(app: TestApp) {
    app.contact_access(TUTOR, STUDENT, ContactAccessState::Unlocked, 1)
        .await;
    for (relation_id, status) in [
        (10, RelationStatus::Pending),
        (11, RelationStatus::Archived),
    ] {
        app.relation(relation_id, TUTOR, STUDENT, status, 1).await;
        let result = app
            .tutor(TUTOR)
            .ensure_thread(ensure_relation(relation_id))
            .await;
        assert_error(result, Code::FailedPrecondition, "RELATION_NOT_ACTIVE");
        let result = app
            .student(STUDENT)
            .ensure_thread(ensure_relation(relation_id))
            .await;
        assert_error(result, Code::FailedPrecondition, "RELATION_NOT_ACTIVE");
    }
}

async fn tutor_needs_unlocked_contact_access(app: TestApp) {
    app.relation(10, TUTOR, STUDENT, RelationStatus::Active, 1)
        .await;
    // No contact access at all, then LOCKED, then REVOKED: all refused.
    let result = app.tutor(TUTOR).ensure_thread(ensure_relation(10)).await;
    assert_error(result, Code::PermissionDenied, "CONTACT_ACCESS_LOCKED");
    for (version, state) in [
        (1, ContactAccessState::Locked),
        (3, ContactAccessState::Revoked),
    ] {
        app.contact_access(TUTOR, STUDENT, state, version).await;
        let result = app.tutor(TUTOR).ensure_thread(ensure_relation(10)).await;
        assert_error(result, Code::PermissionDenied, "CONTACT_ACCESS_LOCKED");
    }
    app.contact_access(TUTOR, STUDENT, ContactAccessState::Unlocked, 4)
        .await;
    let response = app
        .tutor(TUTOR)
        .ensure_thread(ensure_relation(10))
        .await
        .unwrap()
        .into_inner();
    let thread = response.thread.unwrap();
    assert!(response.created);
    assert_eq!(thread.kind(), ThreadKind::Contact);
    assert_eq!(thread.relation_id, Some(10));
    assert_eq!(thread.inquiry_id, None);
    assert_eq!((thread.tutor_id, thread.student_id), (TUTOR, STUDENT));
    assert!(thread.is_writable);
    assert!(thread.created_at.is_some());
}

async fn ensure_is_idempotent(app: TestApp) {
    let first = app.contact_thread(10, TUTOR, STUDENT).await;
    let again = app
        .tutor(TUTOR)
        .ensure_thread(ensure_relation(10))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.created, "the second ensure must not create");
    assert_eq!(again.thread.unwrap().thread_id, first.thread_id);
    let by_student = app
        .student(STUDENT)
        .ensure_thread(ensure_relation(10))
        .await
        .unwrap()
        .into_inner();
    assert!(!by_student.created);
    assert_eq!(by_student.thread.unwrap().thread_id, first.thread_id);
}

async fn student_needs_no_contact_access(app: TestApp) {
    app.relation(10, TUTOR, STUDENT, RelationStatus::Active, 1)
        .await;
    app.contact_access(TUTOR, STUDENT, ContactAccessState::Revoked, 1)
        .await;
    let response = app
        .student(STUDENT)
        .ensure_thread(ensure_relation(10))
        .await
        .unwrap()
        .into_inner();
    assert!(response.created);
    assert_eq!(response.thread.unwrap().student_id, STUDENT);
}

async fn tutors_are_isolated(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    const OTHER_TUTOR: i64 = 43;
    app.contact_access(OTHER_TUTOR, STUDENT, ContactAccessState::Unlocked, 1)
        .await;
    // Another tutor cannot open, read or write the relation's thread: it does not exist for them.
    let result = app
        .tutor(OTHER_TUTOR)
        .ensure_thread(ensure_relation(10))
        .await;
    assert_error(result, Code::NotFound, "RELATION_NOT_FOUND");
    let result = app
        .tutor(OTHER_TUTOR)
        .send_message(send(thread.thread_id, "hi"))
        .await;
    assert_error(result, Code::NotFound, "THREAD_NOT_FOUND");
    // The tutor's id with a student token is a different caller too.
    let result = app.student(TUTOR).ensure_thread(ensure_relation(10)).await;
    assert_error(result, Code::NotFound, "RELATION_NOT_FOUND");
    // The other tutor's own relation with the same student gets a separate thread.
    let other = app.contact_thread(20, OTHER_TUTOR, STUDENT).await;
    assert_ne!(other.thread_id, thread.thread_id);
}

async fn contact_thread_writable_follows_relation(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    app.student(STUDENT)
        .say(thread.thread_id, "ok while active")
        .await;
    for (version, status) in [(2, RelationStatus::Archived), (3, RelationStatus::Pending)] {
        app.relation(10, TUTOR, STUDENT, status, version).await;
        let result = app
            .student(STUDENT)
            .send_message(send(thread.thread_id, "now?"))
            .await;
        assert_error(result, Code::FailedPrecondition, "THREAD_NOT_WRITABLE");
        let result = app.tutor(TUTOR).ensure_thread(ensure_relation(10)).await;
        assert_error(result, Code::FailedPrecondition, "RELATION_NOT_ACTIVE");
    }
    app.relation(10, TUTOR, STUDENT, RelationStatus::Active, 4)
        .await;
    app.student(STUDENT)
        .say(thread.thread_id, "active again")
        .await;
}

async fn negotiation_thread_writable_follows_inquiry(app: TestApp) {
    let cases = [
        (InquiryStatus::Open, true),
        (InquiryStatus::Accepted, true),
        (InquiryStatus::Declined, false),
        (InquiryStatus::Closed, false),
    ];
    app.inquiry(5, TUTOR, STUDENT, InquiryStatus::Open, 1).await;
    let first = app
        .student(STUDENT)
        .ensure_thread(ensure_inquiry(5))
        .await
        .unwrap()
        .into_inner();
    assert!(first.created);
    let thread = first.thread.unwrap();
    assert_eq!(thread.kind(), ThreadKind::Negotiation);
    assert_eq!((thread.inquiry_id, thread.relation_id), (Some(5), None));
    for (version, (status, writable)) in (2..).zip(cases) {
        app.inquiry(5, TUTOR, STUDENT, status, version).await;
        // A tutor needs no contact access for a negotiation thread.
        let ensured = app
            .tutor(TUTOR)
            .ensure_thread(ensure_inquiry(5))
            .await
            .unwrap()
            .into_inner();
        let ensured_thread = ensured.thread.unwrap();
        assert_eq!(ensured_thread.thread_id, thread.thread_id);
        assert_eq!(ensured_thread.is_writable, writable, "inquiry {status:?}");
        let sent = app
            .tutor(TUTOR)
            .send_message(send(thread.thread_id, "hello"))
            .await;
        if writable {
            sent.unwrap();
        } else {
            assert_error(sent, Code::FailedPrecondition, "THREAD_NOT_WRITABLE");
        }
    }
}

async fn inquiry_thread_only_for_its_participants(app: TestApp) {
    app.inquiry(5, TUTOR, STUDENT, InquiryStatus::Open, 1).await;
    let result = app.tutor(43).ensure_thread(ensure_inquiry(5)).await;
    assert_error(result, Code::NotFound, "INQUIRY_NOT_FOUND");
    let result = app.student(STUDENT).ensure_thread(ensure_inquiry(6)).await;
    assert_error(result, Code::NotFound, "INQUIRY_NOT_FOUND");
}

async fn tutor_send_needs_contact_access_on_contact_thread(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    app.contact_access(TUTOR, STUDENT, ContactAccessState::Revoked, 2)
        .await;
    let result = app
        .tutor(TUTOR)
        .send_message(send(thread.thread_id, "still there?"))
        .await;
    assert_error(result, Code::PermissionDenied, "CONTACT_ACCESS_LOCKED");
    // The student may still write while the relation is active.
    app.student(STUDENT).say(thread.thread_id, "yes").await;
}

backend_suite!(
    relation_must_be_active,
    tutor_needs_unlocked_contact_access,
    ensure_is_idempotent,
    student_needs_no_contact_access,
    tutors_are_isolated,
    contact_thread_writable_follows_relation,
    negotiation_thread_writable_follows_inquiry,
    inquiry_thread_only_for_its_participants,
    tutor_send_needs_contact_access_on_contact_thread,
);
