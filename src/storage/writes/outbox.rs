//! The outbox's own writes: numbering committed events in commit order (the
//! sequencer), events of no thread version that are no part of another write (an
//! erasure's end), the sinks' cursors, the relay's lease, and retention's trimming.
//!
//! Each statement is written once: `$1, $2, …` are PostgreSQL's parameters and SQLite's
//! named ones alike (first used in their numbers' order), and both backends run the same
//! text; PostgreSQL adds the one lock that orders sequencers on several replicas.

use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::{QueryResult, QueryableByName, SqliteConnection};

use super::Write;
use crate::model::EventKind;
use crate::storage::postgres;
use crate::storage::sqlite::steps;

/// Numbers up to `limit` committed events that have no position yet, after the newest
/// position given, in the order they were inserted.
#[derive(Debug, Clone, Copy)]
pub struct SequenceEvents {
    pub limit: i64,
}

/// What the sequencer did: how many events it numbered, and the newest position now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sequenced {
    pub numbered: i64,
    pub last_position: i64,
}

/// The numbering. Only committed rows are seen, and a thread's rows were inserted under
/// its lock, so their ids follow its versions: numbering by id keeps each thread in
/// version order, and a row that commits later gets a later position.
const NUMBER_EVENTS: &str = "\
WITH next AS (
    SELECT event_id, row_number() OVER (ORDER BY event_id) AS n
    FROM events WHERE position IS NULL ORDER BY event_id LIMIT $1
)
UPDATE events SET position = (SELECT last_position FROM event_sequence WHERE id = 1) + next.n
FROM next WHERE events.event_id = next.event_id";

const ADVANCE_SEQUENCE: &str = "\
UPDATE event_sequence SET last_position = last_position + $1 WHERE id = 1 RETURNING last_position";

#[derive(QueryableByName)]
struct Unnumbered {
    #[diesel(sql_type = BigInt)]
    #[allow(dead_code)]
    event_id: i64,
}

#[derive(QueryableByName)]
struct LastPosition {
    #[diesel(sql_type = BigInt)]
    last_position: i64,
}

impl Write for SequenceEvents {
    type Done = Sequenced;
    const NAME: &'static str = "sequence_events";
    const LOGS: bool = false;

    async fn postgres(&self, conn: &mut postgres::Conn) -> QueryResult<Sequenced> {
        use diesel_async::{AsyncConnection, RunQueryDsl};
        let limit = self.limit;
        conn.transaction(async |conn| {
            // One sequencer at a time across replicas; the statements after the lock
            // read with fresh snapshots (READ COMMITTED), so they see every position the
            // sequencer before gave.
            diesel::sql_query("SELECT last_position FROM event_sequence WHERE id = 1 FOR UPDATE")
                .execute(conn)
                .await?;
            let numbered = diesel::sql_query(NUMBER_EVENTS)
                .bind::<BigInt, _>(limit)
                .execute(conn)
                .await? as i64;
            let row: LastPosition = diesel::sql_query(ADVANCE_SEQUENCE)
                .bind::<BigInt, _>(numbered)
                .get_result(conn)
                .await?;
            Ok(Sequenced {
                numbered,
                last_position: row.last_position,
            })
        })
        .await
    }

    fn sqlite(&self, conn: &mut SqliteConnection) -> QueryResult<Sequenced> {
        use diesel::RunQueryDsl;
        // SQLite's writes number their events themselves (`steps::next_positions`);
        // rows logged before (an upgrade) were numbered by the migration events_out and
        // events_trim_by_position. Numbering what is left keeps a bug visible, not lost.
        let unnumbered: Vec<Unnumbered> =
            diesel::sql_query("SELECT event_id FROM events WHERE position IS NULL LIMIT 1")
                .load(conn)?;
        if unnumbered.is_empty() {
            let row: LastPosition =
                diesel::sql_query("SELECT last_position FROM event_sequence WHERE id = 1")
                    .get_result(conn)?;
            return Ok(Sequenced {
                numbered: 0,
                last_position: row.last_position,
            });
        }
        // One writer: transactions commit in the order they run, so this is the order.
        let numbered = diesel::sql_query(NUMBER_EVENTS)
            .bind::<BigInt, _>(self.limit)
            .execute(conn)? as i64;
        let row: LastPosition = diesel::sql_query(ADVANCE_SEQUENCE)
            .bind::<BigInt, _>(numbered)
            .get_result(conn)?;
        Ok(Sequenced {
            numbered,
            last_position: row.last_position,
        })
    }
}

