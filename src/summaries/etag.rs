//! A summary's entity tag and the `If-None-Match` condition that compares with it:
//! the two halves of a poll that costs one key lookup when nothing changed.

use crate::model::{Side, SummaryKey};

/// A summary's etag: whose summary it is (side and user), the version, the page size
/// (a different page of the same version is different content) and, when a mute of it
/// ends by itself, that time: past it the summary has changed with no write, so the
/// etag names content that is no longer current. `t42.v5.l50`, `s7.v3.l50.e1764500000000`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Etag {
    pub key: SummaryKey,
    pub version: i64,
    pub limit: i64,
    pub changes_at: Option<i64>,
}

impl Etag {
    /// Reads an etag back; `None` for anything chatd did not make.
    pub fn parse(tag: &str) -> Option<Etag> {
        let mut parts = tag.split('.');
        let owner = parts.next()?;
        let side = match owner.as_bytes().first()? {
            b't' => Side::Tutor,
            b's' => Side::Student,
            _ => return None,
        };
        let number = |part: Option<&str>, prefix: char| -> Option<i64> {
            let digits = part?.strip_prefix(prefix)?;
            let value: i64 = digits.parse().ok()?;
            (value.to_string() == digits).then_some(value)
        };
        let user_id = number(Some(owner), owner.chars().next()?)?;
        let version = number(parts.next(), 'v')?;
        let limit = number(parts.next(), 'l')?;
        let changes_at = match parts.next() {
            None => None,
            Some(part) => Some(number(Some(part), 'e')?),
        };
        if parts.next().is_some() {
            return None;
        }
        Some(Etag {
            key: SummaryKey::new(user_id, side),
            version,
            limit,
            changes_at,
        })
    }
}

impl std::fmt::Display for Etag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let side = match self.key.side {
            Side::Tutor => 't',
            Side::Student => 's',
        };
        write!(
            f,
            "{side}{}.v{}.l{}",
            self.key.user_id, self.version, self.limit
        )?;
        if let Some(at) = self.changes_at {
            write!(f, ".e{at}")?;
        }
        Ok(())
    }
}

/// An `If-None-Match` condition as RFC 9110 (§13.1.2) reads it: `*`, or a list of
/// entity tags compared weakly (`W/"x"` matches `"x"`). Over gRPC the same text goes in
/// `if_none_match`, where the etag comes unquoted: unquoted tags are read too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfNoneMatch {
    /// `*`: matches any current representation.
    Any,
    /// The tags, unquoted and without `W/`.
    Tags(Vec<String>),
}

impl IfNoneMatch {
    /// `None` for an empty field: no condition.
    pub fn parse(field: &str) -> Option<Self> {
        let field = field.trim();
        if field.is_empty() {
            return None;
        }
        if field == "*" {
            return Some(IfNoneMatch::Any);
        }
        let tags: Vec<String> = field
            .split(',')
            .map(|tag| {
                let tag = tag.trim();
                let tag = tag.strip_prefix("W/").unwrap_or(tag);
                tag.strip_prefix('"')
                    .and_then(|t| t.strip_suffix('"'))
                    .unwrap_or(tag)
                    .to_owned()
            })
            .filter(|tag| !tag.is_empty())
            .collect();
        (!tags.is_empty()).then_some(IfNoneMatch::Tags(tags))
    }

    /// Whether the current etag `etag` matches, so the answer is "not modified".
    pub fn matches(&self, etag: &str) -> bool {
        match self {
            IfNoneMatch::Any => true,
            IfNoneMatch::Tags(tags) => tags.iter().any(|tag| tag == etag),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_reads_as_rfc_9110_says() {
        let tags = |field: &str| IfNoneMatch::parse(field);
        assert_eq!(tags(""), None);
        assert_eq!(tags("*"), Some(IfNoneMatch::Any));
        assert!(tags("*").unwrap().matches("t1.v2.l50"));
        let list = tags("\"x\", W/\"t1.v2.l50\"").unwrap();
        assert!(list.matches("t1.v2.l50") && list.matches("x"));
        assert!(!list.matches("t1.v3.l50"));
        // gRPC sends the etag as it came, unquoted.
        assert!(tags("t1.v2.l50").unwrap().matches("t1.v2.l50"));
        assert_eq!(tags(" , "), None);
    }
    #[test]
    fn etags_name_their_owner_and_round_trip() {
        let tag = Etag {
            key: SummaryKey::new(42, Side::Tutor),
            version: 5,
            limit: 50,
            changes_at: None,
        };
        assert_eq!(tag.to_string(), "t42.v5.l50");
        assert_eq!(Etag::parse("t42.v5.l50"), Some(tag));
        let expiring = Etag {
            key: SummaryKey::new(7, Side::Student),
            changes_at: Some(1_764_500_000_000),
            ..tag
        };
        assert_eq!(Etag::parse(&expiring.to_string()), Some(expiring));
        for foreign in [
            "v5.l50",
            "t42.v5",
            "x42.v5.l50",
            "t042.v5.l50",
            "t42.v5.l50.e",
            "*",
            "",
        ] {
            assert_eq!(Etag::parse(foreign), None, "{foreign:?}");
        }
    }
}
