//! Bad arguments: INVALID_ARGUMENT with a message and a BadRequest that name the field.

use chatd::grpc::pb::{
    EnsureThreadRequest, ListMessagesRequest, SendMessageRequest, UpsertRelationRequest,
};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::helpers::{
    TestApp, assert_error, ensure_inquiry, ensure_relation, mark_read, send, summary,
};

#[track_caller]
fn assert_invalid<T: std::fmt::Debug>(result: Result<T, Status>, field: &str) {
    let status = assert_error(result, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert!(
        status.message().starts_with(field),
        "message {:?} names {field}",
        status.message()
    );
    let violations = status
        .get_details_bad_request()
        .expect("BadRequest")
        .field_violations;
    assert_eq!(violations[0].field, field);
}

async fn bad_arguments_name_the_field(app: TestApp) {
    let thread = app.contact_thread(10, 42, 7).await;
    let mut tutor = app.tutor(42);

    assert_invalid(
        tutor
            .ensure_thread(EnsureThreadRequest { target: None })
            .await,
        "target",
    );
    assert_invalid(tutor.ensure_thread(ensure_relation(0)).await, "relation_id");
    assert_invalid(tutor.ensure_thread(ensure_inquiry(-5)).await, "inquiry_id");

    assert_invalid(tutor.send_message(send(0, "x")).await, "thread_id");
    assert_invalid(tutor.send_message(send(thread.thread_id, "")).await, "body");
    assert_invalid(
        tutor.send_message(send(thread.thread_id, " \n\t ")).await,
        "body",
    );
    assert_invalid(
        tutor
            .send_message(send(thread.thread_id, &"a".repeat(4001)))
            .await,
        "body",
    );
    tutor
        .send_message(send(thread.thread_id, &"a".repeat(4000)))
        .await
        .expect("4000 characters are fine");
    let long_key = SendMessageRequest {
        thread_id: thread.thread_id,
        body: "x".into(),
        client_message_id: "k".repeat(65),
    };
    assert_invalid(tutor.send_message(long_key).await, "client_message_id");

    for limit in [-1, 201] {
        assert_invalid(tutor.get_unread_summary(summary(limit)).await, "limit");
        let list = ListMessagesRequest {
            thread_id: thread.thread_id,
            before_seq: None,
            limit,
        };
        assert_invalid(tutor.list_messages(list).await, "limit");
    }
    tutor
        .get_unread_summary(summary(200))
        .await
        .expect("200 is the maximum");

    assert_invalid(tutor.mark_read(mark_read(-1, None)).await, "thread_id");
    assert_invalid(
        tutor.mark_read(mark_read(thread.thread_id, Some(-1))).await,
        "up_to_seq",
    );

    let mut sync = app.sync();
    let unspecified = UpsertRelationRequest {
        relation_id: 11,
        tutor_id: 42,
        student_id: 7,
        status: 0,
        version: 1,
    };
    assert_invalid(sync.upsert_relation(unspecified).await, "status");
    let unknown = UpsertRelationRequest {
        status: 99,
        ..unspecified
    };
    assert_invalid(sync.upsert_relation(unknown).await, "status");
    let no_tutor = UpsertRelationRequest {
        tutor_id: 0,
        status: 2,
        ..unspecified
    };
    assert_invalid(sync.upsert_relation(no_tutor).await, "tutor_id");
    let negative_version = UpsertRelationRequest {
        version: -1,
        status: 2,
        ..unspecified
    };
    assert_invalid(sync.upsert_relation(negative_version).await, "version");
}

/// A NUL character in text is refused, the same on both backends (PostgreSQL cannot
/// store it, SQLite would), over gRPC and REST, naming the field.
async fn nul_in_text_is_refused_naming_the_field(app: TestApp) {
    let thread = app.contact_thread(10, 42, 7).await;
    let mut student = app.student(7);
    assert_invalid(
        student
            .send_message(send(thread.thread_id, "a\u{0}b"))
            .await,
        "body",
    );
    let mut keyed = send(thread.thread_id, "fine");
    keyed.client_message_id = "k\u{0}".into();
    assert_invalid(student.send_message(keyed).await, "client_message_id");
    let answer = reqwest::Client::new()
        .post(app.url(&format!(
            "/api/v1/chat/threads/{}/messages/",
            thread.thread_id
        )))
        .header("authorization", app.bearer(7, chatd::domain::Role::Student))
        .json(&serde_json::json!({ "body": "a\u{0}b" }))
        .send()
        .await
        .expect("the gateway answers");
    assert_eq!(answer.status(), 400);
    let body: serde_json::Value = answer.json().await.expect("a JSON error");
    assert_eq!(body["code"], "INVALID_ARGUMENT");
    assert_eq!(body["field"], "body");
    // Nothing was stored.
    let page = student
        .list_messages(ListMessagesRequest {
            thread_id: thread.thread_id,
            before_seq: None,
            limit: 0,
        })
        .await
        .expect("list")
        .into_inner();
    assert!(page.messages.is_empty());
}

/// A relation, inquiry or contact access whose tutor is its student is refused: their
/// own messages would count as unread for themselves.
async fn a_tutor_cannot_be_their_own_student(app: TestApp) {
    let mut sync = app.sync();
    let relation = UpsertRelationRequest {
        relation_id: 3,
        tutor_id: 3,
        student_id: 3,
        status: 2,
        version: 1,
    };
    assert_invalid(sync.upsert_relation(relation).await, "student_id");
    let inquiry = chatd::grpc::pb::UpsertInquiryRequest {
        inquiry_id: 3,
        tutor_id: 3,
        student_id: 3,
        status: 1,
        version: 1,
    };
    assert_invalid(sync.upsert_inquiry(inquiry).await, "student_id");
    let access = chatd::grpc::pb::UpsertContactAccessRequest {
        tutor_id: 3,
        student_id: 3,
        state: 2,
        version: 1,
    };
    assert_invalid(sync.upsert_contact_access(access).await, "student_id");
}

backend_suite!(
    nul_in_text_is_refused_naming_the_field,
    a_tutor_cannot_be_their_own_student,
    bad_arguments_name_the_field
);
