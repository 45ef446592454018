//! What a failed database call means for its caller, read from the error's code, never
//! from text a server may translate.
//!
//! - PostgreSQL: the SQLSTATE. diesel 2.3 has no accessor for it, so chatd's copy of
//!   diesel-async (`vendor/diesel-async/PATCHED.md`) writes it at the head of every
//!   server error's message, `[40P01] deadlock detected`, whatever `lc_messages` is.
//!   Errors the server never sent (a dropped socket) are diesel's `ClosedConnection`
//!   and `UnableToSendCommand` kinds.
//! - SQLite: its result codes' texts (`sqlite3_errstr`), fixed English strings of the
//!   library that no build translates.
//!
//! Four outcomes: a conflict with another transaction that a retry resolves (chatd
//! retries it itself, a few times), the database unreachable or out of capacity
//! (UNAVAILABLE: the client retries), its disk full (STORAGE_FULL: lasts until an
//! operator acts), and everything else (a bug: INTERNAL).

use diesel::ConnectionError;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::pooled_connection::PoolError as ManagerError;
use diesel_async::pooled_connection::deadpool::PoolError;

/// Why a storage call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another transaction got in the way (a deadlock, a serialization failure): the
    /// same call again is expected to succeed. Storage retries these itself a bounded
    /// number of times; one that still fails reaches the caller as this.
    #[error("database conflict: {0}")]
    Conflict(String),
    /// The database cannot be reached (or is too busy): the caller may retry.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database has no room left for what a write adds: not transient, it lasts
    /// until someone frees disk space.
    #[error("database storage is full: {0}")]
    Full(String),
    /// Anything else: a bug, a violated invariant or corrupt data.
    #[error("database error: {0}")]
    Query(DieselError),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The SQLSTATE at the head of a PostgreSQL error's message (see the module's doc).
pub fn sql_state(message: &str) -> Option<&str> {
    let code = message.strip_prefix('[')?.get(..5)?;
    let closed = message.get(6..7) == Some("]");
    (closed
        && code
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()))
    .then_some(code)
}

/// SQLSTATEs of a conflict between transactions, which a retry resolves:
/// serialization_failure, deadlock_detected, lock_not_available.
const CONFLICT: [&str; 3] = ["40001", "40P01", "55P03"];

/// SQLSTATEs (or classes, two characters) of a server that cannot take the call now: a
/// connection exception (08, pgbouncer's errors included), too many connections,
/// out of memory or another resource (53, but for a full disk), an operator's or a
/// crash's shutdown, a server starting up (57P0x), a statement cut off by its timeout
/// (57014), a system or I/O error (58), an idle session ended by the server.
const UNAVAILABLE: [&str; 5] = ["08", "53", "57", "58", "25P03"];

/// disk_full.
const DISK_FULL: &str = "53100";

/// too_many_connections: the server (`max_connections`), a role or a database limit.
pub const TOO_MANY_CONNECTIONS: &str = "53300";

/// invalid_sql_statement_name: behind a transaction-mode pooler, a statement prepared
/// on one server connection and run on another.
const NO_SUCH_PREPARED_STATEMENT: &str = "26000";

/// SQLite's fixed texts of a full disk and of a lock another process held too long.
const SQLITE_FULL: &str = "database or disk is full";
const SQLITE_BUSY: [&str; 2] = ["database is locked", "database table is locked"];

fn classify_postgres(code: &str, message: &str) -> Option<StoreError> {
    let unavailable = || StoreError::Unavailable(message.to_owned());
    if code == DISK_FULL {
        return Some(StoreError::Full(message.to_owned()));
    }
    if CONFLICT.contains(&code) {
        return Some(StoreError::Conflict(message.to_owned()));
    }
    if code == NO_SUCH_PREPARED_STATEMENT {
        return Some(StoreError::Unavailable(format!(
            "{message}: is --database-url a pooler in transaction mode? Then start chatd \
             with --db-pooler transaction"
        )));
    }
    UNAVAILABLE
        .iter()
        .any(|class| code.starts_with(class))
        .then(unavailable)
}

