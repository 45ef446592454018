//! Replicas that hear each other over NATS (`--fanout-url nats://…`) instead of
//! PostgreSQL NOTIFY: they agree, hold no LISTEN connection, serve from the database
//! while the NATS server is down, and trust their caches again once it is back; open
//! windows follow across replicas, through an outage. Each
//! test starts a `nats-server` of its own on a free port (Debian's `nats-server`).

use chatd::storage::DatabaseUrl;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::health::wait_for;
use crate::helpers::{Backend, ChatClientExt, TestApp};
use crate::nats_server::NatsServer;
use crate::watch::next;

const TUTOR: i64 = 42;
const STUDENT: i64 = 7;

/// Two PostgreSQL replicas on one database whose fan-out is `nats`.
async fn replicas(nats: &NatsServer) -> (TestApp, TestApp) {
    let url = nats.url();
    let a = TestApp::spawn_with(Backend::Postgres, |config| {
        config.fanout_url = Some(url.clone());
    })
    .await;
    let b = a.replica_with(|config| config.fanout_url = Some(url)).await;
    wait_for(&a, "fanout", ServingStatus::Serving).await;
    wait_for(&b, "fanout", ServingStatus::Serving).await;
    (a, b)
}

/// Connections of the test database that LISTEN, as PostgreSQL reports them.
async fn listening_connections(app: &TestApp) -> i64 {
    let DatabaseUrl::Postgres(url) = app.database().url() else {
        unreachable!("a PostgreSQL test app")
    };
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("a direct connection");
    tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
            &[],
        )
        .await
        .expect("pg_stat_activity answers");
    row.get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_agree_over_nats_with_no_listen_connection() {
    let Some(nats) =
        NatsServer::start("nats::replicas_agree_over_nats_with_no_listen_connection").await
    else {
        return;
    };
    let (a, b) = replicas(&nats).await;
    let thread = a.contact_thread(10, TUTOR, STUDENT).await;
    let mut on_b = TestApp::watch(&mut b.tutor(TUTOR)).await;
    assert_eq!(next(&mut on_b).await.total, 0);
    assert_eq!(b.tutor(TUTOR).unread().await.total, 0, "B caches it");

    a.student(STUDENT).say(thread.thread_id, "via A").await;
    assert_eq!(
        next(&mut on_b).await.total,
        1,
        "B's watcher heard A's write"
    );
    assert_eq!(
        b.tutor(TUTOR).unread().await.total,
        1,
        "B's cache dropped it"
    );
    let mut on_a = TestApp::watch(&mut a.tutor(TUTOR)).await;
    assert_eq!(next(&mut on_a).await.total, 1);
    b.student(STUDENT).say(thread.thread_id, "via B").await;
    assert_eq!(next(&mut on_a).await.total, 2, "and the other way");

    assert_eq!(listening_connections(&a).await, 0, "no LISTEN held");
}

/// While the NATS server is down a replica cannot hear the others, so it serves
/// summaries from the database (health `fanout` NOT_SERVING); once it is back, the
/// replica drops its cache and trusts it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_reads_the_database_while_nats_is_down() {
    let Some(mut nats) =
        NatsServer::start("nats::a_replica_reads_the_database_while_nats_is_down").await
    else {
        return;
    };
    let (a, b) = replicas(&nats).await;
    let thread = a.contact_thread(10, TUTOR, STUDENT).await;
    assert_eq!(b.tutor(TUTOR).unread().await.total, 0);
    assert_eq!(b.tutor(TUTOR).unread().await.total, 0, "cached on B");

    nats.stop().await;
    wait_for(&b, "fanout", ServingStatus::NotServing).await;
    a.student(STUDENT)
        .say(thread.thread_id, "unheard by B")
        .await;
    assert_eq!(
        b.tutor(TUTOR).unread().await.total,
        1,
        "B reads the database, not its stale entry"
    );

    nats.restart().await;
    wait_for(&b, "fanout", ServingStatus::Serving).await;
    wait_for(&a, "fanout", ServingStatus::Serving).await;
    assert_eq!(b.tutor(TUTOR).unread().await.total, 1);
    let mut on_b = TestApp::watch(&mut b.tutor(TUTOR)).await;
    assert_eq!(next(&mut on_b).await.total, 1);
    a.student(STUDENT)
        .say(thread.thread_id, "heard again")
        .await;
    assert_eq!(next(&mut on_b).await.total, 2, "B hears A again");
}

/// Windows across replicas over NATS: B's window gets A's message and typing, and a
/// message committed on A while NATS is down reaches B's window once NATS is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_follow_over_nats_and_through_its_outage() {
    use chatd::grpc::pb::{self, thread_event::Event};

    use crate::window::{Window, next_event, watch_thread};

    let Some(mut nats) =
        NatsServer::start("nats::windows_follow_over_nats_and_through_its_outage").await
    else {
        return;
    };
    let (a, b) = replicas(&nats).await;
    let thread = a.contact_thread(10, TUTOR, STUDENT).await;
    let id = thread.thread_id;
    let mut on_b = watch_thread(&mut b.tutor(TUTOR), id, 0).await;
    let mut window = Window::new(pb::Side::Tutor);
    window.apply(next_event(&mut on_b).await);
    a.student(STUDENT).say(id, "via A").await;
    window.follow_to(&mut on_b, 2).await;
    a.student(STUDENT)
        .set_typing(pb::SetTypingRequest { thread_id: id })
        .await
        .unwrap();
    let typing = next_event(&mut on_b).await;
    assert!(matches!(typing.event, Some(Event::Typing(_))), "{typing:?}");

    nats.stop().await;
    wait_for(&b, "fanout", ServingStatus::NotServing).await;
    a.student(STUDENT).say(id, "unheard by B").await;
    nats.restart().await;
    wait_for(&b, "fanout", ServingStatus::Serving).await;
    window.follow_to(&mut on_b, 4).await;
    window.assert_matches(&mut b.tutor(TUTOR), id).await;
}
