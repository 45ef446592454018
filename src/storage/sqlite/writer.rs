//! The one writer connection of the SQLite store, on a thread of its own, which every
//! write queues for.
//!
//! Writes that queue up while the writer is busy commit together (group commit): one
//! `BEGIN IMMEDIATE … COMMIT` carries them all, pages they share are written once, and
//! every write is answered only after the commit. Should one of them fail, the group
//! is rolled back and each write runs again in a transaction of its own, so a failure
//! is only ever its own write's.
//!
//! The writer checkpoints the WAL between its own transactions, every
//! `CHECKPOINT_PAGES`. A checkpoint run by another connection beside a busy writer
//! never completes, and the WAL restarts only after one that did: tried, it let the WAL
//! grow without bound (1.9 GB, every lookup through its index slower), and copying in
//! the background alongside the writer's own checkpoints bought nothing measurable.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use diesel::result::Error as DieselError;
use diesel::{Connection, QueryResult, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

use crate::storage::pool;
use crate::storage::{StoreError, StoreResult};

/// How many writes may wait for the writer before callers wait to queue.
const WRITE_QUEUE: usize = 4096;

/// Most writes one commit carries.
const MAX_GROUP: usize = 64;

/// WAL pages that make the writer checkpoint after a commit, and the WAL restart: four
/// times SQLite's default, so pages a burst rewrites (counters, versions) are copied
/// once rather than often. Measured at 64 writers: 1.2-1.3x the throughput of the
/// default, for a longer pause (p99 ~50 ms instead of ~30 ms) when a checkpoint runs.
const CHECKPOINT_PAGES: u32 = 4096;

/// The WAL file is cut back to this size when it restarts, rather than keep the size
/// of its largest burst.
const WAL_SIZE_LIMIT: u64 = 64 << 20;

/// A queued write.
trait QueuedWrite: Send {
    /// Runs the write inside the writer's transaction; false when it failed (its
    /// outcome is kept for its answer either way).
    fn run(&mut self, conn: &mut SqliteConnection) -> bool;
    /// Answers the caller once the commit's outcome is known.
    fn answer(self: Box<Self>, committed: Result<(), &DieselError>);
}

type Job = Box<dyn QueuedWrite>;

/// What waits in the writer's queue: a write, or a checkpoint to run between writes
/// (outside any transaction, which SQLite requires of one).
enum Queued {
    Write(Job),
    Checkpoint(oneshot::Sender<Result<(), String>>),
}

struct Pending<T, F> {
    write: F,
    outcome: Option<QueryResult<T>>,
    answer: oneshot::Sender<StoreResult<T>>,
}

impl<T, F> QueuedWrite for Pending<T, F>
where
    T: Send,
    F: Fn(&mut SqliteConnection) -> QueryResult<T> + Send,
{
    fn run(&mut self, conn: &mut SqliteConnection) -> bool {
        // A panic in one write must not take the writer (and every later write) down
        // with it: it becomes this write's error.
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| (self.write)(conn)))
            .unwrap_or_else(|_| {
                Err(DieselError::QueryBuilderError(
                    "the SQLite write panicked".into(),
                ))
            });
        let ok = outcome.is_ok();
        self.outcome = Some(outcome);
        ok
    }

    fn answer(self: Box<Self>, committed: Result<(), &DieselError>) {
        let outcome = match (self.outcome, committed) {
            (Some(Err(error)), _) => Err(StoreError::from(error)),
            (Some(Ok(value)), Ok(())) => Ok(value),
            // Its work went with the failed commit, whatever it returned.
            (_, Err(error)) => Err(StoreError::of_commit(error)),
            (None, Ok(())) => Err(StoreError::Unavailable(
                "the SQLite write did not run".into(),
            )),
        };
        let _ = self.answer.send(outcome);
    }
}

/// The writer: a queue to its thread. Cloning is shallow; the thread ends when the last
/// clone is dropped.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Queued>,
    timeout: Duration,
}

