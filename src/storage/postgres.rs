//! PostgreSQL: a pool of connections, where every write the users make is ONE statement.
//!
//! SendMessage, MarkRead and EnsureThread's create each reach PostgreSQL as a single
//! data-modifying CTE, prepared once per connection: one round trip, instead of a
//! conversation of 7–9 that holds row locks across the network the whole time. Each
//! statement takes its locks in one order (the thread row, then its participant rows,
//! then summary versions by key), checks the domain's rules (`domain/rules.rs`) on
//! what it locked, and only then changes anything, so a concurrent change of those
//! rows cannot slip between check and write. Nothing global happens inside: changed
//! summaries are announced after commit (see `crate::fanout`).

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::result::Error as DieselError;
use diesel::sql_types::{Array, BigInt, Bool, Nullable, Text, Timestamptz, Untyped};
use diesel::{QueryResult, QueryableByName};
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::{AsyncConnection, RunQueryDsl};

use super::pool::{self, PgConn, PoolConfig, PoolStatus};
use super::rows::{
    Deleter, ErasedBatch, MarkReadAttempt, MarkUnreadAttempt, MessageAttempt, MessageEdit,
    MuteAttempt, MuteRow, NewMessage, NewThread, NewTicket, ReadStateRow, RedeemedTicket,
    SendAttempt, ThreadFacts,
};
use super::upsert::{self, FactTable};
use super::{StoreError, StoreResult};
use crate::domain::rules::MessageView;
use crate::model::{ContactAccessState, Message, Side, SummaryKey, Thread, ThreadKind};

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
const NOW: &str = "now()";

/// Runs one statement outside a transaction and returns its single row once PostgreSQL
/// has committed it. diesel-async's `get_result` hands back the first row as soon as it
/// arrives, before the server's ReadyForQuery, which is sent after the implicit commit:
/// an acknowledgement built on it can precede the commit, and a crash between the two
/// loses an acknowledged write. `load` reads the whole response, commit included.
async fn committed_row<'query, Q, U>(statement: Q, conn: &mut Conn) -> QueryResult<U>
where
    Q: diesel_async::methods::LoadQuery<'query, Conn, U> + 'query,
    U: Send,
{
    let rows: Vec<U> = statement.load(conn).await?;
    rows.into_iter().next().ok_or(DieselError::NotFound)
}

/// A piece of a statement read from its `.sql` file: SQL text, or a named parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Sql(String),
    Param(String),
}

/// Splits a statement file into SQL and its `:name` parameters (pgbench's syntax, so
/// pgbench runs the same file). `--` comments are dropped, quoted text and `::` casts
/// are left alone, and the closing `;` (which pgbench needs) is cut.
fn split_named(file: &str) -> Vec<Piece> {
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

/// Declares a statement whose SQL lives in `postgres/<file>.sql`: its `:name`
/// parameters are bound from the fields of the same name. Its static query id lets the
/// connection prepare it once and reuse the plan.
macro_rules! sql_file_statement {
    (
        $(#[$doc:meta])*
        $name:ident { $($field:ident: $ty:ty => $sql_type:ty),+ $(,)? }
        file = $file:literal;
        returns = $returns:ty;
    ) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name { $(pub $field: $ty),+ }

        impl $name {
            /// The statement's file, as written.
            pub const FILE: &'static str = include_str!(concat!("postgres/", $file));
            /// The parameters the fields bind, by name.
            #[cfg(test)]
            const PARAMS: &'static [&'static str] = &[$(stringify!($field)),+];

            fn pieces() -> &'static [Piece] {
                static PIECES: std::sync::LazyLock<Vec<Piece>> =
                    std::sync::LazyLock::new(|| split_named($name::FILE));
                &PIECES
            }
        }

        impl QueryId for $name {
            type QueryId = $name;
            const HAS_STATIC_QUERY_ID: bool = true;
        }

        impl QueryFragment<Pg> for $name {
            fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
                for piece in Self::pieces() {
                    match piece {
                        Piece::Sql(sql) => out.push_sql(sql),
                        $(Piece::Param(param) if param == stringify!($field) => {
                            out.push_bind_param::<$sql_type, _>(&self.$field)?
                        })+
                        Piece::Param(param) => {
                            return Err(DieselError::QueryBuilderError(
                                format!(concat!($file, " names an unknown parameter :{}"), param).into(),
                            ));
                        }
                    }
                }
                Ok(())
            }
        }

        impl Query for $name {
            type SqlType = $returns;
        }
    };
}

