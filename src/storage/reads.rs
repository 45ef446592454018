// The reads of chatd, written once and compiled once per backend: `storage/postgres.rs`
// and `storage/sqlite.rs` include this file into a `reads` module beside their `schema`
// module and their `Conn` type. Each copy is type-checked against its own backend, so a
// query that one of them cannot run fails to compile instead of failing in production.
// Writes are backend-specific (one statement on PostgreSQL, the single writer on SQLite).

use diesel::prelude::*;
use diesel::sql_types::BigInt;
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};

use super::Conn;
use super::schema::Ts;
use super::schema::{
    contact_access, event_cursors, event_sequence, events, inquiries, messages, relations, summary_versions,
    thread_participants, threads,
};
use crate::model::{
    ContactAccessState, InquiryStatus, Message, MessagesFrom, RelationStatus, Side, SummaryKey, Thread, ThreadKind,
    ThreadUnread,
};
use crate::model::EventKind;
use crate::storage::rows::{
    EventBounds, StoredEvent, Fact, Horizons, InboxCursor, InquiryTarget, LoggedChange, MessagePageRows, RelationTarget, ThreadWindow, UnreadPage,
};
use crate::storage::writes::ThreadFacts;

/// A thread as stored: the one spelling of its columns, read with `as_select()`, and by
/// name from PostgreSQL's statements.
#[derive(Debug, Clone, Queryable, Selectable, QueryableByName)]
#[diesel(table_name = threads)]
pub struct ThreadRow {
    pub thread_id: i64,
    pub kind: ThreadKind,
    pub relation_id: Option<i64>,
    pub inquiry_id: Option<i64>,
    pub tutor_id: i64,
    pub student_id: i64,
    pub is_writable: bool,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl From<ThreadRow> for Thread {
    fn from(row: ThreadRow) -> Self {
        let ThreadRow { thread_id, kind, relation_id, inquiry_id, tutor_id, student_id, is_writable, created_at } = row;
        Thread { thread_id, kind, relation_id, inquiry_id, tutor_id, student_id, is_writable, created_at }
    }
}

/// A message as stored: the one spelling of its columns, read with `as_select()`, and by
/// name from PostgreSQL's statements (which return `messages.*`, so a new column needs
/// no change there).
#[derive(Debug, Clone, Queryable, Selectable, QueryableByName)]
#[diesel(table_name = messages)]
pub struct MessageRow {
    pub message_id: i64,
    pub thread_id: i64,
    pub seq: i64,
    pub sender_id: i64,
    pub body: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub client_message_id: Option<String>,
    pub edited_at: Option<chrono::DateTime<chrono::Utc>>,
    pub deleted_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl From<MessageRow> for Message {
    fn from(row: MessageRow) -> Self {
        let MessageRow { message_id, thread_id, seq, sender_id, body, created_at, client_message_id, edited_at, deleted_at } = row;
        Message { message_id, thread_id, seq, sender_id, body, created_at, client_message_id, edited_at, deleted_at }
    }
}

/// A line of the unread summary as stored: the mute as its raw time (Unix ms), which
/// only the time of reading turns into "muted" (`UnreadRow::line`).
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = thread_participants)]
pub struct UnreadRow {
    pub thread_id: i64,
    pub kind: ThreadKind,
    pub relation_id: Option<i64>,
    pub inquiry_id: Option<i64>,
    pub tutor_id: i64,
    pub student_id: i64,
    pub unread_count: i64,
    pub last_message_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_message_preview: String,
    pub last_message_sender_id: i64,
    pub is_writable: bool,
    pub muted_until_ms: Option<i64>,
}

