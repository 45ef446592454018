//! The operations a case is made of, how proptest draws them (biased to the places the
//! rules have edges: a reader's horizon, a thread's newest message, MarkUnread's
//! window, threads past a hundred messages, mutes that end while the case runs), and
//! how a failing sequence is written back as Rust, to be kept in `regressions.rs`.

use chatd::domain::{ContactAccessState, InquiryStatus, RelationStatus, Role, Side};
use proptest::prelude::*;

use super::{FACTS, USERS};

#[derive(Debug, Clone)]
pub(super) enum Op {
    /// A relation or an inquiry, by its status's kind.
    UpsertFact {
        id: i64,
        tutor: i64,
        student: i64,
        status: Status,
        version: i64,
    },
    UpsertAccess {
        pair: Pair,
        state: ContactAccessState,
        version: i64,
    },
    EnsureRelation {
        actor: Actor,
        relation: i64,
    },
    EnsureInquiry {
        actor: Actor,
        inquiry: i64,
    },
    Send {
        actor: Actor,
        thread: usize,
        key: Option<u8>,
        body: String,
    },
    /// `count` messages in a row from one participant: how a thread passes the
    /// hundred messages MarkUnread's window is about.
    Burst {
        side: Side,
        thread: usize,
        count: u8,
    },
    MarkRead {
        actor: Actor,
        thread: usize,
        up_to: Option<i64>,
    },
    Edit {
        actor: Actor,
        thread: usize,
        message: Pick,
        body: String,
    },
    Delete {
        actor: Actor,
        thread: usize,
        message: Pick,
    },
    /// A moderation service removes a message.
    Remove {
        thread: usize,
        message: Pick,
    },
    MarkUnread {
        actor: Actor,
        thread: usize,
        message: Pick,
    },
    Mute {
        actor: Actor,
        thread: usize,
        ends: MuteEnd,
    },
    Unmute {
        actor: Actor,
        thread: usize,
    },
    Erase {
        user: i64,
    },
}

/// Which message an operation names, resolved against the thread as the model has it
/// when the step runs (0 or less names none: refused as an argument; past the last
/// seq names none that exists).
#[derive(Debug, Clone, Copy)]
pub(super) enum Pick {
    /// The `n`th (1-based, wrapping past the end to "one past the last").
    Seq(u8),
    /// A read horizon, plus `offset`: the caller's own (`peer` false: where MarkUnread
    /// meets it) or the other participant's (`peer` true: where a delete changes what
    /// they have not read).
    Horizon { peer: bool, offset: i8 },
    /// The newest message, plus `offset`.
    Newest(i8),
    /// The oldest seq MarkUnread may reach (last − window + 1), plus `offset`.
    WindowEdge(i8),
}

/// When a mute ends: never (until unmuted), in a day (not during the case), or within
/// the next two seconds (during the case: summaries change then by themselves).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MuteEnd {
    Never,
    InADay,
    Soon,
}

/// The status a fact upsert pushes, which says whether it is a relation or an inquiry.
#[derive(Debug, Clone, Copy)]
pub(super) enum Status {
    Relation(RelationStatus),
    Inquiry(InquiryStatus),
}

/// Who calls: mostly a participant of the thread or fact the call names, acting on
/// their side (or they would rarely get past "not found"), sometimes anyone at all.
#[derive(Debug, Clone, Copy)]
pub(super) enum Actor {
    Member(Side),
    Anyone(i64, Role),
}

/// The tutor and student of a contact access: a relation's pair, or any two users.
#[derive(Debug, Clone, Copy)]
pub(super) enum Pair {
    OfRelation(i64),
    Any(i64, i64),
}

fn user() -> impl Strategy<Value = i64> {
    1..=USERS
}

fn fact() -> impl Strategy<Value = i64> {
    1..=FACTS
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Tutor), Just(Role::Student)]
}

fn side() -> impl Strategy<Value = Side> {
    prop_oneof![Just(Side::Tutor), Just(Side::Student)]
}

fn actor() -> impl Strategy<Value = Actor> {
    prop_oneof![
        4 => side().prop_map(Actor::Member),
        1 => (user(), role()).prop_map(|(user, role)| Actor::Anyone(user, role)),
    ]
}

/// A fact's tutor and student: mostly users 1–2 teaching users 3–4, sometimes any two
/// (a user who teaches in one relation and learns in another, or one user twice).
fn pair() -> impl Strategy<Value = (i64, i64)> {
    prop_oneof![
        6 => (1..=2i64, 3..=USERS),
        1 => (user(), user()),
    ]
}

