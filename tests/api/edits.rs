//! EditMessage, DeleteMessage, RemoveMessage and MarkUnread: who may, what stays (a
//! tombstone in place), and what every count and preview does after.

use chatd::grpc::pb::{
    self, DeleteMessageRequest, EditMessageRequest, ListMessagesRequest, MarkUnreadRequest,
    RelationStatus, RemoveMessageRequest, SendMessageRequest,
};
use tonic::Code;

use crate::helpers::{ChatClient, ChatClientExt, TestApp, assert_error, mark_read};

const TUTOR: i64 = 42;
const STUDENT: i64 = 7;

fn edit(thread_id: i64, seq: i64, body: &str) -> EditMessageRequest {
    EditMessageRequest {
        thread_id,
        seq,
        body: body.into(),
    }
}

fn delete(thread_id: i64, seq: i64) -> DeleteMessageRequest {
    DeleteMessageRequest { thread_id, seq }
}

async fn edited(client: &mut ChatClient, request: EditMessageRequest) -> pb::Message {
    client
        .edit_message(request)
        .await
        .expect("edit succeeds")
        .into_inner()
        .message
        .expect("a message")
}

async fn deleted(client: &mut ChatClient, request: DeleteMessageRequest) -> pb::Message {
    client
        .delete_message(request)
        .await
        .expect("delete succeeds")
        .into_inner()
        .message
        .expect("a message")
}

/// The thread's messages, oldest first, as `client` lists them.
async fn messages(client: &mut ChatClient, thread_id: i64) -> Vec<pb::Message> {
    let mut page = client
        .list_messages(ListMessagesRequest {
            thread_id,
            before_seq: None,
            after_seq: None,
            limit: 200,
        })
        .await
        .expect("list succeeds")
        .into_inner()
        .messages;
    page.reverse();
    page
}

async fn an_edit_changes_the_body_and_nothing_it_counts(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    let first = app.student(STUDENT).say(thread.thread_id, "helo").await;
    let before = app.tutor(TUTOR).unread().await;
    let message = edited(
        &mut app.student(STUDENT),
        edit(thread.thread_id, 1, "hello"),
    )
    .await;
    assert_eq!(message.body, "hello");
    assert_eq!((message.seq, message.message_id), (1, first.message_id));
    assert_eq!(message.created_at, first.created_at, "created_at stays");
    assert!(message.edited_at.is_some());
    assert!(!message.deleted);
    let after = app.tutor(TUTOR).unread().await;
    assert_eq!(after.total, 1, "an edit counts as nothing new");
    assert_eq!(
        after.threads[0].last_message_preview, "hello",
        "the preview follows"
    );
    assert_eq!(
        after.threads[0].last_message_at, before.threads[0].last_message_at,
        "the thread keeps its place"
    );
    assert_ne!(after.etag, before.etag, "the summary changed");

    // Editing an older message leaves the preview with the newest.
    app.student(STUDENT)
        .say(thread.thread_id, "are you there?")
        .await;
    edited(&mut app.student(STUDENT), edit(thread.thread_id, 1, "hi")).await;
    let summary = app.tutor(TUTOR).unread().await;
    assert_eq!(summary.threads[0].last_message_preview, "are you there?");
    assert_eq!(summary.total, 2);
}

async fn only_the_sender_edits_and_deletes(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    app.student(STUDENT).say(thread.thread_id, "mine").await;
    let result = app
        .tutor(TUTOR)
        .edit_message(edit(thread.thread_id, 1, "yours"))
        .await;
    assert_error(result, Code::PermissionDenied, "NOT_MESSAGE_SENDER");
    let result = app
        .tutor(TUTOR)
        .delete_message(delete(thread.thread_id, 1))
        .await;
    assert_error(result, Code::PermissionDenied, "NOT_MESSAGE_SENDER");
    let result = app
        .student(STUDENT)
        .edit_message(edit(thread.thread_id, 2, "x"))
        .await;
    assert_error(result, Code::NotFound, "MESSAGE_NOT_FOUND");
    let result = app
        .student(STUDENT)
        .delete_message(delete(thread.thread_id, 9))
        .await;
    assert_error(result, Code::NotFound, "MESSAGE_NOT_FOUND");
    let result = app
        .student(STUDENT)
        .delete_message(delete(thread.thread_id, 0))
        .await;
    assert_error(result, Code::InvalidArgument, "INVALID_ARGUMENT");
    // A stranger learns nothing: the thread does not exist for them.
    let result = app
        .student(STUDENT + 1)
        .delete_message(delete(thread.thread_id, 1))
        .await;
    assert_error(result, Code::NotFound, "THREAD_NOT_FOUND");
    let result = app
        .student(STUDENT + 1)
        .edit_message(edit(thread.thread_id, 1, "x"))
        .await;
    assert_error(result, Code::NotFound, "THREAD_NOT_FOUND");
    // Bodies follow the rules of sending.
    let result = app
        .student(STUDENT)
        .edit_message(edit(thread.thread_id, 1, "\u{200B}\u{FEFF}"))
        .await;
    assert_error(result, Code::InvalidArgument, "INVALID_ARGUMENT");
}

