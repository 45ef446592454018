//! SendMessage: a message appended to a thread by one of its participants, or, for a
//! key seen before, the first message sent with it (`rules::send_decision`). The
//! sender's horizon moves to it, the peer's count grows by one, the thread's line
//! shows it, and the summaries that changed are bumped (`rules::send_changes`).

use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Nullable, Text};
use diesel::{QueryableByName, SqliteConnection};

use super::{ThreadFacts, Write, viewed};
use crate::model::{ContactAccessState, Message, Seq, Side, SummaryKey, ThreadId, UserId};
use crate::rules::{self, Refusal, SendDecision};
use crate::storage::postgres::{self, ChangedSummaries, ThreadColumns, committed_row};
use crate::storage::sqlite::reads::MessageRow;
use crate::storage::sqlite::schema::{messages, thread_participants, threads};
use crate::storage::sqlite::steps;

/// A message to send.
#[derive(Debug, Clone)]
pub struct SendMessage {
    pub thread_id: ThreadId,
    pub side: Side,
    pub sender_id: UserId,
    pub body: String,
    /// The start of the body the summary shows (`rules::preview`).
    pub preview: String,
    pub client_message_id: Option<String>,
}

/// What SendMessage did.
#[derive(Debug, Clone, PartialEq)]
pub enum Sent {
    /// Appended by this write, which changed these summaries and left the thread's
    /// log at `version`.
    Appended {
        message: Message,
        changed: Vec<SummaryKey>,
        version: i64,
    },
    /// A retry: the first message sent with this key, as it is now.
    Replayed(Message),
    /// The rules refused it, reading the thread under its lock (`student_id` names the
    /// student a locked contact access is about).
    Refused { refusal: Refusal, student_id: i64 },
}

postgres::sql_file_statement! {
    /// SendMessage in one statement (see the file).
    SendStatement {
        thread_id: i64 => BigInt,
        side: &'static str => Text,
        sender_id: i64 => BigInt,
        body: String => Text,
        preview: String => Text,
        client_message_id: Option<String> => Nullable<Text>,
        unlocking: Vec<&'static str> => Array<Text>,
    }
    sql = include_str!("send_message.sql");
}

/// The one row SendStatement answers.
#[derive(Debug, QueryableByName)]
struct SendRow {
    #[diesel(embed)]
    thread: ThreadColumns,
    #[diesel(sql_type = Nullable<Text>)]
    contact_access: Option<ContactAccessState>,
    #[diesel(sql_type = Bool)]
    key_seen_before: bool,
    #[diesel(sql_type = Bool)]
    appended: bool,
    #[diesel(embed)]
    changed: ChangedSummaries,
    #[diesel(sql_type = Nullable<BigInt>)]
    thread_version: Option<i64>,
    #[diesel(embed)]
    message: Option<postgres::reads::MessageRow>,
}

impl SendMessage {
    /// What the write did, from what it saw (`facts`, whether the key was seen) and
    /// what it stored (`appended`; `answered`: the message appended or replayed).
    fn outcome(
        &self,
        facts: Option<ThreadFacts>,
        key_seen_before: bool,
        appended: bool,
        answered: Option<Message>,
        (changed, version): (Vec<SummaryKey>, Option<i64>),
    ) -> QueryResult<Sent> {
        let student_id = facts.map_or(0, |facts| facts.student_id);
        let decision =
            rules::send_decision(self.sender_id.0, self.side, viewed(facts), key_seen_before);
        Ok(match (decision, appended, answered, version) {
            (Err(refusal), false, _, _) => Sent::Refused {
                refusal,
                student_id,
            },
            (Ok(SendDecision::Replay), false, Some(first), _) => Sent::Replayed(first),
            (Ok(SendDecision::Append), true, Some(message), Some(version)) => Sent::Appended {
                message,
                changed,
                version,
            },
            (decision, appended, answered, version) => {
                return Err(super::inconsistent(format!(
                    "send to thread {}: the rules say {decision:?}, storage appended: \
                     {appended}, answered {answered:?}, logged at version {version:?}",
                    self.thread_id
                )));
            }
        })
    }
}

impl Write for SendMessage {
    type Done = Sent;
    const NAME: &'static str = "send_message";

