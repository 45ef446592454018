//! API tests: the real chatd server on an ephemeral port, driven over gRPC by the
//! generated client. Every case runs once on SQLite and once on PostgreSQL, each with a
//! database of its own (`TEST_LOG=1` shows the server's logs).

/// Instantiates each listed case for both backends: `<file>::sqlite::<case>` and
/// `<file>::postgres::<case>`.
macro_rules! backend_suite {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(crate::helpers::TestApp::spawn(crate::helpers::Backend::Sqlite).await).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(crate::helpers::TestApp::spawn(crate::helpers::Backend::Postgres).await).await
                }
            )*
        }
    };
}

mod harness;
mod helpers;

mod alerts;
mod auth;
mod capacity;
mod cli;
mod concurrency;
mod connections;
mod contact_threads;
mod edits;
mod erasure;
mod gateway;
mod guards;
mod health;
mod inbox;
mod limits;
mod messages;
mod model;
mod mute;
mod nats;
mod pooler;
mod stream_tickets;
mod summary_cache;
mod sync;
mod unread_summary;
mod watch;
