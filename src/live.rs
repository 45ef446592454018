//! Open chat windows on this replica: who watches which thread, waking them when its
//! log grows or someone types there, and telling the other replicas the same.
//!
//! One entry per thread with watchers: a `watch` channel of the newest log version
//! heard (any number of changes before a watcher looks again make one wake, and the
//! watcher reads what it missed from the log, never from here) and a small `broadcast`
//! of typing, which is never stored. A thread nobody watches here costs a lookup.
//!
//! Typing is announced at most once per user and thread every `TYPING_EVERY`; an
//! announcement lasts `TYPING_LASTS`, after which it ends by itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, watch};

use crate::fanout::{Change, Publisher};
use crate::model::Side;
use crate::storage::writes::Logged;

/// How long a typing announcement lasts.
pub const TYPING_LASTS: Duration = Duration::from_secs(5);

/// How often one user's typing in one thread is announced at most.
pub const TYPING_EVERY: Duration = Duration::from_secs(2);

/// Typing announcements a watcher may fall behind by before it skips the oldest: they
/// are superseded within seconds anyway.
const TYPING_BUFFER: usize = 16;

/// Announcements remembered for throttling before the expired ones are forgotten.
const THROTTLE_SWEEP_AT: usize = 4096;

/// A participant typing, until a time (Unix ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Typing {
    pub side: Side,
    pub until_ms: i64,
}

struct Entry {
    version: watch::Sender<i64>,
    typing: broadcast::Sender<Typing>,
    watchers: usize,
}

struct Inner {
    threads: Mutex<HashMap<i64, Entry>>,
    /// How long a stream waits for its reader to make room (`--watch-stall-timeout`).
    stall_timeout: Duration,
    /// The last announcement per (thread, user): when, and until when it lasts.
    announced: Mutex<HashMap<(i64, i64), (Instant, i64)>>,
    publisher: Arc<dyn Publisher>,
}

/// This replica's thread watchers. Cloning is shallow.
#[derive(Clone)]
pub struct Live(Arc<Inner>);

/// What an announcement of typing did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announced {
    /// Announced now, lasting until then (Unix ms).
    Now(i64),
    /// Announced less than `TYPING_EVERY` ago: nothing sent, the last one lasts until
    /// then (Unix ms).
    Already(i64),
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is one insert, update or removal: a panic cannot leave the
    // map half-changed, so poison is ignored.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Live {
    /// Watchers are told through `publisher` of what this replica writes; a stream
    /// waits `stall_timeout` for its reader to make room before it gives up on it.
    pub fn new(publisher: Arc<dyn Publisher>, stall_timeout: Duration) -> Self {
        Self(Arc::new(Inner {
            threads: Mutex::new(HashMap::new()),
            stall_timeout,
            announced: Mutex::new(HashMap::new()),
            publisher,
        }))
    }

    /// After this replica committed writes that logged these versions: wakes the
    /// threads' watchers here and has the other replicas told.
    pub fn committed(&self, logged: &[Logged]) {
        if logged.is_empty() {
            return;
        }
        for entry in logged {
            self.heard(entry.thread_id, entry.version);
        }
        let changes: Vec<Change> = logged
            .iter()
            .map(|entry| Change::Thread {
                thread_id: entry.thread_id,
                version: entry.version,
            })
            .collect();
        self.0.publisher.publish(&changes);
    }

    /// A thread's log reached `version` (here or on another replica).
    pub fn heard(&self, thread_id: i64, version: i64) {
        if let Some(entry) = lock(&self.0.threads).get(&thread_id) {
            entry.version.send_if_modified(|newest| {
                let newer = version > *newest;
                *newest = (*newest).max(version);
                newer
            });
        }
    }

    /// Someone typing in a thread (here or on another replica).
    pub fn heard_typing(&self, thread_id: i64, typing: Typing) {
        if let Some(entry) = lock(&self.0.threads).get(&thread_id) {
            // No receiver is no watcher left: nothing to tell.
            let _ = entry.typing.send(typing);
        }
    }

    /// Wakes every watcher: notifications may have been lost (the fan-out reconnected),
    /// so each reads its thread's log again.
    pub fn wake_all(&self) {
        for entry in lock(&self.0.threads).values() {
            entry.version.send_modify(|_| {});
        }
    }

    /// Announces `user_id` typing in a thread on `side`, unless they did within
    /// `TYPING_EVERY`: then nothing is sent, and the last announcement stands.
    pub fn announce_typing(
        &self,
        thread_id: i64,
        user_id: i64,
        side: Side,
        now_ms: i64,
    ) -> Announced {
        let now = Instant::now();
        let until_ms = now_ms + TYPING_LASTS.as_millis() as i64;
        {
            let mut announced = lock(&self.0.announced);
            if let Some((at, until)) = announced.get(&(thread_id, user_id))
                && now.duration_since(*at) < TYPING_EVERY
            {
                return Announced::Already(*until);
            }
            if announced.len() >= THROTTLE_SWEEP_AT {
                announced.retain(|_, (at, _)| now.duration_since(*at) < TYPING_LASTS);
            }
            announced.insert((thread_id, user_id), (now, until_ms));
        }
        self.heard_typing(thread_id, Typing { side, until_ms });
        self.0.publisher.publish(&[Change::Typing {
            thread_id,
            side,
            until_ms,
        }]);
        Announced::Now(until_ms)
    }

    /// Registers a watcher of a thread.
    pub fn watch(&self, thread_id: i64) -> ThreadSignal {
        let mut threads = lock(&self.0.threads);
        let entry = threads.entry(thread_id).or_insert_with(|| Entry {
            version: watch::Sender::new(0),
            typing: broadcast::Sender::new(TYPING_BUFFER),
            watchers: 0,
        });
        entry.watchers += 1;
        ThreadSignal {
            version: entry.version.subscribe(),
            typing: entry.typing.subscribe(),
            live: self.clone(),
            thread_id,
        }
    }

    /// How long a stream waits for its reader to make room in its buffer.
    pub fn stall_timeout(&self) -> Duration {
        self.0.stall_timeout
    }

    /// How many threads have watchers here.
    pub fn watched_threads(&self) -> usize {
        lock(&self.0.threads).len()
    }

    fn unwatch(&self, thread_id: i64) {
        let mut threads = lock(&self.0.threads);
        if let Some(entry) = threads.get_mut(&thread_id) {
            entry.watchers -= 1;
            if entry.watchers == 0 {
                threads.remove(&thread_id);
            }
        }
    }
}

