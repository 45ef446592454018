//! The rules as the specification storage is held to: random sequences of operations
//! (upserts of facts, EnsureThread, SendMessage with and without repeated keys,
//! EditMessage, DeleteMessage, RemoveMessage, MarkRead, MarkUnread, mutes with and
//! without an end, EraseUser), by tutors, students, strangers and services, go through
//! the real server over gRPC, and after every step the answer (success, or code and
//! reason), the messages of the thread it touched, and every user's summaries on both
//! sides (lines, counts, totals, muted totals, order, previews, writability, mutes) are
//! compared with a pure model built from `chatd::rules` alone.
//!
//! Where SQL applies a rule (PostgreSQL's one-statement writes, SQLite's queries), this
//! is what keeps it equal to the function it names. A failing case shrinks to a minimal
//! sequence; its seed is kept in `model.proptest-regressions` and replayed first on
//! every later run. `CHATD_MODEL_SEED=<n>` reruns a reported seed,
//! `CHATD_MODEL_CASES=<n>` changes how many sequences run (default 64).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};

use chatd::domain::{ContactAccessState, InquiryStatus, RelationStatus, Role, Side, ThreadKind};
use chatd::grpc::pb;
use chatd::rules::{self, Participants, Refusal, ThreadView, UpsertOutcome};
use futures::future::join_all;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, RngSeed, TestCaseError, TestRunner};
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{Backend, TestApp, ensure_inquiry, ensure_relation, mark_read, summary};

/// Users of a case are `base + 1 ..= base + USERS`; facts are `base + 1 ..= base + FACTS`.
const USERS: i64 = 4;
const FACTS: i64 = 3;
/// A thread id no case ever gets.
const UNKNOWN_THREAD: i64 = 9_000_000_000_000;

#[derive(Debug, Clone)]
enum Op {
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
    MarkRead {
        actor: Actor,
        thread: usize,
        up_to: Option<i64>,
    },
    /// `message` picks a seq: 0 names no message (0 is refused as an argument),
    /// past the thread's last one names none that exists.
    Edit {
        actor: Actor,
        thread: usize,
        message: u8,
        body: String,
    },
    Delete {
        actor: Actor,
        thread: usize,
        message: u8,
    },
    /// A moderation service removes a message.
    Remove {
        thread: usize,
        message: u8,
    },
    MarkUnread {
        actor: Actor,
        thread: usize,
        message: u8,
    },
    Mute {
        actor: Actor,
        thread: usize,
        /// With an end (a day ahead: it does not end during the test) or without.
        ends: bool,
    },
    Unmute {
        actor: Actor,
        thread: usize,
    },
    Erase {
        user: i64,
    },
}

/// The status a fact upsert pushes, which says whether it is a relation or an inquiry.
#[derive(Debug, Clone, Copy)]
enum Status {
    Relation(RelationStatus),
    Inquiry(InquiryStatus),
}

/// Who calls: mostly a participant of the thread or fact the call names, acting on
/// their side (or they would rarely get past "not found"), sometimes anyone at all.
#[derive(Debug, Clone, Copy)]
enum Actor {
    Member(Side),
    Anyone(i64, Role),
}

