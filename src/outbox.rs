//! The log as an outbox: numbers committed events in commit order (the sequencer) and
//! tells this replica's event readers (StreamEvents, the relay's sinks) how far the
//! numbering has gone.
//!
//! Every replica runs a sequencer, woken by its own writes (`Store::log_grew`) and,
//! as a floor, every `SEQUENCE_EVERY`: the database orders sequencers (one at a time, see
//! `writes/outbox.rs`), so each replica numbers its own writes promptly and any replica
//! numbers what a dead one left. A replica hears of positions another one gave by
//! reading the sequence every `POLL_EVERY` while something here reads events.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::storage::Store;
use crate::storage::writes::outbox::SequenceEvents;

/// Events numbered per transaction of the sequencer.
const SEQUENCE_BATCH: i64 = 1000;

/// The sequencer's floor: it runs at least this often, for rows other replicas left.
const SEQUENCE_EVERY: Duration = Duration::from_secs(1);

/// How often the newest position is read while events are read here (other replicas
/// number their own writes).
const POLL_EVERY: Duration = Duration::from_millis(50);

/// How long the sequencer waits after a database error before it tries again.
const RETRY_AFTER: Duration = Duration::from_millis(200);

/// This replica's view of the outbox. Cloning is shallow.
#[derive(Clone)]
pub struct Outbox {
    newest: Arc<watch::Sender<i64>>,
}

impl Outbox {
    /// Starts the sequencer (and, on PostgreSQL, the poller) until `shutdown` fires.
    pub fn start(store: Store, shutdown: watch::Receiver<bool>) -> Self {
        let outbox = Self {
            newest: Arc::new(watch::Sender::new(0)),
        };
        tokio::spawn(sequence(store.clone(), outbox.clone(), shutdown.clone()));
        if matches!(store, Store::Postgres(_)) {
            tokio::spawn(poll(store, outbox.clone(), shutdown));
        }
        outbox
    }

    /// An outbox that numbers nothing: for tests of other parts.
    pub fn idle() -> Self {
        Self {
            newest: Arc::new(watch::Sender::new(0)),
        }
    }

    /// The newest position known here, changing as numbering goes on.
    pub fn positions(&self) -> watch::Receiver<i64> {
        self.newest.subscribe()
    }

    fn heard(&self, position: i64) {
        self.newest.send_if_modified(|newest| {
            let newer = position > *newest;
            if newer {
                *newest = position;
            }
            newer
        });
    }
}

async fn sequence(store: Store, outbox: Outbox, mut shutdown: watch::Receiver<bool>) {
    let grew = store.log_grew().clone();
    loop {
        match store
            .write(SequenceEvents {
                limit: SEQUENCE_BATCH,
            })
            .await
        {
            Ok(done) => {
                outbox.heard(done.last_position);
                if done.numbered == SEQUENCE_BATCH {
                    continue;
                }
            }
            // Said once per episode by storage; the rows stay unnumbered until it ends.
            Err(_) => {
                tokio::select! {
                    () = tokio::time::sleep(RETRY_AFTER) => continue,
                    _ = shutdown.changed() => return,
                }
            }
        }
        tokio::select! {
            () = grew.notified() => {}
            () = tokio::time::sleep(SEQUENCE_EVERY) => {}
            _ = shutdown.changed() => return,
        }
    }
}

async fn poll(store: Store, outbox: Outbox, mut shutdown: watch::Receiver<bool>) {
    loop {
        // Nobody here reads events (only the sequencer's own sender is held): nothing
        // to learn.
        if outbox.newest.receiver_count() > 0
            && let Ok(bounds) = store.event_bounds().await
        {
            outbox.heard(bounds.last_position);
        }
        tokio::select! {
            () = tokio::time::sleep(POLL_EVERY) => {}
            _ = shutdown.changed() => return,
        }
    }
}
