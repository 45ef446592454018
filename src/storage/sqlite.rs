//! SQLite, embedded: readers in a pool, and ONE writer connection on a thread of its own
//! that every write queues for.
//!
//! SQLite lets one writer in at a time. Several pooled connections that all write only
//! take turns through busy-wait loops (`busy_timeout`), which is slow and unfair under
//! load: seconds-long tails. One writer that writes queue for is how SQLite is fast:
//! each write is a short `BEGIN IMMEDIATE` transaction on a connection nobody else
//! touches, with its statements prepared once. WAL lets the readers run beside it.
//!
//! The writer, with its group commit and WAL checkpoints, is a room of its own
//! (`sqlite/writer.rs`); this file holds the writes it runs.
//!
//! With one writer, writes of one process never interleave, so the checks of the rules
//! (`domain/rules.rs`) and the changes they guard are trivially atomic.

use chrono::Utc;
use diesel::prelude::*;
use diesel::result::Error as DieselError;
use diesel::sqlite::Sqlite;
use diesel::{RunQueryDsl, SqliteConnection};
use diesel_async::pooled_connection::deadpool::{Object, Pool};

use super::pool::{self, PoolConfig, PoolStatus, SqliteReader};
use super::rows::{MarkReadAttempt, NewMessage, NewThread, ReadStateRow, SendAttempt, ThreadFacts};
use super::upsert::{self, FactTable};
use super::{StoreError, StoreResult};
use crate::domain::rules;
use crate::model::{
    ContactAccessState, InquiryStatus, Message, RelationStatus, Side, SummaryKey, Thread,
    ThreadKind,
};
use writer::Writer;

pub type Conn = SqliteReader;

pub mod schema {
    //! The tables, with SQLite's timestamp type (RFC 3339 text).
    pub type Ts = diesel::sql_types::TimestamptzSqlite;
    include!("schema.rs");
}

pub mod reads {
    //! The shared reads, compiled for SQLite.
    include!("reads.rs");
}

mod writer;

pub mod tickets {
    //! Stream tickets, compiled for SQLite.
    include!("tickets.rs");
}

use reads::{MESSAGE_COLUMNS, THREAD_COLUMNS};
use schema::{
    contact_access, inquiries, messages, relations, summary_versions, thread_participants, threads,
};

/// The current time, in SQLite's SQL, as RFC 3339 text like every stored timestamp.
const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

/// The SQLite store. Cloning is shallow.
#[derive(Clone)]
pub struct SqliteStore {
    readers: Pool<SqliteReader>,
    writer: Writer,
}

impl SqliteStore {
    /// Opens the writer connection (on its own thread) and a lazy pool of readers.
    pub fn connect(path: &str, config: &PoolConfig) -> Result<Self, String> {
        let readers = pool::sqlite_pool(path, config)?;
        let writer = Writer::open(path, config.timeout)?;
        Ok(Self { readers, writer })
    }

    pub async fn migrate(&self) -> Result<Vec<String>, String> {
        pool::migrate_sqlite(&self.readers).await
    }

    pub fn pool_status(&self) -> PoolStatus {
        PoolStatus::of(self.readers.status())
    }

    /// A pooled reader connection.
    pub async fn conn(&self) -> StoreResult<Object<SqliteReader>> {
        Ok(self.readers.get().await?)
    }

    pub fn failed(&self, error: DieselError) -> StoreError {
        error.into()
    }

    pub async fn execute_batch(&self, sql: &str) -> StoreResult<()> {
        use diesel_async::SimpleAsyncConnection;
        let mut conn = self.conn().await?;
        conn.batch_execute(sql).await.map_err(StoreError::from)
    }

    pub async fn create_thread(&self, new: &NewThread) -> StoreResult<Option<Thread>> {
        let new = new.clone();
        self.writer
            .write(move |conn| create_thread(conn, &new))
            .await
    }

    pub async fn send_message(&self, message: &NewMessage) -> StoreResult<SendAttempt> {
        let message = message.clone();
        self.writer
            .write(move |conn| send_message(conn, &message))
            .await
    }

