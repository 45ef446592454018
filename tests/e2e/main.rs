//! Browser tests: the seed's frontend flows in headless Chromium, on the reference page
//! (`tests/e2e/page/`), against real `chatd serve` and `chatd gateway` processes. The
//! page is served from an origin of its own, so every call is a real CORS request.
//!
//! They need Debian's `chromium` and `chromium-driver`, so plain `cargo test` skips
//! them; `cargo test --test e2e -- --ignored --test-threads=1` runs them (`.ci/run`
//! does, every time). Screenshots go to `target/tmp/e2e/<flow>/`: one per browser at
//! the end of each flow, and one on any failure.

#[path = "../faults/processes.rs"]
#[expect(
    dead_code,
    reason = "shared with the fault tests; this binary uses a part"
)]
mod processes;
#[path = "../common/require.rs"]
#[expect(dead_code, reason = "shared; this binary uses a part")]
mod require;
mod webdriver;

mod stage;

mod live;

use chatd::domain::Role;
use chatd::grpc::pb;
use chatd::grpc::pb::chat_service_client::ChatServiceClient;
use serde_json::{Value, json};

use stage::*;

/// Seed flow: "Accept → unlock → chat button → open → send". The tutor's button says
/// why it is disabled until the student accepts and unlocks contact; then the tutor
/// opens the chat and writes, and the student's bell shows it without a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium: cargo test --test e2e -- --ignored --test-threads=1"]
async fn accept_unlock_chat_button_open_send() {
    let stage = Stage::start("accept-unlock-send").await;
    let (tutor, student, relation) = (42, 7, 10);
    stage
        .relation(relation, tutor, student, pb::RelationStatus::Pending, 1)
        .await;

    let tutor_page = stage
        .signed_in("tutor", tutor, Role::Tutor, relation, "stream")
        .await;
    assert_reason(
        &tutor_page,
        "RELATION_NOT_ACTIVE",
        "The lesson request has not been accepted yet.",
    )
    .await;

    stage
        .relation(relation, tutor, student, pb::RelationStatus::Active, 2)
        .await;
    tutor_page.reload().await;
    assert_reason(
        &tutor_page,
        "CONTACT_ACCESS_LOCKED",
        "Contact with this student is not open: not unlocked yet, or revoked.",
    )
    .await;

    stage
        .contact(tutor, student, pb::ContactAccessState::Unlocked, 1)
        .await;
    tutor_page.reload().await;
    tutor_page
        .wait_for(
            "the chat button enabled",
            CHAT_BUTTON_DISABLED,
            json!(false),
        )
        .await;
    tutor_page
        .wait_for("no reason", CHAT_REASON, Value::Null)
        .await;

    let student_page = stage
        .signed_in("student", student, Role::Student, relation, "stream")
        .await;
    student_page
        .wait_for("an empty bell", BADGE, json!(""))
        .await;

    tutor_page.click("#chat-button").await;
    tutor_page
        .wait_for("the chat window", CHAT_OPEN, json!(true))
        .await;
    write(&tutor_page, "Hello! When shall we start?").await;
    tutor_page
        .wait_for(
            "the sent message",
            MESSAGES,
            json!(["Hello! When shall we start?"]),
        )
        .await;

    student_page
        .wait_for("the badge at 1", BADGE, json!("1"))
        .await;
    student_page.click("#bell").await;
    student_page.click("#bell-menu li[data-thread-id]").await;
    student_page
        .wait_for(
            "the tutor's message",
            MESSAGES,
            json!(["Hello! When shall we start?"]),
        )
        .await;
    student_page
        .wait_for("the badge gone", BADGE, json!(""))
        .await;

    finish([tutor_page, student_page]).await;
}

/// Seed flow: "Student writes → tutor sees badge → opens → badge disappears"; and the
/// reply appears in the student's open window without a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium: cargo test --test e2e -- --ignored --test-threads=1"]
async fn student_writes_tutor_sees_badge_opens_badge_disappears() {
    let stage = Stage::start("badge-appears-and-clears").await;
    let (tutor, student, relation) = (52, 17, 20);
    stage.may_chat(relation, tutor, student).await;

    let tutor_page = stage
        .signed_in("tutor", tutor, Role::Tutor, relation, "stream")
        .await;
    let student_page = stage
        .signed_in("student", student, Role::Student, relation, "stream")
        .await;
    tutor_page.wait_for("an empty bell", BADGE, json!("")).await;

    student_page.click("#chat-button").await;
    write(&student_page, "Could we move Tuesday's lesson?").await;
    student_page
        .wait_for(
            "the sent message",
            MESSAGES,
            json!(["Could we move Tuesday's lesson?"]),
        )
        .await;

    tutor_page
        .wait_for("the badge at 1", BADGE, json!("1"))
        .await;
    tutor_page.click("#bell").await;
    tutor_page
        .wait_for(
            "the thread in the bell's list",
            "return [...document.querySelectorAll('#bell-menu li[data-thread-id]')].map((li) => li.textContent);",
            json!(["1Could we move Tuesday's lesson?"]),
        )
        .await;
    tutor_page.click("#bell-menu li[data-thread-id]").await;
    tutor_page
        .wait_for(
            "the student's message",
            MESSAGES,
            json!(["Could we move Tuesday's lesson?"]),
        )
        .await;
    tutor_page
        .wait_for("the badge gone", BADGE, json!(""))
        .await;

    write(&tutor_page, "Sure, Wednesday at 5?").await;
    student_page
        .wait_for(
            "the reply in the open window",
            MESSAGES,
            json!(["Could we move Tuesday's lesson?", "Sure, Wednesday at 5?"]),
        )
        .await;
    student_page
        .wait_for("no badge while reading", BADGE, json!(""))
        .await;

    finish([tutor_page, student_page]).await;
}

