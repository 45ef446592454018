//! EditMessage: a new body for one of the caller's messages, under the rules of writing
//! (`rules::may_edit`). It sets `edited_at` and changes no count, seq or time; when the
//! message is the one its thread's line shows (`rules::last_visible`), the previews
//! follow it and the summaries showing that line change (`rules::participant_changed`).

use diesel::QueryableByName;
use diesel::SqliteConnection;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Nullable, Text};

use super::{MessageChange, ThreadFacts, Write, viewed};
use crate::model::{
    ContactAccessState, EventKind, Message, Seq, Side, SummaryKey, ThreadId, UserId,
};
use crate::rules::{self, MessageView, Refusal};
use crate::storage::postgres::{self, ChangedSummaries, MaybeStale, ThreadColumns, committed_row};
use crate::storage::sqlite::reads::MessageRow;
use crate::storage::sqlite::schema::{messages, thread_participants, threads};
use crate::storage::sqlite::steps;

/// A new body for a message.
#[derive(Debug, Clone)]
pub struct EditMessage {
    pub thread_id: ThreadId,
    pub seq: Seq,
    pub side: Side,
    pub editor_id: UserId,
    pub body: String,
    /// The start of the body the summary shows (`rules::preview`).
    pub preview: String,
}

postgres::sql_file_statement! {
    /// EditMessage in one statement (see the file).
    EditStatement {
        thread_id: i64 => BigInt,
        seq: i64 => BigInt,
        side: &'static str => Text,
        editor_id: i64 => BigInt,
        body: String => Text,
        preview: String => Text,
        unlocking: Vec<&'static str> => Array<Text>,
    }
    sql = include_str!("edit_message.sql");
}

/// The one row EditStatement and DeleteStatement answer.
#[derive(Debug, QueryableByName)]
pub(super) struct MessageWriteRow {
    #[diesel(embed)]
    thread: ThreadColumns,
    #[diesel(sql_type = Nullable<Text>)]
    contact_access: Option<ContactAccessState>,
    #[diesel(sql_type = Nullable<BigInt>)]
    found_sender_id: Option<i64>,
    #[diesel(sql_type = Nullable<Bool>)]
    found_deleted: Option<bool>,
    #[diesel(sql_type = Bool)]
    changed_message: bool,
    #[diesel(embed)]
    changed: ChangedSummaries,
    #[diesel(sql_type = Bool)]
    stale: bool,
    #[diesel(sql_type = Nullable<BigInt>)]
    thread_version: Option<i64>,
    #[diesel(embed)]
    message: Option<postgres::reads::MessageRow>,
}

/// What a write to one message saw and did, as both backends report it.
#[derive(Default)]
pub(super) struct MessageWrite {
    pub thread: Option<ThreadFacts>,
    /// The message as the write found it (`None`: no message with that seq).
    pub found: Option<MessageView>,
    /// The message as the write leaves it.
    pub message: Option<Message>,
    /// Whether this write changed it.
    pub changed_message: bool,
    pub changed: Vec<SummaryKey>,
    /// The thread's version after this write logged its change.
    pub version: Option<i64>,
}

impl MessageWriteRow {
    pub(super) fn into_write(self) -> QueryResult<MessageWrite> {
        let found = match (self.found_sender_id, self.found_deleted) {
            (Some(sender_id), Some(deleted)) => Some(MessageView { sender_id, deleted }),
            _ => None,
        };
        Ok(MessageWrite {
            thread: self.thread.facts(self.contact_access),
            found,
            message: self.message.map(Message::from),
            changed_message: self.changed_message,
            changed: self.changed.keys()?,
            version: self.thread_version,
        })
    }
}

impl MaybeStale for MessageWriteRow {
    fn stale(&self) -> bool {
        self.stale
    }
}

impl MessageWrite {
    /// SQLite: what a write to `seq` of a thread finds, with the thread as `thread` saw it.
    pub(super) fn seen(
        conn: &mut SqliteConnection,
        thread: ThreadFacts,
        thread_id: i64,
        seq: i64,
    ) -> QueryResult<MessageWrite> {
        let found = steps::message_at(conn, thread_id, seq)?;
        Ok(MessageWrite {
            thread: Some(thread),
            found: found.as_ref().map(steps::message_view),
            message: found,
            ..MessageWrite::default()
        })
    }

