//! Unread reminders (`--unread-reminder-after`): one `chat.unread.reminder` per
//! participant and unread spell, written by the relay (see remind_unread.sql).

use chrono::{DateTime, Utc};
use diesel::sql_types::BigInt;
use diesel::{QueryResult, QueryableByName, SqliteConnection};

use super::Write;
use crate::model::{EventKind, Side};
use crate::storage::postgres::{self, committed_row};
use crate::storage::sqlite::steps;

/// Reminds up to `batch` participants with a message unread since before `due_before`.
#[derive(Debug, Clone, Copy)]
pub struct RemindUnread {
    pub due_before: DateTime<Utc>,
    pub now_ms: i64,
    pub batch: i64,
}

postgres::sql_file_statement! {
    /// The reminders of one round, in one statement (see the file).
    RemindStatement {
        due_before: DateTime<Utc> => diesel::sql_types::Timestamptz,
        now_ms: i64 => BigInt,
        batch: i64 => BigInt,
    }
    sql = include_str!("remind_unread.sql");
}

#[derive(QueryableByName)]
struct RemindedRow {
    #[diesel(sql_type = BigInt)]
    reminded: i64,
}

/// SQLite: the participants due, as the statement's `due` reads them.
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
LIMIT $3";

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
    /// How many participants were reminded.
    type Done = i64;
    const NAME: &'static str = "remind_unread";

    async fn postgres(&self, conn: &mut postgres::Conn) -> QueryResult<i64> {
        let row: RemindedRow = committed_row(
            RemindStatement {
                due_before: self.due_before,
                now_ms: self.now_ms,
                batch: self.batch,
            },
            conn,
        )
        .await?;
        Ok(row.reminded)
    }

    fn sqlite(&self, conn: &mut SqliteConnection) -> QueryResult<i64> {
        use diesel::RunQueryDsl;
        let due: Vec<DueRow> = diesel::sql_query(DUE)
            .bind::<BigInt, _>(self.now_ms)
            .bind::<diesel::sql_types::TimestamptzSqlite, _>(self.due_before)
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
        Ok(due.len() as i64)
    }
}