/// Logs that a user was erased: `chat.user.erased`, of no thread.
#[derive(Debug, Clone, Copy)]
pub struct NoteErasure {
    pub user_id: i64,
    pub messages_erased: i64,
}

const NOTE_EVENT: &str = "\
INSERT INTO events (kind, thread_id, user_id, amount, seq, created_at) VALUES ($1, 0, $2, $3, 0, $4)";

impl Write for NoteErasure {
    type Done = ();
    const NAME: &'static str = "note_erasure";

    async fn postgres(&self, conn: &mut postgres::Conn) -> QueryResult<()> {
        use diesel_async::RunQueryDsl;
        diesel::sql_query(NOTE_EVENT)
            .bind::<Text, _>(EventKind::UserErased.as_str())
            .bind::<BigInt, _>(self.user_id)
            .bind::<BigInt, _>(self.messages_erased)
            .bind::<diesel::sql_types::Timestamptz, _>(chrono::Utc::now())
            .execute(conn)
            .await?;
        Ok(())
    }

    fn sqlite(&self, conn: &mut SqliteConnection) -> QueryResult<()> {
        steps::note(
            conn,
            steps::Note {
                user_id: Some(self.user_id),
                amount: Some(self.messages_erased),
                ..steps::Note::of_thread(EventKind::UserErased, 0)
            },
        )
    }
}

/// Moves a sink's cursor to `position`, never back.
#[derive(Debug, Clone)]
pub struct AdvanceCursor {
    pub sink: String,
    pub position: i64,
    pub now_ms: i64,
}

const ADVANCE_CURSOR: &str = "\
INSERT INTO event_cursors (sink, position, updated_ms) VALUES ($1, $2, $3)
ON CONFLICT (sink) DO UPDATE SET position = excluded.position, updated_ms = excluded.updated_ms
WHERE event_cursors.position < excluded.position";

impl Write for AdvanceCursor {
    type Done = ();
    const NAME: &'static str = "advance_event_cursor";
    const LOGS: bool = false;

    async fn postgres(&self, conn: &mut postgres::Conn) -> QueryResult<()> {
        use diesel_async::RunQueryDsl;
        diesel::sql_query(ADVANCE_CURSOR)
            .bind::<Text, _>(self.sink.as_str())
            .bind::<BigInt, _>(self.position)
            .bind::<BigInt, _>(self.now_ms)
            .execute(conn)
            .await?;
        Ok(())
    }

    fn sqlite(&self, conn: &mut SqliteConnection) -> QueryResult<()> {
        use diesel::RunQueryDsl;
        diesel::sql_query(ADVANCE_CURSOR)
            .bind::<Text, _>(self.sink.as_str())
            .bind::<BigInt, _>(self.position)
            .bind::<BigInt, _>(self.now_ms)
            .execute(conn)?;
        Ok(())
    }
}

/// Takes or renews the relay's lease for `holder` until `now_ms + ttl_ms`, when it is
/// free, expired or already theirs; `release` gives it up (at shutdown) instead.
#[derive(Debug, Clone)]
pub struct HoldLease {
    pub holder: String,
    pub now_ms: i64,
    pub ttl_ms: i64,
    pub release: bool,
}

const TAKE_LEASE: &str = "\
UPDATE event_relay_lease SET holder = $1, expires_ms = $2 + $3
WHERE id = 1 AND (holder = $1 OR expires_ms < $2)";

/// Binds the same three as TAKE_LEASE (one statement shape), using only the holder.
const RELEASE_LEASE: &str = "\
UPDATE event_relay_lease SET expires_ms = 0 WHERE id = 1 AND holder = $1 AND $2 >= 0 AND $3 >= 0";

impl HoldLease {
    /// The statement and its binds: holder, now, time to live.
    fn statement(&self) -> &'static str {
        match self.release {
            false => TAKE_LEASE,
            true => RELEASE_LEASE,
        }
    }
}

impl Write for HoldLease {
    /// Whether `holder` holds the lease now (after a release: whether it had it).
    type Done = bool;
    const NAME: &'static str = "hold_relay_lease";
    const LOGS: bool = false;

