//! chat.v1.EventService: the outbox's events for the services around chatd.

use std::pin::Pin;

use futures_util::Stream;
use tonic::{Request, Response, Status};

use super::auth::{caller, token_caller};
use super::convert;
use super::pb::{self, event_service_server};
use crate::domain::{self, AccessEnds, Chat};

/// The EventService implementation. Only `service` tokens reach it (see `Authenticate`).
#[derive(Clone)]
pub struct EventService {
    chat: Chat,
}

impl EventService {
    pub fn new(chat: Chat) -> Self {
        Self { chat }
    }
}

/// The stream StreamEvents answers with.
pub type OutboxStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl event_service_server::EventService for EventService {
    type StreamEventsStream = OutboxStream;

    async fn stream_events(
        &self,
        request: Request<pb::StreamEventsRequest>,
    ) -> Result<Response<OutboxStream>, Status> {
        let caller = caller(&request)?;
        let access_ends = token_caller(&request).map_or(AccessEnds::NEVER, |(_, ends)| ends);
        let r = request.into_inner();
        let after = domain::after_position(r.after_position)?;
        let kinds = domain::event_types(&r.types)?;
        let events = self
            .chat
            .stream_events(caller, access_ends, after, kinds)
            .await?;
        Ok(Response::new(super::streamed(events, convert::event)))
    }
}
