//! A pooled connection for one storage call, that works behind a transaction-mode
//! pooler too.
//!
//! pgbouncer in transaction mode keeps a client on one server connection only for a
//! transaction. tokio-postgres prepares every statement by name in a round trip of its
//! own, then binds it in another: outside a transaction the two may reach different
//! server connections ("prepared statement \"s21\" does not exist"). So behind such a
//! pooler a session opens a transaction first and ends it in `finish`; without one it is
//! the plain connection.

use diesel::QueryResult;
use diesel_async::{AsyncConnection, TransactionManager};

use super::Conn;
use super::ceiling::PooledConn;

type Transactions = <Conn as AsyncConnection>::TransactionManager;

/// A pooled connection for one call; `finish` ends it.
pub struct PgSession {
    /// `None` once finished or given up.
    conn: Option<PooledConn>,
    /// Whether a transaction was opened, to be committed or rolled back by `finish`.
    in_transaction: bool,
}

impl PgSession {
    /// Takes `conn` for one call, in a transaction when `transaction` says so.
    pub async fn begin(mut conn: PooledConn, transaction: bool) -> QueryResult<Self> {
        if transaction {
            Transactions::begin_transaction(&mut *conn).await?;
        }
        Ok(Self {
            conn: Some(conn),
            in_transaction: transaction,
        })
    }

    /// Ends the call with its `result`: commits when it succeeded (a failed commit is
    /// the call's error), rolls back when it failed.
    pub async fn finish<T>(mut self, result: QueryResult<T>) -> QueryResult<T> {
        let Some(mut conn) = self.conn.take() else {
            return result;
        };
        if !self.in_transaction {
            return result;
        }
        match result {
            Ok(value) => {
                let committed = Transactions::commit_transaction(&mut *conn).await;
                if committed.is_err() {
                    // Its state is unknown: it does not go back to the pool.
                    conn.discard();
                }
                committed.map(|()| value)
            }
            Err(error) => {
                if Transactions::rollback_transaction(&mut *conn)
                    .await
                    .is_err()
                {
                    conn.discard();
                }
                Err(error)
            }
        }
    }
}

impl Drop for PgSession {
    /// A call dropped before `finish` (its client went away) may leave a transaction
    /// open: the connection is closed, which ends it, rather than pooled mid-transaction.
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && self.in_transaction
        {
            conn.discard();
        }
    }
}

impl std::ops::Deref for PgSession {
    type Target = Conn;

    fn deref(&self) -> &Conn {
        // Only `finish` and `drop` take the connection, and both consume the session.
        self.conn
            .as_deref()
            .unwrap_or_else(|| unreachable!("a live session"))
    }
}

impl std::ops::DerefMut for PgSession {
    fn deref_mut(&mut self) -> &mut Conn {
        self.conn
            .as_deref_mut()
            .unwrap_or_else(|| unreachable!("a live session"))
    }
}
