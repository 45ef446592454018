//! MarkRead: the reader's horizon moves forward (`rules::horizon_after_mark_read`:
//! to the requested seq, clamped to the last, never back), their unread count becomes
//! what `rules::counts_as_unread` counts after it, and their summary changes when that
//! count did (`rules::read_changes`). Answers their new total (muted threads left out).

use diesel::QueryableByName;
use diesel::SqliteConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Nullable, Text};

use super::{ThreadFacts, Write, viewed};
use crate::model::{Seq, Side, ThreadId, UserId};
use crate::rules::{self, Refusal};
use crate::storage::postgres::{self, MaybeStale, ThreadColumns, ThreadLock, fresh_row};
use crate::storage::sqlite::steps;

/// A reader's horizon to move forward.
#[derive(Debug, Clone, Copy)]
pub struct MarkRead {
    pub thread_id: ThreadId,
    pub side: Side,
    pub user_id: UserId,
    /// `None`: up to the thread's last message.
    pub up_to_seq: Option<Seq>,
    /// The time totals are read at (Unix ms): a mute ended by then counts again.
    pub now_ms: i64,
}

/// A reader's state after MarkRead or MarkUnread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReaderState {
    pub last_read_seq: i64,
    pub unread_count: i64,
    /// The reader's total over every thread not muted.
    pub total: i64,
    /// Whether the reader's summary changed (their unread count here did).
    pub changed: bool,
    /// The thread's version after this write, when the horizon moved (`rules::read_logs`).
    pub version: Option<i64>,
}

/// What MarkRead (and MarkUnread) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    Moved(ReaderState),
    /// `last_seq`: the thread's, which MarkUnread's refusals are about.
    Refused {
        refusal: Refusal,
        last_seq: i64,
    },
}

impl Read {
    /// The outcome from what a write saw: the thread and, when the reader is its
    /// participant and the rules let it, their new state.
    pub(super) fn of(
        user_id: UserId,
        side: Side,
        facts: Option<ThreadFacts>,
        last_seq: i64,
        state: Option<ReaderState>,
    ) -> Read {
        let refused = |refusal| Read::Refused { refusal, last_seq };
        match (rules::thread_for(user_id.0, side, viewed(facts)), state) {
            (Err(refusal), _) => refused(refusal),
            (Ok(_), Some(state)) => Read::Moved(state),
            // Only the participant row's absence leaves no state past thread_for: a
            // thread whose participant rows are gone does not exist for anyone.
            (Ok(_), None) => refused(Refusal::ThreadNotFound),
        }
    }
}

postgres::sql_file_statement! {
    /// MarkRead in one statement (see the file).
    MarkReadStatement {
        thread_id: i64 => BigInt,
        side: &'static str => Text,
        user_id: i64 => BigInt,
        up_to_seq: Option<i64> => Nullable<BigInt>,
        now_ms: i64 => BigInt,
    }
    sql = include_str!("mark_read.sql");
}

/// The one row MarkReadStatement and MarkUnreadStatement answer.
#[derive(Debug, QueryableByName)]
pub(super) struct ReadRow {
    #[diesel(embed)]
    pub(super) thread: ThreadColumns,
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
    #[diesel(sql_type = Nullable<BigInt>)]
    thread_version: Option<i64>,
}

impl ReaderState {
    /// SQLite: sets a reader's horizon and unread count (`reader`: thread, side, user,
    /// and the time totals are read at), bumps their summary when the count moved
    /// (`rules::read_changes`), logs the horizon when it moved (`rules::read_logs`), and
    /// reads their new total.
    pub(super) fn moved(
        conn: &mut SqliteConnection,
        (thread_id, side, user_id, now_ms): (i64, Side, i64, i64),
        before: (i64, i64),
        (horizon, unread): (i64, i64),
    ) -> QueryResult<ReaderState> {
        let changed =
            steps::set_horizon(conn, thread_id, side, user_id, before, (horizon, unread))?;
        let version = match rules::read_logs(before.0, horizon) {
            Some(kind) => Some(steps::log(
                conn,
                thread_id,
                &[steps::LogEntry::horizon(kind, side, horizon, unread)],
            )?),
            None => None,
        };
        Ok(ReaderState {
            last_read_seq: horizon,
            unread_count: unread,
            total: steps::total_of(conn, user_id, side, now_ms)?,
            changed,
            version,
        })
    }
}

impl ReadRow {
    pub(super) fn state(&self) -> Option<ReaderState> {
        Some(ReaderState {
            last_read_seq: self.horizon?,
            unread_count: self.unread?,
            total: self.total,
            changed: self.changed,
            version: self.thread_version,
        })
    }
}

impl MaybeStale for ReadRow {
    fn stale(&self) -> bool {
        self.stale
    }
}

impl Write for MarkRead {
    type Done = Read;
    const NAME: &'static str = "mark_read";

    async fn postgres(&self, conn: &mut postgres::Conn) -> QueryResult<Read> {
        let statement = || MarkReadStatement {
            thread_id: self.thread_id.0,
            side: self.side.as_str(),
            user_id: self.user_id.0,
            up_to_seq: self.up_to_seq.map(|seq| seq.0),
            now_ms: self.now_ms,
        };
        let row: ReadRow = fresh_row(conn, self.thread_id.0, ThreadLock::Update, statement).await?;
        Ok(Read::of(
            self.user_id,
            self.side,
            row.thread.facts(None),
            0,
            row.state(),
        ))
    }

    fn sqlite(&self, conn: &mut SqliteConnection) -> QueryResult<Read> {
        let (thread_id, user_id) = (self.thread_id.0, self.user_id.0);
        let Some((facts, last_seq)) = steps::thread_facts(conn, thread_id)? else {
            return Ok(Read::of(self.user_id, self.side, None, 0, None));
        };
        let Some((horizon_before, unread_before, _)) =
            steps::participant(conn, thread_id, self.side, user_id)?
        else {
            return Ok(Read::of(
                self.user_id,
                self.side,
                Some(facts),
                last_seq,
                None,
            ));
        };
        let horizon = rules::horizon_after_mark_read(
            horizon_before,
            self.up_to_seq.map(|seq| seq.0),
            last_seq,
        );
        let unread = match horizon >= last_seq {
            true => 0,
            false => steps::count_unread(conn, thread_id, user_id, horizon)?,
        };
        let reader = (thread_id, self.side, user_id, self.now_ms);
        let state = ReaderState::moved(
            conn,
            reader,
            (horizon_before, unread_before),
            (horizon, unread),
        )?;
        Ok(Read::of(
            self.user_id,
            self.side,
            Some(facts),
            last_seq,
            Some(state),
        ))
    }
}
