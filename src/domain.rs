//! The operations of chatd: who may open, read and write which thread, and how upstream
//! facts are accepted. Transport-free: no tonic, axum or diesel types cross this
//! boundary.
//!
//! - `rules.rs`: every rule, stated once (membership, writability, contact access,
//!   horizons, what counts as unread, whose summary a write changes).
//! - `values.rs`: validated request values, and the records handed to transports.
//! - `error.rs`: the one error type and the reasons clients see.
//! - `watch.rs`: who watches which unread summary, and waking them on change.
//! - `summaries.rs`: the cache of recently read summaries, kept in step with this
//!   replica's writes, the other replicas' (through the fan-out) and the watchers.
//! - `tickets.rs`: one-use stream tickets, for browsers that cannot send a token.
//!
//! Each operation asks storage once where it can: writes check the rules under the
//! rows' locks and report what they saw, and `Chat` reads the rules' answer from that.

mod error;
pub mod rules;
mod summaries;
mod tickets;
mod values;
mod watch;

pub use error::{DomainError, Reason};
pub use summaries::{CacheConfig, CacheTrust, CachedSummary, Summaries};
pub use tickets::{STREAM_TICKET_TTL, StreamTicket};
pub use values::*;
pub use watch::{SummaryHub, WatchLimits};

pub use crate::model::{
    ContactAccessState, InquiryStatus, Message, RelationStatus, Role, Side, SummaryKey, Thread,
    ThreadKind, ThreadUnread,
};

use std::sync::Arc;
use std::time::Duration;

use rules::{Participants, Refusal, UpsertOutcome};
use watch::Subscription;

use crate::metrics::ChatCounters;
use crate::storage::{Fact, NewMessage, NewThread, Store, StoreError};

impl From<StoreError> for DomainError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(detail) => DomainError::Unavailable(detail),
            StoreError::Query(error) => DomainError::Internal(error.to_string()),
        }
    }
}

/// The operations of ChatService and SyncService. Cloning is shallow.
#[derive(Clone)]
pub struct Chat {
    store: Store,
    /// The cache, the watchers and the other replicas, told of every committed change.
    summaries: Summaries,
    counters: ChatCounters,
    /// How long a watcher lets a burst of changes gather before it re-reads its summary.
    coalesce: Duration,
}

