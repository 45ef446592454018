//! Who is watching which unread summary, and waking them when it changes.
//!
//! One `tokio::sync::watch` channel per (user, side) that has watchers: a change bumps
//! the channel's counter, which wakes only that key's watchers, and any number of
//! changes before a watcher looks again coalesce into one wake. Idle watchers cost a
//! parked future each: no timer, no task, no query until their own summary changes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use crate::model::SummaryKey;

/// Why a stream cannot open: too many open for the user (or on the server), or the
/// server is shutting down. The domain says it to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamRefusal {
    TooMany { limit: usize, scope: &'static str },
    ShuttingDown,
}

/// How many summary streams may be open, per user (and side) and in total.
#[derive(Debug, Clone, Copy)]
pub struct WatchLimits {
    pub per_user: usize,
    pub total: usize,
}

struct Entry {
    changes: watch::Sender<u64>,
    watchers: usize,
}

struct HubInner {
    keys: Mutex<HashMap<SummaryKey, Entry>>,
    total: AtomicUsize,
    limits: WatchLimits,
    closed: watch::Sender<bool>,
}

/// The process's registry of summary watchers. Cloning is shallow.
#[derive(Clone)]
pub struct SummaryHub(Arc<HubInner>);

impl SummaryHub {
    pub fn new(limits: WatchLimits) -> Self {
        Self(Arc::new(HubInner {
            keys: Mutex::new(HashMap::new()),
            total: AtomicUsize::new(0),
            limits,
            closed: watch::Sender::new(false),
        }))
    }

    fn keys(&self) -> MutexGuard<'_, HashMap<SummaryKey, Entry>> {
        // A panic while holding this lock cannot leave the map inconsistent (every
        // critical section is a single insert, update or remove), so poison is ignored.
        self.0
            .keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Wakes the watchers of one user's summary, if there are any (else costs a lookup).
    pub fn notify(&self, key: SummaryKey) {
        if let Some(entry) = self.keys().get(&key) {
            entry.changes.send_modify(|generation| *generation += 1);
        }
    }

    /// Wakes every watcher: after notifications may have been lost (the PostgreSQL
    /// listener reconnected), each one re-reads its summary and sends it if it changed.
    pub fn notify_all(&self) {
        for entry in self.keys().values() {
            entry.changes.send_modify(|generation| *generation += 1);
        }
    }

    /// Ends every stream: shutdown has begun. New subscriptions are refused.
    pub fn close(&self) {
        self.0.closed.send_replace(true);
    }

    /// How many streams are open now.
    pub fn open_streams(&self) -> usize {
        self.0.total.load(Ordering::Relaxed)
    }

    /// Most streams this server holds (`--watch-max-total`).
    pub fn stream_cap(&self) -> usize {
        self.0.limits.total
    }

    /// Whether `key` could open one more stream now: the refusal `subscribe` would give,
    /// told before a stream ticket is minted, so a browser learns the reason in JSON (an
    /// EventSource that fails to open learns nothing) and does not retry in a loop.
    pub fn room_for(&self, key: SummaryKey) -> Result<(), StreamRefusal> {
        self.refusal(self.keys().get(&key).map_or(0, |entry| entry.watchers))?;
        if self.0.total.load(Ordering::Acquire) >= self.0.limits.total {
            return Err(self.server_full());
        }
        Ok(())
    }

    fn refusal(&self, watchers: usize) -> Result<(), StreamRefusal> {
        if *self.0.closed.borrow() {
            return Err(StreamRefusal::ShuttingDown);
        }
        if watchers >= self.0.limits.per_user {
            return Err(StreamRefusal::TooMany {
                limit: self.0.limits.per_user,
                scope: "for this user",
            });
        }
        Ok(())
    }

    fn server_full(&self) -> StreamRefusal {
        StreamRefusal::TooMany {
            limit: self.0.limits.total,
            scope: "on this server",
        }
    }

