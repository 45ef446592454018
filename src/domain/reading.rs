//! The reader's side: the unread summary (from the cache when it may, with an etag that
//! names its owner and expires with the next mute to end), MarkRead, MarkUnread, mutes,
//! and the stream of summary changes.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{
    AccessEnds, Caller, Chat, DomainError, MAX_PAGE_LIMIT, MuteState, ReadState, Side,
    SummaryAnswer, SummaryKey, UnreadSummary, caller_side, now_ms, thread_refused,
};
use crate::model::{Seq, ThreadId, UserId};
use crate::rules::{self, Refusal};
use crate::storage::UnreadPage;
use crate::storage::writes::Logged;
use crate::storage::writes::mark_read::{MarkRead, Read};
use crate::storage::writes::mark_unread::MarkUnread;
use crate::storage::writes::set_mute::{Muted, SetMute};
use crate::summaries::{CachedSummary, Etag, IfNoneMatch, Subscription};

impl Chat {
    /// The caller's threads with unread messages (newest first) and their totals, or
    /// `NotModified` when `if_none_match` names the current summary. Answered from the
    /// cache when it may (see `Summaries`), with no database round trip.
    pub async fn unread_summary(
        &self,
        caller: Caller,
        limit: i64,
        if_none_match: Option<&str>,
    ) -> Result<SummaryAnswer, DomainError> {
        let key = SummaryKey::new(caller.user_id, caller_side(caller)?);
        let now = now_ms();
        let condition = if_none_match.and_then(IfNoneMatch::parse);
        if let Some(cached) = self.summaries.cached(&key)
            && cached.current_at(now)
        {
            return Ok(answer(key, &cached, limit, condition.as_ref()));
        }
        if let Some(token) = self.summaries.fill_token(&key) {
            // Callers missing the same summary at once wait for one read, the leader's,
            // who holds its place until it has filled the cache (or failed). The token
            // was taken before waiting: a write since refuses this caller's fill too.
            let _leading = self.summary_reads.join(key).wait().await;
            if let Some(cached) = self.summaries.filled(&key)
                && cached.current_at(now)
            {
                return Ok(answer(key, &cached, limit, condition.as_ref()));
            }
            // Read deep enough for any page size, so the entry answers every later poll.
            let (page, version) = self.read_summary(key, MAX_PAGE_LIMIT, now).await?;
            let cached = Arc::new(CachedSummary::new(version, page));
            self.summaries.fill(key, token, cached.clone());
            return Ok(answer(key, &cached, limit, condition.as_ref()));
        }
        // No cache to trust: a conditional request checks the version alone first, and
        // a current one costs a key lookup and builds nothing. Only the caller's own
        // tags, for this page size and not past their time, can be current.
        let candidates: Vec<Etag> = match &condition {
            Some(IfNoneMatch::Tags(tags)) => tags
                .iter()
                .filter_map(|tag| Etag::parse(tag))
                .filter(|tag| {
                    tag.key == key && tag.limit == limit && tag.changes_at.is_none_or(|at| now < at)
                })
                .collect(),
            _ => Vec::new(),
        };
        if !candidates.is_empty() {
            let version = self.store.summary_version(key).await?;
            if let Some(tag) = candidates.into_iter().find(|tag| tag.version == version) {
                return Ok(SummaryAnswer::NotModified {
                    etag: tag.to_string(),
                });
            }
        }
        let (page, version) = self.read_summary(key, limit, now).await?;
        let tag = Etag {
            key,
            version,
            limit,
            changes_at: page.changes_at,
        };
        // `*`: any current summary matches (there always is one).
        if condition
            .as_ref()
            .is_some_and(|c| c.matches(&tag.to_string()))
        {
            return Ok(SummaryAnswer::NotModified {
                etag: tag.to_string(),
            });
        }
        Ok(SummaryAnswer::Summary {
            summary: UnreadSummary::new(
                page.rows.into(),
                usize::MAX,
                page.total,
                page.muted_total,
                page.changes_at,
            ),
            etag: tag.to_string(),
        })
    }

    /// A page of the summary at `now_ms` and the exact version it shows.
    ///
    /// An etag must never claim newer content than it is sent with, or a later poll
    /// would be told 304 over a change it never saw. The version read in the page's
    /// statement is exact. An empty page carries none: read the version, then the page
    /// again, whose content is then at least that new.
    async fn read_summary(
        &self,
        key: SummaryKey,
        limit: i64,
        now_ms: i64,
    ) -> Result<(UnreadPage, i64), DomainError> {
        let page = self.store.unread_summary(key, limit, now_ms).await?;
        if let Some(version) = page.version {
            return Ok((page, version));
        }
        let version = self.store.summary_version(key).await?;
        let page = self.store.unread_summary(key, limit, now_ms).await?;
        let version = page.version.unwrap_or(version);
        Ok((page, version))
    }

