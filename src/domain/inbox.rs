//! ListThreads: the caller's inbox, every thread of theirs on the token's side, one
//! keyset page at a time.

use chrono::{DateTime, Utc};

use super::{Caller, Chat, DomainError, SummaryKey, ThreadUnread, caller_side, now_ms};
use crate::storage::InboxCursor;

/// A page of the inbox, and where the next one starts (`None` on the last page).
#[derive(Debug, Clone)]
pub struct InboxPage {
    pub threads: Vec<ThreadUnread>,
    pub next_page_token: Option<String>,
}

impl Chat {
    /// A page of the caller's inbox (`rules::inbox_position`, newest first), from the
    /// top or from where `page_token` left off.
    pub async fn list_threads(
        &self,
        caller: Caller,
        limit: i64,
        page_token: &str,
    ) -> Result<InboxPage, DomainError> {
        let key = SummaryKey::new(caller.user_id, caller_side(caller)?);
        let after = match page_token {
            "" => None,
            token => Some(parse_token(token)?),
        };
        // One more than the page: whether another page follows.
        let mut rows = self
            .store
            .inbox_page(key, after, limit + 1, now_ms())
            .await?;
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let next_page_token = more
            .then(|| rows.last().map(|(_, cursor)| token_of(*cursor)))
            .flatten();
        Ok(InboxPage {
            threads: rows.into_iter().map(|(line, _)| line).collect(),
            next_page_token,
        })
    }
}

/// The page token of a position: opaque to clients (hex of `i1:<nanos>:<thread_id>`),
/// so none comes to depend on its form.
fn token_of(cursor: InboxCursor) -> String {
    let nanos = cursor.position.timestamp_nanos_opt().unwrap_or(i64::MAX);
    hex::encode(format!("i1:{nanos}:{}", cursor.thread_id))
}

fn parse_token(token: &str) -> Result<InboxCursor, DomainError> {
    let invalid = || {
        DomainError::invalid(
            "page_token",
            "is not a token ListThreads gave: pass next_page_token as it came, or none for \
             the first page",
        )
    };
    let text = hex::decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(invalid)?;
    let mut parts = text.strip_prefix("i1:").ok_or_else(invalid)?.split(':');
    let nanos: i64 = parts
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(invalid)?;
    let thread_id: i64 = parts
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(invalid)?;
    if parts.next().is_some() {
        return Err(invalid());
    }
    Ok(InboxCursor {
        position: DateTime::<Utc>::from_timestamp_nanos(nanos),
        thread_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_others_are_refused() {
        let cursor = InboxCursor {
            position: DateTime::<Utc>::from_timestamp_nanos(1_764_500_000_123_456_789),
            thread_id: 42,
        };
        assert_eq!(parse_token(&token_of(cursor)).unwrap(), cursor);
        for bad in [
            "x",
            "00",
            &hex::encode("i1:5"),
            &hex::encode("i1:5:6:7"),
            &hex::encode("i2:5:6"),
        ] {
            assert!(
                matches!(
                    parse_token(bad),
                    Err(DomainError::InvalidArgument {
                        field: "page_token",
                        ..
                    })
                ),
                "{bad}"
            );
        }
    }
}
