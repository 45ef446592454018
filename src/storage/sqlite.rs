//! SQLite, embedded: readers in a pool, and ONE writer connection on a thread of its own
//! that every write queues for.
//!
//! SQLite lets one writer in at a time. Several pooled connections that all write only
//! take turns through busy-wait loops (`busy_timeout`), which is slow and unfair under
//! load: seconds-long tails. One writer that writes queue for is how SQLite is fast:
//! each write is a short `BEGIN IMMEDIATE` transaction on a connection nobody else
//! touches, with its statements prepared once. WAL lets the readers run beside it.
//!
//! The writer, with its group commit and WAL checkpoints, is a room of its own
//! (`sqlite/writer.rs`); the steps writes share are `sqlite/steps.rs`; each write's own
//! function is in its file under `writes/`. With one writer, writes of one process
//! never interleave, so the checks of the rules (`crate::rules`) and the changes they
//! guard are trivially atomic.

use diesel::prelude::*;
use diesel::result::Error as DieselError;
use diesel::{RunQueryDsl, SqliteConnection};
use diesel_async::pooled_connection::deadpool::{Object, Pool};

use super::pool::{self, PoolConfig, PoolStatus, SqliteReader};
use super::writes::Write;
use super::{StoreError, StoreResult};
use writer::Writer;

pub type Conn = SqliteReader;

pub mod schema {
    //! The tables, with SQLite's timestamp type (RFC 3339 text).
    pub type Ts = diesel::sql_types::TimestamptzSqlite;
    include!("schema.rs");
}

pub mod reads {
    //! The shared reads, compiled for SQLite.
    include!("reads.rs");
}

mod checkpointer;
pub(super) mod steps;
mod writer;

pub mod tickets {
    //! Stream tickets, compiled for SQLite.
    include!("tickets.rs");
}

/// The SQLite store. Cloning is shallow.
#[derive(Clone)]
pub struct SqliteStore {
    readers: Pool<SqliteReader>,
    writer: Writer,
    pub(super) episodes: std::sync::Arc<super::Episodes>,
    /// See `Store::log_grew`.
    pub(super) log_grew: std::sync::Arc<tokio::sync::Notify>,
}

impl SqliteStore {
    /// Opens the writer connection (on its own thread) and a lazy pool of readers.
    pub fn connect(path: &str, config: &PoolConfig) -> Result<Self, String> {
        let readers = pool::sqlite_pool(path, config)?;
        let writer = Writer::open(path, config.timeout, config.sqlite_sync)?;
        Ok(Self {
            readers,
            writer,
            episodes: Default::default(),
            log_grew: Default::default(),
        })
    }

    pub async fn migrate(&self) -> Result<Vec<String>, String> {
        pool::migrate_sqlite(&self.readers).await
    }

    /// See `Store::time_writes`.
    pub fn time_writes(&self, phases: crate::metrics::WritePhases) {
        self.writer.time_phases(phases);
    }

    pub fn pool_status(&self) -> PoolStatus {
        PoolStatus::of(self.readers.status())
    }

    /// A pooled reader connection.
    pub async fn conn(&self) -> StoreResult<Object<SqliteReader>> {
        Ok(self.readers.get().await?)
    }

    pub fn failed(&self, error: DieselError) -> StoreError {
        error.into()
    }

    pub async fn execute_batch(&self, sql: &str) -> StoreResult<()> {
        use diesel_async::SimpleAsyncConnection;
        let mut conn = self.conn().await?;
        conn.batch_execute(sql).await.map_err(StoreError::from)
    }

    /// Runs one write on the writer, after the writes queued before it, in its group's
    /// transaction (see `Writer::write`).
    pub async fn run<W: Write>(&self, write: &W) -> StoreResult<W::Done> {
        let write = write.clone();
        self.writer.write(move |conn| write.sqlite(conn)).await
    }

    /// After an erasure: the index of idempotency keys is rebuilt, then everything the
    /// WAL holds is moved into the database file and the WAL truncated to nothing, so
    /// text and keys erased from the database are in neither file.
    ///
    /// Why the rebuild: when SQLite rebalances b-tree pages it copies cells between
    /// them and leaves the old bytes in the unused space between a page's cell pointers
    /// and its cells, which `secure_delete` does not zero. In the index of keys, whose
    /// entries arrive in no particular order, that happens all the time, so erased keys
    /// outlived their rows there (found by grepping the file). Rebuilding the index
    /// frees every old page, and freed pages are zeroed. It costs about 0.8 s per million
    /// keyed messages, during which writes wait. Message rows are appended in rowid
    /// order, which splits pages without copying cells.
    pub async fn after_erasure(&self) -> StoreResult<()> {
        self.writer
            .write(|conn| {
                let index = keys_index(conn)?;
                diesel::sql_query(format!("REINDEX \"{index}\"")).execute(conn)?;
                Ok(())
            })
            .await?;
        self.writer.checkpoint().await
    }
}

/// The name of the unique index on `messages (thread_id, sender_id, client_message_id)`:
/// SQLite names a table constraint's index itself (`sqlite_autoindex_messages_N`).
fn keys_index(conn: &mut SqliteConnection) -> QueryResult<String> {
    #[derive(QueryableByName)]
    struct Index {
        #[diesel(sql_type = diesel::sql_types::Text)]
        name: String,
    }
    diesel::sql_query(
        "SELECT il.name FROM pragma_index_list('messages') AS il WHERE il.\"unique\" \
         AND EXISTS (SELECT 1 FROM pragma_index_info(il.name) AS ii \
                     WHERE ii.name = 'client_message_id')",
    )
    .get_result::<Index>(conn)
    .map(|index| index.name)
}
