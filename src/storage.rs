//! Persistence on PostgreSQL or embedded SQLite, in rooms:
//! - `schema.rs`: the tables as diesel sees them (`migrations/` creates them).
//! - `rows.rs`: what storage reads and writes, typed with `crate::model`'s enums.
//! - `pool.rs`: database URLs, connection pools and migrations.
//! - `reads.rs`: every read, written once and compiled for each backend.
//! - `upsert.rs`: the one versioned upsert of the facts upstream services push.
//! - `postgres.rs`: writes as one statement each (one round trip, locks in one order),
//!   read from the `.sql` files of `postgres/`.
//! - `sqlite.rs`: writes queued for one writer connection on a thread of its own
//!   (`sqlite/writer.rs`).
//!
//! `Store` is the one door: the domain calls it and never sees a backend. The rules
//! the writes check are `domain/rules.rs`'s: SQLite's writer calls them; PostgreSQL's
//! statements apply them in SQL, each naming the function it implements, and the
//! model-based test (`tests/api/model.rs`) holds the two equal. Concurrency is kept by
//! the database, never by process memory, so it holds across replicas.
//!
//! # Lock order
//! Every PostgreSQL write takes its row locks in this order, so that no two writes can
//! wait on each other in a cycle (a deadlock, which PostgreSQL breaks by failing one
//! of them):
//! 1. the fact a thread is of (`relations`, `inquiries`): upserts, and EnsureThread's
//!    create, which shares it;
//! 2. thread rows, by id: every write of a thread takes its row first, NO KEY UPDATE
//!    when it changes the thread's messages, horizons or line, SHARE when it changes
//!    only its caller's own participant row (a mute);
//! 3. the tutor's `contact_access` row (shared by a tutor's send or edit);
//! 4. message rows;
//! 5. both participant rows of the thread, by side, when the write changes either;
//! 6. `summary_versions` rows, by (user, side).
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
mod upsert;

pub use episodes::Episodes;
pub use errors::{StoreError, StoreResult};
pub use pool::{DatabaseUrl, PoolConfig, PoolStatus, Pooler};
pub use rows::{
    Deleter, ErasedBatch, Fact, Horizons, InboxCursor, InquiryTarget, MarkReadAttempt,
    MarkUnreadAttempt, MessageAttempt, MessageEdit, MessagePageRows, MuteAttempt, MuteRow,
    NewMessage, NewThread, NewTicket, ReadStateRow, RedeemedTicket, RelationTarget, SendAttempt,
    ThreadFacts, UnreadPage,
};