impl Writer {
    /// Opens the writer connection to `path` and starts its thread. Waiting for a write
    /// is bounded by `timeout`.
    pub fn open(path: &str, timeout: Duration) -> Result<Self, String> {
        let mut conn = SqliteConnection::establish(path)
            .map_err(|e| format!("cannot open the SQLite database {path}: {e}"))?;
        diesel::connection::SimpleConnection::batch_execute(
            &mut conn,
            // secure_delete: what a write replaces or removes is overwritten with
            // zeros in the file, not left in free space (EraseUser's promise).
            &format!(
                "{} PRAGMA wal_autocheckpoint = {CHECKPOINT_PAGES}; \
                 PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}; PRAGMA secure_delete = ON;",
                pool::sqlite_pragmas(timeout)
            ),
        )
        .map_err(|e| format!("cannot set up the SQLite database {path}: {e}"))?;
        let (jobs, mut queued) = mpsc::channel::<Queued>(WRITE_QUEUE);
        std::thread::Builder::new()
            .name("chatd-sqlite-writer".into())
            .spawn(move || {
                // Ends when every sender is gone (the store was dropped).
                let mut next = queued.blocking_recv();
                while let Some(item) = next.take() {
                    let first = match item {
                        Queued::Checkpoint(answer) => {
                            let _ = answer.send(checkpoint(&mut conn, timeout));
                            next = queued.blocking_recv();
                            continue;
                        }
                        Queued::Write(first) => first,
                    };
                    let mut group = vec![first];
                    while group.len() < MAX_GROUP {
                        match queued.try_recv() {
                            Ok(Queued::Write(job)) => group.push(job),
                            // A checkpoint waits for the group before it to commit.
                            Ok(checkpoint) => {
                                next = Some(checkpoint);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    commit_group(&mut conn, group);
                    if next.is_none() {
                        next = queued.blocking_recv();
                    }
                }
            })
            .map_err(|e| format!("cannot start the SQLite writer: {e}"))?;
        Ok(Self { jobs, timeout })
    }

    /// Runs `write` on the writer connection, after the writes queued before it, in a
    /// group commit (see the module's doc); answers once committed. `write` may run
    /// twice (again alone, when another write of its group failed): it only reads and
    /// writes the database, and a rolled-back run left nothing behind.
    /// Waiting for the answer is bounded by the pool timeout: past it the caller hears
    /// UNAVAILABLE (the write may still complete, as a write whose answer a network lost
    /// would; retries with a `client_message_id` are safe).
    pub async fn write<T: Send + 'static>(
        &self,
        write: impl Fn(&mut SqliteConnection) -> QueryResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let (answer, answered) = oneshot::channel();
        let job: Job = Box::new(Pending {
            write,
            outcome: None,
            answer,
        });
        self.queue(Queued::Write(job), answered).await?
    }

    /// Moves every page the WAL holds into the database file and truncates the WAL to
    /// nothing, once the writes queued before it have committed.
    pub async fn checkpoint(&self) -> StoreResult<()> {
        let (answer, answered) = oneshot::channel();
        self.queue(Queued::Checkpoint(answer), answered)
            .await?
            .map_err(StoreError::Unavailable)
    }

    /// Queues an item and waits for its answer, within the timeout.
    async fn queue<A>(&self, item: Queued, answered: oneshot::Receiver<A>) -> StoreResult<A> {
        let stopped = || StoreError::Unavailable("the SQLite writer has stopped".into());
        let waited = tokio::time::timeout(self.timeout, async {
            self.jobs.send(item).await.map_err(|_| stopped())?;
            answered.await.map_err(|_| stopped())
        })
        .await;
        waited.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(format!(
                "the SQLite writer did not answer within {:?}",
                self.timeout
            )))
        })
    }
}

/// The answer of `PRAGMA wal_checkpoint`.
#[derive(diesel::QueryableByName)]
struct CheckpointRow {
    /// 1 when readers kept it from completing.
    #[diesel(sql_type = diesel::sql_types::Integer)]
    busy: i32,
}

