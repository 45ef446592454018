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
            after_seq: None,
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

    // Ids past 2^53 - 1 would be rounded by every browser's JSON: refused where they
    // enter, the largest exact one accepted.
    const PAST_JSON: i64 = 9_007_199_254_740_995;
    for (field, request) in [
        (
            "relation_id",
            UpsertRelationRequest {
                relation_id: PAST_JSON,
                status: 2,
                ..unspecified
            },
        ),
        (
            "tutor_id",
            UpsertRelationRequest {
                tutor_id: PAST_JSON,
                status: 2,
                ..unspecified
            },
        ),
        (
            "student_id",
            UpsertRelationRequest {
                student_id: PAST_JSON,
                status: 2,
                ..unspecified
            },
        ),
    ] {
        let status = assert_error(
            sync.upsert_relation(request).await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        assert!(status.message().starts_with(field), "{status:?}");
        assert!(status.message().contains("9007199254740991"), "{status:?}");
    }
    let largest = UpsertRelationRequest {
        relation_id: 9_007_199_254_740_991,
        status: 2,
        ..unspecified
    };
    assert!(sync.upsert_relation(largest).await.is_ok());
    assert_invalid(
        tutor.ensure_thread(ensure_relation(PAST_JSON)).await,
        "relation_id",
    );
    let (status, body) = crate::gateway::call(
        crate::gateway::client()
            .post(app.url("/api/v1/chat/threads/negotiation/"))
            .header("authorization", app.bearer(42, chatd::domain::Role::Tutor))
            .json(&serde_json::json!({ "relation_id": PAST_JSON })),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "relation_id", "{body}");
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
            after_seq: None,
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

/// Sends `message` as it is (any bytes) to `path`, as `app`'s student 7.
async fn raw_call(app: &TestApp, path: &'static str, message: Vec<u8>) -> Result<(), Status> {
    struct Raw;
    impl tonic::codec::Codec for Raw {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = Raw;
        type Decoder = Raw;
        fn encoder(&mut self) -> Raw {
            Raw
        }
        fn decoder(&mut self) -> Raw {
            Raw
        }
    }
    impl tonic::codec::Encoder for Raw {
        type Item = Vec<u8>;
        type Error = Status;
        fn encode(
            &mut self,
            item: Vec<u8>,
            dst: &mut tonic::codec::EncodeBuf<'_>,
        ) -> Result<(), Status> {
            use prost::bytes::BufMut;
            dst.put_slice(&item);
            Ok(())
        }
    }
    impl tonic::codec::Decoder for Raw {
        type Item = Vec<u8>;
        type Error = Status;
        fn decode(
            &mut self,
            src: &mut tonic::codec::DecodeBuf<'_>,
        ) -> Result<Option<Vec<u8>>, Status> {
            use prost::bytes::Buf;
            Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
        }
    }
    let mut grpc = tonic::client::Grpc::new(app.channel()).max_encoding_message_size(usize::MAX);
    grpc.ready().await.expect("ready");
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        app.bearer(7, chatd::domain::Role::Student).parse().unwrap(),
    );
    grpc.unary(request, http::uri::PathAndQuery::from_static(path), Raw)
        .await
        .map(drop)
}

/// A request the server cannot decode is the client's fault: INVALID_ARGUMENT
/// `MALFORMED_REQUEST`, and one over the size limit RESOURCE_EXHAUSTED
/// `REQUEST_TOO_LARGE`, both with ErrorInfo (they were INTERNAL and OUT_OF_RANGE).
async fn undecodable_and_oversized_requests_are_the_clients_fault(app: TestApp) {
    const SEND: &str = "/chat.v1.ChatService/SendMessage";
    let thread = app.contact_thread(10, 42, 7).await;
    let id = thread.thread_id as u8;
    for (what, bytes) in [
        // thread_id = id, body = the bytes FF FE, which are not UTF-8
        ("invalid UTF-8", vec![0x08, id, 0x12, 0x02, 0xff, 0xfe]),
        // body declared 5 bytes long, 1 sent
        ("truncated", vec![0x08, id, 0x12, 0x05, 0x61]),
        ("random bytes", vec![0xff; 16]),
    ] {
        let status = assert_error(
            raw_call(&app, SEND, bytes).await,
            Code::InvalidArgument,
            "MALFORMED_REQUEST",
        );
        assert!(
            status.message().contains("cannot be decoded"),
            "{what}: {status:?}"
        );
    }
    // thread_id = id, body = 100 KiB
    let mut huge = vec![0x08, id, 0x12, 0x80, 0x80, 0x06];
    huge.extend(std::iter::repeat_n(b'a', 100 * 1024));
    assert_error(
        raw_call(&app, SEND, huge).await,
        Code::ResourceExhausted,
        "REQUEST_TOO_LARGE",
    );
    // Nothing was stored, and a well-formed message still goes through.
    let mut student = app.student(7);
    let sent = student
        .send_message(send(thread.thread_id, "fine"))
        .await
        .expect("a good send");
    assert_eq!(sent.into_inner().message.unwrap().seq, 1);
}

backend_suite!(
    undecodable_and_oversized_requests_are_the_clients_fault,
    nul_in_text_is_refused_naming_the_field,
    a_tutor_cannot_be_their_own_student,
    bad_arguments_name_the_field
);
