//! Persistence: the schema, migrations and queries, on PostgreSQL or embedded SQLite.
//!
//! `Store` is a pool of connections to one of the two backends. Every query is written
//! once in `storage/queries.rs` and compiled into `postgres` and `sqlite` below, which
//! differ only in the connection type, the timestamp type, how a row is locked and how a
//! write transaction begins. Concurrency rules live in the database (unique keys,
//! `ON CONFLICT`, row locks), never in process memory, so they hold across replicas.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::Queryable;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::pooled_connection::deadpool::{Pool, PoolError};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncMigrationHarness, SimpleAsyncConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use tracing::Instrument;

pub mod postgres {
    //! The PostgreSQL copy of the queries: rows are locked with `SELECT … FOR UPDATE`.
    pub type Conn = diesel_async::AsyncPgConnection;
    pub type Ts = diesel::sql_types::Timestamptz;

    macro_rules! lock_row {
        ($query:expr) => {
            $query.for_update()
        };
    }
    macro_rules! write_transaction {
        ($conn:expr, $body:expr) => {
            $conn.transaction($body).await
        };
    }
    /// Tells every replica (via LISTEN) that a user's summary changed. Inside a
    /// transaction, PostgreSQL delivers it only on commit, and never on rollback.
    macro_rules! notify_summary {
        ($conn:expr, $user_id:expr, $side:expr) => {
            diesel::sql_query("SELECT pg_notify('chatd_summary', $1)")
                .bind::<diesel::sql_types::Text, _>(crate::storage::summary_payload(
                    $user_id, $side,
                ))
                .execute($conn)
                .await?
        };
    }

    include!("storage/queries.rs");
}

pub mod sqlite {
    //! The SQLite copy of the queries. SQLite has no row locks: a writer begins with
    //! `BEGIN IMMEDIATE`, taking the database's write lock up front, which serializes
    //! writers as the PostgreSQL row lock does (and never fails late with SQLITE_BUSY).
    pub type Conn = diesel_async::sync_connection_wrapper::SyncConnectionWrapper<
        diesel::sqlite::SqliteConnection,
    >;
    pub type Ts = diesel::sql_types::TimestamptzSqlite;

    macro_rules! lock_row {
        ($query:expr) => {
            $query
        };
    }
    macro_rules! write_transaction {
        ($conn:expr, $body:expr) => {
            $conn.immediate_transaction($body).await
        };
    }
    /// SQLite serves one process: the domain notifies its in-process hub directly.
    macro_rules! notify_summary {
        ($conn:expr, $user_id:expr, $side:expr) => {
            let _ = (&$conn, $user_id, $side);
        };
    }

    include!("storage/queries.rs");
}

mod seed;
pub use seed::Dataset;

const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// Key of the PostgreSQL advisory lock that makes replicas starting together migrate
/// one at a time.
const MIGRATION_LOCK_KEY: i64 = 0x6368_6174_645f_6d69; // "chatd_mi"

/// The PostgreSQL NOTIFY channel that carries "this user's summary changed".
pub const SUMMARY_CHANNEL: &str = "chatd_summary";

/// A user's unread summary, as named in change notifications: (user id, side).
pub type SummaryKey = (i64, String);

/// The NOTIFY payload for a summary key: `<user_id>:<side>`.
pub fn summary_payload(user_id: i64, side: &str) -> String {
    format!("{user_id}:{side}")
}

/// Reads a NOTIFY payload back; `None` for anything malformed.
pub fn parse_summary_payload(payload: &str) -> Option<SummaryKey> {
    let (user, side) = payload.split_once(':')?;
    Some((user.parse().ok()?, side.to_owned()))
}

/// A thread row as stored.
#[derive(Debug, Clone, Queryable)]
pub struct ThreadRow {
    pub thread_id: i64,
    pub kind: String,
    pub relation_id: Option<i64>,
    pub inquiry_id: Option<i64>,
    pub tutor_id: i64,
    pub student_id: i64,
    pub last_seq: i64,
    pub created_at: DateTime<Utc>,
}

/// A thread with the facts its rules read.
#[derive(Debug, Clone)]
pub struct ThreadRecord {
    pub thread: ThreadRow,
    pub relation_status: Option<String>,
    pub inquiry_status: Option<String>,
    pub contact_access: Option<String>,
}

/// A relation or an inquiry: who is in it, its status, and the owner's version.
#[derive(Debug, Clone, Queryable)]
pub struct FactRow {
    pub tutor_id: i64,
    pub student_id: i64,
    pub status: String,
    pub version: i64,
}

#[derive(Debug, Clone, Queryable)]
pub struct MessageRow {
    pub message_id: i64,
    pub thread_id: i64,
    pub seq: i64,
    pub sender_id: i64,
    pub body: String,
    pub created_at: DateTime<Utc>,
    pub client_message_id: Option<String>,
}