/// `PRAGMA wal_checkpoint(TRUNCATE)`: every frame into the database file, then the WAL
/// cut to zero bytes. Readers still on an old snapshot keep it from completing; it is
/// tried again until `within` has passed.
fn checkpoint(conn: &mut SqliteConnection, within: Duration) -> Result<(), String> {
    use diesel::RunQueryDsl;
    let deadline = std::time::Instant::now() + within;
    loop {
        let rows: Vec<CheckpointRow> = diesel::sql_query("PRAGMA wal_checkpoint(TRUNCATE)")
            .load(conn)
            .map_err(|e| format!("the WAL checkpoint failed: {e}"))?;
        if rows.first().is_some_and(|row| row.busy == 0) {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!(
                "the WAL checkpoint could not complete within {within:?}: readers held old pages"
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs a group of queued writes as one transaction and answers each after the
/// commit. If a write (or the commit) failed, the group is rolled back and every write
/// runs again alone, so one write's failure is never another's.
fn commit_group(conn: &mut SqliteConnection, mut group: Vec<Job>) {
    let together = conn.immediate_transaction(|conn| {
        for job in group.iter_mut() {
            if !job.run(conn) {
                return Err(DieselError::RollbackTransaction);
            }
        }
        Ok(())
    });
    match together {
        Ok(()) => group.into_iter().for_each(|job| job.answer(Ok(()))),
        Err(_) if group.len() > 1 => {
            for mut job in group {
                let alone = conn.immediate_transaction(|conn| {
                    if job.run(conn) {
                        Ok(())
                    } else {
                        Err(DieselError::RollbackTransaction)
                    }
                });
                job.answer(alone.as_ref().map(|_| ()));
            }
        }
        Err(error) => group.into_iter().for_each(|job| job.answer(Err(&error))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::RunQueryDsl;
    use diesel::connection::SimpleConnection;

    fn pending(
        write: impl Fn(&mut SqliteConnection) -> QueryResult<usize> + Send + 'static,
    ) -> (Job, oneshot::Receiver<StoreResult<usize>>) {
        let (answer, answered) = oneshot::channel();
        let job = Box::new(Pending {
            write,
            outcome: None,
            answer,
        });
        (job, answered)
    }

    fn insert(n: i64) -> impl Fn(&mut SqliteConnection) -> QueryResult<usize> + Send + 'static {
        move |conn| diesel::sql_query(format!("INSERT INTO t (n) VALUES ({n})")).execute(conn)
    }

    #[test]
    fn a_failed_write_fails_alone_and_the_group_still_commits() {
        let mut conn = SqliteConnection::establish(":memory:").unwrap();
        conn.batch_execute("CREATE TABLE t (n INTEGER PRIMARY KEY)")
            .unwrap();
        let (first, first_answer) = pending(insert(1));
        // A duplicate key: fails inside the group.
        let (failing, failing_answer) = pending(insert(1));
        let (third, third_answer) = pending(insert(3));
        commit_group(&mut conn, vec![first, failing, third]);
        assert!(first_answer.blocking_recv().unwrap().is_ok());
        assert!(matches!(
            failing_answer.blocking_recv().unwrap(),
            Err(StoreError::Query(_))
        ));
        assert!(third_answer.blocking_recv().unwrap().is_ok());
        let count: i64 = diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
            "(SELECT COUNT(*) FROM t)",
        ))
        .get_result(&mut conn)
        .unwrap();
        assert_eq!(count, 2, "both good writes are stored, once each");
    }

    #[test]
    fn a_panicking_write_is_its_own_error() {
        let mut conn = SqliteConnection::establish(":memory:").unwrap();
        conn.batch_execute("CREATE TABLE t (n INTEGER PRIMARY KEY)")
            .unwrap();
        let (panicking, panicked) = pending(|_| panic!("a bug"));
        let (fine, fine_answer) = pending(insert(7));
        commit_group(&mut conn, vec![panicking, fine]);
        assert!(panicked.blocking_recv().unwrap().is_err());
        assert!(fine_answer.blocking_recv().unwrap().is_ok());
    }
}
