//! The one writer connection of the SQLite store, on a thread of its own, which every
//! write queues for.
//!
//! Writes that queue up while the writer is busy commit together (group commit): one
//! `BEGIN IMMEDIATE … COMMIT` carries them all, pages they share are written once, and
//! every write is answered only after the commit. Should one of them fail, the group
//! is rolled back and each write runs again in a transaction of its own, so a failure
//! is only ever its own write's.
//!
//! The WAL's pages are copied into the database file by a checkpointer beside the
//! writer (`checkpointer.rs`); the writer only copies the last few frames when asked, so
//! the WAL can restart, and checkpoints by itself only past `LIMIT_PAGES`.
//!
//! Each write's time is split into phases (`metrics::write_phase`): queued before its
//! group began, its own statements, the rest of its group's statements, the commit,
//! and the answer reaching the caller; the writer's own checkpoints are a phase of
//! their own. They show where the slowest writes spend their time.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use diesel::result::Error as DieselError;
use diesel::{Connection, QueryResult, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

use super::checkpointer::{Checkpointer, WalBounds, wal_checkpoint};
use crate::metrics::{WritePhases, write_phase};
use crate::storage::pool::{self, SqliteSync};
use crate::storage::{StoreError, StoreResult};

/// How many writes may wait for the writer before callers wait to queue.
const WRITE_QUEUE: usize = 4096;

/// Most writes one commit carries.
const MAX_GROUP: usize = 64;

/// WAL pages past which the writer checkpoints after a commit by itself (SQLite's
/// autocheckpoint), holding the writes queued behind it: only when the checkpointer
/// fell behind, to keep the WAL bounded (64 MiB of 4 KiB pages).
const LIMIT_PAGES: u32 = 65536;

/// The WAL file is cut back to this size when it restarts, rather than keep the size
/// of its largest burst.
const WAL_SIZE_LIMIT: u64 = 128 << 20;

/// A queued write.
trait QueuedWrite: Send {
    /// Runs the write inside the writer's transaction; false when it failed (its
    /// outcome is kept for its answer either way).
    fn run(&mut self, conn: &mut SqliteConnection) -> bool;
    /// Answers the caller once the commit's outcome is known, and records the write's
    /// phases.
    fn answer(self: Box<Self>, committed: Result<(), &DieselError>, timing: &GroupTiming);
}

/// When a group's transaction began, its commit began and ended.
struct GroupTiming<'a> {
    began: Instant,
    committing: Instant,
    committed: Instant,
    phases: Option<&'a WritePhases>,
}

/// What a write's caller hears: its outcome, and when its commit ended (so the caller
/// can time the answer's way back).
type Answer<T> = (StoreResult<T>, Instant);

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
    answer: oneshot::Sender<Answer<T>>,
    queued_at: Instant,
    /// How long its own statements ran (the last time they ran).
    statements: Duration,
}

impl<T, F> QueuedWrite for Pending<T, F>
where
    T: Send,
    F: Fn(&mut SqliteConnection) -> QueryResult<T> + Send,
{
    fn run(&mut self, conn: &mut SqliteConnection) -> bool {
        // A panic in one write must not take the writer (and every later write) down
        // with it: it becomes this write's error.
        let began = Instant::now();
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| (self.write)(conn)))
            .unwrap_or_else(|_| {
                Err(DieselError::QueryBuilderError(
                    "the SQLite write panicked".into(),
                ))
            });
        self.statements = began.elapsed();
        let ok = outcome.is_ok();
        self.outcome = Some(outcome);
        ok
    }

    fn answer(self: Box<Self>, committed: Result<(), &DieselError>, timing: &GroupTiming) {
        if let Some(phases) = timing.phases {
            let before_commit = timing.committing.saturating_duration_since(timing.began);
            phases.observe(
                write_phase::QUEUED,
                timing.began.saturating_duration_since(self.queued_at),
            );
            phases.observe(write_phase::STATEMENTS, self.statements);
            phases.observe(
                write_phase::GROUP,
                before_commit.saturating_sub(self.statements),
            );
            phases.observe(
                write_phase::COMMIT,
                timing
                    .committed
                    .saturating_duration_since(timing.committing),
            );
        }
        let outcome = match (self.outcome, committed) {
            (Some(Err(error)), _) => Err(StoreError::from(error)),
            (Some(Ok(value)), Ok(())) => Ok(value),
            // Its work went with the failed commit, whatever it returned.
            (_, Err(error)) => Err(StoreError::of_commit(error)),
            (None, Ok(())) => Err(StoreError::Unavailable(
                "the SQLite write did not run".into(),
            )),
        };
        let _ = self.answer.send((outcome, timing.committed));
    }
}

