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

use super::Write;
use crate::model::{Side, SummaryKey};
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
/// first on the thread row (under its lock, which orders the change with sends), then
/// on both participant rows (what summaries show). Only a real change is written.
///
/// Binds, for both statements: the writability, the fact's id.
pub fn thread_writability_sql(fact_column: &str) -> String {
    format!("UPDATE threads SET is_writable = $1 WHERE {fact_column} = $2 AND is_writable <> $1")
}

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

impl Write for UpsertFact {
    /// Whether it applied, and the summaries it changed.
    type Done = (bool, Vec<SummaryKey>);
    const NAME: &'static str = "upsert_fact";

    async fn postgres(&self, conn: &mut postgres::Conn) -> QueryResult<Self::Done> {
        use diesel::pg::Pg;
        use diesel_async::RunQueryDsl;
        conn.transaction(async |conn: &mut postgres::Conn| {
            let sql = versioned_upsert_sql(self.table, postgres::NOW);
            let applied = bind_upsert::<Pg>(sql, &self.ids, self.status, self.version)
                .execute(conn)
                .await?;
            if applied == 0 {
                return Ok((false, Vec::new()));
            }
            let (Some(is_writable), Some(fact_column)) = (self.is_writable, self.table.key.first())
            else {
                return Ok((true, Vec::new()));
            };
            bind_writability::<Pg>(
                thread_writability_sql(fact_column),
                is_writable,
                self.ids[0],
            )
            .execute(conn)
            .await?;
            let rows: Vec<ChangedParticipant> = bind_writability::<Pg>(
                participants_writability_sql(fact_column),
                is_writable,
                self.ids[0],
            )
            .load(conn)
            .await?;
            let keys = summaries_changed(rows);
            if let Some(bump) = bump_versions::<Pg>(&keys) {
                bump.execute(conn).await?;
            }
            Ok((true, keys))
        })
        .await
    }

    fn sqlite(&self, conn: &mut SqliteConnection) -> QueryResult<Self::Done> {
        use diesel::RunQueryDsl;
        use diesel::sqlite::Sqlite;
        let sql = versioned_upsert_sql(self.table, crate::storage::sqlite::steps::NOW);
        let applied =
            bind_upsert::<Sqlite>(sql, &self.ids, self.status, self.version).execute(conn)?;
        if applied == 0 {
            return Ok((false, Vec::new()));
        }
        let (Some(is_writable), Some(fact_column)) = (self.is_writable, self.table.key.first())
        else {
            return Ok((true, Vec::new()));
        };
        bind_writability::<Sqlite>(
            thread_writability_sql(fact_column),
            is_writable,
            self.ids[0],
        )
        .execute(conn)?;
        let rows: Vec<ChangedParticipant> = bind_writability::<Sqlite>(
            participants_writability_sql(fact_column),
            is_writable,
            self.ids[0],
        )
        .load(conn)?;
        let keys = summaries_changed(rows);
        crate::storage::sqlite::steps::bump_versions(conn, &keys)?;
        Ok((true, keys))
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
