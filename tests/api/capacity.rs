//! What a replica does when PostgreSQL says "not now": a call that meets a full
//! database waits for one of the connections already open instead of failing, and a
//! conflict with another transaction (a deadlock) is retried inside chatd, never
//! answered as a refusal of the client's call.

use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use futures::future::join_all;

use crate::harness::{TestDatabase, TestRole};
use crate::helpers::{ChatClientExt, TestApp, send};

/// A pool larger than the database allows (here a role's connection limit, refused with
/// the same SQLSTATE 53300 as `max_connections`): every call of a burst succeeds within
/// the timeout, served by the connections the database did accept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_pool_past_the_databases_limit_waits_instead_of_failing() {
    let database = TestDatabase::postgres().await;
    // Two of the six go to the fan-out (its listener and its notifier).
    let role = TestRole::with_connection_limit(&database, 6).await;
    let url = role.url(&database);
    let app = TestApp::spawn_on(database, |config| {
        config.database = url;
        config.pool.max_size = 24;
    })
    .await;
    let thread = app.contact_thread(10, 42, 7).await;
    let calls = (0..24).map(|n| {
        let mut client = if n % 2 == 0 {
            app.tutor(42)
        } else {
            app.student(7)
        };
        let thread_id = thread.thread_id;
        async move {
            for m in 0..5 {
                client
                    .send_message(send(thread_id, &format!("{n}/{m}")))
                    .await
                    .unwrap_or_else(|status| panic!("call {n}/{m} failed: {status:?}"));
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(30), join_all(calls))
        .await
        .expect("the burst finishes within the timeout");
    let stored = app
        .tutor(42)
        .list_messages(chatd::grpc::pb::ListMessagesRequest {
            thread_id: thread.thread_id,
            limit: 200,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        stored.messages.len(),
        120,
        "every acknowledged message stored"
    );
}

/// A deadlock between a chatd statement and another client's transaction: PostgreSQL
/// breaks it by failing chatd's statement (SQLSTATE 40P01), and chatd runs it again
/// once the other transaction is gone; the send is answered, and stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_deadlock_is_retried_inside_chatd() {
    let app = crate::helpers::TestApp::spawn(crate::helpers::Backend::Postgres).await;
    let thread = app.contact_thread(10, 42, 7).await;
    let thread_id = thread.thread_id;
    app.student(7).say(thread_id, "first").await;
    let chatd::storage::DatabaseUrl::Postgres(url) = app.database_url() else {
        unreachable!()
    };
    let mut other = AsyncPgConnection::establish(&url).await.unwrap();
    // This side checks for deadlocks only after 30 s: PostgreSQL finds the cycle from
    // chatd's side (after its deadlock_timeout, 1 s) and fails chatd's statement.
    other
        .batch_execute("SET deadlock_timeout = '30s'")
        .await
        .unwrap();
    // The other transaction holds the tutor's summary version, which the next send
    // of the student bumps after taking the thread's row.
    other
        .batch_execute(
            "BEGIN; SELECT version FROM summary_versions \
             WHERE user_id = 42 AND side = 'tutor' FOR UPDATE",
        )
        .await
        .unwrap();
    let mut student = app.student(7);
    let sent = tokio::spawn(async move {
        student
            .send_message(send(thread_id, "second"))
            .await
            .map(|answer| answer.into_inner().message.expect("a message").seq)
    });
    wait_for_a_lock_wait(&url).await;
    // Now it wants the thread's row: a cycle, which chatd's side breaks.
    other
        .batch_execute(&format!(
            "SELECT 1 FROM threads WHERE thread_id = {thread_id} FOR UPDATE"
        ))
        .await
        .expect("PostgreSQL chose chatd's statement to fail");
    other.batch_execute("COMMIT").await.unwrap();
    let seq = sent
        .await
        .unwrap()
        .expect("the send is answered, not failed with the deadlock");
    assert_eq!(seq, 2);
    let page = app
        .tutor(42)
        .list_messages(chatd::grpc::pb::ListMessagesRequest {
            thread_id,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.messages.len(), 2, "stored once");
}

/// Waits until some connection of the database waits for a lock.
async fn wait_for_a_lock_wait(url: &str) {
    use diesel::sql_types::BigInt;
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Waiting {
        #[diesel(sql_type = BigInt)]
        waiting: i64,
    }
    let mut watcher = AsyncPgConnection::establish(url).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let Waiting { waiting } = diesel::sql_query(
            "SELECT count(*) AS waiting FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .get_result(&mut watcher)
        .await
        .unwrap();
        if waiting > 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no call waited for the lock"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