    async fn postgres(&self, conn: &mut postgres::Conn) -> QueryResult<Sent> {
        let statement = SendStatement {
            thread_id: self.thread_id.0,
            side: self.side.as_str(),
            sender_id: self.sender_id.0,
            body: self.body.clone(),
            preview: self.preview.clone(),
            client_message_id: self.client_message_id.clone(),
            unlocking: rules::unlocking_states()
                .iter()
                .map(|state| state.as_str())
                .collect(),
        };
        let row: SendRow = committed_row(statement, conn).await?;
        let facts = row.thread.facts(row.contact_access);
        let mut answered = row.message.map(Message::from);
        let mut key_seen_before = row.key_seen_before;
        let allowed = rules::send_decision(self.sender_id.0, self.side, viewed(facts), false);
        // Allowed, yet not appended: a concurrent retry with the same key committed
        // first, after this statement's snapshot. Its message is the answer.
        if allowed.is_ok()
            && !row.appended
            && answered.is_none()
            && let Some(key) = &self.client_message_id
        {
            answered =
                postgres::reads::message_by_key(conn, self.thread_id.0, self.sender_id.0, key)
                    .await?;
            key_seen_before = answered.is_some();
        }
        self.outcome(
            facts,
            key_seen_before,
            row.appended,
            answered,
            (row.changed.keys()?, row.thread_version),
        )
    }

    fn sqlite(&self, conn: &mut SqliteConnection) -> QueryResult<Sent> {
        let thread_id = self.thread_id.0;
        let Some((mut facts, last_seq)) = steps::thread_facts(conn, thread_id)? else {
            return self.outcome(None, false, false, None, (Vec::new(), None));
        };
        if rules::needs_contact_access(self.side, facts.kind) {
            facts.contact_access = steps::contact_access_of(conn, &facts)?;
        }
        let first = match &self.client_message_id {
            Some(key) => steps::message_by_key(conn, thread_id, self.sender_id.0, key)?,
            None => None,
        };
        let decision = rules::send_decision(
            self.sender_id.0,
            self.side,
            Some(facts.view()),
            first.is_some(),
        );
        if decision != Ok(SendDecision::Append) {
            return self.outcome(
                Some(facts),
                first.is_some(),
                false,
                first,
                (Vec::new(), None),
            );
        }
        let seq = Seq(last_seq + 1);
        let (message, changed) = self.append(conn, &facts, seq)?;
        let version = steps::log(
            conn,
            thread_id,
            &[
                steps::LogEntry::message(rules::SEND_LOGS[0], seq.0),
                steps::LogEntry::horizon(rules::SEND_LOGS[1], self.side, seq.0, 0),
            ],
        )?;
        self.outcome(
            Some(facts),
            false,
            true,
            Some(message),
            (changed, Some(version)),
        )
    }
}

impl SendMessage {
    /// SQLite: appends the message as `seq`, with everything a send changes.
    fn append(
        &self,
        conn: &mut SqliteConnection,
        facts: &ThreadFacts,
        seq: Seq,
    ) -> QueryResult<(Message, Vec<SummaryKey>)> {
        let thread_id = self.thread_id.0;
        let now = steps::now_micros();
        let sent: Message = diesel::insert_into(messages::table)
            .values((
                messages::thread_id.eq(thread_id),
                messages::seq.eq(seq.0),
                messages::sender_id.eq(self.sender_id.0),
                messages::body.eq(&self.body),
                messages::client_message_id.eq(&self.client_message_id),
                messages::created_at.eq(now),
            ))
            .returning(MessageRow::as_returning())
            .get_result::<MessageRow>(conn)?
            .into();
        // The new message is the newest not deleted (rules::last_visible).
        diesel::update(threads::table.find(thread_id))
            .set((
                threads::last_seq.eq(seq.0),
                threads::last_visible_seq.eq(seq.0),
                threads::revision.eq(threads::revision + 1),
                threads::last_message_at.eq(now),
                threads::last_message_preview.eq(&self.preview),
                threads::last_message_sender_id.eq(self.sender_id.0),
            ))
            .execute(conn)?;
        let side = self.side.as_str();
        let sender_unread: i64 = thread_participants::table
            .find((thread_id, side))
            .select(thread_participants::unread_count)
            .first(conn)?;
        let last_message = (
            thread_participants::last_message_at.eq(now),
            thread_participants::last_message_preview.eq(&self.preview),
            thread_participants::last_message_sender_id.eq(self.sender_id.0),
        );
        diesel::update(thread_participants::table.find((thread_id, side)))
            .set((
                thread_participants::last_read_seq.eq(rules::horizon_after_send(seq.0)),
                thread_participants::unread_count.eq(0),
                last_message,
            ))
            .execute(conn)?;
        let peer = self.side.peer();
        diesel::update(thread_participants::table.find((thread_id, peer.as_str())))
            .set((
                thread_participants::unread_count.eq(thread_participants::unread_count + 1),
                last_message,
            ))
            .execute(conn)?;
        let changes = rules::send_changes(sender_unread);
        let mut changed = Vec::new();
        if changes.peer {
            changed.push(SummaryKey::new(facts.view().participants.on(peer), peer));
        }
        if changes.sender {
            changed.push(SummaryKey::new(self.sender_id.0, self.side));
        }
        steps::bump_versions(conn, &changed)?;
        Ok((sent, changed))
    }
}
