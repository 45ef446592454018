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

use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::result::Error as DieselError;
use diesel::sql_types::{Array, BigInt, Bool, Nullable, Text, Timestamptz, Untyped};
use diesel::{QueryResult, QueryableByName};
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::{AsyncConnection, RunQueryDsl};

use super::pool::{self, PgConn, PoolConfig, PoolStatus};
use super::rows::{MarkReadAttempt, NewMessage, NewThread, ReadStateRow, SendAttempt, ThreadFacts};
use super::upsert::{self, FactTable};
use super::{StoreError, StoreResult};
use crate::model::{ContactAccessState, Message, Side, SummaryKey, Thread, ThreadKind};

pub type Conn = PgConn;

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
    }
    file = "mark_read.sql";
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
    created_at: Option<chrono::DateTime<chrono::Utc>>,
    #[diesel(sql_type = Nullable<BigInt>)]
    prior_message_id: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    prior_seq: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    prior_body: Option<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    prior_created_at: Option<chrono::DateTime<chrono::Utc>>,
    #[diesel(sql_type = Array<BigInt>)]
    changed_users: Vec<i64>,
    #[diesel(sql_type = Array<Text>)]
    changed_sides: Vec<String>,
}

/// The one row MarkReadStatement answers.
#[derive(Debug, QueryableByName)]
struct MarkReadRow {
    #[diesel(sql_type = Nullable<Text>)]
    kind: Option<ThreadKind>,
    #[diesel(sql_type = Nullable<BigInt>)]
    tutor_id: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    student_id: Option<i64>,
    #[diesel(sql_type = Nullable<Bool>)]
    is_writable: Option<bool>,
    #[diesel(sql_type = Nullable<BigInt>)]
    horizon: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    unread: Option<i64>,
    #[diesel(sql_type = BigInt)]
    total: i64,
    #[diesel(sql_type = Bool)]
    changed: bool,
}

fn thread_facts(
    kind: Option<ThreadKind>,
    tutor_id: Option<i64>,
    student_id: Option<i64>,
    is_writable: Option<bool>,
    contact_access: Option<ContactAccessState>,
) -> Option<ThreadFacts> {
    Some(ThreadFacts {
        kind: kind?,
        tutor_id: tutor_id?,
        student_id: student_id?,
        is_writable: is_writable?,
        contact_access,
    })
}

impl SendRow {
    fn into_attempt(self, message: &NewMessage) -> Result<SendAttempt, DieselError> {
        let thread = thread_facts(
            self.kind,
            self.tutor_id,
            self.student_id,
            self.is_writable,
            self.contact_access,
        );
        let row = |id: Option<i64>, seq: Option<i64>, body: Option<String>, at| {
            Some(Message {
                message_id: id?,
                thread_id: message.thread_id,
                seq: seq?,
                sender_id: message.sender_id,
                body: body?,
                created_at: at?,
                client_message_id: message.client_message_id.clone(),
            })
        };
        let sent = row(
            self.message_id,
            self.seq,
            Some(message.body.clone()),
            self.created_at,
        );
        let replayed = row(
            self.prior_message_id,
            self.prior_seq,
            self.prior_body,
            self.prior_created_at,
        );
        let changed = self
            .changed_users
            .into_iter()
            .zip(self.changed_sides)
            .map(|(user_id, side)| {
                Side::parse(&side)
                    .map(|side| SummaryKey::new(user_id, side))
                    .ok_or_else(|| {
                        DieselError::DeserializationError(format!("unknown side {side:?}").into())
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(SendAttempt {
            thread,
            sent,
            replayed,
            changed,
        })
    }
}

/// The PostgreSQL store: a pool, and the one-statement writes.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool<Conn>,
}

impl PgStore {
    pub fn connect(url: &str, config: &PoolConfig) -> Result<Self, String> {
        Ok(Self {
            pool: pool::postgres_pool(url, config)?,
        })
    }

    pub async fn migrate(&self) -> Result<Vec<String>, String> {
        pool::migrate_postgres(&self.pool).await
    }

    pub fn pool_status(&self) -> PoolStatus {
        PoolStatus::of(self.pool.status())
    }

    /// A pooled connection.
    pub async fn conn(&self) -> StoreResult<Object<Conn>> {
        Ok(self.pool.get().await?)
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
        let mut conn = self.conn().await?;
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
        let rows: Vec<Thread> = statement
            .load(&mut conn)
            .await
            .map_err(|e| self.failed(e))?;
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
        let mut conn = self.conn().await?;
        let row: SendRow = committed_row(statement, &mut conn)
            .await
            .map_err(|e| self.failed(e))?;
        row.into_attempt(message).map_err(StoreError::Query)
    }

    /// Stores a stream ticket's hash, forgetting expired ones first.
    pub async fn create_stream_ticket(
        &self,
        ticket_hash: &str,
        user_id: i64,
        role: &'static str,
        expires_at: i64,
        now: i64,
    ) -> StoreResult<()> {
        let mut conn = self.conn().await?;
        let stored = async {
            tickets::forget_expired(now).execute(&mut conn).await?;
            tickets::store(ticket_hash.to_owned(), user_id, role, expires_at)
                .execute(&mut conn)
                .await
        };
        stored.await.map_err(|e| self.failed(e))?;
        Ok(())
    }

    /// Takes a live stream ticket: its user and role, once.
    pub async fn redeem_stream_ticket(
        &self,
        ticket_hash: &str,
        now: i64,
    ) -> StoreResult<Option<(i64, String)>> {
        use schema::stream_tickets;
        let mut conn = self.conn().await?;
        let taken = tickets::take(ticket_hash.to_owned(), now)
            .returning((stream_tickets::user_id, stream_tickets::role));
        match committed_row(taken, &mut conn).await {
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
    ) -> StoreResult<MarkReadAttempt> {
        let statement = MarkReadStatement {
            thread_id,
            side: side.as_str(),
            user_id,
            up_to_seq,
        };
        let mut conn = self.conn().await?;
        let row: MarkReadRow = committed_row(statement, &mut conn)
            .await
            .map_err(|e| self.failed(e))?;
        let thread = thread_facts(
            row.kind,
            row.tutor_id,
            row.student_id,
            row.is_writable,
            None,
        );
        let state = match (row.horizon, row.unread) {
            (Some(last_read_seq), Some(unread_count)) => Some(ReadStateRow {
                last_read_seq,
                unread_count,
                total: row.total,
                changed: row.changed,
            }),
            _ => None,
        };
        Ok(MarkReadAttempt { thread, state })
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
        let statements: [(&str, &[&str]); 3] = [
            (SendStatement::FILE, SendStatement::PARAMS),
            (MarkReadStatement::FILE, MarkReadStatement::PARAMS),
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
