//! MarkUnread: the reader's horizon set just before `from_seq`, one of the thread's
//! newest `rules::MARK_UNREAD_WINDOW` messages (`rules::may_mark_unread`): the one
//! write that may move a horizon back. Their count is recounted after it (at most the
//! window's messages), and their summary changes when it moved (`rules::read_changes`).

use diesel::QueryableByName;
use diesel::SqliteConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};

use super::Write;
use super::mark_read::{Read, ReadRow, ReaderState};
use crate::model::{Seq, Side, ThreadId, UserId};
use crate::rules;
use crate::storage::postgres::{self, MaybeStale, ThreadLock, fresh_row};
use crate::storage::sqlite::steps;

/// A reader's horizon to set back (or forward) to just before `from_seq`.
#[derive(Debug, Clone, Copy)]
pub struct MarkUnread {
    pub thread_id: ThreadId,
    pub side: Side,
    pub user_id: UserId,
    pub from_seq: Seq,
    /// The time totals are read at (Unix ms).
    pub now_ms: i64,
}

postgres::sql_file_statement! {
    /// MarkUnread in one statement (see the file).
    MarkUnreadStatement {
        thread_id: i64 => BigInt,
        side: &'static str => Text,
        user_id: i64 => BigInt,
        from_seq: i64 => BigInt,
        now_ms: i64 => BigInt,
        mark_unread_window: i64 => BigInt,
    }
    sql = include_str!("mark_unread.sql");
}

/// The one row MarkUnreadStatement answers: a read's row, with the thread's last seq.
#[derive(Debug, QueryableByName)]
struct MarkUnreadRow {
    #[diesel(embed)]
    read: ReadRow,
    #[diesel(sql_type = Nullable<BigInt>)]
    last_seq: Option<i64>,
}

impl MaybeStale for MarkUnreadRow {
    fn stale(&self) -> bool {
        self.read.stale()
    }
}

impl MarkUnread {
    /// The outcome from what the write saw, refusals in the rules' order: the thread
    /// (`thread_for`), then `may_mark_unread`.
    fn outcome(
        &self,
        facts: Option<super::ThreadFacts>,
        last_seq: i64,
        state: Option<ReaderState>,
    ) -> QueryResult<Read> {
        let member = rules::thread_for(self.user_id.0, self.side, super::viewed(facts));
        match (
            member,
            rules::may_mark_unread(self.from_seq.0, last_seq),
            state,
        ) {
            (Ok(_), Err(refusal), None) => Ok(Read::Refused { refusal, last_seq }),
            (Ok(_), Err(refusal), Some(_)) => Err(super::inconsistent(format!(
                "mark unread of thread {} from {} moved a horizon the rules refuse: {refusal:?}",
                self.thread_id, self.from_seq
            ))),
            _ => Ok(Read::of(self.user_id, self.side, facts, last_seq, state)),
        }
    }
}

impl Write for MarkUnread {
    type Done = Read;
    const NAME: &'static str = "mark_unread";

    async fn postgres(&self, conn: &mut postgres::Conn) -> QueryResult<Read> {
        let statement = || MarkUnreadStatement {
            thread_id: self.thread_id.0,
            side: self.side.as_str(),
            user_id: self.user_id.0,
            from_seq: self.from_seq.0,
            now_ms: self.now_ms,
            mark_unread_window: rules::MARK_UNREAD_WINDOW,
        };
        let row: MarkUnreadRow =
            fresh_row(conn, self.thread_id.0, ThreadLock::Update, statement).await?;
        self.outcome(
            row.read.thread.facts(None),
            row.last_seq.unwrap_or(0),
            row.read.state(),
        )
    }

    fn sqlite(&self, conn: &mut SqliteConnection) -> QueryResult<Read> {
        let (thread_id, user_id) = (self.thread_id.0, self.user_id.0);
        let Some((facts, last_seq)) = steps::thread_facts(conn, thread_id)? else {
            return self.outcome(None, 0, None);
        };
        let Some((horizon_before, unread_before, _)) =
            steps::participant(conn, thread_id, self.side, user_id)?
        else {
            return self.outcome(Some(facts), last_seq, None);
        };
        if rules::may_mark_unread(self.from_seq.0, last_seq).is_err() {
            return self.outcome(Some(facts), last_seq, None);
        }
        let horizon = rules::horizon_after_mark_unread(self.from_seq.0);
        let unread = steps::count_unread(conn, thread_id, user_id, horizon)?;
        let reader = (thread_id, self.side, user_id, self.now_ms);
        let state = ReaderState::moved(
            conn,
            reader,
            (horizon_before, unread_before),
            (horizon, unread),
        )?;
        self.outcome(Some(facts), last_seq, Some(state))
    }
}