/// The writer: a queue to its thread. Cloning is shallow; the thread ends when the last
/// clone is dropped.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Queued>,
    timeout: Duration,
    phases: Arc<OnceLock<WritePhases>>,
}

impl Writer {
    /// Opens the writer connection to `path` and starts its thread. Waiting for a write
    /// is bounded by `timeout`.
    pub fn open(path: &str, timeout: Duration, sync: SqliteSync) -> Result<Self, String> {
        Self::open_with(path, timeout, sync, WalBounds::DEFAULT)
    }

    fn open_with(
        path: &str,
        timeout: Duration,
        sync: SqliteSync,
        bounds: WalBounds,
    ) -> Result<Self, String> {
        // secure_delete: what a write replaces or removes is overwritten with zeros in
        // the file, not left in free space (EraseUser's promise).
        let mut conn = connect(
            path,
            &format!(
                "{} PRAGMA wal_autocheckpoint = {LIMIT_PAGES}; \
                 PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}; PRAGMA secure_delete = ON;",
                pool::sqlite_pragmas(timeout, sync)
            ),
        )?;
        let checkpointer =
            Checkpointer::start(connect(path, &pool::sqlite_pragmas(timeout, sync))?, bounds)?;
        let phases = Arc::new(OnceLock::<WritePhases>::new());
        let timed = phases.clone();
        let (jobs, mut queued) = mpsc::channel::<Queued>(WRITE_QUEUE);
        std::thread::Builder::new()
            .name("chatd-sqlite-writer".into())
            .spawn(move || {
                // Ends when every sender is gone (the store was dropped), and the
                // checkpointer with it.
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
                    commit_group(&mut conn, group, timed.get());
                    if checkpointer.committed() {
                        finish_checkpoint(&mut conn, timed.get());
                        checkpointer.finished();
                    }
                    if next.is_none() {
                        next = queued.blocking_recv();
                    }
                }
            })
            .map_err(|e| format!("cannot start the SQLite writer: {e}"))?;
        Ok(Self {
            jobs,
            timeout,
            phases,
        })
    }

    /// From now on, each write's phases are recorded in `phases` (once: later calls
    /// change nothing).
    pub fn time_phases(&self, phases: WritePhases) {
        let _ = self.phases.set(phases);
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
            queued_at: Instant::now(),
            statements: Duration::ZERO,
        });
        let (outcome, committed) = self.queue(Queued::Write(job), answered).await?;
        if let Some(phases) = self.phases.get() {
            phases.observe(write_phase::ANSWER, committed.elapsed());
        }
        outcome
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

/// Opens a connection to `path` and sets it up with `pragmas`.
fn connect(path: &str, pragmas: &str) -> Result<SqliteConnection, String> {
    let mut conn = SqliteConnection::establish(path)
        .map_err(|e| format!("cannot open the SQLite database {path}: {e}"))?;
    diesel::connection::SimpleConnection::batch_execute(&mut conn, pragmas)
        .map_err(|e| format!("cannot set up the SQLite database {path}: {e}"))?;
    Ok(conn)
}

/// Copies the WAL's last frames, which the checkpointer has not, so that the next
/// transaction can restart the WAL. Between two groups, outside any transaction.
fn finish_checkpoint(conn: &mut SqliteConnection, phases: Option<&WritePhases>) {
    let began = Instant::now();
    match wal_checkpoint(conn, "PASSIVE") {
        Ok(round) => tracing::trace!(
            frames = round.log,
            busy = round.busy,
            "the writer copied the WAL's last frames"
        ),
        // The checkpointer asks again after its next round.
        Err(error) => tracing::warn!(%error, "the writer's WAL checkpoint failed"),
    }
    if let Some(phases) = phases {
        phases.observe(write_phase::CHECKPOINT, began.elapsed());
    }
}

