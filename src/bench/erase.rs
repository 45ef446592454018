//! The erasure mode (`--erase N`): a user with N messages is erased while other users
//! write. It reports how long EraseUser took, and SendMessage's rate and latency for the
//! other users before and while it ran, so what its bounded transactions cost everyone
//! else is a figure, not a guess.
//!
//! The user is new (ids past the dataset's), with one contact thread whose N messages are
//! inserted with one SQL statement into `--database-url` (the database of the chatd under
//! test), not sent one by one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tonic::transport::Channel;

use super::{BenchConfig, ClientRun, Latencies, Report, authed, bearer, connect};
use crate::auth::TokenSigner;
use crate::domain::Role;
use crate::proto as pb;
use crate::proto::chat_service_client::ChatServiceClient;
use crate::proto::sync_service_client::SyncServiceClient;
use crate::storage::Store;

pub async fn run(
    config: &BenchConfig,
    store: &Store,
    signer: &TokenSigner,
    messages: i64,
) -> Result<(), String> {
    let dataset = config.dataset;
    // Fresh ids past the dataset's, so that runs do not meet each other's users.
    let run = fastrand::i64(0..1_000_000_000);
    let (tutor, student) = (dataset.users + 1 + 2 * run, dataset.users + 2 + 2 * run);
    let relation = dataset.threads + 1 + run;
    let channels = connect(&config.target, config.concurrency).await?;
    let service = bearer(signer, 1, Role::Service)?;
    let thread = open_thread(&channels[0], signer, &service, relation, tutor, student).await?;
    let started = Instant::now();
    fill(store, thread, student, messages).await?;
    eprintln!(
        "inserted {messages} messages of user {student} into thread {thread} in {:.1?}",
        started.elapsed()
    );

    println!(
        "chatd bench --erase: {} clients sending as other users, target {}, user {student} with {messages} messages",
        config.concurrency, config.target
    );
    let empty = Latencies::new()?;
    let before = senders(config, &channels, signer, &empty, None).await?;
    let erasing = Arc::new(AtomicBool::new(true));
    let during = senders(config, &channels, signer, &empty, Some(erasing.clone()));
    let erase = async {
        let started = Instant::now();
        let erased = SyncServiceClient::new(channels[0].clone())
            .erase_user(authed(pb::EraseUserRequest { user_id: student }, &service))
            .await
            .map(|answer| answer.into_inner().messages_erased);
        erasing.store(false, Ordering::SeqCst);
        (erased, started.elapsed())
    };
    let (during, (erased, took)) = tokio::join!(during, erase);
    let erased = erased.map_err(|status| format!("EraseUser failed: {status:?}"))?;
    println!(
        "EraseUser: {erased} messages in {took:.2?} ({:.0} messages/s, batches of {})",
        erased as f64 / took.as_secs_f64(),
        crate::domain::ERASE_BATCH
    );
    super::print_reports(&[before, during?], None);
    Ok(())
}

/// An active relation with contact unlocked between the two new users, and its thread.
async fn open_thread(
    channel: &Channel,
    signer: &TokenSigner,
    service: &tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    relation: i64,
    tutor: i64,
    student: i64,
) -> Result<i64, String> {
    let mut sync = SyncServiceClient::new(channel.clone());
    let failed = |what: &str| {
        let what = what.to_owned();
        move |status: tonic::Status| format!("{what}: {status:?}")
    };
    sync.upsert_relation(authed(
        pb::UpsertRelationRequest {
            relation_id: relation,
            tutor_id: tutor,
            student_id: student,
            status: pb::RelationStatus::Active.into(),
            version: 1,
        },
        service,
    ))
    .await
    .map_err(failed("the relation"))?;
    let thread = ChatServiceClient::new(channel.clone())
        .ensure_thread(authed(
            pb::EnsureThreadRequest {
                target: Some(pb::ensure_thread_request::Target::RelationId(relation)),
            },
            &bearer(signer, student, Role::Student)?,
        ))
        .await
        .map_err(failed("the thread"))?
        .into_inner()
        .thread
        .ok_or("EnsureThread answered no thread")?;
    Ok(thread.thread_id)
}

/// The student's `count` messages, as a send of each would leave the thread (the tutor
/// has read none of them).
async fn fill(store: &Store, thread: i64, student: i64, count: i64) -> Result<(), String> {
    let is_postgres = matches!(store, Store::Postgres(_));
    let series = match is_postgres {
        true => format!("WITH s(x) AS (SELECT generate_series(1, {count}))"),
        false => format!(
            "WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < {count})"
        ),
    };
    let now = match is_postgres {
        true => "now()",
        false => "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
    };
    let sql = format!(
        "{series} INSERT INTO messages (thread_id, seq, sender_id, body, client_message_id, created_at) \
         SELECT {thread}, x, {student}, 'bench message to erase ' || x, 'erase-' || x, {now} FROM s; \
         UPDATE threads SET last_seq = {count}, last_visible_seq = {count}, last_message_at = {now}, \
         last_message_preview = 'bench message to erase {count}', last_message_sender_id = {student} \
         WHERE thread_id = {thread}; \
         UPDATE thread_participants SET unread_count = CASE side WHEN 'tutor' THEN {count} ELSE 0 END, \
         last_read_seq = CASE side WHEN 'tutor' THEN 0 ELSE {count} END, last_message_at = {now}, \
         last_message_preview = 'bench message to erase {count}', last_message_sender_id = {student} \
         WHERE thread_id = {thread}"
    );
    store
        .execute_batch(&sql)
        .await
        .map_err(|e| format!("inserting the messages to erase: {e}"))
}

/// Other users send for `--duration` (`until` None), or until `until` turns false.
async fn senders(
    config: &BenchConfig,
    channels: &[Channel],
    signer: &TokenSigner,
    empty: &Latencies,
    until: Option<Arc<AtomicBool>>,
) -> Result<Report, String> {
    let dataset = config.dataset;
    let name = match until {
        None => "SendMessage, before",
        Some(_) => "SendMessage, while erasing",
    };
    let deadline = Instant::now() + config.duration;
    let started = Instant::now();
    let mut clients = Vec::new();
    for channel in channels {
        let mut chat = ChatServiceClient::new(channel.clone());
        let until = until.clone();
        let mut run = ClientRun::new(empty);
        let mut minted = std::collections::HashMap::new();
        let signer = signer.clone();
        clients.push(tokio::spawn(async move {
            loop {
                let going = match &until {
                    None => Instant::now() < deadline,
                    Some(erasing) => erasing.load(Ordering::SeqCst),
                };
                if !going {
                    return run;
                }
                let thread = 1 + fastrand::i64(0..dataset.threads);
                let student = dataset.student_of(thread);
                let header = match minted.get(&student) {
                    Some(header) => Ok(Clone::clone(header)),
                    None => bearer(&signer, student, Role::Student),
                };
                let call_started = Instant::now();
                let result = match header {
                    Err(error) => Err(error),
                    Ok(header) => {
                        minted.insert(student, header.clone());
                        chat.send_message(authed(
                            pb::SendMessageRequest {
                                thread_id: thread,
                                body: "bench message".into(),
                                client_message_id: super::idempotency_key(),
                            },
                            &header,
                        ))
                        .await
                        .map(drop)
                        .map_err(|status| format!("{:?}: {}", status.code(), status.message()))
                    }
                };
                run.record(call_started, result);
            }
        }));
    }
    Ok(Report::collect(name, started, clients, empty).await)
}
