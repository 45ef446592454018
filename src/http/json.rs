//! The REST contract's JSON bodies (snake_case, ids as numbers, absent ids null, RFC 3339
//! timestamps), converted from the chat.v1 messages the gateway receives.

use chrono::{DateTime, SecondsFormat};
use serde::{Deserialize, Serialize};

use crate::proto as pb;

/// POST /threads/negotiation/: exactly one of the two targets (an explicit null is
/// refused rather than read as absent, as the contract's bodies never carry one).
#[derive(Debug, Deserialize)]
pub struct EnsureThreadBody {
    #[serde(default, deserialize_with = "present")]
    pub relation_id: Option<i64>,
    #[serde(default, deserialize_with = "present")]
    pub inquiry_id: Option<i64>,
}

/// A field that may be absent (`default` makes it `None`) but not null.
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    i64::deserialize(deserializer).map(Some)
}

/// POST /threads/{id}/read/: `{}`, no body or a null `up_to_seq` reads everything.
#[derive(Debug, Default, Deserialize)]
pub struct MarkReadBody {
    #[serde(default)]
    pub up_to_seq: Option<i64>,
}

/// PATCH /threads/{id}/messages/{seq}/.
#[derive(Debug, Deserialize)]
pub struct EditMessageBody {
    pub body: String,
}

/// POST /threads/{id}/unread/.
#[derive(Debug, Deserialize)]
pub struct MarkUnreadBody {
    pub from_seq: i64,
}

/// PUT /threads/{id}/mute/: `{}` mutes until unmuted; `until` is an RFC 3339 time.
#[derive(Debug, Default, Deserialize)]
pub struct MuteBody {
    #[serde(default)]
    pub until: Option<String>,
}