sql_file_statement! {
    /// SendMessage in one statement (see the file).
    SendStatement {
        thread_id: i64 => BigInt,
        side: &'static str => Text,
        sender_id: i64 => BigInt,
        body: String => Text,
        preview: String => Text,
        client_message_id: Option<String> => Nullable<Text>,
        unlocking: Vec<&'static str> => Array<Text>,
    }
    file = "send_message.sql";
    returns = Untyped;
}

sql_file_statement! {
    /// MarkRead in one statement (see the file).
    MarkReadStatement {
        thread_id: i64 => BigInt,
        side: &'static str => Text,
        user_id: i64 => BigInt,
        up_to_seq: Option<i64> => Nullable<BigInt>,
        now_ms: i64 => BigInt,
    }
    file = "mark_read.sql";
    returns = Untyped;
}

sql_file_statement! {
    /// MarkUnread in one statement (see the file).
    MarkUnreadStatement {
        thread_id: i64 => BigInt,
        side: &'static str => Text,
        user_id: i64 => BigInt,
        from_seq: i64 => BigInt,
        now_ms: i64 => BigInt,
    }
    file = "mark_unread.sql";
    returns = Untyped;
}

sql_file_statement! {
    /// EditMessage in one statement (see the file).
    EditStatement {
        thread_id: i64 => BigInt,
        seq: i64 => BigInt,
        side: &'static str => Text,
        editor_id: i64 => BigInt,
        body: String => Text,
        preview: String => Text,
        unlocking: Vec<&'static str> => Array<Text>,
    }
    file = "edit_message.sql";
    returns = Untyped;
}

sql_file_statement! {
    /// DeleteMessage and RemoveMessage in one statement (see the file).
    DeleteStatement {
        thread_id: i64 => BigInt,
        seq: i64 => BigInt,
        side: Option<&'static str> => Nullable<Text>,
        deleter_id: Option<i64> => Nullable<BigInt>,
    }
    file = "delete_message.sql";
    returns = Untyped;
}

sql_file_statement! {
    /// MuteThread and UnmuteThread in one statement (see the file).
    MuteStatement {
        thread_id: i64 => BigInt,
        side: &'static str => Text,
        user_id: i64 => BigInt,
        muted_until_ms: Option<i64> => Nullable<BigInt>,
        now_ms: i64 => BigInt,
    }
    file = "set_mute.sql";
    returns = Untyped;
}

sql_file_statement! {
    /// One batch of EraseUser (see the file).
    EraseBatchStatement {
        thread_id: i64 => BigInt,
        user_id: i64 => BigInt,
        after_seq: i64 => BigInt,
        batch: i64 => BigInt,
    }
    file = "erase_batch.sql";
    returns = Untyped;
}

/// The columns of `Thread`, as the creates return them.
type ThreadRow = (
    BigInt,
    Text,
    Nullable<BigInt>,
    Nullable<BigInt>,
    BigInt,
    BigInt,
    Bool,
    Timestamptz,
);

sql_file_statement! {
    /// EnsureThread's create of the thread of a relation or an inquiry (see the file).
    CreateThreadStatement {
        relation_id: Option<i64> => Nullable<BigInt>,
        inquiry_id: Option<i64> => Nullable<BigInt>,
        writable: Vec<&'static str> => Array<Text>,
    }
    file = "create_thread.sql";
    returns = ThreadRow;
}

