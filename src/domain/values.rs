//! Validated values and the records the domain hands to transports.
//!
//! Every constructor here is where raw request input becomes a value the rules can
//! trust: `positive_id("thread_id", 0)` fails naming the field, so no rule ever sees an
//! id of 0.

use super::DomainError;

use crate::model::{Message, Role, Seq, ThreadId, UserId};
use crate::summaries::UnreadSummary;

/// Longest message body accepted, in characters (not bytes).
pub const MAX_BODY_CHARS: usize = 4000;
/// Longest idempotency key accepted, in characters.
pub const MAX_CLIENT_MESSAGE_ID_CHARS: usize = 64;
/// Page size used when a request's `limit` is 0.
pub const DEFAULT_PAGE_LIMIT: i64 = 50;
/// Largest page size a request may ask for.
pub const MAX_PAGE_LIMIT: i64 = 200;

/// Parses a positive id for the named request field: 1..=2^53 − 1 (`MAX_ID`).
pub fn positive_id(field: &'static str, value: i64) -> Result<i64, DomainError> {
    if value <= 0 {
        return Err(DomainError::invalid(
            field,
            format!("must be a positive id, got {value}"),
        ));
    }
    if value > crate::model::MAX_ID {
        return Err(DomainError::invalid(
            field,
            format!(
                "must be at most {} (2^53 - 1, the largest integer a browser's JSON keeps \
                 exact), got {value}",
                crate::model::MAX_ID
            ),
        ));
    }
    Ok(value)
}

/// A thread id a request names in `thread_id` (see `positive_id`).
pub fn thread_id(value: i64) -> Result<ThreadId, DomainError> {
    positive_id("thread_id", value).map(ThreadId)
}

/// A message's place in its thread, named by a request's `field` (see `positive_id`).
pub fn seq(field: &'static str, value: i64) -> Result<Seq, DomainError> {
    positive_id(field, value).map(Seq)
}

/// A user id a request names in `field` (see `positive_id`).
pub fn user_id(field: &'static str, value: i64) -> Result<UserId, DomainError> {
    positive_id(field, value).map(UserId)
}

/// Who is calling, as proven by the bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub user_id: i64,
    pub role: Role,
}

/// When the proof of who is calling stops being honoured, in Unix ms: its token's `exp`
/// plus the allowed clock skew. A stream opened with it ends there (TOKEN_EXPIRED), so
/// access ends when the token's issuer says, not when the client hangs up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct AccessEnds(pub i64);

impl AccessEnds {
    /// For proofs that never run out (tickets minted before access ends were kept).
    pub const NEVER: AccessEnds = AccessEnds(i64::MAX);
}

/// The thing a thread is opened from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadTarget {
    Relation(i64),
    Inquiry(i64),
}

/// The characters that show nothing: whitespace (Unicode's White_Space), control
/// characters (Cc), and the characters of the Basic Multilingual Plane that Unicode
/// draws as nothing (format characters of category Cf such as zero-width spaces and
/// joiners, word joiners and the byte order mark; variation selectors; the Hangul and
/// Braille fillers that render blank). The OpenAPI document's `body` pattern is built
/// from the same ranges (`http/openapi.rs` holds the two equal).
pub const INVISIBLE: [(char, char); 19] = [
    ('\u{0000}', '\u{0020}'),
    ('\u{007F}', '\u{00A0}'),
    ('\u{00AD}', '\u{00AD}'),
    ('\u{034F}', '\u{034F}'),
    ('\u{061C}', '\u{061C}'),
    ('\u{115F}', '\u{1160}'),
    ('\u{1680}', '\u{1680}'),
    ('\u{17B4}', '\u{17B5}'),
    ('\u{180B}', '\u{180F}'),
    ('\u{2000}', '\u{200F}'),
    ('\u{2028}', '\u{202F}'),
    ('\u{205F}', '\u{206F}'),
    ('\u{2800}', '\u{2800}'),
    ('\u{3000}', '\u{3000}'),
    ('\u{3164}', '\u{3164}'),
    ('\u{FE00}', '\u{FE0F}'),
    ('\u{FEFF}', '\u{FEFF}'),
    ('\u{FFA0}', '\u{FFA0}'),
    ('\u{FFF0}', '\u{FFFB}'),
];

/// Whether a character shows (see `INVISIBLE`).
pub fn visible(c: char) -> bool {
    !INVISIBLE
        .iter()
        .any(|(first, last)| (*first..=*last).contains(&c))
}

/// A message body: 1..=4000 characters, at least one of them visible.
#[derive(Debug, Clone)]
pub struct MessageBody(String);

