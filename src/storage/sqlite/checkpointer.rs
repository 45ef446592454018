//! The WAL's checkpoints, kept off the path a write waits on.
//!
//! Every commit appends its pages to the WAL; a checkpoint copies them into the database
//! file (syncing the WAL first and the file after), and once every frame is copied the
//! writer's next transaction starts the WAL over from its beginning. Run by the writer
//! after a commit (SQLite's autocheckpoint), a checkpoint of thousands of pages held
//! every write queued behind it for tens of milliseconds: that was the whole tail of
//! SQLite's writes.
//!
//! Here a connection of its own copies the pages while the writer goes on (PASSIVE
//! checkpoints never block a writer). Alone it cannot end the WAL: while the writer
//! appends, there is always a frame it has not copied yet, and the WAL restarts only
//! after a checkpoint that copied every frame. So when a round finds the WAL past
//! `WalBounds::restart_pages` and copied little (it keeps pace with the writer), it asks the writer
//! to copy the last few frames itself, between two groups; that takes a few
//! milliseconds, and the writer's next transaction restarts the WAL. Should the
//! checkpointer fall behind (a disk slower than the writes, a long read holding old
//! pages), SQLite's autocheckpoint on the writer, at `writer::LIMIT_PAGES`, still keeps
//! the WAL bounded.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use diesel::{QueryResult, RunQueryDsl, SqliteConnection};

/// When the checkpointer asks the writer to copy the WAL's last frames.
#[derive(Debug, Clone, Copy)]
pub(super) struct WalBounds {
    /// WAL pages past which the checkpointer asks the writer to let the WAL restart.
    pub restart_pages: i64,
    /// A round that copied at most this many pages keeps pace with the writer: what
    /// the writer appended since is about as much, and copying it holds writes briefly.
    pub finish_pages: i64,
}

impl WalBounds {
    /// A WAL of about 64 MiB (4 KiB pages) before it restarts: each restart costs the
    /// writer a pause of a few milliseconds, and at 16 MiB they came often enough (about
    /// ten a second at 4,000 sends/s) to take 7 % of its time; the size bounds no
    /// reader's work by much (lookups go through the WAL's index).
    pub const DEFAULT: WalBounds = WalBounds {
        restart_pages: 16384,
        finish_pages: 512,
    };
}

/// How long the checkpointer waits for the writer's news before it looks by itself
/// (a write that never came, a finish the writer did not get to).
const IDLE_WAIT: Duration = Duration::from_millis(200);

/// The answer of `PRAGMA wal_checkpoint`.
#[derive(diesel::QueryableByName, Debug, Clone, Copy)]
pub(super) struct CheckpointRow {
    /// 1 when it could not copy every frame: readers held old pages, or another
    /// connection was checkpointing.
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pub busy: i32,
    /// Frames in the WAL (-1 when it did not run).
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pub log: i32,
    /// Frames of the WAL already in the database file.
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pub checkpointed: i32,
}

/// Runs `PRAGMA wal_checkpoint(mode)` on `conn`.
pub(super) fn wal_checkpoint(
    conn: &mut SqliteConnection,
    mode: &str,
) -> QueryResult<CheckpointRow> {
    let rows: Vec<CheckpointRow> =
        diesel::sql_query(format!("PRAGMA wal_checkpoint({mode})")).load(conn)?;
    rows.into_iter()
        .next()
        .ok_or_else(|| diesel::result::Error::NotFound)
}

#[derive(Default)]
struct State {
    /// The writer committed since the checkpointer last looked.
    committed: bool,
    /// The checkpointer asks the writer to copy the WAL's last frames.
    finish: bool,
    /// The writer has stopped: so does the checkpointer.
    stopped: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing in the state can be left half-changed: ignore poisoning.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The writer's side of the checkpointer: owned by the writer's thread, and the
/// checkpointer stops when it is dropped.
pub(super) struct Checkpointer {
    shared: Arc<Shared>,
}

impl Checkpointer {
    /// Starts the checkpointer's thread on `conn`, a connection of its own to the
    /// writer's database.
    pub fn start(mut conn: SqliteConnection, bounds: WalBounds) -> Result<Self, String> {
        let shared = Arc::new(Shared::default());
        let theirs = shared.clone();
        std::thread::Builder::new()
            .name("chatd-sqlite-checkpointer".into())
            .spawn(move || copy_while_the_writer_writes(&mut conn, &theirs, bounds))
            .map_err(|e| format!("cannot start the SQLite checkpointer: {e}"))?;
        Ok(Self { shared })
    }

    /// Tells the checkpointer the writer committed; true when it asks the writer to
    /// copy the WAL's last frames now (then call `finished`).
    pub fn committed(&self) -> bool {
        let mut state = self.shared.lock();
        state.committed = true;
        let finish = state.finish;
        drop(state);
        self.shared.changed.notify_one();
        finish
    }

    /// The writer has copied the last frames (or tried to).
    pub fn finished(&self) {
        self.shared.lock().finish = false;
        self.shared.changed.notify_one();
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.shared.lock().stopped = true;
        self.shared.changed.notify_one();
    }
}

/// The checkpointer's thread: a PASSIVE round after every commit it hears of, until the
/// writer stops.
fn copy_while_the_writer_writes(conn: &mut SqliteConnection, shared: &Shared, bounds: WalBounds) {
    let mut previous: Option<CheckpointRow> = None;
    // The last round could not copy every frame (readers held old pages): try again
    // after a while even without news from the writer.
    let mut behind = false;
    loop {
        let mut state = shared.lock();
        loop {
            if state.stopped {
                return;
            }
            if state.committed && !state.finish {
                break;
            }
            let (next, waited) = shared
                .changed
                .wait_timeout(state, IDLE_WAIT)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            state = next;
            if waited.timed_out() && !state.stopped {
                if state.finish && !state.committed {
                    // The writer went idle before it got to the last frames: with no
                    // writes, a round of ours copies them all.
                    state.finish = false;
                    break;
                }
                if behind && !state.finish {
                    break;
                }
            }
        }
        state.committed = false;
        drop(state);

        let round = match wal_checkpoint(conn, "PASSIVE") {
            Ok(round) => round,
            Err(error) => {
                // The writer's autocheckpoint still bounds the WAL meanwhile.
                tracing::warn!(%error, "the SQLite checkpointer's round failed; trying again");
                behind = true;
                continue;
            }
        };
        let copied = match previous {
            // The same WAL as last round: what this round added.
            Some(last) if round.log >= last.log && round.checkpointed >= last.checkpointed => {
                i64::from(round.checkpointed - last.checkpointed)
            }
            Some(last) => {
                tracing::debug!(frames = last.log, "the SQLite WAL restarted");
                i64::from(round.checkpointed.max(0))
            }
            None => i64::from(round.checkpointed.max(0)),
        };
        tracing::trace!(
            frames = round.log,
            copied,
            busy = round.busy,
            "checkpointer round"
        );
        previous = Some(round);
        behind = round.busy != 0 || round.checkpointed < round.log;
        if !behind && i64::from(round.log) >= bounds.restart_pages && copied <= bounds.finish_pages
        {
            shared.lock().finish = true;
        }
    }
}
