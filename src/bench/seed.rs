//! Seeds a synthetic dataset for `chatd bench`, generated inside the database by
//! `INSERT … SELECT` over a number series: millions of rows without sending them.
//!
//! Users 1..=U/2 are tutors, the rest students. Thread x (1..=T) belongs to relation x
//! (ACTIVE, contact access UNLOCKED) of tutor `1 + x % tutors` and student
//! `tutors + 1 + (x / tutors) % students`, so every pair is distinct. Each thread holds
//! M/T messages from its student; its tutor has read all but `x % 4` of them, so the
//! counters agree with the messages exactly as the service would have kept them. Every
//! user has a summary version row, as every user of a live deployment who ever received
//! a message has.

use std::time::Instant;

use chrono::Utc;

use crate::storage::Store;

/// The size of a benchmark dataset.
#[derive(Debug, Clone, Copy)]
pub struct Dataset {
    pub users: i64,
    pub threads: i64,
    pub messages: i64,
}

impl Dataset {
    pub fn tutors(&self) -> i64 {
        self.users / 2
    }

    pub fn students(&self) -> i64 {
        self.users - self.tutors()
    }

    pub fn messages_per_thread(&self) -> i64 {
        (self.messages / self.threads).max(1)
    }

    pub fn tutor_of(&self, thread: i64) -> i64 {
        1 + thread % self.tutors()
    }

    pub fn student_of(&self, thread: i64) -> i64 {
        self.tutors() + 1 + (thread / self.tutors()) % self.students()
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.users < 2 || self.threads < 1 || self.messages < 0 {
            return Err("need at least 2 users and 1 thread".into());
        }
        if self.threads > self.tutors().saturating_mul(self.students()) {
            return Err(format!(
                "{} threads need more users: each tutor-student pair has one relation",
                self.threads
            ));
        }
        Ok(())
    }
}

/// Fills an empty database with `dataset`, printing each step's time to stderr.
pub async fn seed(store: &Store, dataset: Dataset) -> Result<(), String> {
    dataset.validate()?;
    let existing = store.count_threads().await.map_err(|e| e.to_string())?;
    if existing > 0 {
        return Err(format!(
            "the database already has {existing} threads: seed a fresh database"
        ));
    }
    let now = Utc::now().format("%F %T%.f%:z").to_string();
    let is_postgres = matches!(store, Store::Postgres(_));
    // A CTE `s(x)` of 1..=n: PostgreSQL's generate_series, SQLite's recursive twin.
    let series = |n: i64| {
        if is_postgres {
            format!("WITH s(x) AS (SELECT generate_series(1, {n}))")
        } else {
            format!("WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < {n})")
        }
    };
    let ts = match store {
        Store::Postgres(_) => format!("CAST('{now}' AS TIMESTAMPTZ)"),
        Store::Sqlite(_) => format!("'{now}'"),
    };
    let (t, k) = (dataset.threads, dataset.messages_per_thread());
    let (tutors, students) = (dataset.tutors(), dataset.students());
    let tutor = format!("(1 + x % {tutors})");
    let student = format!("({tutors} + 1 + (x / {tutors}) % {students})");
    let unread = format!("(CASE WHEN x % 4 > {k} THEN {k} ELSE x % 4 END)");
    let steps = [
        (
            "relations",
            format!(
                "{} INSERT INTO relations (relation_id, tutor_id, student_id, status, version, updated_at) \
                 SELECT x, {tutor}, {student}, 'ACTIVE', 1, {ts} FROM s",
                series(t)
            ),
        ),
        (
            "contact access",
            format!(
                "{} INSERT INTO contact_access (tutor_id, student_id, state, version, updated_at) \
                 SELECT {tutor}, {student}, 'UNLOCKED', 1, {ts} FROM s",
                series(t)
            ),
        ),
        (
            "threads",
            format!(
                "{} INSERT INTO threads (thread_id, kind, relation_id, tutor_id, student_id, last_seq, \
                 last_visible_seq, is_writable, last_message_at, last_message_preview, \
                 last_message_sender_id, created_at) \
                 SELECT x, 'contact', x, {tutor}, {student}, {k}, {k}, TRUE, {ts}, 'message {k}', {student}, {ts} FROM s",
                series(t)
            ),
        ),
        (
            "participants",
            format!(
                "{} INSERT INTO thread_participants (thread_id, side, user_id, last_read_seq, unread_count, \
                 kind, relation_id, tutor_id, student_id, is_writable, \
                 last_message_at, last_message_preview, last_message_sender_id, thread_created_at) \
                 SELECT x, 'tutor', {tutor}, {k} - {unread}, {unread}, \
                 'contact', x, {tutor}, {student}, TRUE, {ts}, 'message {k}', {student}, {ts} FROM s \
                 UNION ALL SELECT x, 'student', {student}, {k}, 0, \
                 'contact', x, {tutor}, {student}, TRUE, {ts}, 'message {k}', {student}, {ts} FROM s",
                series(t)
            ),
        ),
        (
            "summary versions",
            format!(
                "{} INSERT INTO summary_versions (user_id, side, version) \
                 SELECT x, CASE WHEN x <= {tutors} THEN 'tutor' ELSE 'student' END, 1 FROM s",
                series(dataset.users)
            ),
        ),
        (
            "messages",
            format!(
                "{} INSERT INTO messages (thread_id, seq, sender_id, body, created_at) \
                 SELECT t, q, {student_t}, 'message ' || q, {ts} \
                 FROM (SELECT (x - 1) / {k} + 1 AS t, (x - 1) % {k} + 1 AS q FROM s) AS m",
                series(t * k),
                student_t = student.replace('x', "t"),
            ),
        ),
    ];
    for (what, sql) in steps {
        let started = Instant::now();
        store
            .execute_batch(&sql)
            .await
            .map_err(|e| format!("seeding {what}: {e}"))?;
        eprintln!("seeded {what} in {:.1?}", started.elapsed());
    }
    if let Store::Postgres(_) = store {
        // Explicit ids do not advance the sequences; the service's inserts must
        // continue after them. VACUUM sets the visibility map of the bulk-loaded
        // tables, without which every index-only scan still visits the heap.
        store.execute_batch(
            "SELECT setval(pg_get_serial_sequence('threads', 'thread_id'), (SELECT MAX(thread_id) FROM threads)); \
             SELECT setval(pg_get_serial_sequence('messages', 'message_id'), (SELECT MAX(message_id) FROM messages))",
        )
        .await
        .map_err(|e| e.to_string())?;
        // On its own: VACUUM cannot run in the implicit transaction of a batch.
        store
            .execute_batch("VACUUM ANALYZE")
            .await
            .map_err(|e| e.to_string())?;
    } else {
        store
            .execute_batch("ANALYZE")
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}