async fn a_deleted_message_is_a_tombstone_in_place(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    let sent = app
        .student(STUDENT)
        .send(SendMessageRequest {
            thread_id: thread.thread_id,
            body: "oops".into(),
            client_message_id: "k-1".into(),
        })
        .await;
    app.student(STUDENT).say(thread.thread_id, "second").await;
    let tombstone = deleted(&mut app.student(STUDENT), delete(thread.thread_id, 1)).await;
    assert!(tombstone.deleted && tombstone.deleted_at.is_some());
    assert_eq!(tombstone.body, "");
    assert_eq!(
        (tombstone.seq, tombstone.sender_id, tombstone.created_at),
        (1, STUDENT, sent.created_at)
    );
    // Again: the same tombstone.
    let again = deleted(&mut app.student(STUDENT), delete(thread.thread_id, 1)).await;
    assert_eq!(again, tombstone);
    // A retry of the original send answers the tombstone: nothing comes back to life.
    let retry = app
        .student(STUDENT)
        .send(SendMessageRequest {
            thread_id: thread.thread_id,
            body: "oops".into(),
            client_message_id: "k-1".into(),
        })
        .await;
    assert_eq!(retry, tombstone);
    // ListMessages keeps it in place: seqs have no gap.
    let listed = messages(&mut app.tutor(TUTOR), thread.thread_id).await;
    let seqs: Vec<(i64, bool)> = listed.iter().map(|m| (m.seq, m.deleted)).collect();
    assert_eq!(seqs, [(1, true), (2, false)]);
    // A deleted message cannot be edited.
    let result = app
        .student(STUDENT)
        .edit_message(edit(thread.thread_id, 1, "back"))
        .await;
    assert_error(result, Code::FailedPrecondition, "MESSAGE_DELETED");
}

async fn deleting_an_unread_message_lowers_the_peers_count_and_preview(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    let other = app.contact_thread(11, TUTOR, STUDENT + 1).await;
    app.student(STUDENT + 1)
        .say(other.thread_id, "elsewhere")
        .await;
    app.student(STUDENT).say(thread.thread_id, "first").await;
    app.student(STUDENT).say(thread.thread_id, "second").await;
    assert_eq!(app.tutor(TUTOR).unread().await.total, 3);

    deleted(&mut app.student(STUDENT), delete(thread.thread_id, 2)).await;
    let summary = app.tutor(TUTOR).unread().await;
    assert_eq!(summary.total, 2, "one fewer unread, in the same write");
    let line = summary
        .threads
        .iter()
        .find(|t| t.thread_id == thread.thread_id)
        .expect("still unread");
    assert_eq!(line.unread_count, 1);
    assert_eq!(
        line.last_message_preview, "first",
        "falls back to the newest left"
    );

    deleted(&mut app.student(STUDENT), delete(thread.thread_id, 1)).await;
    let summary = app.tutor(TUTOR).unread().await;
    assert_eq!(summary.total, 1);
    assert!(
        summary
            .threads
            .iter()
            .all(|t| t.thread_id != thread.thread_id)
    );

    // A message the peer has read lowers nothing.
    app.student(STUDENT).say(thread.thread_id, "third").await;
    app.tutor(TUTOR)
        .mark_read(mark_read(thread.thread_id, None))
        .await
        .unwrap();
    deleted(&mut app.student(STUDENT), delete(thread.thread_id, 3)).await;
    assert_eq!(app.tutor(TUTOR).unread().await.total, 1);
}

async fn deleting_needs_no_writable_thread_but_editing_does(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    app.tutor(TUTOR).say(thread.thread_id, "see you").await;
    app.tutor(TUTOR).say(thread.thread_id, "bye").await;
    app.relation(10, TUTOR, STUDENT, RelationStatus::Archived, 2)
        .await;
    let result = app
        .tutor(TUTOR)
        .edit_message(edit(thread.thread_id, 1, "see ya"))
        .await;
    assert_error(result, Code::FailedPrecondition, "THREAD_NOT_WRITABLE");
    let tombstone = deleted(&mut app.tutor(TUTOR), delete(thread.thread_id, 2)).await;
    assert!(tombstone.deleted);
    // Contact access, too, binds edits as it binds sends.
    let second = app.contact_thread(11, TUTOR, STUDENT + 1).await;
    app.tutor(TUTOR).say(second.thread_id, "hello").await;
    app.contact_access(TUTOR, STUDENT + 1, pb::ContactAccessState::Revoked, 2)
        .await;
    let result = app
        .tutor(TUTOR)
        .edit_message(edit(second.thread_id, 1, "hi"))
        .await;
    assert_error(result, Code::PermissionDenied, "CONTACT_ACCESS_LOCKED");
}

