//! The model: what the rules say the server holds after each step, built from
//! `chatd::rules` alone, and what it expects each summary and inbox to show.

use std::collections::BTreeMap;

use chatd::domain::{ContactAccessState, InquiryStatus, RelationStatus, Side, ThreadKind};
use chatd::grpc::pb;
use chatd::rules::{self, Participants, Refusal, ThreadView, UpsertOutcome};
use tonic::Code;

use super::ops::MuteEnd;

/// A fact as the model keeps it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Fact<S> {
    pub(super) participants: Participants,
    pub(super) status: S,
    pub(super) version: i64,
}

#[derive(Debug, Clone)]
pub(super) struct ModelMessage {
    pub(super) seq: i64,
    pub(super) sender: i64,
    pub(super) body: String,
    pub(super) deleted: bool,
    pub(super) edited: bool,
    /// The step it was sent at: the summary's order follows the shown message's.
    pub(super) at: usize,
}

impl ModelMessage {
    /// What the server answers of a message: seq, sender, body, deleted, edited.
    pub(super) fn answer(&self) -> (i64, i64, String, bool, bool) {
        (
            self.seq,
            self.sender,
            self.body.clone(),
            self.deleted,
            self.edited,
        )
    }
}

/// When a mute of `ends` ends (Unix ms, whole seconds as the requests carry it):
/// never, a day ahead, or in two to three seconds (during the case).
pub(super) fn mute_end(ends: MuteEnd) -> i64 {
    let second = chrono::Utc::now().timestamp_millis() / 1000 * 1000;
    match ends {
        MuteEnd::Never => rules::MUTED_FOREVER_MS,
        MuteEnd::InADay => second + 86_400_000,
        // Far enough ahead that the next comparison sees it in force (it waits only
        // for ends within 1.5 s), near enough to end a step or two later.
        MuteEnd::Soon => second + 3_000,
    }
}

pub(super) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[derive(Debug, Clone)]
pub(super) struct ModelThread {
    /// The id the server gave it.
    pub(super) id: i64,
    pub(super) kind: ThreadKind,
    /// Its relation or inquiry.
    pub(super) fact: i64,
    pub(super) participants: Participants,
    pub(super) messages: Vec<ModelMessage>,
    /// Read horizons, tutor's then student's.
    pub(super) horizons: [i64; 2],
    /// Idempotency keys by sender: the seq of the first message sent with each.
    pub(super) keys: BTreeMap<(i64, String), i64>,
    /// Mutes (`muted_until_ms`), tutor's then student's.
    pub(super) mutes: [Option<i64>; 2],
    /// The step it was created at: with no message shown, its place in the inbox.
    pub(super) created: usize,
}

pub(super) fn side_index(side: Side) -> usize {
    match side {
        Side::Tutor => 0,
        Side::Student => 1,
    }
}

/// What a user's summary shows of a thread, as the model expects and the server answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Line {
    pub(super) thread_id: i64,
    pub(super) kind: i32,
    pub(super) relation_id: Option<i64>,
    pub(super) inquiry_id: Option<i64>,
    pub(super) tutor_id: i64,
    pub(super) student_id: i64,
    pub(super) unread_count: i64,
    pub(super) preview: String,
    pub(super) sender_id: i64,
    pub(super) is_writable: bool,
    pub(super) muted: bool,
    pub(super) muted_until_ms: Option<i64>,
}

#[derive(Debug, Default)]
pub(super) struct Model {
    pub(super) relations: BTreeMap<i64, Fact<RelationStatus>>,
    pub(super) inquiries: BTreeMap<i64, Fact<InquiryStatus>>,
    pub(super) access: BTreeMap<(i64, i64), (ContactAccessState, i64)>,
    pub(super) threads: Vec<ModelThread>,
}

