//! What chatd's health service says: the whole server and its services follow the
//! database (pinged by one task), `liveness` only says the process serves, and
//! `fanout` whether this replica hears the other replicas' changes.

use std::time::Duration;

use tokio::sync::watch;
use tonic::server::NamedService;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::domain::SummaryKey;
use crate::fanout::{Change, ChangeSink};
use crate::grpc;
use crate::live::{Live, Typing};
use crate::proto::chat_service_server::ChatServiceServer;
use crate::proto::sync_service_server::SyncServiceServer;
use crate::storage::Store;
use crate::summaries::Summaries;

/// The health service name that only says the process is alive.
pub const LIVENESS_SERVICE: &str = "liveness";

/// The health service name that says whether this replica hears other replicas'
/// changes (PostgreSQL's fan-out). Calls are served either way; while it is
/// NOT_SERVING, summaries are read from the database.
pub const FANOUT_SERVICE: &str = "fanout";

/// The services whose health follows the database ("" is the whole server).
const HEALTH_SERVICES: [&str; 3] = [
    "",
    ChatServiceServer::<grpc::ChatService>::NAME,
    SyncServiceServer::<grpc::SyncService>::NAME,
];

pub(super) async fn set_health(health: &HealthReporter, status: ServingStatus) {
    for service in HEALTH_SERVICES {
        health.set_service_status(service, status).await;
    }
}

/// Passes the fan-out's news to the summaries and the open windows, and keeps the
/// `fanout` health state.
pub(super) struct FanoutHealth {
    pub(super) summaries: Summaries,
    pub(super) live: Live,
    pub(super) state: watch::Sender<bool>,
}

impl ChangeSink for FanoutHealth {
    fn changed(&self, changes: &[Change]) {
        let mut keys: Vec<SummaryKey> = Vec::new();
        for change in changes {
            match *change {
                Change::Summary(key) => keys.push(key),
                Change::Thread { thread_id, version } => self.live.heard(thread_id, version),
                Change::Typing {
                    thread_id,
                    side,
                    until_ms,
                } => self.live.heard_typing(thread_id, Typing { side, until_ms }),
            }
        }
        self.summaries.changed(&keys);
    }

    fn connected(&self) {
        self.summaries.connected();
        // Windows too may have missed changes: each reads its thread's log again.
        self.live.wake_all();
        self.state.send_replace(true);
    }

    fn disconnected(&self) {
        self.summaries.disconnected();
        self.state.send_replace(false);
    }
}

pub(super) async fn set_fanout_health(health: &HealthReporter, up: bool) {
    let status = if up {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    health.set_service_status(FANOUT_SERVICE, status).await;
}

/// Mirrors the fan-out's state into health, in order.
pub(super) async fn follow_fanout(health: HealthReporter, mut fanout_up: watch::Receiver<bool>) {
    loop {
        let up = *fanout_up.borrow_and_update();
        set_fanout_health(&health, up).await;
        if fanout_up.changed().await.is_err() {
            return;
        }
    }
}

/// Pings the database every `interval`: SERVING while it answers, NOT_SERVING while it
/// does not. One task for the whole server; stops when shutdown begins.
pub(super) async fn monitor_database(
    store: Store,
    health: HealthReporter,
    interval: Duration,
    ping_timeout: Duration,
    mut stopping: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut serving = Some(true);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stopping.changed() => return,
        }
        // A database that stops answering (frozen, partitioned) must turn health
        // NOT_SERVING, not hang the monitor: the ping has the pool's timeout.
        let reachable = match tokio::time::timeout(ping_timeout, store.ping()).await {
            Ok(answered) => answered.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {ping_timeout:?}")),
        };
        if *stopping.borrow() {
            return;
        }
        let now_serving = reachable.is_ok();
        if serving != Some(now_serving) {
            match &reachable {
                Ok(()) => tracing::info!("database reachable: serving"),
                Err(e) => tracing::warn!(error = %e, "database unreachable: not serving"),
            }
            let status = if now_serving {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            set_health(&health, status).await;
            serving = Some(now_serving);
        }
    }
}
