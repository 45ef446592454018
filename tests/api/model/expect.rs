//! What the rules say each operation answers, and what it changes in the model.

use std::collections::BTreeMap;

use chatd::domain::{Side, ThreadKind};
use chatd::grpc::pb;
use chatd::rules::{self, Refusal};
use proptest::test_runner::TestCaseError;
use tonic::Code;

use super::case::Case;
use super::checks::check;
use super::ops::{Op, Pick};
use super::state::{Expected, Model, ModelMessage, ModelThread, kind, now_ms, refusal, side_index};

impl Case<'_> {
    /// The seq an operation's `message` names in `thread` (see `Pick`), as the model
    /// has the thread now.
    /// `side`: the caller's (a moderator's picks read the tutor's as their own).
    pub(super) fn pick(&self, thread: usize, side: Side, message: Pick) -> i64 {
        let Some(index) = self.thread_index(thread) else {
            return match message {
                Pick::Seq(0) => 0,
                _ => 1,
            };
        };
        let t = &self.model.threads[index];
        let last = t.messages.len() as i64;
        match message {
            Pick::Seq(0) => 0,
            Pick::Seq(n) => Self::seq(n - 1, t.messages.len()),
            Pick::Horizon { peer, offset } => {
                let side = if peer { side.peer() } else { side };
                t.horizons[side_index(side)] + i64::from(offset)
            }
            Pick::Newest(d) => last + i64::from(d),
            Pick::WindowEdge(d) => last - rules::MARK_UNREAD_WINDOW + 1 + i64::from(d),
        }
    }

    /// EnsureThread's answer against the rules, recording a thread the server created.
    pub(super) fn ensured(
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

    pub(super) fn send(
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
    pub(super) fn seq(message: u8, len: usize) -> i64 {
        i64::from(message) % (len as i64 + 1) + 1
    }

    /// The message at `seq` as the rules of editing and deleting see it.
    pub(super) fn found(&self, index: usize, seq: i64) -> Option<rules::MessageView> {
        let m = self.model.threads[index]
            .messages
            .get(usize::try_from(seq).ok()?.checked_sub(1)?)?;
        Some(rules::MessageView {
            sender_id: m.sender,
            deleted: m.deleted,
        })
    }

    pub(super) fn edit(
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
    pub(super) fn delete(
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

    pub(super) fn mark_unread(
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

    pub(super) fn mute(
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
        let shown = rules::mute_shown(muted_until_ms, now_ms());
        Ok((
            shown.is_some(),
            shown.flatten(),
            self.model.total(user, side),
        ))
    }

    /// EraseUser: every message the user sent becomes a tombstone, keys wiped.
    pub(super) fn erase(&mut self, user: i64) -> Expected<i64> {
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

    pub(super) fn mark_read(
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
}
