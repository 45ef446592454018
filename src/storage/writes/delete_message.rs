//! DeleteMessage (by its sender, `rules::may_delete`) and RemoveMessage (by a moderation
//! service, `rules::may_remove`): the message becomes a tombstone (seq, sender and
//! created_at kept, body gone); the recipient's count drops when it was unread to them
//! (`rules::counts_as_unread`), and when it was the one its thread's line showed, the
//! line falls back to the newest message left (`rules::last_visible`).

use diesel::SqliteConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Nullable, Text};

use super::edit_message::{MessageWrite, MessageWriteRow};
use super::{MessageChange, ThreadFacts, Write, viewed};
use crate::model::{Message, Seq, Side, ThreadId, UserId};
use crate::rules::{self, MessageView, Refusal};
use crate::storage::postgres::{self, ThreadLock, fresh_row};
use crate::storage::sqlite::reads::MessageRow;
use crate::storage::sqlite::schema::{messages, threads};
use crate::storage::sqlite::steps;

/// Who deletes a message: its sender (on their side), or a moderation service, which
/// may remove any message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleter {
    Sender { user_id: UserId, side: Side },
    Moderator,
}

/// A message to turn into a tombstone.
#[derive(Debug, Clone, Copy)]
pub struct DeleteMessage {
    pub thread_id: ThreadId,
    pub seq: Seq,
    pub deleter: Deleter,
}

postgres::sql_file_statement! {
    /// DeleteMessage and RemoveMessage in one statement (see the file).
    DeleteStatement {
        thread_id: i64 => BigInt,
        seq: i64 => BigInt,
        side: Option<&'static str> => Nullable<Text>,
        deleter_id: Option<i64> => Nullable<BigInt>,
        preview_chars: i32 => Integer,
    }
    sql = include_str!("delete_message.sql");
}

impl DeleteMessage {
    /// The rules' word on it, from what the write saw.
    fn allowed(
        &self,
        thread: Option<ThreadFacts>,
        found: Option<MessageView>,
    ) -> Result<(), Refusal> {
        match self.deleter {
            Deleter::Sender { user_id, side } => {
                rules::thread_for(user_id.0, side, viewed(thread))?;
                rules::may_delete(user_id.0, found)
            }
            Deleter::Moderator => {
                thread.ok_or(Refusal::ThreadNotFound)?;
                rules::may_remove(found)
            }
        }
    }
}

impl Write for DeleteMessage {
    type Done = MessageChange;
    const NAME: &'static str = "delete_message";

    async fn postgres(&self, conn: &mut postgres::Conn) -> QueryResult<MessageChange> {
        let (side, deleter_id) = match self.deleter {
            Deleter::Sender { user_id, side } => (Some(side.as_str()), Some(user_id.0)),
            Deleter::Moderator => (None, None),
        };
        let statement = || DeleteStatement {
            thread_id: self.thread_id.0,
            seq: self.seq.0,
            side,
            deleter_id,
            preview_chars: rules::PREVIEW_CHARS as i32,
        };
        let row: MessageWriteRow =
            fresh_row(conn, self.thread_id.0, ThreadLock::Update, statement).await?;
        let written = row.into_write()?;
        let allowed = self.allowed(written.thread, written.found);
        written.outcome(allowed, "delete")
    }

    fn sqlite(&self, conn: &mut SqliteConnection) -> QueryResult<MessageChange> {
        let (thread_id, seq) = (self.thread_id.0, self.seq.0);
        let Some((facts, _)) = steps::thread_facts(conn, thread_id)? else {
            return MessageWrite::default().outcome(self.allowed(None, None), "delete");
        };
        let mut written = MessageWrite::seen(conn, facts, thread_id, seq)?;
        let allowed = self.allowed(written.thread, written.found);
        let Some(found) = written
            .found
            .filter(|found| allowed.is_ok() && !found.deleted)
        else {
            return written.outcome(allowed, "delete");
        };
        let tombstone: Message = diesel::update(
            messages::table
                .filter(messages::thread_id.eq(thread_id))
                .filter(messages::seq.eq(seq)),
        )
        .set((
            messages::body.eq(""),
            messages::deleted_at.eq(steps::now_micros()),
        ))
        .returning(MessageRow::as_returning())
        .get_result::<MessageRow>(conn)?
        .into();
        steps::bump_revision(conn, thread_id)?;
        let shown_seq: i64 = threads::table
            .find(thread_id)
            .select(threads::last_visible_seq)
            .first(conn)?;
        let line_changed = shown_seq == seq;
        if line_changed {
            let fallback = steps::last_visible_before(conn, thread_id, seq)?;
            steps::show(conn, thread_id, &fallback)?;
        }
        written.changed =
            steps::follow_messages(conn, thread_id, found.sender_id, &[seq], line_changed)?;
        written.version = Some(steps::log(
            conn,
            thread_id,
            &[steps::LogEntry::deleted(
                seq,
                self.deleter == Deleter::Moderator,
            )],
        )?);
        written.message = Some(tombstone);
        written.changed_message = true;
        written.outcome(allowed, "delete")
    }
}
