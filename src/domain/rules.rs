//! Every rule of chatd, stated once. Handlers and storage do not decide any of this:
//! the domain applies these functions, and where a rule must run inside a database
//! write (so that a concurrent change cannot slip between check and write), storage
//! executes exactly the rule written here and says so where it does.
//!
//! - Membership: a user is in a thread, relation or inquiry on one side when that
//!   side's participant id is theirs. Anything else does not exist for them. The two
//!   participants are two users: a tutor is never their own student.
//! - Sides: a tutor token acts on the tutor side, a student token on the student side;
//!   service tokens take no side.
//! - Writability: a contact thread takes messages while its relation is ACTIVE, a
//!   negotiation thread while its inquiry is OPEN or ACCEPTED.
//! - Contact access: a tutor opens and writes a contact thread only with UNLOCKED
//!   contact access to that student. Students need none.
//! - Horizons: sending moves the sender's read horizon to the new message; MarkRead
//!   moves it forward to the requested seq, clamped to the thread's last seq, and
//!   never back.
//! - Unread: a user's unread messages in a thread are those after their horizon not
//!   sent by them, which (because sending moves the horizon) is `last_seq − horizon`.
//! - Whose summary changes (its version is bumped in the same write, and caches,
//!   watchers and other replicas are told after commit): a message changes the peer's
//!   summary, and the sender's only if the sender had unread messages there; MarkRead
//!   changes the reader's when their unread count in the thread changed; a relation or
//!   inquiry whose status changes changes both participants' (each entry shows
//!   whether its thread is writable).

use super::{DomainError, Role};
use crate::model::{ContactAccessState, InquiryStatus, RelationStatus, Side, ThreadKind};

/// The two participants of a thread, relation or inquiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Participants {
    pub tutor_id: i64,
    pub student_id: i64,
}

impl Participants {
    /// The user on `side`.
    pub fn on(self, side: Side) -> i64 {
        match side {
            Side::Tutor => self.tutor_id,
            Side::Student => self.student_id,
        }
    }

    /// Membership: `user_id` is in it on `side`.
    pub fn includes(self, user_id: i64, side: Side) -> bool {
        self.on(side) == user_id
    }

    /// A fact pushed upstream names two different users: with one user on both sides,
    /// their own messages would count as unread for themselves.
    pub fn check_distinct(self) -> Result<(), DomainError> {
        if self.tutor_id == self.student_id {
            return Err(DomainError::invalid(
                "student_id",
                format!(
                    "must differ from tutor_id: user {} cannot be their own student",
                    self.tutor_id
                ),
            ));
        }
        Ok(())
    }
}

/// The side a role acts on; services take no side in a thread.
pub fn side_of(role: Role) -> Option<Side> {
    match role {
        Role::Tutor => Some(Side::Tutor),
        Role::Student => Some(Side::Student),
        Role::Service => None,
    }
}

impl RelationStatus {
    /// A contact thread takes messages while its relation is ACTIVE. EnsureThread on a
    /// relation asks the same of it.
    pub fn allows_messages(self) -> bool {
        self == RelationStatus::Active
    }
}

impl InquiryStatus {
    /// A negotiation thread takes messages while its inquiry is OPEN or ACCEPTED.
    pub fn allows_messages(self) -> bool {
        matches!(self, InquiryStatus::Open | InquiryStatus::Accepted)
    }
}

impl ContactAccessState {
    /// Only UNLOCKED access lets a tutor reach a student.
    pub fn lets_tutor_contact(self) -> bool {
        self == ContactAccessState::Unlocked
    }
}

/// Whether a participant on `side` needs the tutor's contact access to a thread of
/// `kind`: tutors on contact threads do; students and negotiation threads do not.
pub fn needs_contact_access(side: Side, kind: ThreadKind) -> bool {
    side == Side::Tutor && kind == ThreadKind::Contact
}

/// Whether a tutor with `access` (none stored counts as LOCKED) may contact the student.
pub fn contact_allowed(access: Option<ContactAccessState>) -> bool {
    access.is_some_and(ContactAccessState::lets_tutor_contact)
}

/// The horizon MarkRead leaves: the requested seq (default: the last), clamped to the
/// thread's last seq, and never below the current horizon.
pub fn horizon_after_mark_read(current: i64, requested: Option<i64>, last_seq: i64) -> i64 {
    current.max(requested.unwrap_or(last_seq).min(last_seq))
}

/// A participant's unread count at `horizon` in a thread whose last message is `last_seq`.
///
/// By definition, the messages after the horizon not sent by the participant. Sending
/// moves the sender's horizon to their own message, so every message after a horizon
/// is the peer's, and the count is the difference. (A thread whose two participants
/// are one user would break this; SyncService refuses such facts.)
pub fn unread_at(last_seq: i64, horizon: i64) -> i64 {
    (last_seq - horizon).max(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mark_read_clamps_and_never_moves_back() {
        assert_eq!(horizon_after_mark_read(2, None, 5), 5, "default: the last");
        assert_eq!(horizon_after_mark_read(2, Some(9), 5), 5, "clamped");
        assert_eq!(horizon_after_mark_read(4, Some(3), 5), 4, "never back");
        assert_eq!(horizon_after_mark_read(0, Some(3), 5), 3);
    }

    #[test]
    fn unread_is_what_lies_after_the_horizon() {
        assert_eq!(unread_at(5, 2), 3);
        assert_eq!(unread_at(5, 5), 0);
    }

    #[test]
    fn writability_and_contact_access() {
        assert!(RelationStatus::Active.allows_messages());
        assert!(!RelationStatus::Archived.allows_messages());
        assert!(InquiryStatus::Accepted.allows_messages());
        assert!(!InquiryStatus::Declined.allows_messages());
        assert!(contact_allowed(Some(ContactAccessState::Unlocked)));
        assert!(!contact_allowed(Some(ContactAccessState::Revoked)));
        assert!(!contact_allowed(None), "no stored access is locked");
        assert!(needs_contact_access(Side::Tutor, ThreadKind::Contact));
        assert!(!needs_contact_access(Side::Student, ThreadKind::Contact));
        assert!(!needs_contact_access(Side::Tutor, ThreadKind::Negotiation));
    }

    #[test]
    fn a_tutor_is_not_their_own_student() {
        let same = Participants {
            tutor_id: 3,
            student_id: 3,
        };
        assert_eq!(
            same.check_distinct().unwrap_err().field(),
            Some("student_id")
        );
    }

    #[test]
    fn membership_is_by_side() {
        let pair = Participants {
            tutor_id: 42,
            student_id: 7,
        };
        assert!(pair.includes(42, Side::Tutor));
        assert!(!pair.includes(42, Side::Student));
        assert_eq!(pair.on(Side::Student), 7);
    }
}
