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

/// Declares a statement whose SQL is fixed: `params` are bound once each, in order, as
/// the columns of a first CTE named `params` that the statement reads them from. Its
/// static query id lets the connection prepare it once and reuse the plan.
macro_rules! fixed_statement {
    (
        $(#[$doc:meta])*
        $name:ident { $($field:ident: $ty:ty => $sql_type:ty),+ $(,)? }
        sql = $sql:expr;
    ) => {
        fixed_statement! {
            $(#[$doc])*
            $name { $($field: $ty => $sql_type),+ }
            sql = $sql;
            returns = Untyped;
        }
    };
    (
        $(#[$doc:meta])*
        $name:ident { $($field:ident: $ty:ty => $sql_type:ty),+ $(,)? }
        sql = $sql:expr;
        returns = $returns:ty;
    ) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name { $(pub $field: $ty),+ }

        impl QueryId for $name {
            type QueryId = $name;
            const HAS_STATIC_QUERY_ID: bool = true;
        }

        impl QueryFragment<Pg> for $name {
            fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
                out.push_sql("WITH params AS (SELECT ");
                let mut separator = "";
                $(
                    out.push_sql(separator);
                    separator = ", ";
                    out.push_bind_param::<$sql_type, _>(&self.$field)?;
                    out.push_sql(concat!(" AS ", stringify!($field)));
                )+
                let _ = separator;
                out.push_sql("), ");
                out.push_sql($sql);
                Ok(())
            }
        }

        impl Query for $name {
            type SqlType = $returns;
        }
    };
}

fixed_statement! {
    /// SendMessage in one statement. Locks the thread row (which orders every write of
    /// the thread), reads the tutor's contact access under a share lock when the rules
    /// need it, and appends only when the caller is the thread's participant on `side`,
    /// the thread is writable and contact access allows it. A key seen before returns
    /// the first message; a concurrent retry that commits first makes the insert do
    /// nothing (the unique key), and the caller reads the winner's message.
    SendStatement {
        thread_id: i64 => BigInt,
        side: &'static str => Text,
        sender_id: i64 => BigInt,
        body: String => Text,
        preview: String => Text,
        client_message_id: Option<String> => Nullable<Text>,
        unlocking: Vec<&'static str> => Array<Text>,
    }
    sql = r"
t AS MATERIALIZED (
    SELECT thread_id, last_seq, kind, tutor_id, student_id, is_writable FROM threads
    WHERE thread_id = (SELECT thread_id FROM params)
    FOR NO KEY UPDATE
),
access AS MATERIALIZED (
    SELECT ca.state FROM contact_access ca, params
    WHERE ca.tutor_id = (SELECT tutor_id FROM t) AND ca.student_id = (SELECT student_id FROM t)
      AND params.side = 'tutor' AND (SELECT kind FROM t) = 'contact'
    FOR SHARE OF ca
),
prior AS MATERIALIZED (
    SELECT m.message_id, m.thread_id, m.seq, m.sender_id, m.body, m.created_at, m.client_message_id
    FROM messages m, params
    WHERE m.thread_id = params.thread_id AND m.sender_id = params.sender_id
      AND m.client_message_id = params.client_message_id
),
allowed AS MATERIALIZED (
    SELECT t.thread_id, t.last_seq FROM t, params
    WHERE (CASE WHEN params.side = 'tutor' THEN t.tutor_id ELSE t.student_id END) = params.sender_id
      AND t.is_writable
      AND NOT EXISTS (SELECT 1 FROM prior)
      AND (params.side <> 'tutor' OR t.kind <> 'contact'
           OR EXISTS (SELECT 1 FROM access WHERE access.state = ANY(params.unlocking)))
),
sender AS MATERIALIZED (
    SELECT p.last_read_seq FROM thread_participants p
    WHERE p.thread_id = (SELECT thread_id FROM allowed) AND p.side = (SELECT side FROM params)
    FOR NO KEY UPDATE
),
m AS (
    INSERT INTO messages (thread_id, seq, sender_id, body, client_message_id, created_at)
    SELECT allowed.thread_id, allowed.last_seq + 1, params.sender_id, params.body,
           params.client_message_id, now()
    FROM allowed, params
    ON CONFLICT (thread_id, sender_id, client_message_id) DO NOTHING
    RETURNING message_id, thread_id, seq, sender_id, body, created_at, client_message_id
),
moved AS (
    UPDATE threads SET last_seq = m.seq, last_message_at = m.created_at,
        last_message_preview = params.preview, last_message_sender_id = params.sender_id
    FROM m, params
    WHERE threads.thread_id = m.thread_id
),
counted AS (
    UPDATE thread_participants p SET
        last_read_seq = CASE WHEN p.side = params.side THEN m.seq ELSE p.last_read_seq END,
        unread_count = CASE WHEN p.side = params.side THEN 0 ELSE p.unread_count + 1 END,
        last_message_at = m.created_at, last_message_preview = params.preview,
        last_message_sender_id = params.sender_id
    FROM m CROSS JOIN sender CROSS JOIN params
    WHERE p.thread_id = m.thread_id
),
changed AS (
    SELECT CASE WHEN params.side = 'tutor' THEN t.student_id ELSE t.tutor_id END AS user_id,
           CASE WHEN params.side = 'tutor' THEN 'student' ELSE 'tutor' END AS side
    FROM t, m, params
    UNION ALL
    SELECT params.sender_id, params.side FROM t, m, sender, params
    WHERE t.last_seq > sender.last_read_seq
),
bumped AS (
    INSERT INTO summary_versions (user_id, side, version)
    SELECT user_id, side, 1 FROM changed ORDER BY user_id, side = 'student'
    ON CONFLICT (user_id, side) DO UPDATE SET version = summary_versions.version + 1
    RETURNING user_id, side
)
SELECT t.kind, t.tutor_id, t.student_id, t.is_writable, (SELECT state FROM access) AS contact_access,
       m.message_id, m.thread_id AS message_thread_id, m.seq, m.sender_id, m.body, m.created_at,
       m.client_message_id,
       prior.message_id AS prior_message_id, prior.seq AS prior_seq, prior.body AS prior_body,
       prior.created_at AS prior_created_at,
       (SELECT COALESCE(array_agg(user_id), '{}') FROM bumped) AS changed_users,
       (SELECT COALESCE(array_agg(side), '{}') FROM bumped) AS changed_sides
FROM params LEFT JOIN t ON TRUE LEFT JOIN m ON TRUE LEFT JOIN prior ON TRUE
";
}

fixed_statement! {
    /// MarkRead in one statement: under a share lock on the thread (so no message can
    /// be appended meanwhile) and the reader's row lock, moves the horizon as
    /// `domain/rules.rs` says (forward to the requested seq, clamped to the last seq,
    /// never back), sets the unread count to what lies after it, bumps the reader's
    /// summary version when that count changed, and answers the reader's new total.
    MarkReadStatement {
        thread_id: i64 => BigInt,
        side: &'static str => Text,
        user_id: i64 => BigInt,
        up_to_seq: Option<i64> => Nullable<BigInt>,
    }
    sql = r"
t AS MATERIALIZED (
    SELECT thread_id, last_seq, kind, tutor_id, student_id, is_writable FROM threads
    WHERE thread_id = (SELECT thread_id FROM params)
    FOR SHARE
),
cur AS MATERIALIZED (
    SELECT p.last_read_seq, p.unread_count FROM thread_participants p, params
    WHERE p.thread_id = (SELECT thread_id FROM t) AND p.side = params.side
      AND p.user_id = params.user_id
    FOR NO KEY UPDATE OF p
),
next AS MATERIALIZED (
    SELECT horizon, GREATEST(t.last_seq - horizon, 0) AS unread, cur.unread_count AS unread_before
    FROM t, cur, params,
         LATERAL (SELECT GREATEST(cur.last_read_seq,
                                  LEAST(COALESCE(params.up_to_seq, t.last_seq), t.last_seq)) AS horizon) h
),
moved AS (
    UPDATE thread_participants p SET last_read_seq = next.horizon, unread_count = next.unread
    FROM next, params
    WHERE p.thread_id = params.thread_id AND p.side = params.side
      AND (p.last_read_seq <> next.horizon OR p.unread_count <> next.unread)
),
bumped AS (
    INSERT INTO summary_versions (user_id, side, version)
    SELECT params.user_id, params.side, 1 FROM next, params
    WHERE next.unread <> next.unread_before
    ON CONFLICT (user_id, side) DO UPDATE SET version = summary_versions.version + 1
    RETURNING version
),
elsewhere AS (
    SELECT CAST(COALESCE(SUM(p.unread_count), 0) AS BIGINT) AS unread
    FROM thread_participants p, params
    WHERE p.user_id = params.user_id AND p.side = params.side AND p.unread_count > 0
      AND p.thread_id <> params.thread_id
)
SELECT t.kind, t.tutor_id, t.student_id, t.is_writable,
       next.horizon, next.unread, elsewhere.unread + COALESCE(next.unread, 0) AS total,
       EXISTS (SELECT 1 FROM bumped) AS changed
FROM elsewhere LEFT JOIN t ON TRUE LEFT JOIN next ON TRUE
";
}

/// The create of a thread with its two participant rows, for a relation or an inquiry.
/// The fact is read under a share lock, so a status change commits either before (and
/// is seen) or after (and its own statement updates the new thread). The unique key
/// decides races: every loser inserts nothing and reads the winner's thread.
macro_rules! create_thread_statement {
    ($name:ident, $table:literal, $column:literal, $kind:literal) => {
        fixed_statement! {
            $name {
                fact_id: i64 => BigInt,
                writable: Vec<&'static str> => Array<Text>,
            }
            sql = concat!(
                "fact AS MATERIALIZED (SELECT ", $column, " AS id, tutor_id, student_id, status FROM ", $table,
                " WHERE ", $column, " = (SELECT fact_id FROM params) FOR SHARE),
ins AS (
    INSERT INTO threads (kind, ", $column, ", tutor_id, student_id, is_writable, created_at)
    SELECT '", $kind, "', fact.id, fact.tutor_id, fact.student_id, fact.status = ANY(params.writable), now()
    FROM fact, params
    ON CONFLICT (", $column, ") DO NOTHING
    RETURNING thread_id, kind, relation_id, inquiry_id, tutor_id, student_id, is_writable, created_at
),
parts AS (
    INSERT INTO thread_participants (thread_id, side, user_id, kind, relation_id, inquiry_id,
                                     tutor_id, student_id, is_writable)
    SELECT ins.thread_id, s.side, CASE s.side WHEN 'tutor' THEN ins.tutor_id ELSE ins.student_id END,
           ins.kind, ins.relation_id, ins.inquiry_id, ins.tutor_id, ins.student_id, ins.is_writable
    FROM ins CROSS JOIN (VALUES ('tutor'), ('student')) AS s(side)
)
SELECT thread_id, kind, relation_id, inquiry_id, tutor_id, student_id, is_writable, created_at FROM ins"
            );
            returns = (
                BigInt,
                Text,
                Nullable<BigInt>,
                Nullable<BigInt>,
                BigInt,
                BigInt,
                Bool,
                Timestamptz,
            );
        }
    };
}

create_thread_statement!(CreateRelationThread, "relations", "relation_id", "contact");
create_thread_statement!(
    CreateInquiryThread,
    "inquiries",
    "inquiry_id",
    "negotiation"
);

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
        let rows: Vec<Thread> = match new {
            NewThread::Relation {
                relation_id,
                writable,
            } => {
                CreateRelationThread {
                    fact_id: *relation_id,
                    writable: writable.iter().map(|s| s.as_str()).collect(),
                }
                .load(&mut conn)
                .await
            }
            NewThread::Inquiry {
                inquiry_id,
                writable,
            } => {
                CreateInquiryThread {
                    fact_id: *inquiry_id,
                    writable: writable.iter().map(|s| s.as_str()).collect(),
                }
                .load(&mut conn)
                .await
            }
        }
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
