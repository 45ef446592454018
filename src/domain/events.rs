//! Events out: every committed change as the services around chatd receive it
//! (StreamEvents, and the relay's sinks), read from the outbox in position order.

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};

use super::streams::{self, Buffered};
use super::{AccessEnds, Caller, Chat, DomainError};
use crate::model::{EventKind, Message, Side, SummaryKey, Thread};
use crate::rules::{self, MUTED_FOREVER_MS};
use crate::storage::StoredEvent;
use crate::storage::writes::ThreadFacts;
use crate::summaries::Subscription;

/// Events a stream buffers for its reader (as a thread stream).
pub const EVENTS_BUFFER: usize = 256;

/// Events read from the log at a time.
const EVENTS_BATCH: i64 = 500;

/// One event, as the services around chatd receive it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Global, in commit order: the resume cursor.
    pub position: i64,
    /// Stable: the same event always has the same id.
    pub id: String,
    pub kind: EventKind,
    /// 0 for events of no thread.
    pub thread_id: i64,
    /// 0 for events that are no change of the thread's windows.
    pub thread_version: i64,
    pub time: DateTime<Utc>,
    pub data: EventData,
}

/// What an event says, by kind.
#[derive(Debug, Clone, PartialEq)]
pub enum EventData {
    ThreadCreated(Thread),
    /// chat.message.created and chat.message.edited: the message as it is now.
    Message(Message),
    MessageDeleted {
        message: Message,
        removed_by_moderation: bool,
    },
    /// chat.thread.read and chat.thread.marked_unread.
    Read {
        side: Side,
        user_id: i64,
        last_read_seq: i64,
        unread: i64,
    },
    /// chat.thread.muted and chat.thread.unmuted (`until`: `None` until unmuted).
    Mute {
        side: Side,
        user_id: i64,
        until: Option<DateTime<Utc>>,
    },
    Writability {
        is_writable: bool,
        tutor_may_write: bool,
        student_may_write: bool,
    },
    UserErased {
        user_id: i64,
        messages_erased: i64,
    },
    UnreadReminder {
        user_id: i64,
        side: Side,
        unread_count: i64,
        oldest_unread_at: Option<DateTime<Utc>>,
        peer_id: i64,
    },
}

/// The kinds named in a request, checked (empty: all).
pub fn event_types(names: &[String]) -> Result<Vec<EventKind>, DomainError> {
    names
        .iter()
        .map(|name| {
            EventKind::parse(name).ok_or_else(|| {
                let known: Vec<&str> = EventKind::ALL.iter().map(|kind| kind.as_str()).collect();
                DomainError::invalid(
                    "types",
                    format!(
                        "unknown event type {name:?}: known are {}",
                        known.join(", ")
                    ),
                )
            })
        })
        .collect()
}

/// A position a consumer resumes after: 0 (the oldest kept) or a position given.
pub fn after_position(value: i64) -> Result<i64, DomainError> {
    if value < 0 {
        return Err(DomainError::invalid(
            "after_position",
            format!(
                "must be 0 (from the oldest event kept) or the last position processed, got {value}"
            ),
        ));
    }
    Ok(value)
}

fn corrupt(stored: &StoredEvent, what: &str) -> DomainError {
    DomainError::Internal(format!(
        "event {} ({}) at position {} has no {what}",
        stored.event_id, stored.kind, stored.position
    ))
}

impl TryFrom<StoredEvent> for Event {
    type Error = DomainError;

    fn try_from(stored: StoredEvent) -> Result<Self, DomainError> {
        let thread = || {
            stored
                .thread
                .clone()
                .ok_or_else(|| corrupt(&stored, "thread"))
        };
        let message = || {
            stored
                .message
                .clone()
                .ok_or_else(|| corrupt(&stored, "message"))
        };
        let side = || stored.side.ok_or_else(|| corrupt(&stored, "side"));
        let user = || stored.user_id.ok_or_else(|| corrupt(&stored, "user"));
        let data = match stored.kind {
            EventKind::ThreadCreated => EventData::ThreadCreated(thread()?),
            EventKind::MessageCreated | EventKind::MessageEdited => EventData::Message(message()?),
            EventKind::MessageDeleted => EventData::MessageDeleted {
                message: message()?,
                removed_by_moderation: stored.flag,
            },
            EventKind::ThreadRead | EventKind::ThreadMarkedUnread => {
                let (side, thread) = (side()?, thread()?);
                EventData::Read {
                    side,
                    user_id: participant(&thread, side),
                    last_read_seq: stored.seq,
                    unread: stored.amount.unwrap_or_default(),
                }
            }
            EventKind::ThreadMuted | EventKind::ThreadUnmuted => EventData::Mute {
                side: side()?,
                user_id: user()?,
                until: stored
                    .amount
                    .filter(|until| *until != MUTED_FOREVER_MS)
                    .and_then(DateTime::from_timestamp_millis),
            },
            EventKind::WritabilityChanged => {
                let thread = thread()?;
                let then = ThreadFacts {
                    kind: thread.kind,
                    tutor_id: thread.tutor_id,
                    student_id: thread.student_id,
                    is_writable: stored.flag,
                    contact_access: stored.contact_access,
                }
                .view();
                EventData::Writability {
                    is_writable: stored.flag,
                    tutor_may_write: rules::writable_for(Side::Tutor, &then),
                    student_may_write: rules::writable_for(Side::Student, &then),
                }
            }
            EventKind::UserErased => EventData::UserErased {
                user_id: user()?,
                messages_erased: stored.amount.unwrap_or_default(),
            },
            EventKind::UnreadReminder => {
                let (side, thread) = (side()?, thread()?);
                EventData::UnreadReminder {
                    user_id: user()?,
                    side,
                    unread_count: stored.amount.unwrap_or_default(),
                    oldest_unread_at: stored.message.as_ref().map(|message| message.created_at),
                    peer_id: participant(&thread, side.peer()),
                }
            }
        };
        Ok(Event {
            position: stored.position,
            id: stored.event_id.to_string(),
            kind: stored.kind,
            thread_id: stored.thread_id,
            thread_version: stored.thread_version.unwrap_or_default(),
            time: stored.created_at,
            data,
        })
    }
}

