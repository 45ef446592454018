//! How many connections this replica holds when PostgreSQL says it has enough.
//!
//! Replicas are added until the database's `max_connections` (or a role's or database's
//! connection limit) is reached; then a new connection is refused with SQLSTATE 53300,
//! though the connections already open work. A call that met that refusal should not
//! fail: it waits for one of the open connections, and the pool stops trying to grow
//! for `HOLD`, so that a burst does not knock on the database's door once per call
//! (and log once per call). After `HOLD` the pool may grow again; if the database still
//! refuses, the next refusal holds it again.
//!
//! deadpool's own `resize` cannot do this (shrinking below the configured size leaves its
//! permits in place when nothing is idle), so a semaphore of chatd's stands in front of
//! the pool: a call takes a permit before it takes a connection, and while the ceiling
//! holds there are only as many permits as open connections.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use diesel_async::pooled_connection::deadpool::Object;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::Conn;

/// How long the pool stays at the size it had when the database refused a connection.
pub const HOLD: Duration = Duration::from_secs(10);

/// The ceiling in front of one pool. Cloning is shallow.
#[derive(Clone)]
pub struct Ceiling(Arc<Inner>);

struct Inner {
    permits: Arc<Semaphore>,
    /// The pool's configured size: the ceiling when nothing holds it.
    max: usize,
    /// How the ceiling stands; permits are taken out and given back under this lock.
    state: Mutex<State>,
    /// Whether `State::owed` is above 0: the check every returned place makes, lock-free.
    owing: AtomicBool,
}

#[derive(Default)]
struct State {
    /// Permits taken out while the ceiling holds (given back when it lifts).
    withheld: usize,
    /// Permits still to take out as calls return them: more were in use than the
    /// ceiling allows when it came down.
    owed: usize,
    /// Refused attempts to open a connection during the present hold.
    refusals: usize,
    holding: bool,
}

impl State {
    /// Permits there are now, in use or free.
    fn ceiling(&self, max: usize) -> usize {
        max.saturating_sub(self.withheld + self.owed)
    }
}

/// A pooled connection with its place under the ceiling.
pub struct PooledConn {
    conn: Object<Conn>,
    _place: Place,
}

impl PooledConn {
    pub fn new(conn: Object<Conn>, place: Place) -> Self {
        Self {
            conn,
            _place: place,
        }
    }

    /// Closes the connection instead of returning it to the pool (its state is unknown).
    pub fn discard(self) {
        drop(Object::take(self.conn));
    }
}

impl std::ops::Deref for PooledConn {
    type Target = Conn;

    fn deref(&self) -> &Conn {
        &self.conn
    }
}

impl std::ops::DerefMut for PooledConn {
    fn deref_mut(&mut self) -> &mut Conn {
        &mut self.conn
    }
}

/// A call's place under the ceiling: held as long as its connection is.
pub struct Place {
    permit: Option<OwnedSemaphorePermit>,
    ceiling: Ceiling,
}

impl Drop for Place {
    fn drop(&mut self) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        // While the ceiling comes down, returned places are taken out, not reused.
        let inner = &self.ceiling.0;
        if !inner.owing.load(Ordering::Acquire) {
            return;
        }
        let mut state = inner.lock();
        if state.owed > 0 {
            state.owed -= 1;
            state.withheld += 1;
            inner.owing.store(state.owed > 0, Ordering::Release);
            permit.forget();
        }
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every critical section leaves the counts consistent: poison is ignored.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Ceiling {
    pub fn new(max: usize) -> Self {
        Self(Arc::new(Inner {
            permits: Arc::new(Semaphore::new(max)),
            max,
            state: Mutex::new(State::default()),
            owing: AtomicBool::new(false),
        }))
    }

    /// Waits for a place under the ceiling.
    pub async fn place(&self) -> Place {
        let permit = self.0.permits.clone().acquire_owned().await.ok();
        Place {
            permit,
            ceiling: self.clone(),
        }
    }

    /// The database refused a new connection while the pool had `open`: the ceiling
    /// becomes `open` (it may rise again, as connections being opened when the first
    /// refusal came succeed), until `HOLD` after the first refusal. The hold is said
    /// once, with how many refusals it saw when it lifts.
    pub fn hold_at(&self, open: usize) {
        let inner = &self.0;
        let mut state = inner.lock();
        state.refusals += 1;
        let target = open.clamp(1, inner.max);
        let now = state.ceiling(inner.max);
        if now > target {
            let cut = now - target;
            let forgotten = inner.permits.forget_permits(cut);
            state.withheld += forgotten;
            state.owed += cut - forgotten;
        } else if now < target {
            let mut give = target - now;
            let unowed = give.min(state.owed);
            state.owed -= unowed;
            give -= unowed;
            let returned = give.min(state.withheld);
            state.withheld -= returned;
            inner.permits.add_permits(returned);
        }
        inner.owing.store(state.owed > 0, Ordering::Release);
        if state.holding {
            return;
        }
        state.holding = true;
        tracing::warn!(
            open,
            max = inner.max,
            hold = ?HOLD,
            "PostgreSQL refused a new connection (SQLSTATE 53300: its max_connections, or a \
             role's or database's connection limit, is reached); this replica's pool stays \
             at the connections it has for a while, and calls wait for one of them"
        );
        let ceiling = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(HOLD).await;
            ceiling.lift();
        });
    }

    /// Ends a hold: the pool may grow to its configured size again.
    fn lift(&self) {
        let inner = &self.0;
        let mut state = inner.lock();
        state.owed = 0;
        inner.owing.store(false, Ordering::Release);
        inner
            .permits
            .add_permits(std::mem::take(&mut state.withheld));
        let refusals = std::mem::take(&mut state.refusals);
        state.holding = false;
        tracing::info!(
            refusals,
            max = inner.max,
            "the pool may open connections again after the database refused some"
        );
    }

    /// Places free now.
    #[cfg(test)]
    fn available(&self) -> usize {
        self.0.permits.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_hold_keeps_calls_to_the_open_connections_then_lifts() {
        let ceiling = Ceiling::new(8);
        let in_use: Vec<Place> =
            futures_util::future::join_all((0..5).map(|_| ceiling.place())).await;
        ceiling.hold_at(4);
        assert_eq!(ceiling.available(), 0, "five in use, four allowed");
        drop(in_use);
        assert_eq!(ceiling.available(), 4, "one returned place was taken out");
        // Connections opened meanwhile: the ceiling rises to what is open.
        ceiling.hold_at(6);
        assert_eq!(ceiling.available(), 6);
        ceiling.hold_at(2);
        assert_eq!(ceiling.available(), 2);
        let again = ceiling.place().await;
        drop(again);
        tokio::time::sleep(HOLD + Duration::from_millis(1)).await;
        assert_eq!(ceiling.available(), 8, "lifted");
    }
}