    pub async fn mark_read(
        &self,
        thread_id: i64,
        side: Side,
        user_id: i64,
        up_to_seq: Option<i64>,
    ) -> StoreResult<MarkReadAttempt> {
        self.writer
            .write(move |conn| mark_read(conn, thread_id, side, user_id, up_to_seq))
            .await
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
        let ticket_hash = ticket_hash.to_owned();
        self.writer
            .write(move |conn| {
                tickets::forget_expired(now).execute(conn)?;
                tickets::store(ticket_hash.clone(), user_id, role, expires_at).execute(conn)?;
                Ok(())
            })
            .await
    }

    /// Takes a live stream ticket: its user and role, once.
    pub async fn redeem_stream_ticket(
        &self,
        ticket_hash: &str,
        now: i64,
    ) -> StoreResult<Option<(i64, String)>> {
        let ticket_hash = ticket_hash.to_owned();
        self.writer
            .write(move |conn| {
                tickets::take(ticket_hash.clone(), now)
                    .returning((
                        schema::stream_tickets::user_id,
                        schema::stream_tickets::role,
                    ))
                    .get_result(conn)
                    .optional()
            })
            .await
    }

    pub async fn upsert_fact(
        &self,
        table: &'static FactTable,
        ids: &[i64],
        status: &'static str,
        version: i64,
        is_writable: Option<bool>,
    ) -> StoreResult<(bool, Vec<SummaryKey>)> {
        let ids = ids.to_vec();
        self.writer
            .write(move |conn| upsert_fact(conn, table, &ids, status, version, is_writable))
            .await
    }
}

/// Bumps the versions of `keys`' summaries, creating them at 1: one prepared upsert
/// per key (the single writer cannot deadlock, so order does not matter here).
fn bump_versions(conn: &mut SqliteConnection, keys: &[SummaryKey]) -> QueryResult<()> {
    for key in keys {
        diesel::insert_into(summary_versions::table)
            .values((
                summary_versions::user_id.eq(key.user_id),
                summary_versions::side.eq(key.side.as_str()),
                summary_versions::version.eq(1),
            ))
            .on_conflict((summary_versions::user_id, summary_versions::side))
            .do_update()
            .set(summary_versions::version.eq(summary_versions::version + 1))
            .execute(conn)?;
    }
    Ok(())
}

/// Creates the thread of a relation or inquiry with its participant rows; `None` when
/// the fact does not exist or the thread exists already.
fn create_thread(conn: &mut SqliteConnection, new: &NewThread) -> QueryResult<Option<Thread>> {
    let (kind, relation_id, inquiry_id, fact) = match new {
        NewThread::Relation {
            relation_id,
            writable,
        } => {
            let fact: Option<(i64, i64, RelationStatus)> = relations::table
                .find(relation_id)
                .select((
                    relations::tutor_id,
                    relations::student_id,
                    relations::status,
                ))
                .first(conn)
                .optional()?;
            let fact =
                fact.map(|(tutor, student, status)| (tutor, student, writable.contains(&status)));
            (ThreadKind::Contact, Some(*relation_id), None, fact)
        }
        NewThread::Inquiry {
            inquiry_id,
            writable,
        } => {
            let fact: Option<(i64, i64, InquiryStatus)> = inquiries::table
                .find(inquiry_id)
                .select((
                    inquiries::tutor_id,
                    inquiries::student_id,
                    inquiries::status,
                ))
                .first(conn)
                .optional()?;
            let fact =
                fact.map(|(tutor, student, status)| (tutor, student, writable.contains(&status)));
            (ThreadKind::Negotiation, None, Some(*inquiry_id), fact)
        }
    };
    let Some((tutor_id, student_id, is_writable)) = fact else {
        return Ok(None);
    };
    let values = (
        threads::kind.eq(kind.as_str()),
        threads::relation_id.eq(relation_id),
        threads::inquiry_id.eq(inquiry_id),
        threads::tutor_id.eq(tutor_id),
        threads::student_id.eq(student_id),
        threads::is_writable.eq(is_writable),
        threads::created_at.eq(Utc::now()),
    );
    // One writer: the only conflict is a thread created by an earlier write.
    let inserted: Option<Thread> = diesel::insert_into(threads::table)
        .values(values)
        .on_conflict_do_nothing()
        .returning(THREAD_COLUMNS)
        .get_result(conn)
        .optional()?;
    if let Some(thread) = &inserted {
        for (side, user_id) in [(Side::Tutor, tutor_id), (Side::Student, student_id)] {
            diesel::insert_into(thread_participants::table)
                .values((
                    thread_participants::thread_id.eq(thread.thread_id),
                    thread_participants::side.eq(side.as_str()),
                    thread_participants::user_id.eq(user_id),
                    thread_participants::kind.eq(kind.as_str()),
                    thread_participants::relation_id.eq(relation_id),
                    thread_participants::inquiry_id.eq(inquiry_id),
                    thread_participants::tutor_id.eq(tutor_id),
                    thread_participants::student_id.eq(student_id),
                    thread_participants::is_writable.eq(is_writable),
                ))
                .execute(conn)?;
        }
    }
    Ok(inserted)
}