    /// What the write did, given what the rules say of it (`allowed`, read from what it
    /// saw). A change the rules refuse is a bug, never answered as a refusal.
    pub(super) fn outcome(
        self,
        allowed: Result<(), Refusal>,
        what: &str,
    ) -> QueryResult<MessageChange> {
        let student_id = self.thread.map_or(0, |thread| thread.student_id);
        match (allowed, self.changed_message, self.message, self.version) {
            (Err(refusal), false, _, _) => Ok(MessageChange::Refused {
                refusal,
                student_id,
            }),
            (Ok(()), true, Some(message), Some(version)) => Ok(MessageChange::Written {
                message,
                changed: self.changed,
                version,
            }),
            (Ok(()), false, Some(message), _) if message.deleted() => {
                Ok(MessageChange::Unchanged(message))
            }
            (allowed, changed, message, version) => Err(super::inconsistent(format!(
                "{what}: the rules say {allowed:?}, storage changed it: {changed}, answered \
                 {message:?}, logged at version {version:?}"
            ))),
        }
    }
}

impl EditMessage {
    fn allowed(
        &self,
        thread: Option<ThreadFacts>,
        found: Option<MessageView>,
    ) -> Result<(), Refusal> {
        let thread = rules::thread_for(self.editor_id.0, self.side, viewed(thread))?;
        rules::may_edit(self.editor_id.0, self.side, &thread, found)
    }
}

impl Write for EditMessage {
    type Done = MessageChange;
    const NAME: &'static str = "edit_message";

    async fn postgres(&self, conn: &mut postgres::Conn) -> QueryResult<MessageChange> {
        let statement = EditStatement {
            thread_id: self.thread_id.0,
            seq: self.seq.0,
            side: self.side.as_str(),
            editor_id: self.editor_id.0,
            body: self.body.clone(),
            preview: self.preview.clone(),
            unlocking: rules::unlocking_states()
                .iter()
                .map(|state| state.as_str())
                .collect(),
        };
        let row: MessageWriteRow = committed_row(statement, conn).await?;
        let written = row.into_write()?;
        let allowed = self.allowed(written.thread, written.found);
        written.outcome(allowed, "edit")
    }

    fn sqlite(&self, conn: &mut SqliteConnection) -> QueryResult<MessageChange> {
        let (thread_id, seq) = (self.thread_id.0, self.seq.0);
        let Some((mut facts, _)) = steps::thread_facts(conn, thread_id)? else {
            return MessageWrite::default().outcome(self.allowed(None, None), "edit");
        };
        if rules::needs_contact_access(self.side, facts.kind) {
            facts.contact_access = steps::contact_access_of(conn, &facts)?;
        }
        let mut written = MessageWrite::seen(conn, facts, thread_id, seq)?;
        let allowed = self.allowed(written.thread, written.found);
        if allowed.is_err() {
            return written.outcome(allowed, "edit");
        }
        let now = steps::now_micros();
        let edited: Message = diesel::update(
            messages::table
                .filter(messages::thread_id.eq(thread_id))
                .filter(messages::seq.eq(seq)),
        )
        .set((messages::body.eq(&self.body), messages::edited_at.eq(now)))
        .returning(MessageRow::as_returning())
        .get_result::<MessageRow>(conn)?
        .into();
        steps::bump_revision(conn, thread_id)?;
        let (shown_seq, shown_preview): (i64, String) = threads::table
            .find(thread_id)
            .select((threads::last_visible_seq, threads::last_message_preview))
            .first(conn)?;
        if shown_seq == seq && shown_preview != self.preview {
            diesel::update(threads::table.find(thread_id))
                .set(threads::last_message_preview.eq(&self.preview))
                .execute(conn)?;
            diesel::update(
                thread_participants::table.filter(thread_participants::thread_id.eq(thread_id)),
            )
            .set(thread_participants::last_message_preview.eq(&self.preview))
            .execute(conn)?;
            written.changed = steps::follow_messages(conn, thread_id, edited.sender_id, &[], true)?;
        }
        written.version = Some(steps::log(
            conn,
            thread_id,
            &[steps::LogEntry::message(EventKind::MessageEdited, seq)],
        )?);
        written.message = Some(edited);
        written.changed_message = true;
        written.outcome(allowed, "edit")
    }
}
