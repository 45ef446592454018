//! Every write chatd makes, one file each: the request, what the write did, the
//! PostgreSQL call (beside its `.sql` file) and the SQLite writer's function, under one
//! signature both backends implement (`Write`). Changing a write is one directory.
//!
//! A write decides under its locks and says what it did: appended, replayed, changed
//! nothing, or refused by which rule (`rules::Refusal`), read from what it saw under
//! those locks. The domain turns a refusal into the error clients see; it never refuses
//! what storage wrote.

use std::future::Future;

use diesel::{QueryResult, SqliteConnection};

use crate::model::{ContactAccessState, Message, SummaryKey, ThreadKind};
use crate::rules::{Participants, Refusal, ThreadView};

pub mod create_thread;
pub mod delete_message;
pub mod edit_message;
pub mod erase_batch;
pub mod mark_read;
pub mod mark_unread;
pub mod outbox;
pub mod remind_unread;
pub mod send_message;
pub mod set_mute;
pub mod stream_tickets;
pub mod upsert_fact;

/// One write, stated once: both backends run the same request and answer the same
/// outcome. PostgreSQL runs it on a pooled connection (again after a conflict with
/// another transaction: it must leave nothing behind when it fails); SQLite's single
/// writer runs it inside a transaction of its own (again, alone, when another write of
/// its group failed).
pub trait Write: Clone + Send + Sync + 'static {
    /// What the write did.
    type Done: Send + 'static;

    /// The operation's name, for traces (`db.operation.name`).
    const NAME: &'static str;

    /// Whether it may append to the log (the outbox's sequencer is woken after it).
    const LOGS: bool = true;

    /// PostgreSQL: one statement (or a short transaction), committed before it answers.
    fn postgres<'a>(
        &'a self,
        conn: &'a mut super::postgres::Conn,
    ) -> impl Future<Output = QueryResult<Self::Done>> + Send + 'a;

    /// SQLite: the writer's statements, inside its transaction.
    fn sqlite(&self, conn: &mut SqliteConnection) -> QueryResult<Self::Done>;
}

/// What a write to one message did (EditMessage, DeleteMessage, RemoveMessage).
#[derive(Debug, Clone, PartialEq)]
pub enum MessageChange {
    /// Changed by this write, which changed these summaries and left the thread's log
    /// at `version`.
    Written {
        message: Message,
        changed: Vec<SummaryKey>,
        version: i64,
    },
    /// Allowed, and nothing to do: a tombstone deleted again answers as it is.
    Unchanged(Message),
    /// The rules refused it, reading the thread and message under their locks
    /// (`student_id` names the student a locked contact access is about).
    Refused { refusal: Refusal, student_id: i64 },
}

/// Where a write left a thread's log: the thread, and its version after the write
/// (what watchers of the thread are told).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Logged {
    pub thread_id: i64,
    pub version: i64,
}

impl Logged {
    pub fn at(thread_id: crate::model::ThreadId, version: i64) -> Self {
        Self {
            thread_id: thread_id.0,
            version,
        }
    }
}

/// What a thread looked like to a write, under its lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadFacts {
    pub kind: ThreadKind,
    pub tutor_id: i64,
    pub student_id: i64,
    pub is_writable: bool,
    /// The tutor's contact access to the student, read (and locked) only when the
    /// writer is the tutor of a contact thread.
    pub contact_access: Option<ContactAccessState>,
}

impl ThreadFacts {
    /// The thread as the rules read it.
    pub fn view(&self) -> ThreadView {
        ThreadView {
            kind: self.kind,
            participants: Participants {
                tutor_id: self.tutor_id,
                student_id: self.student_id,
            },
            is_writable: self.is_writable,
            contact_access: self.contact_access,
        }
    }
}

/// A write whose statement did what the rules, read from the same statement, say it
/// should not have: a bug in the SQL or the rules, never the client's doing. It is an
/// internal error (logged, and INTERNAL to the client), never answered as a refusal of
/// what may have been committed.
pub fn inconsistent(what: String) -> diesel::result::Error {
    diesel::result::Error::QueryBuilderError(
        format!("storage and the rules disagree: {what}").into(),
    )
}

/// `Some(facts)` as the rules' `Option<ThreadView>`.
pub fn viewed(facts: Option<ThreadFacts>) -> Option<ThreadView> {
    facts.map(|facts| facts.view())
}

#[cfg(test)]
mod tests {
    use crate::storage::postgres::{Piece, split_named};

    /// Every PostgreSQL statement of the writes, with the parameters its struct binds.
    fn statements() -> [(&'static str, &'static [&'static str]); 9] {
        use super::*;
        [
            (
                send_message::SendStatement::FILE,
                send_message::SendStatement::PARAMS,
            ),
            (
                mark_read::MarkReadStatement::FILE,
                mark_read::MarkReadStatement::PARAMS,
            ),
            (
                mark_unread::MarkUnreadStatement::FILE,
                mark_unread::MarkUnreadStatement::PARAMS,
            ),
            (
                edit_message::EditStatement::FILE,
                edit_message::EditStatement::PARAMS,
            ),
            (
                delete_message::DeleteStatement::FILE,
                delete_message::DeleteStatement::PARAMS,
            ),
            (
                set_mute::MuteStatement::FILE,
                set_mute::MuteStatement::PARAMS,
            ),
            (
                erase_batch::EraseBatchStatement::FILE,
                erase_batch::EraseBatchStatement::PARAMS,
            ),
            (
                create_thread::CreateThreadStatement::FILE,
                create_thread::CreateThreadStatement::PARAMS,
            ),
            (
                remind_unread::RemindStatement::FILE,
                remind_unread::RemindStatement::PARAMS,
            ),
        ]
    }

    /// Every statement file binds exactly the fields its statement declares, each once.
    #[test]
    fn statement_files_name_their_parameters_once() {
        for (file, declared) in statements() {
            let named: Vec<String> = split_named(file)
                .into_iter()
                .filter_map(|piece| match piece {
                    Piece::Param(name) => Some(name),
                    Piece::Sql(_) => None,
                })
                .collect();
            assert_eq!(
                named,
                declared,
                "{}",
                file.lines().next().unwrap_or_default()
            );
        }
    }

    /// Every `rules::name` a statement file cites is a function or constant of
    /// `rules.rs`: a rule renamed or removed there cannot leave SQL naming a rule that
    /// no longer exists.
    #[test]
    fn the_rules_statements_cite_exist() {
        let rules = include_str!("../rules.rs");
        let mut cited = 0;
        for (file, _) in statements() {
            for (at, _) in file.match_indices("rules::") {
                let name: String = file[at + "rules::".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let defined = rules.contains(&format!("pub fn {name}("))
                    || rules.contains(&format!("pub fn {name}<"))
                    || rules.contains(&format!("pub const {name}:"));
                assert!(
                    defined,
                    "a statement cites rules::{name}, which rules.rs does not define"
                );
                cited += 1;
            }
        }
        assert!(
            cited > 20,
            "the statements cite the rules they apply ({cited} found)"
        );
    }

    /// No statement writes a rule's constant as a literal: they are bound.
    #[test]
    fn constants_of_the_rules_are_bound_not_written() {
        for (file, _) in statements() {
            for literal in ["left(m.body, 100)", "- 100", "LEFT(m.body, 100)"] {
                assert!(
                    !file.contains(literal),
                    "{literal} in {}",
                    file.lines().next().unwrap_or_default()
                );
            }
        }
    }
}
