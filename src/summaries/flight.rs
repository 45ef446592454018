//! One database read per missed summary at a time: while a caller reads a summary the
//! cache missed, others that miss the same key wait for that read and answer from what
//! it filled, instead of each reading the database. A summary polled by many clients
//! under steady writes is missed by all of them at once after every write; without
//! this, each of those polls is a database round trip.
//!
//! Waiting changes nothing about what is answered: a follower answers only from the
//! cache, whose fills are refused once a write has moved on (`SummaryCache::fill`), and
//! reads the database itself when the leader's fill did not land.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

use crate::model::SummaryKey;

/// The summary reads in flight on this replica, by key. Cloning is shallow.
#[derive(Clone, Default)]
pub struct Flights {
    reading: Arc<Mutex<HashMap<SummaryKey, watch::Receiver<()>>>>,
}

/// Whether this caller reads the summary, or waits for the caller who does.
pub enum Flight {
    /// Read it: the others wait until this is dropped.
    Lead(Leading),
    /// Another caller is reading it: this ends when their read does.
    Follow(watch::Receiver<()>),
}

/// A read in flight; dropping it (read done, failed or abandoned) releases the waiters.
pub struct Leading {
    flights: Flights,
    key: SummaryKey,
    _done: watch::Sender<()>,
}

impl Flights {
    /// Joins the read of `key` in flight, or starts one.
    pub fn join(&self, key: SummaryKey) -> Flight {
        let mut reading = self.reading.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(done) = reading.get(&key) {
            return Flight::Follow(done.clone());
        }
        let (done, waiting) = watch::channel(());
        reading.insert(key, waiting);
        Flight::Lead(Leading {
            flights: self.clone(),
            key,
            _done: done,
        })
    }
}

impl Flight {
    /// For a follower, waits until the leader's read has ended; a leader goes on.
    pub async fn wait(self) -> Option<Leading> {
        match self {
            Flight::Lead(leading) => Some(leading),
            Flight::Follow(mut done) => {
                // Ends with an error when the leader drops its sender: that is the signal.
                let _ = done.changed().await;
                None
            }
        }
    }
}

impl Drop for Leading {
    fn drop(&mut self) {
        // Out of the map before the sender drops (after this body), so a caller that
        // misses from now on starts a new read rather than joining a finished one.
        self.flights
            .reading
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Side;

    #[tokio::test]
    async fn followers_wait_for_the_leader_and_the_next_miss_leads_again() {
        let flights = Flights::default();
        let key = SummaryKey::new(7, Side::Tutor);
        let Flight::Lead(leading) = flights.join(key) else {
            panic!("the first to miss leads");
        };
        let follower = flights.join(key);
        assert!(matches!(follower, Flight::Follow(_)), "the second follows");
        let other = SummaryKey::new(8, Side::Tutor);
        assert!(
            matches!(flights.join(other), Flight::Lead(_)),
            "keys fly apart"
        );
        let waiting = tokio::spawn(follower.wait());
        tokio::task::yield_now().await;
        assert!(
            !waiting.is_finished(),
            "a follower waits while the leader reads"
        );
        drop(leading);
        assert!(waiting.await.expect("the follower ends").is_none());
        assert!(
            matches!(flights.join(key), Flight::Lead(_)),
            "after the read, the next miss reads again"
        );
    }
}
