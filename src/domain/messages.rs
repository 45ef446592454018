//! Messages: sending, editing, deleting (by the sender, or removed by a moderation
//! service), listing, and erasing every message of a user.

use super::rules::{self, Participants, Refusal};
use super::{
    Caller, Chat, ContactAccessState, DomainError, Message, MessageBody, MessagePage, MessagesFrom,
    Side, allowing, caller_side, thread_refused,
};
use crate::storage::{Deleter, MessageAttempt, MessageEdit, NewMessage};

/// Most messages one transaction of EraseUser wipes: other writes wait for at most one
/// such batch of a thread.
pub const ERASE_BATCH: i64 = 1000;

impl Chat {
    /// Sends a message; a repeated `client_message_id` returns the first message.
    pub async fn send_message(
        &self,
        caller: Caller,
        thread_id: i64,
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
        let request = NewMessage {
            thread_id,
            side,
            sender_id: caller.user_id,
            preview: rules::preview(body.as_str()),
            body: body.into_string(),
            client_message_id,
            unlocking: allowing(ContactAccessState::ALL, |s| s.lets_tutor_contact()),
        };
        let attempt = self.store.send_message(&request).await?;
        let thread = rules::thread_for(
            caller.user_id,
            side,
            attempt.thread.map(|thread| thread.view()),
        )
        .map_err(|refusal| thread_refused(refusal, thread_id, None))?;
        if let Some(first) = attempt.replayed {
            return Ok(first);
        }
        if let Some(sent) = attempt.sent {
            self.changed(&attempt.changed);
            self.counters.message_sent();
            return Ok(sent);
        }
        // Not appended: the rules say why, from what the write saw under its locks.
        rules::may_write(side, &thread).map_err(|refusal| {
            thread_refused(refusal, thread_id, Some(thread.participants.student_id))
        })?;
        // Allowed, yet not appended: a concurrent retry with the same key committed
        // first, after this write's snapshot. Its message is the answer.
        if let Some(key) = &request.client_message_id
            && let Some(first) = self
                .store
                .message_by_key(thread_id, caller.user_id, key)
                .await?
        {
            return Ok(first);
        }
        Err(DomainError::Internal(format!(
            "message to thread {thread_id} neither appended nor refused"
        )))
    }

    /// The caller's message stored under `key` in a thread of theirs, if any: what a
    /// replay answers (`rules::thread_for` first, as every send checks).
    async fn stored_replay(
        &self,
        caller: Caller,
        side: Side,
        thread_id: i64,
        key: &str,
    ) -> Result<Option<Message>, DomainError> {
        let member = self.store.horizons(thread_id).await?.is_some_and(|h| {
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
            .message_by_key(thread_id, caller.user_id, key)
            .await?)
    }

    /// Edits the caller's message: a new body (the rules of sending apply), `edited_at`
    /// set, nothing counted anew and the thread not moved.
    pub async fn edit_message(
        &self,
        caller: Caller,
        thread_id: i64,
        seq: i64,
        body: MessageBody,
    ) -> Result<Message, DomainError> {
        let side = caller_side(caller)?;
        self.limits
            .take(caller.user_id)
            .map_err(|retry_after| DomainError::RateLimited { retry_after })?;
        let edit = MessageEdit {
            thread_id,
            seq,
            side,
            editor_id: caller.user_id,
            preview: rules::preview(body.as_str()),
            body: body.into_string(),
            unlocking: allowing(ContactAccessState::ALL, |s| s.lets_tutor_contact()),
        };
        let attempt = self.store.edit_message(&edit).await?;
        let thread = rules::thread_for(caller.user_id, side, attempt.thread.map(|t| t.view()))
            .map_err(|refusal| thread_refused(refusal, thread_id, None))?;
        rules::may_edit(caller.user_id, side, &thread, attempt.found).map_err(|refusal| {
            message_refused(
                refusal,
                thread_id,
                seq,
                Some(thread.participants.student_id),
            )
        })?;
        self.written(attempt, thread_id)
    }

    /// Deletes the caller's message: it stays as a tombstone (seq, sender, created_at),
    /// uncounted. Deleting it again answers the same tombstone.
    pub async fn delete_message(
        &self,
        caller: Caller,
        thread_id: i64,
        seq: i64,
    ) -> Result<Message, DomainError> {
        let side = caller_side(caller)?;
        let deleter = Deleter::Sender {
            user_id: caller.user_id,
            side,
        };
        let attempt = self.store.delete_message(thread_id, seq, deleter).await?;
        rules::thread_for(caller.user_id, side, attempt.thread.map(|t| t.view()))
            .map_err(|refusal| thread_refused(refusal, thread_id, None))?;
        rules::may_delete(caller.user_id, attempt.found)
            .map_err(|refusal| message_refused(refusal, thread_id, seq, None))?;
        self.written(attempt, thread_id)
    }

    /// Removes any message (a moderation service's call), as DeleteMessage would.
    pub async fn remove_message(&self, thread_id: i64, seq: i64) -> Result<Message, DomainError> {
        let attempt = self
            .store
            .delete_message(thread_id, seq, Deleter::Moderator)
            .await?;
        if attempt.thread.is_none() {
            return Err(DomainError::ThreadNotFound(thread_id));
        }
        if attempt.found.is_none() {
            return Err(DomainError::MessageNotFound { thread_id, seq });
        }
        self.written(attempt, thread_id)
    }

    /// After an allowed edit or delete: the changed summaries told, the message answered.
    fn written(&self, attempt: MessageAttempt, thread_id: i64) -> Result<Message, DomainError> {
        self.changed(&attempt.changed);
        attempt.message.ok_or_else(|| {
            DomainError::Internal(format!(
                "thread {thread_id}: an allowed write left no message"
            ))
        })
    }

    /// Erases every message `user_id` sent: bodies and keys wiped, counts and previews
    /// adjusted as for DeleteMessage, in transactions of at most `ERASE_BATCH` messages
    /// so that other writes keep flowing. What is done stays done when the call ends
    /// early (its deadline); a repeat finishes the job. Returns how many messages this
    /// call turned into tombstones (a repeat answers 0).
    pub async fn erase_user(&self, user_id: i64) -> Result<i64, DomainError> {
        let started = std::time::Instant::now();
        let mut erased = 0;
        for thread_id in self.store.threads_of_user(user_id).await? {
            let mut after_seq = 0;
            loop {
                let batch = self
                    .store
                    .erase_batch(thread_id, user_id, after_seq, ERASE_BATCH)
                    .await?;
                self.changed(&batch.changed);
                erased += batch.erased;
                if batch.wiped < ERASE_BATCH {
                    break;
                }
                after_seq = batch.last_seq;
            }
        }
        // On SQLite the erased text may still be in the WAL until it is checkpointed.
        self.store.after_erasure().await?;
        tracing::info!(
            user_id,
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
        thread_id: i64,
        from: MessagesFrom,
        limit: i64,
    ) -> Result<MessagePage, DomainError> {
        let side = caller_side(caller)?;
        let horizons = self
            .store
            .horizons(thread_id)
            .await?
            .filter(|h| {
                Participants {
                    tutor_id: h.tutor_id,
                    student_id: h.student_id,
                }
                .includes(caller.user_id, side)
            })
            .ok_or(DomainError::ThreadNotFound(thread_id))?;
        let page = self.store.messages_page(thread_id, from, limit).await?;
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