impl UnreadRow {
    /// The line as the summary shows it at `now_ms` (`rules::mute_shown`).
    pub fn line(self, now_ms: i64) -> ThreadUnread {
        let mute = crate::rules::mute_shown(self.muted_until_ms, now_ms);
        ThreadUnread {
            thread_id: self.thread_id,
            kind: self.kind,
            relation_id: self.relation_id,
            inquiry_id: self.inquiry_id,
            tutor_id: self.tutor_id,
            student_id: self.student_id,
            unread_count: self.unread_count,
            last_message_at: self.last_message_at,
            last_message_preview: self.last_message_preview,
            last_message_sender_id: self.last_message_sender_id,
            is_writable: self.is_writable,
            muted: mute.is_some(),
            muted_until: mute.flatten().and_then(chrono::DateTime::from_timestamp_millis),
        }
    }
}

/// `rules::counts_as_unread` for `reader` at `horizon`, as the filter of a messages
/// query: after the horizon, from someone else, not deleted. The one SQL spelling of
/// the rule in diesel (SQLite's writes and the recount read both use it).
#[diesel::dsl::auto_type(no_type_alias)]
pub fn counts_as_unread(reader: i64, horizon: i64) -> _ {
    messages::seq.gt(horizon).and(messages::sender_id.ne(reader)).and(messages::deleted_at.is_null())
}

/// rules::inbox_position, as the expression the index `thread_participants_inbox` is on.
const INBOX_POSITION: &str = "COALESCE(thread_participants.last_message_at, thread_participants.thread_created_at)";

/// Declares an SQL expression over the summary's rows that needs the time of reading:
/// its `parts` joined by that time, bound as Unix ms. It keeps a static query id (the
/// SQL is fixed, only the bound value changes), so the statement stays prepared.
macro_rules! expression_at {
    ($(#[$doc:meta])* $name:ident: $sql_type:ty = [$($part:literal),+ $(,)?]) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        struct $name {
            now_ms: i64,
        }

        impl diesel::query_builder::QueryId for $name {
            type QueryId = $name;
            const HAS_STATIC_QUERY_ID: bool = true;
        }

        impl diesel::expression::Expression for $name {
            type SqlType = $sql_type;
        }

        impl<DB> diesel::query_builder::QueryFragment<DB> for $name
        where
            DB: diesel::backend::Backend + diesel::sql_types::HasSqlType<BigInt>,
            i64: diesel::serialize::ToSql<BigInt, DB>,
        {
            fn walk_ast<'b>(&'b self, mut out: diesel::query_builder::AstPass<'_, 'b, DB>) -> QueryResult<()> {
                for (n, part) in [$($part),+].into_iter().enumerate() {
                    if n > 0 {
                        out.push_bind_param::<BigInt, _>(&self.now_ms)?;
                    }
                    out.push_sql(part);
                }
                Ok(())
            }
        }

        impl<QS> diesel::expression::SelectableExpression<QS> for $name {}
        impl<QS> diesel::expression::AppearsOnTable<QS> for $name {}
        impl diesel::expression::ValidGrouping<()> for $name {
            type IsAggregate = diesel::expression::is_aggregate::Never;
        }
    };
}

// The sums are windows over every row the WHERE clause keeps, computed before LIMIT, so
// each row of a page carries the totals of all pages. rules::is_muted is
// `muted_until_ms > now`; rules::counts_in_total leaves muted threads out of `total`.
expression_at!(
    /// `total`: unread messages of the threads not muted.
    UnmutedUnreadAt: BigInt = [
        "CAST(SUM(CASE WHEN COALESCE(thread_participants.muted_until_ms, 0) > ",
        " THEN 0 ELSE thread_participants.unread_count END) OVER () AS BIGINT)",
    ]
);
expression_at!(
    /// `muted_total`: unread messages of the muted threads.
    MutedUnreadAt: BigInt = [
        "CAST(SUM(CASE WHEN COALESCE(thread_participants.muted_until_ms, 0) > ",
        " THEN thread_participants.unread_count ELSE 0 END) OVER () AS BIGINT)",
    ]
);
expression_at!(
    /// rules::next_mute_end: the earliest mute time still ahead (not "until unmuted").
    NextMuteEndAt: diesel::sql_types::Nullable<BigInt> = [
        "MIN(CASE WHEN thread_participants.muted_until_ms > ",
        " AND thread_participants.muted_until_ms < 9223372036854775807 \
         THEN thread_participants.muted_until_ms END) OVER ()",
    ]
);