/// The one row SendStatement answers.
#[derive(Debug, QueryableByName)]
struct SendRow {
    #[diesel(sql_type = Nullable<Text>)]
    kind: Option<ThreadKind>,
    #[diesel(sql_type = Nullable<BigInt>)]
    tutor_id: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    student_id: Option<i64>,
    #[diesel(sql_type = Nullable<Bool>)]
    is_writable: Option<bool>,
    #[diesel(sql_type = Nullable<Text>)]
    contact_access: Option<ContactAccessState>,
    #[diesel(sql_type = Nullable<BigInt>)]
    message_id: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    seq: Option<i64>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    created_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<BigInt>)]
    prior_message_id: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    prior_seq: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    prior_body: Option<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    prior_created_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    prior_edited_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    prior_deleted_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Array<BigInt>)]
    changed_users: Vec<i64>,
    #[diesel(sql_type = Array<Text>)]
    changed_sides: Vec<String>,
}

/// The thread columns every write's row begins with.
#[derive(Debug, QueryableByName)]
struct ThreadColumns {
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
    fn facts(&self, contact_access: Option<ContactAccessState>) -> Option<ThreadFacts> {
        Some(ThreadFacts {
            kind: self.kind?,
            tutor_id: self.tutor_id?,
            student_id: self.student_id?,
            is_writable: self.is_writable?,
            contact_access,
        })
    }
}

/// The one row MarkReadStatement and MarkUnreadStatement answer.
#[derive(Debug, QueryableByName)]
struct ReadRow {
    #[diesel(embed)]
    thread: ThreadColumns,
    #[diesel(sql_type = Nullable<BigInt>)]
    horizon: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    unread: Option<i64>,
    #[diesel(sql_type = BigInt)]
    total: i64,
    #[diesel(sql_type = Bool)]
    changed: bool,
    #[diesel(sql_type = Bool)]
    stale: bool,
}

impl ReadRow {
    fn state(&self) -> Option<ReadStateRow> {
        Some(ReadStateRow {
            last_read_seq: self.horizon?,
            unread_count: self.unread?,
            total: self.total,
            changed: self.changed,
        })
    }
}

/// The one row MarkUnreadStatement answers: a read's row, with the thread's last seq.
#[derive(Debug, QueryableByName)]
struct MarkUnreadRow {
    #[diesel(embed)]
    read: ReadRow,
    #[diesel(sql_type = Nullable<BigInt>)]
    last_seq: Option<i64>,
}

/// The one row EditStatement and DeleteStatement answer.
#[derive(Debug, QueryableByName)]
struct MessageWriteRow {
    #[diesel(embed)]
    thread: ThreadColumns,
    #[diesel(sql_type = Nullable<Text>)]
    contact_access: Option<ContactAccessState>,
    #[diesel(sql_type = Nullable<BigInt>)]
    found_sender_id: Option<i64>,
    #[diesel(sql_type = Nullable<Bool>)]
    found_deleted: Option<bool>,
    #[diesel(sql_type = Nullable<BigInt>)]
    message_id: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    seq: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    sender_id: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    body: Option<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    created_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Text>)]
    client_message_id: Option<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    edited_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    deleted_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Bool)]
    changed_message: bool,
    #[diesel(sql_type = Array<BigInt>)]
    changed_users: Vec<i64>,
    #[diesel(sql_type = Array<Text>)]
    changed_sides: Vec<String>,
    #[diesel(sql_type = Bool)]
    stale: bool,
}

impl MessageWriteRow {
    fn into_attempt(self, thread_id: i64) -> Result<MessageAttempt, DieselError> {
        let found = match (self.found_sender_id, self.found_deleted) {
            (Some(sender_id), Some(deleted)) => Some(MessageView { sender_id, deleted }),
            _ => None,
        };
        let message = (|| {
            Some(Message {
                message_id: self.message_id?,
                thread_id,
                seq: self.seq?,
                sender_id: self.sender_id?,
                body: self.body?,
                created_at: self.created_at?,
                client_message_id: self.client_message_id,
                edited_at: self.edited_at,
                deleted_at: self.deleted_at,
            })
        })();
        Ok(MessageAttempt {
            thread: self.thread.facts(self.contact_access),
            found,
            message,
            changed_message: self.changed_message,
            changed: summary_keys(self.changed_users, self.changed_sides)?,
        })
    }
}

