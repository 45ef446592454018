//! The gateway's way to chatd: a gRPC channel over the network (`chatd gateway`), or,
//! inside `chatd serve`, chatd's own service stack with no hop between; and
//! `ChatdCall`, one call to chatd on behalf of an HTTP caller.

use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{Extensions, header};
use tonic::metadata::MetadataMap;
use tonic::transport::Endpoint;

use super::{ApiError, GatewayState};
use crate::domain::DomainError;
use crate::proto::chat_service_client::ChatServiceClient;

/// Headers copied from the HTTP request into the gRPC call's metadata.
const FORWARDED_HEADERS: [&str; 3] = ["authorization", "traceparent", "tracestate"];

/// chatd's gRPC services as the gateway calls them: gRPC requests in, gRPC responses
/// out. Standalone, a channel over the network; inside `chatd serve`, chatd's own
/// service stack (the same authentication and layers) with no network hop between.
pub type GrpcService = tower::util::BoxCloneSyncService<
    http::Request<tonic::body::Body>,
    http::Response<tonic::body::Body>,
    tonic::Status,
>;

/// A lazily connected channel to `url` (it reconnects by itself, so the gateway
/// recovers without a restart when chatd comes back).
pub(super) fn remote(url: &str, timeout: Duration) -> Result<GrpcService, String> {
    let channel = Endpoint::from_shared(url.to_owned())
        .map_err(|e| format!("bad upstream URL {url:?}: {e}"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(timeout)
        .tcp_nodelay(true)
        .connect_lazy();
    Ok(GrpcService::new(tower::ServiceExt::map_err(
        channel,
        |error: tonic::transport::Error| tonic::Status::from_error(Box::new(error)),
    )))
}

/// chatd's service stack in this process, answering within `timeout` (a call past it
/// is DEADLINE_EXCEEDED, as the channel's own timeout says it).
pub fn in_process<S>(service: S, timeout: Duration) -> GrpcService
where
    S: tower_service::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let bounded = tower::ServiceBuilder::new()
        .map_err(|error: tower::BoxError| {
            if error.is::<tower::timeout::error::Elapsed>() {
                tonic::Status::deadline_exceeded("chatd did not answer in time")
            } else {
                tonic::Status::from_error(error)
            }
        })
        .timeout(timeout)
        .service(tower::ServiceExt::map_err(
            service,
            |never: std::convert::Infallible| -> tower::BoxError { match never {} },
        ));
    GrpcService::new(bounded)
}

/// A call to chatd on behalf of the HTTP caller: its `authorization` and trace headers
/// become the gRPC metadata of every request made through it.
///
/// It is the first extractor of every API handler and requires the `authorization`
/// header, so a caller without credentials learns that first (401), whatever else is
/// wrong with the request. The token itself is verified by chatd, which holds the keys.
pub(super) struct ChatdCall {
    pub(super) chat: ChatServiceClient<GrpcService>,
    metadata: MetadataMap,
}

impl ChatdCall {
    pub(super) fn request<T>(&self, message: T) -> tonic::Request<T> {
        tonic::Request::from_parts(self.metadata.clone(), Extensions::default(), message)
    }
}

impl FromRequestParts<GatewayState> for ChatdCall {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &GatewayState) -> Result<Self, ApiError> {
        if !parts.headers.contains_key(header::AUTHORIZATION) {
            return Err(ApiError::from(DomainError::TokenMissing));
        }
        Ok(Self::forwarding(parts, state))
    }
}

impl ChatdCall {
    /// Forwards the request's `authorization` (if any) and trace headers.
    pub(super) fn forwarding(parts: &Parts, state: &GatewayState) -> Self {
        let mut metadata = MetadataMap::new();
        for name in FORWARDED_HEADERS {
            if let Some(value) = parts.headers.get(name)
                && let Ok(value) = value.to_str()
                && let Ok(value) = value.parse()
            {
                metadata.insert(name, value);
            }
        }
        // When tracing, chatd's span is the child of this request's span, in the same
        // trace as the caller's `traceparent`; otherwise that header goes on as it came.
        crate::telemetry::inject_current(&mut metadata);
        Self {
            chat: ChatServiceClient::new(state.chatd.clone()),
            metadata,
        }
    }
}
