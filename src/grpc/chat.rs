//! chat.v1.ChatService: the calls of tutors and students, mapped onto the domain.

use std::pin::Pin;

use futures_util::Stream;
use tonic::{Request, Response, Status};

use super::auth::{caller, token_caller};
use super::convert;
use super::pb::{self, chat_service_server};
use crate::domain::{self, Chat, DomainError, MessageBody, SummaryAnswer};

/// The ChatService implementation. Cloning is shallow.
#[derive(Clone)]
pub struct ChatService {
    chat: Chat,
}

impl ChatService {
    pub fn new(chat: Chat) -> Self {
        Self { chat }
    }

    /// Who opens a stream, and until when: by bearer token, or (browsers) by a ticket.
    async fn stream_caller<T>(
        &self,
        request: &Request<T>,
        ticket: &str,
    ) -> Result<(domain::Caller, domain::AccessEnds), DomainError> {
        match (token_caller(request), ticket.is_empty()) {
            (caller, true) => caller.ok_or(DomainError::TokenMissing),
            (None, false) => self.chat.redeem_stream_ticket(ticket).await,
            (Some(_), false) => Err(DomainError::invalid(
                "ticket",
                "send either a bearer token or a stream ticket, not both",
            )),
        }
    }
}

/// The stream WatchUnreadSummary answers with.
pub type SummaryStream =
    Pin<Box<dyn Stream<Item = Result<pb::WatchUnreadSummaryResponse, Status>> + Send + 'static>>;

