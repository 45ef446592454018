//! The rules, one test per rule, each stating what the rule says in examples.

use super::*;

#[test]
fn mark_read_clamps_and_never_moves_back() {
    assert_eq!(horizon_after_mark_read(2, None, 5), 5, "default: the last");
    assert_eq!(horizon_after_mark_read(2, Some(9), 5), 5, "clamped");
    assert_eq!(horizon_after_mark_read(4, Some(3), 5), 4, "never back");
    assert_eq!(horizon_after_mark_read(0, Some(3), 5), 3);
}

#[test]
fn unread_is_what_lies_after_the_horizon_from_the_peer_and_not_deleted() {
    assert!(counts_as_unread(3, 7, false, 42, 2));
    assert!(!counts_as_unread(3, 42, false, 42, 2), "one's own message");
    assert!(!counts_as_unread(2, 7, false, 42, 2), "at the horizon");
    assert!(!counts_as_unread(3, 7, true, 42, 2), "deleted");
}

#[test]
fn mark_unread_reaches_back_a_hundred_messages() {
    assert_eq!(may_mark_unread(101, 200), Ok(()));
    assert_eq!(may_mark_unread(100, 200), Err(Refusal::MarkUnreadTooFar));
    assert_eq!(may_mark_unread(201, 200), Err(Refusal::MessageNotFound));
    assert_eq!(may_mark_unread(1, 1), Ok(()));
    assert_eq!(horizon_after_mark_unread(101), 100);
}

#[test]
fn mutes_end_by_themselves() {
    assert!(is_muted(Some(MUTED_FOREVER_MS), 5));
    assert!(is_muted(Some(10), 9));
    assert!(!is_muted(Some(10), 10), "ended at its time");
    assert!(!is_muted(None, 0));
    assert_eq!(
        next_mute_end(
            [Some(10), Some(MUTED_FOREVER_MS), None, Some(7), Some(3)],
            5
        ),
        Some(7)
    );
    assert_eq!(next_mute_end([Some(MUTED_FOREVER_MS)], 5), None);
}

#[test]
fn editing_and_deleting_are_the_senders() {
    let thread = ThreadView {
        kind: ThreadKind::Negotiation,
        participants: Participants {
            tutor_id: 42,
            student_id: 7,
        },
        is_writable: false,
        contact_access: None,
    };
    let mine = MessageView {
        sender_id: 7,
        deleted: false,
    };
    assert_eq!(
        may_edit(7, Side::Student, &thread, None),
        Err(Refusal::MessageNotFound)
    );
    assert_eq!(
        may_edit(42, Side::Tutor, &thread, Some(mine)),
        Err(Refusal::NotMessageSender)
    );
    assert_eq!(
        may_edit(
            7,
            Side::Student,
            &thread,
            Some(MessageView {
                deleted: true,
                ..mine
            })
        ),
        Err(Refusal::MessageDeleted)
    );
    assert_eq!(
        may_edit(7, Side::Student, &thread, Some(mine)),
        Err(Refusal::ThreadNotWritable)
    );
    assert_eq!(
        may_delete(7, Some(mine)),
        Ok(()),
        "deleting needs no writability"
    );
    assert_eq!(may_delete(42, Some(mine)), Err(Refusal::NotMessageSender));
}

#[test]
fn whose_summary_changes() {
    assert!(participant_changed(0, 1, true));
    assert!(participant_changed(2, 1, false));
    assert!(participant_changed(2, 2, true), "the line changed");
    assert!(!participant_changed(2, 2, false));
    assert!(!participant_changed(0, 0, true), "no line, nothing shows");
    assert_eq!(
        send_changes(0),
        SendChanges {
            peer: true,
            sender: false
        }
    );
    assert_eq!(
        send_changes(3),
        SendChanges {
            peer: true,
            sender: true
        }
    );
}