impl MessageBody {
    pub fn parse(body: String) -> Result<Self, DomainError> {
        if body.trim().is_empty() {
            return Err(DomainError::invalid(
                "body",
                "must not be empty or only whitespace",
            ));
        }
        if !body.chars().any(visible) {
            return Err(DomainError::invalid(
                "body",
                "must have a visible character: whitespace, zero-width and other \
                 invisible characters alone (U+200B, U+200D, U+2060, U+FEFF and the like) \
                 show nothing",
            ));
        }
        let chars = body.chars().count();
        if chars > MAX_BODY_CHARS {
            return Err(DomainError::invalid(
                "body",
                format!("must be at most {MAX_BODY_CHARS} characters, got {chars}"),
            ));
        }
        no_nul("body", &body)?;
        Ok(Self(body))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// An optional idempotency key: empty means none.
pub fn client_message_id(value: String) -> Result<Option<String>, DomainError> {
    if value.is_empty() {
        return Ok(None);
    }
    let chars = value.chars().count();
    if chars > MAX_CLIENT_MESSAGE_ID_CHARS {
        return Err(DomainError::invalid(
            "client_message_id",
            format!("must be at most {MAX_CLIENT_MESSAGE_ID_CHARS} characters, got {chars}"),
        ));
    }
    no_nul("client_message_id", &value)?;
    Ok(Some(value))
}

/// Text holds no NUL character: PostgreSQL cannot store one in TEXT, and SQLite would,
/// so both backends refuse it here alike, naming the field.
fn no_nul(field: &'static str, text: &str) -> Result<(), DomainError> {
    match text.find('\0') {
        Some(at) => Err(DomainError::invalid(
            field,
            format!("must not contain a NUL character (U+0000), found at byte {at}"),
        )),
        None => Ok(()),
    }
}

/// A page size: 0 means the default, else 1..=200.
pub fn page_limit(field: &'static str, limit: i32) -> Result<i64, DomainError> {
    match i64::from(limit) {
        0 => Ok(DEFAULT_PAGE_LIMIT),
        n @ 1..=MAX_PAGE_LIMIT => Ok(n),
        n => Err(DomainError::invalid(
            field,
            format!(
                "must be between 0 (default {DEFAULT_PAGE_LIMIT}) and {MAX_PAGE_LIMIT}, got {n}"
            ),
        )),
    }
}

/// Which page of messages a ListMessages asks for: `before_seq` pages back from the
/// newest, `after_seq` catches up, oldest first; not both.
pub fn messages_from(
    before_seq: Option<i64>,
    after_seq: Option<i64>,
) -> Result<crate::model::MessagesFrom, DomainError> {
    use crate::model::MessagesFrom;
    match (before_seq, after_seq) {
        (Some(_), Some(_)) => Err(DomainError::invalid(
            "after_seq",
            "give before_seq (paging back) or after_seq (catching up), not both",
        )),
        (Some(before), None) => Ok(MessagesFrom::Before(before)),
        (None, Some(after)) => Ok(MessagesFrom::After(after)),
        (None, None) => Ok(MessagesFrom::Newest),
    }
}

/// What GetUnreadSummary answers: the summary, or that the caller's copy is current.
#[derive(Debug, Clone, PartialEq)]
pub enum SummaryAnswer {
    Summary {
        summary: UnreadSummary,
        etag: String,
    },
    NotModified {
        etag: String,
    },
}

/// A participant's mute of a thread, and their new total.
#[derive(Debug, Clone, PartialEq)]
pub struct MuteState {
    pub thread_id: i64,
    pub muted: bool,
    /// When the mute ends by itself; `None` when not muted or muted until unmuted.
    pub muted_until: Option<chrono::DateTime<chrono::Utc>>,
    pub total: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReadState {
    pub thread_id: i64,
    pub last_read_seq: i64,
    pub unread_count: i64,
    pub total: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MessagePage {
    /// Newest first.
    pub messages: Vec<Message>,
    pub last_read_seq: i64,
    pub peer_last_read_seq: i64,
    pub has_more: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_rules_count_characters_not_bytes() {
        assert!(MessageBody::parse("ї".repeat(MAX_BODY_CHARS)).is_ok());
        let err = MessageBody::parse("a".repeat(MAX_BODY_CHARS + 1)).unwrap_err();
        assert_eq!(err.field(), Some("body"));
        assert_eq!(
            MessageBody::parse(" \n\t".into()).unwrap_err().field(),
            Some("body")
        );
    }

    #[test]
    fn a_body_needs_a_character_that_shows() {
        for invisible in [
            "\u{200B}",
            "\u{200D}\u{200D}",
            "\u{FEFF}\u{2060}",
            " \u{3164} ",
            "\u{95}\u{95}",
        ] {
            assert_eq!(
                MessageBody::parse(invisible.into()).unwrap_err().field(),
                Some("body"),
                "{invisible:?}"
            );
        }
        for shown in ["a\u{200B}", "👋", "👨\u{200D}👩", "ї", "."] {
            assert!(MessageBody::parse(shown.into()).is_ok(), "{shown:?}");
        }
    }

    #[test]
    fn whitespace_and_controls_are_invisible() {
        for c in (0..=0xFFFF_u32).filter_map(char::from_u32) {
            if c.is_whitespace() || c.is_control() {
                assert!(!visible(c), "U+{:04X}", c as u32);
            }
        }
    }

    #[test]
    fn page_limit_defaults_and_bounds() {
        assert_eq!(page_limit("limit", 0).unwrap(), DEFAULT_PAGE_LIMIT);
        assert_eq!(page_limit("limit", 200).unwrap(), 200);
        assert!(page_limit("limit", 201).is_err());
        assert!(page_limit("limit", -1).is_err());
    }

    #[test]
    fn nul_is_refused_in_text_naming_the_field() {
        let body = MessageBody::parse("a\0b".into()).unwrap_err();
        assert_eq!(body.field(), Some("body"));
        let key = client_message_id("k\0".into()).unwrap_err();
        assert_eq!(key.field(), Some("client_message_id"));
    }

    #[test]
    fn client_message_id_is_optional_and_bounded() {
        assert_eq!(client_message_id(String::new()).unwrap(), None);
        assert!(client_message_id("k".repeat(64)).is_ok());
        assert!(client_message_id("k".repeat(65)).is_err());
    }
}
