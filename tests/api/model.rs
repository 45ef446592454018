//! The rules as the specification storage is held to: random sequences of operations
//! (upserts of facts, EnsureThread, SendMessage with and without repeated keys, bursts
//! past a hundred messages, EditMessage, DeleteMessage, RemoveMessage, MarkRead,
//! MarkUnread, mutes that end during the case or not, EraseUser), by tutors, students,
//! strangers and services, go through the real server over gRPC, and after every step
//! the answer (success, or code and reason), the messages of the thread it touched,
//! every thread's horizons, and every user's summaries and inboxes on both sides are
//! compared with a pure model built from `chatd::rules` alone, and checked against what
//! holds without any rule (totals add up, etags change exactly with what they name).
//! Both participants watch every thread from its creation (WatchThread): at the end
//! each window, built from its events alone, must equal ListMessages, both horizons and
//! the writability the rules give its side, and so must one resumed from mid-log.
//!
//! Where SQL applies a rule (PostgreSQL's one-statement writes, SQLite's queries), this
//! is what keeps it equal to the function it names. Picks lean on the rules' edges (a
//! reader's horizon, the newest message, MarkUnread's window). A failing case shrinks
//! to a minimal sequence and is printed as Rust, to keep in `model/regressions.rs`,
//! whose sequences run first every time. `CHATD_MODEL_SEED=<n>` reruns a reported seed,
//! `CHATD_MODEL_CASES=<n>` changes how many random sequences run (default 64), and
//! `CHATD_MODEL_REGRESSIONS=0` leaves the saved sequences out.

mod case;
mod checks;
mod expect;
mod ops;
mod regressions;
mod state;
mod watchers;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};

use chatd::domain::{ContactAccessState, InquiryStatus, RelationStatus, Side};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};

use crate::helpers::{Backend, TestApp};
use case::Case;
use ops::{Actor, Op, Pair, Status};
use state::Model;

/// Users of a case are `base + 1 ..= base + USERS`; facts are `base + 1 ..= base + FACTS`.
const USERS: i64 = 4;
const FACTS: i64 = 3;
/// A thread id no case ever gets.
const UNKNOWN_THREAD: i64 = 9_000_000_000_000;

/// How every case begins: a contact thread (relation 1, tutor 1, student 3, contact
/// access unlocked) and a negotiation thread (inquiry 1, tutor 2, student 3), so that
/// the random steps after it mostly write and read rather than meet "not found".
fn setup() -> Vec<Op> {
    vec![
        Op::UpsertFact {
            id: 1,
            tutor: 1,
            student: 3,
            status: Status::Relation(RelationStatus::Active),
            version: 1,
        },
        Op::UpsertAccess {
            pair: Pair::OfRelation(1),
            state: ContactAccessState::Unlocked,
            version: 1,
        },
        Op::EnsureRelation {
            actor: Actor::Member(Side::Student),
            relation: 1,
        },
        Op::UpsertFact {
            id: 1,
            tutor: 2,
            student: 3,
            status: Status::Inquiry(InquiryStatus::Open),
            version: 1,
        },
        Op::EnsureInquiry {
            actor: Actor::Member(Side::Tutor),
            inquiry: 1,
        },
    ]
}

/// Runs one sequence against the server, in an id space of its own.
async fn run_case(app: &TestApp, base: i64, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut case = Case {
        app,
        base,
        model: Model::default(),
        seen: HashMap::new(),
        horizons: HashMap::new(),
    };
    let mut watchers = Vec::new();
    for (step, op) in ops.iter().enumerate() {
        case.clear_of_mute_ends().await;
        let threads = case.model.threads.len();
        case.step(step, op).await?;
        for created in threads..case.model.threads.len() {
            watchers.extend(case.open_windows(created).await);
        }
        case.summaries_agree(step, op).await?;
        case.inboxes_agree(step, op).await?;
        case.horizons_agree(step, op).await?;
    }
    case.windows_agree(watchers).await
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
}

fn the_rules_hold_for_random_operations(backend: Backend) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    // Every thread of a case is watched by both participants: room for their streams.
    let app = runtime.block_on(TestApp::spawn_with(backend, |config| {
        config.watch_limits.per_user = 64;
        config.watch_limits.total = 1024;
    }));
    let next_case = AtomicI64::new(1);
    // Each run, shrinking runs included, gets users, facts and threads of its own.
    let base = || next_case.fetch_add(1, Ordering::Relaxed) * 10;
    // CHATD_MODEL_REGRESSIONS=0 leaves them out: how to see what random cases alone
    // catch (a mutation test of the SQL).
    let saved = match env_number("CHATD_MODEL_REGRESSIONS") {
        Some(0) => Vec::new(),
        _ => regressions::sequences(),
    };
    for (n, ops) in saved.iter().enumerate() {
        if let Err(failure) = runtime.block_on(run_case(&app, base(), ops)) {
            panic!("saved regression {n} fails on {backend:?}: {failure}");
        }
    }
    let seed = env_number("CHATD_MODEL_SEED").unwrap_or_else(|| {
        use std::hash::{BuildHasher, RandomState};
        RandomState::new().hash_one(std::time::SystemTime::now())
    });
    eprintln!("model test on {backend:?}: seed {seed} (CHATD_MODEL_SEED={seed} reruns it)");
    let config = Config {
        cases: env_number("CHATD_MODEL_CASES").map_or(64, |n| n as u32),
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        max_shrink_iters: 512,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let steps = prop::collection::vec(ops::op(), 1..=35).prop_map(|ops| [setup(), ops].concat());
    let outcome = runner.run(&steps, |ops| runtime.block_on(run_case(&app, base(), &ops)));
    runtime.block_on(async move { drop(app) });
    if let Err(failure) = outcome {
        let sequence = match &failure {
            proptest::test_runner::TestError::Fail(_, ops) => ops::literal(ops),
            proptest::test_runner::TestError::Abort(_) => String::new(),
        };
        panic!(
            "{failure}\nrerun with CHATD_MODEL_SEED={seed}; keep the minimal sequence in \
             tests/api/model/regressions.rs:\n{sequence}"
        );
    }
}

#[test]
fn sqlite_the_rules_hold_for_random_operations() {
    the_rules_hold_for_random_operations(Backend::Sqlite);
}

#[test]
fn postgres_the_rules_hold_for_random_operations() {
    the_rules_hold_for_random_operations(Backend::Postgres);
}
