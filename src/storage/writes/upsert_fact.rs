//! The one versioned upsert of the facts upstream services push (relations, inquiries,
//! contact access; `rules::upsert_outcome` decided in one atomic statement), and, when
//! a relation's or inquiry's status changed, its thread's writability following it in
//! the same transaction (a crash cannot leave them apart). Whose summaries that
//! changes: `rules::writability_changes`.
//!
//! Plain SQL text that PostgreSQL and SQLite both run: `$N` parameters are numbered on
//! PostgreSQL and, because each first appears in order, numbered alike by SQLite.

use diesel::backend::Backend;
use diesel::query_builder::{BoxedSqlQuery, SqlQuery};
use diesel::serialize::ToSql;
use diesel::sql_types::{BigInt, Bool, Text};
use diesel::{QueryResult, SqliteConnection};
use diesel_async::AsyncConnection;

use super::{Logged, Write};
use crate::model::{ContactAccessState, EventKind, Side, SummaryKey, ThreadKind};
use crate::rules;
use crate::storage::postgres;

/// A table of facts: its key, the columns an upsert may never change, and the status.
#[derive(Debug)]
pub struct FactTable {
    pub table: &'static str,
    pub key: &'static [&'static str],
    /// Who is in the fact: an upsert naming others is refused, not applied.
    pub immutable: &'static [&'static str],
    pub status: &'static str,
}

pub const RELATIONS: FactTable = FactTable {
    table: "relations",
    key: &["relation_id"],
    immutable: &["tutor_id", "student_id"],
    status: "status",
};

pub const INQUIRIES: FactTable = FactTable {
    table: "inquiries",
    key: &["inquiry_id"],
    immutable: &["tutor_id", "student_id"],
    status: "status",
};

/// Keyed by the pair itself, so there is nothing immutable beside the key.
pub const CONTACT_ACCESS: FactTable = FactTable {
    table: "contact_access",
    key: &["tutor_id", "student_id"],
    immutable: &[],
    status: "state",
};

/// The upsert of `table`: inserts a new fact, or updates a stored one whose version is
/// older and whose participants are the same (`rules::upsert_outcome`), in one atomic
/// statement. It affects one
/// row when it applied, none when it did not. `now` is the backend's SQL for the
/// current time.
///
/// Binds, in order: the key columns, the immutable columns, the status, the version.
pub fn versioned_upsert_sql(table: &FactTable, now: &str) -> String {
    let columns: Vec<&str> = table
        .key
        .iter()
        .chain(table.immutable)
        .copied()
        .chain([table.status, "version"])
        .collect();
    let params: Vec<String> = (1..=columns.len()).map(|n| format!("${n}")).collect();
    let same_participants: String = table
        .immutable
        .iter()
        .map(|column| format!(" AND {t}.{column} = excluded.{column}", t = table.table))
        .collect();
    format!(
        "INSERT INTO {t} ({columns}, updated_at) VALUES ({params}, {now}) \
         ON CONFLICT ({key}) DO UPDATE SET {status} = excluded.{status}, \
         version = excluded.version, updated_at = excluded.updated_at \
         WHERE {t}.version < excluded.version{same_participants}",
        t = table.table,
        columns = columns.join(", "),
        params = params.join(", "),
        key = table.key.join(", "),
        status = table.status,
    )
}

/// Binds an upsert's values: `ids` are the key and immutable columns, in order.
pub fn bind_upsert<DB>(
    sql: String,
    ids: &[i64],
    status: &'static str,
    version: i64,
) -> BoxedSqlQuery<'static, DB, SqlQuery>
where
    DB: Backend + diesel::sql_types::HasSqlType<BigInt> + diesel::sql_types::HasSqlType<Text>,
    i64: ToSql<BigInt, DB>,
    &'static str: ToSql<Text, DB>,
{
    let mut query = diesel::sql_query(sql).into_boxed::<DB>();
    for id in ids {
        query = query.bind::<BigInt, _>(*id);
    }
    query.bind::<Text, _>(status).bind::<BigInt, _>(version)
}

/// After a relation's or inquiry's status changed, its thread's writability follows:
/// first on the thread row (under its lock, which orders the change with sends; the
/// change is the thread's next log version), then on both participant rows (what
/// summaries show). Only a real change is written. Returns the thread changed, with
/// its new version.
///
/// Binds, for both statements: the writability, the fact's id.
pub fn thread_writability_sql(fact_column: &str) -> String {
    format!(
        "UPDATE threads SET is_writable = $1, version = version + 1 \
         WHERE {fact_column} = $2 AND is_writable <> $1 RETURNING thread_id, version"
    )
}