    /// Registers a watcher of `key`'s summary, within the limits.
    pub fn subscribe(&self, key: SummaryKey) -> Result<Subscription, StreamRefusal> {
        let limits = self.0.limits;
        let mut keys = self.keys();
        self.refusal(keys.get(&key).map_or(0, |entry| entry.watchers))?;
        if self.0.total.fetch_add(1, Ordering::AcqRel) >= limits.total {
            self.0.total.fetch_sub(1, Ordering::AcqRel);
            return Err(self.server_full());
        }
        let entry = keys.entry(key).or_insert_with(|| Entry {
            changes: watch::Sender::new(0),
            watchers: 0,
        });
        entry.watchers += 1;
        Ok(Subscription {
            changes: entry.changes.subscribe(),
            closed: self.0.closed.subscribe(),
            hub: self.clone(),
            key,
        })
    }

    fn unsubscribe(&self, key: SummaryKey) {
        let mut keys = self.keys();
        if let Some(entry) = keys.get_mut(&key) {
            entry.watchers -= 1;
            if entry.watchers == 0 {
                keys.remove(&key);
            }
        }
        self.0.total.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One watcher's registration; dropping it (the stream ended) frees its place.
pub struct Subscription {
    changes: watch::Receiver<u64>,
    closed: watch::Receiver<bool>,
    hub: SummaryHub,
    key: SummaryKey,
}

impl Subscription {
    /// Waits until the summary may have changed since the last `mark_seen`. Returns false
    /// when the hub closed (shutdown): the stream should end.
    pub async fn changed(&mut self) -> bool {
        if *self.closed.borrow() {
            return false;
        }
        tokio::select! {
            changed = self.changes.changed() => changed.is_ok() && !*self.closed.borrow(),
            _ = self.closed.changed() => false,
        }
    }

    /// Waits until the hub closes (shutdown): what a stream that only holds a place
    /// (a thread stream) waits on.
    pub async fn closed(&mut self) {
        while !*self.closed.borrow_and_update() {
            if self.closed.changed().await.is_err() {
                return;
            }
        }
    }

    /// Marks every change so far as seen: the summary about to be read includes them.
    pub fn mark_seen(&mut self) {
        self.changes.borrow_and_update();
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.unsubscribe(self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Side;

    fn key(user_id: i64, side: Side) -> SummaryKey {
        SummaryKey::new(user_id, side)
    }

    fn hub(per_user: usize, total: usize) -> SummaryHub {
        SummaryHub::new(WatchLimits { per_user, total })
    }

    #[tokio::test]
    async fn notify_wakes_only_that_key_and_bursts_coalesce() {
        let hub = hub(4, 10);
        let mut tutor = hub.subscribe(key(1, Side::Tutor)).unwrap();
        let mut other = hub.subscribe(key(2, Side::Tutor)).unwrap();
        for _ in 0..100 {
            hub.notify(key(1, Side::Tutor));
        }
        assert!(tutor.changed().await);
        tutor.mark_seen();
        // All 100 were one change: nothing more is pending.
        assert!(!tutor.changes.has_changed().unwrap());
        assert!(!other.changes.has_changed().unwrap());
        hub.notify_all();
        assert!(other.changed().await);
    }

    #[tokio::test]
    async fn limits_and_release() {
        let hub = hub(2, 3);
        let a = hub.subscribe(key(1, Side::Tutor)).unwrap();
        let _b = hub.subscribe(key(1, Side::Tutor)).unwrap();
        assert!(matches!(
            hub.subscribe(key(1, Side::Tutor)),
            Err(StreamRefusal::TooMany { .. })
        ));
        let _c = hub.subscribe(key(2, Side::Student)).unwrap();
        assert!(matches!(
            hub.subscribe(key(3, Side::Student)),
            Err(StreamRefusal::TooMany { .. })
        ));
        assert_eq!(hub.open_streams(), 3);
        drop(a);
        assert_eq!(hub.open_streams(), 2);
        hub.subscribe(key(1, Side::Tutor)).unwrap();
    }

    #[tokio::test]
    async fn close_ends_watchers() {
        let hub = hub(2, 2);
        let mut watcher = hub.subscribe(key(1, Side::Tutor)).unwrap();
        hub.close();
        assert!(!watcher.changed().await);
        assert!(hub.subscribe(key(1, Side::Tutor)).is_err());
    }
}