pub async fn ping(conn: &mut Conn) -> QueryResult<()> {
    conn.batch_execute("SELECT 1").await
}

/// How many threads exist (the benchmark seeds only an empty database).
pub async fn count_threads(conn: &mut Conn) -> QueryResult<i64> {
    threads::table.count().get_result(conn).await
}

pub async fn find_relation(conn: &mut Conn, id: i64) -> QueryResult<Option<Fact<RelationStatus>>> {
    relations::table
        .find(id)
        .select((relations::tutor_id, relations::student_id, relations::status, relations::version))
        .first(conn)
        .await
        .optional()
}

pub async fn find_inquiry(conn: &mut Conn, id: i64) -> QueryResult<Option<Fact<InquiryStatus>>> {
    inquiries::table
        .find(id)
        .select((inquiries::tutor_id, inquiries::student_id, inquiries::status, inquiries::version))
        .first(conn)
        .await
        .optional()
}

/// A relation, the tutor's contact access to its student, and its thread: what
/// EnsureThread needs, in one statement.
pub async fn relation_target(conn: &mut Conn, relation_id: i64) -> QueryResult<Option<RelationTarget>> {
    relations::table
        .left_join(
            contact_access::table.on(contact_access::tutor_id
                .eq(relations::tutor_id)
                .and(contact_access::student_id.eq(relations::student_id))),
        )
        .left_join(threads::table.on(threads::relation_id.eq(relations::relation_id.nullable())))
        .filter(relations::relation_id.eq(relation_id))
        .select((
            (relations::tutor_id, relations::student_id, relations::status, relations::version),
            contact_access::state.nullable(),
            Option::<ThreadRow>::as_select(),
        ))
        .first::<(Fact<RelationStatus>, Option<ContactAccessState>, Option<ThreadRow>)>(conn)
        .await
        .optional()
        .map(|found| {
            found.map(|(fact, contact_access, thread)| RelationTarget {
                fact,
                contact_access,
                thread: thread.map(Thread::from),
            })
        })
}

/// An inquiry and its thread, in one statement.
pub async fn inquiry_target(conn: &mut Conn, inquiry_id: i64) -> QueryResult<Option<InquiryTarget>> {
    inquiries::table
        .left_join(threads::table.on(threads::inquiry_id.eq(inquiries::inquiry_id.nullable())))
        .filter(inquiries::inquiry_id.eq(inquiry_id))
        .select((
            (inquiries::tutor_id, inquiries::student_id, inquiries::status, inquiries::version),
            Option::<ThreadRow>::as_select(),
        ))
        .first::<(Fact<InquiryStatus>, Option<ThreadRow>)>(conn)
        .await
        .optional()
        .map(|found| {
            found.map(|(fact, thread)| InquiryTarget {
                fact,
                thread: thread.map(Thread::from),
            })
        })
}

/// The version of a user's unread summary: 0 until it first changes.
pub async fn summary_version(conn: &mut Conn, key: SummaryKey) -> QueryResult<i64> {
    Ok(summary_versions::table
        .find((key.user_id, key.side.as_str()))
        .select(summary_versions::version)
        .first(conn)
        .await
        .optional()?
        .unwrap_or(0))
}