/// The thread's facts as a write sees them, and its last seq.
fn thread_facts(
    conn: &mut SqliteConnection,
    thread_id: i64,
) -> QueryResult<Option<(ThreadFacts, i64)>> {
    let row: Option<(i64, ThreadKind, i64, i64, bool)> = threads::table
        .find(thread_id)
        .select((
            threads::last_seq,
            threads::kind,
            threads::tutor_id,
            threads::student_id,
            threads::is_writable,
        ))
        .first(conn)
        .optional()?;
    Ok(
        row.map(|(last_seq, kind, tutor_id, student_id, is_writable)| {
            (
                ThreadFacts {
                    kind,
                    tutor_id,
                    student_id,
                    is_writable,
                    contact_access: None,
                },
                last_seq,
            )
        }),
    )
}

/// SendMessage: the same checks and changes as PostgreSQL's statement
/// (`postgres/send_message.sql`), as one transaction of the single writer, calling the
/// rules it applies.
fn send_message(conn: &mut SqliteConnection, message: &NewMessage) -> QueryResult<SendAttempt> {
    let mut attempt = SendAttempt {
        thread: None,
        sent: None,
        replayed: None,
        changed: Vec::new(),
    };
    let Some((mut facts, last_seq)) = thread_facts(conn, message.thread_id)? else {
        return Ok(attempt);
    };
    if rules::needs_contact_access(message.side, facts.kind) {
        facts.contact_access = contact_access::table
            .find((facts.tutor_id, facts.student_id))
            .select(contact_access::state)
            .first::<ContactAccessState>(conn)
            .optional()?;
    }
    attempt.thread = Some(facts);
    let thread = facts.view();
    if rules::thread_for(message.sender_id, message.side, Some(thread)).is_err() {
        return Ok(attempt);
    }
    if let Some(key) = &message.client_message_id {
        attempt.replayed = messages::table
            .filter(messages::thread_id.eq(message.thread_id))
            .filter(messages::sender_id.eq(message.sender_id))
            .filter(messages::client_message_id.eq(key))
            .select(MESSAGE_COLUMNS)
            .first::<Message>(conn)
            .optional()?;
        if attempt.replayed.is_some() {
            return Ok(attempt);
        }
    }
    if rules::may_write(message.side, &thread).is_err() {
        return Ok(attempt);
    }
    let seq = last_seq + 1;
    let now = Utc::now();
    let sent: Message = diesel::insert_into(messages::table)
        .values((
            messages::thread_id.eq(message.thread_id),
            messages::seq.eq(seq),
            messages::sender_id.eq(message.sender_id),
            messages::body.eq(&message.body),
            messages::client_message_id.eq(&message.client_message_id),
            messages::created_at.eq(now),
        ))
        .returning(MESSAGE_COLUMNS)
        .get_result(conn)?;
    diesel::update(threads::table.find(message.thread_id))
        .set((
            threads::last_seq.eq(seq),
            threads::last_message_at.eq(now),
            threads::last_message_preview.eq(&message.preview),
            threads::last_message_sender_id.eq(message.sender_id),
        ))
        .execute(conn)?;
    let side = message.side.as_str();
    let sender_unread: i64 = thread_participants::table
        .find((message.thread_id, side))
        .select(thread_participants::unread_count)
        .first(conn)?;
    let last_message = (
        thread_participants::last_message_at.eq(now),
        thread_participants::last_message_preview.eq(&message.preview),
        thread_participants::last_message_sender_id.eq(message.sender_id),
    );
    diesel::update(thread_participants::table.find((message.thread_id, side)))
        .set((
            thread_participants::last_read_seq.eq(rules::horizon_after_send(seq)),
            thread_participants::unread_count.eq(0),
            last_message,
        ))
        .execute(conn)?;
    let peer = message.side.peer();
    diesel::update(thread_participants::table.find((message.thread_id, peer.as_str())))
        .set((
            thread_participants::unread_count.eq(thread_participants::unread_count + 1),
            last_message,
        ))
        .execute(conn)?;
    let changes = rules::send_changes(sender_unread);
    if changes.peer {
        let peer_id = thread.participants.on(peer);
        attempt.changed.push(SummaryKey::new(peer_id, peer));
    }
    if changes.sender {
        attempt
            .changed
            .push(SummaryKey::new(message.sender_id, message.side));
    }
    bump_versions(conn, &attempt.changed)?;
    attempt.sent = Some(sent);
    Ok(attempt)
}