/// Logs a change of writability at the thread's current version, with the facts each
/// side's writability follows from (`rules::writable_for`): the thread's own, and the
/// tutor's contact access. `now` is the backend's SQL for the current time, `position`
/// its SQL for the event's position (PostgreSQL: NULL, for the sequencer).
///
/// Binds: the thread's id.
pub fn log_writability_sql(now: &str, position: &str) -> String {
    format!(
        "INSERT INTO events (kind, thread_id, thread_version, flag, contact_access, created_at, position) \
         SELECT '{kind}', t.thread_id, t.version, t.is_writable, \
         (SELECT ca.state FROM contact_access ca \
          WHERE ca.tutor_id = t.tutor_id AND ca.student_id = t.student_id), {now}, {position} \
         FROM threads t WHERE t.thread_id = $1",
        kind = EventKind::WritabilityChanged.as_str()
    )
}

/// The contact threads of a tutor and a student, in id order: a contact-access upsert
/// takes them first (`lock`: PostgreSQL's row-lock clause, the lock order's step 2).
///
/// Binds: the tutor, the student.
pub fn contact_threads_sql(lock: &str) -> String {
    format!(
        "SELECT thread_id FROM threads WHERE kind = '{contact}' AND tutor_id = $1 \
         AND student_id = $2 ORDER BY thread_id{lock}",
        contact = ThreadKind::Contact.as_str()
    )
}

/// The stored contact access of a tutor to a student, before an upsert.
///
/// Binds: the tutor, the student.
pub const CONTACT_ACCESS_SQL: &str =
    "SELECT state FROM contact_access WHERE tutor_id = $1 AND student_id = $2";

/// A thread's next log version, for a change that touches nothing else of the thread
/// row (a contact-access change). Binds: the thread's id.
pub const NEXT_VERSION_SQL: &str =
    "UPDATE threads SET version = version + 1 WHERE thread_id = $1 RETURNING thread_id, version";

/// The participant rows' half of `thread_writability_sql`: returns whose rows changed,
/// with their unread counts (participant rows carry their thread's relation or
/// inquiry id).
pub fn participants_writability_sql(fact_column: &str) -> String {
    format!(
        "UPDATE thread_participants SET is_writable = $1 WHERE {fact_column} = $2 \
         AND is_writable <> $1 RETURNING user_id, side, unread_count"
    )
}

pub fn bind_writability<DB>(
    sql: String,
    is_writable: bool,
    fact_id: i64,
) -> BoxedSqlQuery<'static, DB, SqlQuery>
where
    DB: Backend + diesel::sql_types::HasSqlType<BigInt> + diesel::sql_types::HasSqlType<Bool>,
    i64: ToSql<BigInt, DB>,
    bool: ToSql<Bool, DB>,
{
    diesel::sql_query(sql)
        .into_boxed::<DB>()
        .bind::<Bool, _>(is_writable)
        .bind::<BigInt, _>(fact_id)
}

/// A participant row whose writability changed.
#[derive(Debug, diesel::QueryableByName)]
pub struct ChangedParticipant {
    #[diesel(sql_type = BigInt)]
    user_id: i64,
    #[diesel(sql_type = Text)]
    side: Side,
    #[diesel(sql_type = BigInt)]
    unread_count: i64,
}

/// Of the participant rows whose writability changed, the summaries that show it
/// (`rules::writability_changes`: those with a line, that is unread messages).
fn summaries_changed(rows: Vec<ChangedParticipant>) -> Vec<SummaryKey> {
    rows.into_iter()
        .filter(|row| rules::writability_changes(row.unread_count))
        .map(|row| SummaryKey::new(row.user_id, row.side))
        .collect()
}

/// Bumps the versions of `keys`' summaries, creating them at 1, in key order (every
/// write that bumps several takes their rows in that order, so none can deadlock).
pub fn bump_versions<DB>(keys: &[SummaryKey]) -> Option<BoxedSqlQuery<'static, DB, SqlQuery>>
where
    DB: Backend + diesel::sql_types::HasSqlType<BigInt> + diesel::sql_types::HasSqlType<Text>,
    i64: ToSql<BigInt, DB>,
    &'static str: ToSql<Text, DB>,
{
    if keys.is_empty() {
        return None;
    }
    let mut keys = keys.to_vec();
    keys.sort();
    keys.dedup();
    let values: Vec<String> = (0..keys.len())
        .map(|n| format!("(${}, ${}, 1)", 2 * n + 1, 2 * n + 2))
        .collect();
    let sql = format!(
        "INSERT INTO summary_versions (user_id, side, version) VALUES {} \
         ON CONFLICT (user_id, side) DO UPDATE SET version = summary_versions.version + 1",
        values.join(", ")
    );
    let mut query = diesel::sql_query(sql).into_boxed::<DB>();
    for key in keys {
        query = query
            .bind::<BigInt, _>(key.user_id)
            .bind::<Text, _>(key.side.as_str());
    }
    Some(query)
}

