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

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::result::Error as DieselError;
use diesel::sqlite::Sqlite;
use diesel::{RunQueryDsl, SqliteConnection};
use diesel_async::pooled_connection::deadpool::{Object, Pool};

use super::pool::{self, PoolConfig, PoolStatus, SqliteReader};
use super::rows::{
    Deleter, ErasedBatch, MarkReadAttempt, MarkUnreadAttempt, MessageAttempt, MessageEdit,
    MuteAttempt, MuteRow, NewMessage, NewThread, NewTicket, ReadStateRow, RedeemedTicket,
    SendAttempt, ThreadFacts,
};
use super::upsert::{self, FactTable};
use super::{StoreError, StoreResult};
use crate::domain::rules::{self, MessageView};
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
    pub(super) episodes: std::sync::Arc<super::Episodes>,
}

impl SqliteStore {
    /// Opens the writer connection (on its own thread) and a lazy pool of readers.
    pub fn connect(path: &str, config: &PoolConfig) -> Result<Self, String> {
        let readers = pool::sqlite_pool(path, config)?;
        let writer = Writer::open(path, config.timeout)?;
        Ok(Self {
            readers,
            writer,
            episodes: Default::default(),
        })
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
        now_ms: i64,
    ) -> StoreResult<MarkReadAttempt> {
        self.writer
            .write(move |conn| mark_read(conn, thread_id, side, user_id, up_to_seq, now_ms))
            .await
    }

    pub async fn mark_unread(
        &self,
        thread_id: i64,
        side: Side,
        user_id: i64,
        from_seq: i64,
        now_ms: i64,
    ) -> StoreResult<MarkUnreadAttempt> {
        self.writer
            .write(move |conn| mark_unread(conn, thread_id, side, user_id, from_seq, now_ms))
            .await
    }

    pub async fn edit_message(&self, edit: &MessageEdit) -> StoreResult<MessageAttempt> {
        let edit = edit.clone();
        self.writer
            .write(move |conn| edit_message(conn, &edit))
            .await
    }

    pub async fn delete_message(
        &self,
        thread_id: i64,
        seq: i64,
        deleter: Deleter,
    ) -> StoreResult<MessageAttempt> {
        self.writer
            .write(move |conn| delete_message(conn, thread_id, seq, deleter))
            .await
    }

    pub async fn set_mute(
        &self,
        thread_id: i64,
        side: Side,
        user_id: i64,
        muted_until_ms: Option<i64>,
        now_ms: i64,
    ) -> StoreResult<MuteAttempt> {
        self.writer
            .write(move |conn| set_mute(conn, thread_id, side, user_id, muted_until_ms, now_ms))
            .await
    }

    pub async fn erase_batch(
        &self,
        thread_id: i64,
        user_id: i64,
        after_seq: i64,
        batch: i64,
    ) -> StoreResult<ErasedBatch> {
        self.writer
            .write(move |conn| erase_batch(conn, thread_id, user_id, after_seq, batch))
            .await
    }

    /// After an erasure: the index of idempotency keys is rebuilt, then everything the
    /// WAL holds is moved into the database file and the WAL truncated to nothing, so
    /// text and keys erased from the database are in neither file.
    ///
    /// Why the rebuild: when SQLite rebalances b-tree pages it copies cells between
    /// them and leaves the old bytes in the unused space between a page's cell pointers
    /// and its cells, which `secure_delete` does not zero. In the index of keys, whose
    /// entries arrive in no particular order, that happens all the time, so erased keys
    /// outlived their rows there (found by grepping the file). Rebuilding the index
    /// frees every old page, and freed pages are zeroed. It costs about 0.8 s per million
    /// keyed messages, during which writes wait. Message rows are appended in rowid
    /// order, which splits pages without copying cells.
    pub async fn after_erasure(&self) -> StoreResult<()> {
        self.writer
            .write(|conn| {
                let index = keys_index(conn)?;
                diesel::sql_query(format!("REINDEX \"{index}\"")).execute(conn)?;
                Ok(())
            })
            .await?;
        self.writer.checkpoint().await
    }

