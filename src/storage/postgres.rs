//! PostgreSQL: a pool of connections, and what every write's statement stands on.
//!
//! Each write the users make reaches PostgreSQL as ONE data-modifying CTE read from a
//! `.sql` file beside its write (`writes/`), prepared once per connection: one round
//! trip, instead of a conversation of 7–9 that holds row locks across the network the
//! whole time. Each statement takes its locks in the one order (`storage.rs`), checks
//! the rules (`crate::rules`) on what it locked, and only then changes anything, so a
//! concurrent change of those rows cannot slip between check and write. Nothing global
//! happens inside: changed summaries are announced after commit (see `crate::fanout`).
//!
//! Here: the pool and its ceiling, a call's session, the retry after a conflict, and
//! the helpers statements share (`sql_file_statement!`, `committed_row`, `fresh_row`).

use diesel::result::Error as DieselError;
use diesel::sql_types::{Array, BigInt, Bool, Nullable, Text};
use diesel::{QueryResult, QueryableByName};
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::{AsyncConnection, RunQueryDsl};

use super::pool::{self, PgConn, PoolConfig, PoolStatus};
use super::writes::{ThreadFacts, Write};
use super::{StoreError, StoreResult};
use crate::model::{Side, SummaryKey, ThreadKind};

pub type Conn = PgConn;

mod ceiling;
mod session;
pub use ceiling::PooledConn;
pub use session::PgSession;

pub mod schema {
    //! The tables, with PostgreSQL's timestamp type.
    pub type Ts = diesel::sql_types::Timestamptz;
    include!("schema.rs");
}

pub mod reads {
    //! The shared reads, compiled for PostgreSQL.
    include!("reads.rs");
}

pub mod tickets {
    //! Stream tickets, compiled for PostgreSQL.
    include!("tickets.rs");
}

/// The current time, in PostgreSQL's SQL.
pub(super) const NOW: &str = "now()";

/// Runs one statement outside a transaction and returns its single row once PostgreSQL
/// has committed it. diesel-async's `get_result` hands back the first row as soon as it
/// arrives, before the server's ReadyForQuery, which is sent after the implicit commit:
/// an acknowledgement built on it can precede the commit, and a crash between the two
/// loses an acknowledged write. `load` reads the whole response, commit included.
pub(super) async fn committed_row<'query, Q, U>(statement: Q, conn: &mut Conn) -> QueryResult<U>
where
    Q: diesel_async::methods::LoadQuery<'query, Conn, U> + 'query,
    U: Send,
{
    let rows: Vec<U> = statement.load(conn).await?;
    rows.into_iter().next().ok_or(DieselError::NotFound)
}

/// A piece of a statement read from its `.sql` file: SQL text, or a named parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Sql(String),
    Param(String),
}

/// Splits a statement file into SQL and its `:name` parameters (pgbench's syntax, so
/// pgbench runs the same file). `--` comments are dropped, quoted text and `::` casts
/// are left alone, and the closing `;` (which pgbench needs) is cut.
pub fn split_named(file: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut sql = String::new();
    let mut chars = file.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                quoted = !quoted;
                sql.push(c);
            }
            '-' if !quoted && chars.peek() == Some(&'-') => {
                for skipped in chars.by_ref() {
                    if skipped == '\n' {
                        sql.push('\n');
                        break;
                    }
                }
            }
            ':' if !quoted && chars.peek() == Some(&':') => {
                chars.next();
                sql.push_str("::");
            }
            ':' if !quoted
                && chars
                    .peek()
                    .is_some_and(|n| n.is_ascii_alphabetic() || *n == '_') =>
            {
                let mut name = String::new();
                while let Some(n) = chars
                    .peek()
                    .copied()
                    .filter(|n| n.is_ascii_alphanumeric() || *n == '_')
                {
                    name.push(n);
                    chars.next();
                }
                pieces.push(Piece::Sql(std::mem::take(&mut sql)));
                pieces.push(Piece::Param(name));
            }
            _ => sql.push(c),
        }
    }
    let rest = sql.trim_end().trim_end_matches(';');
    pieces.push(Piece::Sql(rest.to_owned()));
    pieces.retain(|piece| piece != &Piece::Sql(String::new()));
    pieces
}