/// The one row MuteStatement answers.
#[derive(Debug, QueryableByName)]
struct MuteStatementRow {
    #[diesel(embed)]
    thread: ThreadColumns,
    #[diesel(sql_type = Bool)]
    member: bool,
    #[diesel(sql_type = BigInt)]
    total: i64,
    #[diesel(sql_type = Bool)]
    changed: bool,
}

/// The one row EraseBatchStatement answers.
#[derive(Debug, QueryableByName)]
struct EraseRow {
    #[diesel(sql_type = BigInt)]
    erased: i64,
    #[diesel(sql_type = BigInt)]
    wiped: i64,
    #[diesel(sql_type = BigInt)]
    last_seq: i64,
    #[diesel(sql_type = Array<BigInt>)]
    changed_users: Vec<i64>,
    #[diesel(sql_type = Array<Text>)]
    changed_sides: Vec<String>,
}

/// The summary keys a statement reports as two arrays (users, sides).
fn summary_keys(users: Vec<i64>, sides: Vec<String>) -> Result<Vec<SummaryKey>, DieselError> {
    users
        .into_iter()
        .zip(sides)
        .map(|(user_id, side)| {
            Side::parse(&side)
                .map(|side| SummaryKey::new(user_id, side))
                .ok_or_else(|| {
                    DieselError::DeserializationError(format!("unknown side {side:?}").into())
                })
        })
        .collect()
}

impl SendRow {
    fn into_attempt(self, message: &NewMessage) -> Result<SendAttempt, DieselError> {
        let thread = ThreadColumns {
            kind: self.kind,
            tutor_id: self.tutor_id,
            student_id: self.student_id,
            is_writable: self.is_writable,
        }
        .facts(self.contact_access);
        let sent = (|| {
            Some(Message {
                message_id: self.message_id?,
                thread_id: message.thread_id,
                seq: self.seq?,
                sender_id: message.sender_id,
                body: message.body.clone(),
                created_at: self.created_at?,
                client_message_id: message.client_message_id.clone(),
                edited_at: None,
                deleted_at: None,
            })
        })();
        let replayed = (|| {
            Some(Message {
                message_id: self.prior_message_id?,
                thread_id: message.thread_id,
                seq: self.prior_seq?,
                sender_id: message.sender_id,
                body: self.prior_body.clone()?,
                created_at: self.prior_created_at?,
                client_message_id: message.client_message_id.clone(),
                edited_at: self.prior_edited_at,
                deleted_at: self.prior_deleted_at,
            })
        })();
        Ok(SendAttempt {
            thread,
            sent,
            replayed,
            changed: summary_keys(self.changed_users, self.changed_sides)?,
        })
    }
}

/// How a retry under the lock takes the thread's row: as the statement itself does.
#[derive(Debug, Clone, Copy)]
enum ThreadLock {
    /// Reads that must not see the thread's messages change (MarkRead, MarkUnread).
    Share,
    /// Writes of its messages (DeleteMessage).
    Update,
}

/// A statement's row that may say its snapshot was stale.
trait MaybeStale {
    fn stale(&self) -> bool;
}

impl MaybeStale for ReadRow {
    fn stale(&self) -> bool {
        self.stale
    }
}

impl MaybeStale for MarkUnreadRow {
    fn stale(&self) -> bool {
        self.read.stale
    }
}

impl MaybeStale for MessageWriteRow {
    fn stale(&self) -> bool {
        self.stale
    }
}

