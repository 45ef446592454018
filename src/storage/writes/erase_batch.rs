//! One bounded transaction of EraseUser: up to `batch` of a user's messages in one
//! thread, after `after_seq`, become tombstones with body and key wiped; counts and the
//! thread's line follow as for DeleteMessage. Batches keep other writes flowing while a
//! user with many messages is erased, and what one committed stays erased.

use diesel::QueryableByName;
use diesel::SqliteConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Nullable};

use super::Write;
use crate::model::{SummaryKey, ThreadId, UserId};
use crate::rules;
use crate::storage::postgres::{self, ChangedSummaries, ThreadLock, row_under_thread_lock};
use crate::storage::sqlite::schema::{self, messages, threads};
use crate::storage::sqlite::steps;

/// One batch of an erasure.
#[derive(Debug, Clone, Copy)]
pub struct EraseBatch {
    pub thread_id: ThreadId,
    pub user_id: UserId,
    pub after_seq: i64,
    pub batch: i64,
}

/// What one batch of an erasure did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ErasedBatch {
    /// Messages this batch turned into tombstones (they were not deleted before).
    pub erased: i64,
    /// Messages the batch wiped (tombstones before included); fewer than the batch's
    /// limit when the thread has no more.
    pub wiped: i64,
    /// The highest seq the batch reached: the next batch starts after it.
    pub last_seq: i64,
    /// The summaries this batch changed.
    pub changed: Vec<SummaryKey>,
    /// The thread's version after this batch, when it logged a message erased.
    pub version: Option<i64>,
}

postgres::sql_file_statement! {
    /// One batch of EraseUser (see the file).
    EraseBatchStatement {
        thread_id: i64 => BigInt,
        user_id: i64 => BigInt,
        after_seq: i64 => BigInt,
        batch: i64 => BigInt,
        preview_chars: i32 => Integer,
    }
    sql = include_str!("erase_batch.sql");
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
    #[diesel(embed)]
    changed: ChangedSummaries,
    #[diesel(sql_type = Nullable<BigInt>)]
    thread_version: Option<i64>,
}

impl Write for EraseBatch {
    type Done = ErasedBatch;
    const NAME: &'static str = "erase_batch";

    /// In a transaction of its own that takes the thread's row first (the lock order),
    /// so its snapshot is current when the statement reads the messages.
    async fn postgres(&self, conn: &mut postgres::Conn) -> QueryResult<ErasedBatch> {
        let statement = EraseBatchStatement {
            thread_id: self.thread_id.0,
            user_id: self.user_id.0,
            after_seq: self.after_seq,
            batch: self.batch,
            preview_chars: rules::PREVIEW_CHARS as i32,
        };
        let row: EraseRow =
            row_under_thread_lock(conn, self.thread_id.0, ThreadLock::Update, statement).await?;
        Ok(ErasedBatch {
            erased: row.erased,
            wiped: row.wiped,
            last_seq: row.last_seq,
            changed: row.changed.keys()?,
            version: row.thread_version.filter(|_| row.wiped > 0),
        })
    }

    fn sqlite(&self, conn: &mut SqliteConnection) -> QueryResult<ErasedBatch> {
        let (thread_id, user_id) = (self.thread_id.0, self.user_id.0);
        let wiped: Vec<(i64, bool)> = messages::table
            .filter(messages::thread_id.eq(thread_id))
            .filter(messages::seq.gt(self.after_seq))
            .filter(messages::sender_id.eq(user_id))
            .filter(
                messages::deleted_at
                    .is_null()
                    .or(messages::body.ne(""))
                    .or(messages::client_message_id.is_not_null()),
            )
            .order(messages::seq)
            .limit(self.batch)
            .select((messages::seq, messages::deleted_at.is_null()))
            .load(conn)?;
        let Some(&(last_seq, _)) = wiped.last() else {
            return Ok(ErasedBatch {
                last_seq: self.after_seq,
                ..ErasedBatch::default()
            });
        };
        let first_seq = wiped[0].0;
        let now = steps::now_micros();
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
        steps::bump_revision(conn, thread_id)?;
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
            let fallback = steps::last_visible_before(conn, thread_id, shown_seq)?;
            steps::show(conn, thread_id, &fallback)?;
        }
        let changed = steps::follow_messages(conn, thread_id, user_id, &erased, line_changed)?;
        // Every message changed, tombstones wiped again too: they lose their key.
        let logged: Vec<steps::LogEntry> = wiped
            .iter()
            .map(|(seq, _)| steps::LogEntry::deleted(*seq, false))
            .collect();
        let version = match logged.is_empty() {
            true => None,
            false => Some(steps::log(conn, thread_id, &logged)?),
        };
        Ok(ErasedBatch {
            erased: erased.len() as i64,
            wiped: wiped.len() as i64,
            last_seq,
            changed,
            version,
        })
    }
}