/// Seed flow: "Revoke → button disabled". The student revokes contact while the tutor's
/// chat is open: the composer disables itself, with no send tried, and the button
/// says why, also after a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium: cargo test --test e2e -- --ignored --test-threads=1"]
async fn revoke_disables_the_button() {
    let stage = Stage::start("revoke-disables").await;
    let (tutor, student, relation) = (62, 27, 30);
    stage.may_chat(relation, tutor, student).await;

    let tutor_page = stage
        .signed_in("tutor", tutor, Role::Tutor, relation, "stream")
        .await;
    tutor_page
        .wait_for(
            "the chat button enabled",
            CHAT_BUTTON_DISABLED,
            json!(false),
        )
        .await;
    tutor_page.click("#chat-button").await;
    write(&tutor_page, "See you tomorrow").await;
    tutor_page
        .wait_for("the sent message", MESSAGES, json!(["See you tomorrow"]))
        .await;

    stage
        .contact(tutor, student, pb::ContactAccessState::Revoked, 2)
        .await;
    tutor_page
        .wait_for("the composer disabled", COMPOSER_DISABLED, json!(true))
        .await;
    assert_reason(
        &tutor_page,
        "CONTACT_ACCESS_LOCKED",
        "Contact with this student is not open: not unlocked yet, or revoked.",
    )
    .await;
    tutor_page
        .wait_for(
            "only the first message",
            MESSAGES,
            json!(["See you tomorrow"]),
        )
        .await;

    tutor_page.reload().await;
    assert_reason(
        &tutor_page,
        "CONTACT_ACCESS_LOCKED",
        "Contact with this student is not open: not unlocked yet, or revoked.",
    )
    .await;
    finish([tutor_page]).await;
}

/// Beyond the seed: the student deletes a message the tutor has not read, and the
/// tutor's badge drops without a reload, the bell's preview falling back to the message
/// before it; the tutor mutes the thread from the bell, and the badge leaves it out
/// while it stays listed, even when a new message comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium: cargo test --test e2e -- --ignored --test-threads=1"]
async fn delete_and_mute_move_the_badge() {
    let stage = Stage::start("delete-and-mute").await;
    let (tutor, student, relation) = (82, 47, 50);
    stage.may_chat(relation, tutor, student).await;

    let tutor_page = stage
        .signed_in("tutor", tutor, Role::Tutor, relation, "stream")
        .await;
    let student_page = stage
        .signed_in("student", student, Role::Student, relation, "stream")
        .await;
    tutor_page.wait_for("an empty bell", BADGE, json!("")).await;

    student_page.click("#chat-button").await;
    write(&student_page, "See you Tuesday").await;
    student_page
        .wait_for("the first message", MESSAGES, json!(["See you Tuesday"]))
        .await;
    write(&student_page, "Oops, wrong chat").await;
    student_page
        .wait_for(
            "both messages",
            MESSAGES,
            json!(["See you Tuesday", "Oops, wrong chat"]),
        )
        .await;
    tutor_page
        .wait_for("the badge at 2", BADGE, json!("2"))
        .await;

    student_page
        .click("#messages li[data-seq='2'] button.delete")
        .await;
    student_page
        .wait_for(
            "the tombstone in place",
            MESSAGES,
            json!(["See you Tuesday", "(deleted)"]),
        )
        .await;
    tutor_page
        .wait_for("the badge down to 1", BADGE, json!("1"))
        .await;
    tutor_page.click("#bell").await;
    tutor_page
        .wait_for(
            "the preview falls back",
            BELL_ITEMS,
            json!(["1See you Tuesday"]),
        )
        .await;

    tutor_page
        .click("#bell-menu li[data-thread-id] button.mute")
        .await;
    tutor_page
        .wait_for("the badge without the muted thread", BADGE, json!(""))
        .await;
    tutor_page
        .wait_for(
            "the thread still listed, muted",
            BELL_ITEMS,
            json!(["muted:1See you Tuesday"]),
        )
        .await;
    stage
        .student_says(relation, student, "Are you there?")
        .await;
    tutor_page
        .wait_for(
            "the new message counted in the muted line",
            BELL_ITEMS,
            json!(["muted:2Are you there?"]),
        )
        .await;
    assert_eq!(tutor_page.eval(BADGE).await, json!(""), "still left out");

    finish([tutor_page, student_page]).await;
}

