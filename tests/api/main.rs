//! API tests: the real chatd server on an ephemeral port, driven over gRPC by the
//! generated client. Every case runs once on SQLite and once on PostgreSQL, each with a
//! database of its own (`TEST_LOG=1` shows the server's logs).

/// Instantiates each listed case for both backends: `<file>::sqlite::<case>` and
/// `<file>::postgres::<case>`, each on a server of its own. `case with |config| …`
/// adjusts that server's configuration first.
macro_rules! backend_suite {
    ($($case:ident $(with $adjust:expr)?),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let app = crate::helpers::TestApp::spawn_with(
                        crate::helpers::Backend::Sqlite,
                        backend_suite!(@adjust $($adjust)?),
                    )
                    .await;
                    super::$case(app).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let app = crate::helpers::TestApp::spawn_with(
                        crate::helpers::Backend::Postgres,
                        backend_suite!(@adjust $($adjust)?),
                    )
                    .await;
                    super::$case(app).await
                }
            )*
        }
    };
    (@adjust $adjust:expr) => {{
        // The closure is written in the test file's scope.
        #[allow(unused_imports)]
        use super::*;
        $adjust
    }};
    (@adjust) => {
        |_: &mut chatd::config::ServeConfig| {}
    };
}

mod harness;
mod helpers;
#[path = "../common/require.rs"]
mod require;

mod alerts;
mod auth;
mod capacity;
mod cli;
mod concurrency;
mod connections;
mod contact_threads;
mod edits;
mod erasure;
mod events;
mod gateway;
mod gateway_edge;
mod gateway_errors;
mod gateway_live;
mod guards;
mod health;
mod inbox;
mod limits;
mod live;
mod messages;
mod model;
mod mute;
mod nats;
#[path = "../common/nats_server.rs"]
mod nats_server;
mod pooler;
mod reminders;
mod sinks;
mod stream_tickets;
mod summary_cache;
mod sync;
mod unread_summary;
mod watch;
mod window;