impl StoreError {
    /// A failed commit: storage full when it says so, else the database unavailable.
    pub fn of_commit(error: &DieselError) -> Self {
        match StoreError::classify(error) {
            Some(StoreError::Full(detail)) => StoreError::Full(detail),
            _ => StoreError::Unavailable(format!("the commit failed: {error}")),
        }
    }

    /// What `error` means, when it is a database's word on the call (`None`: a bug).
    fn classify(error: &DieselError) -> Option<StoreError> {
        let DieselError::DatabaseError(kind, info) = error else {
            return None;
        };
        let message = info.message();
        if let Some(code) = sql_state(message) {
            return classify_postgres(code, message);
        }
        match kind {
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand => {
                Some(StoreError::Unavailable(message.to_owned()))
            }
            DatabaseErrorKind::SerializationFailure => {
                Some(StoreError::Conflict(message.to_owned()))
            }
            _ if message.contains(SQLITE_FULL) => Some(StoreError::Full(message.to_owned())),
            _ if SQLITE_BUSY.iter().any(|busy| message.contains(busy)) => {
                Some(StoreError::Unavailable(message.to_owned()))
            }
            _ => None,
        }
    }

    /// Whether the same call again is expected to succeed (see `Conflict`).
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict(_))
    }
}

impl From<DieselError> for StoreError {
    fn from(error: DieselError) -> Self {
        StoreError::classify(&error).unwrap_or(StoreError::Query(error))
    }
}

/// Whether opening a connection failed because the database has as many as it allows.
pub fn refused_for_too_many_connections(error: &PoolError) -> bool {
    let PoolError::Backend(ManagerError::ConnectionError(error)) = error else {
        return false;
    };
    let message = match error {
        ConnectionError::CouldntSetupConfiguration(DieselError::DatabaseError(_, info)) => {
            info.message().to_owned()
        }
        ConnectionError::BadConnection(message) => message.clone(),
        _ => return false,
    };
    sql_state(&message) == Some(TOO_MANY_CONNECTIONS)
}

impl From<PoolError> for StoreError {
    fn from(error: PoolError) -> Self {
        StoreError::Unavailable(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn postgres(message: &str) -> StoreError {
        StoreError::from(DieselError::DatabaseError(
            DatabaseErrorKind::Unknown,
            Box::new(message.to_owned()),
        ))
    }

    #[test]
    fn postgresql_errors_are_told_apart_by_sqlstate_in_any_language() {
        // The same codes with German texts: the class follows the code alone.
        assert!(matches!(
            postgres("[40P01] Verklemmung (Deadlock) entdeckt"),
            StoreError::Conflict(_)
        ));
        assert!(matches!(
            postgres(
                "[57P01] Verbindung wird abgebrochen aufgrund von Anweisung des Administrators"
            ),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            postgres("[53300] tut mir leid, schon zu viele Verbindungen"),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            postgres("[53100] kein Platz mehr auf dem Gerät"),
            StoreError::Full(_)
        ));
        assert!(matches!(
            postgres("[08P01] query_wait_timeout"),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            postgres("[23505] doppelter Schlüsselwert"),
            StoreError::Query(_)
        ));
        // Text alone decides nothing for PostgreSQL: an English deadlock text without
        // its code is not read as one.
        assert!(matches!(
            postgres("[XX000] deadlock detected"),
            StoreError::Query(_)
        ));
    }

    #[test]
    fn sqlstate_is_read_only_from_its_place() {
        assert_eq!(sql_state("[40P01] deadlock detected"), Some("40P01"));
        assert_eq!(sql_state("deadlock [40P01]"), None);
        assert_eq!(sql_state("[40p01] lower case"), None);
        assert_eq!(sql_state("[4000] short"), None);
    }

    #[test]
    fn sqlite_errors_by_their_fixed_texts() {
        assert!(matches!(
            postgres("database or disk is full"),
            StoreError::Full(_)
        ));
        assert!(matches!(
            postgres("database is locked"),
            StoreError::Unavailable(_)
        ));
    }
}