/// The bell's EventSource outlives a gateway restart: the page mints a fresh ticket,
/// opens a new stream, and shows a message sent while it was away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium: cargo test --test e2e -- --ignored --test-threads=1"]
async fn the_bell_survives_a_gateway_restart() {
    let mut stage = Stage::start("gateway-restart").await;
    let (tutor, student, relation) = (72, 37, 40);
    stage.may_chat(relation, tutor, student).await;

    let tutor_page = stage
        .signed_in("tutor", tutor, Role::Tutor, relation, "stream")
        .await;
    tutor_page
        .wait_for("the stream live", TRANSPORT, json!("live"))
        .await;
    tutor_page
        .wait_for("one stream opened", STREAMS_OPENED, json!(1))
        .await;
    stage.student_says(relation, student, "first").await;
    tutor_page
        .wait_for("the badge at 1", BADGE, json!("1"))
        .await;

    stage.gateway.kill().await;
    tutor_page
        .wait_for("the page noticing", TRANSPORT, json!("reconnecting"))
        .await;
    stage
        .student_says(relation, student, "sent while the gateway was down")
        .await;
    stage.gateway.restart().await;

    tutor_page
        .wait_for("a second stream", STREAMS_OPENED, json!(2))
        .await;
    tutor_page
        .wait_for("the badge at 2", BADGE, json!("2"))
        .await;
    stage
        .student_says(relation, student, "after the restart")
        .await;
    tutor_page
        .wait_for("the badge at 3", BADGE, json!("3"))
        .await;

    finish([tutor_page]).await;
}

/// A user who already holds every stream they may (tabs elsewhere) gets TOO_MANY_STREAMS
/// when the page mints its ticket: the page polls instead, once, rather than retrying
/// the stream in a loop, and the badge still moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium: cargo test --test e2e -- --ignored --test-threads=1"]
async fn too_many_streams_falls_back_to_polling() {
    let stage = Stage::start("too-many-streams").await;
    let (tutor, student, relation) = (92, 57, 60);
    stage.may_chat(relation, tutor, student).await;
    let mut held = Vec::new();
    // `chatd serve`'s default --watch-max-per-user.
    for _ in 0..8 {
        let mut chat = ChatServiceClient::new(stage.channel.clone());
        let request = stage.metadata(pb::WatchUnreadSummaryRequest::default(), tutor, Role::Tutor);
        let mut stream = chat
            .watch_unread_summary(request)
            .await
            .expect("a stream within the limit")
            .into_inner();
        stream.message().await.expect("the first summary");
        held.push(stream);
    }

    let tutor_page = stage
        .signed_in("tutor", tutor, Role::Tutor, relation, "stream")
        .await;
    tutor_page
        .wait_for("the page polling", TRANSPORT, json!("polling"))
        .await;
    stage
        .student_says(relation, student, "heard by polling")
        .await;
    tutor_page
        .wait_for("the badge at 1", BADGE, json!("1"))
        .await;
    assert_eq!(
        tutor_page.eval(STREAMS_OPENED).await,
        json!(0),
        "no stream was opened"
    );
    assert_eq!(
        stage.ticket_answers(429).await,
        1,
        "one refused mint, no retry loop"
    );
    finish([tutor_page]).await;
}

/// The polling fallback: the browser's own cache turns unchanged polls into
/// conditional requests the gateway answers 304, and a change still shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium: cargo test --test e2e -- --ignored --test-threads=1"]
async fn polling_uses_the_browser_cache() {
    let stage = Stage::start("polling-304").await;
    let (tutor, student, relation) = (82, 47, 50);
    stage.may_chat(relation, tutor, student).await;

    let tutor_page = stage
        .signed_in("tutor", tutor, Role::Tutor, relation, "poll")
        .await;
    tutor_page
        .wait_for(
            "ten polls",
            "return Number(document.getElementById('poll-count').textContent) >= 10;",
            json!(true),
        )
        .await;
    let polls = tutor_page.eval(POLLS).await.as_u64().expect("a count");
    let (full, not_modified) = (
        stage.summary_answers(200).await,
        stage.summary_answers(304).await,
    );
    assert_eq!(full, 1, "one full answer, then revalidations");
    assert!(
        not_modified + 1 >= polls,
        "{polls} polls reached the gateway as {not_modified} 304s and {full} 200"
    );

    stage.student_says(relation, student, "polled").await;
    tutor_page
        .wait_for("the badge at 1", BADGE, json!("1"))
        .await;
    assert_eq!(
        stage.summary_answers(200).await,
        2,
        "the change came as a 200"
    );
    finish([tutor_page]).await;
}