/// MarkRead: the rules of `domain/rules.rs` (`horizon_after_mark_read`, `unread_at`),
/// as one transaction of the single writer.
fn mark_read(
    conn: &mut SqliteConnection,
    thread_id: i64,
    side: Side,
    user_id: i64,
    up_to_seq: Option<i64>,
) -> QueryResult<MarkReadAttempt> {
    let Some((facts, last_seq)) = thread_facts(conn, thread_id)? else {
        return Ok(MarkReadAttempt {
            thread: None,
            state: None,
        });
    };
    let current: Option<(i64, i64)> = thread_participants::table
        .find((thread_id, side.as_str()))
        .filter(thread_participants::user_id.eq(user_id))
        .select((
            thread_participants::last_read_seq,
            thread_participants::unread_count,
        ))
        .first(conn)
        .optional()?;
    let Some((horizon_before, unread_before)) = current else {
        return Ok(MarkReadAttempt {
            thread: Some(facts),
            state: None,
        });
    };
    let horizon = rules::horizon_after_mark_read(horizon_before, up_to_seq, last_seq);
    let unread = rules::unread_at(last_seq, horizon);
    if (horizon, unread) != (horizon_before, unread_before) {
        diesel::update(thread_participants::table.find((thread_id, side.as_str())))
            .set((
                thread_participants::last_read_seq.eq(horizon),
                thread_participants::unread_count.eq(unread),
            ))
            .execute(conn)?;
    }
    let changed = rules::read_changes(unread_before, unread);
    if changed {
        bump_versions(conn, &[SummaryKey::new(user_id, side)])?;
    }
    let counts: Vec<i64> = thread_participants::table
        .filter(thread_participants::user_id.eq(user_id))
        .filter(thread_participants::side.eq(side.as_str()))
        .filter(thread_participants::unread_count.gt(0))
        .select(thread_participants::unread_count)
        .load(conn)?;
    Ok(MarkReadAttempt {
        thread: Some(facts),
        state: Some(ReadStateRow {
            last_read_seq: horizon,
            unread_count: unread,
            total: counts.iter().sum(),
            changed,
        }),
    })
}

/// The versioned upsert, then the thread's writability following its fact (see
/// `storage/upsert.rs`), as one transaction of the single writer.
fn upsert_fact(
    conn: &mut SqliteConnection,
    table: &FactTable,
    ids: &[i64],
    status: &'static str,
    version: i64,
    is_writable: Option<bool>,
) -> QueryResult<(bool, Vec<SummaryKey>)> {
    let sql = upsert::versioned_upsert_sql(table, NOW);
    let applied = upsert::bind_upsert::<Sqlite>(sql, ids, status, version).execute(conn)?;
    if applied == 0 {
        return Ok((false, Vec::new()));
    }
    let (Some(is_writable), Some(fact_column)) = (is_writable, table.key.first()) else {
        return Ok((true, Vec::new()));
    };
    upsert::bind_writability::<Sqlite>(
        upsert::thread_writability_sql(fact_column),
        is_writable,
        ids[0],
    )
    .execute(conn)?;
    let keys: Vec<SummaryKey> = upsert::bind_writability::<Sqlite>(
        upsert::participants_writability_sql(fact_column),
        is_writable,
        ids[0],
    )
    .load::<upsert::ChangedParticipant>(conn)?
    .into_iter()
    .map(SummaryKey::from)
    .collect();
    bump_versions(conn, &keys)?;
    Ok((true, keys))
}