/// Declares a statement whose SQL is a `.sql` file (`sql = include_str!("….sql")`):
/// its `:name` parameters are bound from the fields of the same name. Its static query
/// id lets the connection prepare it once and reuse the plan.
macro_rules! sql_file_statement {
    (
        $(#[$doc:meta])*
        $name:ident { $($field:ident: $ty:ty => $sql_type:ty),+ $(,)? }
        sql = $sql:expr;
    ) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name { $(pub $field: $ty),+ }

        impl $name {
            /// The statement's file, as written.
            pub const FILE: &'static str = $sql;
            /// The parameters the fields bind, by name.
            #[cfg(test)]
            pub const PARAMS: &'static [&'static str] = &[$(stringify!($field)),+];

            fn pieces() -> &'static [$crate::storage::postgres::Piece] {
                static PIECES: std::sync::LazyLock<Vec<$crate::storage::postgres::Piece>> =
                    std::sync::LazyLock::new(|| $crate::storage::postgres::split_named($name::FILE));
                &PIECES
            }
        }

        impl diesel::query_builder::QueryId for $name {
            type QueryId = $name;
            const HAS_STATIC_QUERY_ID: bool = true;
        }

        impl diesel::query_builder::QueryFragment<diesel::pg::Pg> for $name {
            fn walk_ast<'b>(
                &'b self,
                mut out: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
            ) -> diesel::QueryResult<()> {
                use $crate::storage::postgres::Piece;
                for piece in Self::pieces() {
                    match piece {
                        Piece::Sql(sql) => out.push_sql(sql),
                        $(Piece::Param(param) if param == stringify!($field) => {
                            out.push_bind_param::<$sql_type, _>(&self.$field)?
                        })+
                        Piece::Param(param) => {
                            return Err(diesel::result::Error::QueryBuilderError(
                                format!(concat!(stringify!($name), " names an unknown parameter :{}"), param).into(),
                            ));
                        }
                    }
                }
                Ok(())
            }
        }

        impl diesel::query_builder::Query for $name {
            type SqlType = diesel::sql_types::Untyped;
        }
    };
}

/// The writes declare their statements with it.
pub(crate) use sql_file_statement;

/// How a retry under the lock takes the thread's row: as the statement itself does.
/// Every write that changes a thread takes it to update (its log's version is there).
#[derive(Debug, Clone, Copy)]
pub(super) enum ThreadLock {
    Update,
}

/// A statement's row that may say its snapshot was stale.
pub(super) trait MaybeStale {
    fn stale(&self) -> bool;
}

/// Runs a statement that counts or reads messages other than the rows it locks: alone
/// first (one round trip, committed before it answers); when it says its snapshot was
/// stale (a write of the thread committed between the snapshot and the lock), again in
/// a transaction right after taking the thread's lock, where no such write can commit
/// in between, so its snapshot is current.
pub(super) async fn fresh_row<'q, Q, U>(
    conn: &mut Conn,
    thread_id: i64,
    lock: ThreadLock,
    statement: impl Fn() -> Q + Send + Sync,
) -> QueryResult<U>
where
    Q: diesel_async::methods::LoadQuery<'q, Conn, U> + Send + 'q,
    U: MaybeStale + Send,
{
    let row: U = committed_row(statement(), conn).await?;
    if !row.stale() {
        return Ok(row);
    }
    row_under_thread_lock(conn, thread_id, lock, statement()).await
}

