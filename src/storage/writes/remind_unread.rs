//! Unread reminders (`--unread-reminder-after`): one `chat.unread.reminder` per
//! participant and unread spell, written by the relay (see remind_unread.sql).

use chrono::{DateTime, Utc};
use diesel::sql_types::BigInt;
use diesel::{QueryResult, QueryableByName, SqliteConnection};

use super::Write;
use crate::model::{EventKind, Side};
use crate::storage::postgres::{self, committed_row};
use crate::storage::sqlite::steps;

/// Reminds up to `batch` participants with a message unread since before `due_before`,
/// the first due in key order after `after` (a round goes on where the last stopped)
/// in threads up to `through_thread_id` (a round reads a window, however few are due).
#[derive(Debug, Clone, Copy)]
pub struct RemindUnread {
    pub due_before: DateTime<Utc>,
    pub now_ms: i64,
    pub batch: i64,
    pub after: ParticipantKey,
    pub through_thread_id: i64,
}

/// A participant's key, `(thread_id, side)`, the order reminders go in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParticipantKey {
    pub thread_id: i64,
    pub side: &'static str,
}

impl ParticipantKey {
    /// Before every participant of thread `thread_id` (and of every thread after it).
    pub fn before_thread(thread_id: i64) -> Self {
        Self {
            thread_id,
            side: "",
        }
    }
}

/// What a round did: how many it reminded, the last of them (in key order), and whether
/// a thread lies beyond its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reminded {
    pub count: i64,
    pub last: Option<ParticipantKey>,
    pub beyond: bool,
}

postgres::sql_file_statement! {
    /// The reminders of one round, in one statement (see the file).
    RemindStatement {
        due_before: DateTime<Utc> => diesel::sql_types::Timestamptz,
        now_ms: i64 => BigInt,
        batch: i64 => BigInt,
        after_thread_id: i64 => BigInt,
        after_side: &'static str => diesel::sql_types::Text,
        through_thread_id: i64 => BigInt,
    }
    sql = include_str!("remind_unread.sql");
}

#[derive(QueryableByName)]
struct RemindedRow {
    #[diesel(sql_type = BigInt)]
    reminded: i64,
    #[diesel(sql_type = diesel::sql_types::Nullable<BigInt>)]
    last_thread_id: Option<i64>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    last_side: Option<Side>,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    beyond: bool,
}

/// SQLite: the participants due (`rules::reminder_due`), as the statement's `due` reads them.
/// SQLite numbers `$n` parameters in the order they appear, so they are numbered so.
const DUE: &str = "\
SELECT p.thread_id, p.side, p.user_id, p.unread_count, p.last_read_seq,
       (SELECT MIN(m.seq) FROM messages m
        WHERE m.thread_id = p.thread_id AND m.seq > p.last_read_seq
          AND m.sender_id <> p.user_id AND m.deleted_at IS NULL) AS oldest_seq
FROM thread_participants p
WHERE p.unread_count > 0
  AND COALESCE(p.muted_until_ms, 0) <= $1
  AND (p.reminded_read_seq IS NULL OR p.reminded_read_seq <> p.last_read_seq)
  AND EXISTS (
      SELECT 1 FROM messages m
      WHERE m.thread_id = p.thread_id AND m.seq > p.last_read_seq
        AND m.sender_id <> p.user_id AND m.deleted_at IS NULL
        AND m.created_at <= $2
  )
  AND (p.thread_id, p.side) > ($3, $4)
  AND p.thread_id <= $5
ORDER BY p.thread_id, p.side
LIMIT $6";

/// SQLite: whether a thread lies beyond the round's window.
const BEYOND: &str =
    "SELECT EXISTS (SELECT 1 FROM thread_participants WHERE thread_id > $1) AS beyond";

#[derive(QueryableByName)]
struct BeyondRow {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    beyond: bool,
}

const MARK_REMINDED: &str =
    "UPDATE thread_participants SET reminded_read_seq = $1 WHERE thread_id = $2 AND side = $3";

#[derive(QueryableByName)]
struct DueRow {
    #[diesel(sql_type = BigInt)]
    thread_id: i64,
    #[diesel(sql_type = diesel::sql_types::Text)]
    side: Side,
    #[diesel(sql_type = BigInt)]
    user_id: i64,
    #[diesel(sql_type = BigInt)]
    unread_count: i64,
    #[diesel(sql_type = BigInt)]
    last_read_seq: i64,
    #[diesel(sql_type = diesel::sql_types::Nullable<BigInt>)]
    oldest_seq: Option<i64>,
}

impl Write for RemindUnread {
    type Done = Reminded;
    const NAME: &'static str = "remind_unread";

    async fn postgres(&self, conn: &mut postgres::Conn) -> QueryResult<Reminded> {
        let row: RemindedRow = committed_row(
            RemindStatement {
                due_before: self.due_before,
                now_ms: self.now_ms,
                batch: self.batch,
                after_thread_id: self.after.thread_id,
                after_side: self.after.side,
                through_thread_id: self.through_thread_id,
            },
            conn,
        )
        .await?;
        let last = row.last_thread_id.zip(row.last_side);
        Ok(Reminded {
            count: row.reminded,
            last: last.map(|(thread_id, side)| ParticipantKey {
                thread_id,
                side: side.as_str(),
            }),
            beyond: row.beyond,
        })
    }

    fn sqlite(&self, conn: &mut SqliteConnection) -> QueryResult<Reminded> {
        use diesel::RunQueryDsl;
        let due: Vec<DueRow> = diesel::sql_query(DUE)
            .bind::<BigInt, _>(self.now_ms)
            .bind::<diesel::sql_types::TimestamptzSqlite, _>(self.due_before)
            .bind::<BigInt, _>(self.after.thread_id)
            .bind::<diesel::sql_types::Text, _>(self.after.side)
            .bind::<BigInt, _>(self.through_thread_id)
            .bind::<BigInt, _>(self.batch)
            .load(conn)?;
        for row in &due {
            diesel::sql_query(MARK_REMINDED)
                .bind::<BigInt, _>(row.last_read_seq)
                .bind::<BigInt, _>(row.thread_id)
                .bind::<diesel::sql_types::Text, _>(row.side.as_str())
                .execute(conn)?;
            steps::note(
                conn,
                steps::Note {
                    side: Some(row.side),
                    user_id: Some(row.user_id),
                    seq: row.oldest_seq.unwrap_or_default(),
                    amount: Some(row.unread_count),
                    ..steps::Note::of_thread(EventKind::UnreadReminder, row.thread_id)
                },
            )?;
        }
        let beyond: BeyondRow = diesel::sql_query(BEYOND)
            .bind::<BigInt, _>(self.through_thread_id)
            .get_result(conn)?;
        Ok(Reminded {
            count: due.len() as i64,
            last: due.last().map(|row| ParticipantKey {
                thread_id: row.thread_id,
                side: row.side.as_str(),
            }),
            beyond: beyond.beyond,
        })
    }
}
