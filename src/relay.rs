//! The relay: the events of the outbox to the sinks configured (NATS JetStream,
//! webhooks), unread reminders, and retention. One replica relays at a time: the one
//! holding the lease in the database (`event_relay_lease`), renewed every
//! `RENEW_EVERY`; another takes over within `LEASE_TTL` of its holder dying.
//!
//! Each sink has a durable cursor (`event_cursors`): the last position it acknowledged.
//! A batch goes out in position order and is retried, as it was, until the sink takes
//! it; only then does the cursor move. So a sink receives every event at least once,
//! in order, and a repeat has the same id.

use std::time::Duration;

use tokio::sync::watch;

use crate::config::EventsConfig;
use crate::domain::{Chat, Event};
use crate::metrics::EventCounters;
use crate::storage::Store;
use crate::storage::writes::outbox::{AdvanceCursor, HoldLease, TrimEvents};
use crate::storage::writes::remind_unread::{ParticipantKey, RemindUnread, Reminded};

mod nats;
mod webhook;

/// How long a lease lasts unless renewed.
const LEASE_TTL: Duration = Duration::from_secs(5);

/// How often the holder renews it (and a replica without it tries to take it).
const RENEW_EVERY: Duration = Duration::from_secs(1);

/// The first pause before a failed batch is sent again; each later one doubles.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// The longest pause between two tries of a batch.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// How often retention looks for events to trim, at most.
const TRIM_EVERY: Duration = Duration::from_secs(60);

/// Events deleted per transaction by retention: small, so writes never wait long.
const TRIM_BATCH: i64 = 1000;

/// Participants reminded per statement: on SQLite a batch holds the one writer, and
/// rounds go on where the last stopped, so small batches cost no more in all.
const REMIND_BATCH: i64 = 100;

/// How often reminders are looked for, at most.
const REMIND_EVERY: Duration = Duration::from_secs(30);

/// Where events go: a sink takes a batch whole, or not.
enum Sink {
    Nats(nats::NatsSink),
    Webhook(webhook::WebhookSink),
}

impl Sink {
    fn name(&self) -> &'static str {
        match self {
            Sink::Nats(_) => "nats",
            Sink::Webhook(_) => "webhook",
        }
    }

    /// The cursor's key in `event_cursors`: the sink and where it points.
    fn cursor_key(&self) -> String {
        match self {
            Sink::Nats(sink) => format!("nats:{}", sink.stream()),
            Sink::Webhook(sink) => format!("webhook:{}", sink.url()),
        }
    }

    fn batch_size(&self) -> i64 {
        match self {
            Sink::Nats(_) => nats::BATCH,
            Sink::Webhook(_) => webhook::BATCH,
        }
    }

    /// Delivers `batch`: `Ok(n)` when the first `n` events are taken (all, or some when
    /// the sink acknowledges one by one); `Err` when none was.
    async fn deliver(&mut self, batch: &[Event]) -> Result<usize, String> {
        match self {
            Sink::Nats(sink) => sink.deliver(batch).await,
            Sink::Webhook(sink) => sink.deliver(batch).await,
        }
    }
}

