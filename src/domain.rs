//! The rules of chatd: who may open, read and write which thread, and how upstream facts
//! are accepted. Transport-free: no tonic, axum or diesel types cross this boundary.

mod error;
mod types;
mod watch;

pub use error::{DomainError, ErrorKind};
pub use types::*;
pub use watch::{SummaryHub, WatchLimits};

use std::time::Duration;

use watch::Subscription;

use crate::storage::{
    FactRow, MessageRow, Store, StoreError, SummaryKey, ThreadRecord, ThreadRow, UpsertOutcome,
};

impl From<StoreError> for DomainError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(detail) => DomainError::Unavailable(detail),
            StoreError::Query(error) => DomainError::Internal(error.to_string()),
        }
    }
}

/// Reads a stored enum name, treating an unknown one as corrupt data.
fn stored<T>(parse: fn(&str) -> Option<T>, text: &str, what: &str) -> Result<T, DomainError> {
    parse(text).ok_or_else(|| DomainError::Internal(format!("unknown stored {what} {text:?}")))
}

/// The operations of ChatService and SyncService. Cloning is shallow.
#[derive(Clone)]
pub struct Chat {
    store: Store,
    hub: SummaryHub,
    /// How long a watcher lets a burst of changes gather before it re-reads its summary.
    coalesce: Duration,
}