    async fn postgres(&self, conn: &mut postgres::Conn) -> QueryResult<bool> {
        use diesel_async::RunQueryDsl;
        let held = diesel::sql_query(self.statement())
            .bind::<Text, _>(self.holder.as_str())
            .bind::<BigInt, _>(self.now_ms)
            .bind::<BigInt, _>(self.ttl_ms)
            .execute(conn)
            .await?;
        Ok(held == 1)
    }

    fn sqlite(&self, conn: &mut SqliteConnection) -> QueryResult<bool> {
        use diesel::RunQueryDsl;
        let held = diesel::sql_query(self.statement())
            .bind::<Text, _>(self.holder.as_str())
            .bind::<BigInt, _>(self.now_ms)
            .bind::<BigInt, _>(self.ttl_ms)
            .execute(conn)?;
        Ok(held == 1)
    }
}

/// Deletes up to `batch` numbered events older than `before`, oldest positions first,
/// and remembers the newest position deleted: resuming before it is EVENTS_EXPIRED.
#[derive(Debug, Clone, Copy)]
pub struct TrimEvents {
    pub before: chrono::DateTime<chrono::Utc>,
    pub batch: i64,
}

/// What a trim did: how many events it deleted, and the position retention has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Trimmed {
    pub deleted: i64,
    pub trimmed_through: i64,
}

#[derive(QueryableByName)]
struct TrimmedRow {
    #[diesel(sql_type = Nullable<BigInt>)]
    position: Option<i64>,
}

/// The oldest `$1` positions, of which those older than `$2` go: positions follow commit
/// times, so this walks the position index from its start and stops at the first
/// batch that holds nothing old enough.
const TRIM_EVENTS: &str = "\
DELETE FROM events WHERE event_id IN (
    SELECT oldest.event_id FROM (
        SELECT event_id, created_at FROM events WHERE position IS NOT NULL
        ORDER BY position LIMIT $1
    ) AS oldest WHERE oldest.created_at < $2
) RETURNING position";

const TRIMMED_THROUGH: &str = "\
UPDATE event_sequence SET trimmed_through = CASE WHEN trimmed_through < $1 THEN $1 ELSE trimmed_through END
WHERE id = 1 RETURNING trimmed_through";

#[derive(QueryableByName)]
struct TrimmedThrough {
    #[diesel(sql_type = BigInt)]
    trimmed_through: i64,
}

fn trimmed(rows: &[TrimmedRow]) -> i64 {
    rows.iter()
        .filter_map(|row| row.position)
        .max()
        .unwrap_or(0)
}

impl Write for TrimEvents {
    type Done = Trimmed;
    const NAME: &'static str = "trim_events";
    const LOGS: bool = false;

    async fn postgres(&self, conn: &mut postgres::Conn) -> QueryResult<Trimmed> {
        use diesel_async::{AsyncConnection, RunQueryDsl};
        let (before, batch) = (self.before, self.batch);
        conn.transaction(async |conn| {
            let rows: Vec<TrimmedRow> = diesel::sql_query(TRIM_EVENTS)
                .bind::<BigInt, _>(batch)
                .bind::<diesel::sql_types::Timestamptz, _>(before)
                .load(conn)
                .await?;
            let through: TrimmedThrough = diesel::sql_query(TRIMMED_THROUGH)
                .bind::<BigInt, _>(trimmed(&rows))
                .get_result(conn)
                .await?;
            Ok(Trimmed {
                deleted: rows.len() as i64,
                trimmed_through: through.trimmed_through,
            })
        })
        .await
    }

    fn sqlite(&self, conn: &mut SqliteConnection) -> QueryResult<Trimmed> {
        use diesel::RunQueryDsl;
        let rows: Vec<TrimmedRow> = diesel::sql_query(TRIM_EVENTS)
            .bind::<BigInt, _>(self.batch)
            .bind::<diesel::sql_types::TimestamptzSqlite, _>(self.before)
            .load(conn)?;
        let through: TrimmedThrough = diesel::sql_query(TRIMMED_THROUGH)
            .bind::<BigInt, _>(trimmed(&rows))
            .get_result(conn)?;
        Ok(Trimmed {
            deleted: rows.len() as i64,
            trimmed_through: through.trimmed_through,
        })
    }
}
