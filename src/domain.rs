//! The operations of chatd: who may open, read and write which thread, and how upstream
//! facts are accepted. Transport-free: no tonic, axum or diesel types cross this
//! boundary.
//!
//! - `threads.rs`: EnsureThread.
//! - `inbox.rs`: ListThreads, the caller's inbox.
//! - `messages.rs`: sending, editing, deleting and removing messages, listing them,
//!   erasing a user.
//! - `reading.rs`: the unread summary, MarkRead, MarkUnread, mutes, and the stream of
//!   summary changes.
//! - `facts.rs`: SyncService's upserts of relations, inquiries and contact access.
//! - `window.rs`: the open chat window: WatchThread (the thread's log, then its changes
//!   as they commit) and SetTyping.
//! - `events.rs`: events out: the outbox's events as the services around chatd receive
//!   them (StreamEvents and the relay's sinks).
//! - `streams.rs`: what WatchThread's and StreamEvents' streams share (their buffer,
//!   the stall rule).
//! - `tickets.rs`: minting and redeeming one-use stream tickets.
//! - `values.rs`: validated request values, and the records handed to transports.
//! - `error.rs`: the one error type and the reasons clients see.
//!
//! Each operation asks storage once where it can: a write decides with `crate::rules`
//! under its rows' locks and says what it did, and `Chat` turns a refusal into the
//! error clients see. What the domain keeps in memory (the summary cache and its
//! watchers, the thread watchers, the send rate, stream tickets' secrets) are
//! infrastructure modules of their own (`crate::summaries`, `crate::live`,
//! `crate::limits`, `crate::tickets`).

mod error;
mod events;
mod facts;
mod inbox;
mod messages;
mod reading;
mod streams;
mod threads;
mod tickets;
mod values;
mod window;

pub use error::{DomainError, Reason};
pub use events::{Event, EventData, EventStream, after_position, event_types};
pub use inbox::InboxPage;
pub use messages::ERASE_BATCH;
pub use reading::SummaryWatch;
pub use streams::Buffered;
pub use tickets::{STREAM_TICKET_TTL, StreamTicket};
pub use values::*;
pub use window::{
    ThreadChange, ThreadEvent, ThreadSnapshot, ThreadStream, WATCH_BUFFER, after_version,
};

pub use crate::model::{
    ContactAccessState, EventKind, InquiryStatus, Message, MessagesFrom, RelationStatus, Role,
    Side, SummaryKey, Thread, ThreadKind, ThreadUnread,
};

use std::time::Duration;

/// How long the sweep gives a notification to arrive before it calls an entry stale: far
/// past the fan-out's latency (milliseconds), short beside the sweep's interval.
pub const SWEEP_GRACE: Duration = Duration::from_secs(1);

use crate::rules::{self, Refusal};

use crate::limits::SendLimits;
use crate::live::Live;
use crate::metrics::ChatCounters;
use crate::outbox::Outbox;
use crate::storage::writes::Logged;
use crate::storage::{Store, StoreError};
use crate::summaries::{StreamRefusal, Summaries};

pub use crate::summaries::UnreadSummary;

impl From<StreamRefusal> for DomainError {
    fn from(refusal: StreamRefusal) -> Self {
        match refusal {
            StreamRefusal::TooMany { limit, scope } => DomainError::TooManyStreams { limit, scope },
            StreamRefusal::ShuttingDown => {
                DomainError::Unavailable("the server is shutting down".into())
            }
        }
    }
}

impl From<StoreError> for DomainError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(detail) => DomainError::Unavailable(detail),
            // Storage retried it already: to the client it is a busy database.
            StoreError::Conflict(detail) => {
                DomainError::Unavailable(format!("still conflicting after retries: {detail}"))
            }
            StoreError::Full(detail) => DomainError::StorageFull(detail),
            StoreError::Query(error) => DomainError::Internal(error.to_string()),
        }
    }
}

