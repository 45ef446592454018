//! One case: the operations run against the server one by one, each answer compared
//! with what the model expects (`expect.rs`), every summary and inbox after each step
//! (`checks.rs`).

use chatd::domain::{Role, Side, ThreadKind};
use chatd::grpc::pb;
use chatd::rules::{self, Participants, UpsertOutcome};
use proptest::test_runner::TestCaseError;

use super::UNKNOWN_THREAD;
use super::checks::{answered, check, message_answer, mute_answer};
use super::ops::{Actor, MuteEnd, Op, Pair, Status};
use super::state::{Expected, INVALID, Model, mute_end};
use crate::helpers::{TestApp, ensure_inquiry, ensure_relation, mark_read};

pub(super) struct Case<'a> {
    pub(super) app: &'a TestApp,
    pub(super) base: i64,
    pub(super) model: Model,
    /// Each summary as the server last answered it (content without the etag, and the
    /// etag), to hold the etag to changing exactly when what it shows changed.
    pub(super) seen: std::collections::HashMap<(i64, Role), (String, String)>,
    /// Each thread's horizons as the server last listed them, tutor's then student's,
    /// to hold them to moving back only by MarkUnread.
    pub(super) horizons: std::collections::HashMap<usize, [i64; 2]>,
}

impl Case<'_> {
    pub(super) fn side(role: Role) -> Side {
        rules::side_of(role).expect("chat roles take a side")
    }

    pub(super) fn thread_index(&self, index: usize) -> Option<usize> {
        (index < self.model.threads.len()).then_some(index)
    }

    pub(super) fn thread_id(&self, index: usize) -> i64 {
        self.thread_index(index)
            .map_or(UNKNOWN_THREAD + index as i64, |i| self.model.threads[i].id)
    }

    pub(super) fn client(&self, user: i64, role: Role) -> crate::helpers::ChatClient {
        self.app.chat_with_header(Some(self.app.bearer(user, role)))
    }

    /// The user and role an actor stands for, given the participants of what the call
    /// names (if it exists).
    pub(super) fn resolve(
        &self,
        actor: Actor,
        participants: Option<Participants>,
    ) -> (i64, Role, Side) {
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

    pub(super) fn thread_participants(&self, index: usize) -> Option<Participants> {
        self.thread_index(index)
            .map(|i| self.model.threads[i].participants)
    }

    pub(super) async fn step(&mut self, step: usize, op: &Op) -> Result<(), TestCaseError> {
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
            Op::Burst {
                side,
                thread,
                count,
            } => {
                let participants = self.thread_participants(thread);
                let (sender, role, side) = self.resolve(Actor::Member(side), participants);
                let mut client = self.client(sender, role);
                for n in 0..count {
                    let body = format!("burst {n}");
                    let expected = self.send(step, sender, side, thread, None, &body);
                    let got = answered(
                        client
                            .send_message(pb::SendMessageRequest {
                                thread_id: self.thread_id(thread),
                                body,
                                client_message_id: String::new(),
                            })
                            .await,
                    );
                    check(step, op, &got, &expected, |r| {
                        message_answer(&r.message.clone().unwrap_or_default())
                    })?;
                    // Refused once, refused every time: the thread does not change.
                    if expected.is_err() {
                        break;
                    }
                }
                Ok(())
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
                let seq = self.pick(thread, side, message);
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
                let seq = self.pick(thread, side, message);
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
                let seq = self.pick(thread, Side::Tutor, message);
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
                let from_seq = self.pick(thread, side, message);
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
                            until: (ends != MuteEnd::Never).then_some(prost_types::Timestamp {
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
}

fn relation_status(status: chatd::domain::RelationStatus) -> pb::RelationStatus {
    use chatd::domain::RelationStatus;
    match status {
        RelationStatus::Pending => pb::RelationStatus::Pending,
        RelationStatus::Active => pb::RelationStatus::Active,
        RelationStatus::Archived => pb::RelationStatus::Archived,
    }
}

fn inquiry_status(status: chatd::domain::InquiryStatus) -> pb::InquiryStatus {
    use chatd::domain::InquiryStatus;
    match status {
        InquiryStatus::Open => pb::InquiryStatus::Open,
        InquiryStatus::Accepted => pb::InquiryStatus::Accepted,
        InquiryStatus::Declined => pb::InquiryStatus::Declined,
        InquiryStatus::Closed => pb::InquiryStatus::Closed,
    }
}

fn access_state(state: chatd::domain::ContactAccessState) -> pb::ContactAccessState {
    use chatd::domain::ContactAccessState;
    match state {
        ContactAccessState::Locked => pb::ContactAccessState::Locked,
        ContactAccessState::Unlocked => pb::ContactAccessState::Unlocked,
        ContactAccessState::Revoked => pb::ContactAccessState::Revoked,
    }
}