async fn a_moderator_removes_any_message(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    app.student(STUDENT).say(thread.thread_id, "not nice").await;
    let removed = app
        .sync()
        .remove_message(RemoveMessageRequest {
            thread_id: thread.thread_id,
            seq: 1,
        })
        .await
        .expect("remove succeeds")
        .into_inner()
        .message
        .expect("the tombstone");
    assert!(removed.deleted && removed.body.is_empty());
    assert_eq!(removed.sender_id, STUDENT, "the sender stays");
    assert_eq!(app.tutor(TUTOR).unread().await.total, 0);
    let result = app
        .sync()
        .remove_message(RemoveMessageRequest {
            thread_id: thread.thread_id,
            seq: 5,
        })
        .await;
    assert_error(result, Code::NotFound, "MESSAGE_NOT_FOUND");
    let result = app
        .sync()
        .remove_message(RemoveMessageRequest {
            thread_id: 999_999,
            seq: 1,
        })
        .await;
    assert_error(result, Code::NotFound, "THREAD_NOT_FOUND");
    // Users cannot call it: it is SyncService's.
    let mut as_user = chatd::grpc::pb::sync_service_client::SyncServiceClient::with_interceptor(
        app.channel(),
        crate::helpers::Bearer(Some(app.bearer(TUTOR, chatd::domain::Role::Tutor))),
    );
    let result = as_user
        .remove_message(RemoveMessageRequest {
            thread_id: thread.thread_id,
            seq: 1,
        })
        .await;
    assert_error(result, Code::PermissionDenied, "ROLE_NOT_ALLOWED");
}

async fn mark_unread_moves_the_horizon_back_within_a_hundred(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    for n in 1..=4 {
        app.student(STUDENT)
            .say(thread.thread_id, &format!("m{n}"))
            .await;
    }
    app.tutor(TUTOR).say(thread.thread_id, "mine").await;
    assert_eq!(
        app.tutor(TUTOR).unread().await.total,
        0,
        "sending read them"
    );
    let state = app
        .tutor(TUTOR)
        .mark_unread(MarkUnreadRequest {
            thread_id: thread.thread_id,
            from_seq: 3,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state.last_read_seq, 2);
    assert_eq!(state.unread_count, 2, "the peer's 3 and 4, not one's own 5");
    assert_eq!(state.total, 2);
    assert_eq!(app.tutor(TUTOR).unread().await.total, 2);
    // The peer sees the horizon moved.
    let page = app
        .student(STUDENT)
        .list_messages(ListMessagesRequest {
            thread_id: thread.thread_id,
            before_seq: None,
            after_seq: None,
            limit: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.peer_last_read_seq, 2);
    // A deleted message no longer counts.
    deleted(&mut app.student(STUDENT), delete(thread.thread_id, 4)).await;
    assert_eq!(app.tutor(TUTOR).unread().await.total, 1);

    let result = app
        .tutor(TUTOR)
        .mark_unread(MarkUnreadRequest {
            thread_id: thread.thread_id,
            from_seq: 6,
        })
        .await;
    assert_error(result, Code::NotFound, "MESSAGE_NOT_FOUND");
    let result = app
        .tutor(TUTOR)
        .mark_unread(MarkUnreadRequest {
            thread_id: thread.thread_id,
            from_seq: 0,
        })
        .await;
    assert_error(result, Code::InvalidArgument, "INVALID_ARGUMENT");

    for n in 6..=105 {
        app.student(STUDENT)
            .say(thread.thread_id, &format!("m{n}"))
            .await;
    }
    // 105 messages: the newest 100 are 6..=105.
    let result = app
        .tutor(TUTOR)
        .mark_unread(MarkUnreadRequest {
            thread_id: thread.thread_id,
            from_seq: 5,
        })
        .await;
    assert_error(result, Code::FailedPrecondition, "MARK_UNREAD_TOO_FAR");
    let state = app
        .tutor(TUTOR)
        .mark_unread(MarkUnreadRequest {
            thread_id: thread.thread_id,
            from_seq: 6,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state.unread_count, 100);
}

async fn invisible_bodies_are_refused(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    for body in ["\u{200B}", "\u{200D}", "\u{FEFF}\u{2060}", " \u{200C}\n"] {
        let result = app
            .student(STUDENT)
            .send_message(crate::helpers::send(thread.thread_id, body))
            .await;
        let status = assert_error(result, Code::InvalidArgument, "INVALID_ARGUMENT");
        assert!(status.message().starts_with("body:"), "{status:?}");
    }
    app.student(STUDENT)
        .say(thread.thread_id, "a\u{200B}")
        .await;
}

backend_suite!(
    an_edit_changes_the_body_and_nothing_it_counts,
    only_the_sender_edits_and_deletes,
    a_deleted_message_is_a_tombstone_in_place,
    deleting_an_unread_message_lowers_the_peers_count_and_preview,
    deleting_needs_no_writable_thread_but_editing_does,
    a_moderator_removes_any_message,
    mark_unread_moves_the_horizon_back_within_a_hundred,
    invisible_bodies_are_refused,
);
