//! The fan-out over PostgreSQL NOTIFY: after commit, changes (summaries, threads,
//! typing) are sent in batches on the channel `chatd_summary` from a connection of the
//! publisher's own, and every replica LISTENs on another.
//!
//! Nothing of this runs inside a write: a `pg_notify` in a transaction takes a
//! database-wide lock held through the commit's flush, which serializes every writer
//! in the database. Here one small transaction carries many keys.
//!
//! The publisher also sends a heartbeat every `heartbeat`. A listener that hears
//! nothing at all for three of them takes its connection for dead (a partition sends
//! no reset), tells the sink, and reconnects.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use diesel::sql_types::{Array, Integer, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::{Change, ChangeSink, HEARTBEAT, MAX_BATCH, Message, Queued, RESYNC, decode, encode};

/// The NOTIFY channel that carries changed summaries.
pub const CHANNEL: &str = "chatd_summary";

/// How the fan-out connects and how often it proves it is alive.
#[derive(Debug, Clone)]
pub struct FanoutConfig {
    /// Where to NOTIFY and LISTEN: the database itself, or a direct route to it when
    /// the pool goes through a pooler that cannot LISTEN (pgbouncer in transaction mode).
    pub url: String,
    pub heartbeat: Duration,
}

impl FanoutConfig {
    /// Silence longer than this means the listener's connection is gone.
    fn silence(&self) -> Duration {
        self.heartbeat * 3
    }

    /// How long one connection attempt may take.
    fn connect_timeout(&self) -> Duration {
        self.heartbeat.max(Duration::from_secs(1)) * 2
    }
}

/// The running fan-out: its two tasks (ended by `stopping`).
pub struct PgFanout {
    tasks: [JoinHandle<()>; 2],
}

impl PgFanout {
    /// Starts the notifier, sending what was published to `queued`, and the listener.
    /// The sink hears `connected` once the listener LISTENs; until then (and whenever
    /// it is down) it is disconnected.
    pub fn start(
        config: FanoutConfig,
        queued: Queued,
        sink: Arc<dyn ChangeSink>,
        stopping: watch::Receiver<bool>,
    ) -> Self {
        let own_pid = Arc::new(AtomicI32::new(0));
        let notifier = tokio::spawn(notify(
            config.clone(),
            queued.0,
            own_pid.clone(),
            stopping.clone(),
        ));
        let listener = tokio::spawn(listen(config, sink, own_pid, stopping));
        Self {
            tasks: [notifier, listener],
        }
    }

    /// Stops both tasks now (shutdown, after `stopping` was sent).
    pub fn abort(&self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn connect(config: &FanoutConfig) -> Result<AsyncPgConnection, String> {
    match tokio::time::timeout(
        config.connect_timeout(),
        AsyncPgConnection::establish(&config.url),
    )
    .await
    {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!(
            "no connection within {:?}",
            config.connect_timeout()
        )),
    }
}

#[derive(diesel::QueryableByName)]
struct BackendPid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

/// Sends queued changes in batches, and a heartbeat every `heartbeat`. Changes it could
/// not send are not retried: it sends a resync instead, once it can, so every listener
/// treats everything as changed.
async fn notify(
    config: FanoutConfig,
    mut queued: mpsc::UnboundedReceiver<Change>,
    own_pid: Arc<AtomicI32>,
    mut stopping: watch::Receiver<bool>,
) {
    let mut conn: Option<AsyncPgConnection> = None;
    let mut lost = false;
    let mut last_attempt: Option<Instant> = None;
    let mut ticker = tokio::time::interval(config.heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut batch = BTreeSet::new();
        let beat = tokio::select! {
            key = queued.recv() => match key {
                Some(key) => {
                    batch.insert(key);
                    while batch.len() < MAX_BATCH && let Ok(key) = queued.try_recv() {
                        batch.insert(key);
                    }
                    false
                }
                None => return,
            },
            _ = ticker.tick() => true,
            _ = stopping.changed() => return,
        };
        let mut payloads: Vec<String> = Vec::new();
        if lost {
            payloads.push(RESYNC.to_owned());
        }
        payloads.extend(encode(batch));
        if beat && payloads.is_empty() {
            payloads.push(HEARTBEAT.to_owned());
        }
        if conn.is_none() {
            // While the database is away, try at most once a heartbeat.
            if last_attempt.is_some_and(|at| at.elapsed() < config.heartbeat) {
                lost = true;
                continue;
            }
            last_attempt = Some(Instant::now());
            match connect(&config).await {
                Ok(mut fresh) => {
                    let pid: Result<BackendPid, _> =
                        diesel::sql_query("SELECT pg_backend_pid() AS pid")
                            .get_result(&mut fresh)
                            .await;
                    AtomicI32::store(&own_pid, pid.map_or(0, |row| row.pid), Ordering::Relaxed);
                    conn = Some(fresh);
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot connect to publish summary changes; other replicas will resync");
                    lost = true;
                    continue;
                }
            }
        }
        let Some(live) = conn.as_mut() else { continue };
        let sent = diesel::sql_query(format!(
            "SELECT pg_notify('{CHANNEL}', payload) FROM unnest($1) AS payload"
        ))
        .bind::<Array<Text>, _>(&payloads)
        .execute(live);
        match tokio::time::timeout(config.connect_timeout(), sent).await {
            Ok(Ok(_)) => lost = false,
            failed => {
                let error = match failed {
                    Ok(Err(error)) => error.to_string(),
                    _ => "timed out".to_owned(),
                };
                tracing::warn!(%error, "lost the connection that publishes summary changes; reconnecting");
                conn = None;
                lost = true;
            }
        }
    }
}

/// Keeps one connection LISTENing, hands what arrives to `sink`, and reconnects when
/// the connection fails or goes silent.
async fn listen(
    config: FanoutConfig,
    sink: Arc<dyn ChangeSink>,
    own_pid: Arc<AtomicI32>,
    mut stopping: watch::Receiver<bool>,
) {
    let retry_after = Duration::from_millis(500);
    loop {
        let connected = async {
            let mut conn = connect(&config).await?;
            conn.batch_execute(&format!("LISTEN {CHANNEL}"))
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(conn)
        };
        let mut conn = tokio::select! {
            connected = connected => match connected {
                Ok(conn) => conn,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for summary changes; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(retry_after) => continue,
                        _ = stopping.changed() => return,
                    }
                }
            },
            _ = stopping.changed() => return,
        };
        tracing::info!("listening for summary changes");
        sink.connected();
        let mut notifications = std::pin::pin!(conn.notifications_stream());
        loop {
            tokio::select! {
                next = tokio::time::timeout(config.silence(), notifications.next()) => match next {
                    Ok(Some(Ok(notification))) => match decode(&notification.payload) {
                        Message::Heartbeat => {}
                        Message::Resync => sink.connected(),
                        // This replica's own writes reached its caches before they answered.
                        Message::Changed(_) if notification.process_id == AtomicI32::load(&own_pid, Ordering::Relaxed) => {}
                        Message::Changed(changes) => sink.changed(&changes),
                    },
                    Ok(Some(Err(error))) => {
                        tracing::warn!(%error, "summary listener lost its connection; reconnecting");
                        break;
                    }
                    Ok(None) => {
                        tracing::warn!("summary listener connection closed; reconnecting");
                        break;
                    }
                    Err(_) => {
                        tracing::warn!(silence = ?config.silence(), "summary listener heard nothing, not even heartbeats; reconnecting");
                        break;
                    }
                },
                _ = stopping.changed() => return,
            }
        }
        sink.disconnected();
    }
}