/// POST /threads/{id}/messages/.
#[derive(Debug, Deserialize)]
pub struct SendMessageBody {
    pub body: String,
    #[serde(default)]
    pub client_message_id: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ThreadJson {
    pub thread_id: i64,
    pub kind: &'static str,
    pub relation_id: Option<i64>,
    pub inquiry_id: Option<i64>,
    pub tutor_id: i64,
    pub student_id: i64,
    pub is_writable: bool,
    pub created: bool,
    pub created_at: String,
}

#[derive(Debug, Serialize)]
pub struct ThreadUnreadJson {
    pub thread_id: i64,
    pub kind: &'static str,
    pub relation_id: Option<i64>,
    pub inquiry_id: Option<i64>,
    pub tutor_id: i64,
    pub student_id: i64,
    pub unread_count: i64,
    pub last_message_at: Option<String>,
    pub last_message_preview: String,
    /// Null, like `last_message_at`, when the thread shows no message.
    pub last_message_sender_id: Option<i64>,
    pub is_writable: bool,
    pub muted: bool,
    pub muted_until: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct UnreadSummaryJson {
    pub threads: Vec<ThreadUnreadJson>,
    pub total: i64,
    pub muted_total: i64,
}

/// One `summary` event of the SSE stream: the summary as GET answers it, plus the etag
/// GET would send in its `ETag` header (quoted), so a client that falls back to polling
/// starts from what it already shows.
#[derive(Debug, Serialize)]
pub struct SummaryEventJson {
    #[serde(flatten)]
    pub summary: UnreadSummaryJson,
    pub etag: String,
}

impl From<pb::WatchUnreadSummaryResponse> for SummaryEventJson {
    fn from(summary: pb::WatchUnreadSummaryResponse) -> Self {
        Self {
            etag: quoted_etag(&summary.etag),
            summary: UnreadSummaryJson::from(summary),
        }
    }
}

/// An entity tag as HTTP writes it (RFC 9110 §8.8.3): chatd's opaque tag, quoted.
pub fn quoted_etag(tag: &str) -> String {
    format!("\"{tag}\"")
}

/// PUT and DELETE /threads/{id}/mute/.
#[derive(Debug, Serialize)]
pub struct MuteJson {
    pub thread_id: i64,
    pub muted: bool,
    pub muted_until: Option<String>,
    pub total: i64,
}

impl From<pb::MuteThreadResponse> for MuteJson {
    fn from(state: pb::MuteThreadResponse) -> Self {
        Self {
            thread_id: state.thread_id,
            muted: state.muted,
            muted_until: rfc3339(state.muted_until),
            total: state.total,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ReadStateJson {
    pub thread_id: i64,
    pub last_read_seq: i64,
    pub unread_count: i64,
    pub total: i64,
}

#[derive(Debug, Serialize)]
pub struct MessageJson {
    pub message_id: i64,
    pub thread_id: i64,
    pub seq: i64,
    pub sender_id: i64,
    pub body: String,
    pub created_at: String,
    pub client_message_id: Option<String>,
    pub edited_at: Option<String>,
    pub deleted: bool,
    pub deleted_at: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct MessagePageJson {
    pub messages: Vec<MessageJson>,
    pub last_read_seq: i64,
    pub peer_last_read_seq: i64,
    pub has_more: bool,
}

fn kind(kind: i32) -> &'static str {
    match pb::ThreadKind::try_from(kind) {
        Ok(pb::ThreadKind::Contact) => "contact",
        Ok(pb::ThreadKind::Negotiation) => "negotiation",
        _ => "unspecified",
    }
}

/// RFC 3339 in UTC with microseconds, e.g. `2026-11-24T21:45:46.439151Z`.
fn rfc3339(at: Option<prost_types::Timestamp>) -> Option<String> {
    let at = at?;
    let nanos = u32::try_from(at.nanos).ok()?;
    DateTime::from_timestamp(at.seconds, nanos)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true))
}

impl ThreadJson {
    /// `None` when chatd's answer has no `created_at`, which chatd always sends.
    pub fn new(thread: pb::Thread, created: bool) -> Option<Self> {
        Some(Self {
            thread_id: thread.thread_id,
            kind: kind(thread.kind),
            relation_id: thread.relation_id,
            inquiry_id: thread.inquiry_id,
            tutor_id: thread.tutor_id,
            student_id: thread.student_id,
            is_writable: thread.is_writable,
            created,
            created_at: rfc3339(thread.created_at)?,
        })
    }
}

impl From<pb::GetUnreadSummaryResponse> for UnreadSummaryJson {
    fn from(summary: pb::GetUnreadSummaryResponse) -> Self {
        Self::new(summary.threads, summary.total, summary.muted_total)
    }
}

impl From<pb::WatchUnreadSummaryResponse> for UnreadSummaryJson {
    fn from(summary: pb::WatchUnreadSummaryResponse) -> Self {
        Self::new(summary.threads, summary.total, summary.muted_total)
    }
}

impl From<pb::ThreadUnread> for ThreadUnreadJson {
    fn from(t: pb::ThreadUnread) -> Self {
        Self {
            thread_id: t.thread_id,
            kind: kind(t.kind),
            relation_id: t.relation_id,
            inquiry_id: t.inquiry_id,
            tutor_id: t.tutor_id,
            student_id: t.student_id,
            unread_count: t.unread_count,
            last_message_sender_id: t.last_message_at.map(|_| t.last_message_sender_id),
            last_message_at: rfc3339(t.last_message_at),
            last_message_preview: t.last_message_preview,
            is_writable: t.is_writable,
            muted: t.muted,
            muted_until: rfc3339(t.muted_until),
        }
    }
}

impl UnreadSummaryJson {
    fn new(threads: Vec<pb::ThreadUnread>, total: i64, muted_total: i64) -> Self {
        Self {
            threads: threads.into_iter().map(ThreadUnreadJson::from).collect(),
            total,
            muted_total,
        }
    }
}

/// GET /threads/: a page of the inbox.
#[derive(Debug, Serialize)]
pub struct ThreadListJson {
    pub threads: Vec<ThreadUnreadJson>,
    /// The next page's token; null on the last page.
    pub next_page_token: Option<String>,
}

impl From<pb::ListThreadsResponse> for ThreadListJson {
    fn from(page: pb::ListThreadsResponse) -> Self {
        Self {
            threads: page
                .threads
                .into_iter()
                .map(ThreadUnreadJson::from)
                .collect(),
            next_page_token: Some(page.next_page_token).filter(|token| !token.is_empty()),
        }
    }
}

impl From<pb::MarkUnreadResponse> for ReadStateJson {
    fn from(state: pb::MarkUnreadResponse) -> Self {
        Self {
            thread_id: state.thread_id,
            last_read_seq: state.last_read_seq,
            unread_count: state.unread_count,
            total: state.total,
        }
    }
}

impl From<pb::MarkReadResponse> for ReadStateJson {
    fn from(state: pb::MarkReadResponse) -> Self {
        Self {
            thread_id: state.thread_id,
            last_read_seq: state.last_read_seq,
            unread_count: state.unread_count,
            total: state.total,
        }
    }
}

impl MessageJson {
    /// `None` when chatd's answer has no `created_at`, which chatd always sends.
    pub fn new(message: pb::Message) -> Option<Self> {
        Some(Self {
            message_id: message.message_id,
            thread_id: message.thread_id,
            seq: message.seq,
            sender_id: message.sender_id,
            body: message.body,
            created_at: rfc3339(message.created_at)?,
            client_message_id: Some(message.client_message_id).filter(|id| !id.is_empty()),
            edited_at: rfc3339(message.edited_at),
            deleted: message.deleted,
            deleted_at: rfc3339(message.deleted_at),
        })
    }
}

impl MessagePageJson {
    /// `None` when a message of chatd's answer has no `created_at`.
    pub fn new(page: pb::ListMessagesResponse) -> Option<Self> {
        Some(Self {
            messages: page
                .messages
                .into_iter()
                .map(MessageJson::new)
                .collect::<Option<_>>()?,
            last_read_seq: page.last_read_seq,
            peer_last_read_seq: page.peer_last_read_seq,
            has_more: page.has_more,
        })
    }
}

/// POST /unread-summary/stream-ticket: a one-use ticket for the event stream.
#[derive(Debug, Serialize)]
pub struct StreamTicketJson {
    pub ticket: String,
    pub expires_in: i32,
}

impl From<pb::CreateStreamTicketResponse> for StreamTicketJson {
    fn from(response: pb::CreateStreamTicketResponse) -> Self {
        Self {
            ticket: response.ticket,
            expires_in: response.expires_in,
        }
    }
}

/// One `thread-event` of the thread's SSE stream: the ThreadEvent as JSON, exactly one
/// of its event fields set (as protobuf's JSON mapping writes a oneof).
#[derive(Debug, Serialize)]
pub struct ThreadEventJson {
    pub thread_id: i64,
    pub version: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<ThreadSnapshotJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_created: Option<MessageJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_edited: Option<MessageJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_deleted: Option<MessageJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_moved: Option<ReadMovedJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub typing: Option<TypingJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread_state: Option<ThreadStateJson>,
}

#[derive(Debug, Serialize)]
pub struct ThreadSnapshotJson {
    pub last_seq: i64,
    pub my_last_read_seq: i64,
    pub peer_last_read_seq: i64,
    pub writable: bool,
    pub reset: bool,
}

#[derive(Debug, Serialize)]
pub struct ReadMovedJson {
    pub side: &'static str,
    pub last_read_seq: i64,
}

#[derive(Debug, Serialize)]
pub struct TypingJson {
    pub side: &'static str,
    pub until: String,
}

#[derive(Debug, Serialize)]
pub struct ThreadStateJson {
    pub writable: bool,
}

/// POST /threads/{id}/typing/: when the announcement ends by itself.
#[derive(Debug, Serialize)]
pub struct TypingUntilJson {
    pub until: String,
}

fn side(side: i32) -> &'static str {
    match pb::Side::try_from(side) {
        Ok(pb::Side::Tutor) => "tutor",
        Ok(pb::Side::Student) => "student",
        _ => "unspecified",
    }
}

impl ThreadEventJson {
    /// `None` when chatd's event lacks what it always sends (the event, a time).
    pub fn new(event: pb::ThreadEvent) -> Option<Self> {
        use pb::thread_event::Event;
        let mut json = Self {
            thread_id: event.thread_id,
            version: event.version,
            snapshot: None,
            message_created: None,
            message_edited: None,
            message_deleted: None,
            read_moved: None,
            typing: None,
            thread_state: None,
        };
        match event.event? {
            Event::Snapshot(snapshot) => {
                json.snapshot = Some(ThreadSnapshotJson {
                    last_seq: snapshot.last_seq,
                    my_last_read_seq: snapshot.my_last_read_seq,
                    peer_last_read_seq: snapshot.peer_last_read_seq,
                    writable: snapshot.writable,
                    reset: snapshot.reset,
                })
            }
            Event::MessageCreated(message) => {
                json.message_created = Some(MessageJson::new(message)?)
            }
            Event::MessageEdited(message) => json.message_edited = Some(MessageJson::new(message)?),
            Event::MessageDeleted(message) => {
                json.message_deleted = Some(MessageJson::new(message)?)
            }
            Event::ReadMoved(moved) => {
                json.read_moved = Some(ReadMovedJson {
                    side: side(moved.side),
                    last_read_seq: moved.last_read_seq,
                })
            }
            Event::Typing(typing) => {
                json.typing = Some(TypingJson {
                    side: side(typing.side),
                    until: rfc3339(typing.until)?,
                })
            }
            Event::ThreadState(state) => {
                json.thread_state = Some(ThreadStateJson {
                    writable: state.writable,
                })
            }
        }
        Some(json)
    }
}

impl TypingUntilJson {
    /// `None` when chatd's answer has no `until`, which chatd always sends.
    pub fn new(response: pb::SetTypingResponse) -> Option<Self> {
        Some(Self {
            until: rfc3339(response.until)?,
        })
    }
}

/// An event as a CloudEvents 1.0 JSON object (webhooks, NATS): `source` says which
/// chatd, `subject` is the thread, `data` has the event's fields in the REST API's
/// spelling; the extension attributes `position` and `threadversion` carry the resume
/// cursor and the thread's version.
pub fn cloud_event(event: pb::Event, source: &str) -> serde_json::Value {
    use pb::event::Data;
    use serde_json::json;
    let message = |message: pb::Message| MessageJson::new(message).map(|m| json!(m));
    let read = |r: pb::ReadEvent| {
        json!({
            "side": side(r.side), "user_id": r.user_id,
            "last_read_seq": r.last_read_seq, "unread": r.unread,
        })
    };
    let mute = |m: pb::MuteEvent| json!({"side": side(m.side), "user_id": m.user_id, "until": rfc3339(m.until)});
    let data = match event.data {
        Some(Data::ThreadCreated(thread)) => ThreadJson::new(thread, true).map(|t| json!(t)),
        Some(Data::MessageCreated(m) | Data::MessageEdited(m)) => message(m),
        Some(Data::MessageDeleted(d)) => d
            .message
            .and_then(message)
            .map(|m| json!({"message": m, "removed_by_moderation": d.removed_by_moderation})),
        Some(Data::ThreadRead(r) | Data::ThreadMarkedUnread(r)) => Some(read(r)),
        Some(Data::ThreadMuted(m) | Data::ThreadUnmuted(m)) => Some(mute(m)),
        Some(Data::WritabilityChanged(w)) => Some(json!({
            "is_writable": w.is_writable,
            "tutor_may_write": w.tutor_may_write,
            "student_may_write": w.student_may_write,
        })),
        Some(Data::UserErased(e)) => Some(json!({
            "user_id": e.user_id, "messages_erased": e.messages_erased,
        })),
        Some(Data::UnreadReminder(r)) => Some(json!({
            "user_id": r.user_id, "side": side(r.side), "thread_id": r.thread_id,
            "unread_count": r.unread_count, "oldest_unread_at": rfc3339(r.oldest_unread_at),
            "peer_id": r.peer_id,
        })),
        None => None,
    };
    let mut cloud = json!({
        "specversion": "1.0",
        "id": event.id,
        "source": source,
        "type": event.r#type,
        "time": rfc3339(event.time),
        "datacontenttype": "application/json",
        "data": data.unwrap_or(serde_json::Value::Null),
        "position": event.position,
        "threadversion": event.thread_version,
    });
    if event.thread_id > 0 {
        cloud["subject"] = json!(event.thread_id.to_string());
    }
    cloud
}
