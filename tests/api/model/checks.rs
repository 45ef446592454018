//! What is compared after each step: answers against the model's expectations, every
//! summary and inbox, the messages of a thread, horizons; and the checks that need no
//! rule at all (totals add up, counts are positive, horizons move back only by
//! MarkUnread, an etag changes exactly when its summary does).

use chatd::domain::{Role, Side};
use chatd::grpc::pb;
use chatd::rules;
use futures::future::join_all;
use proptest::test_runner::TestCaseError;
use tonic::Code;
use tonic_types::StatusExt;

use super::USERS;
use super::case::Case;
use super::ops::Op;
use super::state::{Expected, Line, ModelMessage, now_ms, side_index};
use crate::helpers::summary;

pub(super) fn line(entry: &pb::ThreadUnread) -> Line {
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

pub(super) fn message_answer(m: &pb::Message) -> (i64, i64, String, bool, bool) {
    (
        m.seq,
        m.sender_id,
        m.body.clone(),
        m.deleted,
        m.edited_at.is_some(),
    )
}

/// The server's answer as the model states answers.
pub(super) fn answered<T>(
    result: Result<tonic::Response<T>, tonic::Status>,
) -> Result<T, (Code, String)> {
    result.map(tonic::Response::into_inner).map_err(|status| {
        let reason = status.get_details_error_info().map_or_else(
            || format!("no ErrorInfo: {}", status.message()),
            |i| i.reason,
        );
        (status.code(), reason)
    })
}

/// Compares an answer with the model's expectation, on the parts `project` picks.
pub(super) fn check<T, P: PartialEq + std::fmt::Debug>(
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

pub(super) fn mute_answer(r: &pb::MuteThreadResponse) -> (bool, Option<i64>, i64) {
    let until = r
        .muted_until
        .map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000);
    (r.muted, until, r.total)
}

impl Case<'_> {
    /// The messages of a thread, oldest first, as its tutor lists them, against the model.
    pub(super) async fn messages_agree(
        &self,
        step: usize,
        op: &Op,
        thread: usize,
    ) -> Result<(), TestCaseError> {
        let Some(index) = self.thread_index(thread) else {
            return Ok(());
        };
        let t = &self.model.threads[index];
        // Oldest first, a page at a time: a burst takes a thread past one page.
        let mut client = self.client(t.participants.tutor_id, Role::Tutor);
        let mut got = Vec::new();
        loop {
            let listed = client
                .list_messages(pb::ListMessagesRequest {
                    thread_id: t.id,
                    after_seq: Some(got.len() as i64),
                    limit: 200,
                    ..Default::default()
                })
                .await
                .map_err(|status| TestCaseError::fail(format!("list messages: {status:?}")))?
                .into_inner();
            got.extend(listed.messages.iter().map(message_answer));
            if !listed.has_more {
                break;
            }
        }
        let expected: Vec<_> = t.messages.iter().map(ModelMessage::answer).collect();
        if got != expected {
            return Err(TestCaseError::fail(format!(
                "after step {step} {op:?}: thread {thread}'s messages:\n  server {got:?}\n  rules  {expected:?}"
            )));
        }
        Ok(())
    }

    /// Every user's inbox on both sides, against the model, in two pages when it has
    /// more than one thread (so the page token is exercised too).
    pub(super) async fn inboxes_agree(&self, step: usize, op: &Op) -> Result<(), TestCaseError> {
        let at = self.clear_of_mute_ends().await;
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
            let expected = self.model.inbox(self.base + user, side, at);
            if got != expected {
                return Err(TestCaseError::fail(format!(
                    "after step {step} {op:?}: user {user}'s inbox as {side}:\n  server {got:?}\n  rules  {expected:?}"
                )));
            }
        }
        Ok(())
    }

    pub(super) fn keys() -> Vec<(i64, Role)> {
        (1..=USERS)
            .flat_map(|user| [(user, Role::Tutor), (user, Role::Student)])
            .collect()
    }

    /// Every user's summary on both sides, against the model; and, without the rules,
    /// what holds of any summary: each line has unread messages, `total` is the sum
    /// over lines not muted and `muted_total` over the muted ones, and the etag changes
    /// exactly when what the summary shows changed since the step before.
    pub(super) async fn summaries_agree(
        &mut self,
        step: usize,
        op: &Op,
    ) -> Result<(), TestCaseError> {
        let at = self.clear_of_mute_ends().await;
        let keys = Self::keys();
        let answers = join_all(keys.iter().map(|(user, role)| {
            let mut client = self.client(self.base + *user, *role);
            async move { client.get_unread_summary(summary(0)).await }
        }))
        .await;
        let fail = |what: String| {
            Err(TestCaseError::fail(format!(
                "after step {step} {op:?}: {what}"
            )))
        };
        for ((user, role), answer) in keys.into_iter().zip(answers) {
            let side = Self::side(role);
            let got = answer
                .map(tonic::Response::into_inner)
                .map_err(|status| TestCaseError::fail(format!("summary: {status:?}")))?;
            let sum = |muted: bool| -> i64 {
                got.threads
                    .iter()
                    .filter(|t| t.muted == muted)
                    .map(|t| t.unread_count)
                    .sum()
            };
            if got.threads.iter().any(|t| t.unread_count <= 0)
                || got.total != sum(false)
                || got.muted_total != sum(true)
            {
                return fail(format!(
                    "user {user}'s summary as {side} does not add up: {got:?}"
                ));
            }
            let shown = format!("{:?}", (&got.threads, got.total, got.muted_total));
            let etag = got.etag.clone();
            if let Some((before, before_etag)) = self
                .seen
                .insert((user, role), (shown.clone(), etag.clone()))
                && (before == shown) != (before_etag == etag)
            {
                return fail(format!(
                    "user {user}'s summary as {side}: the etag went {before_etag} → {etag} \
                     while what it shows changed: {}",
                    before != shown
                ));
            }
            let got = (
                got.threads.iter().map(line).collect::<Vec<_>>(),
                got.total,
                got.muted_total,
            );
            let expected = self.model.summary(self.base + user, side, at);
            if got != expected {
                return fail(format!(
                    "user {user}'s summary as {side}:\n  server {got:?}\n  rules  {expected:?}"
                ));
            }
        }
        Ok(())
    }

    /// Each thread's horizons as the server lists them, against the model, and moving
    /// back only where this step was that side's MarkUnread of that thread.
    pub(super) async fn horizons_agree(
        &mut self,
        step: usize,
        op: &Op,
    ) -> Result<(), TestCaseError> {
        for index in 0..self.model.threads.len() {
            let t = &self.model.threads[index];
            let listed = self
                .client(t.participants.tutor_id, Role::Tutor)
                .list_messages(pb::ListMessagesRequest {
                    thread_id: t.id,
                    limit: 1,
                    ..Default::default()
                })
                .await
                .map_err(|status| TestCaseError::fail(format!("list messages: {status:?}")))?
                .into_inner();
            let now = [listed.last_read_seq, listed.peer_last_read_seq];
            if now != t.horizons {
                return Err(TestCaseError::fail(format!(
                    "after step {step} {op:?}: thread {index}'s horizons: server {now:?}, rules {:?}",
                    t.horizons
                )));
            }
            let marked_unread = [Side::Tutor, Side::Student].map(|side| match op {
                Op::MarkUnread { actor, thread, .. } => {
                    *thread == index && self.resolve(*actor, Some(t.participants)).2 == side
                }
                _ => false,
            });
            if let Some(before) = self.horizons.insert(index, now) {
                for side in [Side::Tutor, Side::Student] {
                    let i = side_index(side);
                    if now[i] < before[i] && !marked_unread[i] {
                        return Err(TestCaseError::fail(format!(
                            "after step {step} {op:?}: thread {index}'s {side} horizon moved back \
                             {} → {} without a MarkUnread",
                            before[i], now[i]
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// Waits until no mute of the case ends within the next 1.5 s or ended in the last
    /// 150 ms: a comparison made right at an end could see the server on one side of it
    /// and the model on the other. (Time passing, not waiting for the server.) Returns
    /// the time the model reads the case at: the server answers within the next 1.5 s.
    pub(super) async fn clear_of_mute_ends(&self) -> i64 {
        loop {
            let now = now_ms();
            let near = self
                .model
                .threads
                .iter()
                .flat_map(|t| t.mutes)
                .flatten()
                .filter(|end| *end != rules::MUTED_FOREVER_MS)
                .find(|end| now > end - 1500 && now < end + 150);
            match near {
                Some(end) => {
                    tokio::time::sleep(std::time::Duration::from_millis((end + 150 - now) as u64))
                        .await
                }
                None => return now,
            }
        }
    }
}