    /// Moves the caller's read horizon forward, never back (`rules::horizon_after_mark_read`).
    pub async fn mark_read(
        &self,
        caller: Caller,
        thread_id: ThreadId,
        up_to_seq: Option<Seq>,
    ) -> Result<ReadState, DomainError> {
        let side = caller_side(caller)?;
        let read = self
            .store
            .write(MarkRead {
                thread_id,
                side,
                user_id: UserId(caller.user_id),
                up_to_seq,
                now_ms: now_ms(),
            })
            .await?;
        self.read(caller.user_id, side, thread_id, read, Seq(0))
    }

    /// Sets the caller's horizon just before `from_seq`, one of the thread's newest
    /// messages (`rules::may_mark_unread`): the one call that may move it back.
    pub async fn mark_unread(
        &self,
        caller: Caller,
        thread_id: ThreadId,
        from_seq: Seq,
    ) -> Result<ReadState, DomainError> {
        let side = caller_side(caller)?;
        let read = self
            .store
            .write(MarkUnread {
                thread_id,
                side,
                user_id: UserId(caller.user_id),
                from_seq,
                now_ms: now_ms(),
            })
            .await?;
        self.read(caller.user_id, side, thread_id, read, from_seq)
    }

    /// After a read: the reader's summary told when it changed, their state answered,
    /// or the refusal as clients see it (`from_seq`: MarkUnread's).
    fn read(
        &self,
        user_id: i64,
        side: Side,
        thread_id: ThreadId,
        read: Read,
        from_seq: Seq,
    ) -> Result<ReadState, DomainError> {
        let state = match read {
            Read::Moved(state) => state,
            Read::Refused { refusal, last_seq } => {
                return Err(match refusal {
                    Refusal::MessageNotFound => DomainError::MessageNotFound {
                        thread_id: thread_id.0,
                        seq: from_seq.0,
                    },
                    Refusal::MarkUnreadTooFar => DomainError::MarkUnreadTooFar {
                        from_seq: from_seq.0,
                        window: rules::MARK_UNREAD_WINDOW,
                        oldest_allowed: last_seq - rules::MARK_UNREAD_WINDOW,
                    },
                    other => thread_refused(other, thread_id.0, None),
                });
            }
        };
        let changed = [SummaryKey::new(user_id, side)];
        let logged = state.version.map(|version| Logged::at(thread_id, version));
        self.committed(
            if state.changed { &changed } else { &[] },
            logged.as_slice(),
        );
        Ok(ReadState {
            thread_id: thread_id.0,
            last_read_seq: state.last_read_seq,
            unread_count: state.unread_count,
            total: state.total,
        })
    }

    /// Mutes a thread for the caller, until `until` (which the transport checked is
    /// ahead) or, with `None`, until they unmute it.
    pub async fn mute_thread(
        &self,
        caller: Caller,
        thread_id: ThreadId,
        until: Option<DateTime<Utc>>,
    ) -> Result<MuteState, DomainError> {
        let until_ms = until.map_or(rules::MUTED_FOREVER_MS, |at| at.timestamp_millis());
        self.set_mute(caller, thread_id, Some(until_ms)).await
    }

    /// Unmutes a thread for the caller (muted or not).
    pub async fn unmute_thread(
        &self,
        caller: Caller,
        thread_id: ThreadId,
    ) -> Result<MuteState, DomainError> {
        self.set_mute(caller, thread_id, None).await
    }

    async fn set_mute(
        &self,
        caller: Caller,
        thread_id: ThreadId,
        muted_until_ms: Option<i64>,
    ) -> Result<MuteState, DomainError> {
        let side = caller_side(caller)?;
        let now = now_ms();
        let muted = self
            .store
            .write(SetMute {
                thread_id,
                side,
                user_id: UserId(caller.user_id),
                muted_until_ms,
                now_ms: now,
            })
            .await?;
        let state = match muted {
            Muted::Set(state) => state,
            Muted::Refused(refusal) => return Err(thread_refused(refusal, thread_id.0, None)),
        };
        if state.changed {
            self.committed(&[SummaryKey::new(caller.user_id, side)], &[]);
        }
        let shown = rules::mute_shown(state.muted_until_ms, now);
        Ok(MuteState {
            thread_id: thread_id.0,
            muted: shown.is_some(),
            muted_until: shown.flatten().and_then(DateTime::from_timestamp_millis),
            total: state.total,
        })
    }