/// What wakes a thread's watcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// The log may have grown: read it from where the watcher is.
    Logged,
    /// Someone is typing.
    Typing(Typing),
}

/// One watcher's registration; dropping it frees its place.
pub struct ThreadSignal {
    version: watch::Receiver<i64>,
    typing: broadcast::Receiver<Typing>,
    live: Live,
    thread_id: i64,
}

impl ThreadSignal {
    /// Marks every log change so far as seen: the read about to be made includes them.
    pub fn mark_seen(&mut self) {
        self.version.borrow_and_update();
    }

    /// Waits for the next wake: a log change since `mark_seen`, or typing.
    pub async fn next(&mut self) -> Signal {
        loop {
            tokio::select! {
                changed = self.version.changed() => {
                    // The sender lives as long as this registration does.
                    let _ = changed;
                    return Signal::Logged;
                }
                typing = self.typing.recv() => match typing {
                    Ok(typing) => return Signal::Typing(typing),
                    // Typing skipped by a slow watcher is superseded anyway.
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return Signal::Logged,
                },
            }
        }
    }
}

impl Drop for ThreadSignal {
    fn drop(&mut self) {
        self.live.unwatch(self.thread_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::Local;

    fn live() -> Live {
        Live::new(Arc::new(Local), Duration::from_secs(1))
    }

    #[tokio::test]
    async fn a_logged_change_wakes_the_threads_watchers_only() {
        let live = live();
        let mut watcher = live.watch(1);
        let mut other = live.watch(2);
        live.committed(&[Logged {
            thread_id: 1,
            version: 3,
        }]);
        assert_eq!(watcher.next().await, Signal::Logged);
        assert!(!other.version.has_changed().unwrap_or(true));
        // An older version than the newest heard wakes nobody.
        watcher.mark_seen();
        live.heard(1, 2);
        assert!(!watcher.version.has_changed().unwrap_or(true));
        live.wake_all();
        assert_eq!(other.next().await, Signal::Logged);
    }

    #[tokio::test]
    async fn typing_is_announced_once_per_interval() {
        let live = live();
        let mut watcher = live.watch(7);
        let first = live.announce_typing(7, 42, Side::Student, 1_000);
        assert_eq!(first, Announced::Now(1_000 + 5_000));
        assert_eq!(
            watcher.next().await,
            Signal::Typing(Typing {
                side: Side::Student,
                until_ms: 6_000
            })
        );
        assert_eq!(
            live.announce_typing(7, 42, Side::Student, 1_500),
            Announced::Already(6_000)
        );
        assert!(matches!(
            live.announce_typing(7, 43, Side::Tutor, 1_500),
            Announced::Now(_)
        ));
    }

    #[test]
    fn the_last_watcher_gone_frees_the_thread() {
        let live = live();
        let a = live.watch(1);
        let b = live.watch(1);
        assert_eq!(live.watched_threads(), 1);
        drop(a);
        assert_eq!(live.watched_threads(), 1);
        drop(b);
        assert_eq!(live.watched_threads(), 0);
    }
}