/// Runs a statement in a transaction right after taking its thread's row (the lock
/// order's first step), so the statement's snapshot is current; its one row.
pub(super) async fn row_under_thread_lock<'q, Q, U>(
    conn: &mut Conn,
    thread_id: i64,
    lock: ThreadLock,
    statement: Q,
) -> QueryResult<U>
where
    Q: diesel_async::methods::LoadQuery<'q, Conn, U> + Send + 'q,
    U: Send,
{
    let sql = match lock {
        ThreadLock::Update => "SELECT 1 FROM threads WHERE thread_id = $1 FOR NO KEY UPDATE",
    };
    conn.transaction(async |conn| {
        diesel::sql_query(sql)
            .bind::<BigInt, _>(thread_id)
            .execute(conn)
            .await?;
        let rows: Vec<U> = statement.load(conn).await?;
        rows.into_iter().next().ok_or(DieselError::NotFound)
    })
    .await
}

/// The thread columns every write's row begins with (NULL: no such thread).
#[derive(Debug, QueryableByName)]
pub(super) struct ThreadColumns {
    #[diesel(sql_type = Nullable<Text>)]
    kind: Option<ThreadKind>,
    #[diesel(sql_type = Nullable<BigInt>)]
    tutor_id: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    student_id: Option<i64>,
    #[diesel(sql_type = Nullable<Bool>)]
    is_writable: Option<bool>,
}

impl ThreadColumns {
    /// The thread as the write saw it; `None` when there is no such thread.
    pub(super) fn facts(
        &self,
        contact_access: Option<crate::model::ContactAccessState>,
    ) -> Option<ThreadFacts> {
        Some(ThreadFacts {
            kind: self.kind?,
            tutor_id: self.tutor_id?,
            student_id: self.student_id?,
            is_writable: self.is_writable?,
            contact_access,
        })
    }
}

/// The summaries a statement changed, which it reports as two arrays (users, sides).
#[derive(Debug, QueryableByName)]
pub(super) struct ChangedSummaries {
    #[diesel(sql_type = Array<BigInt>)]
    changed_users: Vec<i64>,
    #[diesel(sql_type = Array<Text>)]
    changed_sides: Vec<String>,
}

impl ChangedSummaries {
    pub(super) fn keys(self) -> QueryResult<Vec<SummaryKey>> {
        self.changed_users
            .into_iter()
            .zip(self.changed_sides)
            .map(|(user_id, side)| {
                Side::parse(&side)
                    .map(|side| SummaryKey::new(user_id, side))
                    .ok_or_else(|| {
                        DieselError::DeserializationError(format!("unknown side {side:?}").into())
                    })
            })
            .collect()
    }
}

/// How many times a write that conflicted with another transaction runs again.
const CONFLICT_RETRIES: u32 = 3;

/// The first pause before a retry; each later one doubles, with as much again at random
/// so that the two sides of a conflict do not meet again in step.
const CONFLICT_PAUSE: std::time::Duration = std::time::Duration::from_millis(5);

/// The PostgreSQL store: a pool, and the one-statement writes.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool<Conn>,
    /// How many connections calls may hold, lowered while the database refuses more.
    ceiling: ceiling::Ceiling,
    /// How long a call waits for a connection.
    timeout: std::time::Duration,
    /// Behind a transaction-mode pooler: every call runs in a transaction of its own.
    pooled: bool,
    pub(super) episodes: std::sync::Arc<super::Episodes>,
    /// See `Store::log_grew`.
    pub(super) log_grew: std::sync::Arc<tokio::sync::Notify>,
}

impl PgStore {
    pub fn connect(url: &str, config: &PoolConfig) -> Result<Self, String> {
        Ok(Self {
            pool: pool::postgres_pool(url, config)?,
            ceiling: ceiling::Ceiling::new(config.max_size),
            timeout: config.timeout,
            pooled: config.pooler == pool::Pooler::Transaction,
            episodes: Default::default(),
            log_grew: Default::default(),
        })
    }