    /// Opens a stream of the caller's unread summary: `next` yields the current one,
    /// then one each time it changes, until the caller's access ends.
    pub fn watch_unread_summary(
        &self,
        caller: Caller,
        access_ends: AccessEnds,
        limit: i64,
    ) -> Result<SummaryWatch, DomainError> {
        let key = SummaryKey::new(caller.user_id, caller_side(caller)?);
        let subscription = self.summaries.hub().subscribe(key)?;
        Ok(SummaryWatch {
            chat: self.clone(),
            caller,
            access_ends,
            limit,
            subscription,
            last_sent: None,
            sent_at: None,
            changes_at: None,
            started: false,
        })
    }
}

/// The answer a cached summary gives.
fn answer(
    key: SummaryKey,
    cached: &CachedSummary,
    limit: i64,
    condition: Option<&IfNoneMatch>,
) -> SummaryAnswer {
    let etag = Etag {
        key,
        version: cached.version,
        limit,
        changes_at: cached.changes_at,
    }
    .to_string();
    if condition.is_some_and(|c| c.matches(&etag)) {
        return SummaryAnswer::NotModified { etag };
    }
    SummaryAnswer::Summary {
        summary: cached.page(limit),
        etag,
    }
}

/// A stream of one caller's unread summary (see `Chat::watch_unread_summary`).
///
/// The first change after a quiet spell is read and sent at once; changes that follow
/// within the coalescing window after a send gather into one read at the window's end
/// (leading edge, then trailing). A summary whose mute ends by itself is read again at
/// that time, with no change from anyone: a timer of this stream's own, only while such
/// a mute is pending. An idle stream holds a digest of what it last sent, not a copy.
/// When the caller's access ends, the stream ends with TOKEN_EXPIRED.
pub struct SummaryWatch {
    chat: Chat,
    caller: Caller,
    access_ends: AccessEnds,
    limit: i64,
    subscription: Subscription,
    last_sent: Option<u64>,
    sent_at: Option<tokio::time::Instant>,
    /// When the summary last read changes by itself (Unix ms).
    changes_at: Option<i64>,
    started: bool,
}

impl SummaryWatch {
    /// The next summary to send: the current one first, then each that differs from the
    /// last one sent. `None` when the server is shutting down; TOKEN_EXPIRED once the
    /// caller's access has ended.
    pub async fn next(&mut self) -> Option<Result<(UnreadSummary, String), DomainError>> {
        loop {
            if now_ms() >= self.access_ends.0 {
                return Some(Err(DomainError::TokenExpired));
            }
            // Whether this read follows a change (not the snapshot).
            let after_change = self.started;
            if after_change {
                // Woken by a change, by the summary changing by itself, or by access ending.
                let wake_at = [self.changes_at, Some(self.access_ends.0)]
                    .into_iter()
                    .flatten()
                    .filter(|at| *at != AccessEnds::NEVER.0)
                    .min();
                let changed = match wake_at {
                    None => self.subscription.changed().await,
                    Some(at) => {
                        let wait = std::time::Duration::from_millis(
                            u64::try_from(at.saturating_sub(now_ms())).unwrap_or(0),
                        );
                        tokio::select! {
                            changed = self.subscription.changed() => changed,
                            () = tokio::time::sleep(wait) => true,
                        }
                    }
                };
                if !changed {
                    return None;
                }
                if now_ms() >= self.access_ends.0 {
                    return Some(Err(DomainError::TokenExpired));
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
                    self.changes_at = summary.changes_at;
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

    use crate::domain::Role;
    use crate::limits::{SendLimit, SendLimits};
    use crate::storage::Store;
    use crate::summaries::{CacheConfig, CacheTrust, Summaries, WatchLimits};
    use std::time::Duration;

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
                pooler: Default::default(),
                sqlite_sync: Default::default(),
            },
        )
        .expect("a store");
        let live = crate::live::Live::new(Arc::new(crate::fanout::Local), Duration::from_secs(1));
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
            (summaries, live),
            crate::metrics::Metrics::new().chat,
            Duration::ZERO,
            SendLimits::new(SendLimit::OFF).expect("no limit"),
            crate::outbox::Outbox::idle(),
        );
        let caller = Caller {
            user_id: 1,
            role: Role::Tutor,
        };
        let mut watch = chat
            .watch_unread_summary(caller, AccessEnds::NEVER, 50)
            .expect("a watch");
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