/// What the model expects a call to answer: a value, or a code and an ErrorInfo reason.
pub(super) type Expected<T> = Result<T, (Code, &'static str)>;

pub(super) fn refusal(refusal: Refusal) -> (Code, &'static str) {
    match refusal {
        Refusal::RelationNotFound => (Code::NotFound, "RELATION_NOT_FOUND"),
        Refusal::RelationNotActive => (Code::FailedPrecondition, "RELATION_NOT_ACTIVE"),
        Refusal::InquiryNotFound => (Code::NotFound, "INQUIRY_NOT_FOUND"),
        Refusal::ThreadNotFound => (Code::NotFound, "THREAD_NOT_FOUND"),
        Refusal::ThreadNotWritable => (Code::FailedPrecondition, "THREAD_NOT_WRITABLE"),
        Refusal::ContactAccessLocked => (Code::PermissionDenied, "CONTACT_ACCESS_LOCKED"),
        Refusal::MessageNotFound => (Code::NotFound, "MESSAGE_NOT_FOUND"),
        Refusal::NotMessageSender => (Code::PermissionDenied, "NOT_MESSAGE_SENDER"),
        Refusal::MessageDeleted => (Code::FailedPrecondition, "MESSAGE_DELETED"),
        Refusal::MarkUnreadTooFar => (Code::FailedPrecondition, "MARK_UNREAD_TOO_FAR"),
    }
}

pub(super) const INVALID: (Code, &str) = (Code::InvalidArgument, "INVALID_ARGUMENT");

impl Model {
    pub(super) fn writable(&self, thread: &ModelThread) -> bool {
        match thread.kind {
            ThreadKind::Contact => self
                .relations
                .get(&thread.fact)
                .is_some_and(|f| f.status.allows_messages()),
            ThreadKind::Negotiation => self
                .inquiries
                .get(&thread.fact)
                .is_some_and(|f| f.status.allows_messages()),
        }
    }

    pub(super) fn view(&self, thread: &ModelThread) -> ThreadView {
        let pair = (thread.participants.tutor_id, thread.participants.student_id);
        ThreadView {
            kind: thread.kind,
            participants: thread.participants,
            is_writable: self.writable(thread),
            contact_access: self.access.get(&pair).map(|(state, _)| *state),
        }
    }

    /// `rules::counts_as_unread` summed over the thread: the definition itself.
    pub(super) fn unread(thread: &ModelThread, user: i64, side: Side) -> i64 {
        let horizon = thread.horizons[side_index(side)];
        thread
            .messages
            .iter()
            .filter(|m| rules::counts_as_unread(m.seq, m.sender, m.deleted, user, horizon))
            .count() as i64
    }

    /// The summary `user` sees on `side`: its lines in order, the total and the muted total.
    /// At `now` (Unix ms): whether each mute is in force.
    pub(super) fn summary(&self, user: i64, side: Side, now: i64) -> (Vec<Line>, i64, i64) {
        let mut lines: Vec<(usize, Line)> = self
            .threads
            .iter()
            .filter(|t| t.participants.includes(user, side))
            .filter_map(|t| {
                let unread = Self::unread(t, user, side);
                let last = rules::last_visible(t.messages.iter(), |m| m.deleted)?;
                let mute = rules::mute_shown(t.mutes[side_index(side)], now);
                rules::in_summary(unread).then(|| {
                    let line = Line {
                        thread_id: t.id,
                        kind: kind(t.kind),
                        relation_id: (t.kind == ThreadKind::Contact).then_some(t.fact),
                        inquiry_id: (t.kind == ThreadKind::Negotiation).then_some(t.fact),
                        tutor_id: t.participants.tutor_id,
                        student_id: t.participants.student_id,
                        unread_count: unread,
                        preview: rules::preview(&last.body),
                        sender_id: last.sender,
                        is_writable: self.writable(t),
                        muted: mute.is_some(),
                        muted_until_ms: mute.flatten(),
                    };
                    (last.at, line)
                })
            })
            .collect();
        lines.sort_by(|a, b| rules::summary_order((a.0, a.1.thread_id), (b.0, b.1.thread_id)));
        let sum = |in_total: bool| {
            lines
                .iter()
                .filter(|(_, line)| rules::counts_in_total(line.muted) == in_total)
                .map(|(_, line)| line.unread_count)
                .sum()
        };
        let (total, muted_total) = (sum(true), sum(false));
        (
            lines.into_iter().map(|(_, line)| line).collect(),
            total,
            muted_total,
        )
    }

    /// The inbox `user` sees on `side`: every thread of theirs, at
    /// `rules::inbox_position`, in `rules::summary_order`.
    pub(super) fn inbox(&self, user: i64, side: Side, now: i64) -> Vec<Line> {
        let mut lines: Vec<(usize, Line)> = self
            .threads
            .iter()
            .filter(|t| t.participants.includes(user, side))
            .map(|t| {
                let last = rules::last_visible(t.messages.iter(), |m| m.deleted);
                let mute = rules::mute_shown(t.mutes[side_index(side)], now);
                let line = Line {
                    thread_id: t.id,
                    kind: kind(t.kind),
                    relation_id: (t.kind == ThreadKind::Contact).then_some(t.fact),
                    inquiry_id: (t.kind == ThreadKind::Negotiation).then_some(t.fact),
                    tutor_id: t.participants.tutor_id,
                    student_id: t.participants.student_id,
                    unread_count: Self::unread(t, user, side),
                    preview: last.map(|m| rules::preview(&m.body)).unwrap_or_default(),
                    sender_id: last.map_or(0, |m| m.sender),
                    is_writable: self.writable(t),
                    muted: mute.is_some(),
                    muted_until_ms: mute.flatten(),
                };
                (rules::inbox_position(last.map(|m| m.at), t.created), line)
            })
            .collect();
        lines.sort_by(|a, b| rules::summary_order((a.0, a.1.thread_id), (b.0, b.1.thread_id)));
        lines.into_iter().map(|(_, line)| line).collect()
    }

    /// The user's total on a side (muted threads left out).
    pub(super) fn total(&self, user: i64, side: Side) -> i64 {
        self.summary(user, side, now_ms()).1
    }

    pub(super) fn upsert<S: Copy>(
        facts: &mut BTreeMap<i64, Fact<S>>,
        id: i64,
        pushed: Participants,
        status: S,
        version: i64,
    ) -> Expected<bool> {
        if !pushed.distinct() {
            return Err(INVALID);
        }
        let stored = facts.get(&id).map(|f| (f.participants, f.version));
        match rules::upsert_outcome(stored, pushed, version) {
            UpsertOutcome::Applied => {
                facts.insert(
                    id,
                    Fact {
                        participants: pushed,
                        status,
                        version,
                    },
                );
                Ok(true)
            }
            UpsertOutcome::Stale => Ok(false),
            UpsertOutcome::ParticipantsChanged => {
                Err((Code::FailedPrecondition, "PARTICIPANTS_IMMUTABLE"))
            }
        }
    }
}

pub(super) fn kind(kind: ThreadKind) -> i32 {
    match kind {
        ThreadKind::Negotiation => pb::ThreadKind::Negotiation as i32,
        ThreadKind::Contact => pb::ThreadKind::Contact as i32,
    }
}
