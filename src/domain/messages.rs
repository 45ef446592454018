//! Messages: sending, editing, deleting (by the sender, or removed by a moderation
//! service), listing, and erasing every message of a user.

use super::{
    Caller, Chat, DomainError, Message, MessageBody, MessagePage, MessagesFrom, Side, caller_side,
    thread_refused,
};
use crate::model::{Seq, ThreadId, UserId};
use crate::rules::{self, Participants, Refusal};
use crate::storage::writes::delete_message::{DeleteMessage, Deleter};
use crate::storage::writes::edit_message::EditMessage;
use crate::storage::writes::erase_batch::EraseBatch;
use crate::storage::writes::outbox::NoteErasure;
use crate::storage::writes::send_message::{SendMessage, Sent};
use crate::storage::writes::{Logged, MessageChange};

/// Most messages one transaction of EraseUser wipes: other writes wait for at most one
/// such batch of a thread.
pub const ERASE_BATCH: i64 = 1000;

impl Chat {
    /// Sends a message; a repeated `client_message_id` returns the first message.
    pub async fn send_message(
        &self,
        caller: Caller,
        thread_id: ThreadId,
        body: MessageBody,
        client_message_id: Option<String>,
    ) -> Result<Message, DomainError> {
        let side = caller_side(caller)?;
        if let Err(retry_after) = self.limits.take(caller.user_id) {
            // A retry of a message already stored adds nothing: it is answered whatever
            // the limit, as it would be under it.
            if let Some(key) = &client_message_id
                && let Some(first) = self.stored_replay(caller, side, thread_id, key).await?
            {
                return Ok(first);
            }
            return Err(DomainError::RateLimited { retry_after });
        }
        let sent = self
            .store
            .write(SendMessage {
                thread_id,
                side,
                sender_id: UserId(caller.user_id),
                preview: rules::preview(body.as_str()),
                body: body.into_string(),
                client_message_id,
            })
            .await?;
        match sent {
            Sent::Appended {
                message,
                changed,
                version,
            } => {
                self.committed(&changed, &[Logged::at(thread_id, version)]);
                self.counters.message_sent();
                Ok(message)
            }
            Sent::Replayed(first) => Ok(first),
            Sent::Refused {
                refusal,
                student_id,
            } => Err(thread_refused(refusal, thread_id.0, Some(student_id))),
        }
    }

    /// The caller's message stored under `key` in a thread of theirs, if any: what a
    /// replay answers (`rules::thread_for` first, as every send checks).
    async fn stored_replay(
        &self,
        caller: Caller,
        side: Side,
        thread_id: ThreadId,
        key: &str,
    ) -> Result<Option<Message>, DomainError> {
        let member = self.store.horizons(thread_id.0).await?.is_some_and(|h| {
            Participants {
                tutor_id: h.tutor_id,
                student_id: h.student_id,
            }
            .includes(caller.user_id, side)
        });
        if !member {
            return Ok(None);
        }
        Ok(self
            .store
            .message_by_key(thread_id.0, caller.user_id, key)
            .await?)
    }

    /// Edits the caller's message: a new body (the rules of sending apply), `edited_at`
    /// set, nothing counted anew and the thread not moved.
    pub async fn edit_message(
        &self,
        caller: Caller,
        thread_id: ThreadId,
        seq: Seq,
        body: MessageBody,
    ) -> Result<Message, DomainError> {
        let side = caller_side(caller)?;
        self.limits
            .take(caller.user_id)
            .map_err(|retry_after| DomainError::RateLimited { retry_after })?;
        let change = self
            .store
            .write(EditMessage {
                thread_id,
                seq,
                side,
                editor_id: UserId(caller.user_id),
                preview: rules::preview(body.as_str()),
                body: body.into_string(),
            })
            .await?;
        self.message_changed(change, thread_id, seq)
    }

    /// Deletes the caller's message: it stays as a tombstone (seq, sender, created_at),
    /// uncounted. Deleting it again answers the same tombstone.
    pub async fn delete_message(
        &self,
        caller: Caller,
        thread_id: ThreadId,
        seq: Seq,
    ) -> Result<Message, DomainError> {
        let side = caller_side(caller)?;
        let deleter = Deleter::Sender {
            user_id: UserId(caller.user_id),
            side,
        };
        let change = self
            .store
            .write(DeleteMessage {
                thread_id,
                seq,
                deleter,
            })
            .await?;
        self.message_changed(change, thread_id, seq)
    }

