//! Persistence on PostgreSQL or embedded SQLite, in rooms:
//! - `writes/`: every write, one file each beside its PostgreSQL statement (`.sql`):
//!   the request, the outcome, and each backend's way, under one `Write` trait.
//! - `reads.rs`: every read, and the rows with one spelling (`MessageRow`, …), written
//!   once and compiled for each backend.
//! - `schema.rs`: the tables as diesel sees them (`migrations/` creates them).
//! - `rows.rs`: the records reads return, typed with `crate::model`'s enums.
//! - `postgres.rs`: the pool and its ceiling, a call's session, retries after a
//!   conflict, and what the statements share.
//! - `sqlite.rs`: readers in a pool and one writer on a thread of its own
//!   (`sqlite/writer.rs`), with the steps its writes share (`sqlite/steps.rs`).
//! - `pool.rs`: database URLs, connection pools and migrations.
//! - `errors.rs`: what a failed call means, by SQLSTATE; `episodes.rs`: telling
//!   operators once per episode.
//!
//! `Store` is the one door: the domain calls it and never sees a backend. Each write
//! decides with `crate::rules` under its locks and says what it did (appended, replayed,
//! refused by which rule); SQLite's writer calls the rules, PostgreSQL's statements
//! apply them in SQL, each naming the function it implements, and the model-based test
//! (`tests/api/model`) holds the two equal. Concurrency is kept by the database, never
//! by process memory, so it holds across replicas.
//!
//! # Lock order
//! Every PostgreSQL write takes its row locks in this order, so that no two writes can
//! wait on each other in a cycle (a deadlock, which PostgreSQL breaks by failing one
//! of them):
//! 1. the fact a thread is of (`relations`, `inquiries`): upserts, and EnsureThread's
//!    create, which shares it;
//! 2. thread rows, by id: every write of a thread takes its row first, NO KEY UPDATE
//!    when it changes the thread's messages, horizons, line or writability (each such
//!    change takes the thread's next log version there), SHARE when it changes only
//!    its caller's own participant row (a mute);
//! 3. the tutor's `contact_access` row (shared by a tutor's send or edit; its upsert
//!    takes the pair's contact threads first);
//! 4. message rows;
//! 5. both participant rows of the thread, by side, when the write changes either;
//! 6. `summary_versions` rows, by (user, side).
//!
//! The log's rows (`events`) are only ever inserted, at versions taken under the
//! thread's lock: no write waits on another there.
//!
//! SQLite's single writer runs one write at a time, so nothing can wait on anything
//! there; its writes touch rows in the same order, for one way of reading both. A
//! conflict that still happens (with a client outside chatd, or a pooler's reconnect)
//! is retried inside chatd (`PgStore::retrying`).

use tracing::Instrument;

mod episodes;
mod errors;
mod pool;
pub mod postgres;
mod rows;
pub mod sqlite;
pub mod writes;

pub use episodes::Episodes;
pub use errors::{StoreError, StoreResult};
pub use pool::{DatabaseUrl, PoolConfig, PoolStatus, Pooler, SqliteSync};
pub use rows::{
    EventBounds, Fact, Horizons, InboxCursor, InquiryTarget, LoggedChange, MessagePageRows,
    NewTicket, RedeemedTicket, RelationTarget, StoredEvent, ThreadWindow, UnreadPage,
};
pub use writes::Write;

use crate::model::{
    InquiryStatus, Message, MessagesFrom, RelationStatus, Side, SummaryKey, ThreadUnread,
};
use postgres::PgStore;
use sqlite::SqliteStore;

/// The rows of `versions` whose key is one of `keys`, in linear time: the sweep asks
/// about every cached user (100,000 and more), and a scan of `keys` per row made it
/// quadratic (minutes of a core per sweep).
fn only_asked<K: std::hash::Hash + Eq>(versions: Vec<(K, i64)>, keys: &[K]) -> Vec<(K, i64)> {
    let asked: std::collections::HashSet<&K> = keys.iter().collect();
    versions
        .into_iter()
        .filter(|(key, _)| asked.contains(key))
        .collect()
}

/// The chatd database. Cloning is shallow.
#[derive(Clone)]
pub enum Store {
    Postgres(PgStore),
    Sqlite(SqliteStore),
}

/// Runs `call` in a span named for the storage operation (never its data), with
/// OpenTelemetry's database attributes.
async fn traced<T>(
    backend: &'static str,
    operation: &'static str,
    call: impl Future<Output = StoreResult<T>>,
) -> StoreResult<T> {
    let span = tracing::debug_span!(
        "db",
        otel.name = operation,
        otel.kind = "client",
        db.system = backend,
        db.operation.name = operation,
    );
    call.instrument(span).await
}

