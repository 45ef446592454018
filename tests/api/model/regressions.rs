//! Failing cases found before, kept as the literal sequences of operations they shrank
//! to, and replayed before any random case: a saved seed replays something else once
//! the generators change; a sequence replays itself. A new failure prints its sequence
//! as Rust (`ops::literal`): paste it here.

use chatd::domain::{ContactAccessState, InquiryStatus, RelationStatus, Role, Side};

use super::ops::{Actor, MuteEnd, Op, Pair, Pick, Status};
use super::setup;

/// The sequences, each a case of its own.
pub(super) fn sequences() -> Vec<Vec<Op>> {
    let after_setup = |ops: Vec<Op>| [setup(), ops].concat();
    // Keep the imports in use whatever the list holds.
    let _ = (
        ContactAccessState::Unlocked,
        InquiryStatus::Open,
        Role::Tutor,
    );
    let _ = (Pair::Any(1, 3), MuteEnd::Never);
    vec![
        // A preview longer than the summary shows, read up to seq 0.
        after_setup(vec![
            Op::Send {
                actor: Actor::Member(Side::Tutor),
                thread: 1,
                key: None,
                body: "a".repeat(120),
            },
            Op::MarkRead {
                actor: Actor::Member(Side::Tutor),
                thread: 1,
                up_to: Some(0),
            },
        ]),
        // Erasing a user with nothing sent.
        after_setup(vec![Op::Erase { user: 1 }]),
        // A moderator removing the newest message: the line falls back to the one before.
        after_setup(vec![
            Op::Send {
                actor: Actor::Member(Side::Tutor),
                thread: 0,
                key: None,
                body: "a".into(),
            },
            Op::Send {
                actor: Actor::Member(Side::Tutor),
                thread: 0,
                key: None,
                body: "a a".into(),
            },
            Op::Remove {
                thread: 0,
                message: Pick::Seq(2),
            },
        ]),
        // Deleting the message exactly at the reader's horizon: it was read, so nothing
        // unread drops (`>` not `>=`).
        after_setup(vec![
            Op::Send {
                actor: Actor::Member(Side::Student),
                thread: 0,
                key: None,
                body: "a".into(),
            },
            Op::Send {
                actor: Actor::Member(Side::Student),
                thread: 0,
                key: None,
                body: "b".into(),
            },
            Op::MarkRead {
                actor: Actor::Member(Side::Tutor),
                thread: 0,
                up_to: Some(1),
            },
            Op::Delete {
                actor: Actor::Member(Side::Student),
                thread: 0,
                message: Pick::Horizon {
                    peer: true,
                    offset: 0,
                },
            },
        ]),
        // MarkUnread at the window's oldest seq and one before it, past 100 messages.
        after_setup(vec![
            Op::Burst {
                side: Side::Student,
                thread: 1,
                count: 105,
            },
            Op::MarkUnread {
                actor: Actor::Member(Side::Tutor),
                thread: 1,
                message: Pick::WindowEdge(0),
            },
            Op::MarkUnread {
                actor: Actor::Member(Side::Tutor),
                thread: 1,
                message: Pick::WindowEdge(-1),
            },
        ]),
        // The relation archived under a thread neither participant has unread: no
        // summary shows it, so no etag may change.
        after_setup(vec![Op::UpsertFact {
            id: 1,
            tutor: 1,
            student: 3,
            status: Status::Relation(RelationStatus::Archived),
            version: 2,
        }]),
        // An edit to the body it had: the line shows the same preview, so no etag may
        // change. And a thread past one ListMessages page, which the windows read whole.
        after_setup(vec![
            Op::Send {
                actor: Actor::Member(Side::Student),
                thread: 1,
                key: None,
                body: "c".into(),
            },
            Op::Edit {
                actor: Actor::Member(Side::Student),
                thread: 1,
                message: Pick::Horizon {
                    peer: true,
                    offset: 1,
                },
                body: "c".into(),
            },
            Op::Burst {
                side: Side::Tutor,
                thread: 0,
                count: 201,
            },
        ]),
        // A removed message erased: the tombstone loses its key, and the window hears.
        after_setup(vec![
            Op::Send {
                actor: Actor::Member(Side::Tutor),
                thread: 0,
                key: Some(0),
                body: "a".into(),
            },
            Op::Remove {
                thread: 0,
                message: Pick::Horizon {
                    peer: false,
                    offset: 0,
                },
            },
            Op::Erase { user: 1 },
        ]),
    ]
}