impl Chat {
    pub fn new(store: Store, hub: SummaryHub, coalesce: Duration) -> Self {
        Self {
            store,
            hub,
            coalesce,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Wakes this process's watchers of the summaries a committed write changed. Other
    /// replicas learn of it from PostgreSQL NOTIFY, sent in the write's transaction.
    fn changed(&self, keys: &[SummaryKey]) {
        for (user_id, side) in keys {
            self.hub.notify(*user_id, side);
        }
    }

    /// Opens a stream of the caller's unread summary: `next` yields the current one,
    /// then one each time it changes.
    pub fn watch_unread_summary(
        &self,
        caller: Caller,
        limit: i64,
    ) -> Result<SummaryWatch, DomainError> {
        let side = user_side(caller)?;
        let subscription = self.hub.subscribe(caller.user_id, side)?;
        Ok(SummaryWatch {
            chat: self.clone(),
            caller,
            limit,
            subscription,
            last_sent: None,
            started: false,
        })
    }

    /// Returns the thread of a relation or inquiry, creating it on first use.
    pub async fn ensure_thread(
        &self,
        caller: Caller,
        target: ThreadTarget,
    ) -> Result<(Thread, bool), DomainError> {
        let side = user_side(caller)?;
        let (kind, fact, is_writable) = match target {
            ThreadTarget::Relation(id) => {
                let relation = self
                    .store
                    .find_relation(id)
                    .await?
                    .filter(|r| is_participant(caller.user_id, side, r))
                    .ok_or(DomainError::RelationNotFound(id))?;
                let status = stored(
                    RelationStatus::from_stored,
                    &relation.status,
                    "relation status",
                )?;
                if status != RelationStatus::Active {
                    return Err(DomainError::RelationNotActive(id));
                }
                if side == Side::Tutor {
                    self.require_contact_access(relation.tutor_id, relation.student_id)
                        .await?;
                }
                (ThreadKind::Contact, relation, true)
            }
            ThreadTarget::Inquiry(id) => {
                let inquiry = self
                    .store
                    .find_inquiry(id)
                    .await?
                    .filter(|i| is_participant(caller.user_id, side, i))
                    .ok_or(DomainError::InquiryNotFound(id))?;
                let status = stored(
                    InquiryStatus::from_stored,
                    &inquiry.status,
                    "inquiry status",
                )?;
                (ThreadKind::Negotiation, inquiry, status.allows_messages())
            }
        };
        let (is_relation, target_id) = match target {
            ThreadTarget::Relation(id) => (true, id),
            ThreadTarget::Inquiry(id) => (false, id),
        };
        // Most calls find an existing thread: read first, write only on first use.
        let (row, created) = match self
            .store
            .find_thread_by_target(is_relation, target_id)
            .await?
        {
            Some(row) => (row, false),
            None => {
                self.store
                    .create_thread(
                        kind.as_str(),
                        is_relation.then_some(target_id),
                        (!is_relation).then_some(target_id),
                        fact.tutor_id,
                        fact.student_id,
                        is_writable,
                    )
                    .await?
            }
        };
        let metrics = crate::metrics::global();
        metrics.increment(
            "chat_thread_ensured",
            vec![("created", created.to_string())],
        );
        if created {
            metrics.increment(
                "chatd_threads_created",
                vec![("kind", kind.as_str().to_owned())],
            );
        }
        Ok((thread_from_row(row, is_writable)?, created))
    }

    /// The caller's threads with unread messages (newest first) and total unread count,
    /// or `NotModified` when `if_none_match` names the current summary.
    ///
    /// The version is read before the summary, so an etag never claims content newer
    /// than what it was sent with: at worst a client fetches once more than needed.
    pub async fn unread_summary(
        &self,
        caller: Caller,
        limit: i64,
        if_none_match: Option<&str>,
    ) -> Result<SummaryAnswer, DomainError> {
        let side = user_side(caller)?;
        let etag_of = |version: i64| format!("v{version}.l{limit}");
        // A conditional request checks the version alone first: a current one costs a
        // key lookup and builds nothing.
        let checked = match if_none_match {
            Some(tag) => {
                let version = self
                    .store
                    .summary_version(caller.user_id, side.as_str())
                    .await?;
                if tag == etag_of(version) {
                    return Ok(SummaryAnswer::NotModified {
                        etag: etag_of(version),
                    });
                }
                Some(version)
            }
            None => None,
        };
        let (mut rows, mut total, page_version) = self
            .store
            .unread_summary(caller.user_id, side.as_str(), limit)
            .await?;
        // An etag must never claim newer content than it is sent with, or a later poll
        // would be told 304 over a change it never saw. The version read with the page
        // is exact, and one read before the page is older or equal. An empty page
        // carries none: read the version, then the page again.
        let version = match (checked, page_version) {
            (_, Some(exact)) => exact,
            (Some(before), None) => before,
            (None, None) => {
                let version = self
                    .store
                    .summary_version(caller.user_id, side.as_str())
                    .await?;
                let (again, again_total, again_version) = self
                    .store
                    .unread_summary(caller.user_id, side.as_str(), limit)
                    .await?;
                (rows, total) = (again, again_total);
                again_version.unwrap_or(version)
            }
        };
        let etag = etag_of(version);
        let threads = rows
            .into_iter()
            .map(|row| {
                Ok(ThreadUnread {
                    thread_id: row.thread_id,
                    kind: stored(ThreadKind::from_stored, &row.kind, "thread kind")?,
                    relation_id: row.relation_id,
                    inquiry_id: row.inquiry_id,
                    tutor_id: row.tutor_id,
                    student_id: row.student_id,
                    unread_count: row.unread_count,
                    last_message_at: row.last_message_at,
                    last_message_preview: row.last_message_preview,
                    last_message_sender_id: row.last_message_sender_id,
                    is_writable: row.is_writable,
                })
            })
            .collect::<Result<_, DomainError>>()?;
        Ok(SummaryAnswer::Summary {
            summary: UnreadSummary { threads, total },
            etag,
        })
    }

    /// Moves the caller's read horizon forward, never back.
    pub async fn mark_read(
        &self,
        caller: Caller,
        thread_id: i64,
        up_to_seq: Option<i64>,
    ) -> Result<ReadState, DomainError> {
        let (side, _) = self.participant_thread(caller, thread_id).await?;
        let state = self
            .store
            .mark_read(thread_id, side.as_str(), caller.user_id, up_to_seq)
            .await?;
        if state.changed {
            self.hub.notify(caller.user_id, side.as_str());
        }
        Ok(ReadState {
            thread_id,
            last_read_seq: state.last_read_seq,
            unread_count: state.unread_count,
            total: state.total,
        })
    }

    /// Sends a message; a repeated `client_message_id` returns the first message.
    pub async fn send_message(
        &self,
        caller: Caller,
        thread_id: i64,
        body: MessageBody,
        client_message_id: Option<String>,
    ) -> Result<Message, DomainError> {
        let (side, record) = self.participant_thread(caller, thread_id).await?;
        if !is_writable(&record)? {
            return Err(DomainError::ThreadNotWritable(thread_id));
        }
        let kind = stored(ThreadKind::from_stored, &record.thread.kind, "thread kind")?;
        if side == Side::Tutor && kind == ThreadKind::Contact {
            let unlocked = record
                .contact_access
                .as_deref()
                .map(|state| stored(ContactAccessState::from_stored, state, "contact access"))
                .transpose()?
                == Some(ContactAccessState::Unlocked);
            if !unlocked {
                return Err(DomainError::ContactAccessLocked {
                    student_id: record.thread.student_id,
                });
            }
        }
        let (row, changed) = self
            .store
            .append_message(
                thread_id,
                side.as_str(),
                side.peer().as_str(),
                caller.user_id,
                body.as_str(),
                &body.preview(),
                client_message_id.as_deref(),
            )
            .await?;
        // A retry that returned the first message changed nothing and sent nothing.
        if !changed.is_empty() {
            self.changed(&changed);
            crate::metrics::global().increment("chatd_messages_sent", Vec::new());
        }
        Ok(message_from_row(row))
    }

    /// A page of messages, newest first, with both sides' read horizons.
    pub async fn list_messages(
        &self,
        caller: Caller,
        thread_id: i64,
        before_seq: Option<i64>,
        limit: i64,
    ) -> Result<MessagePage, DomainError> {
        let (side, _) = self.participant_thread(caller, thread_id).await?;
        let (rows, has_more, last_read_seq, peer_last_read_seq) = self
            .store
            .list_messages(thread_id, side.as_str(), before_seq, limit)
            .await?;
        Ok(MessagePage {
            messages: rows.into_iter().map(message_from_row).collect(),
            last_read_seq,
            peer_last_read_seq,
            has_more,
        })
    }

    /// Stores a relation pushed by its owner; `Ok(false)` when the version is not newer.
    pub async fn upsert_relation(
        &self,
        relation_id: i64,
        tutor_id: i64,
        student_id: i64,
        status: RelationStatus,
        version: i64,
    ) -> Result<bool, DomainError> {
        let fact = FactRow {
            tutor_id,
            student_id,
            status: status.as_str().to_owned(),
            version,
        };
        let is_writable = status == RelationStatus::Active;
        let (outcome, changed) = self
            .store
            .upsert_relation(relation_id, &fact, is_writable)
            .await?;
        self.changed(&changed);
        upsert_applied(outcome, "relation", relation_id)
    }

    /// Stores an inquiry pushed by its owner; `Ok(false)` when the version is not newer.
    pub async fn upsert_inquiry(
        &self,
        inquiry_id: i64,
        tutor_id: i64,
        student_id: i64,
        status: InquiryStatus,
        version: i64,
    ) -> Result<bool, DomainError> {
        let fact = FactRow {
            tutor_id,
            student_id,
            status: status.as_str().to_owned(),
            version,
        };
        let (outcome, changed) = self
            .store
            .upsert_inquiry(inquiry_id, &fact, status.allows_messages())
            .await?;
        self.changed(&changed);
        upsert_applied(outcome, "inquiry", inquiry_id)
    }

    /// Stores a tutor's contact access to a student; `Ok(false)` when not newer.
    pub async fn upsert_contact_access(
        &self,
        tutor_id: i64,
        student_id: i64,
        state: ContactAccessState,
        version: i64,
    ) -> Result<bool, DomainError> {
        Ok(self
            .store
            .upsert_contact_access(tutor_id, student_id, state.as_str(), version)
            .await?)
    }

    /// Loads a thread the caller is in. A thread the caller is not in does not exist for
    /// them: the same THREAD_NOT_FOUND as a missing one, so its existence does not leak.
    async fn participant_thread(
        &self,
        caller: Caller,
        thread_id: i64,
    ) -> Result<(Side, ThreadRecord), DomainError> {
        let side = user_side(caller)?;
        let record = self
            .store
            .load_thread(thread_id)
            .await?
            .ok_or(DomainError::ThreadNotFound(thread_id))?;
        let member = match side {
            Side::Tutor => record.thread.tutor_id == caller.user_id,
            Side::Student => record.thread.student_id == caller.user_id,
        };
        if !member {
            return Err(DomainError::ThreadNotFound(thread_id));
        }
        Ok((side, record))
    }

    async fn require_contact_access(
        &self,
        tutor_id: i64,
        student_id: i64,
    ) -> Result<(), DomainError> {
        let state = self.store.find_contact_access(tutor_id, student_id).await?;
        let state = state
            .as_deref()
            .map(|s| stored(ContactAccessState::from_stored, s, "contact access"))
            .transpose()?;
        if state == Some(ContactAccessState::Unlocked) {
            Ok(())
        } else {
            Err(DomainError::ContactAccessLocked { student_id })
        }
    }
}

/// The side a user's token acts on. Only services lack one, and the transport lets no
/// service token reach ChatService; this is the domain's own guard of that rule.
fn user_side(caller: Caller) -> Result<Side, DomainError> {
    Side::of(caller.role).ok_or(DomainError::RoleNotAllowed {
        role: caller.role.as_str(),
        service: "chat.v1.ChatService",
    })
}

fn is_participant(user_id: i64, side: Side, fact: &FactRow) -> bool {
    match side {
        Side::Tutor => fact.tutor_id == user_id,
        Side::Student => fact.student_id == user_id,
    }
}

/// Contact thread: its relation is ACTIVE. Negotiation thread: its inquiry is OPEN or ACCEPTED.
fn writable(
    kind: &str,
    relation_status: Option<&str>,
    inquiry_status: Option<&str>,
) -> Result<bool, DomainError> {
    match stored(ThreadKind::from_stored, kind, "thread kind")? {
        ThreadKind::Contact => Ok(match relation_status {
            Some(s) => {
                stored(RelationStatus::from_stored, s, "relation status")? == RelationStatus::Active
            }
            None => false,
        }),
        ThreadKind::Negotiation => Ok(match inquiry_status {
            Some(s) => stored(InquiryStatus::from_stored, s, "inquiry status")?.allows_messages(),
            None => false,
        }),
    }
}

fn is_writable(record: &ThreadRecord) -> Result<bool, DomainError> {
    writable(
        &record.thread.kind,
        record.relation_status.as_deref(),
        record.inquiry_status.as_deref(),
    )
}

fn upsert_applied(
    outcome: UpsertOutcome,
    entity: &'static str,
    id: i64,
) -> Result<bool, DomainError> {
    match outcome {
        UpsertOutcome::Applied => Ok(true),
        UpsertOutcome::Stale => Ok(false),
        UpsertOutcome::ParticipantsChanged => {
            Err(DomainError::ParticipantsImmutable { entity, id })
        }
    }
}

fn thread_from_row(row: ThreadRow, is_writable: bool) -> Result<Thread, DomainError> {
    Ok(Thread {
        thread_id: row.thread_id,
        kind: stored(ThreadKind::from_stored, &row.kind, "thread kind")?,
        relation_id: row.relation_id,
        inquiry_id: row.inquiry_id,
        tutor_id: row.tutor_id,
        student_id: row.student_id,
        is_writable,
        created_at: row.created_at,
    })
}

fn message_from_row(row: MessageRow) -> Message {
    Message {
        message_id: row.message_id,
        thread_id: row.thread_id,
        seq: row.seq,
        sender_id: row.sender_id,
        body: row.body,
        created_at: row.created_at,
        client_message_id: row.client_message_id,
    }
}

/// A stream of one caller's unread summary (see `Chat::watch_unread_summary`).
pub struct SummaryWatch {
    chat: Chat,
    caller: Caller,
    limit: i64,
    subscription: Subscription,
    last_sent: Option<UnreadSummary>,
    started: bool,
}

impl SummaryWatch {
    /// The next summary to send: the current one first, then each that differs from the
    /// last one sent. `None` when the server is shutting down.
    pub async fn next(&mut self) -> Option<Result<(UnreadSummary, String), DomainError>> {
        loop {
            if self.started {
                if !self.subscription.changed().await {
                    return None;
                }
                // Let a burst (100 messages in a second) gather into one read and one send.
                tokio::time::sleep(self.chat.coalesce).await;
            }
            self.started = true;
            // Changes from here on wake the next round: none is lost between the read and the wait.
            self.subscription.mark_seen();
            let answer = self
                .chat
                .unread_summary(self.caller, self.limit, None)
                .await;
            match answer {
                Err(error) => return Some(Err(error)),
                Ok(SummaryAnswer::NotModified { .. }) => continue,
                Ok(SummaryAnswer::Summary { summary, etag }) => {
                    if self.last_sent.as_ref() == Some(&summary) {
                        continue;
                    }
                    self.last_sent = Some(summary.clone());
                    return Some(Ok((summary, etag)));
                }
            }
        }
    }
}
