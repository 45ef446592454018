//! EnsureThread's create: the thread of a relation (contact) or an inquiry
//! (negotiation), with its two participant rows, taking messages as the fact's status
//! says (`RelationStatus::allows_messages`, `InquiryStatus::allows_messages`). The fact
//! is read under a share lock, so a status change commits before (and is seen) or
//! after (and its own write updates the new thread). The unique keys decide races.

use diesel::SqliteConnection;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Nullable, Text};

use super::Write;
use crate::model::{EventKind, InquiryStatus, RelationStatus, Side, Thread, ThreadKind};
use crate::rules;
use crate::storage::postgres::{self, committed_row};
use crate::storage::sqlite::reads::ThreadRow;
use crate::storage::sqlite::schema::{inquiries, relations, thread_participants, threads};
use crate::storage::sqlite::steps;

/// What a thread is created from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateThread {
    Relation { relation_id: i64 },
    Inquiry { inquiry_id: i64 },
}

postgres::sql_file_statement! {
    /// EnsureThread's create of the thread of a relation or an inquiry (see the file).
    CreateThreadStatement {
        relation_id: Option<i64> => Nullable<BigInt>,
        inquiry_id: Option<i64> => Nullable<BigInt>,
        writable: Vec<&'static str> => Array<Text>,
    }
    sql = include_str!("create_thread.sql");
}

impl Write for CreateThread {
    /// The thread created; `None` when it exists already (another call created it
    /// first) or its fact does not, which the caller reads back.
    type Done = Option<Thread>;
    const NAME: &'static str = "create_thread";

    async fn postgres(&self, conn: &mut postgres::Conn) -> QueryResult<Option<Thread>> {
        let statement = match *self {
            CreateThread::Relation { relation_id } => CreateThreadStatement {
                relation_id: Some(relation_id),
                inquiry_id: None,
                writable: rules::allowing(RelationStatus::ALL, RelationStatus::allows_messages)
                    .iter()
                    .map(|status| status.as_str())
                    .collect(),
            },
            CreateThread::Inquiry { inquiry_id } => CreateThreadStatement {
                relation_id: None,
                inquiry_id: Some(inquiry_id),
                writable: rules::allowing(InquiryStatus::ALL, InquiryStatus::allows_messages)
                    .iter()
                    .map(|status| status.as_str())
                    .collect(),
            },
        };
        match committed_row::<_, postgres::reads::ThreadRow>(statement, conn).await {
            Ok(row) => Ok(Some(row.into())),
            Err(diesel::result::Error::NotFound) => Ok(None),
            Err(error) => Err(error),
        }
    }

    fn sqlite(&self, conn: &mut SqliteConnection) -> QueryResult<Option<Thread>> {
        let (kind, relation_id, inquiry_id, fact) = match *self {
            CreateThread::Relation { relation_id } => {
                let fact: Option<(i64, i64, RelationStatus)> = relations::table
                    .find(relation_id)
                    .select((
                        relations::tutor_id,
                        relations::student_id,
                        relations::status,
                    ))
                    .first(conn)
                    .optional()?;
                let fact =
                    fact.map(|(tutor, student, status)| (tutor, student, status.allows_messages()));
                (ThreadKind::Contact, Some(relation_id), None, fact)
            }
            CreateThread::Inquiry { inquiry_id } => {
                let fact: Option<(i64, i64, InquiryStatus)> = inquiries::table
                    .find(inquiry_id)
                    .select((
                        inquiries::tutor_id,
                        inquiries::student_id,
                        inquiries::status,
                    ))
                    .first(conn)
                    .optional()?;
                let fact =
                    fact.map(|(tutor, student, status)| (tutor, student, status.allows_messages()));
                (ThreadKind::Negotiation, None, Some(inquiry_id), fact)
            }
        };
        let Some((tutor_id, student_id, is_writable)) = fact else {
            return Ok(None);
        };
        // One writer: the only conflict is a thread created by an earlier write.
        let inserted: Option<Thread> = diesel::insert_into(threads::table)
            .values((
                threads::kind.eq(kind.as_str()),
                threads::relation_id.eq(relation_id),
                threads::inquiry_id.eq(inquiry_id),
                threads::tutor_id.eq(tutor_id),
                threads::student_id.eq(student_id),
                threads::is_writable.eq(is_writable),
                threads::created_at.eq(steps::now_micros()),
            ))
            .on_conflict_do_nothing()
            .returning(ThreadRow::as_returning())
            .get_result::<ThreadRow>(conn)
            .optional()?
            .map(Thread::from);
        if let Some(thread) = &inserted {
            for (side, user_id) in [(Side::Tutor, tutor_id), (Side::Student, student_id)] {
                diesel::insert_into(thread_participants::table)
                    .values((
                        thread_participants::thread_id.eq(thread.thread_id),
                        thread_participants::side.eq(side.as_str()),
                        thread_participants::user_id.eq(user_id),
                        thread_participants::kind.eq(kind.as_str()),
                        thread_participants::relation_id.eq(relation_id),
                        thread_participants::inquiry_id.eq(inquiry_id),
                        thread_participants::tutor_id.eq(tutor_id),
                        thread_participants::student_id.eq(student_id),
                        thread_participants::is_writable.eq(is_writable),
                        thread_participants::thread_created_at.eq(thread.created_at),
                    ))
                    .execute(conn)?;
            }
            steps::note(
                conn,
                steps::Note::of_thread(EventKind::ThreadCreated, thread.thread_id),
            )?;
        }
        Ok(inserted)
    }
}