#[test]
fn the_line_shows_the_newest_message_not_deleted() {
    let messages = [(1, false), (2, false), (3, true)];
    assert_eq!(last_visible(messages.iter(), |m| m.1), Some(&(2, false)));
    assert_eq!(last_visible([(1, true)].iter(), |m| m.1), None);
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
fn refusals_come_in_order() {
    let pair = Participants {
        tutor_id: 42,
        student_id: 7,
    };
    let archived = Some((pair, RelationStatus::Archived));
    assert_eq!(
        may_open_relation_thread(9, Side::Tutor, archived, None),
        Err(Refusal::RelationNotFound),
        "a stranger learns nothing of its status"
    );
    assert_eq!(
        may_open_relation_thread(42, Side::Tutor, archived, None),
        Err(Refusal::RelationNotActive)
    );
    let active = Some((pair, RelationStatus::Active));
    assert_eq!(
        may_open_relation_thread(42, Side::Tutor, active, None),
        Err(Refusal::ContactAccessLocked)
    );
    assert_eq!(
        may_open_relation_thread(7, Side::Student, active, None),
        Ok(())
    );
    let closed = ThreadView {
        kind: ThreadKind::Contact,
        participants: pair,
        is_writable: false,
        contact_access: None,
    };
    assert_eq!(
        may_write(Side::Tutor, &closed),
        Err(Refusal::ThreadNotWritable)
    );
}

#[test]
fn upserts_apply_newer_versions_of_the_same_participants() {
    let pair = Participants {
        tutor_id: 42,
        student_id: 7,
    };
    let other = Participants {
        tutor_id: 43,
        student_id: 7,
    };
    assert_eq!(upsert_outcome(None, pair, 0), UpsertOutcome::Applied);
    assert_eq!(
        upsert_outcome(Some((pair, 3)), pair, 4),
        UpsertOutcome::Applied
    );
    assert_eq!(
        upsert_outcome(Some((pair, 3)), pair, 3),
        UpsertOutcome::Stale
    );
    assert_eq!(
        upsert_outcome(Some((pair, 3)), other, 9),
        UpsertOutcome::ParticipantsChanged
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
    assert!(
        !Participants {
            tutor_id: 3,
            student_id: 3
        }
        .distinct()
    );
}

#[test]
fn preview_is_a_character_prefix() {
    assert_eq!(preview(&"й".repeat(150)).chars().count(), PREVIEW_CHARS);
}

#[test]
fn a_send_replays_before_it_asks_about_writability() {
    let closed = ThreadView {
        kind: ThreadKind::Negotiation,
        participants: Participants {
            tutor_id: 42,
            student_id: 7,
        },
        is_writable: false,
        contact_access: None,
    };
    assert_eq!(
        send_decision(7, Side::Student, Some(closed), true),
        Ok(SendDecision::Replay),
        "a retry of what was sent is answered, writable or not"
    );
    assert_eq!(
        send_decision(7, Side::Student, Some(closed), false),
        Err(Refusal::ThreadNotWritable)
    );
    assert_eq!(
        send_decision(9, Side::Student, Some(closed), true),
        Err(Refusal::ThreadNotFound),
        "a stranger learns nothing, key or not"
    );
    let open = ThreadView {
        is_writable: true,
        ..closed
    };
    assert_eq!(
        send_decision(7, Side::Student, Some(open), false),
        Ok(SendDecision::Append)
    );
}

#[test]
fn a_moderator_removes_any_message_that_exists() {
    let mine = MessageView {
        sender_id: 7,
        deleted: true,
    };
    assert_eq!(may_remove(Some(mine)), Ok(()));
    assert_eq!(may_remove(None), Err(Refusal::MessageNotFound));
}

#[test]
fn how_a_mute_shows() {
    assert_eq!(mute_shown(None, 5), None);
    assert_eq!(mute_shown(Some(4), 5), None, "ended");
    assert_eq!(mute_shown(Some(9), 5), Some(Some(9)));
    assert_eq!(mute_shown(Some(MUTED_FOREVER_MS), 5), Some(None));
    assert!(mute_changes(2, None, Some(9), 5), "a line, muted now");
    assert!(!mute_changes(0, None, Some(9), 5), "no line, nothing shows");
    assert!(
        !mute_changes(2, Some(4), None, 5),
        "an ended mute unmuted: same line"
    );
    assert!(mute_changes(2, Some(9), Some(10), 5), "another end shows");
}

#[test]
fn writability_changes_summaries_with_a_line_only() {
    assert!(writability_changes(1));
    assert!(!writability_changes(0));
}

#[test]
fn a_read_logs_only_a_horizon_that_moved_and_says_which_way() {
    assert_eq!(read_logs(4, 4), None);
    assert_eq!(read_logs(4, 7), Some(EventKind::ThreadRead));
    assert_eq!(read_logs(7, 4), Some(EventKind::ThreadMarkedUnread));
    assert_eq!(SEND_LOGS[0], EventKind::MessageCreated);
}

#[test]
fn contact_access_logs_when_what_it_lets_the_tutor_do_changes() {
    use ContactAccessState::*;
    assert!(contact_access_logs(None, Some(Unlocked)));
    assert!(contact_access_logs(Some(Unlocked), Some(Revoked)));
    assert!(!contact_access_logs(Some(Locked), Some(Revoked)));
    assert!(!contact_access_logs(None, Some(Locked)));
}
