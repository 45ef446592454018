//! chat.v1.SyncService: facts pushed by the upstream services that own them.

use tonic::{Request, Response, Status};

use super::convert;
use super::pb::{self, sync_service_server};
use crate::domain::{self, Chat};

/// The SyncService implementation. Only `service` tokens reach it (see `Authenticate`).
#[derive(Clone)]
pub struct SyncService {
    chat: Chat,
}

impl SyncService {
    pub fn new(chat: Chat) -> Self {
        Self { chat }
    }
}

#[tonic::async_trait]
impl sync_service_server::SyncService for SyncService {
    async fn upsert_relation(
        &self,
        request: Request<pb::UpsertRelationRequest>,
    ) -> Result<Response<pb::UpsertRelationResponse>, Status> {
        let r = request.into_inner();
        let applied = self
            .chat
            .upsert_relation(
                domain::positive_id("relation_id", r.relation_id)?,
                domain::positive_id("tutor_id", r.tutor_id)?,
                domain::positive_id("student_id", r.student_id)?,
                convert::relation_status(r.status)?,
                convert::version(r.version)?,
            )
            .await?;
        Ok(Response::new(pb::UpsertRelationResponse { applied }))
    }

    async fn upsert_contact_access(
        &self,
        request: Request<pb::UpsertContactAccessRequest>,
    ) -> Result<Response<pb::UpsertContactAccessResponse>, Status> {
        let r = request.into_inner();
        let applied = self
            .chat
            .upsert_contact_access(
                domain::positive_id("tutor_id", r.tutor_id)?,
                domain::positive_id("student_id", r.student_id)?,
                convert::contact_access_state(r.state)?,
                convert::version(r.version)?,
            )
            .await?;
        Ok(Response::new(pb::UpsertContactAccessResponse { applied }))
    }

    async fn upsert_inquiry(
        &self,
        request: Request<pb::UpsertInquiryRequest>,
    ) -> Result<Response<pb::UpsertInquiryResponse>, Status> {
        let r = request.into_inner();
        let applied = self
            .chat
            .upsert_inquiry(
                domain::positive_id("inquiry_id", r.inquiry_id)?,
                domain::positive_id("tutor_id", r.tutor_id)?,
                domain::positive_id("student_id", r.student_id)?,
                convert::inquiry_status(r.status)?,
                convert::version(r.version)?,
            )
            .await?;
        Ok(Response::new(pb::UpsertInquiryResponse { applied }))
    }

    async fn remove_message(
        &self,
        request: Request<pb::RemoveMessageRequest>,
    ) -> Result<Response<pb::RemoveMessageResponse>, Status> {
        let r = request.into_inner();
        let message = self
            .chat
            .remove_message(domain::thread_id(r.thread_id)?, domain::seq("seq", r.seq)?)
            .await?;
        Ok(Response::new(pb::RemoveMessageResponse {
            message: Some(convert::message(message)),
        }))
    }

    async fn erase_user(
        &self,
        request: Request<pb::EraseUserRequest>,
    ) -> Result<Response<pb::EraseUserResponse>, Status> {
        let user_id = domain::user_id("user_id", request.into_inner().user_id)?;
        let messages_erased = self.chat.erase_user(user_id).await?;
        Ok(Response::new(pb::EraseUserResponse { messages_erased }))
    }
}