    pub async fn migrate(&self) -> Result<Vec<String>, String> {
        pool::migrate_postgres(&self.pool).await
    }

    /// Runs `write`, and again after a conflict with another transaction (a deadlock,
    /// a serialization failure: SQLSTATE 40P01, 40001, 55P03), up to `CONFLICT_RETRIES`
    /// more times after short random pauses. Nothing of a failed attempt was kept: a
    /// conflict aborts the statement (or transaction) it struck. One that still
    /// conflicts reaches the caller as `StoreError::Conflict`, which clients see as
    /// UNAVAILABLE with a time to retry, never INTERNAL.
    pub async fn retrying<T, W>(&self, write: impl Fn() -> W) -> StoreResult<T>
    where
        W: Future<Output = StoreResult<T>>,
    {
        let mut pause = CONFLICT_PAUSE;
        for retry in 1..=CONFLICT_RETRIES {
            match write().await {
                Err(error) if error.is_conflict() => {
                    tracing::debug!(%error, retry, "write conflicted with another transaction; retrying");
                    let jitter = fastrand::u64(..=pause.as_micros() as u64);
                    tokio::time::sleep(pause + std::time::Duration::from_micros(jitter)).await;
                    pause *= 2;
                }
                done => return done,
            }
        }
        write().await
    }

    pub fn pool_status(&self) -> PoolStatus {
        PoolStatus::of(self.pool.status())
    }

    /// A pooled connection, within the pool's timeout. When PostgreSQL refuses a new
    /// one because it has as many as it allows, the call waits for one of the open
    /// connections instead, and the pool stops growing for a while (`ceiling.rs`).
    pub async fn conn(&self) -> StoreResult<PooledConn> {
        let waited = tokio::time::timeout(self.timeout, async {
            loop {
                let place = self.ceiling.place().await;
                match self.pool.get().await {
                    Ok(conn) => return Ok(PooledConn::new(conn, place)),
                    Err(error) if super::errors::refused_for_too_many_connections(&error) => {
                        let open = self.pool.status().size;
                        if open == 0 {
                            return Err(StoreError::from(error));
                        }
                        self.ceiling.hold_at(open);
                    }
                    Err(error) => return Err(StoreError::from(error)),
                }
            }
        })
        .await;
        waited.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(format!(
                "no database connection within {:?} (--db-timeout)",
                self.timeout
            )))
        })
    }

    /// A pooled connection for one call, ended by `PgSession::finish` (see `PgSession`).
    pub async fn session(&self) -> StoreResult<PgSession> {
        PgSession::begin(self.conn().await?, self.pooled)
            .await
            .map_err(|e| self.failed(e))
    }

    /// Turns a failed call's error into a `StoreError`, forgetting idle connections
    /// when the database went away.
    pub fn failed(&self, error: DieselError) -> StoreError {
        pool::forget_idle_on_outage(&self.pool, error.into())
    }

    pub async fn execute_batch(&self, sql: &str) -> StoreResult<()> {
        use diesel_async::SimpleAsyncConnection;
        let mut conn = self.conn().await?;
        conn.batch_execute(sql).await.map_err(|e| self.failed(e))
    }

    /// Runs one write: in a session (a transaction of its own behind a pooler), again
    /// after a conflict (`retrying`).
    pub async fn run<W: Write>(&self, write: &W) -> StoreResult<W::Done> {
        self.retrying(|| async move {
            let mut session = self.session().await?;
            let done = write.postgres(&mut session).await;
            session.finish(done).await.map_err(|e| self.failed(e))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitting_keeps_casts_quotes_and_drops_comments() {
        let pieces = split_named("-- a :comment\nSELECT CAST(:x AS int)::text, ':y' FROM t;\n");
        assert_eq!(
            pieces,
            [
                Piece::Sql("\nSELECT CAST(".into()),
                Piece::Param("x".into()),
                Piece::Sql(" AS int)::text, ':y' FROM t".into()),
            ]
        );
    }
}