/// A thread of the case, by the order they were opened: mostly the first ones, which
/// every case opens (see `setup`), sometimes one not opened yet (THREAD_NOT_FOUND).
fn thread() -> impl Strategy<Value = usize> {
    prop_oneof![4 => Just(0usize), 4 => Just(1usize), 1 => Just(2usize), 1 => Just(3usize)]
}

fn version() -> impl Strategy<Value = i64> {
    0..=3i64
}

fn body() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "[a-c]{1,3}( [a-c]{1,3}){0,2}",
        1 => Just("  ".to_owned()),
        1 => "[a-z]{120}",
    ]
}

/// Half the picks land on an edge of the rules (a horizon, the newest message, the
/// window's edge, each ±1), half anywhere.
fn pick() -> impl Strategy<Value = Pick> {
    let offset = -1..=1i8;
    prop_oneof![
        3 => (0..8u8).prop_map(Pick::Seq),
        4 => (any::<bool>(), offset.clone())
            .prop_map(|(peer, offset)| Pick::Horizon { peer, offset }),
        1 => offset.clone().prop_map(Pick::Newest),
        1 => offset.prop_map(Pick::WindowEdge),
    ]
}

pub(super) fn op() -> impl Strategy<Value = Op> {
    let relation_status = prop_oneof![
        1 => Just(RelationStatus::Pending),
        4 => Just(RelationStatus::Active),
        1 => Just(RelationStatus::Archived),
    ];
    let inquiry_status = prop::sample::select(InquiryStatus::ALL.to_vec());
    let access_state = prop_oneof![
        1 => Just(ContactAccessState::Locked),
        4 => Just(ContactAccessState::Unlocked),
        1 => Just(ContactAccessState::Revoked),
    ];
    let access_pair = prop_oneof![
        4 => fact().prop_map(Pair::OfRelation),
        1 => (user(), user()).prop_map(|(tutor, student)| Pair::Any(tutor, student)),
    ];
    let ends = prop_oneof![
        2 => Just(MuteEnd::Never),
        2 => Just(MuteEnd::InADay),
        1 => Just(MuteEnd::Soon),
    ];
    prop_oneof![
        2 => (fact(), pair(), prop_oneof![
                relation_status.clone().prop_map(Status::Relation),
                inquiry_status.clone().prop_map(Status::Inquiry),
            ], version())
            .prop_map(|(id, (tutor, student), status, version)| Op::UpsertFact {
                id, tutor, student, status, version,
            }),
        // The facts the setup's threads are of, moved on: writability that changes
        // under threads with and without unread messages.
        2 => (relation_status, 2..=5i64).prop_map(|(status, version)| Op::UpsertFact {
            id: 1, tutor: 1, student: 3, status: Status::Relation(status), version,
        }),
        1 => (inquiry_status, 2..=5i64).prop_map(|(status, version)| Op::UpsertFact {
            id: 1, tutor: 2, student: 3, status: Status::Inquiry(status), version,
        }),
        1 => (access_pair, access_state, version())
            .prop_map(|(pair, state, version)| Op::UpsertAccess { pair, state, version }),
        1 => (actor(), fact()).prop_map(|(actor, relation)| Op::EnsureRelation { actor, relation }),
        1 => (actor(), fact()).prop_map(|(actor, inquiry)| Op::EnsureInquiry { actor, inquiry }),
        8 => (actor(), thread(), prop::option::of(0..3u8), body())
            .prop_map(|(actor, thread, key, body)| Op::Send { actor, thread, key, body }),
        1 => (side(), thread(), 60..=130u8)
            .prop_map(|(side, thread, count)| Op::Burst { side, thread, count }),
        4 => (actor(), thread(), prop::option::of(0..7i64))
            .prop_map(|(actor, thread, up_to)| Op::MarkRead { actor, thread, up_to }),
        2 => (actor(), thread(), pick(), body())
            .prop_map(|(actor, thread, message, body)| Op::Edit { actor, thread, message, body }),
        3 => (actor(), thread(), pick())
            .prop_map(|(actor, thread, message)| Op::Delete { actor, thread, message }),
        1 => (thread(), pick()).prop_map(|(thread, message)| Op::Remove { thread, message }),
        3 => (actor(), thread(), pick())
            .prop_map(|(actor, thread, message)| Op::MarkUnread { actor, thread, message }),
        2 => (actor(), thread(), ends)
            .prop_map(|(actor, thread, ends)| Op::Mute { actor, thread, ends }),
        1 => (actor(), thread()).prop_map(|(actor, thread)| Op::Unmute { actor, thread }),
        1 => user().prop_map(|user| Op::Erase { user }),
    ]
}