/// An upsert of a fact: `ids` are its key and immutable columns, in order, and
/// `is_writable`, for a relation or an inquiry, what its thread's writability becomes
/// when it applies.
#[derive(Debug, Clone)]
pub struct UpsertFact {
    pub table: &'static FactTable,
    pub ids: Vec<i64>,
    pub status: &'static str,
    pub version: i64,
    pub is_writable: Option<bool>,
}

/// What an upsert did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Upserted {
    /// Whether it applied (its version was newer, its participants the same).
    pub applied: bool,
    /// The summaries it changed.
    pub changed: Vec<SummaryKey>,
    /// The threads whose log it wrote to, each with its version after.
    pub logged: Vec<Logged>,
}

/// A thread and its version, as an UPDATE … RETURNING answers them.
#[derive(Debug, diesel::QueryableByName)]
struct VersionRow {
    #[diesel(sql_type = BigInt)]
    thread_id: i64,
    #[diesel(sql_type = BigInt)]
    version: i64,
}

impl From<VersionRow> for Logged {
    fn from(row: VersionRow) -> Self {
        Logged {
            thread_id: row.thread_id,
            version: row.version,
        }
    }
}

/// A thread id, as the contact threads' query answers it.
#[derive(Debug, diesel::QueryableByName)]
struct ThreadIdRow {
    #[diesel(sql_type = BigInt)]
    thread_id: i64,
}

/// A contact access state, as stored.
#[derive(Debug, diesel::QueryableByName)]
struct StateRow {
    #[diesel(sql_type = Text)]
    state: ContactAccessState,
}

impl UpsertFact {
    fn is_contact_access(&self) -> bool {
        self.table.table == CONTACT_ACCESS.table
    }

    /// Whether what a contact-access upsert applied changes what the tutor may do
    /// (`rules::contact_access_logs`), from the state stored before it.
    fn contact_logs(&self, before: Option<ContactAccessState>) -> bool {
        rules::contact_access_logs(before, ContactAccessState::parse(self.status))
    }
}

/// Binds the (tutor, student) pair of a contact-access upsert to `sql`.
fn pair_query<DB>(sql: String, ids: &[i64]) -> BoxedSqlQuery<'static, DB, SqlQuery>
where
    DB: Backend + diesel::sql_types::HasSqlType<BigInt>,
    i64: ToSql<BigInt, DB>,
{
    let mut query = diesel::sql_query(sql).into_boxed::<DB>();
    for id in ids.iter().take(2) {
        query = query.bind::<BigInt, _>(*id);
    }
    query
}

/// Binds a thread's id to `sql`.
fn thread_query<DB>(sql: String, thread_id: i64) -> BoxedSqlQuery<'static, DB, SqlQuery>
where
    DB: Backend + diesel::sql_types::HasSqlType<BigInt>,
    i64: ToSql<BigInt, DB>,
{
    diesel::sql_query(sql)
        .into_boxed::<DB>()
        .bind::<BigInt, _>(thread_id)
}

impl Write for UpsertFact {
    type Done = Upserted;
    const NAME: &'static str = "upsert_fact";

