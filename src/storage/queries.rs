// The schema and every query of chatd, written once and compiled once per backend:
// `storage.rs` includes this file into `mod postgres` and `mod sqlite`, each of which
// first defines `Conn`, `Ts` (its timestamp SQL type), `lock_row!` and `write_transaction!`.
// Each copy is type-checked against its own backend, so a query that one of them cannot
// run fails to compile instead of failing in production.

use chrono::Utc;
use diesel::prelude::*;
use diesel::sql_types::BigInt;
#[allow(unused_imports, reason = "`transaction` is a trait method on PostgreSQL only")]
use diesel_async::AsyncConnection;
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};

use crate::storage::{
    FactRow, MessageRow, ReadStateRow, SummaryKey, ThreadRecord, ThreadRow, UnreadRow,
    UpsertOutcome,
};

diesel::table! {
    use diesel::sql_types::*;
    use super::Ts;
    relations (relation_id) {
        relation_id -> BigInt,
        tutor_id -> BigInt,
        student_id -> BigInt,
        status -> Text,
        version -> BigInt,
        updated_at -> Ts,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use super::Ts;
    contact_access (tutor_id, student_id) {
        tutor_id -> BigInt,
        student_id -> BigInt,
        state -> Text,
        version -> BigInt,
        updated_at -> Ts,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use super::Ts;
    inquiries (inquiry_id) {
        inquiry_id -> BigInt,
        tutor_id -> BigInt,
        student_id -> BigInt,
        status -> Text,
        version -> BigInt,
        updated_at -> Ts,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use super::Ts;
    threads (thread_id) {
        thread_id -> BigInt,
        kind -> Text,
        relation_id -> Nullable<BigInt>,
        inquiry_id -> Nullable<BigInt>,
        tutor_id -> BigInt,
        student_id -> BigInt,
        last_seq -> BigInt,
        last_message_at -> Nullable<Ts>,
        last_message_preview -> Text,
        last_message_sender_id -> BigInt,
        created_at -> Ts,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use super::Ts;
    messages (message_id) {
        message_id -> BigInt,
        thread_id -> BigInt,
        seq -> BigInt,
        sender_id -> BigInt,
        body -> Text,
        client_message_id -> Nullable<Text>,
        created_at -> Ts,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use super::Ts;
    thread_participants (thread_id, side) {
        thread_id -> BigInt,
        side -> Text,
        user_id -> BigInt,
        last_read_seq -> BigInt,
        unread_count -> BigInt,
        kind -> Text,
        relation_id -> Nullable<BigInt>,
        inquiry_id -> Nullable<BigInt>,
        tutor_id -> BigInt,
        student_id -> BigInt,
        is_writable -> Bool,
        last_message_at -> Nullable<Ts>,
        last_message_preview -> Text,
        last_message_sender_id -> BigInt,
    }
}

diesel::table! {
    summary_versions (user_id, side) {
        user_id -> BigInt,
        side -> Text,
        version -> BigInt,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    summary_versions,
    relations,
    contact_access,
    inquiries,
    threads,
    messages,
    thread_participants,
);

/// The columns of `ThreadRow`, in its field order.
const THREAD_COLUMNS: (
    threads::thread_id,
    threads::kind,
    threads::relation_id,
    threads::inquiry_id,
    threads::tutor_id,
    threads::student_id,
    threads::last_seq,
    threads::created_at,
) = (
    threads::thread_id,
    threads::kind,
    threads::relation_id,
    threads::inquiry_id,
    threads::tutor_id,
    threads::student_id,
    threads::last_seq,
    threads::created_at,
);

/// The columns of `MessageRow`, in its field order.
const MESSAGE_COLUMNS: (
    messages::message_id,
    messages::thread_id,
    messages::seq,
    messages::sender_id,
    messages::body,
    messages::created_at,
    messages::client_message_id,
) = (
    messages::message_id,
    messages::thread_id,
    messages::seq,
    messages::sender_id,
    messages::body,
    messages::created_at,
    messages::client_message_id,
);

/// Declares a fixed SQL expression with a static query id. Unlike `diesel::dsl::sql`,
/// a query that selects it keeps a static id, so the connection caches its prepared
/// statement: on the hot summary query, planning cost more than executing.
macro_rules! fixed_sql_expression {
    ($(#[$doc:meta])* $name:ident: $sql_type:ty = $sql:literal, aggregate = $aggregate:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, diesel::query_builder::QueryId)]
        struct $name;

        impl diesel::expression::Expression for $name {
            type SqlType = $sql_type;
        }

        impl<DB: diesel::backend::Backend> diesel::query_builder::QueryFragment<DB> for $name {
            fn walk_ast<'b>(&'b self, mut out: diesel::query_builder::AstPass<'_, 'b, DB>) -> QueryResult<()> {
                out.push_sql($sql);
                Ok(())
            }
        }

        impl<QS> diesel::expression::SelectableExpression<QS> for $name {}
        impl<QS> diesel::expression::AppearsOnTable<QS> for $name {}
        impl diesel::expression::ValidGrouping<()> for $name {
            type IsAggregate = $aggregate;
        }
    };
}

fixed_sql_expression!(
    /// Sum of the selected unread counters. SUM(BIGINT) is NUMERIC on PostgreSQL, hence the cast.
    TotalUnread: BigInt = "CAST(COALESCE(SUM(thread_participants.unread_count), 0) AS BIGINT)",
    aggregate = diesel::expression::is_aggregate::Yes
);

fixed_sql_expression!(
    /// The same sum as a window over every row the WHERE clause keeps: computed before
    /// LIMIT, so each row of a page carries the total of all pages.
    TotalUnreadOverAllRows: BigInt =
        "CAST(SUM(thread_participants.unread_count) OVER () AS BIGINT)",
    aggregate = diesel::expression::is_aggregate::Never
);

pub async fn ping(conn: &mut Conn) -> QueryResult<()> {
    conn.batch_execute("SELECT 1").await
}

pub async fn find_relation(conn: &mut Conn, id: i64) -> QueryResult<Option<FactRow>> {
    relations::table
        .find(id)
        .select((
            relations::tutor_id,
            relations::student_id,
            relations::status,
            relations::version,
        ))
        .first(conn)
        .await
        .optional()
}

pub async fn find_inquiry(conn: &mut Conn, id: i64) -> QueryResult<Option<FactRow>> {
    inquiries::table
        .find(id)
        .select((
            inquiries::tutor_id,
            inquiries::student_id,
            inquiries::status,
            inquiries::version,
        ))
        .first(conn)
        .await
        .optional()
}

pub async fn find_contact_access(
    conn: &mut Conn,
    tutor_id: i64,
    student_id: i64,
) -> QueryResult<Option<String>> {
    contact_access::table
        .find((tutor_id, student_id))
        .select(contact_access::state)
        .first(conn)
        .await
        .optional()
}

/// Finds the thread of a relation (`is_relation`) or of an inquiry.
pub async fn find_thread_by_target(
    conn: &mut Conn,
    is_relation: bool,
    target_id: i64,
) -> QueryResult<Option<ThreadRow>> {
    let query = threads::table.select(THREAD_COLUMNS).into_boxed();
    let query = if is_relation {
        query.filter(threads::relation_id.eq(target_id))
    } else {
        query.filter(threads::inquiry_id.eq(target_id))
    };
    query.first(conn).await.optional()
}

/// Gets or creates the thread of a relation or inquiry, with its two participant rows.
///
/// Concurrent callers race on the unique key: `ON CONFLICT DO NOTHING` makes every loser
/// wait for the winner's commit and then read the winner's row, so exactly one caller
/// answers `created = true` and all answer the same thread.
pub async fn create_thread(
    conn: &mut Conn,
    kind: &str,
    relation_id: Option<i64>,
    inquiry_id: Option<i64>,
    tutor_id: i64,
    student_id: i64,
    is_writable: bool,
) -> QueryResult<(ThreadRow, bool)> {
    let kind = kind.to_owned();
    write_transaction!(conn, async |conn: &mut Conn| {
        let values = (
            threads::kind.eq(&kind),
            threads::relation_id.eq(relation_id),
            threads::inquiry_id.eq(inquiry_id),
            threads::tutor_id.eq(tutor_id),
            threads::student_id.eq(student_id),
            threads::created_at.eq(Utc::now()),
        );
        let inserted: Option<ThreadRow> = if relation_id.is_some() {
            diesel::insert_into(threads::table)
                .values(values)
                .on_conflict(threads::relation_id)
                .do_nothing()
                .returning(THREAD_COLUMNS)
                .get_result(conn)
                .await
                .optional()?
        } else {
            diesel::insert_into(threads::table)
                .values(values)
                .on_conflict(threads::inquiry_id)
                .do_nothing()
                .returning(THREAD_COLUMNS)
                .get_result(conn)
                .await
                .optional()?
        };
        match inserted {
            Some(thread) => {
                for (side, user_id) in [("tutor", tutor_id), ("student", student_id)] {
                    diesel::insert_into(thread_participants::table)
                        .values((
                            thread_participants::thread_id.eq(thread.thread_id),
                            thread_participants::side.eq(side),
                            thread_participants::user_id.eq(user_id),
                            thread_participants::kind.eq(&kind),
                            thread_participants::relation_id.eq(relation_id),
                            thread_participants::inquiry_id.eq(inquiry_id),
                            thread_participants::tutor_id.eq(tutor_id),
                            thread_participants::student_id.eq(student_id),
                            thread_participants::is_writable.eq(is_writable),
                        ))
                        .execute(conn)
                        .await?;
                }
                Ok((thread, true))
            }
            None => {
                let target = relation_id.or(inquiry_id).unwrap_or_default();
                let existing = find_thread_by_target(conn, relation_id.is_some(), target)
                    .await?
                    .ok_or(diesel::result::Error::NotFound)?;
                Ok((existing, false))
            }
        }
    })
}

/// Loads a thread with what its rules need: the status of its relation or inquiry and
/// the tutor's contact access to the student.
pub async fn load_thread(conn: &mut Conn, thread_id: i64) -> QueryResult<Option<ThreadRecord>> {
    threads::table
        .left_join(relations::table.on(relations::relation_id.nullable().eq(threads::relation_id)))
        .left_join(inquiries::table.on(inquiries::inquiry_id.nullable().eq(threads::inquiry_id)))
        .left_join(
            contact_access::table.on(contact_access::tutor_id
                .eq(threads::tutor_id)
                .and(contact_access::student_id.eq(threads::student_id))),
        )
        .filter(threads::thread_id.eq(thread_id))
        .select((
            THREAD_COLUMNS,
            relations::status.nullable(),
            inquiries::status.nullable(),
            contact_access::state.nullable(),
        ))
        .first::<(ThreadRow, Option<String>, Option<String>, Option<String>)>(conn)
        .await
        .optional()
        .map(|row| {
            row.map(|(thread, relation_status, inquiry_status, contact_access)| ThreadRecord {
                thread,
                relation_status,
                inquiry_status,
                contact_access,
            })
        })
}

/// Appends a message as `side` and updates both sides' counters, atomically.
///
/// The thread row is locked first, which serializes senders of one thread: seqs are
/// gap-free, and a retry with the same `client_message_id` finds the first message
/// (committed before the lock was granted) instead of inserting a second one.
#[expect(clippy::too_many_arguments, reason = "one column each, named at the call")]
pub async fn append_message(
    conn: &mut Conn,
    thread_id: i64,
    side: &str,
    peer_side: &str,
    sender_id: i64,
    body: &str,
    preview: &str,
    client_message_id: Option<&str>,
) -> QueryResult<(MessageRow, Vec<SummaryKey>)> {
    let (side, peer_side, body, preview) = (
        side.to_owned(),
        peer_side.to_owned(),
        body.to_owned(),
        preview.to_owned(),
    );
    let client_message_id = client_message_id.map(str::to_owned);
    write_transaction!(conn, async |conn: &mut Conn| {
        let last_seq: i64 = lock_row!(threads::table.find(thread_id).select(threads::last_seq))
            .first(conn)
            .await?;
        if let Some(key) = &client_message_id {
            let existing = messages::table
                .filter(messages::thread_id.eq(thread_id))
                .filter(messages::sender_id.eq(sender_id))
                .filter(messages::client_message_id.eq(key))
                .select(MESSAGE_COLUMNS)
                .first::<MessageRow>(conn)
                .await
                .optional()?;
            if let Some(message) = existing {
                return Ok((message, Vec::new()));
            }
        }
        let seq = last_seq + 1;
        let now = Utc::now();
        let message: MessageRow = diesel::insert_into(messages::table)
            .values((
                messages::thread_id.eq(thread_id),
                messages::seq.eq(seq),
                messages::sender_id.eq(sender_id),
                messages::body.eq(&body),
                messages::client_message_id.eq(&client_message_id),
                messages::created_at.eq(now),
            ))
            .returning(MESSAGE_COLUMNS)
            .get_result(conn)
            .await?;
        diesel::update(threads::table.find(thread_id))
            .set((
                threads::last_seq.eq(seq),
                threads::last_message_at.eq(now),
                threads::last_message_preview.eq(&preview),
                threads::last_message_sender_id.eq(sender_id),
            ))
            .execute(conn)
            .await?;
        // Sending reads everything before it: the sender's horizon moves to the new message.
        let sender_had_unread: i64 = thread_participants::table
            .find((thread_id, &side))
            .select(thread_participants::unread_count)
            .first(conn)
            .await?;
        let last_message = (
            thread_participants::last_message_at.eq(now),
            thread_participants::last_message_preview.eq(&preview),
            thread_participants::last_message_sender_id.eq(sender_id),
        );
        diesel::update(thread_participants::table.find((thread_id, &side)))
            .set((
                thread_participants::last_read_seq.eq(seq),
                thread_participants::unread_count.eq(0),
                last_message,
            ))
            .execute(conn)
            .await?;
        let peer_id: i64 = diesel::update(thread_participants::table.find((thread_id, &peer_side)))
            .set((
                thread_participants::unread_count.eq(thread_participants::unread_count + 1),
                last_message,
            ))
            .returning(thread_participants::user_id)
            .get_result(conn)
            .await?;
        // The peer's summary always changes; the sender's only if it had unread here.
        // Tutor row before student row in every transaction, so no two can deadlock.
        let mut changed = vec![(peer_id, peer_side.as_str())];
        if sender_had_unread > 0 {
            changed.push((sender_id, side.as_str()));
        }
        changed.sort_by_key(|(_, side)| *side != "tutor");
        for (user_id, side) in &changed {
            bump_summary_version(conn, *user_id, side).await?;
        }
        let changed = changed
            .into_iter()
            .map(|(user_id, side)| (user_id, side.to_owned()))
            .collect();
        Ok((message, changed))
    })
}

/// Moves `side`'s read horizon forward to `up_to_seq` (default and ceiling: the thread's
/// last seq), recounts its unread messages, and returns its new total across threads.
pub async fn mark_read(
    conn: &mut Conn,
    thread_id: i64,
    side: &str,
    user_id: i64,
    up_to_seq: Option<i64>,
) -> QueryResult<ReadStateRow> {
    let side = side.to_owned();
    write_transaction!(conn, async |conn: &mut Conn| {
        // The same lock as append_message, so a concurrent send cannot slip between the
        // recount and the counter update.
        let last_seq: i64 = lock_row!(threads::table.find(thread_id).select(threads::last_seq))
            .first(conn)
            .await?;
        let current: i64 = thread_participants::table
            .find((thread_id, &side))
            .select(thread_participants::last_read_seq)
            .first(conn)
            .await?;
        let target = up_to_seq.unwrap_or(last_seq).min(last_seq);
        let last_read_seq = current.max(target);
        let unread_count: i64 = messages::table
            .filter(messages::thread_id.eq(thread_id))
            .filter(messages::seq.gt(last_read_seq))
            .filter(messages::sender_id.ne(user_id))
            .count()
            .get_result(conn)
            .await?;
        let unread_before: i64 = diesel::update(thread_participants::table.find((thread_id, &side)))
            .set(thread_participants::last_read_seq.eq(last_read_seq))
            .returning(thread_participants::unread_count)
            .get_result(conn)
            .await?;
        if unread_before != unread_count {
            diesel::update(thread_participants::table.find((thread_id, &side)))
                .set(thread_participants::unread_count.eq(unread_count))
                .execute(conn)
                .await?;
            bump_summary_version(conn, user_id, &side).await?;
        }
        let total: i64 = thread_participants::table
            .filter(thread_participants::user_id.eq(user_id))
            .filter(thread_participants::side.eq(&side))
            .filter(thread_participants::unread_count.gt(0))
            .select(TotalUnread)
            .get_result(conn)
            .await?;
        Ok(ReadStateRow {
            last_read_seq,
            unread_count,
            total,
            changed: unread_before != unread_count,
        })
    })
}

/// Marks a user's unread summary as changed.
async fn bump_summary_version(conn: &mut Conn, user_id: i64, side: &str) -> QueryResult<()> {
    diesel::insert_into(summary_versions::table)
        .values((
            summary_versions::user_id.eq(user_id),
            summary_versions::side.eq(side),
            summary_versions::version.eq(1),
        ))
        .on_conflict((summary_versions::user_id, summary_versions::side))
        .do_update()
        .set(summary_versions::version.eq(summary_versions::version + 1))
        .execute(conn)
        .await?;
    notify_summary!(conn, user_id, side);
    Ok(())
}

/// The version of a user's unread summary: 0 until it first changes.
pub async fn summary_version(conn: &mut Conn, user_id: i64, side: &str) -> QueryResult<i64> {
    Ok(summary_versions::table
        .find((user_id, side))
        .select(summary_versions::version)
        .first(conn)
        .await
        .optional()?
        .unwrap_or(0))
}

/// A page of the user's threads with unread messages, newest first, the user's total,
/// and (for a non-empty page) the summary's version.
///
/// One range scan of the covering partial index `thread_participants_unread`, already
/// in page order; the window sum runs before LIMIT, so every row carries the total
/// over all unread threads, not only the page.
pub async fn unread_summary(
    conn: &mut Conn,
    user_id: i64,
    side: &str,
    limit: i64,
) -> QueryResult<(Vec<UnreadRow>, i64, Option<i64>)> {
    // The summary's version, read in the same statement: exactly the page's version.
    let version = summary_versions::table
        .filter(summary_versions::user_id.eq(user_id))
        .filter(summary_versions::side.eq(side))
        .select(summary_versions::version)
        .single_value();
    let rows: Vec<(UnreadRow, i64, Option<i64>)> = thread_participants::table
        .filter(thread_participants::user_id.eq(user_id))
        .filter(thread_participants::side.eq(side))
        .filter(thread_participants::unread_count.gt(0))
        .order((
            thread_participants::last_message_at.desc(),
            thread_participants::thread_id.desc(),
        ))
        .limit(limit)
        .select((
            (
                thread_participants::thread_id,
                thread_participants::kind,
                thread_participants::relation_id,
                thread_participants::inquiry_id,
                thread_participants::tutor_id,
                thread_participants::student_id,
                thread_participants::unread_count,
                thread_participants::last_message_at,
                thread_participants::last_message_preview,
                thread_participants::last_message_sender_id,
                thread_participants::is_writable,
            ),
            TotalUnreadOverAllRows,
            version,
        ))
        .load(conn)
        .await?;
    // Qualified: diesel's `QueryDsl::first` would shadow the slice method.
    let (total, version) = <[_]>::first(&rows).map_or((0, None), |(_, total, version)| (*total, *version));
    // An empty page carries no version: the caller reads it separately.
    let version = if rows.is_empty() { None } else { Some(version.unwrap_or(0)) };
    Ok((rows.into_iter().map(|(row, _, _)| row).collect(), total, version))
}

/// Messages before `before_seq` (or the newest), newest first, one page of `limit`,
/// and both sides' read horizons.
pub async fn list_messages(
    conn: &mut Conn,
    thread_id: i64,
    side: &str,
    before_seq: Option<i64>,
    limit: i64,
) -> QueryResult<(Vec<MessageRow>, bool, i64, i64)> {
    let mut query = messages::table
        .filter(messages::thread_id.eq(thread_id))
        .select(MESSAGE_COLUMNS)
        .order(messages::seq.desc())
        .limit(limit + 1)
        .into_boxed();
    if let Some(before) = before_seq {
        query = query.filter(messages::seq.lt(before));
    }
    let mut page: Vec<MessageRow> = query.load(conn).await?;
    let has_more = page.len() as i64 > limit;
    page.truncate(limit as usize);
    let horizons: Vec<(String, i64)> = thread_participants::table
        .filter(thread_participants::thread_id.eq(thread_id))
        .select((thread_participants::side, thread_participants::last_read_seq))
        .load(conn)
        .await?;
    let horizon = |wanted: bool| {
        horizons
            .iter()
            .find(|(s, _)| (s == side) == wanted)
            .map_or(0, |(_, seq)| *seq)
    };
    Ok((page, has_more, horizon(true), horizon(false)))
}

/// Stores a relation if `version` is newer than the stored one. Three statements at
/// most, each atomic on its own, so concurrent and repeated upserts need no lock.
pub async fn upsert_relation(
    conn: &mut Conn,
    relation_id: i64,
    fact: &FactRow,
    is_writable: bool,
) -> QueryResult<(UpsertOutcome, Vec<SummaryKey>)> {
    let outcome = store_relation(conn, relation_id, fact).await?;
    let changed = match outcome {
        UpsertOutcome::Applied => thread_changed(conn, true, relation_id, is_writable).await?,
        _ => Vec::new(),
    };
    Ok((outcome, changed))
}

/// A thread's writability follows its relation or inquiry: when one changes, both
/// participants' summaries change (their `is_writable`).
async fn thread_changed(
    conn: &mut Conn,
    is_relation: bool,
    target_id: i64,
    is_writable: bool,
) -> QueryResult<Vec<SummaryKey>> {
    let Some(thread) = find_thread_by_target(conn, is_relation, target_id).await? else {
        return Ok(Vec::new());
    };
    diesel::update(thread_participants::table.filter(thread_participants::thread_id.eq(thread.thread_id)))
        .set(thread_participants::is_writable.eq(is_writable))
        .execute(conn)
        .await?;
    let keys = vec![(thread.tutor_id, "tutor"), (thread.student_id, "student")];
    for (user_id, side) in &keys {
        bump_summary_version(conn, *user_id, side).await?;
    }
    Ok(keys.into_iter().map(|(user_id, side)| (user_id, side.to_owned())).collect())
}

async fn store_relation(conn: &mut Conn, relation_id: i64, fact: &FactRow) -> QueryResult<UpsertOutcome> {
    let now = Utc::now();
    let inserted = diesel::insert_into(relations::table)
        .values((
            relations::relation_id.eq(relation_id),
            relations::tutor_id.eq(fact.tutor_id),
            relations::student_id.eq(fact.student_id),
            relations::status.eq(&fact.status),
            relations::version.eq(fact.version),
            relations::updated_at.eq(now),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    if inserted == 1 {
        return Ok(UpsertOutcome::Applied);
    }
    let updated = diesel::update(relations::table.find(relation_id))
        .filter(relations::version.lt(fact.version))
        .filter(relations::tutor_id.eq(fact.tutor_id))
        .filter(relations::student_id.eq(fact.student_id))
        .set((
            relations::status.eq(&fact.status),
            relations::version.eq(fact.version),
            relations::updated_at.eq(now),
        ))
        .execute(conn)
        .await?;
    if updated == 1 {
        return Ok(UpsertOutcome::Applied);
    }
    let stored = find_relation(conn, relation_id).await?;
    Ok(UpsertOutcome::not_applied(stored.as_ref(), fact))
}

/// Stores an inquiry if `version` is newer; see `upsert_relation`.
pub async fn upsert_inquiry(
    conn: &mut Conn,
    inquiry_id: i64,
    fact: &FactRow,
    is_writable: bool,
) -> QueryResult<(UpsertOutcome, Vec<SummaryKey>)> {
    let outcome = store_inquiry(conn, inquiry_id, fact).await?;
    let changed = match outcome {
        UpsertOutcome::Applied => thread_changed(conn, false, inquiry_id, is_writable).await?,
        _ => Vec::new(),
    };
    Ok((outcome, changed))
}

async fn store_inquiry(conn: &mut Conn, inquiry_id: i64, fact: &FactRow) -> QueryResult<UpsertOutcome> {
    let now = Utc::now();
    let inserted = diesel::insert_into(inquiries::table)
        .values((
            inquiries::inquiry_id.eq(inquiry_id),
            inquiries::tutor_id.eq(fact.tutor_id),
            inquiries::student_id.eq(fact.student_id),
            inquiries::status.eq(&fact.status),
            inquiries::version.eq(fact.version),
            inquiries::updated_at.eq(now),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    if inserted == 1 {
        return Ok(UpsertOutcome::Applied);
    }
    let updated = diesel::update(inquiries::table.find(inquiry_id))
        .filter(inquiries::version.lt(fact.version))
        .filter(inquiries::tutor_id.eq(fact.tutor_id))
        .filter(inquiries::student_id.eq(fact.student_id))
        .set((
            inquiries::status.eq(&fact.status),
            inquiries::version.eq(fact.version),
            inquiries::updated_at.eq(now),
        ))
        .execute(conn)
        .await?;
    if updated == 1 {
        return Ok(UpsertOutcome::Applied);
    }
    let stored = find_inquiry(conn, inquiry_id).await?;
    Ok(UpsertOutcome::not_applied(stored.as_ref(), fact))
}

/// Stores a tutor's contact access to a student if `version` is newer. Returns whether
/// it was applied.
pub async fn upsert_contact_access(
    conn: &mut Conn,
    tutor_id: i64,
    student_id: i64,
    state: &str,
    version: i64,
) -> QueryResult<bool> {
    let now = Utc::now();
    let inserted = diesel::insert_into(contact_access::table)
        .values((
            contact_access::tutor_id.eq(tutor_id),
            contact_access::student_id.eq(student_id),
            contact_access::state.eq(state),
            contact_access::version.eq(version),
            contact_access::updated_at.eq(now),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    if inserted == 1 {
        return Ok(true);
    }
    let updated = diesel::update(contact_access::table.find((tutor_id, student_id)))
        .filter(contact_access::version.lt(version))
        .set((
            contact_access::state.eq(state),
            contact_access::version.eq(version),
            contact_access::updated_at.eq(now),
        ))
        .execute(conn)
        .await?;
    Ok(updated == 1)
}

/// Recounts a side's unread messages from the messages themselves (for checks that the
/// maintained counter agrees).
pub async fn recount_unread(conn: &mut Conn, thread_id: i64, side: &str) -> QueryResult<(i64, i64)> {
    let (user_id, last_read_seq, counter): (i64, i64, i64) = thread_participants::table
        .find((thread_id, side))
        .select((
            thread_participants::user_id,
            thread_participants::last_read_seq,
            thread_participants::unread_count,
        ))
        .first(conn)
        .await?;
    let recount: i64 = messages::table
        .filter(messages::thread_id.eq(thread_id))
        .filter(messages::seq.gt(last_read_seq))
        .filter(messages::sender_id.ne(user_id))
        .count()
        .get_result(conn)
        .await?;
    Ok((counter, recount))
}