/// The stream WatchThread answers with.
pub type EventStream =
    Pin<Box<dyn Stream<Item = Result<pb::ThreadEvent, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl chat_service_server::ChatService for ChatService {
    type WatchUnreadSummaryStream = SummaryStream;
    type WatchThreadStream = EventStream;

    async fn watch_thread(
        &self,
        request: Request<pb::WatchThreadRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let (caller, access_ends) = self
            .stream_caller(&request, &request.get_ref().ticket)
            .await?;
        let thread_id = domain::thread_id(request.get_ref().thread_id)?;
        let after_version = domain::after_version(request.get_ref().after_version)?;
        let events = self
            .chat
            .watch_thread(caller, access_ends, thread_id, after_version)
            .await?;
        Ok(Response::new(super::streamed(events, |event| {
            convert::thread_event(*event)
        })))
    }

    async fn set_typing(
        &self,
        request: Request<pb::SetTypingRequest>,
    ) -> Result<Response<pb::SetTypingResponse>, Status> {
        let caller = caller(&request)?;
        let thread_id = domain::thread_id(request.into_inner().thread_id)?;
        let until = self.chat.set_typing(caller, thread_id).await?;
        Ok(Response::new(pb::SetTypingResponse {
            until: Some(convert::timestamp(until)),
        }))
    }

    async fn watch_unread_summary(
        &self,
        request: Request<pb::WatchUnreadSummaryRequest>,
    ) -> Result<Response<SummaryStream>, Status> {
        let (caller, access_ends) = self
            .stream_caller(&request, &request.get_ref().ticket)
            .await?;
        let limit = domain::page_limit("limit", request.get_ref().limit)?;
        let watch = self.chat.watch_unread_summary(caller, access_ends, limit)?;
        // After an error the stream ends (the client reconnects and gets a snapshot).
        let stream = futures_util::stream::unfold(Some(watch), |watch| async move {
            let mut watch = watch?;
            match watch.next().await? {
                Ok((summary, etag)) => {
                    let message = pb::WatchUnreadSummaryResponse {
                        threads: convert::threads_unread(summary.threads()),
                        total: summary.total,
                        etag,
                        muted_total: summary.muted_total,
                    };
                    Some((Ok(message), Some(watch)))
                }
                Err(error) => Some((Err(Status::from(error)), None)),
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn create_stream_ticket(
        &self,
        request: Request<pb::CreateStreamTicketRequest>,
    ) -> Result<Response<pb::CreateStreamTicketResponse>, Status> {
        let (caller, access_ends) = token_caller(&request).ok_or(DomainError::TokenMissing)?;
        let minted = self.chat.create_stream_ticket(caller, access_ends).await?;
        Ok(Response::new(pb::CreateStreamTicketResponse {
            ticket: minted.ticket,
            expires_in: i32::try_from(minted.expires_in.as_secs()).unwrap_or(i32::MAX),
        }))
    }

    async fn ensure_thread(
        &self,
        request: Request<pb::EnsureThreadRequest>,
    ) -> Result<Response<pb::EnsureThreadResponse>, Status> {
        let caller = caller(&request)?;
        let target = convert::target(request.into_inner().target)?;
        let (thread, created) = self.chat.ensure_thread(caller, target).await?;
        Ok(Response::new(pb::EnsureThreadResponse {
            thread: Some(convert::thread(thread)),
            created,
        }))
    }

    async fn get_unread_summary(
        &self,
        request: Request<pb::GetUnreadSummaryRequest>,
    ) -> Result<Response<pb::GetUnreadSummaryResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let limit = domain::page_limit("limit", request.limit)?;
        let if_none_match = Some(request.if_none_match.as_str()).filter(|tag| !tag.is_empty());
        let answer = self
            .chat
            .unread_summary(caller, limit, if_none_match)
            .await?;
        Ok(Response::new(match answer {
            SummaryAnswer::Summary { summary, etag } => pb::GetUnreadSummaryResponse {
                threads: convert::threads_unread(summary.threads()),
                total: summary.total,
                etag,
                not_modified: false,
                muted_total: summary.muted_total,
            },
            SummaryAnswer::NotModified { etag } => pb::GetUnreadSummaryResponse {
                threads: Vec::new(),
                total: 0,
                etag,
                not_modified: true,
                muted_total: 0,
            },
        }))
    }

    async fn mark_read(
        &self,
        request: Request<pb::MarkReadRequest>,
    ) -> Result<Response<pb::MarkReadResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let thread_id = domain::thread_id(request.thread_id)?;
        let up_to_seq = convert::seq("up_to_seq", request.up_to_seq)?.map(crate::model::Seq);
        let state = self.chat.mark_read(caller, thread_id, up_to_seq).await?;
        Ok(Response::new(pb::MarkReadResponse {
            thread_id: state.thread_id,
            last_read_seq: state.last_read_seq,
            unread_count: state.unread_count,
            total: state.total,
        }))
    }

    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::SendMessageResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let thread_id = domain::thread_id(request.thread_id)?;
        let body = MessageBody::parse(request.body)?;
        let client_message_id = domain::client_message_id(request.client_message_id)?;
        let message = self
            .chat
            .send_message(caller, thread_id, body, client_message_id)
            .await?;
        Ok(Response::new(pb::SendMessageResponse {
            message: Some(convert::message(message)),
        }))
    }

    async fn list_threads(
        &self,
        request: Request<pb::ListThreadsRequest>,
    ) -> Result<Response<pb::ListThreadsResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let limit = domain::page_limit("limit", request.limit)?;
        let page = self
            .chat
            .list_threads(caller, limit, &request.page_token)
            .await?;
        Ok(Response::new(pb::ListThreadsResponse {
            threads: convert::threads_unread(&page.threads),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn list_messages(
        &self,
        request: Request<pb::ListMessagesRequest>,
    ) -> Result<Response<pb::ListMessagesResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let thread_id = domain::thread_id(request.thread_id)?;
        let from = domain::messages_from(
            convert::seq("before_seq", request.before_seq)?,
            convert::seq("after_seq", request.after_seq)?,
        )?;
        let limit = domain::page_limit("limit", request.limit)?;
        let page = self
            .chat
            .list_messages(caller, thread_id, from, limit)
            .await?;
        Ok(Response::new(pb::ListMessagesResponse {
            messages: page.messages.into_iter().map(convert::message).collect(),
            last_read_seq: page.last_read_seq,
            peer_last_read_seq: page.peer_last_read_seq,
            has_more: page.has_more,
        }))
    }

    async fn edit_message(
        &self,
        request: Request<pb::EditMessageRequest>,
    ) -> Result<Response<pb::EditMessageResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let thread_id = domain::thread_id(request.thread_id)?;
        let seq = domain::seq("seq", request.seq)?;
        let body = MessageBody::parse(request.body)?;
        let message = self.chat.edit_message(caller, thread_id, seq, body).await?;
        Ok(Response::new(pb::EditMessageResponse {
            message: Some(convert::message(message)),
        }))
    }

    async fn delete_message(
        &self,
        request: Request<pb::DeleteMessageRequest>,
    ) -> Result<Response<pb::DeleteMessageResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let thread_id = domain::thread_id(request.thread_id)?;
        let seq = domain::seq("seq", request.seq)?;
        let message = self.chat.delete_message(caller, thread_id, seq).await?;
        Ok(Response::new(pb::DeleteMessageResponse {
            message: Some(convert::message(message)),
        }))
    }

    async fn mark_unread(
        &self,
        request: Request<pb::MarkUnreadRequest>,
    ) -> Result<Response<pb::MarkUnreadResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let thread_id = domain::thread_id(request.thread_id)?;
        let from_seq = domain::seq("from_seq", request.from_seq)?;
        let state = self.chat.mark_unread(caller, thread_id, from_seq).await?;
        Ok(Response::new(pb::MarkUnreadResponse {
            thread_id: state.thread_id,
            last_read_seq: state.last_read_seq,
            unread_count: state.unread_count,
            total: state.total,
        }))
    }

    async fn mute_thread(
        &self,
        request: Request<pb::MuteThreadRequest>,
    ) -> Result<Response<pb::MuteThreadResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let thread_id = domain::thread_id(request.thread_id)?;
        let until = convert::mute_until(request.until)?;
        let state = self.chat.mute_thread(caller, thread_id, until).await?;
        Ok(Response::new(convert::mute_state(state)))
    }

    async fn unmute_thread(
        &self,
        request: Request<pb::UnmuteThreadRequest>,
    ) -> Result<Response<pb::MuteThreadResponse>, Status> {
        let caller = caller(&request)?;
        let thread_id = domain::thread_id(request.into_inner().thread_id)?;
        let state = self.chat.unmute_thread(caller, thread_id).await?;
        Ok(Response::new(convert::mute_state(state)))
    }
}
