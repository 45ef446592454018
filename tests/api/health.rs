//! grpc.health.v1 follows the database; shutdown is graceful.

use std::time::Duration;

use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::harness::{Proxy, Route, postgres_admin_url};
use crate::helpers::{Backend, ChatClientExt, TestApp, assert_error, summary};

/// Waits on the health Watch stream (no polling, no sleeps) until `service` reports
/// `wanted`, failing after 20 s.
pub async fn wait_for(app: &TestApp, service: &str, wanted: ServingStatus) {
    let waited = tokio::time::timeout(Duration::from_secs(20), async {
        let mut stream = HealthClient::new(app.channel())
            .watch(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("watch health")
            .into_inner();
        while let Some(HealthCheckResponse { status }) =
            stream.message().await.expect("health stream")
        {
            if status == wanted as i32 {
                return;
            }
        }
        panic!("health stream ended before {wanted:?}");
    })
    .await;
    assert!(
        waited.is_ok(),
        "{service:?} did not report {wanted:?} within 20 s"
    );
}

async fn liveness(app: &TestApp) -> i32 {
    HealthClient::new(app.channel())
        .check(HealthCheckRequest {
            service: "liveness".into(),
        })
        .await
        .expect("liveness answers")
        .into_inner()
        .status
}

async fn serving_when_the_database_answers(app: TestApp) {
    wait_for(&app, "", ServingStatus::Serving).await;
    wait_for(&app, "chat.v1.ChatService", ServingStatus::Serving).await;
    let check = HealthClient::new(app.channel())
        .check(HealthCheckRequest {
            service: "chat.v1.SyncService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(check.status, ServingStatus::Serving as i32);
}

async fn shutdown_is_graceful(mut app: TestApp) {
    wait_for(&app, "", ServingStatus::Serving).await;
    assert_eq!(app.stop().await, Ok(()));
}

backend_suite!(serving_when_the_database_answers, shutdown_is_graceful);

/// PostgreSQL only (a database a test can cut off): a database that refuses
/// connections makes calls UNAVAILABLE and health NOT_SERVING while liveness stays
/// SERVING, and both recover by themselves.
///
/// The outage is a proxy in front of the database that drops every open connection and
/// refuses new ones, all at one instant. (Cutting the database off from the inside,
/// with `ALTER DATABASE … ALLOW_CONNECTIONS false` and `pg_terminate_backend` sent as
/// one batch, ran both in one implicit transaction: a connection chatd opened between
/// the terminate and the ALTER's commit, such as the pool's first one at start, passed
/// the check, survived, and kept health SERVING, about one full run in ten.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_is_unavailable_liveness_stays_then_recovers() {
    let admin = postgres_admin_url();
    let host = admin.split_once('@').unwrap().1.split_once('/').unwrap().0;
    let upstream: std::net::SocketAddr = host.parse().expect("the admin URL has host:port");
    let proxy = Proxy::start(Route::Forward(upstream)).await;
    let app = TestApp::spawn_with(Backend::Postgres, |config| {
        let chatd::storage::DatabaseUrl::Postgres(url) = config.database.clone() else {
            unreachable!("a PostgreSQL config")
        };
        config.database = chatd::storage::DatabaseUrl::Postgres(proxy.postgres_url(&url));
    })
    .await;
    wait_for(&app, "", ServingStatus::Serving).await;
    assert_eq!(liveness(&app).await, ServingStatus::Serving as i32);

    proxy.set(Route::Refuse);
    wait_for(&app, "", ServingStatus::NotServing).await;
    assert_eq!(
        liveness(&app).await,
        ServingStatus::Serving as i32,
        "alive while the database is out"
    );
    let result = app.tutor(42).get_unread_summary(summary(0)).await;
    assert_error(result, Code::Unavailable, "DATABASE_UNAVAILABLE");

    proxy.set(Route::Forward(upstream));
    wait_for(&app, "", ServingStatus::Serving).await;
    let recovered = app.tutor(42).get_unread_summary(summary(0)).await;
    assert!(recovered.is_ok(), "{recovered:?}");
}

/// PostgreSQL only: a database that stops answering (a partition: connections stay
/// open, no bytes pass) costs a caller at most its deadline, answered DEADLINE_EXCEEDED
/// (or UNAVAILABLE when no connection can be had), over gRPC and REST alike, and turns
/// health NOT_SERVING; when the database answers again, so does chatd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_silent_database_costs_callers_their_deadline() {
    let admin = postgres_admin_url();
    let host = admin.split_once('@').unwrap().1.split_once('/').unwrap().0;
    let upstream: std::net::SocketAddr = host.parse().expect("the admin URL has host:port");
    let proxy = Proxy::start(Route::Forward(upstream)).await;
    let call_timeout = Duration::from_millis(500);
    let app = TestApp::spawn_with(Backend::Postgres, |config| {
        let chatd::storage::DatabaseUrl::Postgres(url) = config.database.clone() else {
            unreachable!("a PostgreSQL config")
        };
        config.fanout_url = Some(url.clone());
        config.database = chatd::storage::DatabaseUrl::Postgres(proxy.postgres_url(&url));
        config.call_timeout = call_timeout;
        config.pool.timeout = call_timeout;
        // Every read goes to the database.
        config.summary_cache.budget_bytes = 0;
    })
    .await;
    wait_for(&app, "", ServingStatus::Serving).await;
    let thread = app.contact_thread(10, 42, 7).await;
    app.student(7).say(thread.thread_id, "before").await;

    proxy.set(Route::Silence);
    let started = std::time::Instant::now();
    let frozen = tokio::time::timeout(
        Duration::from_secs(10),
        app.tutor(42).get_unread_summary(summary(0)),
    )
    .await
    .expect("an answer, not a hang");
    let waited = started.elapsed();
    let status = frozen.expect_err("no answer from a silent database");
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Unavailable),
        "{status:?}"
    );
    assert!(
        waited < call_timeout * 4,
        "answered after {waited:?}, with a call timeout of {call_timeout:?}"
    );
    let sent = tokio::time::timeout(
        Duration::from_secs(10),
        app.student(7)
            .send_message(crate::helpers::send(thread.thread_id, "during")),
    )
    .await
    .expect("an answer, not a hang");
    let status = sent.expect_err("no write to a silent database");
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Unavailable),
        "{status:?}"
    );
    let rest = reqwest::Client::new()
        .get(app.url("/api/v1/chat/unread-summary/"))
        .header("authorization", app.bearer(42, chatd::domain::Role::Tutor))
        .send()
        .await
        .expect("the gateway answers");
    assert!(
        matches!(rest.status().as_u16(), 503 | 504),
        "REST answers {}",
        rest.status()
    );
    wait_for(&app, "", ServingStatus::NotServing).await;

    proxy.set(Route::Forward(upstream));
    wait_for(&app, "", ServingStatus::Serving).await;
    let recovered = app.tutor(42).get_unread_summary(summary(0)).await;
    assert_eq!(recovered.expect("answers again").into_inner().total, 1);
}
