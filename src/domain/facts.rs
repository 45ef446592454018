//! SyncService's facts: relations, inquiries and contact access pushed by the services
//! that own them, applied by version (`rules::upsert_outcome`), with the threads'
//! writability following.

use super::{Chat, ContactAccessState, DomainError, InquiryStatus, RelationStatus};
use crate::rules::{self, Participants, UpsertOutcome};
use crate::storage::writes::upsert_fact::{self, UpsertFact, Upserted};
use crate::storage::{Fact, StoreError};

impl Chat {
    /// Stores a relation pushed by its owner; `Ok(false)` when the version is not newer.
    pub async fn upsert_relation(
        &self,
        relation_id: i64,
        tutor_id: i64,
        student_id: i64,
        status: RelationStatus,
        version: i64,
    ) -> Result<bool, DomainError> {
        let pushed = distinct(tutor_id, student_id)?;
        let written = self.store.write(UpsertFact {
            table: &upsert_fact::RELATIONS,
            ids: vec![relation_id, tutor_id, student_id],
            status: status.as_str(),
            version,
            is_writable: Some(status.allows_messages()),
        });
        let stored = async || self.store.find_relation(relation_id).await;
        self.upsert_with_participants("relation", relation_id, pushed, version, written, stored)
            .await
    }

    /// Stores an inquiry pushed by its owner; `Ok(false)` when the version is not newer.
    pub async fn upsert_inquiry(
        &self,
        inquiry_id: i64,
        tutor_id: i64,
        student_id: i64,
        status: InquiryStatus,
        version: i64,
    ) -> Result<bool, DomainError> {
        let pushed = distinct(tutor_id, student_id)?;
        let written = self.store.write(UpsertFact {
            table: &upsert_fact::INQUIRIES,
            ids: vec![inquiry_id, tutor_id, student_id],
            status: status.as_str(),
            version,
            is_writable: Some(status.allows_messages()),
        });
        let stored = async || self.store.find_inquiry(inquiry_id).await;
        self.upsert_with_participants("inquiry", inquiry_id, pushed, version, written, stored)
            .await
    }

    /// The upsert of a relation or an inquiry: the write (which decides atomically),
    /// then, only when it did not apply, the stored fact, from which
    /// `rules::upsert_outcome` says why: a stale version (`Ok(false)`) or other
    /// participants (PARTICIPANTS_IMMUTABLE).
    async fn upsert_with_participants<S>(
        &self,
        entity: &'static str,
        id: i64,
        pushed: Participants,
        version: i64,
        written: impl Future<Output = Result<Upserted, StoreError>>,
        stored: impl AsyncFnOnce() -> Result<Option<Fact<S>>, StoreError>,
    ) -> Result<bool, DomainError> {
        let Upserted {
            applied,
            changed,
            logged,
        } = written.await?;
        self.committed(&changed, &logged);
        if applied {
            return Ok(true);
        }
        let stored = stored().await?.map(|f| (participants(&f), f.version));
        match rules::upsert_outcome(stored, pushed, version) {
            UpsertOutcome::ParticipantsChanged => {
                Err(DomainError::ParticipantsImmutable { entity, id })
            }
            // Applied by the rule yet not by the write: a newer upsert committed between
            // the two (the stored fact moved on), so this one is stale now.
            UpsertOutcome::Stale | UpsertOutcome::Applied => Ok(false),
        }
    }

    /// Stores a tutor's contact access to a student; `Ok(false)` when not newer.
    pub async fn upsert_contact_access(
        &self,
        tutor_id: i64,
        student_id: i64,
        state: ContactAccessState,
        version: i64,
    ) -> Result<bool, DomainError> {
        distinct(tutor_id, student_id)?;
        let Upserted {
            applied,
            changed,
            logged,
        } = self
            .store
            .write(UpsertFact {
                table: &upsert_fact::CONTACT_ACCESS,
                ids: vec![tutor_id, student_id],
                status: state.as_str(),
                version,
                is_writable: None,
            })
            .await?;
        self.committed(&changed, &logged);
        Ok(applied)
    }
}

fn participants<S>(fact: &Fact<S>) -> Participants {
    Participants {
        tutor_id: fact.tutor_id,
        student_id: fact.student_id,
    }
}

/// The two users a fact names, refused when they are one (`Participants::distinct`).
fn distinct(tutor_id: i64, student_id: i64) -> Result<Participants, DomainError> {
    let pushed = Participants {
        tutor_id,
        student_id,
    };
    if !pushed.distinct() {
        return Err(DomainError::invalid(
            "student_id",
            format!("must differ from tutor_id: user {tutor_id} cannot be their own student"),
        ));
    }
    Ok(pushed)
}
