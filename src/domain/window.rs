//! The open chat window: WatchThread (a snapshot or the log from a version, then every
//! change as it commits, and typing) and SetTyping.
//!
//! A watcher never reads a change from memory: a wake (a notification from this or
//! another replica, or the fan-out reconnecting) only tells it to read the thread's log
//! after the last version it sent, so a missed notification costs a delay, never a
//! change. Each stream has a task of its own that reads the log and hands events to a
//! buffer of `WATCH_BUFFER`, which bounds what a stream holds: the task reads no more
//! while it is full. A reader that leaves it full for `--watch-stall-timeout` is ended
//! with STREAM_TOO_SLOW (it resumes from its last version, losing nothing), so a stuck
//! client does not hold its place forever.

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use super::streams::{self, Buffered};
use super::{AccessEnds, Caller, Chat, DomainError, Message, Side, SummaryKey, caller_side};
use crate::live::{Announced, Signal, ThreadSignal};
use crate::model::{EventKind, ThreadId};
use crate::rules;
use crate::storage::writes::ThreadFacts;
use crate::storage::{LoggedChange, ThreadWindow};
use crate::summaries::Subscription;

/// Events a thread stream holds for a reader that has not taken them yet.
pub const WATCH_BUFFER: usize = 256;

/// Changes one read of the log takes.
const LOG_BATCH: i64 = 100;

/// One event of a thread's stream.
#[derive(Debug, Clone, PartialEq)]
pub struct ThreadEvent {
    pub thread_id: i64,
    /// The thread's version after this change (typing: the last one sent).
    pub version: i64,
    pub change: ThreadChange,
}

/// What happened in a thread, as its participant's window shows it.
#[derive(Debug, Clone, PartialEq)]
pub enum ThreadChange {
    /// Where the window starts: the thread as it is at the event's version.
    Snapshot(ThreadSnapshot),
    MessageCreated(Message),
    MessageEdited(Message),
    /// The tombstone.
    MessageDeleted(Message),
    /// A participant's horizon moved (MarkRead, MarkUnread, their own send).
    ReadMoved {
        side: Side,
        last_read_seq: i64,
    },
    /// Ephemeral: never stored, never replayed.
    Typing {
        side: Side,
        until: DateTime<Utc>,
    },
    /// Whether the watcher may write changed.
    State {
        writable: bool,
    },
}

/// A thread as a window starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadSnapshot {
    pub last_seq: i64,
    pub my_last_read_seq: i64,
    pub peer_last_read_seq: i64,
    /// Whether the watcher may write now (`rules::writable_for`).
    pub writable: bool,
    /// The version asked for is older than the log keeps: reload the messages.
    pub reset: bool,
}

/// A validated `after_version`: 0 (a snapshot first) or a version to resume after.
pub fn after_version(value: i64) -> Result<i64, DomainError> {
    if value < 0 {
        return Err(DomainError::invalid(
            "after_version",
            format!("must be 0 (start with a snapshot) or the last version received, got {value}"),
        ));
    }
    Ok(value)
}

/// A thread stream, as a transport reads it: events in version order, then, if it ends
/// early, the reason.
pub type ThreadStream = Buffered<Box<ThreadEvent>>;

/// The task behind one thread stream.
struct Pump {
    chat: Chat,
    thread_id: i64,
    side: Side,
    facts: ThreadFacts,
    access_ends: AccessEnds,
    /// The version of the last change handed to the buffer.
    sent: i64,
    signal: ThreadSignal,
    /// The stream's place among the caller's streams; it ends at shutdown.
    place: Subscription,
    events: mpsc::Sender<Box<ThreadEvent>>,
}

/// Why a pump stopped.
enum Stop {
    /// The reader went away, or the server is shutting down: nothing to say.
    Quietly,
    Because(DomainError),
}