    async fn postgres(&self, conn: &mut postgres::Conn) -> QueryResult<Upserted> {
        use diesel::pg::Pg;
        use diesel_async::RunQueryDsl;
        conn.transaction(async |conn: &mut postgres::Conn| {
            let mut contact = None;
            if self.is_contact_access() {
                let threads: Vec<ThreadIdRow> =
                    pair_query::<Pg>(contact_threads_sql(" FOR NO KEY UPDATE"), &self.ids)
                        .load(conn)
                        .await?;
                let before: Vec<StateRow> = pair_query::<Pg>(CONTACT_ACCESS_SQL.into(), &self.ids)
                    .load(conn)
                    .await?;
                contact = Some((threads, before.into_iter().next().map(|row| row.state)));
            }
            let sql = versioned_upsert_sql(self.table, postgres::NOW);
            let applied = bind_upsert::<Pg>(sql, &self.ids, self.status, self.version)
                .execute(conn)
                .await?;
            if applied == 0 {
                return Ok(Upserted::default());
            }
            let mut done = Upserted {
                applied: true,
                ..Upserted::default()
            };
            let versions: Vec<VersionRow> =
                match (contact, self.is_writable, self.table.key.first()) {
                    (Some((threads, before)), _, _) if self.contact_logs(before) => {
                        let mut versions = Vec::new();
                        for thread in threads {
                            versions.extend(
                                thread_query::<Pg>(NEXT_VERSION_SQL.into(), thread.thread_id)
                                    .load::<VersionRow>(conn)
                                    .await?,
                            );
                        }
                        versions
                    }
                    (None, Some(is_writable), Some(fact_column)) => {
                        let versions = bind_writability::<Pg>(
                            thread_writability_sql(fact_column),
                            is_writable,
                            self.ids[0],
                        )
                        .load(conn)
                        .await?;
                        let rows: Vec<ChangedParticipant> = bind_writability::<Pg>(
                            participants_writability_sql(fact_column),
                            is_writable,
                            self.ids[0],
                        )
                        .load(conn)
                        .await?;
                        done.changed = summaries_changed(rows);
                        if let Some(bump) = bump_versions::<Pg>(&done.changed) {
                            bump.execute(conn).await?;
                        }
                        versions
                    }
                    _ => Vec::new(),
                };
            for version in versions {
                thread_query::<Pg>(
                    log_writability_sql(postgres::NOW, "NULL"),
                    version.thread_id,
                )
                .execute(conn)
                .await?;
                done.logged.push(version.into());
            }
            Ok(done)
        })
        .await
    }

    fn sqlite(&self, conn: &mut SqliteConnection) -> QueryResult<Upserted> {
        use diesel::RunQueryDsl;
        use diesel::sqlite::Sqlite;
        let now = crate::storage::sqlite::steps::NOW;
        let mut contact = None;
        if self.is_contact_access() {
            let threads: Vec<ThreadIdRow> =
                pair_query::<Sqlite>(contact_threads_sql(""), &self.ids).load(conn)?;
            let before: Vec<StateRow> =
                pair_query::<Sqlite>(CONTACT_ACCESS_SQL.into(), &self.ids).load(conn)?;
            contact = Some((threads, before.into_iter().next().map(|row| row.state)));
        }
        let sql = versioned_upsert_sql(self.table, now);
        let applied =
            bind_upsert::<Sqlite>(sql, &self.ids, self.status, self.version).execute(conn)?;
        if applied == 0 {
            return Ok(Upserted::default());
        }
        let mut done = Upserted {
            applied: true,
            ..Upserted::default()
        };
        let versions: Vec<VersionRow> = match (contact, self.is_writable, self.table.key.first()) {
            (Some((threads, before)), _, _) if self.contact_logs(before) => {
                let mut versions = Vec::new();
                for thread in threads {
                    versions.extend(
                        thread_query::<Sqlite>(NEXT_VERSION_SQL.into(), thread.thread_id)
                            .load::<VersionRow>(conn)?,
                    );
                }
                versions
            }
            (None, Some(is_writable), Some(fact_column)) => {
                let versions = bind_writability::<Sqlite>(
                    thread_writability_sql(fact_column),
                    is_writable,
                    self.ids[0],
                )
                .load(conn)?;
                let rows: Vec<ChangedParticipant> = bind_writability::<Sqlite>(
                    participants_writability_sql(fact_column),
                    is_writable,
                    self.ids[0],
                )
                .load(conn)?;
                done.changed = summaries_changed(rows);
                crate::storage::sqlite::steps::bump_versions(conn, &done.changed)?;
                versions
            }
            _ => Vec::new(),
        };
        for version in versions {
            crate::storage::sqlite::steps::next_positions(conn, 1)?;
            let position = "(SELECT last_position FROM event_sequence WHERE id = 1)";
            thread_query::<Sqlite>(log_writability_sql(now, position), version.thread_id)
                .execute(conn)?;
            done.logged.push(version.into());
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upsert_guards_version_and_participants() {
        let sql = versioned_upsert_sql(&RELATIONS, "now()");
        assert_eq!(
            sql,
            "INSERT INTO relations (relation_id, tutor_id, student_id, status, version, updated_at) \
             VALUES ($1, $2, $3, $4, $5, now()) ON CONFLICT (relation_id) DO UPDATE SET \
             status = excluded.status, version = excluded.version, updated_at = excluded.updated_at \
             WHERE relations.version < excluded.version AND relations.tutor_id = excluded.tutor_id \
             AND relations.student_id = excluded.student_id"
        );
        let sql = versioned_upsert_sql(&CONTACT_ACCESS, "now()");
        assert!(sql.contains("ON CONFLICT (tutor_id, student_id)"), "{sql}");
        assert!(
            sql.ends_with("WHERE contact_access.version < excluded.version"),
            "{sql}"
        );
    }
}
