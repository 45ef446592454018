//! The fan-out over NATS (`--fanout-url nats://host:port`): after commit, changes
//! (summaries, threads, typing) are published in batches on the subject
//! `chatd.summary`; every replica subscribes.
//!
//! Core NATS delivers at most once, and that is enough: the database is the truth, a
//! replica that loses its connection stops trusting its cache until it is back (and
//! then drops it, since what was published meanwhile is gone), and the sweep repairs
//! the rare message lost while connected. No database connection is held for it and no
//! commit waits on NOTIFY's global lock.
//!
//! The client's own PINGs (every `heartbeat`) find a connection that went silent; its
//! connection events drive the sink. Its own publishes are not echoed back: this
//! replica's writes reached its caches before they answered.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::{ConnectOptions, Event};
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::{ChangeSink, MAX_BATCH, Message, Queued, RESYNC, decode, encode};

/// The subject that carries changed summaries.
pub const SUBJECT: &str = "chatd.summary";

/// How the fan-out connects and how often it proves the connection alive.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// `nats://host:port` (several, comma-separated, for a cluster).
    pub url: String,
    pub heartbeat: Duration,
}

/// The running fan-out: its tasks (ended by `stopping`).
pub struct NatsFanout {
    tasks: [JoinHandle<()>; 3],
}

impl NatsFanout {
    /// Connects in the background (a NATS server that is down now is retried, not
    /// fatal), then publishes what is queued and hands what others publish to `sink`.
    /// The sink hears `connected` each time the connection is up, `disconnected` each
    /// time it is lost.
    pub async fn start(
        config: NatsConfig,
        queued: Queued,
        sink: Arc<dyn ChangeSink>,
        stopping: watch::Receiver<bool>,
    ) -> Result<Self, String> {
        let (events_tx, events) = mpsc::unbounded_channel();
        let client = ConnectOptions::new()
            .name("chatd")
            .no_echo()
            .retry_on_initial_connect()
            .max_reconnects(None)
            .ping_interval(config.heartbeat)
            .connection_timeout(config.heartbeat.max(Duration::from_secs(1)) * 2)
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis(100 * attempts.min(20) as u64)
            })
            .event_callback(move |event| {
                let events_tx = events_tx.clone();
                async move {
                    let _ = events_tx.send(event);
                }
            })
            .connect(config.url.as_str())
            .await
            .map_err(|e| format!("bad --fanout-url {}: {e}", config.url))?;
        // Registered with the client now, and sent again by it after every reconnect.
        let subscriber = client
            .subscribe(SUBJECT)
            .await
            .map_err(|e| format!("cannot subscribe to {SUBJECT}: {e}"))?;
        let lost = Arc::new(AtomicBool::new(false));
        Ok(Self {
            tasks: [
                tokio::spawn(follow_connection(
                    events,
                    sink.clone(),
                    lost.clone(),
                    stopping.clone(),
                )),
                tokio::spawn(publish(client, queued, lost, stopping.clone())),
                tokio::spawn(receive(subscriber, sink, stopping)),
            ],
        })
    }

    /// Stops its tasks now (shutdown, after `stopping` was sent).
    pub fn abort(&self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Turns the client's connection events into the sink's, and tells the publisher when
/// a connection was lost (what it published meanwhile may be lost too).
async fn follow_connection(
    mut events: mpsc::UnboundedReceiver<Event>,
    sink: Arc<dyn ChangeSink>,
    lost: Arc<AtomicBool>,
    mut stopping: watch::Receiver<bool>,
) {
    loop {
        let event = tokio::select! {
            event = events.recv() => match event {
                Some(event) => event,
                None => return,
            },
            _ = stopping.changed() => return,
        };
        match event {
            Event::Connected => {
                tracing::info!("fan-out connected to NATS: listening for summary changes");
                sink.connected();
            }
            Event::Disconnected => {
                tracing::warn!(
                    "fan-out lost its NATS connection: summaries are read from the database until it is back"
                );
                lost.store(true, Ordering::SeqCst);
                sink.disconnected();
            }
            Event::SlowConsumer(_) => {
                // Messages were dropped for this replica: nothing cached can be trusted.
                tracing::warn!(
                    "fan-out fell behind NATS and lost messages: dropping the summary cache"
                );
                sink.connected();
            }
            other => tracing::info!(event = %other, "fan-out NATS event"),
        }
    }
}

/// Publishes queued changes in batches. After a lost connection it publishes a resync
/// first, so every replica drops what its cache holds rather than miss a change.
async fn publish(
    client: async_nats::Client,
    mut queued: Queued,
    lost: Arc<AtomicBool>,
    mut stopping: watch::Receiver<bool>,
) {
    loop {
        let mut batch = BTreeSet::new();
        tokio::select! {
            key = queued.0.recv() => match key {
                Some(key) => {
                    batch.insert(key);
                    while batch.len() < MAX_BATCH && let Ok(key) = queued.0.try_recv() {
                        batch.insert(key);
                    }
                }
                None => return,
            },
            _ = stopping.changed() => return,
        }
        let mut payloads = Vec::new();
        if lost.swap(false, Ordering::SeqCst) {
            payloads.push(RESYNC.to_owned());
        }
        payloads.extend(encode(batch));
        for payload in payloads {
            if let Err(error) = client.publish(SUBJECT, payload.into()).await {
                tracing::warn!(%error, "cannot publish summary changes; other replicas will resync");
                lost.store(true, Ordering::SeqCst);
                break;
            }
        }
    }
}

/// Hands what other replicas publish to the sink.
async fn receive(
    mut subscriber: async_nats::Subscriber,
    sink: Arc<dyn ChangeSink>,
    mut stopping: watch::Receiver<bool>,
) {
    loop {
        let message = tokio::select! {
            message = subscriber.next() => match message {
                Some(message) => message,
                None => return,
            },
            _ = stopping.changed() => return,
        };
        let Ok(payload) = std::str::from_utf8(&message.payload) else {
            tracing::warn!("a summary change that is not UTF-8: dropping the cache to be safe");
            sink.connected();
            continue;
        };
        match decode(payload) {
            Message::Heartbeat => {}
            Message::Resync => sink.connected(),
            Message::Changed(changes) => sink.changed(&changes),
        }
    }
}