fn participant(thread: &Thread, side: Side) -> i64 {
    match side {
        Side::Tutor => thread.tutor_id,
        Side::Student => thread.student_id,
    }
}

impl Chat {
    /// The newest position known on this replica, changing as numbering goes on.
    pub fn outbox_positions(&self) -> watch::Receiver<i64> {
        self.outbox.positions()
    }

    /// Up to `limit` events after `after`, of `kinds` (all when empty), in position
    /// order; EVENTS_EXPIRED when retention trimmed past `after` (0: the oldest kept).
    pub async fn events_after(
        &self,
        after: i64,
        kinds: &[EventKind],
        limit: i64,
    ) -> Result<Vec<Event>, DomainError> {
        let stored = self.store.events_after(after, kinds, limit).await?;
        stored.into_iter().map(Event::try_from).collect()
    }

    /// Checks that the log still holds what follows `after` and that `after` was given.
    pub async fn check_event_position(&self, after: i64) -> Result<(), DomainError> {
        let bounds = self.store.event_bounds().await?;
        if after > bounds.last_position {
            return Err(DomainError::invalid(
                "after_position",
                format!(
                    "{after} is beyond the newest position {}: resume with the last position \
                     processed, or 0 for the oldest event kept",
                    bounds.last_position
                ),
            ));
        }
        if after > 0 && after < bounds.trimmed_through {
            return Err(DomainError::EventsExpired {
                after_position: after,
                trimmed_through: bounds.trimmed_through,
            });
        }
        Ok(())
    }

    /// Opens a stream of events after `after` (0: the oldest kept), of `kinds` (all
    /// when empty): the log first, then each event as it is numbered, on any replica.
    /// Holds a place among the caller's streams; ends with their access.
    pub async fn stream_events(
        &self,
        caller: Caller,
        access_ends: AccessEnds,
        after: i64,
        kinds: Vec<EventKind>,
    ) -> Result<EventStream, DomainError> {
        // A service has no side: its streams are counted under its id as a tutor's.
        let place = self
            .summaries
            .hub()
            .subscribe(SummaryKey::new(caller.user_id, Side::Tutor))?;
        let positions = self.outbox.positions();
        self.check_event_position(after).await?;
        let (events, stream, end) = Buffered::new(EVENTS_BUFFER);
        let mut pump = EventPump {
            chat: self.clone(),
            kinds,
            access_ends,
            sent: after,
            positions,
            place,
            events,
        };
        tokio::spawn(async move {
            if let Some(error) = pump.run().await {
                if matches!(error, DomainError::StreamTooSlow { .. }) {
                    pump.chat.counters.stream_too_slow();
                }
                let _ = end.send(error);
            }
        });
        Ok(stream)
    }
}

/// An event stream, as a transport reads it: events in position order, then, if it
/// ends early, the reason.
pub type EventStream = Buffered<Event>;

struct EventPump {
    chat: Chat,
    kinds: Vec<EventKind>,
    access_ends: AccessEnds,
    /// The position of the last event handed on (or asked to resume after).
    sent: i64,
    positions: watch::Receiver<i64>,
    place: Subscription,
    events: mpsc::Sender<Event>,
}

impl EventPump {
    /// Reads and hands on; `None` when it stopped quietly (reader gone, shutdown).
    async fn run(&mut self) -> Option<DomainError> {
        loop {
            if super::now_ms() >= self.access_ends.0 {
                return Some(DomainError::TokenExpired);
            }
            self.positions.borrow_and_update();
            let batch = match self
                .chat
                .events_after(self.sent, &self.kinds, EVENTS_BATCH)
                .await
            {
                Ok(batch) => batch,
                Err(error) => return Some(error),
            };
            let caught_up = (batch.len() as i64) < EVENTS_BATCH;
            for event in batch {
                let position = event.position;
                match self.hand_on(event).await {
                    Ok(()) => self.sent = position,
                    Err(stop) => return stop,
                }
            }
            if caught_up && let Err(stop) = self.wait().await {
                return stop;
            }
        }
    }

    async fn wait(&mut self) -> Result<(), Option<DomainError>> {
        let access_ends = self.access_ends.0;
        let until_access_ends = async {
            if access_ends == AccessEnds::NEVER.0 {
                return std::future::pending().await;
            }
            let wait = u64::try_from(access_ends.saturating_sub(super::now_ms())).unwrap_or(0);
            tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
        };
        tokio::select! {
            changed = self.positions.changed() => match changed {
                Ok(()) => Ok(()),
                Err(_) => Err(None),
            },
            () = self.place.closed() => Err(None),
            () = self.events.closed() => Err(None),
            () = until_access_ends => Err(Some(DomainError::TokenExpired)),
        }
    }

    async fn hand_on(&mut self, event: Event) -> Result<(), Option<DomainError>> {
        let rule = (
            self.chat.live.stall_timeout(),
            EVENTS_BUFFER,
            "after_position",
        );
        streams::hand_on(&self.events, event, rule, &mut self.place).await
    }
}
