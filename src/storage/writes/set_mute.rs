//! MuteThread and UnmuteThread: the caller's mute of a thread, on their own participant
//! row. Muting changes no count; the caller's summary changes when the thread has a
//! line there and its mute shows differently (`rules::mute_changes`). Answers their new
//! total (`rules::counts_in_total`).

use diesel::QueryableByName;
use diesel::SqliteConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Nullable, Text};

use super::{Write, viewed};
use crate::model::{EventKind, Side, SummaryKey, ThreadId, UserId};
use crate::rules::{self, Refusal};
use crate::storage::postgres::{self, ThreadColumns, committed_row};
use crate::storage::sqlite::schema::thread_participants;
use crate::storage::sqlite::steps;

/// A participant's mute to set: until a time (Unix ms, or `rules::MUTED_FOREVER_MS`),
/// or `None` to unmute.
#[derive(Debug, Clone, Copy)]
pub struct SetMute {
    pub thread_id: ThreadId,
    pub side: Side,
    pub user_id: UserId,
    pub muted_until_ms: Option<i64>,
    /// The time the mute and totals are read at (Unix ms).
    pub now_ms: i64,
}

/// A participant's mute as the write left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MuteRow {
    pub muted_until_ms: Option<i64>,
    /// The participant's new total (threads not muted).
    pub total: i64,
    /// Whether their summary changed.
    pub changed: bool,
}

/// What a mute or unmute did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Muted {
    Set(MuteRow),
    Refused(Refusal),
}

postgres::sql_file_statement! {
    /// MuteThread and UnmuteThread in one statement (see the file).
    MuteStatement {
        thread_id: i64 => BigInt,
        side: &'static str => Text,
        user_id: i64 => BigInt,
        muted_until_ms: Option<i64> => Nullable<BigInt>,
        now_ms: i64 => BigInt,
    }
    sql = include_str!("set_mute.sql");
}

/// The one row MuteStatement answers.
#[derive(Debug, QueryableByName)]
struct MuteStatementRow {
    #[diesel(embed)]
    thread: ThreadColumns,
    #[diesel(sql_type = Bool)]
    member: bool,
    #[diesel(sql_type = BigInt)]
    total: i64,
    #[diesel(sql_type = Bool)]
    changed: bool,
}

impl SetMute {
    fn outcome(&self, thread: Option<super::ThreadFacts>, state: Option<MuteRow>) -> Muted {
        match (
            rules::thread_for(self.user_id.0, self.side, viewed(thread)),
            state,
        ) {
            (Err(refusal), _) => Muted::Refused(refusal),
            (Ok(_), Some(state)) => Muted::Set(state),
            (Ok(_), None) => Muted::Refused(Refusal::ThreadNotFound),
        }
    }
}

impl Write for SetMute {
    type Done = Muted;
    const NAME: &'static str = "set_mute";

    async fn postgres(&self, conn: &mut postgres::Conn) -> QueryResult<Muted> {
        let statement = MuteStatement {
            thread_id: self.thread_id.0,
            side: self.side.as_str(),
            user_id: self.user_id.0,
            muted_until_ms: self.muted_until_ms,
            now_ms: self.now_ms,
        };
        let row: MuteStatementRow = committed_row(statement, conn).await?;
        let state = row.member.then_some(MuteRow {
            muted_until_ms: self.muted_until_ms,
            total: row.total,
            changed: row.changed,
        });
        Ok(self.outcome(row.thread.facts(None), state))
    }

    fn sqlite(&self, conn: &mut SqliteConnection) -> QueryResult<Muted> {
        let (thread_id, user_id) = (self.thread_id.0, self.user_id.0);
        let Some((facts, _)) = steps::thread_facts(conn, thread_id)? else {
            return Ok(self.outcome(None, None));
        };
        let Some((_, unread, before)) = steps::participant(conn, thread_id, self.side, user_id)?
        else {
            return Ok(self.outcome(Some(facts), None));
        };
        if before != self.muted_until_ms {
            diesel::update(thread_participants::table.find((thread_id, self.side.as_str())))
                .set(thread_participants::muted_until_ms.eq(self.muted_until_ms))
                .execute(conn)?;
            let kind = match self.muted_until_ms {
                Some(_) => EventKind::ThreadMuted,
                None => EventKind::ThreadUnmuted,
            };
            steps::note(
                conn,
                steps::Note {
                    side: Some(self.side),
                    user_id: Some(user_id),
                    amount: self.muted_until_ms,
                    ..steps::Note::of_thread(kind, thread_id)
                },
            )?;
        }
        let changed = rules::mute_changes(unread, before, self.muted_until_ms, self.now_ms);
        if changed {
            steps::bump_versions(conn, &[SummaryKey::new(user_id, self.side)])?;
        }
        let state = MuteRow {
            muted_until_ms: self.muted_until_ms,
            total: steps::total_of(conn, user_id, self.side, self.now_ms)?,
            changed,
        };
        Ok(self.outcome(Some(facts), Some(state)))
    }
}