#[derive(Debug, Clone, Queryable)]
pub struct UnreadRow {
    pub thread_id: i64,
    pub kind: String,
    pub relation_id: Option<i64>,
    pub inquiry_id: Option<i64>,
    pub tutor_id: i64,
    pub student_id: i64,
    pub unread_count: i64,
    pub last_message_at: Option<DateTime<Utc>>,
    pub last_message_preview: String,
    pub last_message_sender_id: i64,
    pub is_writable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadStateRow {
    pub last_read_seq: i64,
    pub unread_count: i64,
    pub total: i64,
    /// Whether the reader's summary changed (its unread count in this thread did).
    pub changed: bool,
}

/// What a versioned upsert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpsertOutcome {
    Applied,
    /// The stored version is as new or newer: nothing changed.
    Stale,
    /// The upsert names other participants than the stored fact: refused.
    ParticipantsChanged,
}

impl UpsertOutcome {
    /// Explains why an upsert changed nothing, from the row stored now.
    fn not_applied(stored: Option<&FactRow>, wanted: &FactRow) -> Self {
        match stored {
            Some(row) if (row.tutor_id, row.student_id) != (wanted.tutor_id, wanted.student_id) => {
                UpsertOutcome::ParticipantsChanged
            }
            _ => UpsertOutcome::Stale,
        }
    }
}

/// Why a storage call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached (or is too busy): the caller may retry.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a bug, a violated invariant or corrupt data.
    #[error("database error: {0}")]
    Query(DieselError),
}

impl From<DieselError> for StoreError {
    fn from(error: DieselError) -> Self {
        match &error {
            DieselError::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                info,
            ) => StoreError::Unavailable(info.message().to_owned()),
            // SQLite's busy timeout ran out: another writer held the lock too long.
            DieselError::DatabaseError(_, info)
                if info.message().contains("database is locked") =>
            {
                StoreError::Unavailable(info.message().to_owned())
            }
            _ => StoreError::Query(error),
        }
    }
}

impl From<PoolError> for StoreError {
    fn from(error: PoolError) -> Self {
        StoreError::Unavailable(error.to_string())
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Where the data lives, parsed from a database URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `postgres://…` or `postgresql://…`, passed to the driver as is.
    Postgres(String),
    /// `sqlite://path` (relative to the working directory) or `sqlite:///abs/path`.
    Sqlite(String),
}

impl DatabaseUrl {
    pub fn parse(url: &str) -> Result<Self, String> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(DatabaseUrl::Postgres(url.to_owned()))
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err("sqlite URL has no path: use sqlite://chatd.db".into());
            }
            Ok(DatabaseUrl::Sqlite(path.to_owned()))
        } else {
            Err(format!(
                "unsupported database URL {url:?}: use postgres://user@host/db or sqlite://path"
            ))
        }
    }
}

/// How to size and time out the connection pool.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub max_size: usize,
    /// How long a call waits for a connection (or to open one) before it is UNAVAILABLE.
    pub timeout: Duration,
}

/// Applies the pool size and timeouts. Deadpool needs the runtime named for timeouts.
fn with_limits<C>(
    builder: deadpool::managed::PoolBuilder<AsyncDieselConnectionManager<C>>,
    config: &PoolConfig,
) -> deadpool::managed::PoolBuilder<AsyncDieselConnectionManager<C>>
where
    AsyncDieselConnectionManager<C>: deadpool::managed::Manager,
{
    builder
        .max_size(config.max_size)
        .runtime(deadpool::Runtime::Tokio1)
        .wait_timeout(Some(config.timeout))
        .create_timeout(Some(config.timeout))
        .recycle_timeout(Some(config.timeout))
}

/// A pool of connections to the chatd database. Cloning is shallow (an `Arc`).
#[derive(Clone)]
pub enum Store {
    Postgres(Pool<postgres::Conn>),
    Sqlite(Pool<sqlite::Conn>),
}

/// Runs the same query function on whichever backend the store has, with a pooled
/// connection. Each arm is type-checked against its backend's copy of the function.
macro_rules! on_backend {
    ($store:expr, $function:ident($($arg:expr),* $(,)?)) => {{
        // A span per storage call, named for the query function (never its data).
        let span = tracing::debug_span!(
            "db",
            otel.name = stringify!($function),
            otel.kind = "client",
            db.system = $store.backend(),
            db.operation.name = stringify!($function),
        );
        let result: StoreResult<_> = async {
            match $store {
                Store::Postgres(pool) => {
                    let mut conn = pool.get().await?;
                    postgres::$function(&mut conn, $($arg),*)
                        .await
                        .map_err(|error| forget_idle_on_outage(pool, error.into()))
                }
                Store::Sqlite(pool) => {
                    let mut conn = pool.get().await?;
                    sqlite::$function(&mut conn, $($arg),*)
                        .await
                        .map_err(|error| forget_idle_on_outage(pool, error.into()))
                }
            }
        }
        .instrument(span)
        .await;
        result
    }};
}

