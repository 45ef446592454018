//! grpc.health.v1 follows the database; shutdown is graceful.

use std::time::Duration;

use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::helpers::{Backend, TestApp, assert_error, summary};

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
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_is_unavailable_liveness_stays_then_recovers() {
    let app = TestApp::spawn(Backend::Postgres).await;
    wait_for(&app, "", ServingStatus::Serving).await;
    assert_eq!(liveness(&app).await, ServingStatus::Serving as i32);
    let name = app
        .database()
        .name()
        .expect("a PostgreSQL database")
        .to_owned();
    app.database()
        .admin_execute(&format!(
            "ALTER DATABASE {name} ALLOW_CONNECTIONS false; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        ))
        .await;
    wait_for(&app, "", ServingStatus::NotServing).await;
    assert_eq!(
        liveness(&app).await,
        ServingStatus::Serving as i32,
        "alive while the database is out"
    );
    let result = app.tutor(42).get_unread_summary(summary(0)).await;
    assert_error(result, Code::Unavailable, "DATABASE_UNAVAILABLE");

    app.database()
        .admin_execute(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        .await;
    wait_for(&app, "", ServingStatus::Serving).await;
    let recovered = app.tutor(42).get_unread_summary(summary(0)).await;
    assert!(recovered.is_ok(), "{recovered:?}");
}