/// The tutor and student of a contact access: a relation's pair, or any two users.
#[derive(Debug, Clone, Copy)]
enum Pair {
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

fn actor() -> impl Strategy<Value = Actor> {
    prop_oneof![
        4 => Just(Actor::Member(Side::Tutor)),
        4 => Just(Actor::Member(Side::Student)),
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
/// every case opens (see `SETUP`), sometimes one not opened yet (THREAD_NOT_FOUND).
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

fn op() -> impl Strategy<Value = Op> {
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
    prop_oneof![
        2 => (
            fact(),
            pair(),
            prop_oneof![
                relation_status.prop_map(Status::Relation),
                inquiry_status.prop_map(Status::Inquiry),
            ],
            version()
        )
            .prop_map(|(id, (tutor, student), status, version)| Op::UpsertFact {
                id,
                tutor,
                student,
                status,
                version,
            }),
        1 => (access_pair, access_state, version()).prop_map(|(pair, state, version)| {
            Op::UpsertAccess {
                pair,
                state,
                version,
            }
        }),
        1 => (actor(), fact()).prop_map(|(actor, relation)| Op::EnsureRelation { actor, relation }),
        1 => (actor(), fact()).prop_map(|(actor, inquiry)| Op::EnsureInquiry { actor, inquiry }),
        8 => (actor(), thread(), prop::option::of(0..3u8), body()).prop_map(
            |(actor, thread, key, body)| Op::Send {
                actor,
                thread,
                key,
                body,
            }
        ),
        4 => (actor(), thread(), prop::option::of(0..7i64)).prop_map(
            |(actor, thread, up_to)| Op::MarkRead {
                actor,
                thread,
                up_to,
            }
        ),
        2 => (actor(), thread(), 0..8u8, body()).prop_map(|(actor, thread, message, body)| {
            Op::Edit {
                actor,
                thread,
                message,
                body,
            }
        }),
        3 => (actor(), thread(), 0..8u8).prop_map(|(actor, thread, message)| Op::Delete {
            actor,
            thread,
            message,
        }),
        1 => (thread(), 0..8u8).prop_map(|(thread, message)| Op::Remove { thread, message }),
        3 => (actor(), thread(), 0..8u8).prop_map(|(actor, thread, message)| Op::MarkUnread {
            actor,
            thread,
            message,
        }),
        2 => (actor(), thread(), any::<bool>())
            .prop_map(|(actor, thread, ends)| Op::Mute { actor, thread, ends }),
        1 => (actor(), thread()).prop_map(|(actor, thread)| Op::Unmute { actor, thread }),
        1 => user().prop_map(|user| Op::Erase { user }),
    ]
}

/// A fact as the model keeps it.
#[derive(Debug, Clone, Copy)]
struct Fact<S> {
    participants: Participants,
    status: S,
    version: i64,
}

#[derive(Debug, Clone)]
struct ModelMessage {
    seq: i64,
    sender: i64,
    body: String,
    deleted: bool,
    edited: bool,
    /// The step it was sent at: the summary's order follows the shown message's.
    at: usize,
}

impl ModelMessage {
    /// What the server answers of a message: seq, sender, body, deleted, edited.
    fn answer(&self) -> (i64, i64, String, bool, bool) {
        (
            self.seq,
            self.sender,
            self.body.clone(),
            self.deleted,
            self.edited,
        )
    }
}

/// The mutes of a case end a day ahead, or never: neither ends during the test.
fn mute_end(ends: bool) -> i64 {
    match ends {
        true => chrono::Utc::now().timestamp_millis() / 1000 * 1000 + 86_400_000,
        false => rules::MUTED_FOREVER_MS,
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[derive(Debug, Clone)]
struct ModelThread {
    /// The id the server gave it.
    id: i64,
    kind: ThreadKind,
    /// Its relation or inquiry.
    fact: i64,
    participants: Participants,
    messages: Vec<ModelMessage>,
    /// Read horizons, tutor's then student's.
    horizons: [i64; 2],
    /// Idempotency keys by sender: the seq of the first message sent with each.
    keys: BTreeMap<(i64, String), i64>,
    /// Mutes (`muted_until_ms`), tutor's then student's.
    mutes: [Option<i64>; 2],
    /// The step it was created at: with no message shown, its place in the inbox.
    created: usize,
}

fn side_index(side: Side) -> usize {
    match side {
        Side::Tutor => 0,
        Side::Student => 1,
    }
}

/// What a user's summary shows of a thread, as the model expects and the server answers.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    thread_id: i64,
    kind: i32,
    relation_id: Option<i64>,
    inquiry_id: Option<i64>,
    tutor_id: i64,
    student_id: i64,
    unread_count: i64,
    preview: String,
    sender_id: i64,
    is_writable: bool,
    muted: bool,
    muted_until_ms: Option<i64>,
}

#[derive(Debug, Default)]
struct Model {
    relations: BTreeMap<i64, Fact<RelationStatus>>,
    inquiries: BTreeMap<i64, Fact<InquiryStatus>>,
    access: BTreeMap<(i64, i64), (ContactAccessState, i64)>,
    threads: Vec<ModelThread>,
}

/// What the model expects a call to answer: a value, or a code and an ErrorInfo reason.
type Expected<T> = Result<T, (Code, &'static str)>;

fn refusal(refusal: Refusal) -> (Code, &'static str) {
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

const INVALID: (Code, &str) = (Code::InvalidArgument, "INVALID_ARGUMENT");

impl Model {
    fn writable(&self, thread: &ModelThread) -> bool {
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

    fn view(&self, thread: &ModelThread) -> ThreadView {
        let pair = (thread.participants.tutor_id, thread.participants.student_id);
        ThreadView {
            kind: thread.kind,
            participants: thread.participants,
            is_writable: self.writable(thread),
            contact_access: self.access.get(&pair).map(|(state, _)| *state),
        }
    }

    /// `rules::counts_as_unread` summed over the thread: the definition itself.
    fn unread(thread: &ModelThread, user: i64, side: Side) -> i64 {
        let horizon = thread.horizons[side_index(side)];
        thread
            .messages
            .iter()
            .filter(|m| rules::counts_as_unread(m.seq, m.sender, m.deleted, user, horizon))
            .count() as i64
    }

    /// The summary `user` sees on `side`: its lines in order, the total and the muted total.
    fn summary(&self, user: i64, side: Side) -> (Vec<Line>, i64, i64) {
        let now = now_ms();
        let mut lines: Vec<(usize, Line)> = self
            .threads
            .iter()
            .filter(|t| t.participants.includes(user, side))
            .filter_map(|t| {
                let unread = Self::unread(t, user, side);
                let last = rules::last_visible(t.messages.iter(), |m| m.deleted)?;
                let mute = t.mutes[side_index(side)];
                let muted = rules::is_muted(mute, now);
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
                        muted,
                        muted_until_ms: mute.filter(|m| muted && *m != rules::MUTED_FOREVER_MS),
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
    fn inbox(&self, user: i64, side: Side) -> Vec<Line> {
        let now = now_ms();
        let mut lines: Vec<(usize, Line)> = self
            .threads
            .iter()
            .filter(|t| t.participants.includes(user, side))
            .map(|t| {
                let last = rules::last_visible(t.messages.iter(), |m| m.deleted);
                let mute = t.mutes[side_index(side)];
                let muted = rules::is_muted(mute, now);
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
                    muted,
                    muted_until_ms: mute.filter(|m| muted && *m != rules::MUTED_FOREVER_MS),
                };
                (rules::inbox_position(last.map(|m| m.at), t.created), line)
            })
            .collect();
        lines.sort_by(|a, b| rules::summary_order((a.0, a.1.thread_id), (b.0, b.1.thread_id)));
        lines.into_iter().map(|(_, line)| line).collect()
    }

    /// The user's total on a side (muted threads left out).
    fn total(&self, user: i64, side: Side) -> i64 {
        self.summary(user, side).1
    }

    fn upsert<S: Copy>(
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

fn kind(kind: ThreadKind) -> i32 {
    match kind {
        ThreadKind::Negotiation => pb::ThreadKind::Negotiation as i32,
        ThreadKind::Contact => pb::ThreadKind::Contact as i32,
    }
}

fn line(entry: &pb::ThreadUnread) -> Line {
    Line {
        thread_id: entry.thread_id,
        kind: entry.kind,
        relation_id: entry.relation_id,
        inquiry_id: entry.inquiry_id,
        tutor_id: entry.tutor_id,
        student_id: entry.student_id,
        unread_count: entry.unread_count,
        preview: entry.last_message_preview.clone(),
        sender_id: entry.last_message_sender_id,
        is_writable: entry.is_writable,
        muted: entry.muted,
        muted_until_ms: entry
            .muted_until
            .map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000),
    }
}

fn message_answer(m: &pb::Message) -> (i64, i64, String, bool, bool) {
    (
        m.seq,
        m.sender_id,
        m.body.clone(),
        m.deleted,
        m.edited_at.is_some(),
    )
}

/// The server's answer as the model states answers.
fn answered<T>(result: Result<tonic::Response<T>, tonic::Status>) -> Result<T, (Code, String)> {
    result.map(tonic::Response::into_inner).map_err(|status| {
        let reason = status.get_details_error_info().map_or_else(
            || format!("no ErrorInfo: {}", status.message()),
            |i| i.reason,
        );
        (status.code(), reason)
    })
}

/// Compares an answer with the model's expectation, on the parts `project` picks.
fn check<T, P: PartialEq + std::fmt::Debug>(
    step: usize,
    op: &Op,
    got: &Result<T, (Code, String)>,
    expected: &Expected<P>,
    project: impl Fn(&T) -> P,
) -> Result<(), TestCaseError> {
    let got = got.as_ref().map(project).map_err(|(c, r)| (*c, r.as_str()));
    let expected = expected.as_ref().map_err(|(c, r)| (*c, *r));
    match (&got, &expected) {
        (Ok(a), Ok(b)) if a == *b => Ok(()),
        (Err(a), Err(b)) if a == b => Ok(()),
        _ => Err(TestCaseError::fail(format!(
            "step {step} {op:?}: the server answered {got:?}, the rules say {expected:?}"
        ))),
    }
}

struct Case<'a> {
    app: &'a TestApp,
    base: i64,
    model: Model,
}

impl Case<'_> {
    fn side(role: Role) -> Side {
        rules::side_of(role).expect("chat roles take a side")
    }

    fn thread_index(&self, index: usize) -> Option<usize> {
        (index < self.model.threads.len()).then_some(index)
    }

    fn thread_id(&self, index: usize) -> i64 {
        self.thread_index(index)
            .map_or(UNKNOWN_THREAD + index as i64, |i| self.model.threads[i].id)
    }

    fn client(&self, user: i64, role: Role) -> crate::helpers::ChatClient {
        self.app.chat_with_header(Some(self.app.bearer(user, role)))
    }

    /// The user and role an actor stands for, given the participants of what the call
    /// names (if it exists).
    fn resolve(&self, actor: Actor, participants: Option<Participants>) -> (i64, Role, Side) {
        match actor {
            Actor::Member(side) => {
                let user = participants.map_or(self.base + 1, |p| p.on(side));
                let role = match side {
                    Side::Tutor => Role::Tutor,
                    Side::Student => Role::Student,
                };
                (user, role, side)
            }
            Actor::Anyone(user, role) => (self.base + user, role, Self::side(role)),
        }
    }

    fn thread_participants(&self, index: usize) -> Option<Participants> {
        self.thread_index(index)
            .map(|i| self.model.threads[i].participants)
    }

    async fn step(&mut self, step: usize, op: &Op) -> Result<(), TestCaseError> {
        let base = self.base;
        match op.clone() {
            Op::UpsertFact {
                id,
                tutor,
                student,
                status,
                version,
            } => {
                let (id, pushed) = (
                    base + id,
                    Participants {
                        tutor_id: base + tutor,
                        student_id: base + student,
                    },
                );
                let mut sync = self.app.sync();
                let (expected, got) = match status {
                    Status::Relation(status) => (
                        Model::upsert(&mut self.model.relations, id, pushed, status, version),
                        answered(
                            sync.upsert_relation(pb::UpsertRelationRequest {
                                relation_id: id,
                                tutor_id: pushed.tutor_id,
                                student_id: pushed.student_id,
                                status: relation_status(status) as i32,
                                version,
                            })
                            .await,
                        )
                        .map(|r| r.applied),
                    ),
                    Status::Inquiry(status) => (
                        Model::upsert(&mut self.model.inquiries, id, pushed, status, version),
                        answered(
                            sync.upsert_inquiry(pb::UpsertInquiryRequest {
                                inquiry_id: id,
                                tutor_id: pushed.tutor_id,
                                student_id: pushed.student_id,
                                status: inquiry_status(status) as i32,
                                version,
                            })
                            .await,
                        )
                        .map(|r| r.applied),
                    ),
                };
                check(step, op, &got, &expected, |applied| *applied)
            }
            Op::UpsertAccess {
                pair,
                state,
                version,
            } => {
                let pair = match pair {
                    Pair::OfRelation(relation) => {
                        self.model.relations.get(&(base + relation)).map_or(
                            Participants {
                                tutor_id: base + 1,
                                student_id: base + 3,
                            },
                            |f| f.participants,
                        )
                    }
                    Pair::Any(tutor, student) => Participants {
                        tutor_id: base + tutor,
                        student_id: base + student,
                    },
                };
                let key = (pair.tutor_id, pair.student_id);
                let expected = if !pair.distinct() {
                    Err(INVALID)
                } else {
                    let stored = self.model.access.get(&key).map(|(_, v)| (pair, *v));
                    match rules::upsert_outcome(stored, pair, version) {
                        UpsertOutcome::Applied => {
                            self.model.access.insert(key, (state, version));
                            Ok(true)
                        }
                        _ => Ok(false),
                    }
                };
                let got = answered(
                    self.app
                        .sync()
                        .upsert_contact_access(pb::UpsertContactAccessRequest {
                            tutor_id: pair.tutor_id,
                            student_id: pair.student_id,
                            state: access_state(state) as i32,
                            version,
                        })
                        .await,
                );
                check(step, op, &got, &expected, |r| r.applied)
            }
            Op::EnsureRelation { actor, relation } => {
                let id = base + relation;
                let fact = self.model.relations.get(&id).copied();
                let (user, role, side) = self.resolve(actor, fact.map(|f| f.participants));
                let access = fact.and_then(|f| {
                    let pair = (f.participants.tutor_id, f.participants.student_id);
                    self.model.access.get(&pair).map(|(state, _)| *state)
                });
                let allowed = rules::may_open_relation_thread(
                    user,
                    side,
                    fact.map(|f| (f.participants, f.status)),
                    access,
                );
                let got = answered(
                    self.client(user, role)
                        .ensure_thread(ensure_relation(id))
                        .await,
                );
                self.ensured(step, op, ThreadKind::Contact, id, allowed, got)
            }
            Op::EnsureInquiry { actor, inquiry } => {
                let id = base + inquiry;
                let fact = self.model.inquiries.get(&id).map(|f| f.participants);
                let (user, role, side) = self.resolve(actor, fact);
                let allowed = rules::may_open_inquiry_thread(user, side, fact);
                let got = answered(
                    self.client(user, role)
                        .ensure_thread(ensure_inquiry(id))
                        .await,
                );
                self.ensured(step, op, ThreadKind::Negotiation, id, allowed, got)
            }
            Op::Send {
                actor,
                thread,
                key,
                body,
            } => {
                let (sender, role, side) = self.resolve(actor, self.thread_participants(thread));
                let key = key.map(|k| format!("k{k}"));
                let expected: Expected<(i64, i64, String, bool, bool)> = if body.trim().is_empty() {
                    Err(INVALID)
                } else {
                    self.send(step, sender, side, thread, key.clone(), &body)
                };
                let got = answered(
                    self.client(sender, role)
                        .send_message(pb::SendMessageRequest {
                            thread_id: self.thread_id(thread),
                            body,
                            client_message_id: key.unwrap_or_default(),
                        })
                        .await,
                );
                check(step, op, &got, &expected, |r| {
                    message_answer(&r.message.clone().unwrap_or_default())
                })
            }
            Op::MarkRead {
                actor,
                thread,
                up_to,
            } => {
                let (reader, role, side) = self.resolve(actor, self.thread_participants(thread));
                let expected = self.mark_read(reader, side, thread, up_to);
                let got = answered(
                    self.client(reader, role)
                        .mark_read(mark_read(self.thread_id(thread), up_to))
                        .await,
                );
                check(step, op, &got, &expected, |r| {
                    (r.last_read_seq, r.unread_count, r.total)
                })
            }
            Op::Edit {
                actor,
                thread,
                message,
                body,
            } => {
                let (editor, role, side) = self.resolve(actor, self.thread_participants(thread));
                let seq = self.pick(thread, message);
                let expected = if body.trim().is_empty() || seq <= 0 {
                    Err(INVALID)
                } else {
                    self.edit(editor, side, thread, seq, &body)
                };
                let got = answered(
                    self.client(editor, role)
                        .edit_message(pb::EditMessageRequest {
                            thread_id: self.thread_id(thread),
                            seq,
                            body,
                        })
                        .await,
                );
                check(step, op, &got, &expected, |r| {
                    message_answer(&r.message.clone().unwrap_or_default())
                })?;
                self.messages_agree(step, op, thread).await
            }
            Op::Delete {
                actor,
                thread,
                message,
            } => {
                let (deleter, role, side) = self.resolve(actor, self.thread_participants(thread));
                let seq = self.pick(thread, message);
                let expected = if seq <= 0 {
                    Err(INVALID)
                } else {
                    self.delete(Some((deleter, side)), thread, seq)
                };
                let got = answered(
                    self.client(deleter, role)
                        .delete_message(pb::DeleteMessageRequest {
                            thread_id: self.thread_id(thread),
                            seq,
                        })
                        .await,
                );
                check(step, op, &got, &expected, |r| {
                    message_answer(&r.message.clone().unwrap_or_default())
                })?;
                self.messages_agree(step, op, thread).await
            }
            Op::Remove { thread, message } => {
                let seq = self.pick(thread, message);
                let expected = if seq <= 0 {
                    Err(INVALID)
                } else {
                    self.delete(None, thread, seq)
                };
                let got = answered(
                    self.app
                        .sync()
                        .remove_message(pb::RemoveMessageRequest {
                            thread_id: self.thread_id(thread),
                            seq,
                        })
                        .await,
                );
                check(step, op, &got, &expected, |r| {
                    message_answer(&r.message.clone().unwrap_or_default())
                })?;
                self.messages_agree(step, op, thread).await
            }
            Op::MarkUnread {
                actor,
                thread,
                message,
            } => {
                let (reader, role, side) = self.resolve(actor, self.thread_participants(thread));
                let from_seq = self.pick(thread, message);
                let expected = if from_seq <= 0 {
                    Err(INVALID)
                } else {
                    self.mark_unread(reader, side, thread, from_seq)
                };
                let got = answered(
                    self.client(reader, role)
                        .mark_unread(pb::MarkUnreadRequest {
                            thread_id: self.thread_id(thread),
                            from_seq,
                        })
                        .await,
                );
                check(step, op, &got, &expected, |r| {
                    (r.last_read_seq, r.unread_count, r.total)
                })
            }
            Op::Mute {
                actor,
                thread,
                ends,
            } => {
                let (user, role, side) = self.resolve(actor, self.thread_participants(thread));
                let until = mute_end(ends);
                let expected = self.mute(user, side, thread, Some(until));
                let got = answered(
                    self.client(user, role)
                        .mute_thread(pb::MuteThreadRequest {
                            thread_id: self.thread_id(thread),
                            until: ends.then_some(prost_types::Timestamp {
                                seconds: until / 1000,
                                nanos: 0,
                            }),
                        })
                        .await,
                );
                check(step, op, &got, &expected, mute_answer)
            }
            Op::Unmute { actor, thread } => {
                let (user, role, side) = self.resolve(actor, self.thread_participants(thread));
                let expected = self.mute(user, side, thread, None);
                let got = answered(
                    self.client(user, role)
                        .unmute_thread(pb::UnmuteThreadRequest {
                            thread_id: self.thread_id(thread),
                        })
                        .await,
                );
                check(step, op, &got, &expected, mute_answer)
            }
            Op::Erase { user } => {
                let expected = self.erase(base + user);
                let got = answered(
                    self.app
                        .sync()
                        .erase_user(pb::EraseUserRequest {
                            user_id: base + user,
                        })
                        .await,
                );
                check(step, op, &got, &expected, |r| r.messages_erased)?;
                for thread in 0..self.model.threads.len() {
                    self.messages_agree(step, op, thread).await?;
                }
                Ok(())
            }
        }
    }

    /// The seq an operation's `message` names in `thread` (see `Op::Edit`).
    fn pick(&self, thread: usize, message: u8) -> i64 {
        match message {
            0 => 0,
            n => Self::seq(
                n - 1,
                self.thread_index(thread)
                    .map_or(0, |i| self.model.threads[i].messages.len()),
            ),
        }
    }

    /// EnsureThread's answer against the rules, recording a thread the server created.
    fn ensured(
        &mut self,
        step: usize,
        op: &Op,
        kind: ThreadKind,
        fact: i64,
        allowed: Result<(), Refusal>,
        got: Result<pb::EnsureThreadResponse, (Code, String)>,
    ) -> Result<(), TestCaseError> {
        let existing = self
            .model
            .threads
            .iter()
            .position(|t| t.kind == kind && t.fact == fact);
        if let (Ok(()), Ok(response), None) = (&allowed, &got, existing) {
            let participants = match kind {
                ThreadKind::Contact => self.model.relations[&fact].participants,
                ThreadKind::Negotiation => self.model.inquiries[&fact].participants,
            };
            let id = response.thread.as_ref().map_or(0, |t| t.thread_id);
            self.model.threads.push(ModelThread {
                id,
                kind,
                fact,
                participants,
                messages: Vec::new(),
                horizons: [0, 0],
                keys: BTreeMap::new(),
                mutes: [None, None],
                created: step + 1,
            });
        }
        let index = existing.or_else(|| {
            let last = self.model.threads.len().checked_sub(1)?;
            (self.model.threads[last].fact == fact && self.model.threads[last].kind == kind)
                .then_some(last)
        });
        let expected = allowed.map_err(refusal).map(|()| match index {
            Some(index) => {
                let thread = &self.model.threads[index];
                (
                    thread.id,
                    self::kind(kind),
                    thread.participants.tutor_id,
                    thread.participants.student_id,
                    self.model.writable(thread),
                    existing.is_none(),
                )
            }
            // Allowed, yet the server created nothing: the comparison reports it.
            None => (0, self::kind(kind), 0, 0, false, true),
        });
        check(step, op, &got, &expected, |r| {
            let t = r.thread.unwrap_or_default();
            (
                t.thread_id,
                t.kind,
                t.tutor_id,
                t.student_id,
                t.is_writable,
                r.created,
            )
        })
    }

    fn send(
        &mut self,
        step: usize,
        sender: i64,
        side: Side,
        thread: usize,
        key: Option<String>,
        body: &str,
    ) -> Expected<(i64, i64, String, bool, bool)> {
        let index = self
            .thread_index(thread)
            .ok_or(refusal(Refusal::ThreadNotFound))?;
        let view = self.model.view(&self.model.threads[index]);
        rules::thread_for(sender, side, Some(view)).map_err(refusal)?;
        let t = &self.model.threads[index];
        if let Some(key) = &key
            && let Some(seq) = t.keys.get(&(sender, key.clone()))
        {
            return Ok(t.messages[*seq as usize - 1].answer());
        }
        rules::may_write(side, &view).map_err(refusal)?;
        let t = &mut self.model.threads[index];
        let seq = t.messages.len() as i64 + 1;
        let message = ModelMessage {
            seq,
            sender,
            body: body.to_owned(),
            deleted: false,
            edited: false,
            at: step + 1,
        };
        let answer = message.answer();
        t.messages.push(message);
        t.horizons[side_index(side)] = rules::horizon_after_send(seq);
        if let Some(key) = key {
            t.keys.insert((sender, key), seq);
        }
        Ok(answer)
    }

    /// The seq an operation's `message` names, in a thread of `len` messages: 1..=len,
    /// or one past the end (no such message).
    fn seq(message: u8, len: usize) -> i64 {
        i64::from(message) % (len as i64 + 1) + 1
    }

    /// The message at `seq` as the rules of editing and deleting see it.
    fn found(&self, index: usize, seq: i64) -> Option<rules::MessageView> {
        let m = self.model.threads[index]
            .messages
            .get(usize::try_from(seq).ok()?.checked_sub(1)?)?;
        Some(rules::MessageView {
            sender_id: m.sender,
            deleted: m.deleted,
        })
    }

    fn edit(
        &mut self,
        editor: i64,
        side: Side,
        thread: usize,
        seq: i64,
        body: &str,
    ) -> Expected<(i64, i64, String, bool, bool)> {
        let index = self
            .thread_index(thread)
            .ok_or(refusal(Refusal::ThreadNotFound))?;
        let view = self.model.view(&self.model.threads[index]);
        rules::thread_for(editor, side, Some(view)).map_err(refusal)?;
        rules::may_edit(editor, side, &view, self.found(index, seq)).map_err(refusal)?;
        let m = &mut self.model.threads[index].messages[seq as usize - 1];
        m.body = body.to_owned();
        m.edited = true;
        Ok(m.answer())
    }

    /// DeleteMessage (`deleter` Some) or RemoveMessage (a moderator: None).
    fn delete(
        &mut self,
        deleter: Option<(i64, Side)>,
        thread: usize,
        seq: i64,
    ) -> Expected<(i64, i64, String, bool, bool)> {
        let index = self
            .thread_index(thread)
            .ok_or(refusal(Refusal::ThreadNotFound))?;
        let view = self.model.view(&self.model.threads[index]);
        let found = self.found(index, seq);
        match deleter {
            Some((user, side)) => {
                rules::thread_for(user, side, Some(view)).map_err(refusal)?;
                rules::may_delete(user, found).map_err(refusal)?;
            }
            None => {
                found.ok_or(refusal(Refusal::MessageNotFound))?;
            }
        }
        let m = &mut self.model.threads[index].messages[seq as usize - 1];
        m.deleted = true;
        m.body.clear();
        Ok(m.answer())
    }

    fn mark_unread(
        &mut self,
        reader: i64,
        side: Side,
        thread: usize,
        from_seq: i64,
    ) -> Expected<(i64, i64, i64)> {
        let index = self
            .thread_index(thread)
            .ok_or(refusal(Refusal::ThreadNotFound))?;
        let view = self.model.view(&self.model.threads[index]);
        rules::thread_for(reader, side, Some(view)).map_err(refusal)?;
        let last_seq = self.model.threads[index].messages.len() as i64;
        rules::may_mark_unread(from_seq, last_seq).map_err(refusal)?;
        let horizon = rules::horizon_after_mark_unread(from_seq);
        self.model.threads[index].horizons[side_index(side)] = horizon;
        let unread = Model::unread(&self.model.threads[index], reader, side);
        Ok((horizon, unread, self.model.total(reader, side)))
    }

    fn mute(
        &mut self,
        user: i64,
        side: Side,
        thread: usize,
        muted_until_ms: Option<i64>,
    ) -> Expected<(bool, Option<i64>, i64)> {
        let index = self
            .thread_index(thread)
            .ok_or(refusal(Refusal::ThreadNotFound))?;
        let view = self.model.view(&self.model.threads[index]);
        rules::thread_for(user, side, Some(view)).map_err(refusal)?;
        self.model.threads[index].mutes[side_index(side)] = muted_until_ms;
        let muted = rules::is_muted(muted_until_ms, now_ms());
        let shown = muted_until_ms.filter(|m| muted && *m != rules::MUTED_FOREVER_MS);
        Ok((muted, shown, self.model.total(user, side)))
    }

    /// EraseUser: every message the user sent becomes a tombstone, keys wiped.
    fn erase(&mut self, user: i64) -> Expected<i64> {
        let mut erased = 0;
        for t in &mut self.model.threads {
            for m in t.messages.iter_mut().filter(|m| m.sender == user) {
                erased += i64::from(!m.deleted);
                m.deleted = true;
                m.body.clear();
            }
            t.keys.retain(|(sender, _), _| *sender != user);
        }
        Ok(erased)
    }

    /// The messages of a thread, oldest first, as its tutor lists them, against the model.
    async fn messages_agree(
        &self,
        step: usize,
        op: &Op,
        thread: usize,
    ) -> Result<(), TestCaseError> {
        let Some(index) = self.thread_index(thread) else {
            return Ok(());
        };
        let t = &self.model.threads[index];
        let listed = self
            .client(t.participants.tutor_id, Role::Tutor)
            .list_messages(pb::ListMessagesRequest {
                thread_id: t.id,
                before_seq: None,
                after_seq: None,
                limit: 200,
            })
            .await
            .map_err(|status| TestCaseError::fail(format!("list messages: {status:?}")))?
            .into_inner();
        let mut got: Vec<_> = listed.messages.iter().map(message_answer).collect();
        got.reverse();
        let expected: Vec<_> = t.messages.iter().map(ModelMessage::answer).collect();
        if got != expected {
            return Err(TestCaseError::fail(format!(
                "after step {step} {op:?}: thread {thread}'s messages:\n  server {got:?}\n  rules  {expected:?}"
            )));
        }
        Ok(())
    }

    fn mark_read(
        &mut self,
        reader: i64,
        side: Side,
        thread: usize,
        up_to: Option<i64>,
    ) -> Expected<(i64, i64, i64)> {
        let index = self
            .thread_index(thread)
            .ok_or(refusal(Refusal::ThreadNotFound))?;
        let view = self.model.view(&self.model.threads[index]);
        rules::thread_for(reader, side, Some(view)).map_err(refusal)?;
        let t = &mut self.model.threads[index];
        let last_seq = t.messages.len() as i64;
        let horizon = &mut t.horizons[side_index(side)];
        *horizon = rules::horizon_after_mark_read(*horizon, up_to, last_seq);
        let horizon = *horizon;
        let unread = Model::unread(&self.model.threads[index], reader, side);
        Ok((horizon, unread, self.model.total(reader, side)))
    }

    /// Every user's inbox on both sides, against the model, in two pages when it has
    /// more than one thread (so the page token is exercised too).
    async fn inboxes_agree(&self, step: usize, op: &Op) -> Result<(), TestCaseError> {
        let keys = Self::keys();
        let answers = join_all(keys.iter().map(|(user, role)| {
            let mut client = self.client(self.base + *user, *role);
            async move {
                let mut got = Vec::new();
                let mut token = String::new();
                loop {
                    let page = client
                        .list_threads(pb::ListThreadsRequest {
                            limit: 2,
                            page_token: token,
                        })
                        .await?
                        .into_inner();
                    got.extend(page.threads.iter().map(line));
                    token = page.next_page_token;
                    if token.is_empty() {
                        return Ok::<_, tonic::Status>(got);
                    }
                }
            }
        }))
        .await;
        for ((user, role), answer) in keys.into_iter().zip(answers) {
            let side = Self::side(role);
            let got = answer.map_err(|status| TestCaseError::fail(format!("inbox: {status:?}")))?;
            let expected = self.model.inbox(self.base + user, side);
            if got != expected {
                return Err(TestCaseError::fail(format!(
                    "after step {step} {op:?}: user {user}'s inbox as {side}:\n  server {got:?}\n  rules  {expected:?}"
                )));
            }
        }
        Ok(())
    }

    fn keys() -> Vec<(i64, Role)> {
        (1..=USERS)
            .flat_map(|user| [(user, Role::Tutor), (user, Role::Student)])
            .collect()
    }

    /// Every user's summary on both sides, against the model.
    async fn summaries_agree(&self, step: usize, op: &Op) -> Result<(), TestCaseError> {
        let keys = Self::keys();
        let answers = join_all(keys.iter().map(|(user, role)| {
            let mut client = self.client(self.base + *user, *role);
            async move { client.get_unread_summary(summary(0)).await }
        }))
        .await;
        for ((user, role), answer) in keys.into_iter().zip(answers) {
            let side = Self::side(role);
            let got = answer
                .map(tonic::Response::into_inner)
                .map_err(|status| TestCaseError::fail(format!("summary: {status:?}")))?;
            let got = (
                got.threads.iter().map(line).collect::<Vec<_>>(),
                got.total,
                got.muted_total,
            );
            let expected = self.model.summary(self.base + user, side);
            if got != expected {
                return Err(TestCaseError::fail(format!(
                    "after step {step} {op:?}: user {user}'s summary as {side}:\n  server {got:?}\n  rules  {expected:?}"
                )));
            }
        }
        Ok(())
    }
}

fn mute_answer(r: &pb::MuteThreadResponse) -> (bool, Option<i64>, i64) {
    let until = r
        .muted_until
        .map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000);
    (r.muted, until, r.total)
}

fn relation_status(status: RelationStatus) -> pb::RelationStatus {
    match status {
        RelationStatus::Pending => pb::RelationStatus::Pending,
        RelationStatus::Active => pb::RelationStatus::Active,
        RelationStatus::Archived => pb::RelationStatus::Archived,
    }
}

fn inquiry_status(status: InquiryStatus) -> pb::InquiryStatus {
    match status {
        InquiryStatus::Open => pb::InquiryStatus::Open,
        InquiryStatus::Accepted => pb::InquiryStatus::Accepted,
        InquiryStatus::Declined => pb::InquiryStatus::Declined,
        InquiryStatus::Closed => pb::InquiryStatus::Closed,
    }
}

fn access_state(state: ContactAccessState) -> pb::ContactAccessState {
    match state {
        ContactAccessState::Locked => pb::ContactAccessState::Locked,
        ContactAccessState::Unlocked => pb::ContactAccessState::Unlocked,
        ContactAccessState::Revoked => pb::ContactAccessState::Revoked,
    }
}

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
    };
    for (step, op) in ops.iter().enumerate() {
        case.step(step, op).await?;
        case.summaries_agree(step, op).await?;
        case.inboxes_agree(step, op).await?;
    }
    Ok(())
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
    let app = runtime.block_on(TestApp::spawn(backend));
    let seed = env_number("CHATD_MODEL_SEED").unwrap_or_else(|| {
        use std::hash::{BuildHasher, RandomState};
        RandomState::new().hash_one(std::time::SystemTime::now())
    });
    eprintln!("model test on {backend:?}: seed {seed} (CHATD_MODEL_SEED={seed} reruns it)");
    let config = Config {
        cases: env_number("CHATD_MODEL_CASES").map_or(64, |n| n as u32),
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/api/model.proptest-regressions",
        ))),
        max_shrink_iters: 512,
        ..Config::default()
    };
    let next_case = AtomicI64::new(1);
    let mut runner = TestRunner::new(config);
    let steps = prop::collection::vec(op(), 1..=35).prop_map(|ops| [setup(), ops].concat());
    let outcome = runner.run(&steps, |ops| {
        // Each run, shrinking runs included, gets users, facts and threads of its own.
        let base = next_case.fetch_add(1, Ordering::Relaxed) * 10;
        runtime.block_on(run_case(&app, base, &ops))
    });
    runtime.block_on(async move { drop(app) });
    if let Err(failure) = outcome {
        panic!("{failure}\nrerun with CHATD_MODEL_SEED={seed}");
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