/// Connections are handed out without a liveness ping (`RecyclingMethod::Fast`: a ping
/// per call would double the round trips). When one turns out dead, the server most
/// likely restarted and the idle ones are dead too: drop them all, so that after an
/// outage only calls already in flight fail, not one call per stale connection.
fn forget_idle_on_outage<M: deadpool::managed::Manager>(
    pool: &deadpool::managed::Pool<M>,
    error: StoreError,
) -> StoreError {
    if matches!(error, StoreError::Unavailable(_)) {
        pool.retain(|_, _| false);
    }
    error
}

impl Store {
    /// Builds the pool. Lazy: no connection is opened until the first call, so chatd can
    /// start (and report NOT_SERVING) while the database is down.
    pub fn connect(url: &DatabaseUrl, config: &PoolConfig) -> Result<Self, String> {
        match url {
            DatabaseUrl::Postgres(url) => {
                let mut manager_config = ManagerConfig::<postgres::Conn>::default();
                manager_config.recycling_method = RecyclingMethod::Fast;
                let manager = AsyncDieselConnectionManager::<postgres::Conn>::new_with_config(
                    url.clone(),
                    manager_config,
                );
                with_limits(Pool::builder(manager), config)
                    .build()
                    .map(Store::Postgres)
                    .map_err(|e| e.to_string())
            }
            DatabaseUrl::Sqlite(path) => {
                let mut manager_config = ManagerConfig::<sqlite::Conn>::default();
                let busy_ms = config.timeout.as_millis();
                manager_config.custom_setup = Box::new(move |path: &str| {
                    let path = path.to_owned();
                    Box::pin(async move {
                        use diesel_async::AsyncConnection;
                        let mut conn = sqlite::Conn::establish(&path).await?;
                        // WAL lets readers run beside the one writer; the busy timeout
                        // makes a writer wait for the lock instead of failing at once.
                        conn.batch_execute(&format!(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                             PRAGMA foreign_keys = ON; PRAGMA busy_timeout = {busy_ms};"
                        ))
                        .await
                        .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                        Ok(conn)
                    })
                });
                let manager = AsyncDieselConnectionManager::<sqlite::Conn>::new_with_config(
                    path.clone(),
                    manager_config,
                );
                with_limits(Pool::builder(manager), config)
                    .build()
                    .map(Store::Sqlite)
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// Applies pending migrations. Must run on the multi-threaded runtime (the harness
    /// blocks in place).
    pub async fn migrate(&self) -> Result<Vec<String>, String> {
        let applied = match self {
            Store::Postgres(pool) => {
                let mut conn = pool.get().await.map_err(|e| e.to_string())?;
                let lock = format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})");
                conn.batch_execute(&lock).await.map_err(|e| e.to_string())?;
                let mut harness = AsyncMigrationHarness::new(conn);
                let applied = harness
                    .run_pending_migrations(POSTGRES_MIGRATIONS)
                    .map(|versions| versions.iter().map(ToString::to_string).collect::<Vec<_>>())
                    .map_err(|e| e.to_string());
                let mut conn = harness.into_inner();
                let unlock = format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})");
                conn.batch_execute(&unlock)
                    .await
                    .map_err(|e| e.to_string())?;
                applied?
            }
            Store::Sqlite(pool) => {
                let conn = pool.get().await.map_err(|e| e.to_string())?;
                let mut harness = AsyncMigrationHarness::new(conn);
                harness
                    .run_pending_migrations(SQLITE_MIGRATIONS)
                    .map(|versions| versions.iter().map(ToString::to_string).collect())
                    .map_err(|e| e.to_string())?
            }
        };
        Ok(applied)
    }

    /// The connection pool's size, idle connections and waiting callers.
    pub fn pool_status(&self) -> deadpool::managed::Status {
        match self {
            Store::Postgres(pool) => pool.status(),
            Store::Sqlite(pool) => pool.status(),
        }
    }

    /// The backend's name, for logs and telemetry.
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Postgres(_) => "postgresql",
            Store::Sqlite(_) => "sqlite",
        }
    }

    pub async fn ping(&self) -> StoreResult<()> {
        on_backend!(self, ping())
    }

    pub async fn find_relation(&self, id: i64) -> StoreResult<Option<FactRow>> {
        on_backend!(self, find_relation(id))
    }

    pub async fn find_inquiry(&self, id: i64) -> StoreResult<Option<FactRow>> {
        on_backend!(self, find_inquiry(id))
    }

    pub async fn find_contact_access(
        &self,
        tutor_id: i64,
        student_id: i64,
    ) -> StoreResult<Option<String>> {
        on_backend!(self, find_contact_access(tutor_id, student_id))
    }

    pub async fn find_thread_by_target(
        &self,
        is_relation: bool,
        id: i64,
    ) -> StoreResult<Option<ThreadRow>> {
        on_backend!(self, find_thread_by_target(is_relation, id))
    }

    pub async fn create_thread(
        &self,
        kind: &str,
        relation_id: Option<i64>,
        inquiry_id: Option<i64>,
        tutor_id: i64,
        student_id: i64,
        is_writable: bool,
    ) -> StoreResult<(ThreadRow, bool)> {
        on_backend!(
            self,
            create_thread(
                kind,
                relation_id,
                inquiry_id,
                tutor_id,
                student_id,
                is_writable
            )
        )
    }

    pub async fn load_thread(&self, thread_id: i64) -> StoreResult<Option<ThreadRecord>> {
        on_backend!(self, load_thread(thread_id))
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one column each, named at the call"
    )]
    pub async fn append_message(
        &self,
        thread_id: i64,
        side: &str,
        peer_side: &str,
        sender_id: i64,
        body: &str,
        preview: &str,
        client_message_id: Option<&str>,
    ) -> StoreResult<(MessageRow, Vec<SummaryKey>)> {
        on_backend!(
            self,
            append_message(
                thread_id,
                side,
                peer_side,
                sender_id,
                body,
                preview,
                client_message_id
            )
        )
    }

    pub async fn mark_read(
        &self,
        thread_id: i64,
        side: &str,
        user_id: i64,
        up_to_seq: Option<i64>,
    ) -> StoreResult<ReadStateRow> {
        on_backend!(self, mark_read(thread_id, side, user_id, up_to_seq))
    }

    pub async fn summary_version(&self, user_id: i64, side: &str) -> StoreResult<i64> {
        on_backend!(self, summary_version(user_id, side))
    }

    pub async fn unread_summary(
        &self,
        user_id: i64,
        side: &str,
        limit: i64,
    ) -> StoreResult<(Vec<UnreadRow>, i64, Option<i64>)> {
        on_backend!(self, unread_summary(user_id, side, limit))
    }

    pub async fn list_messages(
        &self,
        thread_id: i64,
        side: &str,
        before_seq: Option<i64>,
        limit: i64,
    ) -> StoreResult<(Vec<MessageRow>, bool, i64, i64)> {
        on_backend!(self, list_messages(thread_id, side, before_seq, limit))
    }

    pub async fn upsert_relation(
        &self,
        id: i64,
        fact: &FactRow,
        is_writable: bool,
    ) -> StoreResult<(UpsertOutcome, Vec<SummaryKey>)> {
        on_backend!(self, upsert_relation(id, fact, is_writable))
    }

    pub async fn upsert_inquiry(
        &self,
        id: i64,
        fact: &FactRow,
        is_writable: bool,
    ) -> StoreResult<(UpsertOutcome, Vec<SummaryKey>)> {
        on_backend!(self, upsert_inquiry(id, fact, is_writable))
    }

    pub async fn upsert_contact_access(
        &self,
        tutor_id: i64,
        student_id: i64,
        state: &str,
        version: i64,
    ) -> StoreResult<bool> {
        on_backend!(
            self,
            upsert_contact_access(tutor_id, student_id, state, version)
        )
    }

    /// The maintained unread counter of a side and a recount from the messages.
    pub async fn recount_unread(&self, thread_id: i64, side: &str) -> StoreResult<(i64, i64)> {
        on_backend!(self, recount_unread(thread_id, side))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls() {
        assert_eq!(
            DatabaseUrl::parse("sqlite://chatd.db").unwrap(),
            DatabaseUrl::Sqlite("chatd.db".into())
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite:///tmp/x.db").unwrap(),
            DatabaseUrl::Sqlite("/tmp/x.db".into())
        );
        assert!(matches!(
            DatabaseUrl::parse("postgres://root@127.0.0.1/chatd").unwrap(),
            DatabaseUrl::Postgres(_)
        ));
        assert!(DatabaseUrl::parse("mysql://x").is_err());
        assert!(DatabaseUrl::parse("sqlite://").is_err());
    }

    #[test]
    fn summary_payloads_round_trip() {
        assert_eq!(
            parse_summary_payload(&summary_payload(42, "tutor")),
            Some((42, "tutor".to_owned()))
        );
        assert_eq!(parse_summary_payload("nonsense"), None);
    }
}