/// Relays while this replica holds the lease, until `stopping`; gives the lease up at
/// the end so another replica takes over at once.
pub async fn run(
    chat: Chat,
    store: Store,
    config: EventsConfig,
    counters: EventCounters,
    mut stopping: watch::Receiver<bool>,
) {
    let holder = format!("{}-{:016x}", std::process::id(), fastrand::u64(..));
    let mut workers: Option<Workers> = None;
    let mut held_until = tokio::time::Instant::now();
    loop {
        let lease = HoldLease {
            holder: holder.clone(),
            now_ms: now_ms(),
            ttl_ms: LEASE_TTL.as_millis() as i64,
            release: false,
        };
        let asked = tokio::time::Instant::now();
        match store.write(lease).await {
            Ok(true) => {
                held_until = asked + LEASE_TTL;
                if workers.is_none() {
                    tracing::info!(%holder, "this replica relays events now");
                    workers = Some(Workers::start(&chat, &store, &config, &counters));
                }
            }
            Ok(false) => {
                if workers.take().is_some() {
                    tracing::warn!(%holder, "another replica took the events relay over");
                }
            }
            // Unsure: keep relaying until the lease would have run out.
            Err(_) if tokio::time::Instant::now() < held_until => {}
            Err(_) => {
                if workers.take().is_some() {
                    tracing::warn!(%holder, "the events relay's lease could not be renewed: stopped relaying");
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(RENEW_EVERY) => {}
            _ = stopping.changed() => break,
        }
    }
    if workers.take().is_some() {
        let release = HoldLease {
            holder,
            now_ms: now_ms(),
            ttl_ms: 0,
            release: true,
        };
        let _ = store.write(release).await;
    }
}

/// The relay's tasks while the lease is held; dropping it stops them.
struct Workers {
    _stop: watch::Sender<bool>,
}

impl Workers {
    fn start(chat: &Chat, store: &Store, config: &EventsConfig, counters: &EventCounters) -> Self {
        let (stop, stopped) = watch::channel(false);
        if let Some(url) = &config.nats_url {
            let sink = Sink::Nats(nats::NatsSink::new(
                url.clone(),
                config.nats_stream.clone(),
                config.retention,
            ));
            tokio::spawn(deliver(
                chat.clone(),
                store.clone(),
                sink,
                counters.clone(),
                stopped.clone(),
            ));
        }
        if let Some(webhook) = &config.webhook {
            let sink = Sink::Webhook(webhook::WebhookSink::new(webhook.clone()));
            tokio::spawn(deliver(
                chat.clone(),
                store.clone(),
                sink,
                counters.clone(),
                stopped.clone(),
            ));
        }
        if !config.unread_reminder_after.is_zero() {
            tokio::spawn(remind(
                store.clone(),
                config.unread_reminder_after,
                config.unread_reminder_window.max(1),
                stopped.clone(),
            ));
        }
        tokio::spawn(trim(store.clone(), config.retention, stopped));
        Self { _stop: stop }
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Sleeps `pause`; false when the relay stops meanwhile.
async fn pause(pause: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(pause) => true,
        _ = stop.changed() => false,
    }
}

fn age(event: &Event) -> Duration {
    (chrono::Utc::now() - event.time)
        .to_std()
        .unwrap_or_default()
}

/// Delivers every event after the sink's cursor, in order, retrying a batch as it was.
async fn deliver(
    chat: Chat,
    store: Store,
    mut sink: Sink,
    counters: EventCounters,
    mut stop: watch::Receiver<bool>,
) {
    let name = sink.name();
    let key = sink.cursor_key();
    let mut positions = chat.outbox_positions();
    let mut cursor = loop {
        match store.event_cursor(&key).await {
            Ok(cursor) => break cursor,
            Err(_) if pause(FIRST_BACKOFF, &mut stop).await => {}
            Err(_) => return,
        }
    };
    let mut pending: Vec<Event> = Vec::new();
    let mut backoff = FIRST_BACKOFF;
    loop {
        if pending.is_empty() {
            positions.borrow_and_update();
            pending = match chat.events_after(cursor, &[], sink.batch_size()).await {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::warn!(sink = name, %error, "cannot read events to relay; retrying");
                    if !pause(FIRST_BACKOFF, &mut stop).await {
                        return;
                    }
                    continue;
                }
            };
            if pending.is_empty() {
                counters.set_lag(name, Duration::ZERO);
                tokio::select! {
                    _ = positions.changed() => {}
                    () = tokio::time::sleep(RENEW_EVERY) => {}
                    _ = stop.changed() => return,
                }
                continue;
            }
        }
        counters.set_lag(name, pending.first().map(age).unwrap_or_default());
        match sink.deliver(&pending).await {
            Ok(taken) => {
                backoff = FIRST_BACKOFF;
                let done: Vec<Event> = pending.drain(..taken.min(pending.len())).collect();
                let Some(last) = done.last() else { continue };
                counters.count(name, "ok", done.len() as u64);
                cursor = last.position;
                let advance = AdvanceCursor {
                    sink: key.clone(),
                    position: cursor,
                    now_ms: now_ms(),
                };
                // A cursor not stored is only a repeat after a restart: delivery is at
                // least once.
                if let Err(error) = store.write(advance).await {
                    tracing::warn!(sink = name, %error, "cannot store the sink's cursor; events may be sent again");
                }
            }
            Err(error) => {
                counters.count(name, "failed", pending.len() as u64);
                tracing::warn!(sink = name, %error, retry_in = ?backoff, "events not delivered; the batch is retried as it was");
                if !pause(backoff, &mut stop).await {
                    return;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Writes unread reminders (`RemindUnread`) for messages unread for `after`.
/// Each round looks through `window` threads at most (`EventsConfig`).
async fn remind(store: Store, after: Duration, window: i64, mut stop: watch::Receiver<bool>) {
    let every = (after / 4).clamp(Duration::from_millis(100), REMIND_EVERY);
    let after = chrono::Duration::from_std(after).unwrap_or(chrono::Duration::MAX);
    let batch = REMIND_BATCH;
    // A sweep goes through the participants once in key order, a window of threads at a
    // time and at most a batch of reminders a round, so a backlog costs one read of it
    // and no round holds writes long, whether many are due or none.
    let mut from = ParticipantKey::before_thread(0);
    loop {
        let now = chrono::Utc::now();
        let through_thread_id = from.thread_id.saturating_add(window);
        let round = RemindUnread {
            due_before: now.checked_sub_signed(after).unwrap_or(now),
            now_ms: now.timestamp_millis(),
            batch,
            after: from,
            through_thread_id,
        };
        let next = match store.write(round).await {
            Ok(Reminded {
                count,
                last: Some(last),
                ..
            }) if count == batch => Some(last),
            Ok(Reminded { beyond: true, .. }) => Some(ParticipantKey::before_thread(
                through_thread_id.saturating_add(1),
            )),
            Ok(_) => None,
            Err(error) => {
                tracing::warn!(%error, "unread reminders: a round failed; the next sweep starts over");
                None
            }
        };
        match next {
            // A sweep of a large database is many rounds: it ends with the relay too
            // (which stops by dropping its sender).
            Some(_) if stop.has_changed().unwrap_or(true) => return,
            Some(key) => from = key,
            None => {
                from = ParticipantKey::before_thread(0);
                if !pause(every, &mut stop).await {
                    return;
                }
            }
        }
    }
}

/// Deletes events older than `retention`, in small batches.
async fn trim(store: Store, retention: Duration, mut stop: watch::Receiver<bool>) {
    let every = (retention / 2).clamp(Duration::from_millis(100), TRIM_EVERY);
    let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    loop {
        let now = chrono::Utc::now();
        let batch = TrimEvents {
            before: now.checked_sub_signed(retention).unwrap_or(now),
            batch: TRIM_BATCH,
        };
        let more = matches!(store.write(batch).await, Ok(trimmed) if trimmed.deleted == TRIM_BATCH);
        // Between batches, a breath for the writes.
        let wait = if more {
            Duration::from_millis(10)
        } else {
            every
        };
        if !pause(wait, &mut stop).await {
            return;
        }
    }
}