/// Runs the same read on whichever backend the store has, with a pooled connection.
/// Each arm is type-checked against its backend's copy of the read.
macro_rules! backend_read {
    ($store:expr, $function:ident($($arg:expr),* $(,)?)) => {{
        let read = traced($store.backend(), stringify!($function), async {
            match $store {
                Store::Postgres(store) => {
                    let mut conn = store.session().await?;
                    let read = postgres::reads::$function(&mut conn, $($arg),*).await;
                    conn.finish(read).await.map_err(|error| store.failed(error))
                }
                Store::Sqlite(store) => {
                    let mut conn = store.conn().await?;
                    sqlite::reads::$function(&mut conn, $($arg),*)
                        .await
                        .map_err(|error| store.failed(error))
                }
            }
        })
        .await;
        $store.episodes().note($store.backend(), &read);
        read
    }};
}

impl Store {
    /// Builds the store. Lazy on PostgreSQL: no connection is opened until the first
    /// call, so chatd can start (and report NOT_SERVING) while the database is down.
    pub fn connect(url: &DatabaseUrl, config: &PoolConfig) -> Result<Self, String> {
        match url {
            DatabaseUrl::Postgres(url) => PgStore::connect(url, config).map(Store::Postgres),
            DatabaseUrl::Sqlite(path) => SqliteStore::connect(path, config).map(Store::Sqlite),
        }
    }

    /// Applies pending migrations. Must run on the multi-threaded runtime (the harness
    /// blocks in place).
    pub async fn migrate(&self) -> Result<Vec<String>, String> {
        match self {
            Store::Postgres(store) => store.migrate().await,
            Store::Sqlite(store) => store.migrate().await,
        }
    }

    /// Whether the database is failing calls now (no room, unreachable), said once per
    /// episode.
    pub fn episodes(&self) -> &Episodes {
        match self {
            Store::Postgres(store) => &store.episodes,
            Store::Sqlite(store) => &store.episodes,
        }
    }