    /// Removes any message (a moderation service's call), as DeleteMessage would.
    pub async fn remove_message(
        &self,
        thread_id: ThreadId,
        seq: Seq,
    ) -> Result<Message, DomainError> {
        let change = self
            .store
            .write(DeleteMessage {
                thread_id,
                seq,
                deleter: Deleter::Moderator,
            })
            .await?;
        self.message_changed(change, thread_id, seq)
    }

    /// After an edit or delete: the changed summaries told, the message answered, or the
    /// refusal as clients see it.
    fn message_changed(
        &self,
        change: MessageChange,
        thread_id: ThreadId,
        seq: Seq,
    ) -> Result<Message, DomainError> {
        match change {
            MessageChange::Written {
                message,
                changed,
                version,
            } => {
                self.committed(&changed, &[Logged::at(thread_id, version)]);
                Ok(message)
            }
            MessageChange::Unchanged(message) => Ok(message),
            MessageChange::Refused {
                refusal,
                student_id,
            } => Err(message_refused(
                refusal,
                thread_id.0,
                seq.0,
                Some(student_id),
            )),
        }
    }

    /// Erases every message `user_id` sent: bodies and keys wiped, counts and previews
    /// adjusted as for DeleteMessage, in transactions of at most `ERASE_BATCH` messages
    /// so that other writes keep flowing. What is done stays done when the call ends
    /// early (its deadline); a repeat finishes the job. Returns how many messages this
    /// call turned into tombstones (a repeat answers 0).
    pub async fn erase_user(&self, user_id: UserId) -> Result<i64, DomainError> {
        let started = std::time::Instant::now();
        let mut erased = 0;
        for thread_id in self.store.threads_of_user(user_id.0).await? {
            let mut after_seq = 0;
            loop {
                let batch = self
                    .store
                    .write(EraseBatch {
                        thread_id: ThreadId(thread_id),
                        user_id,
                        after_seq,
                        batch: ERASE_BATCH,
                    })
                    .await?;
                let logged: Vec<Logged> = batch
                    .version
                    .map(|version| Logged::at(ThreadId(thread_id), version))
                    .into_iter()
                    .collect();
                self.committed(&batch.changed, &logged);
                erased += batch.erased;
                if batch.wiped < ERASE_BATCH {
                    break;
                }
                after_seq = batch.last_seq;
            }
        }
        // Logged once the messages are: a repeat logs again (with 0 erased), so an
        // erasure cut short is told of when it is finished.
        self.store
            .write(NoteErasure {
                user_id: user_id.0,
                messages_erased: erased,
            })
            .await?;
        // On SQLite the erased text may still be in the WAL until it is checkpointed.
        self.store.after_erasure().await?;
        tracing::info!(
            user_id = user_id.0,
            erased,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "user erased"
        );
        Ok(erased)
    }

    /// A page of messages (newest first, or oldest first after a seq), with both sides'
    /// read horizons.
    pub async fn list_messages(
        &self,
        caller: Caller,
        thread_id: ThreadId,
        from: MessagesFrom,
        limit: i64,
    ) -> Result<MessagePage, DomainError> {
        let side = caller_side(caller)?;
        let horizons = self
            .store
            .horizons(thread_id.0)
            .await?
            .filter(|h| {
                Participants {
                    tutor_id: h.tutor_id,
                    student_id: h.student_id,
                }
                .includes(caller.user_id, side)
            })
            .ok_or(DomainError::ThreadNotFound(thread_id.0))?;
        let page = self.store.messages_page(thread_id.0, from, limit).await?;
        let (own, peer) = match side {
            Side::Tutor => (horizons.tutor_read_seq, horizons.student_read_seq),
            Side::Student => (horizons.student_read_seq, horizons.tutor_read_seq),
        };
        Ok(MessagePage {
            messages: page.messages,
            last_read_seq: own,
            peer_last_read_seq: peer,
            has_more: page.has_more,
        })
    }
}

/// The error clients see for a refusal of a write to a message.
fn message_refused(
    refusal: Refusal,
    thread_id: i64,
    seq: i64,
    student_id: Option<i64>,
) -> DomainError {
    match refusal {
        Refusal::MessageNotFound => DomainError::MessageNotFound { thread_id, seq },
        Refusal::NotMessageSender => DomainError::NotMessageSender { seq },
        Refusal::MessageDeleted => DomainError::MessageDeleted { seq },
        other => thread_refused(other, thread_id, student_id),
    }
}