impl Chat {
    /// Opens a stream of a thread's changes for one of its participants: a snapshot
    /// first when `after_version` is 0 (or older than the log keeps), else every change
    /// after it; then each change as it commits, and typing. Counts among the caller's
    /// streams; ends with their access.
    pub async fn watch_thread(
        &self,
        caller: Caller,
        access_ends: AccessEnds,
        thread_id: ThreadId,
        after_version: i64,
    ) -> Result<ThreadStream, DomainError> {
        let side = caller_side(caller)?;
        let place = self
            .summaries
            .hub()
            .subscribe(SummaryKey::new(caller.user_id, side))?;
        // Registered before the thread is read: a change committed after the read wakes it.
        let signal = self.live.watch(thread_id.0);
        let window = self.participant_window(caller, side, thread_id).await?;
        if after_version > window.version {
            return Err(DomainError::invalid(
                "after_version",
                format!(
                    "{after_version} is beyond thread {thread_id}'s version {}: resume with the \
                     last version received, or 0 for a snapshot",
                    window.version
                ),
            ));
        }
        let (events, stream, end) = Buffered::new(WATCH_BUFFER);
        let mut pump = Pump {
            chat: self.clone(),
            thread_id: thread_id.0,
            side,
            facts: window.facts,
            access_ends,
            sent: after_version,
            signal,
            place,
            events,
        };
        let forgotten = window
            .oldest_logged
            .is_none_or(|oldest| oldest > after_version + 1);
        let reset = after_version > 0 && after_version < window.version && forgotten;
        if after_version == 0 || reset {
            let snapshot = pump.snapshot(&window, reset);
            pump.sent = window.version;
            // The buffer is empty: the snapshot fits.
            let _ = pump.events.try_send(Box::new(snapshot));
        }
        tokio::spawn(async move {
            if let Stop::Because(error) = pump.run().await {
                if matches!(error, DomainError::StreamTooSlow { .. }) {
                    pump.chat.counters.stream_too_slow();
                }
                let _ = end.send(error);
            }
        });
        Ok(stream)
    }

    /// Announces the caller typing in a thread for `live::TYPING_LASTS`, to the thread's
    /// watchers on every replica; at most once per `live::TYPING_EVERY` (a call within
    /// it answers the standing announcement's end and sends nothing). Only a
    /// participant who may write there may type (`rules::may_write`).
    pub async fn set_typing(
        &self,
        caller: Caller,
        thread_id: ThreadId,
    ) -> Result<DateTime<Utc>, DomainError> {
        let side = caller_side(caller)?;
        let window = self.participant_window(caller, side, thread_id).await?;
        rules::may_write(side, &window.facts.view()).map_err(|refusal| {
            super::thread_refused(refusal, thread_id.0, Some(window.facts.student_id))
        })?;
        let until_ms =
            match self
                .live
                .announce_typing(thread_id.0, caller.user_id, side, super::now_ms())
            {
                Announced::Now(until) | Announced::Already(until) => until,
            };
        DateTime::from_timestamp_millis(until_ms)
            .ok_or_else(|| DomainError::Internal(format!("typing until {until_ms} ms")))
    }

    /// The thread as the caller's window shows it, or THREAD_NOT_FOUND when they are
    /// not its participant on their side.
    async fn participant_window(
        &self,
        caller: Caller,
        side: Side,
        thread_id: ThreadId,
    ) -> Result<ThreadWindow, DomainError> {
        let window = self.store.thread_window(thread_id.0).await?;
        let member = window.filter(|window| {
            rules::thread_for(caller.user_id, side, Some(window.facts.view())).is_ok()
        });
        member.ok_or(DomainError::ThreadNotFound(thread_id.0))
    }
}

impl Pump {
    fn snapshot(&self, window: &ThreadWindow, reset: bool) -> ThreadEvent {
        let (mine, peer) = match self.side {
            Side::Tutor => (window.tutor_read_seq, window.student_read_seq),
            Side::Student => (window.student_read_seq, window.tutor_read_seq),
        };
        ThreadEvent {
            thread_id: self.thread_id,
            version: window.version,
            change: ThreadChange::Snapshot(ThreadSnapshot {
                last_seq: window.last_seq,
                my_last_read_seq: mine,
                peer_last_read_seq: peer,
                writable: rules::writable_for(self.side, &window.facts.view()),
                reset,
            }),
        }
    }

