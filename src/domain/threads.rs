//! EnsureThread: the thread of a relation or an inquiry, created on first use, for
//! the participants the rules let open it.

use super::{Caller, Chat, DomainError, Thread, ThreadKind, ThreadTarget, caller_side};
use crate::rules::{self, Participants};
use crate::storage::Fact;
use crate::storage::writes::create_thread::CreateThread;

impl Chat {
    /// Returns the thread of a relation or inquiry, creating it on first use.
    pub async fn ensure_thread(
        &self,
        caller: Caller,
        target: ThreadTarget,
    ) -> Result<(Thread, bool), DomainError> {
        let side = caller_side(caller)?;
        let (kind, existing, new) = match target {
            ThreadTarget::Relation(id) => {
                let found = self.store.relation_target(id).await?;
                let relation = found
                    .as_ref()
                    .map(|found| (participants(&found.fact), found.fact.status));
                let access = found.as_ref().and_then(|found| found.contact_access);
                rules::may_open_relation_thread(caller.user_id, side, relation, access)
                    .map_err(|refusal| refused(refusal, target, relation.map(|r| r.0)))?;
                let new = CreateThread::Relation { relation_id: id };
                (
                    ThreadKind::Contact,
                    found.and_then(|found| found.thread),
                    new,
                )
            }
            ThreadTarget::Inquiry(id) => {
                let found = self.store.inquiry_target(id).await?;
                let inquiry = found.as_ref().map(|found| participants(&found.fact));
                rules::may_open_inquiry_thread(caller.user_id, side, inquiry)
                    .map_err(|refusal| refused(refusal, target, inquiry))?;
                let new = CreateThread::Inquiry { inquiry_id: id };
                (
                    ThreadKind::Negotiation,
                    found.and_then(|found| found.thread),
                    new,
                )
            }
        };
        // Most calls find an existing thread: the read above found it, nothing is written.
        let (row, created) = match existing {
            Some(row) => (row, false),
            None => match self.store.write(new).await? {
                Some(row) => (row, true),
                // Another call created it in between: answer theirs.
                None => (self.thread_of(target).await?, false),
            },
        };
        self.counters.thread_ensured(kind.as_str(), created);
        Ok((row, created))
    }

    /// The thread of a target known to exist.
    async fn thread_of(&self, target: ThreadTarget) -> Result<Thread, DomainError> {
        let thread = match target {
            ThreadTarget::Relation(id) => {
                self.store.relation_target(id).await?.and_then(|t| t.thread)
            }
            ThreadTarget::Inquiry(id) => {
                self.store.inquiry_target(id).await?.and_then(|t| t.thread)
            }
        };
        thread.ok_or_else(|| DomainError::Internal(format!("the thread of {target:?} vanished")))
    }
}

fn participants<S>(fact: &Fact<S>) -> Participants {
    Participants {
        tutor_id: fact.tutor_id,
        student_id: fact.student_id,
    }
}

/// The error clients see for a refusal of EnsureThread.
fn refused(
    refusal: rules::Refusal,
    target: ThreadTarget,
    fact: Option<Participants>,
) -> DomainError {
    use rules::Refusal;
    match (refusal, target) {
        (Refusal::RelationNotFound, ThreadTarget::Relation(id)) => {
            DomainError::RelationNotFound(id)
        }
        (Refusal::RelationNotActive, ThreadTarget::Relation(id)) => {
            DomainError::RelationNotActive(id)
        }
        (Refusal::InquiryNotFound, ThreadTarget::Inquiry(id)) => DomainError::InquiryNotFound(id),
        (Refusal::ContactAccessLocked, _) => DomainError::ContactAccessLocked {
            student_id: fact.map_or(0, |fact| fact.student_id),
        },
        (refusal, target) => {
            DomainError::Internal(format!("EnsureThread of {target:?} refused as {refusal:?}"))
        }
    }
}