    /// The backend's name, for logs and telemetry.
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Postgres(_) => "postgresql",
            Store::Sqlite(_) => "sqlite",
        }
    }

    /// The connection pool's size, idle connections and waiting callers.
    /// From now on, SQLite records each write's phases in `phases` (PostgreSQL has no
    /// one writer to time).
    pub fn time_writes(&self, phases: crate::metrics::WritePhases) {
        if let Store::Sqlite(store) = self {
            store.time_writes(phases);
        }
    }

    pub fn pool_status(&self) -> PoolStatus {
        match self {
            Store::Postgres(store) => store.pool_status(),
            Store::Sqlite(store) => store.pool_status(),
        }
    }

    /// Runs SQL as it is (seeding, tests).
    pub async fn execute_batch(&self, sql: &str) -> StoreResult<()> {
        match self {
            Store::Postgres(store) => store.execute_batch(sql).await,
            Store::Sqlite(store) => store.execute_batch(sql).await,
        }
    }

    pub async fn ping(&self) -> StoreResult<()> {
        backend_read!(self, ping())
    }

    pub async fn count_threads(&self) -> StoreResult<i64> {
        backend_read!(self, count_threads())
    }

    pub async fn find_relation(&self, id: i64) -> StoreResult<Option<Fact<RelationStatus>>> {
        backend_read!(self, find_relation(id))
    }

    pub async fn find_inquiry(&self, id: i64) -> StoreResult<Option<Fact<InquiryStatus>>> {
        backend_read!(self, find_inquiry(id))
    }

    pub async fn relation_target(&self, relation_id: i64) -> StoreResult<Option<RelationTarget>> {
        backend_read!(self, relation_target(relation_id))
    }

    pub async fn inquiry_target(&self, inquiry_id: i64) -> StoreResult<Option<InquiryTarget>> {
        backend_read!(self, inquiry_target(inquiry_id))
    }

    pub async fn summary_version(&self, key: SummaryKey) -> StoreResult<i64> {
        backend_read!(self, summary_version(key))
    }

    /// A page of the summary, its totals and when it next changes by itself, as of
    /// `now_ms` (Unix ms).
    pub async fn unread_summary(
        &self,
        key: SummaryKey,
        limit: i64,
        now_ms: i64,
    ) -> StoreResult<UnreadPage> {
        backend_read!(self, unread_summary(key, limit, now_ms))
    }

    pub async fn threads_of_user(&self, user_id: i64) -> StoreResult<Vec<i64>> {
        backend_read!(self, threads_of_user(user_id))
    }

    /// The versions of many summaries in one statement (keys never changed are left
    /// out: version 0).
    pub async fn summary_versions(
        &self,
        keys: &[SummaryKey],
    ) -> StoreResult<Vec<(SummaryKey, i64)>> {
        let mut users: Vec<i64> = keys.iter().map(|key| key.user_id).collect();
        users.sort_unstable();
        users.dedup();
        let versions = backend_read!(self, summary_versions_of(&users))?;
        Ok(only_asked(versions, keys))
    }

    pub async fn horizons(&self, thread_id: i64) -> StoreResult<Option<Horizons>> {
        backend_read!(self, horizons(thread_id))
    }

    /// A thread as a window opening on it shows it, exactly at one version.
    pub async fn thread_window(&self, thread_id: i64) -> StoreResult<Option<ThreadWindow>> {
        backend_read!(self, thread_window(thread_id))
    }

    /// Up to `limit` changes of a thread's log after `after_version`, in order.
    pub async fn thread_log(
        &self,
        thread_id: i64,
        after_version: i64,
        limit: i64,
    ) -> StoreResult<Vec<LoggedChange>> {
        backend_read!(self, thread_log(thread_id, after_version, limit))
    }

    /// Up to `limit` numbered events after `position`, of `kinds` (all when empty).
    pub async fn events_after(
        &self,
        position: i64,
        kinds: &[crate::model::EventKind],
        limit: i64,
    ) -> StoreResult<Vec<StoredEvent>> {
        backend_read!(self, events_after(position, kinds, limit))
    }

    /// How far the outbox reaches.
    pub async fn event_bounds(&self) -> StoreResult<EventBounds> {
        backend_read!(self, event_bounds())
    }

    /// Where a sink's cursor is.
    pub async fn event_cursor(&self, sink: &str) -> StoreResult<i64> {
        backend_read!(self, event_cursor(sink))
    }

    /// Woken after every committed write that may have appended to the log: what the
    /// outbox's sequencer waits on.
    pub fn log_grew(&self) -> &std::sync::Arc<tokio::sync::Notify> {
        match self {
            Store::Postgres(store) => &store.log_grew,
            Store::Sqlite(store) => &store.log_grew,
        }
    }

    pub async fn messages_page(
        &self,
        thread_id: i64,
        from: MessagesFrom,
        limit: i64,
    ) -> StoreResult<MessagePageRows> {
        backend_read!(self, messages_page(thread_id, from, limit))
    }

    /// A page of a user's inbox after `after` (from the top when `None`).
    pub async fn inbox_page(
        &self,
        key: SummaryKey,
        after: Option<InboxCursor>,
        limit: i64,
        now_ms: i64,
    ) -> StoreResult<Vec<(ThreadUnread, InboxCursor)>> {
        backend_read!(self, inbox_page(key, after, limit, now_ms))
    }

    pub async fn message_by_key(
        &self,
        thread_id: i64,
        sender_id: i64,
        key: &str,
    ) -> StoreResult<Option<Message>> {
        backend_read!(self, message_by_key(thread_id, sender_id, key))
    }

    /// A side's maintained unread counter and a recount from the messages.
    pub async fn recount_unread(&self, thread_id: i64, side: Side) -> StoreResult<(i64, i64)> {
        backend_read!(self, recount_unread(thread_id, side))
    }

    /// Runs one write (`writes/`): on PostgreSQL in a session of its own, again after
    /// a conflict with another transaction; on SQLite on the single writer. Traced, and
    /// noted for the episodes operators hear of (a full disk, an outage).
    pub async fn write<W: Write>(&self, write: W) -> StoreResult<W::Done> {
        let written = traced(self.backend(), W::NAME, async {
            match self {
                Store::Postgres(store) => store.run(&write).await,
                Store::Sqlite(store) => store.run(&write).await,
            }
        })
        .await;
        self.episodes().note(self.backend(), &written);
        if W::LOGS && written.is_ok() {
            self.log_grew().notify_one();
        }
        written
    }

    /// After an erasure: on SQLite, the index of keys is rebuilt and the WAL
    /// checkpointed and truncated, so erased text and keys are in neither the database
    /// file nor the WAL (`SqliteStore::after_erasure`). PostgreSQL has nothing to do
    /// here (see the docs on VACUUM).
    pub async fn after_erasure(&self) -> StoreResult<()> {
        match self {
            Store::Postgres(_) => Ok(()),
            Store::Sqlite(store) => store.after_erasure().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    static COMPARISONS: AtomicU64 = AtomicU64::new(0);

    /// A key that counts how often it is compared.
    #[derive(Debug)]
    struct Counted(i64);

    impl std::hash::Hash for Counted {
        fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
            self.0.hash(state);
        }
    }

    impl PartialEq for Counted {
        fn eq(&self, other: &Self) -> bool {
            COMPARISONS.fetch_add(1, Ordering::Relaxed);
            self.0 == other.0
        }
    }
    impl Eq for Counted {}

    #[test]
    fn the_sweeps_filter_is_linear_in_the_cached_users() {
        let users = 20_000;
        let keys: Vec<Counted> = (0..users).map(Counted).collect();
        let versions: Vec<(Counted, i64)> = (0..users * 2).map(|user| (Counted(user), 1)).collect();
        let kept = only_asked(versions, &keys);
        assert_eq!(kept.len(), users as usize);
        let comparisons = COMPARISONS.load(Ordering::Relaxed);
        assert!(
            comparisons <= 4 * users as u64,
            "{comparisons} key comparisons for {users} users"
        );
    }
}