impl Chat {
    pub fn new(
        store: Store,
        summaries: Summaries,
        counters: ChatCounters,
        coalesce: Duration,
    ) -> Self {
        Self {
            store,
            summaries,
            counters,
            coalesce,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Where summary changes meet: the cache, the watchers, the other replicas.
    pub fn summaries(&self) -> &Summaries {
        &self.summaries
    }

    /// After a write committed, before it answers: see `Summaries::committed`.
    fn changed(&self, keys: &[SummaryKey]) {
        self.summaries.committed(keys);
    }

    /// Compares every cached summary's version with the database's, in one query, and
    /// drops those a lost notification left stale. Returns how many there were.
    pub async fn sweep_summaries(&self) -> Result<usize, DomainError> {
        let cached = self.summaries.cached_versions();
        if cached.is_empty() {
            return Ok(0);
        }
        let keys: Vec<SummaryKey> = cached.iter().map(|(key, _)| *key).collect();
        let current = self.store.summary_versions(&keys).await?;
        Ok(self.summaries.repair(&cached, &current))
    }

    /// Opens a stream of the caller's unread summary: `next` yields the current one,
    /// then one each time it changes.
    pub fn watch_unread_summary(
        &self,
        caller: Caller,
        limit: i64,
    ) -> Result<SummaryWatch, DomainError> {
        let key = SummaryKey::new(caller.user_id, caller_side(caller)?);
        let subscription = self.summaries.hub().subscribe(key)?;
        Ok(SummaryWatch {
            chat: self.clone(),
            caller,
            limit,
            subscription,
            last_sent: None,
            sent_at: None,
            started: false,
        })
    }

    /// Returns the thread of a relation or inquiry, creating it on first use.
    pub async fn ensure_thread(
        &self,
        caller: Caller,
        target: ThreadTarget,
    ) -> Result<(Thread, bool), DomainError> {
        let side = caller_side(caller)?;
        let (kind, existing, new) = match target {
            ThreadTarget::Relation(id) => {
                let found = self.store.relation_target(id).await?;
                let relation = found
                    .as_ref()
                    .map(|found| (participants(&found.fact), found.fact.status));
                let access = found.as_ref().and_then(|found| found.contact_access);
                rules::may_open_relation_thread(caller.user_id, side, relation, access)
                    .map_err(|refusal| refused(refusal, target, relation.map(|r| r.0)))?;
                let new = NewThread::Relation {
                    relation_id: id,
                    writable: allowing(RelationStatus::ALL, |s| s.allows_messages()),
                };
                (
                    ThreadKind::Contact,
                    found.and_then(|found| found.thread),
                    new,
                )
            }
            ThreadTarget::Inquiry(id) => {
                let found = self.store.inquiry_target(id).await?;
                let inquiry = found.as_ref().map(|found| participants(&found.fact));
                rules::may_open_inquiry_thread(caller.user_id, side, inquiry)
                    .map_err(|refusal| refused(refusal, target, inquiry))?;
                let new = NewThread::Inquiry {
                    inquiry_id: id,
                    writable: allowing(InquiryStatus::ALL, |s| s.allows_messages()),
                };
                (
                    ThreadKind::Negotiation,
                    found.and_then(|found| found.thread),
                    new,
                )
            }
        };
        // Most calls find an existing thread: the read above found it, nothing is written.
        let (row, created) = match existing {
            Some(row) => (row, false),
            None => match self.store.create_thread(&new).await? {
                Some(row) => (row, true),
                // Another call created it in between: answer theirs.
                None => (self.thread_of(target).await?, false),
            },
        };
        self.counters.thread_ensured(kind.as_str(), created);
        Ok((row, created))
    }

    /// The thread of a target known to exist.
    async fn thread_of(&self, target: ThreadTarget) -> Result<Thread, DomainError> {
        let thread = match target {
            ThreadTarget::Relation(id) => {
                self.store.relation_target(id).await?.and_then(|t| t.thread)
            }
            ThreadTarget::Inquiry(id) => {
                self.store.inquiry_target(id).await?.and_then(|t| t.thread)
            }
        };
        thread.ok_or_else(|| DomainError::Internal(format!("the thread of {target:?} vanished")))
    }

    /// The caller's threads with unread messages (newest first) and total unread count,
    /// or `NotModified` when `if_none_match` names the current summary. Answered from
    /// the cache when it may (see `Summaries`), with no database round trip.
    pub async fn unread_summary(
        &self,
        caller: Caller,
        limit: i64,
        if_none_match: Option<&str>,
    ) -> Result<SummaryAnswer, DomainError> {
        let key = SummaryKey::new(caller.user_id, caller_side(caller)?);
        if let Some(cached) = self.summaries.cached(&key) {
            return Ok(answer(&cached, limit, if_none_match));
        }
        if let Some(token) = self.summaries.fill_token(&key) {
            // Read deep enough for any page size, so the entry answers every later poll.
            let (page, version) = self.read_summary(key, MAX_PAGE_LIMIT).await?;
            let cached = Arc::new(CachedSummary::new(version, page.total, page.rows));
            self.summaries.fill(key, token, cached.clone());
            return Ok(answer(&cached, limit, if_none_match));
        }
        // No cache to trust: a conditional request checks the version alone first, and
        // a current one costs a key lookup and builds nothing.
        if let Some(tag) = if_none_match {
            let version = self.store.summary_version(key).await?;
            if tag == etag(version, limit) {
                return Ok(SummaryAnswer::NotModified {
                    etag: etag(version, limit),
                });
            }
        }
        let (page, version) = self.read_summary(key, limit).await?;
        Ok(SummaryAnswer::Summary {
            summary: UnreadSummary::new(page.rows.into(), usize::MAX, page.total),
            etag: etag(version, limit),
        })
    }

    /// A page of the summary and the exact version it shows.
    ///
    /// An etag must never claim newer content than it is sent with, or a later poll
    /// would be told 304 over a change it never saw. The version read in the page's
    /// statement is exact. An empty page carries none: read the version, then the page
    /// again, whose content is then at least that new.
    async fn read_summary(
        &self,
        key: SummaryKey,
        limit: i64,
    ) -> Result<(crate::storage::UnreadPage, i64), DomainError> {
        let page = self.store.unread_summary(key, limit).await?;
        if let Some(version) = page.version {
            return Ok((page, version));
        }
        let version = self.store.summary_version(key).await?;
        let page = self.store.unread_summary(key, limit).await?;
        let version = page.version.unwrap_or(version);
        Ok((page, version))
    }

    /// Moves the caller's read horizon forward, never back (`rules::horizon_after_mark_read`).
    pub async fn mark_read(
        &self,
        caller: Caller,
        thread_id: i64,
        up_to_seq: Option<i64>,
    ) -> Result<ReadState, DomainError> {
        let side = caller_side(caller)?;
        let attempt = self
            .store
            .mark_read(thread_id, side, caller.user_id, up_to_seq)
            .await?;
        // A thread the caller is not in does not exist for them.
        rules::thread_for(
            caller.user_id,
            side,
            attempt.thread.map(|thread| thread.view()),
        )
        .map_err(|refusal| thread_refused(refusal, thread_id, None))?;
        let state = attempt
            .state
            .ok_or(DomainError::ThreadNotFound(thread_id))?;
        if state.changed {
            self.changed(&[SummaryKey::new(caller.user_id, side)]);
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
        let side = caller_side(caller)?;
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

    /// A page of messages, newest first, with both sides' read horizons.
    pub async fn list_messages(
        &self,
        caller: Caller,
        thread_id: i64,
        before_seq: Option<i64>,
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
        let page = self
            .store
            .messages_page(thread_id, before_seq, limit)
            .await?;
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

    /// Stores a relation pushed by its owner; `Ok(false)` when the version is not newer.
    pub async fn upsert_relation(
        &self,
        relation_id: i64,
        tutor_id: i64,
        student_id: i64,
        status: RelationStatus,
        version: i64,
    ) -> Result<bool, DomainError> {
        let pushed = distinct(tutor_id, student_id)?;
        let fact = Fact {
            tutor_id,
            student_id,
            status,
            version,
        };
        let written = self
            .store
            .upsert_relation(relation_id, fact, status.allows_messages());
        let stored = async || self.store.find_relation(relation_id).await;
        self.upsert_with_participants("relation", relation_id, pushed, version, written, stored)
            .await
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
        let pushed = distinct(tutor_id, student_id)?;
        let fact = Fact {
            tutor_id,
            student_id,
            status,
            version,
        };
        let written = self
            .store
            .upsert_inquiry(inquiry_id, fact, status.allows_messages());
        let stored = async || self.store.find_inquiry(inquiry_id).await;
        self.upsert_with_participants("inquiry", inquiry_id, pushed, version, written, stored)
            .await
    }

    /// The upsert of a relation or an inquiry: the write (which decides atomically),
    /// then, only when it did not apply, the stored fact, from which
    /// `rules::upsert_outcome` says why: a stale version (`Ok(false)`) or other
    /// participants (PARTICIPANTS_IMMUTABLE).
    async fn upsert_with_participants<S>(
        &self,
        entity: &'static str,
        id: i64,
        pushed: Participants,
        version: i64,
        written: impl Future<Output = Result<(bool, Vec<SummaryKey>), StoreError>>,
        stored: impl AsyncFnOnce() -> Result<Option<Fact<S>>, StoreError>,
    ) -> Result<bool, DomainError> {
        let (applied, changed) = written.await?;
        self.changed(&changed);
        if applied {
            return Ok(true);
        }
        let stored = stored().await?.map(|f| (participants(&f), f.version));
        match rules::upsert_outcome(stored, pushed, version) {
            UpsertOutcome::ParticipantsChanged => {
                Err(DomainError::ParticipantsImmutable { entity, id })
            }
            // Applied by the rule yet not by the write: a newer upsert committed between
            // the two (the stored fact moved on), so this one is stale now.
            UpsertOutcome::Stale | UpsertOutcome::Applied => Ok(false),
        }
    }

    /// Stores a tutor's contact access to a student; `Ok(false)` when not newer.
    pub async fn upsert_contact_access(
        &self,
        tutor_id: i64,
        student_id: i64,
        state: ContactAccessState,
        version: i64,
    ) -> Result<bool, DomainError> {
        distinct(tutor_id, student_id)?;
        Ok(self
            .store
            .upsert_contact_access(tutor_id, student_id, state, version)
            .await?)
    }
}

/// The etag of a summary's page: its version, and the page size (a different page of
/// the same version is different content).
fn etag(version: i64, limit: i64) -> String {
    format!("v{version}.l{limit}")
}

/// The answer a cached summary gives.
fn answer(cached: &CachedSummary, limit: i64, if_none_match: Option<&str>) -> SummaryAnswer {
    let etag = etag(cached.version, limit);
    if if_none_match == Some(etag.as_str()) {
        return SummaryAnswer::NotModified { etag };
    }
    SummaryAnswer::Summary {
        summary: cached.page(limit),
        etag,
    }
}

/// The side a caller acts on. Only services lack one, and the transport lets no service
/// token reach ChatService; this is the domain's own guard of that rule.
fn caller_side(caller: Caller) -> Result<Side, DomainError> {
    rules::side_of(caller.role).ok_or(DomainError::RoleNotAllowed {
        role: caller.role.as_str().to_owned(),
        service: "chat.v1.ChatService",
    })
}

/// The values of `all` that `rule` allows: how the domain hands a rule to storage as data.
fn allowing<T: Copy>(all: &[T], rule: impl Fn(T) -> bool) -> Vec<T> {
    all.iter().copied().filter(|value| rule(*value)).collect()
}

fn participants<S>(fact: &Fact<S>) -> Participants {
    Participants {
        tutor_id: fact.tutor_id,
        student_id: fact.student_id,
    }
}

/// The two users a fact names, refused when they are one (`Participants::distinct`).
fn distinct(tutor_id: i64, student_id: i64) -> Result<Participants, DomainError> {
    let pushed = Participants {
        tutor_id,
        student_id,
    };
    if !pushed.distinct() {
        return Err(DomainError::invalid(
            "student_id",
            format!("must differ from tutor_id: user {tutor_id} cannot be their own student"),
        ));
    }
    Ok(pushed)
}

/// The error clients see for a refusal of EnsureThread.
fn refused(refusal: Refusal, target: ThreadTarget, fact: Option<Participants>) -> DomainError {
    match (refusal, target) {
        (Refusal::RelationNotFound, ThreadTarget::Relation(id)) => {
            DomainError::RelationNotFound(id)
        }
        (Refusal::RelationNotActive, ThreadTarget::Relation(id)) => {
            DomainError::RelationNotActive(id)
        }
        (Refusal::InquiryNotFound, ThreadTarget::Inquiry(id)) => DomainError::InquiryNotFound(id),
        (Refusal::ContactAccessLocked, _) => DomainError::ContactAccessLocked {
            student_id: fact.map_or(0, |fact| fact.student_id),
        },
        (refusal, target) => {
            DomainError::Internal(format!("EnsureThread of {target:?} refused as {refusal:?}"))
        }
    }
}

/// The error clients see for a refusal of an operation on a thread.
fn thread_refused(refusal: Refusal, thread_id: i64, student_id: Option<i64>) -> DomainError {
    match refusal {
        Refusal::ThreadNotFound => DomainError::ThreadNotFound(thread_id),
        Refusal::ThreadNotWritable => DomainError::ThreadNotWritable(thread_id),
        Refusal::ContactAccessLocked => DomainError::ContactAccessLocked {
            student_id: student_id.unwrap_or_default(),
        },
        other => DomainError::Internal(format!("thread {thread_id} refused as {other:?}")),
    }
}

/// A stream of one caller's unread summary (see `Chat::watch_unread_summary`).
///
/// The first change after a quiet spell is read and sent at once; changes that follow
/// within the coalescing window after a send gather into one read at the window's end
/// (leading edge, then trailing). An idle stream holds a digest of what it last sent,
/// not a copy.
pub struct SummaryWatch {
    chat: Chat,
    caller: Caller,
    limit: i64,
    subscription: Subscription,
    last_sent: Option<u64>,
    sent_at: Option<tokio::time::Instant>,
    started: bool,
}

impl SummaryWatch {
    /// The next summary to send: the current one first, then each that differs from the
    /// last one sent. `None` when the server is shutting down.
    pub async fn next(&mut self) -> Option<Result<(UnreadSummary, String), DomainError>> {
        loop {
            // Whether this read follows a change (not the snapshot).
            let after_change = self.started;
            if after_change {
                if !self.subscription.changed().await {
                    return None;
                }
                // Within the window after a send, let the burst gather (a hundred
                // messages in a second make one read and one send, not a hundred).
                if let Some(sent_at) = self.sent_at {
                    tokio::time::sleep_until(sent_at + self.chat.coalesce).await;
                }
            }
            self.started = true;
            // Changes from here on wake the next round: none is lost between the read and the wait.
            self.subscription.mark_seen();
            // Boxed: this future is sized for its largest state, and a read inline (some
            // 4.5 KB) would be held by every idle stream while it waits for a change.
            let answer = Box::pin(self.chat.unread_summary(self.caller, self.limit, None)).await;
            match answer {
                Err(error) => return Some(Err(error)),
                Ok(SummaryAnswer::NotModified { .. }) => continue,
                Ok(SummaryAnswer::Summary { summary, etag }) => {
                    let digest = digest(&summary);
                    if self.last_sent == Some(digest) {
                        continue;
                    }
                    self.last_sent = Some(digest);
                    // The snapshot opens no window: only sends a change caused do.
                    if after_change {
                        self.sent_at = Some(tokio::time::Instant::now());
                    }
                    return Some(Ok((summary, etag)));
                }
            }
        }
    }
}

/// A 64-bit digest of a summary: equal summaries have equal digests, and two that
/// differ collide with odds of one in 2^64.
fn digest(summary: &UnreadSummary) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    summary.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every open WatchUnreadSummary stream holds its pending `next()` future while it
    /// waits for a change: the database read it makes must not be inlined in it.
    #[tokio::test]
    async fn an_idle_watch_holds_no_database_read() {
        let path = std::env::temp_dir().join(format!("chatd_watch_size_{}.db", std::process::id()));
        let store = Store::connect(
            &crate::storage::DatabaseUrl::Sqlite(path.display().to_string()),
            &crate::storage::PoolConfig {
                max_size: 1,
                timeout: Duration::from_secs(1),
                statement_timeout: None,
            },
        )
        .expect("a store");
        let summaries = Summaries::new(
            CacheConfig {
                budget_bytes: 0,
                sweep: Duration::from_secs(1),
            },
            WatchLimits {
                per_user: 1,
                total: 1,
            },
            Arc::new(crate::fanout::Local),
            crate::metrics::Metrics::new().cache,
            CacheTrust::FromStart,
        );
        let chat = Chat::new(
            store,
            summaries,
            crate::metrics::Metrics::new().chat,
            Duration::ZERO,
        );
        let caller = Caller {
            user_id: 1,
            role: Role::Tutor,
        };
        let mut watch = chat.watch_unread_summary(caller, 50).expect("a watch");
        let pending = std::mem::size_of_val(&watch.next());
        let read = std::mem::size_of_val(&chat.unread_summary(caller, 50, None));
        assert!(
            pending < 1024,
            "an idle watch holds {pending} bytes (a read is {read})"
        );
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
}