/// Runs a statement that counts or reads messages other than the rows it locks: alone
/// first (one round trip, committed before it answers); when it says its snapshot was
/// stale (a write of the thread committed between the snapshot and the lock), again in
/// a transaction right after taking the thread's lock, where no such write can commit
/// in between, so its snapshot is current.
async fn fresh_row<'q, Q, U>(
    conn: &mut Conn,
    thread_id: i64,
    lock: ThreadLock,
    statement: impl Fn() -> Q + Send + Sync,
) -> QueryResult<U>
where
    Q: diesel_async::methods::LoadQuery<'q, Conn, U> + 'q,
    U: MaybeStale + Send,
{
    let row: U = committed_row(statement(), conn).await?;
    if !row.stale() {
        return Ok(row);
    }
    let sql = match lock {
        ThreadLock::Share => "SELECT 1 FROM threads WHERE thread_id = $1 FOR SHARE",
        ThreadLock::Update => "SELECT 1 FROM threads WHERE thread_id = $1 FOR NO KEY UPDATE",
    };
    conn.transaction(async |conn| {
        diesel::sql_query(sql)
            .bind::<BigInt, _>(thread_id)
            .execute(conn)
            .await?;
        let rows: Vec<U> = statement().load(conn).await?;
        rows.into_iter().next().ok_or(DieselError::NotFound)
    })
    .await
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
}

