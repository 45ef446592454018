//! Whether the database is failing calls now, told to operators once per episode rather
//! than once per call: a log line when calls start failing (with the first reason) and
//! one when a call succeeds again (with how many failed meanwhile), and for a full disk
//! the `chatd_storage_full` gauge. A replica with hundreds of calls a second would
//! otherwise write hundreds of identical warnings a second while its database restarts.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::{StoreError, StoreResult};

/// An episode of unreachable-database failures: when it began and how many calls failed.
struct Outage {
    since: Instant,
    failed: u64,
}

#[derive(Default)]
pub struct Episodes {
    full: AtomicBool,
    /// Whether `outage` holds one: the check every successful call makes, lock-free.
    failing: AtomicBool,
    outage: Mutex<Option<Outage>>,
}

impl std::fmt::Debug for Episodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Episodes")
            .field("full", &self.is_full())
            .finish_non_exhaustive()
    }
}

impl Episodes {
    /// Whether the last write that told failed for want of space.
    pub fn is_full(&self) -> bool {
        self.full.load(Ordering::Relaxed)
    }

    /// Notes how one call ended.
    pub fn note<T>(&self, backend: &'static str, ended: &StoreResult<T>) {
        match ended {
            Err(StoreError::Full(detail)) => {
                if !self.full.swap(true, Ordering::AcqRel) {
                    tracing::error!(
                        backend,
                        %detail,
                        "database storage is full: writes fail (RESOURCE_EXHAUSTED STORAGE_FULL) \
                         until disk space is freed; reads still work"
                    );
                }
            }
            Err(StoreError::Unavailable(detail) | StoreError::Conflict(detail)) => {
                let mut outage = self.outage.lock().unwrap_or_else(|p| p.into_inner());
                match outage.as_mut() {
                    Some(outage) => outage.failed += 1,
                    None => {
                        tracing::warn!(
                            backend,
                            %detail,
                            "database calls are failing (UNAVAILABLE DATABASE_UNAVAILABLE, \
                             clients retry); said again when one succeeds"
                        );
                        *outage = Some(Outage {
                            since: Instant::now(),
                            failed: 1,
                        });
                        self.failing.store(true, Ordering::Release);
                    }
                }
            }
            Err(StoreError::Query(_)) => {}
            Ok(_) => {
                if self.full.load(Ordering::Relaxed) && self.full.swap(false, Ordering::AcqRel) {
                    tracing::warn!(backend, "database storage has room again: writes succeed");
                }
                if !self.failing.load(Ordering::Acquire) {
                    return;
                }
                let mut outage = self.outage.lock().unwrap_or_else(|p| p.into_inner());
                self.failing.store(false, Ordering::Release);
                if let Some(ended) = outage.take() {
                    tracing::warn!(
                        backend,
                        failed = ended.failed,
                        lasted_ms = ended.since.elapsed().as_millis() as u64,
                        "database calls succeed again"
                    );
                }
            }
        }
    }
}