/// A page of the user's threads with unread messages, newest first, the user's totals
/// (muted threads apart) at `now_ms`, when the page next changes by itself (a mute
/// ending), and (for a non-empty page) the summary's version.
///
/// One range scan of the covering partial index `thread_participants_unread`, already
/// in page order; the window sums run before LIMIT, so every row carries the totals
/// over all unread threads, not only the page.
pub async fn unread_summary(conn: &mut Conn, key: SummaryKey, limit: i64, now_ms: i64) -> QueryResult<UnreadPage> {
    let side = key.side.as_str();
    // The summary's version, read in the same statement: exactly the page's version.
    let version = summary_versions::table
        .filter(summary_versions::user_id.eq(key.user_id))
        .filter(summary_versions::side.eq(side))
        .select(summary_versions::version)
        .single_value();
    // Each row: the line, then the totals, the next mute end and the version of all rows.
    type SummaryRow = (UnreadRow, i64, i64, Option<i64>, Option<i64>);
    let rows: Vec<SummaryRow> = thread_participants::table
        .filter(thread_participants::user_id.eq(key.user_id))
        .filter(thread_participants::side.eq(side))
        // rules::in_summary: a line per thread with unread messages.
        .filter(thread_participants::unread_count.gt(0))
        // rules::summary_order.
        .order((
            thread_participants::last_message_at.desc(),
            thread_participants::thread_id.desc(),
        ))
        .limit(limit)
        .select((
            UnreadRow::as_select(),
            UnmutedUnreadAt { now_ms },
            MutedUnreadAt { now_ms },
            NextMuteEndAt { now_ms },
            version,
        ))
        .load(conn)
        .await?;
    // Qualified: diesel's `QueryDsl::first` would shadow the slice method.
    let (total, muted_total, changes_at, version) = <[_]>::first(&rows)
        .map_or((0, 0, None, None), |(_, total, muted, ends, version)| (*total, *muted, *ends, Some(version.unwrap_or(0))));
    Ok(UnreadPage {
        rows: rows.into_iter().map(|(row, ..)| row.line(now_ms)).collect(),
        total,
        muted_total,
        changes_at,
        version,
    })
}

/// A page of the user's inbox: every thread of theirs, in `rules::summary_order` over
/// (`rules::inbox_position`, thread_id), from just after `after` (exclusive), each
/// line as at `now_ms` with its position for the next page's cursor.
///
/// One backward range scan of `thread_participants_inbox`: the cursor is a row-value
/// bound on the index's own expression, so a deep page costs what the first does.
pub async fn inbox_page(
    conn: &mut Conn,
    key: SummaryKey,
    after: Option<InboxCursor>,
    limit: i64,
    now_ms: i64,
) -> QueryResult<Vec<(ThreadUnread, InboxCursor)>> {
    use diesel::dsl::sql;
    let mut query = thread_participants::table
        .filter(thread_participants::user_id.eq(key.user_id))
        .filter(thread_participants::side.eq(key.side.as_str()))
        .order((sql::<Ts>(INBOX_POSITION).desc(), thread_participants::thread_id.desc()))
        .limit(limit)
        .select((UnreadRow::as_select(), sql::<Ts>(INBOX_POSITION)))
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(
            sql::<diesel::sql_types::Bool>(&format!("({INBOX_POSITION}, thread_participants.thread_id) < ("))
                .bind::<Ts, _>(after.position)
                .sql(", ")
                .bind::<BigInt, _>(after.thread_id)
                .sql(")"),
        );
    }
    let rows: Vec<(UnreadRow, chrono::DateTime<chrono::Utc>)> = query.load(conn).await?;
    Ok(rows
        .into_iter()
        .map(|(row, position)| {
            let cursor = InboxCursor {
                position,
                thread_id: row.thread_id,
            };
            (row.line(now_ms), cursor)
        })
        .collect())
}

/// The versions of many summaries in one statement, for the cache's sweep: keys never
/// changed (no row) are left out, which reads as version 0.
pub async fn summary_versions_of(conn: &mut Conn, user_ids: &[i64]) -> QueryResult<Vec<(SummaryKey, i64)>> {
    let rows: Vec<(i64, Side, i64)> = summary_versions::table
        .filter(summary_versions::user_id.eq_any(user_ids))
        .select((summary_versions::user_id, summary_versions::side, summary_versions::version))
        .load(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(user_id, side, version)| (SummaryKey::new(user_id, side), version))
        .collect())
}