    /// Reads the log and hands on what it finds, then waits for the next wake, until
    /// the reader goes, the server shuts down, access ends, or the reader is too slow.
    async fn run(&mut self) -> Stop {
        loop {
            if super::now_ms() >= self.access_ends.0 {
                return Stop::Because(DomainError::TokenExpired);
            }
            self.signal.mark_seen();
            // Boxed: an idle stream's task holds only what it waits with.
            let read = Box::pin(
                self.chat
                    .store
                    .thread_log(self.thread_id, self.sent, LOG_BATCH),
            )
            .await;
            let changes = match read {
                Ok(changes) => changes,
                Err(error) => return Stop::Because(error.into()),
            };
            let caught_up = (changes.len() as i64) < LOG_BATCH;
            for change in changes {
                let version = change.version;
                let event = match self.event(change) {
                    Ok(event) => event,
                    Err(error) => return Stop::Because(error),
                };
                if let Err(stop) = self.hand_on(event).await {
                    return stop;
                }
                self.sent = version;
            }
            if !caught_up {
                continue;
            }
            if let Err(stop) = self.wait().await {
                return stop;
            }
        }
    }

    /// Waits for the log to grow, handing on typing meanwhile.
    async fn wait(&mut self) -> Result<(), Stop> {
        let access_ends = self.access_ends.0;
        loop {
            let until_access_ends = async {
                if access_ends == AccessEnds::NEVER.0 {
                    return std::future::pending().await;
                }
                let wait = u64::try_from(access_ends.saturating_sub(super::now_ms())).unwrap_or(0);
                tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
            };
            tokio::select! {
                signal = self.signal.next() => match signal {
                    Signal::Logged => return Ok(()),
                    Signal::Typing(typing) => {
                        let until = DateTime::from_timestamp_millis(typing.until_ms)
                            .unwrap_or_default();
                        let event = ThreadEvent {
                            thread_id: self.thread_id,
                            version: self.sent,
                            change: ThreadChange::Typing { side: typing.side, until },
                        };
                        self.hand_on(event).await?;
                    }
                },
                () = self.place.closed() => return Err(Stop::Quietly),
                () = self.events.closed() => return Err(Stop::Quietly),
                () = until_access_ends => return Err(Stop::Because(DomainError::TokenExpired)),
            }
        }
    }

    /// Puts an event in the buffer (`streams::hand_on`).
    async fn hand_on(&mut self, event: ThreadEvent) -> Result<(), Stop> {
        let rule = (
            self.chat.live.stall_timeout(),
            WATCH_BUFFER,
            "after_version",
        );
        streams::hand_on(&self.events, Box::new(event), rule, &mut self.place)
            .await
            .map_err(|stop| stop.map_or(Stop::Quietly, Stop::Because))
    }

    /// A change of the log as the watcher's window shows it.
    fn event(&self, change: LoggedChange) -> Result<ThreadEvent, DomainError> {
        let message = |change: &LoggedChange| {
            change.message.clone().ok_or_else(|| {
                DomainError::Internal(format!(
                    "thread {} logs {} of message {}, which is not stored",
                    self.thread_id, change.kind, change.seq
                ))
            })
        };
        let side = |change: &LoggedChange| {
            change.side.ok_or_else(|| {
                DomainError::Internal(format!(
                    "thread {} logs {} at version {} without a side",
                    self.thread_id, change.kind, change.version
                ))
            })
        };
        let shown = match change.kind {
            EventKind::MessageCreated => ThreadChange::MessageCreated(message(&change)?),
            EventKind::MessageEdited => ThreadChange::MessageEdited(message(&change)?),
            EventKind::MessageDeleted => ThreadChange::MessageDeleted(message(&change)?),
            EventKind::ThreadRead | EventKind::ThreadMarkedUnread => ThreadChange::ReadMoved {
                side: side(&change)?,
                last_read_seq: change.seq,
            },
            EventKind::WritabilityChanged => {
                let then = ThreadFacts {
                    is_writable: change.flag,
                    contact_access: change.contact_access,
                    ..self.facts
                };
                ThreadChange::State {
                    writable: rules::writable_for(self.side, &then.view()),
                }
            }
            EventKind::ThreadCreated
            | EventKind::ThreadMuted
            | EventKind::ThreadUnmuted
            | EventKind::UserErased
            | EventKind::UnreadReminder => {
                return Err(DomainError::Internal(format!(
                    "thread {} logs {} at version {}, which takes no version",
                    self.thread_id, change.kind, change.version
                )));
            }
        };
        Ok(ThreadEvent {
            thread_id: self.thread_id,
            version: change.version,
            change: shown,
        })
    }
}