use crate::model::{
    ContactAccessState, InquiryStatus, Message, MessagesFrom, RelationStatus, Side, SummaryKey,
    Thread, ThreadUnread,
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

/// Runs a write that each backend implements its own way (on PostgreSQL again after a
/// conflict with another transaction, see `PgStore::retrying`), and notes whether
/// storage had room for it.
macro_rules! backend_write {
    ($store:expr, $function:ident($($arg:expr),* $(,)?)) => {{
        let written = traced($store.backend(), stringify!($function), async {
            match $store {
                Store::Postgres(store) => {
                    store.retrying(|| store.$function($(Clone::clone(&$arg)),*)).await
                }
                Store::Sqlite(store) => store.$function($($arg),*).await,
            }
        })
        .await;
        $store.episodes().note($store.backend(), &written);
        written
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

    /// Keeps a stream ticket's hash until its `expires_at`, forgetting expired ones.
    pub async fn create_stream_ticket(&self, ticket: NewTicket, now: i64) -> StoreResult<()> {
        backend_write!(self, create_stream_ticket(ticket, now))
    }

    /// Takes a live stream ticket, once: its user, role and access end.
    pub async fn redeem_stream_ticket(
        &self,
        ticket_hash: &str,
        now: i64,
    ) -> StoreResult<Option<RedeemedTicket>> {
        backend_write!(self, redeem_stream_ticket(ticket_hash, now))
    }

    /// Creates a thread (see `NewThread`); `None` when it exists already or its fact
    /// does not.
    pub async fn create_thread(&self, new: &NewThread) -> StoreResult<Option<Thread>> {
        backend_write!(self, create_thread(new))
    }

    pub async fn send_message(&self, message: &NewMessage) -> StoreResult<SendAttempt> {
        backend_write!(self, send_message(message))
    }

    /// MarkRead; totals as of `now_ms` (muted threads left out).
    pub async fn mark_read(
        &self,
        thread_id: i64,
        side: Side,
        user_id: i64,
        up_to_seq: Option<i64>,
        now_ms: i64,
    ) -> StoreResult<MarkReadAttempt> {
        backend_write!(self, mark_read(thread_id, side, user_id, up_to_seq, now_ms))
    }

    /// MarkUnread; totals as of `now_ms`.
    pub async fn mark_unread(
        &self,
        thread_id: i64,
        side: Side,
        user_id: i64,
        from_seq: i64,
        now_ms: i64,
    ) -> StoreResult<MarkUnreadAttempt> {
        backend_write!(
            self,
            mark_unread(thread_id, side, user_id, from_seq, now_ms)
        )
    }

    pub async fn edit_message(&self, edit: &MessageEdit) -> StoreResult<MessageAttempt> {
        backend_write!(self, edit_message(edit))
    }

    /// DeleteMessage (by its sender) or RemoveMessage (by a moderator).
    pub async fn delete_message(
        &self,
        thread_id: i64,
        seq: i64,
        deleter: Deleter,
    ) -> StoreResult<MessageAttempt> {
        backend_write!(self, delete_message(thread_id, seq, deleter))
    }

    /// Mutes (`Some` time in Unix ms, or `rules::MUTED_FOREVER_MS`) or unmutes (`None`)
    /// a thread for one participant; totals as of `now_ms`.
    pub async fn set_mute(
        &self,
        thread_id: i64,
        side: Side,
        user_id: i64,
        muted_until_ms: Option<i64>,
        now_ms: i64,
    ) -> StoreResult<MuteAttempt> {
        backend_write!(
            self,
            set_mute(thread_id, side, user_id, muted_until_ms, now_ms)
        )
    }

    /// One bounded transaction of EraseUser: up to `batch` of the user's messages in one
    /// thread, after `after_seq`.
    pub async fn erase_batch(
        &self,
        thread_id: i64,
        user_id: i64,
        after_seq: i64,
        batch: i64,
    ) -> StoreResult<ErasedBatch> {
        backend_write!(self, erase_batch(thread_id, user_id, after_seq, batch))
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

    /// Stores a relation if `rules::upsert_outcome` applies it (the upsert statement
    /// decides that atomically); when it applies, the thread's writability becomes
    /// `is_writable` in the same transaction. Returns whether it applied, and the
    /// changed summaries (both participants', when writability changed).
    pub async fn upsert_relation(
        &self,
        relation_id: i64,
        fact: Fact<RelationStatus>,
        is_writable: bool,
    ) -> StoreResult<(bool, Vec<SummaryKey>)> {
        let ids = [relation_id, fact.tutor_id, fact.student_id];
        let status = fact.status.as_str();
        backend_write!(
            self,
            upsert_fact(
                &upsert::RELATIONS,
                &ids[..],
                status,
                fact.version,
                Some(is_writable)
            )
        )
    }

    /// Stores an inquiry; see `upsert_relation`.
    pub async fn upsert_inquiry(
        &self,
        inquiry_id: i64,
        fact: Fact<InquiryStatus>,
        is_writable: bool,
    ) -> StoreResult<(bool, Vec<SummaryKey>)> {
        let ids = [inquiry_id, fact.tutor_id, fact.student_id];
        let status = fact.status.as_str();
        backend_write!(
            self,
            upsert_fact(
                &upsert::INQUIRIES,
                &ids[..],
                status,
                fact.version,
                Some(is_writable)
            )
        )
    }

    /// Stores a tutor's contact access to a student if its version is newer. Returns
    /// whether it applied.
    pub async fn upsert_contact_access(
        &self,
        tutor_id: i64,
        student_id: i64,
        state: ContactAccessState,
        version: i64,
    ) -> StoreResult<bool> {
        let ids = [tutor_id, student_id];
        let (applied, _) = backend_write!(
            self,
            upsert_fact(
                &upsert::CONTACT_ACCESS,
                &ids[..],
                state.as_str(),
                version,
                None
            )
        )?;
        Ok(applied)
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