impl PgStore {
    pub fn connect(url: &str, config: &PoolConfig) -> Result<Self, String> {
        Ok(Self {
            pool: pool::postgres_pool(url, config)?,
            ceiling: ceiling::Ceiling::new(config.max_size),
            timeout: config.timeout,
            pooled: config.pooler == pool::Pooler::Transaction,
            episodes: Default::default(),
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

    /// Creates the thread of a relation or inquiry; `None` when it exists already (or
    /// the fact does not), which the caller reads back.
    pub async fn create_thread(&self, new: &NewThread) -> StoreResult<Option<Thread>> {
        let mut conn = self.session().await?;
        let statement = match new {
            NewThread::Relation {
                relation_id,
                writable,
            } => CreateThreadStatement {
                relation_id: Some(*relation_id),
                inquiry_id: None,
                writable: writable.iter().map(|s| s.as_str()).collect(),
            },
            NewThread::Inquiry {
                inquiry_id,
                writable,
            } => CreateThreadStatement {
                relation_id: None,
                inquiry_id: Some(*inquiry_id),
                writable: writable.iter().map(|s| s.as_str()).collect(),
            },
        };
        let loaded = statement.load::<Thread>(&mut conn).await;
        let rows = conn.finish(loaded).await.map_err(|e| self.failed(e))?;
        Ok(rows.into_iter().next())
    }

    pub async fn send_message(&self, message: &NewMessage) -> StoreResult<SendAttempt> {
        let statement = SendStatement {
            thread_id: message.thread_id,
            side: message.side.as_str(),
            sender_id: message.sender_id,
            body: message.body.clone(),
            preview: message.preview.clone(),
            client_message_id: message.client_message_id.clone(),
            unlocking: message.unlocking.iter().map(|s| s.as_str()).collect(),
        };
        let mut conn = self.session().await?;
        let written = committed_row::<_, SendRow>(statement, &mut conn).await;
        let row = conn.finish(written).await.map_err(|e| self.failed(e))?;
        row.into_attempt(message).map_err(StoreError::Query)
    }

    /// Stores a stream ticket's hash, forgetting expired ones first.
    pub async fn create_stream_ticket(&self, ticket: NewTicket, now: i64) -> StoreResult<()> {
        let mut conn = self.session().await?;
        let stored = async {
            tickets::forget_expired(now).execute(&mut conn).await?;
            tickets::store_ticket(ticket).execute(&mut conn).await
        }
        .await;
        conn.finish(stored).await.map_err(|e| self.failed(e))?;
        Ok(())
    }

    /// Takes a live stream ticket, once: its user, role and access end.
    pub async fn redeem_stream_ticket(
        &self,
        ticket_hash: &str,
        now: i64,
    ) -> StoreResult<Option<RedeemedTicket>> {
        let mut conn = self.session().await?;
        let taken = tickets::take(ticket_hash.to_owned(), now).returning(tickets::REDEEMED);
        let taken = committed_row(taken, &mut conn).await;
        match conn.finish(taken).await {
            Ok(row) => Ok(Some(row)),
            Err(DieselError::NotFound) => Ok(None),
            Err(error) => Err(self.failed(error)),
        }
    }

    pub async fn mark_read(
        &self,
        thread_id: i64,
        side: Side,
        user_id: i64,
        up_to_seq: Option<i64>,
        now_ms: i64,
    ) -> StoreResult<MarkReadAttempt> {
        let statement = || MarkReadStatement {
            thread_id,
            side: side.as_str(),
            user_id,
            up_to_seq,
            now_ms,
        };
        let mut conn = self.session().await?;
        let written =
            fresh_row::<_, ReadRow>(&mut conn, thread_id, ThreadLock::Share, statement).await;
        let row = conn.finish(written).await.map_err(|e| self.failed(e))?;
        Ok(MarkReadAttempt {
            thread: row.thread.facts(None),
            state: row.state(),
        })
    }

    pub async fn mark_unread(
        &self,
        thread_id: i64,
        side: Side,
        user_id: i64,
        from_seq: i64,
        now_ms: i64,
    ) -> StoreResult<MarkUnreadAttempt> {
        let statement = || MarkUnreadStatement {
            thread_id,
            side: side.as_str(),
            user_id,
            from_seq,
            now_ms,
        };
        let mut conn = self.session().await?;
        let written =
            fresh_row::<_, MarkUnreadRow>(&mut conn, thread_id, ThreadLock::Share, statement).await;
        let row = conn.finish(written).await.map_err(|e| self.failed(e))?;
        Ok(MarkUnreadAttempt {
            thread: row.read.thread.facts(None),
            last_seq: row.last_seq.unwrap_or(0),
            state: row.read.state(),
        })
    }

    pub async fn edit_message(&self, edit: &MessageEdit) -> StoreResult<MessageAttempt> {
        let statement = EditStatement {
            thread_id: edit.thread_id,
            seq: edit.seq,
            side: edit.side.as_str(),
            editor_id: edit.editor_id,
            body: edit.body.clone(),
            preview: edit.preview.clone(),
            unlocking: edit.unlocking.iter().map(|s| s.as_str()).collect(),
        };
        let mut conn = self.session().await?;
        let written = committed_row::<_, MessageWriteRow>(statement, &mut conn).await;
        let row = conn.finish(written).await.map_err(|e| self.failed(e))?;
        row.into_attempt(edit.thread_id).map_err(StoreError::Query)
    }

    pub async fn delete_message(
        &self,
        thread_id: i64,
        seq: i64,
        deleter: Deleter,
    ) -> StoreResult<MessageAttempt> {
        let (side, deleter_id) = match deleter {
            Deleter::Sender { user_id, side } => (Some(side.as_str()), Some(user_id)),
            Deleter::Moderator => (None, None),
        };
        let statement = || DeleteStatement {
            thread_id,
            seq,
            side,
            deleter_id,
        };
        let mut conn = self.session().await?;
        let written =
            fresh_row::<_, MessageWriteRow>(&mut conn, thread_id, ThreadLock::Update, statement)
                .await;
        let row = conn.finish(written).await.map_err(|e| self.failed(e))?;
        row.into_attempt(thread_id).map_err(StoreError::Query)
    }

    pub async fn set_mute(
        &self,
        thread_id: i64,
        side: Side,
        user_id: i64,
        muted_until_ms: Option<i64>,
        now_ms: i64,
    ) -> StoreResult<MuteAttempt> {
        let statement = MuteStatement {
            thread_id,
            side: side.as_str(),
            user_id,
            muted_until_ms,
            now_ms,
        };
        let mut conn = self.session().await?;
        let written = committed_row::<_, MuteStatementRow>(statement, &mut conn).await;
        let row = conn.finish(written).await.map_err(|e| self.failed(e))?;
        Ok(MuteAttempt {
            thread: row.thread.facts(None),
            state: row.member.then_some(MuteRow {
                muted_until_ms,
                total: row.total,
                changed: row.changed,
            }),
        })
    }

    /// Erases one batch of the user's messages in one thread after `after_seq`, in a
    /// transaction of its own that first locks the thread.
    pub async fn erase_batch(
        &self,
        thread_id: i64,
        user_id: i64,
        after_seq: i64,
        batch: i64,
    ) -> StoreResult<ErasedBatch> {
        let mut conn = self.session().await?;
        let erased = conn
            .transaction(async |conn| {
                diesel::sql_query("SELECT 1 FROM threads WHERE thread_id = $1 FOR NO KEY UPDATE")
                    .bind::<BigInt, _>(thread_id)
                    .execute(conn)
                    .await?;
                let rows: Vec<EraseRow> = EraseBatchStatement {
                    thread_id,
                    user_id,
                    after_seq,
                    batch,
                }
                .load(conn)
                .await?;
                rows.into_iter().next().ok_or(DieselError::NotFound)
            })
            .await;
        let row: EraseRow = conn.finish(erased).await.map_err(|e| self.failed(e))?;
        Ok(ErasedBatch {
            erased: row.erased,
            wiped: row.wiped,
            last_seq: row.last_seq,
            changed: summary_keys(row.changed_users, row.changed_sides)
                .map_err(StoreError::Query)?,
        })
    }

    /// Upserts a fact and, when it applied to a relation or inquiry, makes its thread's
    /// writability follow, all in one transaction (a crash cannot leave them apart).
    pub async fn upsert_fact(
        &self,
        table: &'static FactTable,
        ids: &[i64],
        status: &'static str,
        version: i64,
        is_writable: Option<bool>,
    ) -> StoreResult<(bool, Vec<SummaryKey>)> {
        let mut pooled = self.conn().await?;
        let conn: &mut Conn = &mut pooled;
        let ids = ids.to_vec();
        conn.transaction(async |conn: &mut Conn| {
            let sql = upsert::versioned_upsert_sql(table, NOW);
            let applied = upsert::bind_upsert::<Pg>(sql, &ids, status, version)
                .execute(conn)
                .await?;
            if applied == 0 {
                return Ok((false, Vec::new()));
            }
            let (Some(is_writable), Some(fact_column)) = (is_writable, table.key.first()) else {
                return Ok((true, Vec::new()));
            };
            upsert::bind_writability::<Pg>(
                upsert::thread_writability_sql(fact_column),
                is_writable,
                ids[0],
            )
            .execute(conn)
            .await?;
            let keys: Vec<SummaryKey> = upsert::bind_writability::<Pg>(
                upsert::participants_writability_sql(fact_column),
                is_writable,
                ids[0],
            )
            .load::<upsert::ChangedParticipant>(conn)
            .await?
            .into_iter()
            .map(SummaryKey::from)
            .collect();
            if let Some(bump) = upsert::bump_versions::<Pg>(&keys) {
                bump.execute(conn).await?;
            }
            Ok((true, keys))
        })
        .await
        .map_err(|e: DieselError| self.failed(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every statement file binds exactly the fields its statement declares, each once.
    #[test]
    fn statement_files_name_their_parameters_once() {
        let statements: [(&str, &[&str]); 8] = [
            (SendStatement::FILE, SendStatement::PARAMS),
            (MarkReadStatement::FILE, MarkReadStatement::PARAMS),
            (MarkUnreadStatement::FILE, MarkUnreadStatement::PARAMS),
            (EditStatement::FILE, EditStatement::PARAMS),
            (DeleteStatement::FILE, DeleteStatement::PARAMS),
            (MuteStatement::FILE, MuteStatement::PARAMS),
            (EraseBatchStatement::FILE, EraseBatchStatement::PARAMS),
            (CreateThreadStatement::FILE, CreateThreadStatement::PARAMS),
        ];
        for (file, declared) in statements {
            let named: Vec<String> = split_named(file)
                .into_iter()
                .filter_map(|piece| match piece {
                    Piece::Param(name) => Some(name),
                    Piece::Sql(_) => None,
                })
                .collect();
            assert_eq!(
                named,
                declared,
                "{}",
                file.lines().next().unwrap_or_default()
            );
        }
    }

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