/// `PRAGMA wal_checkpoint(TRUNCATE)`: every frame into the database file, then the WAL
/// cut to zero bytes. Readers still on an old snapshot (or the checkpointer's round) keep
/// it from completing; it is tried again until `within` has passed.
fn checkpoint(conn: &mut SqliteConnection, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        let round = wal_checkpoint(conn, "TRUNCATE")
            .map_err(|e| format!("the WAL checkpoint failed: {e}"))?;
        if round.busy == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
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
fn commit_group(conn: &mut SqliteConnection, mut group: Vec<Job>, phases: Option<&WritePhases>) {
    let began = Instant::now();
    let mut committing = began;
    let together = conn.immediate_transaction(|conn| {
        for job in group.iter_mut() {
            if !job.run(conn) {
                return Err(DieselError::RollbackTransaction);
            }
        }
        committing = Instant::now();
        Ok(())
    });
    let timing = GroupTiming {
        began,
        committing,
        committed: Instant::now(),
        phases,
    };
    match together {
        Ok(()) => group
            .into_iter()
            .for_each(|job| job.answer(Ok(()), &timing)),
        Err(_) if group.len() > 1 => {
            for mut job in group {
                let began = Instant::now();
                let mut committing = began;
                let alone = conn.immediate_transaction(|conn| {
                    if job.run(conn) {
                        committing = Instant::now();
                        Ok(())
                    } else {
                        Err(DieselError::RollbackTransaction)
                    }
                });
                let timing = GroupTiming {
                    began,
                    committing,
                    committed: Instant::now(),
                    phases,
                };
                job.answer(alone.as_ref().map(|_| ()), &timing);
            }
        }
        Err(error) => group
            .into_iter()
            .for_each(|job| job.answer(Err(&error), &timing)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::RunQueryDsl;
    use diesel::connection::SimpleConnection;

    fn pending(
        write: impl Fn(&mut SqliteConnection) -> QueryResult<usize> + Send + 'static,
    ) -> (Job, oneshot::Receiver<Answer<usize>>) {
        let (answer, answered) = oneshot::channel();
        let job = Box::new(Pending {
            write,
            outcome: None,
            answer,
            queued_at: Instant::now(),
            statements: Duration::ZERO,
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
        commit_group(&mut conn, vec![first, failing, third], None);
        assert!(first_answer.blocking_recv().unwrap().0.is_ok());
        assert!(matches!(
            failing_answer.blocking_recv().unwrap().0,
            Err(StoreError::Query(_))
        ));
        assert!(third_answer.blocking_recv().unwrap().0.is_ok());
        let count: i64 = diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
            "(SELECT COUNT(*) FROM t)",
        ))
        .get_result(&mut conn)
        .unwrap();
        assert_eq!(count, 2, "both good writes are stored, once each");
    }

    /// Writes of 4 KiB rows from 8 tasks at once, so the writer always has the next
    /// group queued, through a writer whose WAL restarts past 64 pages: the WAL file
    /// stays far below the 16 MiB written (without restarts it holds every page
    /// written), and every row is there.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_restarts_while_the_writer_writes_without_pause() {
        let dir = std::env::temp_dir().join(format!(
            "chatd-writer-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("wal.db");
        let path = path.to_str().unwrap().to_owned();
        let bounds = WalBounds {
            restart_pages: 64,
            finish_pages: 256,
        };
        let writer =
            Writer::open_with(&path, Duration::from_secs(10), SqliteSync::Normal, bounds).unwrap();
        writer
            .write(|conn| conn.batch_execute("CREATE TABLE t (n INTEGER PRIMARY KEY, b BLOB)"))
            .await
            .unwrap();
        let (tasks, each) = (8, 512);
        let writers: Vec<_> = (0..tasks)
            .map(|task| {
                let writer = writer.clone();
                tokio::spawn(async move {
                    for i in 0..each {
                        let n = task * each + i;
                        writer
                            .write(move |conn| {
                                diesel::sql_query(format!(
                                    "INSERT INTO t (n, b) VALUES ({n}, randomblob(4000))"
                                ))
                                .execute(conn)
                            })
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for task in writers {
            task.await.unwrap();
        }
        let rows = tasks * each;
        let wal = std::fs::metadata(format!("{path}-wal")).unwrap().len();
        let count = writer
            .write(|conn| {
                diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
                    "(SELECT COUNT(*) FROM t)",
                ))
                .get_result::<i64>(conn)
            })
            .await
            .unwrap();
        drop(writer);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(count, rows, "every write is stored");
        assert!(
            wal < 8 << 20,
            "the WAL grew instead of restarting: {wal} bytes after 16 MiB of writes"
        );
    }

    #[test]
    fn a_panicking_write_is_its_own_error() {
        let mut conn = SqliteConnection::establish(":memory:").unwrap();
        conn.batch_execute("CREATE TABLE t (n INTEGER PRIMARY KEY)")
            .unwrap();
        let (panicking, panicked) = pending(|_| panic!("a bug"));
        let (fine, fine_answer) = pending(insert(7));
        commit_group(&mut conn, vec![panicking, fine], None);
        assert!(panicked.blocking_recv().unwrap().0.is_err());
        assert!(fine_answer.blocking_recv().unwrap().0.is_ok());
    }
}
