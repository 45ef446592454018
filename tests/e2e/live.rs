//! The open chat window, live, in two browsers: typing, a message appearing with no
//! reload and no fetch, "seen", an edit and a delete followed, the composer disabling
//! itself when contact is revoked, and a cut network healed with nothing missing or
//! shown twice.

use chatd::domain::Role;
use chatd::grpc::pb;
use chatd::grpc::pb::chat_service_client::ChatServiceClient;
use serde_json::json;

use crate::stage::*;

/// The student edits their message from another client (a phone).
async fn student_edits(stage: &Stage, relation: i64, student: i64, seq: i64, body: &str) {
    let mut chat = ChatServiceClient::new(stage.channel.clone());
    let ensure = pb::EnsureThreadRequest {
        target: Some(pb::ensure_thread_request::Target::RelationId(relation)),
    };
    let thread = chat
        .ensure_thread(stage.metadata(ensure, student, Role::Student))
        .await
        .expect("the student's thread")
        .into_inner()
        .thread
        .expect("a thread");
    let edit = pb::EditMessageRequest {
        thread_id: thread.thread_id,
        seq,
        body: body.to_owned(),
    };
    chat.edit_message(stage.metadata(edit, student, Role::Student))
        .await
        .expect("the edit is stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium: cargo test --test e2e -- --ignored --test-threads=1"]
async fn the_open_window_is_live() {
    let mut stage = Stage::start("live-window").await;
    let (tutor, student, relation) = (92, 57, 60);
    stage.may_chat(relation, tutor, student).await;
    let tutor_page = stage
        .signed_in("tutor", tutor, Role::Tutor, relation, "stream")
        .await;
    let student_page = stage
        .signed_in("student", student, Role::Student, relation, "stream")
        .await;
    for page in [&tutor_page, &student_page] {
        page.wait_for(
            "the chat button enabled",
            CHAT_BUTTON_DISABLED,
            json!(false),
        )
        .await;
        page.click("#chat-button").await;
        page.wait_for("the window's stream", WINDOW_STREAMS, json!(1))
            .await;
        page.wait_for("the messages loaded once", LIST_FETCHES, json!(1))
            .await;
    }

    // Typing shows on the other side; the message appears there with no fetch.
    student_page.type_into("#compose", "Hello").await;
    tutor_page
        .wait_for("the student typing", TYPING, json!(true))
        .await;
    student_page.click("#send").await;
    tutor_page
        .wait_for("the message, pushed", MESSAGES, json!(["Hello"]))
        .await;
    tutor_page
        .wait_for("typing over", TYPING, json!(false))
        .await;
    // The tutor's window is open and focused, so the tutor has read it: "seen".
    student_page
        .wait_for("seen by the tutor", SEEN, json!(["Hello"]))
        .await;

    student_edits(&stage, relation, student, 1, "Hello there").await;
    tutor_page
        .wait_for("the edit, followed", MESSAGES, json!(["Hello there"]))
        .await;
    student_page.click("#messages li.mine button.delete").await;
    tutor_page
        .wait_for("the delete, followed", MESSAGES, json!(["(deleted)"]))
        .await;

    // Revoked contact: the tutor's composer disables itself; the student's does not.
    stage
        .contact(tutor, student, pb::ContactAccessState::Revoked, 2)
        .await;
    tutor_page
        .wait_for(
            "the tutor's composer disabled",
            COMPOSER_DISABLED,
            json!(true),
        )
        .await;
    assert_eq!(student_page.eval(COMPOSER_DISABLED).await, json!(false));

    // The network cut for a while: what was sent meanwhile arrives once, in order.
    stage.gateway.kill().await;
    stage
        .student_says(relation, student, "while you were away")
        .await;
    stage.student_says(relation, student, "and once more").await;
    stage.gateway.restart().await;
    tutor_page
        .wait_for("the window's stream resumed", WINDOW_STREAMS, json!(2))
        .await;
    tutor_page
        .wait_for(
            "nothing missing or doubled",
            MESSAGES,
            json!(["(deleted)", "while you were away", "and once more"]),
        )
        .await;
    assert_eq!(
        tutor_page.eval(LIST_FETCHES).await,
        json!(1),
        "every change came pushed: the messages were fetched once, when the window opened"
    );
    finish([tutor_page, student_page]).await;
}
