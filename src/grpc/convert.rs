//! Conversions between generated `pb` types and domain types. Input is validated here,
//! at the boundary, so the domain only ever sees valid values.

use chrono::{DateTime, Utc};
use prost_types::Timestamp;

use super::pb;
use crate::domain::{
    self, ContactAccessState, DomainError, InquiryStatus, RelationStatus, ThreadKind, ThreadTarget,
};

pub fn timestamp(at: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

pub fn thread_kind(kind: ThreadKind) -> pb::ThreadKind {
    match kind {
        ThreadKind::Negotiation => pb::ThreadKind::Negotiation,
        ThreadKind::Contact => pb::ThreadKind::Contact,
    }
}

pub fn target(
    target: Option<pb::ensure_thread_request::Target>,
) -> Result<ThreadTarget, DomainError> {
    use pb::ensure_thread_request::Target;
    match target {
        Some(Target::RelationId(id)) => Ok(ThreadTarget::Relation(domain::positive_id(
            "relation_id",
            id,
        )?)),
        Some(Target::InquiryId(id)) => Ok(ThreadTarget::Inquiry(domain::positive_id(
            "inquiry_id",
            id,
        )?)),
        None => Err(DomainError::invalid(
            "target",
            "set relation_id or inquiry_id",
        )),
    }
}

pub fn thread(thread: domain::Thread) -> pb::Thread {
    pb::Thread {
        thread_id: thread.thread_id,
        kind: thread_kind(thread.kind).into(),
        relation_id: thread.relation_id,
        inquiry_id: thread.inquiry_id,
        tutor_id: thread.tutor_id,
        student_id: thread.student_id,
        is_writable: thread.is_writable,
        created_at: Some(timestamp(thread.created_at)),
    }
}

/// The entries of an unread summary, for GetUnreadSummary and WatchUnreadSummary alike.
pub fn threads_unread(threads: &[domain::ThreadUnread]) -> Vec<pb::ThreadUnread> {
    threads.iter().map(thread_unread).collect()
}

fn thread_unread(entry: &domain::ThreadUnread) -> pb::ThreadUnread {
    pb::ThreadUnread {
        thread_id: entry.thread_id,
        kind: thread_kind(entry.kind).into(),
        relation_id: entry.relation_id,
        inquiry_id: entry.inquiry_id,
        tutor_id: entry.tutor_id,
        student_id: entry.student_id,
        unread_count: entry.unread_count,
        last_message_at: entry.last_message_at.map(timestamp),
        last_message_preview: entry.last_message_preview.clone(),
        last_message_sender_id: entry.last_message_sender_id,
        is_writable: entry.is_writable,
        muted: entry.muted,
        muted_until: entry.muted_until.map(timestamp),
    }
}

pub fn message(message: domain::Message) -> pb::Message {
    pb::Message {
        message_id: message.message_id,
        thread_id: message.thread_id,
        seq: message.seq,
        sender_id: message.sender_id,
        body: message.body,
        created_at: Some(timestamp(message.created_at)),
        client_message_id: message.client_message_id.unwrap_or_default(),
        edited_at: message.edited_at.map(timestamp),
        deleted: message.deleted_at.is_some(),
        deleted_at: message.deleted_at.map(timestamp),
    }
}

pub fn mute_state(state: domain::MuteState) -> pb::MuteThreadResponse {
    pb::MuteThreadResponse {
        thread_id: state.thread_id,
        muted: state.muted,
        muted_until: state.muted_until.map(timestamp),
        total: state.total,
    }
}

/// The first and last second a `google.protobuf.Timestamp` may hold: 0001-01-01T00:00:00Z
/// and 9999-12-31T23:59:59Z. Outside them a time has no RFC 3339 spelling, so chatd
/// could not hand it back to anyone.
const TIMESTAMP_SECONDS: std::ops::RangeInclusive<i64> = -62_135_596_800..=253_402_300_799;

/// A time a request carries in `field`, within `google.protobuf.Timestamp`'s range.
pub fn time_in(field: &'static str, at: Timestamp) -> Result<DateTime<Utc>, DomainError> {
    if !TIMESTAMP_SECONDS.contains(&at.seconds) || !(0..1_000_000_000).contains(&at.nanos) {
        return Err(DomainError::invalid(
            field,
            format!(
                "must be a time from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z \
                 (seconds {}, nanos {})",
                at.seconds, at.nanos
            ),
        ));
    }
    u32::try_from(at.nanos)
        .ok()
        .and_then(|nanos| DateTime::from_timestamp(at.seconds, nanos))
        .ok_or_else(|| DomainError::invalid(field, "must be a valid time"))
}

/// A mute's end: unset means until unmuted; a time must be a valid one, ahead.
pub fn mute_until(until: Option<Timestamp>) -> Result<Option<DateTime<Utc>>, DomainError> {
    let Some(until) = until else {
        return Ok(None);
    };
    let at = time_in("until", until)?;
    if at <= Utc::now() {
        return Err(DomainError::invalid(
            "until",
            format!("must be in the future, got {}", at.to_rfc3339()),
        ));
    }
    Ok(Some(at))
}

/// A sequence number a request may name: 0 or more.
pub fn seq(field: &'static str, value: Option<i64>) -> Result<Option<i64>, DomainError> {
    match value {
        Some(v) if v < 0 => Err(DomainError::invalid(
            field,
            format!("must not be negative, got {v}"),
        )),
        other => Ok(other),
    }
}

pub fn version(value: i64) -> Result<i64, DomainError> {
    if value < 0 {
        return Err(DomainError::invalid(
            "version",
            format!("must not be negative, got {value}"),
        ));
    }
    Ok(value)
}

/// Reads a proto enum field, refusing UNSPECIFIED and numbers this build does not know.
fn known_enum<P, D>(
    field: &'static str,
    raw: i32,
    map: fn(P) -> Option<D>,
) -> Result<D, DomainError>
where
    P: TryFrom<i32>,
{
    P::try_from(raw).ok().and_then(map).ok_or_else(|| {
        DomainError::invalid(field, format!("must be set to a known value, got {raw}"))
    })
}

pub fn relation_status(raw: i32) -> Result<RelationStatus, DomainError> {
    known_enum("status", raw, |status| match status {
        pb::RelationStatus::Pending => Some(RelationStatus::Pending),
        pb::RelationStatus::Active => Some(RelationStatus::Active),
        pb::RelationStatus::Archived => Some(RelationStatus::Archived),
        pb::RelationStatus::Unspecified => None,
    })
}

pub fn inquiry_status(raw: i32) -> Result<InquiryStatus, DomainError> {
    known_enum("status", raw, |status| match status {
        pb::InquiryStatus::Open => Some(InquiryStatus::Open),
        pb::InquiryStatus::Accepted => Some(InquiryStatus::Accepted),
        pb::InquiryStatus::Declined => Some(InquiryStatus::Declined),
        pb::InquiryStatus::Closed => Some(InquiryStatus::Closed),
        pb::InquiryStatus::Unspecified => None,
    })
}

pub fn contact_access_state(raw: i32) -> Result<ContactAccessState, DomainError> {
    known_enum("state", raw, |state| match state {
        pb::ContactAccessState::Locked => Some(ContactAccessState::Locked),
        pb::ContactAccessState::Unlocked => Some(ContactAccessState::Unlocked),
        pb::ContactAccessState::Revoked => Some(ContactAccessState::Revoked),
        pb::ContactAccessState::Unspecified => None,
    })
}

pub fn side(side: domain::Side) -> pb::Side {
    match side {
        domain::Side::Tutor => pb::Side::Tutor,
        domain::Side::Student => pb::Side::Student,
    }
}

/// One event of a thread's stream (WatchThread).
pub fn thread_event(event: domain::ThreadEvent) -> pb::ThreadEvent {
    use domain::ThreadChange;
    use pb::thread_event::Event;
    let shown = match event.change {
        ThreadChange::Snapshot(snapshot) => Event::Snapshot(pb::ThreadSnapshot {
            last_seq: snapshot.last_seq,
            my_last_read_seq: snapshot.my_last_read_seq,
            peer_last_read_seq: snapshot.peer_last_read_seq,
            writable: snapshot.writable,
            reset: snapshot.reset,
        }),
        ThreadChange::MessageCreated(created) => Event::MessageCreated(message(created)),
        ThreadChange::MessageEdited(edited) => Event::MessageEdited(message(edited)),
        ThreadChange::MessageDeleted(tombstone) => Event::MessageDeleted(message(tombstone)),
        ThreadChange::ReadMoved {
            side: moved,
            last_read_seq,
        } => Event::ReadMoved(pb::ReadMoved {
            side: side(moved).into(),
            last_read_seq,
        }),
        ThreadChange::Typing {
            side: typing,
            until,
        } => Event::Typing(pb::Typing {
            side: side(typing).into(),
            until: Some(timestamp(until)),
        }),
        ThreadChange::State { writable } => Event::ThreadState(pb::ThreadState { writable }),
    };
    pb::ThreadEvent {
        thread_id: event.thread_id,
        version: event.version,
        event: Some(shown),
    }
}

/// One event of the outbox (StreamEvents).
pub fn event(event: domain::Event) -> pb::Event {
    use domain::{EventData, EventKind};
    use pb::event::Data;
    let read = |side_of: domain::Side, user_id, last_read_seq, unread| pb::ReadEvent {
        side: side(side_of).into(),
        user_id,
        last_read_seq,
        unread,
    };
    let data = match (event.kind, event.data) {
        (_, EventData::ThreadCreated(created)) => Data::ThreadCreated(thread(created)),
        (EventKind::MessageEdited, EventData::Message(edited)) => {
            Data::MessageEdited(message(edited))
        }
        (_, EventData::Message(created)) => Data::MessageCreated(message(created)),
        (
            _,
            EventData::MessageDeleted {
                message: tombstone,
                removed_by_moderation,
            },
        ) => Data::MessageDeleted(pb::MessageDeletedEvent {
            message: Some(message(tombstone)),
            removed_by_moderation,
        }),
        (
            kind,
            EventData::Read {
                side,
                user_id,
                last_read_seq,
                unread,
            },
        ) => match kind {
            EventKind::ThreadMarkedUnread => {
                Data::ThreadMarkedUnread(read(side, user_id, last_read_seq, unread))
            }
            _ => Data::ThreadRead(read(side, user_id, last_read_seq, unread)),
        },
        (
            kind,
            EventData::Mute {
                side: muted,
                user_id,
                until,
            },
        ) => {
            let mute = pb::MuteEvent {
                side: side(muted).into(),
                user_id,
                until: until.map(timestamp),
            };
            match kind {
                EventKind::ThreadUnmuted => Data::ThreadUnmuted(mute),
                _ => Data::ThreadMuted(mute),
            }
        }
        (
            _,
            EventData::Writability {
                is_writable,
                tutor_may_write,
                student_may_write,
            },
        ) => Data::WritabilityChanged(pb::WritabilityEvent {
            is_writable,
            tutor_may_write,
            student_may_write,
        }),
        (
            _,
            EventData::UserErased {
                user_id,
                messages_erased,
            },
        ) => Data::UserErased(pb::UserErasedEvent {
            user_id,
            messages_erased,
        }),
        (
            _,
            EventData::UnreadReminder {
                user_id,
                side: reminded,
                unread_count,
                oldest_unread_at,
                peer_id,
            },
        ) => Data::UnreadReminder(pb::UnreadReminderEvent {
            user_id,
            side: side(reminded).into(),
            thread_id: event.thread_id,
            unread_count,
            oldest_unread_at: oldest_unread_at.map(timestamp),
            peer_id,
        }),
    };
    pb::Event {
        position: event.position,
        id: event.id,
        r#type: event.kind.as_str().to_owned(),
        thread_id: event.thread_id,
        thread_version: event.thread_version,
        time: Some(timestamp(event.time)),
        data: Some(data),
    }
}