/// A thread's participants and their read horizons; `None` for no such thread.
pub async fn horizons(conn: &mut Conn, thread_id: i64) -> QueryResult<Option<Horizons>> {
    let rows: Vec<(Side, i64, i64)> = thread_participants::table
        .filter(thread_participants::thread_id.eq(thread_id))
        .select((thread_participants::side, thread_participants::user_id, thread_participants::last_read_seq))
        .load(conn)
        .await?;
    let of = |wanted: Side| rows.iter().find(|(side, _, _)| *side == wanted).map(|(_, user, seq)| (*user, *seq));
    Ok(match (of(Side::Tutor), of(Side::Student)) {
        (Some((tutor_id, tutor_read_seq)), Some((student_id, student_read_seq))) => Some(Horizons {
            tutor_id,
            student_id,
            tutor_read_seq,
            student_read_seq,
        }),
        _ => None,
    })
}

/// One page of `limit` messages: before a seq (or from the newest), newest first; or
/// after a seq, oldest first.
pub async fn messages_page(
    conn: &mut Conn,
    thread_id: i64,
    from: MessagesFrom,
    limit: i64,
) -> QueryResult<MessagePageRows> {
    let mut query = messages::table
        .filter(messages::thread_id.eq(thread_id))
        .select(MessageRow::as_select())
        .limit(limit + 1)
        .into_boxed();
    query = match from {
        MessagesFrom::Newest => query.order(messages::seq.desc()),
        MessagesFrom::Before(seq) => query.filter(messages::seq.lt(seq)).order(messages::seq.desc()),
        MessagesFrom::After(seq) => query.filter(messages::seq.gt(seq)).order(messages::seq.asc()),
    };
    let mut messages: Vec<MessageRow> = query.load(conn).await?;
    let has_more = messages.len() as i64 > limit;
    messages.truncate(limit as usize);
    Ok(MessagePageRows {
        messages: messages.into_iter().map(Message::from).collect(),
        has_more,
    })
}

/// The threads a user is in, on either side, in id order (EraseUser goes through them).
pub async fn threads_of_user(conn: &mut Conn, user_id: i64) -> QueryResult<Vec<i64>> {
    threads::table
        .filter(threads::tutor_id.eq(user_id).or(threads::student_id.eq(user_id)))
        .select(threads::thread_id)
        .order(threads::thread_id)
        .load(conn)
        .await
}

/// The message a sender sent to a thread under an idempotency key, if any.
pub async fn message_by_key(
    conn: &mut Conn,
    thread_id: i64,
    sender_id: i64,
    key: &str,
) -> QueryResult<Option<Message>> {
    messages::table
        .filter(messages::thread_id.eq(thread_id))
        .filter(messages::sender_id.eq(sender_id))
        .filter(messages::client_message_id.eq(key))
        .select(MessageRow::as_select())
        .first(conn)
        .await
        .optional()
        .map(|found| found.map(Message::from))
}

/// A side's maintained unread counter, and a recount from the messages by the
/// definition in `rules.rs` (`counts_as_unread`: after the horizon, not sent by
/// them, not deleted), for checks.
pub async fn recount_unread(conn: &mut Conn, thread_id: i64, side: Side) -> QueryResult<(i64, i64)> {
    let (user_id, last_read_seq, counter): (i64, i64, i64) = thread_participants::table
        .find((thread_id, side.as_str()))
        .select((
            thread_participants::user_id,
            thread_participants::last_read_seq,
            thread_participants::unread_count,
        ))
        .first(conn)
        .await?;
    let recount: i64 = messages::table
        .filter(messages::thread_id.eq(thread_id))
        .filter(counts_as_unread(user_id, last_read_seq))
        .count()
        .get_result(conn)
        .await?;
    Ok((counter, recount))
}

// The log's reads (open windows, and the outbox's events) are a file of their own,
// compiled here, for each backend, with the reads above.
include!("log_reads.rs");