/// A sequence as Rust source, to paste into `regressions.rs`: saved seeds stop
/// replaying what failed once the generators change; a literal sequence does not.
pub(super) fn literal(ops: &[Op]) -> String {
    let ops: Vec<String> = ops
        .iter()
        .map(|op| format!("        {},", op.literal()))
        .collect();
    format!("    vec![\n{}\n    ],", ops.join("\n"))
}

impl Op {
    fn literal(&self) -> String {
        match self {
            Op::UpsertFact {
                id,
                tutor,
                student,
                status,
                version,
            } => format!(
                "Op::UpsertFact {{ id: {id}, tutor: {tutor}, student: {student}, status: {}, version: {version} }}",
                status.literal()
            ),
            Op::UpsertAccess {
                pair,
                state,
                version,
            } => format!(
                "Op::UpsertAccess {{ pair: {}, state: ContactAccessState::{state:?}, version: {version} }}",
                pair.literal()
            ),
            Op::EnsureRelation { actor, relation } => format!(
                "Op::EnsureRelation {{ actor: {}, relation: {relation} }}",
                actor.literal()
            ),
            Op::EnsureInquiry { actor, inquiry } => format!(
                "Op::EnsureInquiry {{ actor: {}, inquiry: {inquiry} }}",
                actor.literal()
            ),
            Op::Send {
                actor,
                thread,
                key,
                body,
            } => format!(
                "Op::Send {{ actor: {}, thread: {thread}, key: {key:?}, body: {body:?}.into() }}",
                actor.literal()
            ),
            Op::Burst {
                side,
                thread,
                count,
            } => {
                format!("Op::Burst {{ side: Side::{side:?}, thread: {thread}, count: {count} }}")
            }
            Op::MarkRead {
                actor,
                thread,
                up_to,
            } => format!(
                "Op::MarkRead {{ actor: {}, thread: {thread}, up_to: {up_to:?} }}",
                actor.literal()
            ),
            Op::Edit {
                actor,
                thread,
                message,
                body,
            } => format!(
                "Op::Edit {{ actor: {}, thread: {thread}, message: {}, body: {body:?}.into() }}",
                actor.literal(),
                message.literal()
            ),
            Op::Delete {
                actor,
                thread,
                message,
            } => format!(
                "Op::Delete {{ actor: {}, thread: {thread}, message: {} }}",
                actor.literal(),
                message.literal()
            ),
            Op::Remove { thread, message } => {
                format!(
                    "Op::Remove {{ thread: {thread}, message: {} }}",
                    message.literal()
                )
            }
            Op::MarkUnread {
                actor,
                thread,
                message,
            } => format!(
                "Op::MarkUnread {{ actor: {}, thread: {thread}, message: {} }}",
                actor.literal(),
                message.literal()
            ),
            Op::Mute {
                actor,
                thread,
                ends,
            } => format!(
                "Op::Mute {{ actor: {}, thread: {thread}, ends: MuteEnd::{ends:?} }}",
                actor.literal()
            ),
            Op::Unmute { actor, thread } => {
                format!(
                    "Op::Unmute {{ actor: {}, thread: {thread} }}",
                    actor.literal()
                )
            }
            Op::Erase { user } => format!("Op::Erase {{ user: {user} }}"),
        }
    }
}

impl Status {
    fn literal(&self) -> String {
        match self {
            Status::Relation(status) => format!("Status::Relation(RelationStatus::{status:?})"),
            Status::Inquiry(status) => format!("Status::Inquiry(InquiryStatus::{status:?})"),
        }
    }
}

impl Actor {
    fn literal(&self) -> String {
        match self {
            Actor::Member(side) => format!("Actor::Member(Side::{side:?})"),
            Actor::Anyone(user, role) => format!("Actor::Anyone({user}, Role::{role:?})"),
        }
    }
}

impl Pair {
    fn literal(&self) -> String {
        match self {
            Pair::OfRelation(id) => format!("Pair::OfRelation({id})"),
            Pair::Any(tutor, student) => format!("Pair::Any({tutor}, {student})"),
        }
    }
}

impl Pick {
    fn literal(&self) -> String {
        match self {
            Pick::Seq(n) => format!("Pick::Seq({n})"),
            Pick::Horizon { peer, offset } => {
                format!("Pick::Horizon {{ peer: {peer}, offset: {offset} }}")
            }
            Pick::Newest(d) => format!("Pick::Newest({d})"),
            Pick::WindowEdge(d) => format!("Pick::WindowEdge({d})"),
        }
    }
}