    /// Stores a stream ticket's hash, forgetting expired ones first.
    pub async fn create_stream_ticket(&self, ticket: NewTicket, now: i64) -> StoreResult<()> {
        self.writer
            .write(move |conn| {
                tickets::forget_expired(now).execute(conn)?;
                tickets::store_ticket(ticket.clone()).execute(conn)?;
                Ok(())
            })
            .await
    }

    /// Takes a live stream ticket, once: its user, role and access end.
    pub async fn redeem_stream_ticket(
        &self,
        ticket_hash: &str,
        now: i64,
    ) -> StoreResult<Option<RedeemedTicket>> {
        let ticket_hash = ticket_hash.to_owned();
        self.writer
            .write(move |conn| {
                tickets::take(ticket_hash.clone(), now)
                    .returning(tickets::REDEEMED)
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

/// The name of the unique index on `messages (thread_id, sender_id, client_message_id)`:
/// SQLite names a table constraint's index itself (`sqlite_autoindex_messages_N`).
fn keys_index(conn: &mut SqliteConnection) -> QueryResult<String> {
    #[derive(QueryableByName)]
    struct Index {
        #[diesel(sql_type = diesel::sql_types::Text)]
        name: String,
    }
    diesel::sql_query(
        "SELECT il.name FROM pragma_index_list('messages') AS il WHERE il.\"unique\" \
         AND EXISTS (SELECT 1 FROM pragma_index_info(il.name) AS ii \
                     WHERE ii.name = 'client_message_id')",
    )
    .get_result::<Index>(conn)
    .map(|index| index.name)
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
        threads::created_at.eq(now_micros()),
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
                    thread_participants::thread_created_at.eq(thread.created_at),
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
        facts.contact_access = contact_access_of(conn, &facts)?;
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
    let now = now_micros();
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
    // The new message is the newest not deleted (rules::last_visible).
    diesel::update(threads::table.find(message.thread_id))
        .set((
            threads::last_seq.eq(seq),
            threads::last_visible_seq.eq(seq),
            threads::revision.eq(threads::revision + 1),
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

/// The participant row of `user_id` on `side` of a thread: horizon, unread count,
/// mute. `None` unless they are that participant (rules::thread_for, as a lookup).
fn participant(
    conn: &mut SqliteConnection,
    thread_id: i64,
    side: Side,
    user_id: i64,
) -> QueryResult<Option<(i64, i64, Option<i64>)>> {
    thread_participants::table
        .find((thread_id, side.as_str()))
        .filter(thread_participants::user_id.eq(user_id))
        .select((
            thread_participants::last_read_seq,
            thread_participants::unread_count,
            thread_participants::muted_until_ms,
        ))
        .first(conn)
        .optional()
}

/// `rules::counts_as_unread` summed over the thread's messages after `horizon`, for
/// `reader`: after it, from the peer, not deleted.
fn count_unread(
    conn: &mut SqliteConnection,
    thread_id: i64,
    reader: i64,
    horizon: i64,
) -> QueryResult<i64> {
    messages::table
        .filter(messages::thread_id.eq(thread_id))
        .filter(messages::seq.gt(horizon))
        .filter(messages::sender_id.ne(reader))
        .filter(messages::deleted_at.is_null())
        .count()
        .get_result(conn)
}

/// A user's total on one side at `now_ms`: the unread messages of their threads that
/// are not muted (rules::counts_in_total).
fn total_of(
    conn: &mut SqliteConnection,
    user_id: i64,
    side: Side,
    now_ms: i64,
) -> QueryResult<i64> {
    let lines: Vec<(i64, Option<i64>)> = thread_participants::table
        .filter(thread_participants::user_id.eq(user_id))
        .filter(thread_participants::side.eq(side.as_str()))
        .filter(thread_participants::unread_count.gt(0))
        .select((
            thread_participants::unread_count,
            thread_participants::muted_until_ms,
        ))
        .load(conn)?;
    Ok(lines
        .into_iter()
        .filter(|(_, muted_until)| rules::counts_in_total(rules::is_muted(*muted_until, now_ms)))
        .map(|(unread, _)| unread)
        .sum())
}

/// Sets a reader's horizon and unread count, and says whether their summary changed
/// (rules::read_changes), bumping its version when it did.
fn set_horizon(
    conn: &mut SqliteConnection,
    thread_id: i64,
    side: Side,
    user_id: i64,
    (horizon_before, unread_before): (i64, i64),
    (horizon, unread): (i64, i64),
) -> QueryResult<bool> {
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
    Ok(changed)
}

/// MarkRead: `rules::horizon_after_mark_read`, then the unread messages after it
/// (`rules::counts_as_unread`), as one transaction of the single writer.
fn mark_read(
    conn: &mut SqliteConnection,
    thread_id: i64,
    side: Side,
    user_id: i64,
    up_to_seq: Option<i64>,
    now_ms: i64,
) -> QueryResult<MarkReadAttempt> {
    let Some((facts, last_seq)) = thread_facts(conn, thread_id)? else {
        return Ok(MarkReadAttempt {
            thread: None,
            state: None,
        });
    };
    let Some((horizon_before, unread_before, _)) = participant(conn, thread_id, side, user_id)?
    else {
        return Ok(MarkReadAttempt {
            thread: Some(facts),
            state: None,
        });
    };
    let horizon = rules::horizon_after_mark_read(horizon_before, up_to_seq, last_seq);
    let unread = match horizon >= last_seq {
        true => 0,
        false => count_unread(conn, thread_id, user_id, horizon)?,
    };
    let changed = set_horizon(
        conn,
        thread_id,
        side,
        user_id,
        (horizon_before, unread_before),
        (horizon, unread),
    )?;
    Ok(MarkReadAttempt {
        thread: Some(facts),
        state: Some(ReadStateRow {
            last_read_seq: horizon,
            unread_count: unread,
            total: total_of(conn, user_id, side, now_ms)?,
            changed,
        }),
    })
}

/// MarkUnread: when `rules::may_mark_unread` allows `from_seq`,
/// `rules::horizon_after_mark_unread` and the unread messages after it, as one
/// transaction of the single writer.
fn mark_unread(
    conn: &mut SqliteConnection,
    thread_id: i64,
    side: Side,
    user_id: i64,
    from_seq: i64,
    now_ms: i64,
) -> QueryResult<MarkUnreadAttempt> {
    let Some((facts, last_seq)) = thread_facts(conn, thread_id)? else {
        return Ok(MarkUnreadAttempt {
            thread: None,
            last_seq: 0,
            state: None,
        });
    };
    let mut attempt = MarkUnreadAttempt {
        thread: Some(facts),
        last_seq,
        state: None,
    };
    let Some((horizon_before, unread_before, _)) = participant(conn, thread_id, side, user_id)?
    else {
        return Ok(attempt);
    };
    if rules::may_mark_unread(from_seq, last_seq).is_err() {
        return Ok(attempt);
    }
    let horizon = rules::horizon_after_mark_unread(from_seq);
    let unread = count_unread(conn, thread_id, user_id, horizon)?;
    let changed = set_horizon(
        conn,
        thread_id,
        side,
        user_id,
        (horizon_before, unread_before),
        (horizon, unread),
    )?;
    attempt.state = Some(ReadStateRow {
        last_read_seq: horizon,
        unread_count: unread,
        total: total_of(conn, user_id, side, now_ms)?,
        changed,
    });
    Ok(attempt)
}

/// The message of a thread at `seq`, as stored.
fn message_at(
    conn: &mut SqliteConnection,
    thread_id: i64,
    seq: i64,
) -> QueryResult<Option<Message>> {
    messages::table
        .filter(messages::thread_id.eq(thread_id))
        .filter(messages::seq.eq(seq))
        .select(MESSAGE_COLUMNS)
        .first(conn)
        .optional()
}

fn message_view(message: &Message) -> MessageView {
    MessageView {
        sender_id: message.sender_id,
        deleted: message.deleted(),
    }
}

/// What a thread's line shows of its newest message not deleted (rules::last_visible):
/// its seq (0: none), time, preview and sender.
type ShownMessage = (i64, Option<DateTime<Utc>>, String, i64);

/// Sets the line every participant row of a thread shows, and the thread's own copy.
fn show(conn: &mut SqliteConnection, thread_id: i64, shown: &ShownMessage) -> QueryResult<()> {
    let (seq, at, preview, sender) = shown;
    diesel::update(threads::table.find(thread_id))
        .set((
            threads::last_visible_seq.eq(seq),
            threads::last_message_at.eq(at),
            threads::last_message_preview.eq(preview),
            threads::last_message_sender_id.eq(sender),
        ))
        .execute(conn)?;
    diesel::update(thread_participants::table.filter(thread_participants::thread_id.eq(thread_id)))
        .set((
            thread_participants::last_message_at.eq(at),
            thread_participants::last_message_preview.eq(preview),
            thread_participants::last_message_sender_id.eq(sender),
        ))
        .execute(conn)?;
    Ok(())
}

/// rules::last_visible among the thread's messages before `seq`.
fn last_visible_before(
    conn: &mut SqliteConnection,
    thread_id: i64,
    seq: i64,
) -> QueryResult<ShownMessage> {
    let newest: Option<(i64, DateTime<Utc>, String, i64)> = messages::table
        .filter(messages::thread_id.eq(thread_id))
        .filter(messages::seq.lt(seq))
        .filter(messages::deleted_at.is_null())
        .order(messages::seq.desc())
        .select((
            messages::seq,
            messages::created_at,
            messages::body,
            messages::sender_id,
        ))
        .first(conn)
        .optional()?;
    Ok(
        newest.map_or((0, None, String::new(), 0), |(seq, at, body, sender)| {
            (seq, Some(at), rules::preview(&body), sender)
        }),
    )
}

fn bump_revision(conn: &mut SqliteConnection, thread_id: i64) -> QueryResult<()> {
    diesel::update(threads::table.find(thread_id))
        .set(threads::revision.eq(threads::revision + 1))
        .execute(conn)?;
    Ok(())
}

/// The participant rows of a thread: user, side, horizon, unread count.
fn participants_of(
    conn: &mut SqliteConnection,
    thread_id: i64,
) -> QueryResult<Vec<(i64, Side, i64, i64)>> {
    thread_participants::table
        .filter(thread_participants::thread_id.eq(thread_id))
        .select((
            thread_participants::user_id,
            thread_participants::side,
            thread_participants::last_read_seq,
            thread_participants::unread_count,
        ))
        .load(conn)
}

/// After a write changed a thread's messages, brings its participants along: when
/// messages of `sender` went away (their seqs: `gone`), each recipient's unread count
/// drops by those after their horizon (rules::counts_as_unread); the summaries that
/// changed, as rules::participant_changed says with `line_changed`, are bumped and
/// reported.
fn follow_messages(
    conn: &mut SqliteConnection,
    thread_id: i64,
    sender: i64,
    gone: &[i64],
    line_changed: bool,
) -> QueryResult<Vec<SummaryKey>> {
    let mut changed = Vec::new();
    for (user_id, side, horizon, unread) in participants_of(conn, thread_id)? {
        let dropped = gone
            .iter()
            .filter(|seq| rules::counts_as_unread(**seq, sender, false, user_id, horizon))
            .count() as i64;
        if dropped > 0 {
            diesel::update(thread_participants::table.find((thread_id, side.as_str())))
                .set(thread_participants::unread_count.eq(unread - dropped))
                .execute(conn)?;
        }
        if rules::participant_changed(unread, unread - dropped, line_changed) {
            changed.push(SummaryKey::new(user_id, side));
        }
    }
    bump_versions(conn, &changed)?;
    Ok(changed)
}

/// EditMessage: the checks of `rules::may_edit` on what the writer sees, then the edit
/// (and the previews, when it is the message the thread's line shows).
fn edit_message(conn: &mut SqliteConnection, edit: &MessageEdit) -> QueryResult<MessageAttempt> {
    let mut attempt = MessageAttempt {
        thread: None,
        found: None,
        message: None,
        changed_message: false,
        changed: Vec::new(),
    };
    let Some((mut facts, _)) = thread_facts(conn, edit.thread_id)? else {
        return Ok(attempt);
    };
    if rules::needs_contact_access(edit.side, facts.kind) {
        facts.contact_access = contact_access_of(conn, &facts)?;
    }
    attempt.thread = Some(facts);
    let found = message_at(conn, edit.thread_id, edit.seq)?;
    attempt.found = found.as_ref().map(message_view);
    attempt.message = found;
    let thread = facts.view();
    if rules::thread_for(edit.editor_id, edit.side, Some(thread)).is_err()
        || rules::may_edit(edit.editor_id, edit.side, &thread, attempt.found).is_err()
    {
        return Ok(attempt);
    }
    let now = now_micros();
    let edited: Message = diesel::update(
        messages::table
            .filter(messages::thread_id.eq(edit.thread_id))
            .filter(messages::seq.eq(edit.seq)),
    )
    .set((messages::body.eq(&edit.body), messages::edited_at.eq(now)))
    .returning(MESSAGE_COLUMNS)
    .get_result(conn)?;
    bump_revision(conn, edit.thread_id)?;
    let shown_seq: i64 = threads::table
        .find(edit.thread_id)
        .select(threads::last_visible_seq)
        .first(conn)?;
    if shown_seq == edit.seq {
        diesel::update(threads::table.find(edit.thread_id))
            .set(threads::last_message_preview.eq(&edit.preview))
            .execute(conn)?;
        diesel::update(
            thread_participants::table.filter(thread_participants::thread_id.eq(edit.thread_id)),
        )
        .set(thread_participants::last_message_preview.eq(&edit.preview))
        .execute(conn)?;
        attempt.changed = follow_messages(conn, edit.thread_id, edited.sender_id, &[], true)?;
    }
    attempt.message = Some(edited);
    attempt.changed_message = true;
    Ok(attempt)
}

/// DeleteMessage and RemoveMessage: the checks of `rules::may_delete` (a moderator
/// removes any message), then the tombstone, the recipient's count and the line, as
/// one transaction of the single writer.
fn delete_message(
    conn: &mut SqliteConnection,
    thread_id: i64,
    seq: i64,
    deleter: Deleter,
) -> QueryResult<MessageAttempt> {
    let mut attempt = MessageAttempt {
        thread: None,
        found: None,
        message: None,
        changed_message: false,
        changed: Vec::new(),
    };
    let Some((facts, _)) = thread_facts(conn, thread_id)? else {
        return Ok(attempt);
    };
    attempt.thread = Some(facts);
    let found = message_at(conn, thread_id, seq)?;
    attempt.found = found.as_ref().map(message_view);
    attempt.message = found;
    let allowed = match deleter {
        Deleter::Sender { user_id, side } => {
            rules::thread_for(user_id, side, Some(facts.view())).is_ok()
                && rules::may_delete(user_id, attempt.found).is_ok()
        }
        Deleter::Moderator => attempt.found.is_some(),
    };
    let Some(found) = attempt.found.filter(|found| allowed && !found.deleted) else {
        return Ok(attempt);
    };
    let tombstone: Message = diesel::update(
        messages::table
            .filter(messages::thread_id.eq(thread_id))
            .filter(messages::seq.eq(seq)),
    )
    .set((messages::body.eq(""), messages::deleted_at.eq(now_micros())))
    .returning(MESSAGE_COLUMNS)
    .get_result(conn)?;
    bump_revision(conn, thread_id)?;
    let shown_seq: i64 = threads::table
        .find(thread_id)
        .select(threads::last_visible_seq)
        .first(conn)?;
    let line_changed = shown_seq == seq;
    if line_changed {
        let fallback = last_visible_before(conn, thread_id, seq)?;
        show(conn, thread_id, &fallback)?;
    }
    attempt.changed = follow_messages(conn, thread_id, found.sender_id, &[seq], line_changed)?;
    attempt.message = Some(tombstone);
    attempt.changed_message = true;
    Ok(attempt)
}

/// MuteThread and UnmuteThread: the caller's own row, the summary change as the rules
/// see it (the line shows the mute when it is in force), and the new total.
fn set_mute(
    conn: &mut SqliteConnection,
    thread_id: i64,
    side: Side,
    user_id: i64,
    muted_until_ms: Option<i64>,
    now_ms: i64,
) -> QueryResult<MuteAttempt> {
    let Some((facts, _)) = thread_facts(conn, thread_id)? else {
        return Ok(MuteAttempt {
            thread: None,
            state: None,
        });
    };
    let Some((_, unread, before)) = participant(conn, thread_id, side, user_id)? else {
        return Ok(MuteAttempt {
            thread: Some(facts),
            state: None,
        });
    };
    if before != muted_until_ms {
        diesel::update(thread_participants::table.find((thread_id, side.as_str())))
            .set(thread_participants::muted_until_ms.eq(muted_until_ms))
            .execute(conn)?;
    }
    let shown = |until: Option<i64>| until.filter(|_| rules::is_muted(until, now_ms));
    let changed =
        rules::participant_changed(unread, unread, shown(before) != shown(muted_until_ms));
    if changed {
        bump_versions(conn, &[SummaryKey::new(user_id, side)])?;
    }
    Ok(MuteAttempt {
        thread: Some(facts),
        state: Some(MuteRow {
            muted_until_ms,
            total: total_of(conn, user_id, side, now_ms)?,
            changed,
        }),
    })
}

/// One batch of EraseUser in one thread: up to `batch` of the user's messages after
/// `after_seq` (not wiped yet) become tombstones with body and key wiped; counts and
/// the line follow as for a delete. One transaction of the single writer.
fn erase_batch(
    conn: &mut SqliteConnection,
    thread_id: i64,
    user_id: i64,
    after_seq: i64,
    batch: i64,
) -> QueryResult<ErasedBatch> {
    let wiped: Vec<(i64, bool)> = messages::table
        .filter(messages::thread_id.eq(thread_id))
        .filter(messages::seq.gt(after_seq))
        .filter(messages::sender_id.eq(user_id))
        .filter(
            messages::deleted_at
                .is_null()
                .or(messages::body.ne(""))
                .or(messages::client_message_id.is_not_null()),
        )
        .order(messages::seq)
        .limit(batch)
        .select((messages::seq, messages::deleted_at.is_null()))
        .load(conn)?;
    let Some(&(last_seq, _)) = wiped.last() else {
        return Ok(ErasedBatch {
            last_seq: after_seq,
            ..ErasedBatch::default()
        });
    };
    let first_seq = wiped[0].0;
    let now = now_micros();
    diesel::update(
        messages::table
            .filter(messages::thread_id.eq(thread_id))
            .filter(messages::sender_id.eq(user_id))
            .filter(messages::seq.between(first_seq, last_seq)),
    )
    .set((
        messages::body.eq(""),
        messages::client_message_id.eq(None::<String>),
        messages::deleted_at.eq(diesel::dsl::sql::<diesel::sql_types::Nullable<schema::Ts>>(
            "COALESCE(deleted_at, ",
        )
        .bind::<schema::Ts, _>(now)
        .sql(")")),
    ))
    .execute(conn)?;
    bump_revision(conn, thread_id)?;
    let erased: Vec<i64> = wiped
        .iter()
        .filter(|(_, visible)| *visible)
        .map(|(seq, _)| *seq)
        .collect();
    let shown_seq: i64 = threads::table
        .find(thread_id)
        .select(threads::last_visible_seq)
        .first(conn)?;
    let line_changed = erased.contains(&shown_seq);
    if line_changed {
        let fallback = last_visible_before(conn, thread_id, shown_seq)?;
        show(conn, thread_id, &fallback)?;
    }
    let changed = follow_messages(conn, thread_id, user_id, &erased, line_changed)?;
    Ok(ErasedBatch {
        erased: erased.len() as i64,
        wiped: wiped.len() as i64,
        last_seq,
        changed,
    })
}

/// The tutor's contact access to the student of a thread, as a write sees it.
fn contact_access_of(
    conn: &mut SqliteConnection,
    facts: &ThreadFacts,
) -> QueryResult<Option<ContactAccessState>> {
    contact_access::table
        .find((facts.tutor_id, facts.student_id))
        .select(contact_access::state)
        .first::<ContactAccessState>(conn)
        .optional()
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

/// The time a write stamps, to the microsecond: what PostgreSQL keeps, so a time reads
/// the same from either backend and over gRPC (nanos) and REST (micros) alike.
fn now_micros() -> DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(6)
}