/// The operations of ChatService and SyncService. Cloning is shallow.
#[derive(Clone)]
pub struct Chat {
    store: Store,
    /// The cache, the watchers and the other replicas, told of every committed change.
    summaries: Summaries,
    /// The open windows on this replica, and the other replicas, told of every change
    /// committed to a thread's log.
    live: Live,
    counters: ChatCounters,
    /// How long a watcher lets a burst of changes gather before it re-reads its summary.
    coalesce: Duration,
    /// How fast each user may send and edit, on this replica.
    limits: SendLimits,
    /// How far the outbox's numbering has gone: what event streams wait on.
    outbox: Outbox,
    /// The summary reads in flight: one database read per missed summary at a time.
    summary_reads: crate::summaries::flight::Flights,
}

impl Chat {
    pub fn new(
        store: Store,
        (summaries, live): (Summaries, Live),
        counters: ChatCounters,
        coalesce: Duration,
        limits: SendLimits,
        outbox: Outbox,
    ) -> Self {
        Self {
            outbox,
            store,
            summaries,
            live,
            counters,
            coalesce,
            limits,
            summary_reads: Default::default(),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Where summary changes meet: the cache, the watchers, the other replicas.
    pub fn summaries(&self) -> &Summaries {
        &self.summaries
    }

    /// The send rate per user, whose idle buckets the server forgets now and then.
    pub fn limits(&self) -> &SendLimits {
        &self.limits
    }

    /// Where open windows are woken: this replica's thread watchers.
    pub fn live(&self) -> &Live {
        &self.live
    }

    /// After a write committed, before it answers: the summaries it changed and the
    /// threads whose log it wrote to, told to this replica's caches and watchers and to
    /// the other replicas (`Summaries::committed`, `Live::committed`).
    fn committed(&self, keys: &[SummaryKey], logged: &[Logged]) {
        self.summaries.committed(keys);
        self.live.committed(logged);
    }

    /// Compares every cached summary's version with the database's, in one query, and
    /// drops those a lost notification left stale. Returns how many there were.
    ///
    /// An entry whose version differs may only be overtaken by a write whose
    /// notification is on its way; the sweep gives those `SWEEP_GRACE` to arrive and
    /// judges stale only the entries still cached as they were, so the stale count
    /// means notifications lost, not notifications late.
    pub async fn sweep_summaries(&self) -> Result<usize, DomainError> {
        let cached = self.summaries.cached_entries();
        if cached.is_empty() {
            return Ok(0);
        }
        let started = std::time::Instant::now();
        let keys: Vec<SummaryKey> = cached.iter().map(|(key, _)| *key).collect();
        let current = self.store.summary_versions(&keys).await?;
        let suspects = Summaries::suspects(cached, &current);
        self.summaries.counters().observe_sweep(started.elapsed());
        if suspects.is_empty() {
            return Ok(0);
        }
        tokio::time::sleep(SWEEP_GRACE).await;
        Ok(self.summaries.repair(&suspects))
    }
}

/// Unix milliseconds now: the time summaries and mutes are read at.
fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The side a caller acts on. Only services lack one, and the transport lets no service
/// token reach ChatService; this is the domain's own guard of that rule.
fn caller_side(caller: Caller) -> Result<Side, DomainError> {
    rules::side_of(caller.role).ok_or(DomainError::RoleNotAllowed {
        role: caller.role.as_str().to_owned(),
        service: "chat.v1.ChatService",
    })
}

/// The error clients see for a refusal of an operation on a thread.
fn thread_refused(refusal: Refusal, thread_id: i64, student_id: Option<i64>) -> DomainError {
    match refusal {
        Refusal::ThreadNotFound => DomainError::ThreadNotFound(thread_id),
        Refusal::ThreadNotWritable => DomainError::ThreadNotWritable(thread_id),
        Refusal::ContactAccessLocked => DomainError::ContactAccessLocked {
            student_id: student_id.unwrap_or_default(),
        },
        other => DomainError::Internal(format!("thread {thread_id} refused as {other:?}")),
    }
}
